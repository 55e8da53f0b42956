//! In-process tests of the whole tiering path over a `file://` bucket: upload, local
//! retention, reads from the bucket, restore, corrupt manifests, scrub.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::manifest::Manifest;
use super::*;
use crate::broker::{Broker, Partition};
use crate::config::NodeConfig;
use crate::log::batch::tests::make_batch;
use kafka_protocol::error::ResponseError;

fn now() -> i64 {
    crate::fsutil::now_ms()
}

struct Node {
    data: tempfile::TempDir,
    bucket: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        Node {
            data: tempfile::tempdir().unwrap(),
            bucket: tempfile::tempdir().unwrap(),
        }
    }

    async fn open(&self) -> Running {
        open_at(self.data.path(), self.bucket.path()).await
    }
}

/// A started node, used through its broker; dropping it stops the node.
struct Running(Arc<crate::node::Node>);

impl std::ops::Deref for Running {
    type Target = Broker;
    fn deref(&self) -> &Broker {
        &self.0.broker
    }
}

fn config_at(data: &std::path::Path, bucket: &std::path::Path) -> NodeConfig {
    let mut cfg = NodeConfig::for_tests(data.to_path_buf());
    cfg.tiering = Some(TieringOptions {
        url: format!("file://{}", bucket.display()),
        cache_bytes: 1 << 20,
        disk_cache: None,
        // The tests run every upload and retention pass themselves.
        interval: Duration::from_secs(3600),
        compaction_interval: Duration::ZERO,
    });
    cfg.retention_check_interval_ms = 3_600_000;
    cfg
}

/// A node with its data in `data`, tiering to the file:// bucket at `bucket`.
async fn open_at(data: &std::path::Path, bucket: &std::path::Path) -> Running {
    open_config(|| config_at(data, bucket)).await
}

/// A node started with `cfg()`.
async fn open_config(cfg: impl Fn() -> NodeConfig) -> Running {
    // A node dropped just before may still be letting go of the data directory's lock.
    for _ in 0..100 {
        match crate::node::Node::open_and_start(cfg()).await {
            Ok(n) => return Running(n),
            Err(e) if e.to_string().contains("another strata-node") => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the data directory stayed locked");
}

fn topic_configs() -> BTreeMap<String, String> {
    [
        ("remote.storage.enable", "true"),
        ("segment.bytes", "2000"),
        ("local.retention.bytes", "4000"),
        ("index.interval.bytes", "300"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Every batch from `from`, local or remote, as (base offset, bytes).
async fn read_all(b: &Broker, topic: &str, from: i64) -> Vec<(i64, Vec<u8>)> {
    let part = b.partition(topic, 0).unwrap();
    let t = b.tiering.as_ref().unwrap();
    let mut out = Vec::new();
    let mut off = from;
    loop {
        let (local, start, end, id) = {
            let log = part.log();
            let leo = log.log_end_offset();
            let plan = if off >= log.log_start_offset() {
                log.plan_read(off, 700, true, leo).unwrap()
            } else {
                None
            };
            (plan, log.log_start_offset(), leo, log.topic_id())
        };
        let bytes = if off < start {
            match t.read(id, 0, off, 700, true).await.unwrap() {
                Some(b) => b.to_vec(),
                // Compaction emptied the rest of the bucket: on in the local log.
                None => {
                    off = start;
                    continue;
                }
            }
        } else if let Some(plan) = local {
            plan.read().unwrap()
        } else {
            assert_eq!(off, end);
            return out;
        };
        let spans = crate::log::batch::validate_produce_records(&bytes).unwrap();
        assert!(!spans.is_empty());
        for s in spans {
            let raw = bytes[s.position..s.position + s.header.total_len()].to_vec();
            if s.header.last_offset() >= off {
                out.push((s.header.base_offset, raw));
            }
            off = s.header.last_offset() + 1;
        }
    }
}

fn scrub_dir(bucket: &std::path::Path, topic_id: uuid::Uuid) -> (Manifest, Vec<String>) {
    let dir = bucket.join(topic_id.hyphenated().to_string()).join("0");
    let raw = std::fs::read(dir.join("manifest.json")).unwrap();
    let m = Manifest::parse("manifest.json", &raw).unwrap();
    let objects: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().to_string(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    let problems = plan::scrub(&m, &objects);
    (m, problems)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_local_retention_remote_reads_and_restore() {
    let node = Node::new();
    let b = node.open().await;
    b.create_topic("t", 1, 1, topic_configs(), false)
        .await
        .unwrap();
    let part = b.partition("t", 0).unwrap();
    let value = [7u8; 150];
    for seq in 0..100 {
        let batch = make_batch(&[&value, b"tail"], now() + seq as i64, 42, seq * 2);
        b.append(&part, batch).unwrap();
    }
    let before = read_all(&b, "t", 0).await;
    assert_eq!(before.len(), 100);
    let t = b.tiering.clone().unwrap();
    t.sync_partition(&part).await;
    b.run_retention();
    let (local_bytes, local_start, topic_id) = {
        let log = part.log();
        (log.size_bytes(), log.log_start_offset(), log.topic_id())
    };
    assert!(local_start > 0, "local retention removed tiered segments");
    assert!(local_bytes <= 4000 + 2000, "local {local_bytes}");
    let stats = t.stats();
    assert!(stats.segments_uploaded > 0);
    assert_eq!(stats.partitions[0].lag_segments, 0);
    assert_eq!(t.earliest(topic_id, 0, local_start).unwrap(), 0);
    // Byte-identical from offset 0, the head from the bucket.
    assert_eq!(read_all(&b, "t", 0).await, before);
    assert_eq!(
        read_all(&b, "t", 33).await[0].0,
        32,
        "batch holding offset 33"
    );
    let (m, problems) = scrub_dir(node.bucket.path(), topic_id);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(m.log_start_offset, 0);
    // Uploading again changes nothing.
    let generation = m.generation;
    t.sync_partition(&part).await;
    assert_eq!(
        scrub_dir(node.bucket.path(), topic_id).0.generation,
        generation
    );

    // Replaced disk: the partition directory is gone; restore from the manifest.
    let leo = part.log().log_end_offset();
    drop(part);
    drop(b);
    drop(t);
    std::fs::remove_dir_all(node.data.path().join("t-0")).unwrap();
    let b = node.open().await;
    let part = b.partition("t", 0).unwrap();
    assert_eq!(part.log().log_start_offset(), m.end_offset);
    assert_eq!(part.log().log_end_offset(), m.end_offset);
    let restored = read_all(&b, "t", 0).await;
    assert_eq!(&restored[..], &before[..restored.len()]);
    // The producer continues: a retry of a tiered batch is a duplicate, the next is taken.
    let last_tiered_seq = (m.end_offset - 2) as i32;
    let dup = b
        .append(
            &part,
            make_batch(&[&value, b"tail"], now(), 42, last_tiered_seq),
        )
        .unwrap();
    assert!(dup.0.duplicate);
    let next = b
        .append(
            &part,
            make_batch(&[&value, b"tail"], now(), 42, last_tiered_seq + 2),
        )
        .unwrap();
    assert_eq!(next.0.base_offset, m.end_offset);
    assert!(leo >= m.end_offset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_manifest_stops_tiering_without_reset() {
    let node = Node::new();
    let b = node.open().await;
    b.create_topic("t", 1, 1, topic_configs(), false)
        .await
        .unwrap();
    let part = b.partition("t", 0).unwrap();
    for seq in 0..40 {
        b.append(&part, make_batch(&[&[1u8; 150]], now(), -1, -1))
            .unwrap();
        let _ = seq;
    }
    let t = b.tiering.clone().unwrap();
    t.sync_partition(&part).await;
    let topic_id = part.log().topic_id();
    let path = node
        .bucket
        .path()
        .join(topic_id.hyphenated().to_string())
        .join("0")
        .join("manifest.json");
    std::fs::write(&path, b"{\"version\": 1, \"garbage\": true}").unwrap();
    drop(part);
    drop(b);
    drop(t);
    let b = node.open().await;
    let part = b.partition("t", 0).unwrap();
    for _ in 0..20 {
        b.append(&part, make_batch(&[&[1u8; 150]], now(), -1, -1))
            .unwrap();
    }
    let t = b.tiering.clone().unwrap();
    // What the first pass deleted was in the manifest then; from now on nothing goes.
    let start = part.log().log_start_offset();
    t.sync_partition(&part).await;
    assert_eq!(part.log().log_start_offset(), start);
    assert!(t.earliest(topic_id, 0, 0).is_err());
    let err = t.read(topic_id, 0, 0, 100, true).await.unwrap_err();
    assert!(matches!(err, Error::RemoteUnavailable(_)), "{err:?}");
    assert_eq!(err.kafka_code(), ResponseError::KafkaStorageError);
    // DeleteRecords cannot move a start it cannot read: refused, retriable.
    let err = b.delete_records(&part, 5).await.unwrap_err();
    assert!(matches!(err, Error::CorruptManifest { .. }), "{err:?}");
    assert_eq!(err.kafka_code(), ResponseError::KafkaStorageError);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"{\"version\": 1, \"garbage\": true}",
        "never overwritten"
    );
    b.run_retention();
    assert_eq!(
        part.log().log_start_offset(),
        start,
        "nothing deleted locally"
    );
    // With the directory gone too, the node refuses to start rather than begin at 0.
    drop(part);
    drop(b);
    drop(t);
    std::fs::remove_dir_all(node.data.path().join("t-0")).unwrap();
    // It never serves: the partition it leads cannot be opened, so its first metadata
    // image is never applied.
    let n = loop {
        match crate::node::Node::open(config_at(node.data.path(), node.bucket.path())).await {
            Ok(n) => break n,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    n.start();
    assert!(
        tokio::time::timeout(Duration::from_secs(2), n.first_image())
            .await
            .is_err(),
        "started over a tiered partition it cannot restore"
    );
    assert!(n.broker.partition("t", 0).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_retention_deletes_from_the_bucket_manifest_first() {
    let node = Node::new();
    let b = node.open().await;
    let mut cfg = topic_configs();
    cfg.insert("retention.bytes".into(), "8000".into());
    b.create_topic("t", 1, 1, cfg, false).await.unwrap();
    let part = b.partition("t", 0).unwrap();
    for _ in 0..200 {
        b.append(&part, make_batch(&[&[3u8; 150]], now(), -1, -1))
            .unwrap();
    }
    let t = b.tiering.clone().unwrap();
    t.sync_partition(&part).await;
    b.run_retention();
    let topic_id = part.log().topic_id();
    let (m, problems) = scrub_dir(node.bucket.path(), topic_id);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(m.log_start_offset > 0);
    let total = m.bytes() + part.log().size_bytes();
    assert!(total <= 8000 + 2000 + 4000, "total {total}");
    assert!(matches!(
        t.read(topic_id, 0, 0, 100, true).await,
        Err(Error::OffsetOutOfRange { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_cannot_touch_the_manifest() {
    let node = Node::new();
    let b = node.open().await;
    b.create_topic("t", 1, 1, topic_configs(), false)
        .await
        .unwrap();
    let part = b.partition("t", 0).unwrap();
    let batch = || make_batch(&[&[5u8; 150]], now(), -1, -1);
    for _ in 0..30 {
        b.append(&part, batch()).unwrap();
    }
    let t = b.tiering.clone().unwrap();
    t.sync_partition(&part).await;
    let topic_id = part.log().topic_id();
    let path = node
        .bucket
        .path()
        .join(topic_id.hyphenated().to_string())
        .join("0")
        .join("manifest.json");
    // A new leader (epoch 5) has written the manifest since.
    let mut m = Manifest::parse("m", &std::fs::read(&path).unwrap()).unwrap();
    m.leader_epoch = 5;
    m.generation += 1;
    std::fs::write(&path, m.to_bytes()).unwrap();
    for _ in 0..30 {
        b.append(&part, batch()).unwrap();
    }
    // First pass: the conditional put fails (stale version); the next re-reads and is fenced.
    for _ in 0..3 {
        t.sync_partition(&part).await;
        tokio::time::sleep(Duration::from_millis(450)).await;
    }
    let after = Manifest::parse("m", &std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(after, m, "the deposed leader wrote nothing");
    let err = t.stats().partitions[0].error.clone().unwrap_or_default();
    assert!(err.contains("fenced"), "{err}");
    // A client asking the deposed leader to delete records is told to find the new one.
    let err = b.delete_records(&part, 3).await.unwrap_err();
    assert!(matches!(err, Error::ManifestFenced { .. }), "{err:?}");
    assert_eq!(err.kafka_code(), ResponseError::NotLeaderOrFollower);
    assert_eq!(
        Manifest::parse("m", &std::fs::read(&path).unwrap()).unwrap(),
        m,
        "and writes nothing"
    );
    let (_, problems) = scrub_dir(node.bucket.path(), topic_id);
    // Objects the deposed leader uploaded before losing the race are not in the manifest;
    // the new leader (epoch 5) removes them as orphans when it loads the manifest.
    assert!(
        problems.iter().all(|p| p.contains("not referenced")),
        "{problems:?}"
    );
}

/// Appends the same timestamped batches to a tiered and an untiered topic: batch `i` holds
/// two records at `base + 10 i` and one more, except every seventh, which goes back in time.
fn produce_timestamped(b: &Broker, topics: &[&str], n: i64, base: i64) -> Vec<i64> {
    let mut stamps = Vec::new();
    for i in 0..n {
        let ts = if i % 7 == 6 {
            base + 10 * i - 45
        } else {
            base + 10 * i
        };
        for t in topics {
            let part = b.partition(t, 0).unwrap();
            b.append(&part, make_batch(&[&[9u8; 150], b"x"], ts, -1, -1))
                .unwrap();
        }
        stamps.extend([ts, ts + 1]);
    }
    stamps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_by_time_matches_an_untiered_topic() {
    let node = Node::new();
    let b = node.open().await;
    b.create_topic("t", 1, 1, topic_configs(), false)
        .await
        .unwrap();
    let mut plain = topic_configs();
    plain.remove("remote.storage.enable");
    plain.remove("local.retention.bytes");
    b.create_topic("u", 1, 1, plain, false).await.unwrap();
    let base = now() - 3_600_000;
    let stamps = produce_timestamped(&b, &["t", "u"], 120, base);
    let (t_part, u_part) = (b.partition("t", 0).unwrap(), b.partition("u", 0).unwrap());
    let t = b.tiering.clone().unwrap();
    t.sync_partition(&t_part).await;
    b.run_retention();
    let local_start = t_part.log().log_start_offset();
    assert!(
        local_start > 60,
        "early segments are remote-only (local start {local_start})"
    );
    assert_eq!(u_part.log().log_start_offset(), 0);

    // Every timestamp in range and around it, including ones between records and the
    // out-of-order batches: the same (offset, timestamp) as the untiered topic.
    let mut remote_answers = 0;
    for ts in (base - 5..=base + 10 * 120 + 5).chain([0, i64::MAX]) {
        let want = b.offset_for_timestamp(&u_part, ts).await.unwrap();
        let got = b.offset_for_timestamp(&t_part, ts).await.unwrap();
        assert_eq!(got, want, "timestamp {ts}");
        if got.is_some_and(|(o, _)| o < local_start) {
            remote_answers += 1;
        }
    }
    assert!(
        remote_answers > 500,
        "{remote_answers} answers came from the bucket"
    );
    // Against the plain definition too: the first record whose timestamp reaches ts.
    let ts = stamps[21];
    let first = stamps.iter().position(|&s| s >= ts).unwrap() as i64;
    assert!(first < local_start);
    assert_eq!(
        b.offset_for_timestamp(&t_part, ts).await.unwrap(),
        Some((first, stamps[first as usize]))
    );
    assert_eq!(
        b.max_timestamp_offset(&t_part).await.unwrap(),
        b.max_timestamp_offset(&u_part).await.unwrap()
    );

    // The largest timestamp in the bucket's part only: MAX_TIMESTAMP comes from there.
    let late = now() - 1_000_000;
    for topic in ["t2", "u2"] {
        let mut c = topic_configs();
        if topic == "u2" {
            c.remove("remote.storage.enable");
            c.remove("local.retention.bytes");
        }
        b.create_topic(topic, 1, 1, c, false).await.unwrap();
    }
    produce_timestamped(&b, &["t2", "u2"], 5, late);
    produce_timestamped(&b, &["t2", "u2"], 60, base);
    let (t2, u2) = (b.partition("t2", 0).unwrap(), b.partition("u2", 0).unwrap());
    t.sync_partition(&t2).await;
    b.run_retention();
    assert!(t2.log().log_start_offset() > 10);
    let want = b.max_timestamp_offset(&u2).await.unwrap();
    assert_eq!(want.map(|(_, ts)| ts), Some(late + 41));
    assert_eq!(b.max_timestamp_offset(&t2).await.unwrap(), want);

    // Only what the answer needs is downloaded: on a cold cache, one lookup costs the
    // segment's time index, its offset index and one block of its log.
    drop((t_part, u_part, t2, u2));
    drop(b);
    drop(t);
    let b = node.open().await;
    let t_part = b.partition("t", 0).unwrap();
    let t = b.tiering.clone().unwrap();
    let gets = t.stats().bucket_gets;
    let got = b.offset_for_timestamp(&t_part, stamps[30]).await.unwrap();
    assert_eq!(got, Some((30, stamps[30])));
    assert!(
        t.stats().bucket_gets - gets <= 3,
        "{} GETs",
        t.stats().bucket_gets - gets
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_remote_log_start_first() {
    let node = Node::new();
    let b = node.open().await;
    b.create_topic("t", 1, 1, topic_configs(), false)
        .await
        .unwrap();
    let part = b.partition("t", 0).unwrap();
    let base = now() - 60_000;
    produce_timestamped(&b, &["t"], 100, base);
    let t = b.tiering.clone().unwrap();
    t.sync_partition(&part).await;
    b.run_retention();
    let (local_start, topic_id) = {
        let log = part.log();
        (log.log_start_offset(), log.topic_id())
    };
    assert!(local_start > 40, "local start {local_start}");
    assert_eq!(b.earliest_offset(&part).unwrap(), 0);
    let (before, _) = scrub_dir(node.bucket.path(), topic_id);

    // Below the local start, in the middle of a remote segment.
    let x = before.segments[2].base_offset + 3;
    assert_eq!(b.delete_records(&part, x).await.unwrap(), x);
    assert_eq!(
        b.earliest_offset(&part).unwrap(),
        x,
        "earliest (-2) is the new start"
    );
    assert_eq!(
        part.log().log_start_offset(),
        local_start,
        "local start unchanged"
    );
    let (m, problems) = scrub_dir(node.bucket.path(), topic_id);
    assert!(
        problems.is_empty(),
        "objects below the start are gone: {problems:?}"
    );
    assert_eq!(m.log_start_offset, x);
    assert_eq!(m.segments[0], before.segments[2]);
    assert!(matches!(
        t.read(topic_id, 0, x - 1, 1000, true).await,
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        read_all(&b, "t", x).await[0].0,
        x - 1,
        "the batch holding x"
    );
    // Lookups by time see only what is left.
    assert_eq!(
        b.offset_for_timestamp(&part, 0)
            .await
            .unwrap()
            .map(|(o, _)| o),
        Some(x)
    );
    // Lower than the start: nothing moves.
    assert_eq!(b.delete_records(&part, 1).await.unwrap(), x);
    assert!(matches!(
        b.delete_records(&part, 1_000_000).await,
        Err(Error::OffsetOutOfRange { .. })
    ));

    // Above the local start: the bucket keeps only the segment holding it.
    let y = local_start + 5;
    assert_eq!(b.delete_records(&part, y).await.unwrap(), y);
    assert_eq!(part.log().log_start_offset(), y);
    let (m, problems) = scrub_dir(node.bucket.path(), topic_id);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(m.log_start_offset, y);
    assert!(m.segments[0].base_offset <= y && y < m.segments[0].next_offset);

    // It survives a restart.
    drop(part);
    drop(b);
    drop(t);
    let b = node.open().await;
    let part = b.partition("t", 0).unwrap();
    assert_eq!(b.earliest_offset(&part).unwrap(), y);

    // Before anything is tiered: the first upload starts the bucket at the log start.
    b.create_topic("fresh", 1, 1, topic_configs(), false)
        .await
        .unwrap();
    let fresh = b.partition("fresh", 0).unwrap();
    produce_timestamped(&b, &["fresh"], 30, base);
    assert_eq!(b.delete_records(&fresh, 3).await.unwrap(), 3);
    let t = b.tiering.clone().unwrap();
    t.sync_partition(&fresh).await;
    let id = fresh.log().topic_id();
    let (m, problems) = scrub_dir(node.bucket.path(), id);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!((m.segments[0].base_offset, m.log_start_offset), (0, 3));
    b.run_retention();
    assert!(fresh.log().log_start_offset() > 3);
    assert_eq!(b.earliest_offset(&fresh).unwrap(), 3);
}

/// Copy the leader's log to a follower the way the fetcher does, `chunk` bytes of whole
/// batches at a time (so the follower rolls its segments at other offsets than the leader).
fn replicate(leader: &Partition, follower: &Partition, chunk: usize) {
    loop {
        let from = follower.log().log_end_offset();
        let plan = {
            let log = leader.log();
            log.plan_read(from, chunk, true, log.log_end_offset())
                .unwrap()
        };
        let Some(plan) = plan else { break };
        let leo = follower
            .log()
            .append_replicated(&plan.read().unwrap())
            .unwrap();
        follower.advance_high_watermark(leo);
    }
}

fn local_segments(part: &Partition) -> Vec<crate::log::retention::SegmentSummary> {
    part.log().segment_summaries()
}

/// The leader deletes local segments as soon as they are in the manifest (no retention
/// check runs here); a follower trims its own copy to what the manifest holds, reading the
/// manifest itself; after taking over it serves every offset (the head from the bucket)
/// and continues uploading from the manifest's end, from inside one of its own segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_trim_to_the_manifest_and_take_over_where_it_ends() {
    let node = Node::new();
    let a = node.open().await;
    a.create_topic("t", 1, 1, topic_configs(), false)
        .await
        .unwrap();
    let pa = a.partition("t", 0).unwrap();
    // The follower: same topic id, its own directory, the same bucket.
    let fdata = tempfile::tempdir().unwrap();
    let f = open_at(fdata.path(), node.bucket.path()).await;
    let meta = a.topic("t").unwrap().meta;
    let pf = f.host_partition("t", &meta, 0).unwrap();
    let me = f.config.node_id;
    pf.replica()
        .become_follower(me + 1, 0, 0, vec![me + 1, me], vec![me + 1, me]);
    let value = [3u8; 150];
    for seq in 0..100 {
        a.append(&pa, make_batch(&[&value], now(), 9, seq)).unwrap();
        if seq % 13 == 12 {
            // segment.ms: the leader rolls where the follower, which rolls by size only,
            // does not.
            pa.log().roll().unwrap();
        }
    }
    replicate(&pa, &pf, 1000);
    let ta = a.tiering.clone().unwrap();
    ta.sync_partition(&pa).await;
    let (m, problems) = scrub_dir(node.bucket.path(), pa.log().topic_id());
    assert!(problems.is_empty(), "{problems:?}");
    let leader_local = pa.log().size_bytes();
    // local.retention.bytes 4000, segment.bytes 2000; the active segment is the backlog.
    assert!(
        leader_local <= 4000 + 2000 + 2000,
        "leader keeps {leader_local}"
    );
    assert!(pa.log().log_start_offset() > 0);
    let before = read_all(&a, "t", 0).await;

    let full = pf.log().size_bytes();
    assert!(full > 15_000, "the follower has everything: {full}");
    let tf = f.tiering.clone().unwrap();
    tf.sync_partition(&pf).await;
    let segs = local_segments(&pf);
    let kept: u64 = segs.iter().map(|s| s.size).sum();
    let start = pf.log().log_start_offset();
    assert!(start > 0, "the follower trimmed");
    assert!(
        start <= m.end_offset,
        "nothing deleted that the bucket lacks"
    );
    let backlog: u64 = segs
        .iter()
        .filter(|s| s.base_offset >= m.end_offset)
        .map(|s| s.size)
        .sum();
    // Its segments end elsewhere than the leader's: one more segment may straddle.
    assert!(
        kept <= 4000 + 2 * 2000 + backlog,
        "follower keeps {kept}, backlog {backlog}"
    );
    assert!(
        segs.iter()
            .any(|s| s.base_offset < m.end_offset && s.next_offset > m.end_offset),
        "the manifest ends inside a follower segment: {segs:?}, end {}",
        m.end_offset
    );
    // A second pass with nothing new to trim reads nothing from the bucket.
    let gets = tf.stats().bucket_gets;
    tf.sync_partition(&pf).await;
    assert_eq!(tf.stats().bucket_gets, gets);

    // The follower takes over in epoch 1 and the old leader is gone.
    drop(ta);
    drop(pa);
    drop(a);
    {
        let hw = pf.high_watermark();
        pf.log().begin_epoch(1).unwrap();
        pf.replica()
            .become_leader(1, 1, vec![me, me + 1], vec![me], hw, now());
    }
    assert_eq!(
        read_all(&f, "t", 0).await,
        before,
        "every offset, the head from the bucket"
    );
    for seq in 100..160 {
        f.append(&pf, make_batch(&[&value], now(), 9, seq)).unwrap();
    }
    tf.sync_partition(&pf).await;
    let topic_id = pf.log().topic_id();
    let (m2, problems) = scrub_dir(node.bucket.path(), topic_id);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        m2.segments[..m.segments.len()],
        m.segments[..],
        "nothing re-uploaded"
    );
    let first_new = &m2.segments[m.segments.len()];
    assert_eq!(first_new.base_offset, m.end_offset, "continues at the end");
    assert_eq!(first_new.leader_epoch, 1);
    let closed_end = local_segments(&pf).iter().rev().nth(1).unwrap().next_offset;
    assert_eq!(
        m2.end_offset,
        closed_end,
        "caught up with the closed segments: {:?} {:?}",
        local_segments(&pf),
        tf.stats().partitions
    );
    assert!(!pf.log().dir().join("upload-tail").exists());
    let after = read_all(&f, "t", 0).await;
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(after.len(), 160);
}

#[test]
fn the_earliest_offset_is_unknown_until_the_manifest_is_read() {
    let bucket = tempfile::tempdir().unwrap();
    let t = Tiering::open(TieringOptions {
        url: format!("file://{}", bucket.path().display()),
        cache_bytes: 1 << 20,
        disk_cache: None,
        interval: Duration::from_secs(3600),
        compaction_interval: Duration::ZERO,
    })
    .unwrap();
    let id = uuid::Uuid::new_v4();
    // A log that still starts at 0 has nothing below it, read or not.
    assert_eq!(t.earliest(id, 0, 0).unwrap(), 0);
    // One that starts later may have older data in the bucket: retriable, not the local start.
    let err = t.earliest(id, 0, 500).unwrap_err();
    assert_eq!(err.kafka_code(), ResponseError::KafkaStorageError);
    t.set_view((id, 0), View::Ready(Arc::new(Manifest::empty(id, 0))));
    assert_eq!(t.earliest(id, 0, 500).unwrap(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_state_survives_a_manifest_emptied_by_delete_records() {
    let node = Node::new();
    let b = node.open().await;
    b.create_topic("t", 1, 1, topic_configs(), false)
        .await
        .unwrap();
    let part = b.partition("t", 0).unwrap();
    let value = [5u8; 150];
    for seq in 0..60 {
        let batch = make_batch(&[&value, b"tail"], now(), 42, seq * 2);
        b.append(&part, batch).unwrap();
    }
    let t = b.tiering.clone().unwrap();
    t.sync_partition(&part).await;
    b.run_retention();
    let topic_id = part.log().topic_id();
    let end = scrub_dir(node.bucket.path(), topic_id).0.end_offset;
    assert!(end > 0);
    // DeleteRecords up to the bucket's end: every remote segment goes.
    b.delete_records(&part, end).await.unwrap();
    let (m, problems) = scrub_dir(node.bucket.path(), topic_id);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(m.segments.is_empty());
    assert_eq!((m.log_start_offset, m.end_offset), (end, end));
    assert!(!m.epoch_history().is_empty());
    assert!(m.retired_producers().producers.contains_key(&42));

    // A replaced disk restores at the end with the producer and its epochs.
    drop(part);
    drop(b);
    drop(t);
    std::fs::remove_dir_all(node.data.path().join("t-0")).unwrap();
    let b = node.open().await;
    let part = b.partition("t", 0).unwrap();
    assert_eq!(part.log().log_start_offset(), end);
    // The bucket's epochs, then the epoch this start leads in.
    assert!(part.log().epochs().starts_with(&m.epoch_history()));
    let last_seq = (end - 2) as i32;
    let dup = b
        .append(&part, make_batch(&[&value, b"tail"], now(), 42, last_seq))
        .unwrap();
    assert!(dup.0.duplicate, "a retry of the last batch in the bucket");
    let next = b
        .append(
            &part,
            make_batch(&[&value, b"tail"], now(), 42, last_seq + 2),
        )
        .unwrap();
    assert_eq!(next.0.base_offset, end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_reads_are_kept_on_disk_across_a_restart() {
    let node = Node::new();
    let cfg = || {
        let mut c = config_at(node.data.path(), node.bucket.path());
        c.tiering.as_mut().unwrap().disk_cache =
            Some((node.data.path().join(DISK_CACHE_DIR), 64 << 20));
        c
    };
    let b = open_config(cfg).await;
    b.create_topic("t", 1, 1, topic_configs(), false)
        .await
        .unwrap();
    let part = b.partition("t", 0).unwrap();
    for seq in 0..100 {
        let batch = make_batch(&[&[9u8; 150], b"tail"], now(), 42, seq * 2);
        b.append(&part, batch).unwrap();
    }
    let t = b.tiering.clone().unwrap();
    t.sync_partition(&part).await;
    b.run_retention();
    assert!(part.log().log_start_offset() > 0);
    let before = read_all(&b, "t", 0).await;
    assert_eq!(before.len(), 100);
    // The blocks read from the bucket (read-ahead included, which goes on in the
    // background) reach the disk in the background: wait until the bucket has been quiet
    // and nothing is left to write.
    let disk = t.cache.disk().unwrap().clone();
    let mut last = t.stats().bucket_gets;
    for _ in 0..500 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = t.stats().bucket_gets;
        if now == last && disk.writes_in_flight() == 0 {
            break;
        }
        last = now;
    }
    assert_eq!(disk.writes_in_flight(), 0);
    assert!(t.stats().disk_cache_bytes > 0);
    drop(disk);
    drop(part);
    drop(b);
    drop(t);

    // After a restart the same reads come from the disk, not the bucket.
    let b = open_config(cfg).await;
    let t = b.tiering.clone().unwrap();
    // The uploader's first pass after the start reads the manifest (one GET); have it done
    // before counting.
    t.sync_partition(&b.partition("t", 0).unwrap()).await;
    let gets = t.stats().bucket_gets;
    assert_eq!(read_all(&b, "t", 0).await, before);
    let s = t.stats();
    assert!(s.disk_cache_hits > 0, "{s:?}");
    assert_eq!(s.bucket_gets, gets, "no GET for data the disk holds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_by_a_restart_leaves_no_orphans() {
    let node = Node::new();
    let b = node.open().await;
    b.create_topic("t", 1, 1, topic_configs(), false)
        .await
        .unwrap();
    let part = b.partition("t", 0).unwrap();
    let batch = || make_batch(&[&[6u8; 150]], now(), -1, -1);
    for _ in 0..30 {
        b.append(&part, batch()).unwrap();
    }
    let t = b.tiering.clone().unwrap();
    t.sync_partition(&part).await;
    let topic_id = part.log().topic_id();
    let (m, problems) = scrub_dir(node.bucket.path(), topic_id);
    assert!(problems.is_empty(), "{problems:?}");
    // The process dies while uploading the next segment: its objects are in the bucket, the
    // manifest does not name them.
    let dir = node
        .bucket
        .path()
        .join(topic_id.hyphenated().to_string())
        .join("0");
    for ext in ["log", "index"] {
        let name = manifest::object_name(m.end_offset, m.leader_epoch, ext);
        std::fs::write(dir.join(name), b"cut off").unwrap();
    }
    drop(part);
    drop(b);
    drop(t);

    // The restarted node leads in a newer epoch; once it has written the manifest, the cut
    // off upload's objects can be claimed by no one and go.
    let b = node.open().await;
    let part = b.partition("t", 0).unwrap();
    assert!(part.leader_epoch() > m.leader_epoch);
    for _ in 0..30 {
        b.append(&part, batch()).unwrap();
    }
    let t = b.tiering.clone().unwrap();
    t.sync_partition(&part).await;
    t.sync_partition(&part).await;
    let (after, problems) = scrub_dir(node.bucket.path(), topic_id);
    assert!(after.end_offset > m.end_offset);
    assert!(problems.is_empty(), "{problems:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_restores_from_another_prefix() {
    let old = Node::new();
    let a = old.open().await;
    a.create_topic("t", 1, 1, topic_configs(), false)
        .await
        .unwrap();
    let mut plain_configs = BTreeMap::new();
    plain_configs.insert("retention.ms".to_string(), "123456789".to_string());
    a.create_topic("plain", 2, 1, plain_configs.clone(), false)
        .await
        .unwrap();
    let gone = a
        .create_topic("gone", 1, 1, topic_configs(), false)
        .await
        .unwrap();
    a.tiering.as_ref().unwrap().publish_catalog().await;
    let gone_dir = old
        .bucket
        .path()
        .join(gone.meta.id.hyphenated().to_string());
    assert!(gone_dir.join(catalog::DESCRIPTOR).exists());
    a.delete_topic("gone").await.unwrap();
    for _ in 0..500 {
        if !gone_dir.join(catalog::DESCRIPTOR).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !gone_dir.join(catalog::DESCRIPTOR).exists(),
        "a deleted topic leaves the catalog"
    );
    let part = a.partition("t", 0).unwrap();
    let value = [7u8; 150];
    for seq in 0..100 {
        let batch = make_batch(&[&value, b"tail"], now() + seq as i64, 42, seq * 2);
        a.append(&part, batch).unwrap();
    }
    let before = read_all(&a, "t", 0).await;
    let ta = a.tiering.clone().unwrap();
    ta.sync_partition(&part).await;
    a.run_retention();
    ta.publish_catalog().await;
    let ids: Vec<uuid::Uuid> = ["t", "plain"]
        .iter()
        .map(|n| a.topic(n).unwrap().meta.id)
        .collect();
    let (m, _) = scrub_dir(old.bucket.path(), ids[0]);
    assert!(m.end_offset > 0 && m.leader_epoch >= 0);
    drop((part, ta, a));

    // A new node with an empty disk and its own bucket, restoring from the old one.
    let new = Node::new();
    let from = format!("file://{}", old.bucket.path().display());
    let cfg = || {
        let mut c = config_at(new.data.path(), new.bucket.path());
        c.restore_from = Some(from.clone());
        c
    };
    let b = open_config(cfg).await;
    let marker = new.bucket.path().join(catalog::RESTORE_MARKER);
    for _ in 0..500 {
        if marker.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(marker.exists(), "the restore finished");
    // New producer ids stay clear of the restored producer 42.
    assert!(b.allocate_producer_id().await.unwrap() > 42);
    let names: Vec<String> = b.topics().into_iter().map(|t| t.name).collect();
    assert!(names.contains(&"t".to_string()) && names.contains(&"plain".to_string()));
    assert!(
        !names.contains(&"gone".to_string()),
        "a deleted topic stays deleted"
    );
    assert_eq!(b.topic("t").unwrap().meta.id, ids[0]);
    assert_eq!(b.topic("t").unwrap().meta.configs, topic_configs());
    let plain = b.topic("plain").unwrap();
    assert_eq!((plain.meta.id, plain.meta.partitions), (ids[1], 2));
    assert_eq!(plain.meta.configs, plain_configs);
    // Readable from the bucket's first offset, written after its last.
    let part = b.partition("t", 0).unwrap();
    assert_eq!(part.log().log_start_offset(), m.end_offset);
    assert!(part.replica().leader_epoch > m.leader_epoch);
    let restored = read_all(&b, "t", 0).await;
    assert_eq!(restored.len() as i64 * 2, m.end_offset);
    assert_eq!(&restored[..], &before[..restored.len()]);
    let next = b
        .append(
            &part,
            make_batch(&[&value, b"tail"], now(), 42, m.end_offset as i32),
        )
        .unwrap();
    assert_eq!(next.0.base_offset, m.end_offset);
    // The new cluster tiers on into its own prefix: its epoch is not fenced.
    for seq in 0..40 {
        let batch = make_batch(&[&value, b"more"], now(), 43, seq * 2);
        b.append(&part, batch).unwrap();
    }
    let tb = b.tiering.clone().unwrap();
    tb.sync_partition(&part).await;
    assert_eq!(tb.stats().upload_failures, 0);
    let (m2, problems) = scrub_dir(new.bucket.path(), ids[0]);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(m2.end_offset > m.end_offset);
    // The old prefix is untouched.
    assert_eq!(scrub_dir(old.bucket.path(), ids[0]).0, m);
}

/// Every record from `from`, local or remote, as (offset, key, value).
async fn read_records(b: &Broker, topic: &str, from: i64) -> Vec<(i64, Bytes, Option<Bytes>)> {
    let mut out = Vec::new();
    for (_, raw) in read_all(b, topic, from).await {
        let set = crate::log::records::decode_batch(&raw).unwrap();
        for r in set.records {
            if r.offset >= from {
                out.push((r.offset, r.key.unwrap(), r.value));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_compacts_its_bucket_copy() {
    use crate::log::batch::tests::make_batch_keyed;
    let node = Node::new();
    let b = node.open().await;
    let mut cfg = topic_configs();
    cfg.insert("cleanup.policy".into(), "compact".into());
    cfg.insert("delete.retention.ms".into(), "1000".into());
    b.create_topic("c", 1, 1, cfg, false).await.unwrap();
    let part = b.partition("c", 0).unwrap();
    let old = now() - 60_000;
    let value = |i: usize| format!("{i:0>150}");
    let put = |key: String, v: Option<String>, ts: i64| {
        let batch = make_batch_keyed(
            vec![(Some(key.as_bytes()), v.as_deref().map(str::as_bytes))],
            ts,
            -1,
            -1,
        );
        b.append(&part, batch).unwrap();
    };
    // Ten keys written twenty times, an old tombstone for k7, a fresh one for k8, then
    // three keys again (their latest values are in the local tail).
    for i in 0..200 {
        put(format!("k{}", i % 10), Some(value(i)), old);
    }
    put("k7".into(), None, old);
    put("k8".into(), None, now());
    for i in 200..240 {
        put(format!("k{}", i % 3), Some(value(i)), now());
    }
    let mut want: BTreeMap<Bytes, Option<Bytes>> = BTreeMap::new();
    for (_, k, v) in read_records(&b, "c", 0).await {
        want.insert(k, v);
    }
    // The live keys: a tombstone removes its key whether or not it is still there.
    let latest_of = |records: &[(i64, Bytes, Option<Bytes>)]| {
        let mut m: BTreeMap<Bytes, Option<Bytes>> = BTreeMap::new();
        for (_, k, v) in records {
            m.insert(k.clone(), v.clone());
        }
        m.retain(|_, v| v.is_some());
        m
    };
    want.retain(|_, v| v.is_some());
    let t = b.tiering.clone().unwrap();
    t.sync_partition(&part).await;
    let topic_id = part.log().topic_id();
    let (m, problems) = scrub_dir(node.bucket.path(), topic_id);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(
        t.stats().remote_compactions > 0,
        "the bucket's copy was compacted"
    );
    assert!(m.segments.iter().any(|s| s.compacted.is_some()));
    let local_start = part.log().log_start_offset();
    assert!(local_start > 0 && local_start <= m.end_offset);
    let after = read_records(&b, "c", 0).await;
    // Reads from the first offset see the latest value of every key, across both tiers.
    assert_eq!(latest_of(&after), want);
    // What is read from the bucket is compacted (the local tail is compacted locally, by
    // the log's own cleaner, once the bucket holds it): one record per key at most, each its key's
    // latest anywhere, and the old tombstone gone; the fresh tombstone stays.
    let remote: Vec<_> = after.iter().filter(|(o, _, _)| *o < local_start).collect();
    assert!(!remote.is_empty());
    let mut seen = std::collections::HashSet::new();
    for (o, k, _) in &remote {
        assert!(seen.insert(k.clone()), "key {k:?} twice in the bucket");
        assert!(
            !after.iter().any(|(o2, k2, _)| k2 == k && o2 > o),
            "superseded record {o} of {k:?} kept"
        );
    }
    assert!(!after
        .iter()
        .any(|(_, k, v)| k.as_ref() == b"k7" && v.is_none()));
    assert!(after
        .iter()
        .any(|(_, k, v)| k.as_ref() == b"k8" && v.is_none()));
    assert!(after.len() < 100, "{} records left of 242", after.len());
    // Offsets are kept: reading from any offset of a compacted-away record goes on to
    // the next record that remains.
    let first = after[0].0;
    assert_eq!(
        read_records(&b, "c", 1).await[0].0,
        after.iter().find(|r| r.0 >= 1).unwrap().0
    );
    assert!(first >= 0);
    // A second pass with nothing new changes nothing; a restart reads the same.
    let generation = m.generation;
    t.sync_partition(&part).await;
    assert_eq!(
        scrub_dir(node.bucket.path(), topic_id).0.generation,
        generation
    );
    drop((part, t, b));
    let b = node.open().await;
    assert_eq!(read_records(&b, "c", 0).await, after);
}
