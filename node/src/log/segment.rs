//! One segment: a file of record batches plus its offset and time indexes.

use std::fs::File;
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::batch::{self, BatchHeader, HEADER_LEN};
use super::files::SegmentFile;
use super::index::{floor_offset, floor_time, Index, OffsetEntry, TimeEntry};
use crate::error::{Error, Result};

/// File name of a segment's log for a base offset.
pub fn log_name(base: i64) -> String {
    format!("{base:020}.log")
}

/// Parse a base offset back out of a `{base:020}.log` file name.
pub fn parse_log_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 {
        return None;
    }
    // Offsets are far below 2^62 in any real log; a larger base (a damaged or foreign file)
    // would let base + relative offset overflow, so it is not a segment of ours.
    stem.parse()
        .ok()
        .filter(|b: &i64| (0..i64::MAX / 2).contains(b))
}

/// A batch located in a segment file.
#[derive(Debug, Clone, Copy)]
pub struct Located {
    pub header: BatchHeader,
    pub position: u64,
}

/// A segment of the log.
pub struct Segment {
    pub base_offset: i64,
    dir: PathBuf,
    /// The log file, open while used (see `files`).
    file: SegmentFile,
    size: u64,
    index: Index<OffsetEntry>,
    time_index: Index<TimeEntry>,
    bytes_since_index: u64,
    /// One past the last offset stored (== base_offset when empty).
    pub next_offset: i64,
    /// Largest timestamp in the segment (-1 when empty).
    pub max_timestamp: i64,
    /// Offset of the batch holding `max_timestamp`.
    pub offset_of_max_timestamp: i64,
    /// Max timestamp of the first batch, which segment.ms counts from.
    pub first_batch_timestamp: Option<i64>,
    index_interval: u64,
}

impl Segment {
    fn paths(dir: &Path, base: i64) -> (PathBuf, PathBuf, PathBuf) {
        (
            dir.join(log_name(base)),
            dir.join(format!("{base:020}.index")),
            dir.join(format!("{base:020}.timeindex")),
        )
    }

    /// Create a new, empty segment.
    pub fn create(dir: &Path, base: i64, index_interval: u64) -> Result<Segment> {
        let (lp, _, _) = Self::paths(dir, base);
        Self::with_file(dir, base, index_interval, SegmentFile::create(&lp)?)
    }

    /// A new empty segment whose files are created by its first write: for a new
    /// partition, whose directory does not exist until then.
    pub fn unborn(dir: &Path, base: i64, index_interval: u64) -> Result<Segment> {
        let (lp, _, _) = Self::paths(dir, base);
        Self::with_file(dir, base, index_interval, SegmentFile::unborn(&lp))
    }

    fn with_file(dir: &Path, base: i64, index_interval: u64, file: SegmentFile) -> Result<Segment> {
        let (_, ip, tp) = Self::paths(dir, base);
        Ok(Segment {
            base_offset: base,
            dir: dir.to_path_buf(),
            file,
            size: 0,
            index: Index::create(&ip)?,
            time_index: Index::create(&tp)?,
            bytes_since_index: 0,
            next_offset: base,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            first_batch_timestamp: None,
            index_interval,
        })
    }

    /// Open an existing segment. With `recover`, every batch is CRC-checked and the file is
    /// truncated after the last valid one, and the indexes are rebuilt; otherwise the indexes
    /// are trusted and only the tail after the last index entry is scanned.
    pub fn open(dir: &Path, base: i64, index_interval: u64, recover: bool) -> Result<Segment> {
        let (lp, ip, tp) = Self::paths(dir, base);
        let file = SegmentFile::open(&lp)?;
        let size = file
            .get()?
            .metadata()
            .map_err(|e| Error::io(lp.display().to_string(), e))?
            .len();
        let indexes_present = ip.exists() && tp.exists();
        let mut seg = Segment {
            base_offset: base,
            dir: dir.to_path_buf(),
            file,
            size,
            index: Index::open(&ip)?,
            time_index: Index::open(&tp)?,
            bytes_since_index: 0,
            next_offset: base,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            first_batch_timestamp: None,
            index_interval,
        };
        let index_sane = indexes_present
            && seg
                .index
                .entries()
                .last()
                .map(|e| (e.position as u64) < size)
                .unwrap_or(true)
            && seg
                .time_index
                .entries()
                .last()
                .map(|e| e.timestamp >= 0)
                .unwrap_or(true);
        if recover || !index_sane {
            seg.rebuild(true)?;
        } else {
            seg.load_tail()?;
        }
        Ok(seg)
    }

    /// Scan from the last index entry to the end to learn next offset and timestamps.
    fn load_tail(&mut self) -> Result<()> {
        // First batch timestamp.
        if self.size > 0 {
            if let Some(first) = self.header_at(0)? {
                self.first_batch_timestamp = Some(first.max_timestamp);
            }
        }
        if let Some(t) = self.time_index.entries().last().copied() {
            self.max_timestamp = t.timestamp;
            self.offset_of_max_timestamp =
                self.base_offset.saturating_add(t.relative_offset as i64);
        }
        let start = self
            .index
            .entries()
            .last()
            .map(|e| e.position as u64)
            .unwrap_or(0);
        let mut pos = start;
        while pos < self.size {
            let h = match self.header_at(pos)? {
                Some(h) if pos + h.total_len() as u64 <= self.size => h,
                _ => {
                    // A torn tail on a segment we were told to trust: fall back to recovery.
                    return self.rebuild(true);
                }
            };
            self.observe(&h);
            pos += h.total_len() as u64;
        }
        Ok(())
    }

    fn observe(&mut self, h: &BatchHeader) {
        self.next_offset = h.last_offset() + 1;
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.offset_of_max_timestamp = h.base_offset;
        }
        if self.first_batch_timestamp.is_none() {
            self.first_batch_timestamp = Some(h.max_timestamp);
        }
    }

    /// Rebuild both indexes by scanning every batch; with `verify`, check CRCs and truncate
    /// the file after the last valid batch.
    pub fn rebuild(&mut self, verify: bool) -> Result<()> {
        let mut pos = 0u64;
        let mut idx = Vec::new();
        let mut tidx = Vec::new();
        let mut since = 0u64;
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = -1;
        self.first_batch_timestamp = None;
        let mut expected_next = self.base_offset;
        let file = self.file.get()?;
        while pos < self.size {
            let remaining = self.size - pos;
            let h = match self.header_at(pos) {
                Ok(Some(h)) => h,
                _ => break,
            };
            let len = h.total_len() as u64;
            if len > remaining || h.base_offset < expected_next {
                break;
            }
            if verify {
                let mut buf = vec![0u8; len as usize];
                if file.read_exact_at(&mut buf, pos).is_err() {
                    break;
                }
                if batch::verify_crc(&h, &buf).is_err() {
                    break;
                }
            }
            if since >= self.index_interval {
                idx.push(OffsetEntry {
                    relative_offset: (h.base_offset - self.base_offset) as u32,
                    position: pos as u32,
                });
                since = 0;
            }
            if h.max_timestamp > self.max_timestamp {
                tidx.push(TimeEntry {
                    timestamp: h.max_timestamp,
                    relative_offset: (h.base_offset - self.base_offset) as u32,
                });
            }
            self.observe(&h);
            expected_next = h.last_offset() + 1;
            since += len;
            pos += len;
        }
        if pos < self.size {
            tracing::warn!(
                segment = %self.dir.join(log_name(self.base_offset)).display(),
                valid_bytes = pos,
                file_bytes = self.size,
                "truncating torn or corrupt tail"
            );
            file.set_len(pos)
                .map_err(|e| Error::io(format!("truncate segment {}", self.base_offset), e))?;
            self.size = pos;
        }
        self.bytes_since_index = since;
        self.index.rewrite(idx)?;
        self.time_index.rewrite(tidx)?;
        Ok(())
    }

    /// Read the batch header at `pos`, if a whole header is there.
    pub fn header_at(&self, pos: u64) -> Result<Option<BatchHeader>> {
        if pos + HEADER_LEN as u64 > self.size {
            return Ok(None);
        }
        let mut buf = [0u8; HEADER_LEN];
        self.file
            .get()?
            .read_exact_at(&mut buf, pos)
            .map_err(|e| Error::io(format!("read segment {}", self.base_offset), e))?;
        batch::parse_header(&buf)
    }

    /// Bytes in the segment file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the segment holds no batches.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Shared handle to the file, for reads outside the partition lock (it stays open
    /// while the handle is held, whatever the open-file budget closes meanwhile).
    pub fn file(&self) -> Result<Arc<File>> {
        self.file.get()
    }

    /// Append already offset-assigned batches. On a failed write the file is cut back to
    /// its previous size so no partial batch remains.
    pub fn append(&mut self, data: &[u8], headers: &[(BatchHeader, usize)]) -> Result<()> {
        self.append_vectored(&mut [IoSlice::new(data)], headers)
    }

    /// Append already offset-assigned batches given as pieces written one after the other
    /// (on the produce path: each batch's patched header, then the rest of the batch from
    /// the request), in one `pwritev` where the kernel takes it all. `headers` hold each
    /// batch's header and its position within the concatenated pieces. On a failed write
    /// the file is cut back to its previous size so no partial batch remains.
    pub fn append_vectored(
        &mut self,
        pieces: &mut [IoSlice<'_>],
        headers: &[(BatchHeader, usize)],
    ) -> Result<()> {
        let start = self.size;
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        let file = self.file.get()?;
        if let Err(e) = write_all_vectored_at(&file, pieces, start) {
            let _ = file.set_len(start);
            return Err(Error::io(
                format!("append to segment {}", self.base_offset),
                e,
            ));
        }
        self.size += len as u64;
        for (h, rel_pos) in headers {
            let pos = start + *rel_pos as u64;
            let rel = (h.base_offset - self.base_offset) as u32;
            if self.bytes_since_index >= self.index_interval {
                self.index.append(OffsetEntry {
                    relative_offset: rel,
                    position: pos as u32,
                })?;
                self.bytes_since_index = 0;
            }
            if h.max_timestamp > self.max_timestamp {
                self.time_index.append(TimeEntry {
                    timestamp: h.max_timestamp,
                    relative_offset: rel,
                })?;
            }
            self.observe(h);
            self.bytes_since_index += h.total_len() as u64;
        }
        Ok(())
    }

    /// Position of the first batch whose last offset is at least `offset`.
    pub fn locate(&self, offset: i64) -> Result<Option<Located>> {
        let rel = (offset - self.base_offset).max(0) as u32;
        let mut pos = floor_offset(self.index.entries(), rel)
            .map(|e| e.position as u64)
            .unwrap_or(0);
        while let Some(h) = self.header_at(pos)? {
            if h.last_offset() >= offset {
                return Ok(Some(Located {
                    header: h,
                    position: pos,
                }));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// First batch whose max timestamp is at least `ts`.
    pub fn locate_time(&self, ts: i64) -> Result<Option<Located>> {
        let start_rel = floor_time(self.time_index.entries(), ts)
            .map(|e| e.relative_offset)
            .unwrap_or(0);
        let start = match self.locate(self.base_offset.saturating_add(start_rel as i64))? {
            Some(l) => l.position,
            None => return Ok(None),
        };
        let mut pos = start;
        while let Some(h) = self.header_at(pos)? {
            if h.max_timestamp >= ts {
                return Ok(Some(Located {
                    header: h,
                    position: pos,
                }));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// Iterate every batch header with its position.
    pub fn batches(&self) -> Result<Vec<Located>> {
        let mut out = Vec::new();
        let mut pos = 0u64;
        while let Some(h) = self.header_at(pos)? {
            out.push(Located {
                header: h,
                position: pos,
            });
            pos += h.total_len() as u64;
        }
        Ok(out)
    }

    /// Read `len` bytes at `pos`.
    pub fn read(&self, pos: u64, len: usize) -> Result<Vec<u8>> {
        read_at(&*self.file.get()?, pos, len)
    }

    /// fsync the log and index files (writing out index entries held in memory).
    pub fn sync(&mut self) -> Result<()> {
        self.file
            .get()?
            .sync_data()
            .map_err(|e| Error::io(format!("fsync segment {}", self.base_offset), e))?;
        self.sync_indexes()
    }

    /// Write out and fsync the index files only (the log file is durable already).
    pub fn sync_indexes(&mut self) -> Result<()> {
        self.index.sync()?;
        self.time_index.sync()
    }

    /// Delete the segment's files.
    /// Cut the segment back to the first batch whose base offset is at least `offset`
    /// (a follower's truncation after a leader change), rebuilding the indexes.
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        let cut = match self.locate(offset)? {
            Some(loc) if loc.header.base_offset >= offset => loc.position,
            // The batch holding `offset` starts below it: keep that batch whole.
            Some(loc) => loc.position + loc.header.total_len() as u64,
            None => return Ok(()),
        };
        if cut >= self.size {
            return Ok(());
        }
        self.file
            .get()?
            .set_len(cut)
            .map_err(|e| Error::io(format!("truncate segment {}", self.base_offset), e))?;
        self.size = cut;
        self.rebuild(false)
    }

    /// Remove the segment's files (its log, indexes, and aborted-transaction index).
    pub fn delete(self) {
        let (lp, _, _) = Self::paths(&self.dir, self.base_offset);
        let _ = std::fs::remove_file(lp);
        let _ = std::fs::remove_file(self.dir.join(super::txn::index_name(self.base_offset)));
        self.index.delete();
        self.time_index.delete();
    }
}

/// Most iovecs one `pwritev` takes (Linux's IOV_MAX).
const MAX_IOVECS: usize = 1024;

/// Write every byte of `pieces`, one after the other, at `pos`: one `pwritev` per
/// [`MAX_IOVECS`] pieces, continuing after short writes. `pieces` is consumed as it goes.
fn write_all_vectored_at(
    file: &File,
    mut pieces: &mut [IoSlice<'_>],
    mut pos: u64,
) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut pieces, 0);
    while !pieces.is_empty() {
        let n = pieces.len().min(MAX_IOVECS);
        let offset = libc::off_t::try_from(pos).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "file offset overflows")
        })?;
        // SAFETY: `IoSlice` is guaranteed ABI-compatible with `struct iovec` on Unix, and the
        // `n` slices it points to are borrowed for the whole call, so the kernel reads only
        // live, initialised memory; `pwritev` does not write to them. The fd is owned by
        // `file`, which outlives the call.
        let written = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                pieces.as_ptr().cast::<libc::iovec>(),
                n as libc::c_int,
                offset,
            )
        };
        if written < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        pos += written as u64;
        IoSlice::advance_slices(&mut pieces, written as usize);
    }
    Ok(())
}

/// Read up to `len` bytes at `pos` from a shared file handle (fewer at the end of the file).
pub fn read_at(file: &File, pos: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    read_into(file, pos, len, &mut buf)?;
    Ok(buf)
}

/// Like [`read_at`], into a buffer taken from a pool of read buffers, to which it goes back
/// once the returned `Bytes` (and every slice of it) is dropped: after the fetch response
/// that carries it is written. A fresh megabyte per partition per fetch made the allocator
/// give the memory back to the kernel after each response and fault it in again page by
/// page on the next read: a page fault per 4 KiB a consumer read.
pub fn read_pooled(file: &File, pos: u64, len: usize) -> Result<Bytes> {
    let mut buf = READ_BUFFERS.take(len);
    match read_into(file, pos, len, &mut buf) {
        Ok(()) => Ok(Bytes::from_owner(PooledBuffer(buf))),
        Err(e) => {
            READ_BUFFERS.give(buf);
            Err(e)
        }
    }
}

/// Read buffers kept for reuse, bounded in number and size.
struct ReadBuffers {
    free: Mutex<Vec<Vec<u8>>>,
}

/// Reads smaller than this get a buffer of their own, not kept: the allocator serves them
/// from memory it keeps anyway, and they would crowd the large buffers out of the pool.
const POOLED_BUFFER_MIN: usize = 64 << 10;
/// Buffers larger than this are not kept (a fetch reads at most a partition's max bytes,
/// 1 MiB by default, or one larger batch).
const POOLED_BUFFER_MAX: usize = 8 << 20;
/// Buffers kept at most: enough for the fetches in flight on a busy node, and a bound on
/// the memory (256 MiB at worst, 32 MiB with 1 MiB fetches) the pool holds when idle.
const POOLED_BUFFERS: usize = 32;

static READ_BUFFERS: ReadBuffers = ReadBuffers {
    free: Mutex::new(Vec::new()),
};

impl ReadBuffers {
    /// An empty buffer with room for `len` bytes.
    fn take(&self, len: usize) -> Vec<u8> {
        if len < POOLED_BUFFER_MIN {
            return Vec::with_capacity(len);
        }
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        match free.iter().rposition(|b| b.capacity() >= len) {
            Some(i) => free.swap_remove(i),
            None => Vec::with_capacity(len),
        }
    }

    /// Keep `buf` for a later read, if it is of a size worth keeping and there is room.
    fn give(&self, mut buf: Vec<u8>) {
        if !(POOLED_BUFFER_MIN..=POOLED_BUFFER_MAX).contains(&buf.capacity()) {
            return;
        }
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < POOLED_BUFFERS {
            free.push(buf);
        }
    }
}

/// A pooled read buffer owned by `Bytes`; back to the pool on drop.
struct PooledBuffer(Vec<u8>);

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        READ_BUFFERS.give(std::mem::take(&mut self.0));
    }
}

/// Read up to `len` bytes at `pos` into `buf` (empty, with room for them).
fn read_into(file: &File, pos: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
    // The bytes go into uninitialised capacity: zeroing a fetch-sized buffer first cost
    // about 8% of the broker's CPU when consumers read a backlog.
    debug_assert!(buf.is_empty() && buf.capacity() >= len);
    while buf.len() < len {
        let done = buf.len();
        let offset = libc::off_t::try_from(pos + done as u64).map_err(|_| {
            Error::io(
                "read segment",
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "file offset overflows"),
            )
        })?;
        let spare = &mut buf.spare_capacity_mut()[..len - done];
        // SAFETY: `pread` writes at most `spare.len()` bytes into `spare`, capacity owned by
        // `buf` and borrowed mutably for the call; the fd is owned by `file`, alive here.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                offset,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io("read segment", e));
        }
        if n == 0 {
            break;
        }
        // SAFETY: the kernel initialised the first `n` bytes of the spare capacity, and
        // `n <= spare.len()`, so the new length stays within the capacity.
        unsafe { buf.set_len(done + n as usize) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::tests::make_batch;

    fn made_dir(path: PathBuf) -> PathBuf {
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    fn append_one(seg: &mut Segment, offset: i64, values: &[&[u8]], ts: i64) {
        let mut b = make_batch(values, ts, -1, -1);
        batch::assign_offset(&mut b, offset, 0);
        let h = batch::parse_header(&b).unwrap().unwrap();
        seg.append(&b, &[(h, 0)]).unwrap();
    }

    #[test]
    fn append_locate_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 100, 64).unwrap();
        for i in 0..50 {
            append_one(
                &mut seg,
                100 + i * 2,
                &[b"aaaaaaaaaa", b"bbbbbbbbbb"],
                1000 + i,
            );
        }
        assert_eq!(seg.next_offset, 200);
        let l = seg.locate(151).unwrap().unwrap();
        assert_eq!(l.header.base_offset, 150);
        // Batch i holds timestamps 1000+i and 1001+i, so 1020 is first reached by i = 19.
        let l = seg.locate_time(1020).unwrap().unwrap();
        assert_eq!(l.header.base_offset, 138);
        drop(seg);
        let seg = Segment::open(dir.path(), 100, 64, false).unwrap();
        assert_eq!(seg.next_offset, 200);
        assert_eq!(seg.max_timestamp, 1050);
        assert_eq!(seg.locate(199).unwrap().unwrap().header.base_offset, 198);
    }

    /// Segments whose log files the open-file budget closed keep appending and reading, and
    /// a crash that loses index entries still held in memory loses no data.
    #[test]
    fn segments_work_through_closed_files_and_unwritten_index_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut segs: Vec<Segment> = (0..4)
            .map(|i| Segment::create(&made_dir(dir.path().join(format!("p{i}"))), 0, 64).unwrap())
            .collect();
        for round in 0..300 {
            for seg in segs.iter_mut() {
                append_one(seg, round, &[b"some value"], 1000 + round);
            }
        }
        for (i, seg) in segs.iter().enumerate() {
            assert_eq!(seg.next_offset, 300);
            assert_eq!(seg.locate(250).unwrap().unwrap().header.base_offset, 250);
            // Not synced: reopening without recovery trusts the partial index and scans the
            // rest of the log, finding everything.
            let reopened = Segment::open(&dir.path().join(format!("p{i}")), 0, 64, false).unwrap();
            assert_eq!(reopened.next_offset, 300);
            assert_eq!(reopened.max_timestamp, 1299);
            assert_eq!(
                reopened.locate(299).unwrap().unwrap().header.base_offset,
                299
            );
        }
        // After a sync the index on disk is whole.
        segs[0].sync().unwrap();
        let on_disk =
            Index::<OffsetEntry>::open(&dir.path().join("p0").join(format!("{:020}.index", 0)))
                .unwrap();
        assert_eq!(on_disk.entries(), segs[0].index.entries());
    }

    #[test]
    fn vectored_write_takes_more_pieces_than_one_call_allows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pieces");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let data: Vec<Vec<u8>> = (0..3 * MAX_IOVECS).map(|i| vec![i as u8; i % 5]).collect();
        let mut pieces: Vec<IoSlice<'_>> = data.iter().map(|d| IoSlice::new(d)).collect();
        write_all_vectored_at(&file, &mut pieces, 3).unwrap();
        let mut want = vec![0u8; 3];
        want.extend(data.concat());
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    #[test]
    fn vectored_append_stores_the_concatenation() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 0, 64).unwrap();
        let mut headers = Vec::new();
        let mut whole = Vec::new();
        for i in 0..3 {
            let mut b = make_batch(&[b"value"], 10 + i, -1, -1);
            batch::assign_offset(&mut b, i, 0);
            headers.push((batch::parse_header(&b).unwrap().unwrap(), whole.len()));
            whole.extend_from_slice(&b);
        }
        // Cut anywhere, not only at batch boundaries.
        let mut pieces: Vec<IoSlice<'_>> = whole.chunks(7).map(IoSlice::new).collect();
        seg.append_vectored(&mut pieces, &headers).unwrap();
        assert_eq!(seg.size(), whole.len() as u64);
        assert_eq!(seg.next_offset, 3);
        assert_eq!(seg.read(0, whole.len()).unwrap(), whole);
        assert_eq!(
            seg.locate(2).unwrap().unwrap().position,
            headers[2].1 as u64
        );
    }

    #[test]
    fn read_at_stops_at_the_end_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(read_at(&file, 0, 10_000).unwrap(), data);
        assert_eq!(read_at(&file, 9_000, 5_000).unwrap(), &data[9_000..]);
        assert_eq!(read_at(&file, 123, 77).unwrap(), &data[123..200]);
        assert!(read_at(&file, 10_000, 10).unwrap().is_empty());
        assert!(read_at(&file, 20_000, 10).unwrap().is_empty());
        assert!(read_at(&file, 0, 0).unwrap().is_empty());
    }

    #[test]
    fn pooled_reads_reuse_buffers_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let a = read_pooled(&file, 0, 70_000).unwrap();
        assert_eq!(a, &data[..70_000]);
        let tail = a.slice(60_000..);
        let ptr = a.as_ptr();
        drop(a);
        // A slice keeps the buffer: another read gets another one.
        let b = read_pooled(&file, 1_000, 70_000).unwrap();
        assert_ne!(b.as_ptr(), ptr);
        assert_eq!(b, &data[1_000..71_000]);
        assert_eq!(tail, &data[60_000..70_000]);
        drop(tail);
        // Tests share the pool: reuse shows as some read of this size landing in the buffer.
        let reused = (0..POOLED_BUFFERS + 1)
            .map(|_| read_pooled(&file, 99_000, 70_000).unwrap())
            .any(|c| c.as_ptr() == ptr && c == data[99_000..]);
        assert!(reused, "the dropped buffer was not reused");
    }

    #[test]
    fn recovery_truncates_torn_and_corrupt_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 0, 4096).unwrap();
        for i in 0..10 {
            append_one(&mut seg, i, &[b"value"], 10 + i);
        }
        let good = seg.size();
        drop(seg);
        let lp = dir.path().join(log_name(0));
        // Torn tail: half of a batch.
        let mut extra = make_batch(&[b"torn"], 0, -1, -1);
        batch::assign_offset(&mut extra, 10, 0);
        let mut bytes = std::fs::read(&lp).unwrap();
        bytes.extend_from_slice(&extra[..extra.len() / 2]);
        std::fs::write(&lp, &bytes).unwrap();
        let seg = Segment::open(dir.path(), 0, 4096, true).unwrap();
        assert_eq!(seg.size(), good);
        assert_eq!(seg.next_offset, 10);
        drop(seg);
        // Corrupt the last batch's payload: it is dropped, earlier ones stay.
        let mut bytes = std::fs::read(&lp).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 0x55;
        std::fs::write(&lp, &bytes).unwrap();
        let seg = Segment::open(dir.path(), 0, 4096, true).unwrap();
        assert_eq!(seg.next_offset, 9);
        assert!(seg.size() < good);
    }
}
