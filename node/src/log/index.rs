//! Sparse offset and time indexes: fixed-width entries, append-only files, mirrored in memory.

use std::fs::{File, OpenOptions};
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

/// An append-only index file with its entries held in memory.
pub struct Index<E: IndexEntry> {
    file: File,
    entries: Vec<E>,
    path: std::path::PathBuf,
}

impl<E: IndexEntry> Index<E> {
    /// Open (or create) an index file and load its whole entries; a torn last entry is cut.
    pub fn open(path: &Path) -> Result<Self> {
        let ctx = || path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| Error::io(ctx(), e))?;
        let bytes = std::fs::read(path).map_err(|e| Error::io(ctx(), e))?;
        let whole = bytes.len() / E::WIDTH * E::WIDTH;
        if whole != bytes.len() {
            file.set_len(whole as u64)
                .map_err(|e| Error::io(ctx(), e))?;
        }
        let entries = bytes[..whole]
            .chunks_exact(E::WIDTH)
            .map(E::read_from)
            .collect();
        Ok(Index {
            file,
            entries,
            path: path.to_path_buf(),
        })
    }

    /// Create an empty index, discarding any previous file.
    pub fn create(path: &Path) -> Result<Self> {
        let _ = std::fs::remove_file(path);
        Self::open(path)
    }

    /// All entries in order.
    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    /// Append one entry.
    pub fn append(&mut self, e: E) -> Result<()> {
        let mut buf = Vec::with_capacity(E::WIDTH);
        e.write_to(&mut buf);
        self.file
            .write_all(&buf)
            .map_err(|err| Error::io(self.path.display().to_string(), err))?;
        self.entries.push(e);
        Ok(())
    }

    /// Replace the whole content (used after a rebuild).
    pub fn rewrite(&mut self, entries: Vec<E>) -> Result<()> {
        let mut buf = Vec::with_capacity(entries.len() * E::WIDTH);
        for e in &entries {
            e.write_to(&mut buf);
        }
        let ctx = || self.path.display().to_string();
        self.file.set_len(0).map_err(|e| Error::io(ctx(), e))?;
        self.file.write_all(&buf).map_err(|e| Error::io(ctx(), e))?;
        self.entries = entries;
        Ok(())
    }

    /// Flush the file to stable storage.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(self.path.display().to_string(), e))
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

    #[test]
    fn roundtrip_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.index");
        {
            let mut i = Index::<OffsetEntry>::open(&p).unwrap();
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
