//! Where the controller's [`State`] lives between restarts.
//!
//! Owns: the [`MetadataStore`] contract and the file store. May call: [`State`]'s and
//! [`Delta`]'s JSON encodings in [`crate::core`], the file system; never the handle or the
//! service.
//!
//! The domain API ([`crate::handle`]) commits every change through a [`MetadataStore`] before
//! it answers or publishes, so an acknowledged change survives a controller crash. A commit
//! carries the change ([`Delta`]) and the state after it: stores append the delta to a log and
//! now and then write the whole state as a snapshot that replaces the log, so the bytes
//! written for a change follow the change's size, not the cluster's. The trait is object-safe
//! (boxed futures) so hosts pick the store at run time: [`FileStore`] in `local` mode and in
//! the standalone node, Kubernetes Secrets in the operator (where `commit` fails with
//! [`Error::StoreConflict`] when another writer got there first).

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crate::core::{Delta, State};
use crate::error::{Error, Result};

/// A boxed, sendable future, so [`MetadataStore`] can be used as `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Durable storage of the controller's state.
pub trait MetadataStore: Send + Sync {
    /// The last committed state (snapshot plus the changes after it), or `None` if nothing
    /// was ever stored.
    fn load(&self) -> BoxFuture<'_, Result<Option<State>>>;
    /// Durably records `delta`, which turns the last loaded or committed state into `state`.
    /// May fail with [`Error::StoreConflict`] when another writer got there first; the caller
    /// must then stop acting as controller.
    fn commit<'a>(&'a self, delta: &'a Delta, state: &'a State) -> BoxFuture<'a, Result<()>>;
    /// Durably replaces everything stored with `state` (a new cluster, an import).
    fn replace<'a>(&'a self, state: &'a State) -> BoxFuture<'a, Result<()>>;
}

/// The log is folded into a new snapshot once it outgrows both this and the snapshot.
const LOG_COMPACT_MIN_BYTES: u64 = 4 << 20;
/// Bytes of a log frame before its payload: length and CRC-32C, both big-endian u32.
const FRAME_HEADER: usize = 8;

/// Frames `payload` for the log: length, CRC-32C of the payload, payload.
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
    frame.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Splits a log into its valid frames' payloads and the length of the valid prefix. Reading
/// stops at the first frame that is short or fails its CRC: that is an append a crash tore
/// (never acknowledged, since a commit answers only after the frame is synced), and the
/// bytes from there on are dropped at the next append.
pub fn decode_frames(log: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut frames = Vec::new();
    let mut pos = 0;
    while let Some(header) = log.get(pos..pos + FRAME_HEADER) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let start = pos + FRAME_HEADER;
        let Some(payload) = start.checked_add(len).and_then(|end| log.get(start..end)) else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        frames.push(payload);
        pos = start + len;
    }
    (frames, pos)
}

/// Replays the log frames onto the snapshot. Frames the snapshot already holds (left when a
/// crash fell between writing a snapshot and emptying the log) are skipped; a gap is an error.
pub fn replay(mut state: State, frames: &[&[u8]], origin: &str) -> Result<State> {
    for frame in frames {
        let delta = Delta::from_json(frame, origin)?;
        if delta.to <= state.version {
            continue;
        }
        delta.apply(&mut state, origin)?;
    }
    Ok(state)
}

/// State in `DIR/controller.json` (a snapshot, replaced atomically: temp file, fsync,
/// rename, fsync dir) and `DIR/controller.log` (the changes after it, one CRC-checked frame
/// per commit, synced before the commit answers).
#[derive(Clone, Debug)]
pub struct FileStore {
    dir: PathBuf,
    log: Arc<Mutex<LogFile>>,
}

#[derive(Debug, Default)]
struct LogFile {
    /// Open for appending once something was loaded or written.
    file: Option<File>,
    /// Length of the valid prefix: appends go here (a torn tail is cut first).
    len: u64,
    /// Size of the last snapshot, which the log may grow to before it is folded in.
    snapshot_len: u64,
    /// A snapshot exists: commits may append.
    based: bool,
}

impl FileStore {
    /// The snapshot's file name inside the directory.
    pub const FILE_NAME: &'static str = "controller.json";
    /// The log's file name inside the directory.
    pub const LOG_NAME: &'static str = "controller.log";

    /// A store in `dir`, created if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(FileStore {
            dir,
            log: Arc::default(),
        })
    }

    /// The snapshot file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(Self::FILE_NAME)
    }

    /// The log file's path.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(Self::LOG_NAME)
    }

    fn open_log(path: &Path) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, e))
    }

    fn load_blocking(dir: &Path, log: &Mutex<LogFile>) -> Result<Option<State>> {
        let path = dir.join(Self::FILE_NAME);
        let log_path = dir.join(Self::LOG_NAME);
        let mut lf = log.lock().expect("not poisoned");
        let snapshot = match std::fs::read(&path) {
            Ok(bytes) => {
                lf.snapshot_len = bytes.len() as u64;
                State::from_json(&bytes, &path.display().to_string())?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if log_path.exists() {
                    return Err(Error::BrokenLog {
                        origin: log_path.display().to_string(),
                        reason: format!(
                            "the log exists but its snapshot {} does not",
                            path.display()
                        ),
                    });
                }
                *lf = LogFile::default();
                return Ok(None);
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut file = Self::open_log(&log_path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io(&log_path, e))?;
        let (frames, valid) = decode_frames(&bytes);
        if valid < bytes.len() {
            tracing::warn!(
                log = %log_path.display(),
                dropped_bytes = bytes.len() - valid,
                "the metadata log ends in a torn append (a crash mid-write); it is cut at the last whole change"
            );
        }
        let state = replay(snapshot, &frames, &log_path.display().to_string())?;
        lf.file = Some(file);
        lf.len = valid as u64;
        lf.based = true;
        Ok(Some(state))
    }

    fn snapshot_blocking(dir: &Path, log: &Mutex<LogFile>, bytes: &[u8]) -> Result<()> {
        let path = dir.join(Self::FILE_NAME);
        let log_path = dir.join(Self::LOG_NAME);
        let mut lf = log.lock().expect("not poisoned");
        let tmp = path.with_extension("json.tmp");
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(|e| Error::io(&tmp, e))?;
            f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        // The rename is durable only once the directory entry is.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
        // The snapshot holds every change in the log: empty it. A crash before this leaves
        // frames that `replay` skips.
        let file = match lf.file.take() {
            Some(f) => f,
            None => Self::open_log(&log_path)?,
        };
        file.set_len(0)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&log_path, e))?;
        *lf = LogFile {
            file: Some(file),
            len: 0,
            snapshot_len: bytes.len() as u64,
            based: true,
        };
        Ok(())
    }

    fn append_blocking(dir: &Path, log: &Mutex<LogFile>, frame: &[u8]) -> Result<()> {
        let log_path = dir.join(Self::LOG_NAME);
        let mut lf = log.lock().expect("not poisoned");
        let len = lf.len;
        let file = lf.file.as_mut().ok_or_else(|| Error::BrokenLog {
            origin: log_path.display().to_string(),
            reason: "append before the log was loaded".into(),
        })?;
        let io = |e| Error::io(&log_path, e);
        // Cut a torn tail (or a failed earlier append) before writing after it.
        if file.metadata().map_err(io)?.len() != len {
            file.set_len(len).map_err(io)?;
        }
        file.seek(SeekFrom::Start(len)).map_err(io)?;
        file.write_all(frame).map_err(io)?;
        file.sync_data().map_err(io)?;
        lf.len = len + frame.len() as u64;
        Ok(())
    }

    /// Whether the next commit should fold the log into a snapshot instead of appending.
    fn wants_snapshot(&self, frame_len: usize) -> bool {
        let lf = self.log.lock().expect("not poisoned");
        !lf.based || lf.len + frame_len as u64 > LOG_COMPACT_MIN_BYTES.max(lf.snapshot_len)
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::io(Self::FILE_NAME, std::io::Error::other(e)))?
    }
}

impl MetadataStore for FileStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<State>>> {
        let (dir, log) = (self.dir.clone(), self.log.clone());
        Box::pin(Self::blocking(move || Self::load_blocking(&dir, &log)))
    }

    fn commit<'a>(&'a self, delta: &'a Delta, state: &'a State) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let frame = encode_frame(&delta.to_json()?);
            if self.wants_snapshot(frame.len()) {
                return self.replace(state).await;
            }
            let (dir, log) = (self.dir.clone(), self.log.clone());
            Self::blocking(move || Self::append_blocking(&dir, &log, &frame)).await
        })
    }

    fn replace<'a>(&'a self, state: &'a State) -> BoxFuture<'a, Result<()>> {
        let encoded = state.to_json();
        let (dir, log) = (self.dir.clone(), self.log.clone());
        Box::pin(async move {
            let bytes = encoded?;
            Self::blocking(move || Self::snapshot_blocking(&dir, &log, &bytes)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `state` with one more node registered (a change of a few hundred bytes).
    fn changed(state: &State, node: i32) -> State {
        let mut next = state.clone();
        next.version += 1;
        next.nodes.insert(
            node,
            crate::core::NodeRecord {
                host: format!("node-{node}"),
                port: 9092,
                rack: String::new(),
                broker_epoch: i64::from(node),
                incarnation_id: "i".into(),
                listeners: Default::default(),
            },
        );
        next
    }

    /// A store in a fresh directory holding a new cluster's snapshot.
    async fn started() -> (tempfile::TempDir, FileStore, State) {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let s1 = State::new("abc");
        store.replace(&s1).await.unwrap();
        (dir, store, s1)
    }

    async fn commit(store: &FileStore, before: &State, after: &State) {
        store
            .commit(&Delta::between(before, after), after)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn changes_append_to_the_log_and_replay_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().join("nested")).unwrap();
        assert_eq!(store.load().await.unwrap(), None);
        let s1 = State::new("abc");
        store.replace(&s1).await.unwrap();
        let snapshot = std::fs::read(store.path()).unwrap();
        let s2 = changed(&s1, 1);
        commit(&store, &s1, &s2).await;
        let s3 = changed(&s2, 2);
        commit(&store, &s2, &s3).await;
        // The snapshot was not rewritten; the log holds two small frames.
        assert_eq!(std::fs::read(store.path()).unwrap(), snapshot);
        let log = std::fs::read(store.log_path()).unwrap();
        assert_eq!(decode_frames(&log).0.len(), 2);
        assert!(log.len() < 600, "{} bytes", log.len());

        let reopened = FileStore::open(dir.path().join("nested")).unwrap();
        assert_eq!(reopened.load().await.unwrap(), Some(s3.clone()));
        // And commits go on from there.
        let s4 = changed(&s3, 3);
        commit(&reopened, &s3, &s4).await;
        let again = FileStore::open(dir.path().join("nested")).unwrap();
        assert_eq!(again.load().await.unwrap(), Some(s4));
        assert!(!store.path().with_extension("json.tmp").exists());
    }

    #[tokio::test]
    async fn a_torn_append_is_cut_and_the_log_goes_on() {
        let (dir, store, s1) = started().await;
        let s2 = changed(&s1, 1);
        commit(&store, &s1, &s2).await;
        // A crash in the middle of the next append: half a frame on disk.
        let s3 = changed(&s2, 2);
        let frame = encode_frame(&Delta::between(&s2, &s3).to_json().unwrap());
        let mut f = OpenOptions::new()
            .append(true)
            .open(store.log_path())
            .unwrap();
        f.write_all(&frame[..frame.len() / 2]).unwrap();
        drop(f);

        let reopened = FileStore::open(dir.path()).unwrap();
        assert_eq!(reopened.load().await.unwrap(), Some(s2.clone()));
        let s3 = changed(&s2, 3);
        commit(&reopened, &s2, &s3).await;
        let again = FileStore::open(dir.path()).unwrap();
        assert_eq!(again.load().await.unwrap(), Some(s3));
    }

    #[tokio::test]
    async fn a_flipped_byte_ends_the_log_there() {
        let (dir, store, s1) = started().await;
        let s2 = changed(&s1, 1);
        commit(&store, &s1, &s2).await;
        let s3 = changed(&s2, 2);
        commit(&store, &s2, &s3).await;
        let mut log = std::fs::read(store.log_path()).unwrap();
        let last = log.len() - 3;
        log[last] ^= 0x40;
        std::fs::write(store.log_path(), &log).unwrap();
        let reopened = FileStore::open(dir.path()).unwrap();
        assert_eq!(reopened.load().await.unwrap(), Some(s2));
    }

    #[tokio::test]
    async fn a_growing_log_is_folded_into_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let mut state = State::new("abc");
        store.replace(&state).await.unwrap();
        let mut folded = false;
        // Each change re-registers node 1 with a 64 KiB incarnation id.
        for i in 0..100 {
            let mut next = changed(&state, 1);
            next.nodes.get_mut(&1).unwrap().incarnation_id = format!("{i}{}", "x".repeat(65536));
            commit(&store, &state, &next).await;
            state = next;
            let log_len = std::fs::metadata(store.log_path()).unwrap().len();
            assert!(log_len <= LOG_COMPACT_MIN_BYTES, "{log_len}");
            folded |= log_len == 0;
        }
        assert!(folded, "the log was never folded into the snapshot");
        let reopened = FileStore::open(dir.path()).unwrap();
        assert_eq!(reopened.load().await.unwrap(), Some(state));
    }

    #[tokio::test]
    async fn frames_left_from_before_a_snapshot_are_skipped() {
        let (dir, store, s1) = started().await;
        let s2 = changed(&s1, 1);
        commit(&store, &s1, &s2).await;
        let log = std::fs::read(store.log_path()).unwrap();
        // A crash after the snapshot was renamed into place but before the log was emptied.
        store.replace(&s2).await.unwrap();
        std::fs::write(store.log_path(), &log).unwrap();
        let reopened = FileStore::open(dir.path()).unwrap();
        assert_eq!(reopened.load().await.unwrap(), Some(s2));
    }

    #[tokio::test]
    async fn refuses_unknown_format_garbage_and_a_log_without_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let mut value = serde_json::to_value(State::new("abc")).unwrap();
        value["format_version"] = serde_json::json!(2);
        std::fs::write(store.path(), serde_json::to_vec(&value).unwrap()).unwrap();
        let err = store.load().await.unwrap_err();
        assert!(
            matches!(err, Error::UnknownStateFormat { found: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("format_version 2"), "{err}");

        std::fs::write(store.path(), b"{not json").unwrap();
        assert!(matches!(
            store.load().await.unwrap_err(),
            Error::CorruptState { .. }
        ));

        std::fs::remove_file(store.path()).unwrap();
        std::fs::write(store.log_path(), b"").unwrap();
        assert!(matches!(
            store.load().await.unwrap_err(),
            Error::BrokenLog { .. }
        ));
    }

    #[tokio::test]
    async fn a_pretty_printed_state_of_earlier_versions_loads() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let state = changed(&State::new("abc"), 4);
        std::fs::write(store.path(), serde_json::to_vec_pretty(&state).unwrap()).unwrap();
        assert_eq!(store.load().await.unwrap(), Some(state.clone()));
        let next = changed(&state, 5);
        commit(&store, &state, &next).await;
        let reopened = FileStore::open(dir.path()).unwrap();
        assert_eq!(reopened.load().await.unwrap(), Some(next));
    }

    #[test]
    fn store_is_object_safe() {
        let dir = tempfile::tempdir().unwrap();
        let _store: Box<dyn MetadataStore> = Box::new(FileStore::open(dir.path()).unwrap());
    }
}
