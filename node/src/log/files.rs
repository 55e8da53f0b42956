//! A bounded set of open segment files.
//!
//! A node may host far more partitions than it may hold open files: a Kubernetes pod often
//! starts with a soft limit of 1,024, and 20,000 partitions with one log file each would
//! need twenty times that. Every segment's log file is therefore reached through a
//! [`SegmentFile`], which opens the file when it is used and keeps it open while it stays
//! in use; past the budget the least recently used handles are closed (the CLOCK
//! second-chance sweep: one bit per handle, set on use, cleared as the hand passes).
//!
//! The budget is process-wide because the limit it protects is: [`set_budget`] sets it once
//! at start-up (from `--max-open-files` or the file limit). Closing a handle never breaks a
//! reader: reads and fsyncs outside the partition lock hold their own `Arc<File>`, so the
//! descriptor closes when the last of them is done. An fsync through a reopened descriptor
//! covers writes made through the closed one (the page cache belongs to the inode), and a
//! write-back error nobody has seen yet is reported to the next fsync on any descriptor
//! (Linux 4.16 and later).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Open segment files the node keeps at most when nothing set a budget (unit tests, tools).
const DEFAULT_BUDGET: usize = 4096;
/// Fewest open segment files a budget allows (below this the sweep would thrash on any
/// partition count worth having).
pub const MIN_BUDGET: usize = 16;

static OPEN_FILES: OpenFiles = OpenFiles {
    budget: AtomicUsize::new(DEFAULT_BUDGET),
    ring: Mutex::new(Ring {
        slots: Vec::new(),
        hand: 0,
    }),
    opened: AtomicUsize::new(0),
    closed: AtomicUsize::new(0),
};

/// Set how many segment files may stay open at once (at least [`MIN_BUDGET`]).
pub fn set_budget(files: usize) {
    OPEN_FILES.budget.store(files.max(MIN_BUDGET), Relaxed);
}

/// The budget in force.
pub fn budget() -> usize {
    OPEN_FILES.budget.load(Relaxed)
}

/// Counters for metrics: (segment files open now, opened since start, closed by the sweep).
pub fn stats() -> (usize, usize, usize) {
    let open = OPEN_FILES.ring.lock().slots.len();
    (
        open,
        OPEN_FILES.opened.load(Relaxed),
        OPEN_FILES.closed.load(Relaxed),
    )
}

/// The budget `--max-open-files` takes when not given: half of what the file limit leaves
/// after a reserve for the node's own files, so that client connections (sockets count
/// against the same limit) get the other half.
pub fn auto_budget(file_limit: u64) -> usize {
    let spare = file_limit.saturating_sub(256) / 2;
    usize::try_from(spare).unwrap_or(usize::MAX).max(MIN_BUDGET)
}

/// Raise the soft file limit to the hard one, as the JVM does for Kafka, and return the
/// limit in force (the soft limit when it cannot be read or raised).
pub fn raise_file_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` into the struct we own and pass by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `setrlimit` only reads the struct passed by pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
    }
    Ok(lim.rlim_cur)
}

struct OpenFiles {
    budget: AtomicUsize,
    ring: Mutex<Ring>,
    opened: AtomicUsize,
    closed: AtomicUsize,
}

/// The handles holding an open file, in the order the clock hand visits them.
struct Ring {
    slots: Vec<Weak<Slot>>,
    hand: usize,
}

struct Slot {
    file: Mutex<Option<Arc<File>>>,
    /// Used since the hand last passed.
    referenced: AtomicBool,
}

/// A segment's log file, open while it is used.
pub struct SegmentFile {
    path: PathBuf,
    slot: Arc<Slot>,
    /// Not created yet: the first use creates it (see [`SegmentFile::unborn`]).
    unborn: AtomicBool,
}

impl SegmentFile {
    /// Create (or truncate) the file at `path`; it stays open as the most recent handle.
    pub fn create(path: &Path) -> Result<SegmentFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        let handle = Self::handle(path, false);
        handle.admit(Arc::new(file));
        Ok(handle)
    }

    /// A handle on a file not created yet: the first use creates it (or truncates whatever
    /// is there), so a partition that is never written never creates its first segment.
    pub fn unborn(path: &Path) -> SegmentFile {
        Self::handle(path, true)
    }

    fn handle(path: &Path, unborn: bool) -> SegmentFile {
        SegmentFile {
            path: path.to_path_buf(),
            slot: Arc::new(Slot {
                file: Mutex::new(None),
                referenced: AtomicBool::new(true),
            }),
            unborn: AtomicBool::new(unborn),
        }
    }

    /// A handle on the existing file at `path`, which must exist; opened now.
    pub fn open(path: &Path) -> Result<SegmentFile> {
        let handle = Self::handle(path, false);
        handle.get()?;
        Ok(handle)
    }

    /// The open file, reopened if the sweep closed it.
    pub fn get(&self) -> Result<Arc<File>> {
        self.slot.referenced.store(true, Relaxed);
        let mut held = self.slot.file.lock();
        if let Some(f) = held.as_ref() {
            return Ok(f.clone());
        }
        let unborn = self.unborn.load(Relaxed);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(unborn)
            .truncate(unborn)
            .open(&self.path)
            .map_err(|e| Error::io(self.path.display().to_string(), e))?;
        self.unborn.store(false, Relaxed);
        let file = Arc::new(file);
        *held = Some(file.clone());
        drop(held);
        OPEN_FILES.register(&self.slot);
        Ok(file)
    }

    fn admit(&self, file: Arc<File>) {
        *self.slot.file.lock() = Some(file);
        OPEN_FILES.register(&self.slot);
    }

    /// Whether the file is open now (for tests).
    #[cfg(test)]
    fn is_open(&self) -> bool {
        self.slot.file.lock().is_some()
    }
}

impl OpenFiles {
    /// Count `slot` as holding a file, then close the least recently used handles while
    /// more than the budget are open.
    fn register(&self, slot: &Arc<Slot>) {
        self.opened.fetch_add(1, Relaxed);
        let budget = self.budget.load(Relaxed);
        let mut ring = self.ring.lock();
        ring.slots.push(Arc::downgrade(slot));
        // Two full turns clear every bit and then find an unreferenced handle unless every
        // one is busy this instant; then the set stays over budget until the next open.
        let mut steps = 2 * ring.slots.len() + 1;
        while ring.slots.len() > budget && steps > 0 {
            steps -= 1;
            if ring.hand >= ring.slots.len() {
                ring.hand = 0;
            }
            let hand = ring.hand;
            let Some(victim) = ring.slots[hand].upgrade() else {
                // The segment is gone (deleted or closed) and its file with it.
                ring.slots.swap_remove(hand);
                continue;
            };
            if Arc::ptr_eq(&victim, slot) || victim.referenced.swap(false, Relaxed) {
                ring.hand += 1;
                continue;
            }
            // A handle locked this instant is in use: skip it rather than wait (the caller
            // holds its own slot's lock, and two sweeps must not wait on each other).
            let Some(mut held) = victim.file.try_lock() else {
                ring.hand += 1;
                continue;
            };
            held.take();
            drop(held);
            ring.slots.swap_remove(hand);
            self.closed.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_budget_leaves_room_for_connections() {
        assert_eq!(auto_budget(1024), 384);
        assert_eq!(auto_budget(20_000), 9_872);
        assert_eq!(auto_budget(100), MIN_BUDGET);
    }

    /// The budget is process-wide, so this one test drives it (others leave it alone and
    /// use far fewer files than the default).
    #[test]
    fn least_recently_used_files_close_past_the_budget_and_reopen_on_use() {
        let dir = tempfile::tempdir().unwrap();
        set_budget(MIN_BUDGET);
        let handles: Vec<SegmentFile> = (0..3 * MIN_BUDGET)
            .map(|i| {
                let h = SegmentFile::create(&dir.path().join(format!("{i}.log"))).unwrap();
                std::io::Write::write_all(&mut &*h.get().unwrap(), &[i as u8; 3]).unwrap();
                h
            })
            .collect();
        let open = handles.iter().filter(|h| h.is_open()).count();
        assert!(
            open <= MIN_BUDGET,
            "{open} open past a budget of {MIN_BUDGET}"
        );
        assert!(
            handles.last().unwrap().is_open(),
            "the newest handle was closed"
        );
        // A closed handle reopens on use and sees what was written through the old file.
        let first = &handles[0];
        assert!(!first.is_open());
        let mut buf = [0u8; 3];
        std::os::unix::fs::FileExt::read_exact_at(&*first.get().unwrap(), &mut buf, 0).unwrap();
        assert_eq!(buf, [0u8; 3]);
        assert!(first.is_open());
        // A reader's own handle outlives the sweep.
        let held = handles[1].get().unwrap();
        for h in &handles[2..] {
            h.get().unwrap();
        }
        std::os::unix::fs::FileExt::read_exact_at(&*held, &mut buf, 0).unwrap();
        assert_eq!(buf, [1u8; 3]);
        // Dropped segments leave the ring as the hand finds them.
        drop(handles);
        let again = SegmentFile::create(&dir.path().join("again.log")).unwrap();
        assert!(again.is_open());
        set_budget(DEFAULT_BUDGET);
    }
}
