//! A bounded cache of bucket blocks on the node's own volume, beneath the memory cache:
//! a block read from the bucket is kept in a file, so that reading it again (a consumer
//! catching up twice, a restart, a memory cache too small for the working set) costs a
//! local read instead of a GET. Bucket objects never change once written (their names
//! carry the base offset and the uploader's epoch), so an entry is valid as long as it is
//! intact; every entry carries its object name, block number and a CRC-32C of its data, and
//! one that does not match is deleted and read from the bucket again. Least recently used
//! entries are deleted past the byte budget; the index is rebuilt from the directory at
//! start (oldest modification first), so the cache survives restarts.
//!
//! Files are written to a temporary name and renamed, without fsync: after a power loss an
//! entry may be empty or torn, and its CRC makes it a miss.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"STC1";
/// Magic, name length, block, data length, CRC.
const FIXED: usize = 4 + 4 + 8 + 8 + 4;
/// Object names are bucket keys: bounded well below this.
const MAX_NAME: usize = 4096;

/// One decoded entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub block: u64,
    pub data: &'a [u8],
}

/// The bytes of an entry file.
pub fn encode_entry(name: &str, block: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED + name.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&block.to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// Decode an entry file; any damage is an error (the caller deletes the file).
pub fn decode_entry(raw: &[u8]) -> Result<Entry<'_>> {
    let bad = |why: &str| Error::CorruptCacheEntry(why.to_string());
    if raw.len() < FIXED || &raw[..4] != MAGIC {
        return Err(bad("no header"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().expect("4 bytes"));
    let name_len = u32_at(4) as usize;
    if name_len > MAX_NAME || raw.len() < FIXED + name_len {
        return Err(bad("name length"));
    }
    let name = std::str::from_utf8(&raw[8..8 + name_len]).map_err(|_| bad("name not UTF-8"))?;
    let at = 8 + name_len;
    let u64_at = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
    let block = u64_at(at);
    let len = u64_at(at + 8);
    let crc = u32_at(at + 16);
    let data = &raw[at + 20..];
    if data.len() as u64 != len {
        return Err(bad("length"));
    }
    if crc32c::crc32c(data) != crc {
        return Err(bad("checksum"));
    }
    Ok(Entry { name, block, data })
}

/// The file name of (object, block): a 64-bit FNV-1a hash of both (the entry itself says
/// which object it holds, so a collision is a miss, never wrong data).
fn file_name(name: &str, block: u64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes().iter().chain(block.to_le_bytes().iter()) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}.blk")
}

#[derive(Default)]
struct Index {
    /// File name to (bytes, tick of last use).
    files: HashMap<String, (u64, u64)>,
    lru: BTreeMap<u64, String>,
    tick: u64,
    bytes: u64,
}

impl Index {
    fn touch(&mut self, file: &str) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.files.get_mut(file) {
            self.lru.remove(&e.1);
            e.1 = tick;
            self.lru.insert(tick, file.to_string());
        }
    }

    fn insert(&mut self, file: String, size: u64) {
        self.forget(&file);
        self.tick += 1;
        self.bytes += size;
        self.files.insert(file.clone(), (size, self.tick));
        self.lru.insert(self.tick, file);
    }

    fn forget(&mut self, file: &str) {
        if let Some((size, tick)) = self.files.remove(file) {
            self.lru.remove(&tick);
            self.bytes -= size;
        }
    }
}

/// The disk cache of one node.
pub struct DiskCache {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Numbers temporary files apart.
    writes: AtomicU64,
    /// Writes handed to a blocking thread and not finished yet.
    in_flight: std::sync::atomic::AtomicI64,
}

impl DiskCache {
    /// The cache in `dir` (created if missing), holding at most `max_bytes`; what an
    /// earlier run left there is kept, oldest first out.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<DiskCache> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir.display().to_string(), e))? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.ends_with(".blk") {
                // A temporary file of a write a crash interrupted.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            found.push((mtime, name, meta.len()));
        }
        found.sort();
        let cache = DiskCache {
            dir: dir.to_path_buf(),
            max_bytes,
            index: Mutex::new(Index::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            in_flight: std::sync::atomic::AtomicI64::new(0),
        };
        {
            let mut index = cache.index.lock();
            for (_, name, size) in found {
                index.insert(name, size);
            }
        }
        cache.evict();
        Ok(cache)
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.index.lock().bytes
    }

    /// Count a background write starting (1) or done (-1).
    pub fn writing(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// Background writes not finished yet.
    pub fn writes_in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The block, if held intact (blocking: call from a blocking thread).
    pub fn get(&self, name: &str, block: u64) -> Option<Bytes> {
        let file = file_name(name, block);
        if !self.index.lock().files.contains_key(&file) {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let path = self.dir.join(&file);
        let found = std::fs::read(&path).ok().and_then(|raw| {
            let raw = Bytes::from(raw);
            let e = decode_entry(&raw).ok()?;
            if e.name != name || e.block != block {
                return None;
            }
            // The data is the file's tail: a view of it, not a copy.
            Some(raw.slice(raw.len() - e.data.len()..))
        });
        match &found {
            Some(_) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.index.lock().touch(&file);
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(path = %path.display(), "disk cache entry unreadable or another block's; dropped");
                self.index.lock().forget(&file);
                let _ = std::fs::remove_file(&path);
            }
        }
        found
    }

    /// Keep a block (blocking). A failed write is logged and forgotten: the cache is only
    /// ever a shortcut.
    pub fn put(&self, name: &str, block: u64, data: &[u8]) {
        if name.len() > MAX_NAME || data.len() as u64 > self.max_bytes {
            return;
        }
        let file = file_name(name, block);
        let bytes = encode_entry(name, block, data);
        let n = self.writes.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!("{file}.tmp{n}"));
        let written =
            std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, self.dir.join(&file)));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not write to the disk cache");
            return;
        }
        self.index.lock().insert(file, bytes.len() as u64);
        self.evict();
    }

    fn evict(&self) {
        loop {
            let victim = {
                let mut index = self.index.lock();
                if index.bytes <= self.max_bytes {
                    return;
                }
                let Some((_, file)) = index.lru.pop_first() else {
                    return;
                };
                if let Some((size, _)) = index.files.remove(&file) {
                    index.bytes -= size;
                }
                file
            };
            let _ = std::fs::remove_file(self.dir.join(victim));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_refused() {
        let raw = encode_entry("t/0/00000000000000000000-0.log", 3, b"data");
        let e = decode_entry(&raw).unwrap();
        assert_eq!(
            e,
            Entry {
                name: "t/0/00000000000000000000-0.log",
                block: 3,
                data: b"data"
            }
        );
        for cut in 0..raw.len() {
            assert!(decode_entry(&raw[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = raw.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(decode_entry(&flipped).is_err());
        let mut long = raw.clone();
        long[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_entry(&long).is_err());
    }

    #[test]
    fn bounded_least_recently_used_first_and_kept_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let block = vec![7u8; 1000];
        let entry = encode_entry("obj", 0, &block).len() as u64;
        let c = DiskCache::open(dir.path(), 3 * entry).unwrap();
        for b in 0..3 {
            c.put("obj", b, &block);
        }
        assert_eq!(c.get("obj", 0).unwrap(), &block[..]);
        // Block 1 is now the least recently used: the fourth goes in, block 1 goes out.
        c.put("obj", 3, &block);
        assert!(c.get("obj", 1).is_none());
        assert!(c.bytes() <= 3 * entry);
        drop(c);
        let c = DiskCache::open(dir.path(), 3 * entry).unwrap();
        assert_eq!(c.bytes(), 3 * entry);
        for b in [0, 2, 3] {
            assert_eq!(c.get("obj", b).unwrap(), &block[..], "block {b}");
        }
        assert!(c.get("other", 0).is_none());
        // A smaller budget on the next start keeps only what fits.
        drop(c);
        let c = DiskCache::open(dir.path(), entry).unwrap();
        assert_eq!(c.bytes(), entry);
    }

    #[test]
    fn a_damaged_file_is_a_miss_and_goes() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 1 << 20).unwrap();
        c.put("obj", 0, b"hello");
        let path = dir.path().join(file_name("obj", 0));
        let mut raw = std::fs::read(&path).unwrap();
        let n = raw.len();
        raw[n - 1] ^= 0xff;
        std::fs::write(&path, raw).unwrap();
        assert!(c.get("obj", 0).is_none());
        assert!(!path.exists());
        assert_eq!(c.bytes(), 0);
        // Leftover temporary files go at the next start.
        std::fs::write(dir.path().join("x.blk.tmp1"), b"partial").unwrap();
        drop(c);
        DiskCache::open(dir.path(), 1 << 20).unwrap();
        assert!(!dir.path().join("x.blk.tmp1").exists());
    }
}
