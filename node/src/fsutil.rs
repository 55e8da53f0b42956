//! Small crash-safe file helpers.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Write `bytes` to `path` atomically: write a temp file, fsync it, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, true)
}

/// Replace `path` with `bytes` through a temp file and a rename, without fsyncs: after a
/// crash the file is either absent, whole, or (on some file systems) empty or torn. For
/// files whose loss costs nothing until a later fsync makes them durable.
pub fn write_replace(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, false)
}

fn replace(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let ctx = || tmp.display().to_string();
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io(ctx(), e))?;
        f.write_all(bytes).map_err(|e| Error::io(ctx(), e))?;
        if durable {
            f.sync_all().map_err(|e| Error::io(ctx(), e))?;
        }
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path.display().to_string(), e))?;
    if durable {
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(())
}

/// fsync a directory so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync dir {}", dir.display()), e))
}

/// Current wall-clock time in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Size and space available to unprivileged users of the file system holding `path`, in
/// bytes (`statvfs`: blocks and available blocks times the fragment size), as Kafka reports
/// a log directory's total and usable bytes.
pub fn volume_bytes(path: &Path) -> Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let ctx = || format!("statvfs {}", path.display());
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        Error::io(
            ctx(),
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        )
    })?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `st` points to
    // writable memory of the size of `statvfs`, which the call fills on success.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(Error::io(ctx(), std::io::Error::last_os_error()));
    }
    // SAFETY: statvfs returned 0, so it initialised every field of `st`.
    let st = unsafe { st.assume_init() };
    // The field types are c_ulong / fsblkcnt_t, which differ across platforms.
    #[allow(clippy::unnecessary_cast)]
    let (frsize, blocks, bavail) = (st.f_frsize as u64, st.f_blocks as u64, st.f_bavail as u64);
    Ok((blocks.saturating_mul(frsize), bavail.saturating_mul(frsize)))
}

/// Take an exclusive lock on `path` (the data directory's lock file), so two nodes never
/// share a data directory. Held until the returned file is dropped.
pub fn lock_exclusive(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path.display().to_string(), e))?;
    // SAFETY: flock on a valid open file descriptor owned by `f`.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(Error::io(
            format!(
                "{} (is another strata-node using this data directory?)",
                path.display()
            ),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(f)
}

/// Items handled by one thread before a second one helps.
const ITEMS_PER_THREAD: usize = 256;
/// Threads at most. Opening or closing a partition is mostly waiting for fsyncs (a new
/// leader epoch is made durable before the partition serves), which the disk completes
/// side by side: a node taking up 20,000 partitions after a restart waited for them one
/// by one for 20 s.
const MAX_THREADS: usize = 8;

/// Run `f` on every item, on up to [`MAX_THREADS`] threads; the first error stops the
/// others from starting new items and is returned.
pub fn for_each_parallel<T: Sync>(items: &[T], f: impl Fn(&T) -> Result<()> + Sync) -> Result<()> {
    let threads = (items.len() / ITEMS_PER_THREAD).clamp(1, MAX_THREADS);
    if threads == 1 {
        return items.iter().try_for_each(f);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = parking_lot::Mutex::new(None);
    // The helpers run in the caller's runtime, if any (tiering reads manifests through it).
    let runtime = tokio::runtime::Handle::try_current().ok();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let _entered = runtime.as_ref().map(|h| h.enter());
                loop {
                    if failed.lock().is_some() {
                        return;
                    }
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else {
                        return;
                    };
                    if let Err(e) = f(item) {
                        failed.lock().get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match failed.into_inner() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod parallel_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    #[test]
    fn every_item_is_visited_once_and_the_first_error_stops_the_rest() {
        for n in [0, 1, ITEMS_PER_THREAD - 1, 10 * ITEMS_PER_THREAD] {
            let seen: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            let items: Vec<usize> = (0..n).collect();
            for_each_parallel(&items, |&i| {
                seen[i].fetch_add(1, Relaxed);
                Ok(())
            })
            .unwrap();
            assert!(seen.iter().all(|s| s.load(Relaxed) == 1), "n = {n}");
        }
        let items: Vec<usize> = (0..10 * ITEMS_PER_THREAD).collect();
        let done = AtomicUsize::new(0);
        let err = for_each_parallel(&items, |&i| {
            if i == 5 {
                return Err(Error::StorageFailed("item 5".into()));
            }
            done.fetch_add(1, Relaxed);
            Ok(())
        })
        .unwrap_err();
        assert!(err.to_string().contains("item 5"));
        assert!(done.load(Relaxed) < items.len() - 1);
    }
}
