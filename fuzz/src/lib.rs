//! Helpers shared by the fuzz targets.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use strata_node::log::batch::{self, BatchHeader};

/// Directory under which targets create their scratch data dirs.
///
/// `STRATA_FUZZ_TMPDIR` if set (tests/fuzz.sh points it at a fresh directory it removes
/// afterwards), else `/dev/shm` (tmpfs: the node's fsyncs cost nothing there), else the
/// system temp dir.
pub fn scratch_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(d) = std::env::var_os("STRATA_FUZZ_TMPDIR") {
            let d = PathBuf::from(d);
            std::fs::create_dir_all(&d).expect("create STRATA_FUZZ_TMPDIR");
            return d;
        }
        let shm = Path::new("/dev/shm");
        if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
            return shm.to_path_buf();
        }
        std::env::temp_dir()
    })
}

/// A fresh, empty directory that is removed when dropped.
pub fn fresh_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("strata-fuzz-")
        .tempdir_in(scratch_root())
        .expect("create scratch dir")
}

/// Walk stored bytes (concatenated batches as read back from a log) and check that every
/// batch has a parseable header, lies wholly inside `bytes`, and has a valid CRC.
/// Returns the headers. Panics (a fuzz finding) otherwise.
pub fn check_stored_batches(bytes: &[u8], what: &str) -> Vec<BatchHeader> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let h = match batch::parse_header(rest) {
            Ok(Some(h)) => h,
            Ok(None) => panic!(
                "{what}: truncated batch header at byte {pos} of {}",
                bytes.len()
            ),
            Err(e) => panic!("{what}: bad batch header at byte {pos}: {e}"),
        };
        let len = h.total_len();
        assert!(
            len <= rest.len(),
            "{what}: batch at byte {pos} claims {len} bytes, {} remain",
            rest.len()
        );
        if let Err(e) = batch::verify_crc(&h, &rest[..len]) {
            panic!(
                "{what}: batch at byte {pos} (base offset {}): {e}",
                h.base_offset
            );
        }
        out.push(h);
        pos += len;
    }
    out
}

/// Recompute the CRC of everything in `data` that looks like a complete v2 batch (magic 2
/// at byte 16, a batch length that fits), scanning batch by batch and resynchronising byte
/// by byte after anything else.
///
/// Used by the targets' custom mutators: a random mutation of a batch almost always breaks
/// its CRC, after which the broker rejects (or recovery truncates) it and nothing past the
/// CRC check is exercised. Fixing the CRC after most mutations lets mutated batches through
/// to the append, decode and recovery code.
pub fn fix_batch_crcs(data: &mut [u8]) {
    let mut i = 0usize;
    while i + batch::HEADER_LEN <= data.len() {
        if data[i + 16] == 2 {
            let len = i32::from_be_bytes(data[i + 8..i + 12].try_into().expect("4 bytes"));
            let total = batch::LOG_OVERHEAD as i64 + len as i64;
            if len >= (batch::HEADER_LEN - batch::LOG_OVERHEAD) as i32
                && i as i64 + total <= data.len() as i64
            {
                let end = i + total as usize;
                let crc = batch::compute_crc(&data[i..end]);
                data[i + 17..i + 21].copy_from_slice(&crc.to_be_bytes());
                i = end;
                continue;
            }
        }
        i += 1;
    }
}

/// libFuzzer's own mutation, then (for 7 mutations in 8) [`fix_batch_crcs`] over
/// `data[from..]`.
pub fn mutate_fixing_crcs(
    data: &mut [u8],
    size: usize,
    max_size: usize,
    seed: u32,
    from: impl Fn(&[u8]) -> usize,
) -> usize {
    let size = libfuzzer_sys::fuzzer_mutate(data, size, max_size);
    if seed % 8 != 0 {
        let from = from(&data[..size]).min(size);
        fix_batch_crcs(&mut data[from..size]);
    }
    size
}
