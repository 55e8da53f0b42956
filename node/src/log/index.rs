//! Sparse offset and time indexes: fixed-width entries, append-only files, mirrored in memory.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// One offset index entry: (offset relative to the segment base, byte position).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One time index entry: (max timestamp so far, offset relative to the segment base).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// A fixed-width entry that can live in an index file.
pub trait IndexEntry: Copy {
    /// Bytes per entry on disk.
    const WIDTH: usize;
    /// Encode into exactly WIDTH bytes.
    fn write_to(&self, out: &mut Vec<u8>);
    /// Decode from exactly WIDTH bytes.
    fn read_from(b: &[u8]) -> Self;
}

impl IndexEntry for OffsetEntry {
    const WIDTH: usize = 8;
    fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
    fn read_from(b: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes(b[0..4].try_into().expect("4")),
            position: u32::from_be_bytes(b[4..8].try_into().expect("4")),
        }
    }
}

impl IndexEntry for TimeEntry {
    const WIDTH: usize = 12;
    fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn read_from(b: &[u8]) -> Self {
        TimeEntry {
            timestamp: i64::from_be_bytes(b[0..8].try_into().expect("8")),
            relative_offset: u32::from_be_bytes(b[8..12].try_into().expect("4")),
        }
    }
}

/// Entries appended in memory before they are written out together.
const WRITE_EVERY: usize = 128;

/// An append-only index file with its entries held in memory. The file is not kept open:
/// entries are written out in groups of [`WRITE_EVERY`] and at every [`Index::sync`] (a
/// segment roll, a clean shutdown). An index missing its last entries after a crash is
/// rebuilt or completed from the log, which is the truth; the index only speeds lookups.
pub struct Index<E: IndexEntry> {
    entries: Vec<E>,
    /// Entries already in the file.
    written: usize,
    /// Whether the file has writes not yet fsynced.
    dirty: bool,
    /// Created in memory only: the first write creates the file, or truncates whatever an
    /// earlier segment at this base left there.
    unborn: bool,
    path: std::path::PathBuf,
}

impl<E: IndexEntry> Index<E> {
    /// Load an index file's entries (none when the file is missing); a torn last entry is
    /// cut.
    pub fn open(path: &Path) -> Result<Self> {
        let ctx = || path.display().to_string();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(ctx(), e)),
        };
        let whole = bytes.len() / E::WIDTH * E::WIDTH;
        if whole != bytes.len() {
            OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(whole as u64))
                .map_err(|e| Error::io(ctx(), e))?;
        }
        let entries: Vec<E> = bytes[..whole]
            .chunks_exact(E::WIDTH)
            .map(E::read_from)
            .collect();
        Ok(Index {
            written: entries.len(),
            entries,
            dirty: false,
            unborn: false,
            path: path.to_path_buf(),
        })
    }

    /// A new, empty index replacing any previous file at `path`. The file itself is created
    /// by the first write (`dirty` makes even an empty index reach it at the first sync),
    /// which saves a new partition two file creations; a segment whose index file is
    /// missing rebuilds it from the log when opened.
    pub fn create(path: &Path) -> Result<Self> {
        // A stale file would be trusted after a crash before the first write.
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(path.display().to_string(), e))
            }
            _ => {}
        }
        Ok(Index {
            entries: Vec::new(),
            written: 0,
            dirty: true,
            unborn: true,
            path: path.to_path_buf(),
        })
    }

    /// All entries in order.
    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    /// Append one entry.
    pub fn append(&mut self, e: E) -> Result<()> {
        self.entries.push(e);
        if self.entries.len() - self.written >= WRITE_EVERY {
            self.write_pending(false)?;
        }
        Ok(())
    }

    /// Write the entries not yet in the file, and with `sync` fsync it.
    fn write_pending(&mut self, sync: bool) -> Result<()> {
        if self.written == self.entries.len() && !(sync && self.dirty) {
            return Ok(());
        }
        let ctx = || self.path.display().to_string();
        let mut options = OpenOptions::new();
        if self.unborn {
            options.write(true).create(true).truncate(true);
        } else {
            options.append(true);
        }
        let mut file = options.open(&self.path).map_err(|e| Error::io(ctx(), e))?;
        self.unborn = false;
        if self.written < self.entries.len() {
            let mut buf = Vec::with_capacity((self.entries.len() - self.written) * E::WIDTH);
            for e in &self.entries[self.written..] {
                e.write_to(&mut buf);
            }
            file.write_all(&buf).map_err(|e| Error::io(ctx(), e))?;
            self.written = self.entries.len();
            self.dirty = true;
        }
        if sync {
            file.sync_data().map_err(|e| Error::io(ctx(), e))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Replace the whole content (used after a rebuild).
    pub fn rewrite(&mut self, entries: Vec<E>) -> Result<()> {
        let mut buf = Vec::with_capacity(entries.len() * E::WIDTH);
        for e in &entries {
            e.write_to(&mut buf);
        }
        std::fs::write(&self.path, &buf)
            .map_err(|e| Error::io(self.path.display().to_string(), e))?;
        self.written = entries.len();
        self.entries = entries;
        self.dirty = true;
        self.unborn = false;
        Ok(())
    }

    /// Write out every entry and flush the file to stable storage.
    pub fn sync(&mut self) -> Result<()> {
        self.write_pending(true)
    }

    /// Remove the file from disk.
    pub fn delete(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Largest entry whose relative offset is at most `rel` (pure binary search).
pub fn floor_offset(entries: &[OffsetEntry], rel: u32) -> Option<OffsetEntry> {
    let idx = entries.partition_point(|e| e.relative_offset <= rel);
    if idx == 0 {
        None
    } else {
        Some(entries[idx - 1])
    }
}

/// Largest entry whose timestamp is below `ts` (the scan for `>= ts` starts there).
pub fn floor_time(entries: &[TimeEntry], ts: i64) -> Option<TimeEntry> {
    let idx = entries.partition_point(|e| e.timestamp < ts);
    if idx == 0 {
        None
    } else {
        Some(entries[idx - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_lookups() {
        let e = vec![
            OffsetEntry {
                relative_offset: 10,
                position: 100,
            },
            OffsetEntry {
                relative_offset: 20,
                position: 200,
            },
        ];
        assert_eq!(floor_offset(&e, 5), None);
        assert_eq!(floor_offset(&e, 10).unwrap().position, 100);
        assert_eq!(floor_offset(&e, 19).unwrap().position, 100);
        assert_eq!(floor_offset(&e, 25).unwrap().position, 200);
        let t = vec![
            TimeEntry {
                timestamp: 100,
                relative_offset: 1,
            },
            TimeEntry {
                timestamp: 200,
                relative_offset: 5,
            },
        ];
        assert_eq!(floor_time(&t, 100), None);
        assert_eq!(floor_time(&t, 150).unwrap().relative_offset, 1);
        assert_eq!(floor_time(&t, 250).unwrap().relative_offset, 5);
    }

    fn entry(i: u32) -> OffsetEntry {
        OffsetEntry {
            relative_offset: i,
            position: i * 10,
        }
    }

    #[test]
    fn entries_reach_the_file_in_groups_and_all_at_sync() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.index");
        let mut i = Index::<OffsetEntry>::create(&p).unwrap();
        let n = WRITE_EVERY as u32 + 5;
        for k in 0..n {
            i.append(entry(k)).unwrap();
        }
        assert_eq!(i.entries().len(), n as usize);
        // The first group is in the file; the last five only in memory until a sync.
        let on_disk = Index::<OffsetEntry>::open(&p).unwrap();
        assert_eq!(on_disk.entries(), &i.entries()[..WRITE_EVERY]);
        i.sync().unwrap();
        let on_disk = Index::<OffsetEntry>::open(&p).unwrap();
        assert_eq!(on_disk.entries(), i.entries());
        // A rewrite replaces the whole file.
        i.rewrite(vec![entry(7)]).unwrap();
        assert_eq!(
            Index::<OffsetEntry>::open(&p).unwrap().entries(),
            &[entry(7)]
        );
        // A missing file is an empty index (the segment rebuilds it).
        std::fs::remove_file(&p).unwrap();
        assert!(Index::<OffsetEntry>::open(&p).unwrap().entries().is_empty());
    }

    #[test]
    fn roundtrip_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.index");
        {
            let mut i = Index::<OffsetEntry>::create(&p).unwrap();
            i.append(OffsetEntry {
                relative_offset: 1,
                position: 2,
            })
            .unwrap();
            i.append(OffsetEntry {
                relative_offset: 3,
                position: 4,
            })
            .unwrap();
            i.sync().unwrap();
        }
        // Tear the file mid-entry.
        let f = OpenOptions::new().append(true).open(&p).unwrap();
        (&f).write_all(&[1, 2, 3]).unwrap();
        let i = Index::<OffsetEntry>::open(&p).unwrap();
        assert_eq!(i.entries().len(), 2);
        assert_eq!(
            i.entries()[1],
            OffsetEntry {
                relative_offset: 3,
                position: 4
            }
        );
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 16);
    }
}
