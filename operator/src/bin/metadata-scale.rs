//! metadata-scale: measures the controller at scale, as a gRPC client of it.
//!
//! It registers `--nodes` fake nodes (ids 1..=N on 127.0.0.1, each on a port it holds open so
//! no two share one) and keeps them alive with Heartbeat from background tasks, creates
//! `--topics` topics of `--partitions-per-topic` partitions with CreateTopics (`--batch` topics
//! a request), then makes `--isr-changes` ISR changes with AlterPartition as each partition's
//! leader: a shrink by one follower, then the expansion back, each pair on another partition.
//! It never opens WatchMetadata (the image of 100,000 partitions is huge).
//!
//! Progress goes to stderr; the last line of stdout is one JSON object:
//! `{"partitions", "create_seconds", "isr_change_ms_p50", "isr_change_ms_max", "isr_changes"}`.
//!
//! `--probe-only` registers nothing: it retries a cheap call (ListPartitionReassignments of no
//! partition) until a controller answers, for at most `--wait-serving-timeout-s`, and prints
//! `{"serving_after_s": ...}` (the time to a controller takeover).
//!
//! `--pause-before-isr FILE` waits for FILE to exist between the creation and the ISR
//! changes, and `--hold-after FILE` keeps the nodes alive after the JSON line until FILE
//! exists, so a caller can look at the controller's persisted state in between. The line
//! `metadata-scale: waiting for FILE` on stderr says a pause began.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use strata_controller::proto::{
    self, controller_client::ControllerClient, CreatableTopic, CreateTopicsRequest, PartitionInfo,
};
use tonic::transport::{Channel, Endpoint};

/// Kafka's error codes the tool tells apart.
const NONE: i32 = 0;
const TOPIC_ALREADY_EXISTS: i32 = 36;
const STALE_BROKER_EPOCH: i32 = 77;

/// How many times one ISR change is retried on a conflict (the partition moved meanwhile).
const ALTER_ATTEMPTS: usize = 5;

/// metadata-scale: registers fake nodes, creates topics and changes ISRs through the
/// controller's gRPC API, and reports how long it took.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Controller URL(s), comma-separated (http://127.0.0.1:9093). Requests go to the first;
    /// heartbeats and --probe-only move on to the next one when one does not answer.
    #[arg(long)]
    controller: String,

    /// Fake nodes to register (ids 1..=N).
    #[arg(long, default_value_t = 3)]
    nodes: i32,

    /// Topics to create.
    #[arg(long, default_value_t = 0)]
    topics: usize,

    /// Partitions of each topic.
    #[arg(long, default_value_t = 1)]
    partitions_per_topic: i32,

    /// Replication factor of each topic.
    #[arg(long, default_value_t = 3)]
    replication_factor: i32,

    /// Topics per CreateTopics request.
    #[arg(long, default_value_t = 10)]
    batch: usize,

    /// ISR changes to make (shrink, expand back, shrink another partition, ...).
    #[arg(long, default_value_t = 20)]
    isr_changes: usize,

    /// Topic names are PREFIX-0, PREFIX-1, ...
    #[arg(long, default_value = "scale")]
    name_prefix: String,

    /// Only wait until a controller answers (registers nothing, creates nothing).
    #[arg(long)]
    probe_only: bool,

    /// --probe-only: give up (non-zero exit) after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    wait_serving_timeout_s: f64,

    /// Wait for this file to exist after the creation, before the ISR changes.
    #[arg(long)]
    pause_before_isr: Option<PathBuf>,

    /// After printing the result, keep the nodes alive until this file exists.
    #[arg(long)]
    hold_after: Option<PathBuf>,

    /// Timeout of one gRPC call, in seconds (creating a batch of large topics is slow).
    #[arg(long, default_value_t = 300.0)]
    request_timeout_s: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(args))
}

macro_rules! progress {
    ($($t:tt)*) => { eprintln!("metadata-scale: {}", format!($($t)*)) };
}

async fn run(args: Args) -> anyhow::Result<()> {
    let urls: Vec<String> = args
        .controller
        .split(',')
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        bail!("--controller has no URL");
    }
    let timeout = Duration::from_secs_f64(args.request_timeout_s.max(0.1));
    let channels = urls
        .iter()
        .map(|u| {
            Ok(Endpoint::from_shared(u.clone())
                .with_context(|| format!("--controller {u:?}"))?
                .connect_timeout(Duration::from_secs(2))
                .timeout(timeout)
                .tcp_nodelay(true)
                .connect_lazy())
        })
        .collect::<anyhow::Result<Vec<Channel>>>()?;

    if args.probe_only {
        return probe(&urls, &channels, args.wait_serving_timeout_s).await;
    }
    if args.nodes < 1 {
        bail!("--nodes must be at least 1");
    }
    if args.replication_factor < 1 || args.replication_factor > args.nodes {
        bail!(
            "--replication-factor {} must be within 1..=--nodes ({})",
            args.replication_factor,
            args.nodes
        );
    }
    if args.topics > 0 && args.partitions_per_topic < 1 {
        bail!("--partitions-per-topic must be at least 1");
    }
    let batch = args.batch.max(1);
    let mut client = ControllerClient::new(channels[0].clone());

    // ---- nodes ----
    let nodes = register_nodes(&mut client, args.nodes).await?;
    for n in &nodes {
        tokio::spawn(keep_alive(n.clone(), channels.clone()));
    }

    // ---- topics ----
    let total_partitions = args.topics as u64 * args.partitions_per_topic.max(0) as u64;
    progress!(
        "creating {} topics x {} partitions (RF {}, {} a request): {} partitions",
        args.topics,
        args.partitions_per_topic,
        args.replication_factor,
        batch,
        total_partitions
    );
    // Partitions as the controller last described them: (topic, index) -> state.
    let mut known: HashMap<(String, i32), PartitionInfo> = HashMap::new();
    let mut existed = 0usize;
    let names: Vec<String> = (0..args.topics)
        .map(|i| format!("{}-{i}", args.name_prefix))
        .collect();
    let started = Instant::now();
    for (b, chunk) in names.chunks(batch).enumerate() {
        let request = CreateTopicsRequest {
            topics: chunk
                .iter()
                .map(|name| CreatableTopic {
                    name: name.clone(),
                    partitions: args.partitions_per_topic,
                    replication_factor: args.replication_factor,
                    ..Default::default()
                })
                .collect(),
            validate_only: false,
        };
        let t = Instant::now();
        let response = client
            .create_topics(request)
            .await
            .with_context(|| format!("CreateTopics (batch {b}: {} ...)", chunk[0]))?
            .into_inner();
        let mut failed = Vec::new();
        for r in response.results {
            match r.error_code {
                NONE => {
                    if let Some(topic) = r.topic {
                        for p in topic.partitions {
                            known.insert((topic.name.clone(), p.partition), p);
                        }
                    }
                }
                TOPIC_ALREADY_EXISTS => existed += 1,
                code => failed.push(format!("{}: error {code} {}", r.name, r.error_message)),
            }
        }
        if !failed.is_empty() {
            bail!(
                "CreateTopics refused {} topic(s): {}",
                failed.len(),
                failed.join("; ")
            );
        }
        progress!(
            "batch {}/{}: {} topics in {:.3}s (metadata version {}; {:.1}s so far)",
            b + 1,
            names.len().div_ceil(batch),
            chunk.len(),
            t.elapsed().as_secs_f64(),
            response.metadata_version,
            started.elapsed().as_secs_f64()
        );
    }
    let create_seconds = started.elapsed().as_secs_f64();
    if existed > 0 {
        progress!("{existed} topic(s) already existed (a re-run): not timed as created");
    }
    progress!("created {total_partitions} partitions in {create_seconds:.3}s");

    // ---- ISR changes ----
    if let Some(file) = &args.pause_before_isr {
        wait_for_file(file).await;
    }
    let timings = isr_changes(&mut client, &nodes, &names, &args, known).await?;
    let mut ms: Vec<f64> = timings.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let p50 = ms
        .get(ms.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0.0);
    let max = ms.last().copied().unwrap_or(0.0);
    progress!(
        "{} ISR changes: p50 {p50:.2} ms, max {max:.2} ms",
        timings.len()
    );

    let result = serde_json::json!({
        "partitions": total_partitions,
        "create_seconds": round3(create_seconds),
        "isr_change_ms_p50": round3(p50),
        "isr_change_ms_max": round3(max),
        "isr_changes": timings.len(),
    });
    println!("{result}");
    use std::io::Write;
    std::io::stdout().flush().ok();

    if let Some(file) = &args.hold_after {
        wait_for_file(file).await;
    }
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn wait_for_file(file: &Path) {
    progress!("waiting for {}", file.display());
    while !file.exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress!("{} exists: going on", file.display());
}

/// One fake node: its registration and the broker epoch it currently holds.
struct FakeNode {
    id: i32,
    port: i32,
    incarnation: String,
    epoch: AtomicI64,
    heartbeat: Duration,
    /// How long a heartbeat may wait for its answer: the session timeout (a heartbeat queued
    /// behind a long commit must not be given up, or the node would be declared dead).
    session: Duration,
    /// Keeps the node's port bound, so no two nodes (or other processes) share it.
    _listener: std::net::TcpListener,
}

fn register_request(n: &FakeNode) -> proto::RegisterRequest {
    proto::RegisterRequest {
        node_id: n.id,
        host: "127.0.0.1".into(),
        port: n.port,
        incarnation_id: n.incarnation.clone(),
        ..Default::default()
    }
}

async fn register_nodes(
    client: &mut ControllerClient<Channel>,
    count: i32,
) -> anyhow::Result<Vec<Arc<FakeNode>>> {
    let mut nodes = Vec::new();
    for id in 1..=count {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a port")?;
        let port = i32::from(listener.local_addr()?.port());
        let mut node = FakeNode {
            id,
            port,
            incarnation: uuid::Uuid::new_v4().to_string(),
            epoch: AtomicI64::new(-1),
            heartbeat: Duration::ZERO,
            session: Duration::ZERO,
            _listener: listener,
        };
        let r = client
            .register(register_request(&node))
            .await
            .with_context(|| format!("Register of node {id}"))?
            .into_inner();
        if r.error_code != NONE {
            bail!(
                "Register of node {id} refused: error {} {}",
                r.error_code,
                r.error_message
            );
        }
        node.epoch = AtomicI64::new(r.broker_epoch);
        node.heartbeat = Duration::from_millis(r.heartbeat_interval_ms.clamp(10, 60_000) as u64);
        node.session = Duration::from_millis(r.session_timeout_ms.clamp(1000, 600_000) as u64);
        progress!(
            "node {id} registered on port {port}: broker epoch {}, heartbeat every {} ms \
             (session timeout {} ms)",
            r.broker_epoch,
            r.heartbeat_interval_ms,
            r.session_timeout_ms
        );
        nodes.push(Arc::new(node));
    }
    Ok(nodes)
}

/// Heartbeats as asked at registration, for the life of the process. A controller that does
/// not answer is replaced by the next URL; a stale epoch (the node was forgotten) registers
/// again.
async fn keep_alive(node: Arc<FakeNode>, channels: Vec<Channel>) {
    let current = AtomicUsize::new(0);
    let mut failing = false;
    loop {
        tokio::time::sleep(node.heartbeat).await;
        let i = current.load(Ordering::Relaxed) % channels.len();
        let mut client = ControllerClient::new(channels[i].clone());
        let epoch = node.epoch.load(Ordering::Relaxed);
        let sent = tokio::time::timeout(
            node.session,
            client.heartbeat(proto::HeartbeatRequest {
                node_id: node.id,
                broker_epoch: epoch,
                ..Default::default()
            }),
        )
        .await;
        match sent {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                if failing {
                    progress!("node {}: heartbeats answered again", node.id);
                    failing = false;
                }
                if r.error_code == STALE_BROKER_EPOCH {
                    progress!(
                        "node {}: stale broker epoch {epoch}; registering again",
                        node.id
                    );
                    match client.register(register_request(&node)).await {
                        Ok(r) if r.get_ref().error_code == NONE => node
                            .epoch
                            .store(r.get_ref().broker_epoch, Ordering::Relaxed),
                        Ok(r) => progress!(
                            "node {}: Register refused: {}",
                            node.id,
                            r.get_ref().error_message
                        ),
                        Err(e) => progress!("node {}: Register failed: {}", node.id, e.message()),
                    }
                } else if r.error_code != NONE {
                    progress!(
                        "node {}: heartbeat refused: error {} {}",
                        node.id,
                        r.error_code,
                        r.error_message
                    );
                }
            }
            failed => {
                if !failing {
                    let why = match failed {
                        Ok(Err(e)) => e.message().to_string(),
                        _ => "timed out".to_string(),
                    };
                    progress!(
                        "node {}: heartbeat to controller #{i} failed: {why}",
                        node.id
                    );
                    failing = true;
                }
                current.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The `index`-th partition the ISR changes work on: spread over the topics first.
fn target(names: &[String], partitions: i32, index: usize) -> Option<(String, i32)> {
    if names.is_empty() || partitions < 1 {
        return None;
    }
    let topic = &names[index % names.len()];
    let partition = ((index / names.len()) % partitions as usize) as i32;
    Some((topic.clone(), partition))
}

/// `count` ISR changes: pairs of (shrink by one follower, expand back), each pair on another
/// partition; each call uses the epochs of the last answer about its partition. Returns the
/// time of each committed change.
async fn isr_changes(
    client: &mut ControllerClient<Channel>,
    nodes: &[Arc<FakeNode>],
    names: &[String],
    args: &Args,
    mut known: HashMap<(String, i32), PartitionInfo>,
) -> anyhow::Result<Vec<Duration>> {
    let mut timings = Vec::with_capacity(args.isr_changes);
    if args.isr_changes == 0 {
        return Ok(timings);
    }
    if known.is_empty() {
        bail!(
            "--isr-changes {} needs partitions this run created (the API cannot list topics)",
            args.isr_changes
        );
    }
    if args.replication_factor < 2 {
        bail!("ISR changes need --replication-factor 2 or more (a follower to remove)");
    }
    progress!("making {} ISR changes", args.isr_changes);
    let epoch_of = |id: i32| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.epoch.load(Ordering::Relaxed))
    };
    // The follower removed from each pair's partition, to add back.
    let mut removed: Option<i32> = None;
    let mut pair = 0usize;
    let mut skipped = 0usize;
    while timings.len() < args.isr_changes {
        let Some(key) = target(names, args.partitions_per_topic, pair) else {
            bail!("no partition to change");
        };
        let Some(mut p) = known.get(&key).cloned() else {
            // A topic that existed before this run: its state is unknown here.
            pair += 1;
            skipped += 1;
            if skipped > known.len() + names.len() {
                bail!("no partition created by this run to change");
            }
            continue;
        };
        let shrinking = removed.is_none();
        let mut attempt = 0;
        let (elapsed, committed) = loop {
            attempt += 1;
            let leader = p.leader;
            let Some(broker_epoch) = epoch_of(leader) else {
                bail!(
                    "{}-{}: leader {leader} is none of the fake nodes (isr {:?})",
                    key.0,
                    key.1,
                    p.isr
                );
            };
            let new_isr: Vec<i32> = if shrinking {
                let Some(&follower) = p.isr.iter().rev().find(|&&r| r != leader) else {
                    bail!("{}-{}: no follower in the ISR {:?}", key.0, key.1, p.isr);
                };
                removed = Some(follower);
                p.isr.iter().copied().filter(|&r| r != follower).collect()
            } else {
                let back = removed.unwrap_or(-1);
                let mut isr = p.isr.clone();
                if !isr.contains(&back) {
                    isr.push(back);
                }
                isr
            };
            let request = proto::AlterPartitionRequest {
                node_id: leader,
                broker_epoch,
                topic: key.0.clone(),
                partition: key.1,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                new_isr: new_isr.clone(),
            };
            let t = Instant::now();
            let r = client
                .alter_partition(request)
                .await
                .with_context(|| format!("AlterPartition of {}-{}", key.0, key.1))?
                .into_inner();
            let elapsed = t.elapsed();
            if r.error_code == NONE {
                break (elapsed, r.partition);
            }
            if attempt >= ALTER_ATTEMPTS {
                bail!(
                    "AlterPartition of {}-{} to {new_isr:?} refused {attempt} times; last: error \
                     {} {}",
                    key.0,
                    key.1,
                    r.error_code,
                    r.error_message
                );
            }
            progress!(
                "AlterPartition of {}-{} refused (error {} {}); retrying with the current state",
                key.0,
                key.1,
                r.error_code,
                r.error_message
            );
            match r.partition {
                Some(current) => p = current,
                None => bail!("AlterPartition refused without the partition's current state"),
            }
        };
        if let Some(c) = committed {
            known.insert(key.clone(), c);
        }
        timings.push(elapsed);
        if shrinking {
            // Next: the expansion back, on the same partition (`removed` is kept).
            continue;
        }
        removed = None;
        pair += 1;
    }
    Ok(timings)
}

/// Retries ListPartitionReassignments (of no partition: the cheapest call that reaches the
/// controller's state) on every URL in turn until one answers.
async fn probe(urls: &[String], channels: &[Channel], timeout_s: f64) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = Duration::from_secs_f64(timeout_s.max(0.0));
    let mut last: String;
    let mut i = 0usize;
    loop {
        let mut client = ControllerClient::new(channels[i % channels.len()].clone());
        let call = client.list_partition_reassignments(proto::ListPartitionReassignmentsRequest {
            all_partitions: false,
            topic_partitions: Vec::new(),
        });
        match tokio::time::timeout(Duration::from_secs(2), call).await {
            Ok(Ok(_)) => {
                let s = started.elapsed().as_secs_f64();
                progress!("{} answered after {s:.3}s", urls[i % urls.len()]);
                println!("{}", serde_json::json!({ "serving_after_s": round3(s) }));
                return Ok(());
            }
            Ok(Err(e)) => last = format!("{}: {}", urls[i % urls.len()], e.message()),
            Err(_) => last = format!("{}: no answer within 2s", urls[i % urls.len()]),
        }
        if started.elapsed() >= deadline {
            bail!("no controller answered within {timeout_s}s; last: {last}");
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
