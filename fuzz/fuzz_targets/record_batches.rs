//! A producer's record set (the `records` field of a Produce partition): validate it as the
//! produce path does; if it is accepted, append it to a fresh partition log, read it back,
//! look it up by timestamp, and reopen the log with crash recovery.
//!
//! Each accepted input is appended twice: to a log with the default config, and to a
//! compacted LogAppendTime log, where the broker decodes (and decompresses) the records to
//! check for keys and rewrites the batch header.
#![no_main]

use libfuzzer_sys::{fuzz_mutator, fuzz_target};
use strata_node::fsutil;
use strata_node::log::batch;
use strata_node::log::{LogConfig, PartitionLog};

#[global_allocator]
static ALLOC: strata_node::alloc::LazyLargeAlloc = strata_node::alloc::LazyLargeAlloc;

fn read_all(log: &PartitionLog) -> Vec<u8> {
    let mut out = Vec::new();
    let mut off = log.log_start_offset();
    let end = log.log_end_offset();
    while off < end {
        let plan = log
            .plan_read(off, usize::MAX, true, end)
            .unwrap_or_else(|e| {
                panic!(
                    "plan_read({off}) in [{}, {end}): {e}",
                    log.log_start_offset()
                )
            });
        let Some(plan) = plan else { break };
        let bytes = plan.read().expect("read planned bytes");
        let headers = strata_fuzz::check_stored_batches(&bytes, "read back");
        let last = headers
            .last()
            .expect("a plan holds at least one batch")
            .last_offset();
        assert!(
            last >= off,
            "read from {off} returned batches ending at {last}"
        );
        off = last + 1;
        out.extend_from_slice(&bytes);
    }
    out
}

/// The record set as the log must store it, built the straightforward way: a copy of the
/// whole set with each batch's header fields overwritten in place and, for LogAppendTime, its
/// CRC recomputed over the whole patched batch. Field positions are the v2 batch layout:
/// base offset at 0, leader epoch at 12, CRC at 17, attributes at 21, max timestamp at 35.
fn patched_in_place(
    data: &[u8],
    spans: &[batch::BatchSpan],
    log_append_time: Option<i64>,
) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut next = 0i64;
    for s in spans {
        let b = &mut out[s.position..s.position + s.header.total_len()];
        b[0..8].copy_from_slice(&next.to_be_bytes());
        b[12..16].copy_from_slice(&0i32.to_be_bytes());
        if let Some(now) = log_append_time {
            let attributes = i16::from_be_bytes([b[21], b[22]]) | batch::ATTR_LOG_APPEND_TIME;
            b[21..23].copy_from_slice(&attributes.to_be_bytes());
            b[35..43].copy_from_slice(&now.to_be_bytes());
            let crc = batch::compute_crc(b);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        next += s.header.last_offset_delta as i64 + 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(spans) = batch::validate_produce_records(data) else {
        return;
    };
    // The spans tile the input exactly, and each passes the checks it claims to.
    let mut pos = 0usize;
    for s in &spans {
        assert_eq!(s.position, pos, "spans are contiguous");
        let len = s.header.total_len();
        batch::verify_crc(&s.header, &data[pos..pos + len]).expect("validated CRC");
        assert_eq!(
            s.header.record_count as i64,
            s.header.last_offset_delta as i64 + 1
        );
        pos += len;
    }
    assert_eq!(pos, data.len(), "spans cover the whole record set");

    let compacted = LogConfig {
        compact: true,
        log_append_time: true,
        ..LogConfig::default()
    };
    for config in [LogConfig::default(), compacted] {
        let dir = strata_fuzz::fresh_dir();
        let id = uuid::Uuid::from_u128(0x5742_a7a0);
        let mut log =
            PartitionLog::open(dir.path(), id, config.clone(), false).expect("open empty log");
        let now = fsutil::now_ms();
        let Ok(info) = log.append(data, &spans, 0, now) else {
            continue;
        };
        assert!(!info.duplicate, "nothing to duplicate in an empty log");
        assert_eq!(info.base_offset, 0);
        assert_eq!(log.log_end_offset(), info.last_offset + 1);

        // What is stored is exactly the record set patched in place (offsets from 0, epoch 0,
        // LogAppendTime with a recomputed CRC), and every batch is CRC-valid.
        let expected = patched_in_place(data, &spans, config.log_append_time.then_some(now));
        let stored = read_all(&log);
        assert!(
            stored == expected,
            "stored bytes differ from the appended record set"
        );

        // Timestamp lookups decode the stored records.
        for s in &spans {
            let _ = log.offset_for_timestamp(s.header.base_timestamp);
            let _ = log.offset_for_timestamp(s.header.max_timestamp);
        }
        let _ = log.offset_for_timestamp(i64::MIN);
        let _ = log.max_timestamp_offset();

        // Crash recovery keeps every appended batch.
        let leo = log.log_end_offset();
        drop(log);
        let log = PartitionLog::open(dir.path(), id, config, true).expect("reopen with recovery");
        assert_eq!(log.log_end_offset(), leo, "recovery lost appended batches");
        let again = read_all(&log);
        assert!(again == stored, "recovered log reads back differently");
    }
});

// Most mutations get their batch CRCs fixed, so mutated batches get past the CRC check.
fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    strata_fuzz::mutate_fixing_crcs(data, size, max_size, seed, |_| 0)
});
