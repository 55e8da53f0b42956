//! A partition directory from disk after a crash: arbitrary segment, index, time index and
//! partition.json contents; open it with recovery and read everything back.
//!
//! Input layout (all optional; missing bytes mean empty):
//!   byte 0        flags: 0x01 write `.index`, 0x02 write `.timeindex`,
//!                        0x04 write `partition.json`, 0x08 open without recovery
//!                        (indexes trusted), 0x10 segment base offset follows
//!   [8 bytes]     segment base offset (big-endian, sign bit cleared), if 0x10
//!   per present file, in the order index, timeindex, partition.json:
//!                 u16 big-endian length, then that many bytes
//!   the rest      the segment's `.log` file
//!
//! With recovery (the default) every batch read back must be CRC-valid: recovery may only
//! leave valid batches behind. Without recovery nothing is promised but not panicking.
#![no_main]

use libfuzzer_sys::{fuzz_mutator, fuzz_target};
use strata_node::log::{batch, LogConfig, PartitionLog};

#[global_allocator]
static ALLOC: strata_node::alloc::LazyLargeAlloc = strata_node::alloc::LazyLargeAlloc;

const F_INDEX: u8 = 0x01;
const F_TIMEINDEX: u8 = 0x02;
const F_META: u8 = 0x04;
const F_NO_RECOVERY: u8 = 0x08;
const F_BASE: u8 = 0x10;

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(data.len());
    let (head, tail) = data.split_at(n);
    *data = tail;
    head
}

fn section<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    let len = take(data, 2);
    let n = match len {
        [a, b] => u16::from_be_bytes([*a, *b]) as usize,
        [a] => *a as usize,
        _ => 0,
    };
    take(data, n)
}

struct Layout<'a> {
    flags: u8,
    base: i64,
    index: Option<&'a [u8]>,
    timeindex: Option<&'a [u8]>,
    meta: Option<&'a [u8]>,
    log: &'a [u8],
}

fn layout(input: &[u8]) -> Layout<'_> {
    let mut data = input;
    let flags = take(&mut data, 1).first().copied().unwrap_or(0);
    let base = if flags & F_BASE != 0 {
        let mut b = [0u8; 8];
        let got = take(&mut data, 8);
        b[..got.len()].copy_from_slice(got);
        i64::from_be_bytes(b) & i64::MAX
    } else {
        0
    };
    let index = (flags & F_INDEX != 0).then(|| section(&mut data));
    let timeindex = (flags & F_TIMEINDEX != 0).then(|| section(&mut data));
    let meta = (flags & F_META != 0).then(|| section(&mut data));
    Layout {
        flags,
        base,
        index,
        timeindex,
        meta,
        log: data,
    }
}

// Most mutations get the CRCs of batches in the segment fixed, so that recovery does not
// simply cut the log at the first mutated batch.
fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    strata_fuzz::mutate_fixing_crcs(data, size, max_size, seed, |d| {
        d.len() - layout(d).log.len()
    })
});

fuzz_target!(|input: &[u8]| {
    let Layout {
        flags,
        base,
        index,
        timeindex,
        meta,
        log: log_bytes,
    } = layout(input);
    let recover = flags & F_NO_RECOVERY == 0;

    let dir = strata_fuzz::fresh_dir();
    let p = dir.path();
    std::fs::write(p.join(format!("{base:020}.log")), log_bytes).unwrap();
    if let Some(b) = index {
        std::fs::write(p.join(format!("{base:020}.index")), b).unwrap();
    }
    if let Some(b) = timeindex {
        std::fs::write(p.join(format!("{base:020}.timeindex")), b).unwrap();
    }
    if let Some(b) = meta {
        std::fs::write(p.join("partition.json"), b).unwrap();
    }

    let Ok(log) = PartitionLog::open(p, uuid::Uuid::nil(), LogConfig::default(), recover) else {
        return;
    };
    let start = log.log_start_offset();
    let end = log.log_end_offset();
    assert!(start <= end, "log start {start} after log end {end}");

    let mut off = start;
    while off < end {
        let plan = match log.plan_read(off, 1 << 20, true, end) {
            Ok(Some(plan)) => plan,
            Ok(None) => break,
            Err(e) => {
                assert!(
                    !recover,
                    "recovered log: plan_read({off}) in [{start}, {end}): {e}"
                );
                break;
            }
        };
        let Ok(bytes) = plan.read() else { break };
        let last = if recover {
            let headers = strata_fuzz::check_stored_batches(&bytes, "recovered log");
            let last = headers
                .last()
                .expect("a plan holds at least one batch")
                .last_offset();
            assert!(
                last >= off,
                "read from {off} returned batches ending at {last}"
            );
            last
        } else {
            // Unverified data: just follow the headers.
            match batch::parse_header(&bytes) {
                Ok(Some(h)) => h.base_offset.saturating_add(h.last_offset_delta as i64),
                _ => break,
            }
        };
        if last < off || last == i64::MAX {
            break;
        }
        off = last + 1;
    }
    let _ = log.offset_for_timestamp(0);
    let _ = log.max_timestamp_offset();
    let _ = log.epoch_end_offset(i32::MAX);
});
