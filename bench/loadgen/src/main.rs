//! Load generator for `bench/run.sh`, built on librdkafka (the `rdkafka` crate).
//!
//! Subcommands, each printing one JSON object on stdout:
//!   create-topic  create a topic (replication factor 1) and wait until every partition has a leader
//!   produce       produce for a duration (or a count) at max speed or at a fixed rate;
//!                 per-record produce latency (send() to delivery report) in microseconds
//!   consume       read a topic from the beginning (assign, no group) and report throughput
//!   e2e           produce at a fixed rate and consume in the same process; end-to-end latency
//!                 from send() to the consumer receiving the record, in microseconds
//!
//! Throughput "MB" is 2^20 bytes of record value, as in Kafka's ProducerPerformance.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;
use serde_json::{json, Value};

const MB: f64 = 1024.0 * 1024.0;

#[derive(Parser)]
#[command(about = "Kafka load generator for Strata's benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    CreateTopic(CreateTopic),
    Produce(Produce),
    Consume(Consume),
    E2e(E2e),
    /// Print the librdkafka version
    Version,
}

#[derive(Args, Clone)]
struct Common {
    /// bootstrap.servers
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long)]
    topic: String,
    /// Extra librdkafka settings, KEY=VALUE (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Args)]
struct CreateTopic {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Seconds to wait for the topic to have a leader for every partition
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Then write one small record (acks=all) to every partition and wait for all of them to be
    /// acknowledged, so that the partitions are ready to take writes before a measurement
    #[arg(long)]
    warm: bool,
    /// Warm-up rounds (one record to every partition per round, each round acknowledged
    /// before the next)
    #[arg(long, default_value_t = 2)]
    warm_rounds: u32,
    /// Size of the warm-up records: 8 KiB, so that two rounds make Kafka add its first
    /// offset/time index entries (every 4 KiB of log), whose first write to the sparse
    /// preallocated index files is slow
    #[arg(long, default_value_t = 8192)]
    warm_size: usize,
}

#[derive(Args, Clone)]
struct ProducerOpts {
    /// Record value size in bytes
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Records per second; 0 = as fast as possible
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds to produce for
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many records (0 = no limit)
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Latencies of records sent in the first SECONDS are not recorded
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    #[arg(long, default_value = "all")]
    acks: String,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    #[arg(long, default_value_t = 1_000_000)]
    batch_size: u64,
    /// Send record i to partition i % N (N = the topic's partition count) instead of using
    /// librdkafka's default partitioner (sticky for records without key)
    #[arg(long)]
    round_robin: bool,
}

#[derive(Args)]
struct Produce {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    p: ProducerOpts,
}

#[derive(Args)]
struct Consume {
    #[command(flatten)]
    common: Common,
    /// Records to read (0 = until the topic's current end)
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Give up after this many seconds
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
}

#[derive(Args)]
struct E2e {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    p: ProducerOpts,
}

fn main() {
    let cli = Cli::parse();
    let out = match cli.cmd {
        Cmd::CreateTopic(a) => create_topic(a),
        Cmd::Produce(a) => produce(a),
        Cmd::Consume(a) => consume(a),
        Cmd::E2e(a) => e2e(a),
        Cmd::Version => {
            let (_, v) = rdkafka::util::get_rdkafka_version();
            Ok(json!({ "ok": true, "librdkafka": v }))
        }
    };
    match out {
        Ok(v) => println!("{v}"),
        Err(e) => {
            println!("{}", json!({ "ok": false, "error": format!("{e:#}") }));
            eprintln!("loadgen: {e:#}");
            std::process::exit(1);
        }
    }
}

fn base_config(c: &Common) -> Result<ClientConfig> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &c.brokers)
        .set("client.id", "strata-bench-loadgen")
        .set("log_level", "3");
    for kv in &c.set {
        let (k, v) = kv.split_once('=').ok_or_else(|| anyhow!("--set wants KEY=VALUE, got {kv}"))?;
        cfg.set(k, v);
    }
    Ok(cfg)
}

fn new_hist() -> Histogram<u64> {
    // 1 us .. 1 hour, 3 significant digits
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds")
}

fn hist_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    json!({
        "count": h.len(),
        "min": h.min(),
        "mean": (h.mean() * 10.0).round() / 10.0,
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "p9999": h.value_at_quantile(0.9999),
        "max": h.max(),
    })
}

fn partitions_of(client_cfg: &ClientConfig, topic: &str, timeout: Duration) -> Result<Vec<i32>> {
    let consumer: BaseConsumer = client_cfg.create().context("metadata client")?;
    let deadline = Instant::now() + timeout;
    loop {
        let res = consumer.fetch_metadata(Some(topic), Duration::from_secs(5));
        match res {
            Ok(md) => {
                if let Some(t) = md.topics().iter().find(|t| t.name() == topic) {
                    if t.error().is_none()
                        && !t.partitions().is_empty()
                        && t.partitions().iter().all(|p| p.leader() >= 0 && p.error().is_none())
                    {
                        let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                        ids.sort_unstable();
                        return Ok(ids);
                    }
                }
            }
            Err(e) if Instant::now() >= deadline => return Err(e).context("metadata"),
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            bail!("topic {topic} has no leader for every partition after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create_topic(a: CreateTopic) -> Result<Value> {
    let cfg = base_config(&a.common)?;
    let t0 = Instant::now();
    let admin: AdminClient<DefaultClientContext> = cfg.create().context("admin client")?;
    let topic = NewTopic::new(&a.common.topic, a.partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs_f64(a.timeout)))
        .request_timeout(Some(Duration::from_secs_f64(a.timeout)));
    let res = futures_executor::block_on(admin.create_topics([&topic], &opts))
        .context("CreateTopics")?;
    for r in res {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("CreateTopics {name}: {code}"),
        }
    }
    let parts = partitions_of(&cfg, &a.common.topic, Duration::from_secs_f64(a.timeout))?;
    if parts.len() != a.partitions as usize {
        bail!("topic {} has {} partitions, wanted {}", a.common.topic, parts.len(), a.partitions);
    }
    let created = t0.elapsed().as_secs_f64();
    let mut warm_s = None;
    if a.warm {
        let mut pcfg = base_config(&a.common)?;
        pcfg.set("acks", "all").set("linger.ms", "5");
        let producer: rdkafka::producer::BaseProducer<WarmCtx> =
            pcfg.create_with_context(WarmCtx::default()).context("producer")?;
        let payload = vec![b'w'; a.warm_size];
        let mut rounds = Vec::new();
        for _ in 0..a.warm_rounds {
            let r0 = Instant::now();
            for &p in &parts {
                let rec: BaseRecord<'_, (), [u8]> =
                    BaseRecord::to(&a.common.topic).partition(p).payload(&payload[..]);
                producer.send(rec).map_err(|(e, _)| anyhow!("send: {e}"))?;
            }
            producer
                .flush(Timeout::After(Duration::from_secs_f64(a.timeout)))
                .context("warm flush")?;
            if let Some(e) = producer.context().error.lock().unwrap().take() {
                bail!("warm-up record: {e}");
            }
            rounds.push(r0.elapsed().as_secs_f64());
        }
        warm_s = Some(json!({ "total": t0.elapsed().as_secs_f64() - created, "rounds": rounds }));
    }
    Ok(json!({ "ok": true, "topic": a.common.topic, "partitions": parts.len(),
               "seconds": created, "warm_seconds": warm_s }))
}

#[derive(Default)]
struct WarmCtx {
    error: Mutex<Option<String>>,
}
impl ClientContext for WarmCtx {}
impl ProducerContext for WarmCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.error.lock().unwrap().get_or_insert(e.to_string());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// producing

struct ProduceCtx {
    start: Instant,
    warmup_us: u64,
    hist: Mutex<Histogram<u64>>,
    acked: AtomicU64,
    errors: AtomicU64,
    last_ack_us: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ProduceCtx {
    fn new(start: Instant, warmup: f64) -> Self {
        ProduceCtx {
            start,
            warmup_us: (warmup * 1e6) as u64,
            hist: Mutex::new(new_hist()),
            acked: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_ack_us: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

impl ClientContext for ProduceCtx {}

impl ProducerContext for ProduceCtx {
    /// Microseconds since `start` at which the record was handed to send().
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_us: usize) {
        let now = self.now_us();
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                if sent_us as u64 >= self.warmup_us {
                    let lat = now.saturating_sub(sent_us as u64).max(1);
                    self.hist.lock().unwrap().saturating_record(lat);
                }
            }
            Err((e, _)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let mut fe = self.first_error.lock().unwrap();
                if fe.is_none() {
                    *fe = Some(e.to_string());
                }
            }
        }
        self.last_ack_us.fetch_max(now, Ordering::Relaxed);
    }
}

fn producer_config(c: &Common, p: &ProducerOpts) -> Result<ClientConfig> {
    let mut cfg = base_config(c)?;
    cfg.set("acks", &p.acks)
        .set("linger.ms", p.linger_ms.to_string())
        .set("batch.size", p.batch_size.to_string())
        .set("compression.type", "none");
    // user's --set wins
    for kv in &c.set {
        let (k, v) = kv.split_once('=').unwrap();
        cfg.set(k, v);
    }
    Ok(cfg)
}

struct ProduceRun {
    sent: u64,
    /// us since the context's start at which sending began
    begin_us: u64,
    /// seconds spent sending (before the final flush)
    send_elapsed: f64,
}

/// Drive `producer` according to `p`; `fill` may stamp the payload before each send.
fn produce_loop(
    producer: &ThreadedProducer<ProduceCtx>,
    ctx: &ProduceCtx,
    topic: &str,
    p: &ProducerOpts,
    nparts: i32,
    mut fill: impl FnMut(&mut [u8], u64),
) -> Result<ProduceRun> {
    let mut payload: Vec<u8> = (0..p.size).map(|i| b'A' + (i % 26) as u8).collect();
    let begin_us = ctx.now_us();
    let duration_us = (p.duration * 1e6) as u64;
    let interval_us = if p.rate > 0.0 { 1e6 / p.rate } else { 0.0 };
    let mut i: u64 = 0;
    loop {
        if p.count > 0 && i >= p.count {
            break;
        }
        let now = ctx.now_us() - begin_us;
        if now >= duration_us {
            break;
        }
        if interval_us > 0.0 {
            let due = (i as f64 * interval_us) as u64;
            if now < due {
                let wait = due - now;
                if wait > 200 {
                    std::thread::sleep(Duration::from_micros((wait - 100).min(5_000)));
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
        }
        let sent_us = ctx.now_us();
        fill(&mut payload, sent_us);
        let mut rec: BaseRecord<'_, (), [u8], usize> =
            BaseRecord::with_opaque_to(topic, sent_us as usize).payload(&payload[..]);
        if p.round_robin && nparts > 0 {
            rec = rec.partition((i % nparts as u64) as i32);
        }
        match producer.send(rec) {
            Ok(()) => i += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((e, _)) => bail!("send: {e}"),
        }
    }
    let send_elapsed = (ctx.now_us() - begin_us) as f64 / 1e6;
    producer.flush(Timeout::After(Duration::from_secs(120))).context("flush")?;
    Ok(ProduceRun { sent: i, begin_us, send_elapsed })
}

fn produce_report(mode: &str, p: &ProducerOpts, ctx: &ProduceCtx, run: &ProduceRun) -> Value {
    let acked = ctx.acked.load(Ordering::Relaxed);
    let errors = ctx.errors.load(Ordering::Relaxed);
    let last_ack = ctx.last_ack_us.load(Ordering::Relaxed).saturating_sub(run.begin_us);
    let elapsed = (last_ack as f64 / 1e6).max(1e-6);
    let hist = ctx.hist.lock().unwrap();
    json!({
        "ok": errors == 0 && acked == run.sent,
        "mode": mode,
        "size": p.size,
        "target_rate": p.rate,
        "acks": p.acks,
        "linger_ms": p.linger_ms,
        "batch_size": p.batch_size,
        "sent": run.sent,
        "acked": acked,
        "errors": errors,
        "first_error": *ctx.first_error.lock().unwrap(),
        "send_seconds": run.send_elapsed,
        "seconds": elapsed,
        "records_per_s": acked as f64 / elapsed,
        "mb_per_s": acked as f64 * p.size as f64 / MB / elapsed,
        "latency_us": hist_json(&hist),
    })
}

fn produce(a: Produce) -> Result<Value> {
    let cfg = producer_config(&a.common, &a.p)?;
    let nparts = if a.p.round_robin {
        partitions_of(&base_config(&a.common)?, &a.common.topic, Duration::from_secs(30))?.len() as i32
    } else {
        0
    };
    let producer: ThreadedProducer<ProduceCtx> = cfg
        .create_with_context(ProduceCtx::new(Instant::now(), a.p.warmup))
        .context("producer")?;
    let ctx = producer.context().clone();
    // Connection setup is part of the first records' latency, as with ProducerPerformance;
    // --warmup excludes it.
    let run = produce_loop(&producer, &ctx, &a.common.topic, &a.p, nparts, |_, _| {})?;
    Ok(produce_report("produce", &a.p, &ctx, &run))
}

// ---------------------------------------------------------------------------------------------
// consuming

fn consumer_config(c: &Common, group: &str) -> Result<ClientConfig> {
    let mut cfg = base_config(c)?;
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    for kv in &c.set {
        let (k, v) = kv.split_once('=').unwrap();
        cfg.set(k, v);
    }
    Ok(cfg)
}

fn assign_all(consumer: &BaseConsumer, topic: &str, parts: &[i32], off: Offset) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for &p in parts {
        tpl.add_partition_offset(topic, p, off).context("tpl")?;
    }
    consumer.assign(&tpl).context("assign")?;
    Ok(())
}

fn consume(a: Consume) -> Result<Value> {
    let cfg = consumer_config(&a.common, &format!("loadgen-consume-{}", std::process::id()))?;
    let parts = partitions_of(&cfg, &a.common.topic, Duration::from_secs(30))?;
    let consumer: BaseConsumer = cfg.create().context("consumer")?;
    let mut want = a.count;
    if want == 0 {
        for &p in &parts {
            let (lo, hi) = consumer
                .fetch_watermarks(&a.common.topic, p, Duration::from_secs(10))
                .context("watermarks")?;
            want += (hi - lo).max(0) as u64;
        }
    }
    let t0 = Instant::now();
    assign_all(&consumer, &a.common.topic, &parts, Offset::Beginning)?;
    let (mut n, mut bytes, mut first) = (0u64, 0u64, None::<f64>);
    let mut last = 0f64;
    let mut errors = 0u64;
    let mut first_error = None;
    while n < want {
        if t0.elapsed().as_secs_f64() > a.timeout {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                n += 1;
                bytes += m.payload_len() as u64;
                last = t0.elapsed().as_secs_f64();
                first.get_or_insert(last);
            }
            Some(Err(e)) => {
                errors += 1;
                first_error.get_or_insert(e.to_string());
            }
            None => {}
        }
    }
    let secs = last.max(1e-6);
    Ok(json!({
        "ok": n >= want && want > 0,
        "mode": "consume",
        "wanted": want,
        "records": n,
        "bytes": bytes,
        "errors": errors,
        "first_error": first_error,
        "seconds": secs,
        "first_record_s": first,
        "records_per_s": n as f64 / secs,
        "mb_per_s": bytes as f64 / MB / secs,
    }))
}

// ---------------------------------------------------------------------------------------------
// end to end

fn e2e(a: E2e) -> Result<Value> {
    if a.p.size < 8 {
        bail!("e2e needs --size >= 8 (the send timestamp is in the record value)");
    }
    let start = Instant::now();
    let ccfg = consumer_config(&a.common, &format!("loadgen-e2e-{}", std::process::id()))?;
    let parts = partitions_of(&ccfg, &a.common.topic, Duration::from_secs(30))?;
    let consumer: BaseConsumer = ccfg.create().context("consumer")?;
    // The topic is expected to be fresh; start at its current end either way.
    let mut ends = Vec::new();
    for &p in &parts {
        let (_, hi) = consumer
            .fetch_watermarks(&a.common.topic, p, Duration::from_secs(10))
            .context("watermarks")?;
        ends.push(hi);
    }
    let mut tpl = TopicPartitionList::new();
    for (&p, &hi) in parts.iter().zip(&ends) {
        tpl.add_partition_offset(&a.common.topic, p, Offset::Offset(hi)).context("tpl")?;
    }
    consumer.assign(&tpl).context("assign")?;

    // records sent before this (us since start) are not recorded; set once producing starts
    let warm_until = Arc::new(AtomicU64::new(u64::MAX));
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let expect = Arc::new(AtomicU64::new(u64::MAX));
    let hist = Arc::new(Mutex::new(new_hist()));
    let cthread = {
        let (received, done, expect, hist) = (received.clone(), done.clone(), expect.clone(), hist.clone());
        let warm_until = warm_until.clone();
        std::thread::spawn(move || -> (u64, Option<String>) {
            let mut errs = 0;
            let mut first_err = None;
            loop {
                let n = received.load(Ordering::Relaxed);
                if n >= expect.load(Ordering::Relaxed) || done.load(Ordering::Relaxed) {
                    break;
                }
                match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => {
                        let now = start.elapsed().as_micros() as u64;
                        if let Some(v) = m.payload() {
                            if v.len() >= 8 {
                                let sent = u64::from_le_bytes(v[..8].try_into().unwrap());
                                if sent >= warm_until.load(Ordering::Relaxed) {
                                    hist.lock().unwrap().saturating_record(now.saturating_sub(sent).max(1));
                                }
                            }
                        }
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Err(e)) => {
                        errs += 1;
                        first_err.get_or_insert(e.to_string());
                    }
                    None => {}
                }
            }
            (errs, first_err)
        })
    };
    // Let the consumer connect and issue its first fetches before producing.
    std::thread::sleep(Duration::from_millis(500));

    let pcfg = producer_config(&a.common, &a.p)?;
    let send_start = start.elapsed().as_secs_f64();
    let producer: ThreadedProducer<ProduceCtx> = pcfg
        .create_with_context(ProduceCtx::new(start, send_start + a.p.warmup))
        .context("producer")?;
    let ctx = producer.context().clone();
    warm_until.store(ctx.warmup_us, Ordering::Relaxed);
    let p = a.p.clone();
    let run = produce_loop(&producer, &ctx, &a.common.topic, &p, parts.len() as i32, |buf, sent_us| {
        buf[..8].copy_from_slice(&sent_us.to_le_bytes());
    })?;
    let acked = ctx.acked.load(Ordering::Relaxed);
    expect.store(acked, Ordering::Relaxed);
    // wait for the consumer to see everything (at most 10 s)
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.load(Ordering::Relaxed) < acked && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    done.store(true, Ordering::Relaxed);
    let (cerrs, cfirst) = cthread.join().map_err(|_| anyhow!("consumer thread panicked"))?;
    let got = received.load(Ordering::Relaxed);
    let mut rep = produce_report("e2e", &a.p, &ctx, &run);
    let h = hist.lock().unwrap();
    let obj = rep.as_object_mut().unwrap();
    obj.insert("ok".into(), json!(obj["ok"].as_bool().unwrap_or(false) && got >= acked && cerrs == 0));
    obj.insert("received".into(), json!(got));
    obj.insert("consumer_errors".into(), json!(cerrs));
    obj.insert("consumer_first_error".into(), json!(cfirst));
    obj.insert("produce_latency_us".into(), obj["latency_us"].clone());
    obj.insert("latency_us".into(), hist_json(&h));
    Ok(rep)
}
