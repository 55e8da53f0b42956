//! One request frame (without its 4-byte size prefix) from the network: parse the header,
//! dispatch to the handler on a real broker, run the handler's future to the end.
//!
//! The broker is opened once on a scratch data dir and keeps its state across inputs (a
//! produce can be fetched by a later input), so a crash may depend on earlier inputs. To
//! keep that reproducible, the broker is replaced by a fresh one every 1000 request frames
//! (or sooner, when it grows past a few hundred partitions or 64 MiB of log), and when a
//! frame panics, every frame the current broker has seen is written, in order, to
//! `<artifact_prefix>history-<pid>/`: running the target on those files (in name order)
//! replays the crash.
//!
//! The runtime's clock is paused: timers fire as soon as the runtime is idle, so a fetch
//! that long-polls for up to 300 s completes at once, through its own deadline path. A
//! handler future still pending after 301 s of (virtual) time is reported as a hang.
#![no_main]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::{fuzz_mutator, fuzz_target};
use strata_node::config::NodeConfig;
use strata_node::node::Node;
use strata_node::protocol::{self, handlers, Parsed, Reply};

// The node's allocator: decoders reserve vectors from hostile array lengths.
#[global_allocator]
static ALLOC: strata_node::alloc::LazyLargeAlloc = strata_node::alloc::LazyLargeAlloc;

/// Replace the broker once it hosts more partitions than this ...
const MAX_PARTITIONS: usize = 256;
/// ... or holds more log bytes than this.
const MAX_LOG_BYTES: u64 = 64 << 20;
/// Longer than any handler may legitimately wait (fetch clamps max_wait_ms to 300 s).
const HANG: Duration = Duration::from_secs(301);
/// Replace the broker after this many request frames ...
const MAX_FRAMES: usize = 1000;
/// ... or once they add up to this many bytes.
const MAX_HISTORY_BYTES: usize = 64 << 20;

/// Frames run against the current broker, for replaying a crash. Kept apart from `ENV`,
/// which is locked while a frame runs (and so when the panic hook runs).
static HISTORY: Mutex<(Vec<Vec<u8>>, usize)> = Mutex::new((Vec::new(), 0));

/// Write the history where libFuzzer writes its artifacts.
fn dump_history() {
    let Ok(history) = HISTORY.try_lock() else {
        return;
    };
    if history.0.is_empty() {
        return;
    }
    let prefix = std::env::args()
        .find_map(|a| a.strip_prefix("-artifact_prefix=").map(str::to_string))
        .unwrap_or_default();
    let dir = std::path::PathBuf::from(format!("{prefix}history-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    for (i, frame) in history.0.iter().enumerate() {
        let _ = std::fs::write(dir.join(format!("{i:06}")), frame);
    }
    eprintln!(
        "request_frame: the broker saw {} frames up to this panic; replay them with: \
         request_frame {}/*",
        history.0.len(),
        dir.display()
    );
}

struct Env {
    rt: tokio::runtime::Runtime,
    broker: Option<(Arc<Node>, tempfile::TempDir)>,
}

impl Env {
    fn broker(&mut self) -> Arc<Node> {
        if self.broker.is_none() {
            let dir = strata_fuzz::fresh_dir();
            let node = self
                .rt
                .block_on(Node::open_and_start(NodeConfig::for_tests(
                    dir.path().to_path_buf(),
                )))
                .expect("open a node on an empty data dir");
            self.broker = Some((node, dir));
        }
        self.broker.as_ref().expect("just set").0.clone()
    }

    fn maybe_reset(&mut self) {
        let Some((b, _)) = &self.broker else { return };
        let parts = b.broker.all_partitions();
        let (frames, bytes) = {
            let h = HISTORY.lock().unwrap_or_else(|p| p.into_inner());
            (h.0.len(), h.1)
        };
        let too_big = frames >= MAX_FRAMES
            || bytes >= MAX_HISTORY_BYTES
            || parts.len() > MAX_PARTITIONS
            || parts.iter().map(|p| p.log().size_bytes()).sum::<u64>() > MAX_LOG_BYTES;
        if too_big {
            // Drop the broker (closing its files) before its directory goes.
            let (b, dir) = self.broker.take().expect("present");
            drop(parts);
            // Stop it (its background tasks end, its files close) before its directory goes.
            let _ = self.rt.block_on(b.stop(async {}));
            drop(b);
            drop(dir);
            *HISTORY.lock().unwrap_or_else(|p| p.into_inner()) = (Vec::new(), 0);
        }
    }
}

static ENV: Mutex<Option<Env>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let frame = match protocol::parse_frame(Bytes::copy_from_slice(data)) {
        Parsed::Request(frame) => frame,
        Parsed::UnsupportedApiVersions { .. } | Parsed::Close(_) => return,
    };
    let api = frame.api_key;
    let version = frame.header.request_api_version;
    let correlation_id = frame.header.correlation_id;

    let mut guard = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let env = guard.get_or_insert_with(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            dump_history();
            previous(info);
        }));
        Env {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("tokio runtime"),
            broker: None,
        }
    });
    let broker = env.broker();
    {
        let mut h = HISTORY.lock().unwrap_or_else(|p| p.into_inner());
        h.0.push(data.to_vec());
        h.1 += data.len();
    }
    let reply = env.rt.block_on(async {
        // Dispatch inside the runtime: handlers may spawn (fsync via spawn_blocking).
        let pending = handlers::dispatch(&broker, frame);
        tokio::time::timeout(HANG, pending).await
    });
    drop(broker);
    match reply {
        Err(_) => panic!("{api:?} v{version} handler still pending after {HANG:?}"),
        Ok(Reply::Bytes(b)) => {
            let b = b.to_vec();
            // A response frame: size prefix matching its length, then our correlation id.
            assert!(
                b.len() >= 8,
                "{api:?} v{version}: response of {} bytes",
                b.len()
            );
            let size = i32::from_be_bytes(b[0..4].try_into().unwrap());
            assert_eq!(
                size as usize,
                b.len() - 4,
                "{api:?} v{version}: size prefix"
            );
            let cid = i32::from_be_bytes(b[4..8].try_into().unwrap());
            assert_eq!(cid, correlation_id, "{api:?} v{version}: correlation id");
        }
        Ok(Reply::Nothing | Reply::Close) => {}
    }
    env.maybe_reset();
});

// Most mutations get their batch CRCs fixed, so mutated batches get past the CRC check.
fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    strata_fuzz::mutate_fixing_crcs(data, size, max_size, seed, |_| 0)
});
