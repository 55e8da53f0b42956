//! Where the controller's [`State`] lives between restarts.
//!
//! Owns: the [`MetadataStore`] contract and the file store. May call: [`State`]'s JSON
//! encoding in [`crate::core`], the file system; never the handle or the service.
//!
//! The domain API ([`crate::handle`]) saves every change through a [`MetadataStore`] before it answers or publishes,
//! so an acknowledged change survives a controller crash. The trait is object-safe (boxed
//! futures) so hosts pick the store at run time: [`FileStore`] for `local` mode, Kubernetes
//! resources (compare-and-swap on resourceVersion, where `save` fails with
//! [`Error::StoreConflict`]) later.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use crate::core::State;
use crate::error::{Error, Result};

/// A boxed, sendable future, so [`MetadataStore`] can be used as `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Durable storage of the controller's state.
pub trait MetadataStore: Send + Sync {
    /// The last saved state, or `None` if nothing was ever saved.
    fn load(&self) -> BoxFuture<'_, Result<Option<State>>>;
    /// Durably replaces the saved state. May fail with [`Error::StoreConflict`] when another
    /// writer got there first; the caller must then stop acting as controller.
    fn save<'a>(&'a self, state: &'a State) -> BoxFuture<'a, Result<()>>;
}

/// State in `DIR/controller.json`, replaced atomically (temp file, fsync, rename, fsync dir).
#[derive(Clone, Debug)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// The state file's name inside the directory.
    pub const FILE_NAME: &'static str = "controller.json";

    /// A store in `dir`, created if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(FileStore { dir })
    }

    /// The state file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(Self::FILE_NAME)
    }

    fn load_blocking(path: &Path) -> Result<Option<State>> {
        match std::fs::read(path) {
            Ok(bytes) => State::from_json(&bytes, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn save_blocking(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(|e| Error::io(&tmp, e))?;
            f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))
    }
}

impl MetadataStore for FileStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<State>>> {
        let path = self.path();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Self::load_blocking(&path))
                .await
                .map_err(|e| Error::io(Self::FILE_NAME, std::io::Error::other(e)))?
        })
    }

    fn save<'a>(&'a self, state: &'a State) -> BoxFuture<'a, Result<()>> {
        let encoded = state.to_json();
        let dir = self.dir.clone();
        let path = self.path();
        Box::pin(async move {
            let bytes = encoded?;
            tokio::task::spawn_blocking(move || Self::save_blocking(&dir, &path, &bytes))
                .await
                .map_err(|e| Error::io(Self::FILE_NAME, std::io::Error::other(e)))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().join("nested")).unwrap();
        assert_eq!(store.load().await.unwrap(), None);
        let mut state = State::new("abc");
        store.save(&state).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(state.clone()));
        state.version = 7;
        store.save(&state).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(state));
        assert!(!store.path().with_extension("json.tmp").exists());
    }

    #[tokio::test]
    async fn refuses_unknown_format_and_garbage() {
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
    }

    #[test]
    fn store_is_object_safe() {
        let dir = tempfile::tempdir().unwrap();
        let _store: Box<dyn MetadataStore> = Box::new(FileStore::open(dir.path()).unwrap());
    }
}
