//! The bucket behind a narrow trait: whole-object and ranged reads, plain and conditional
//! writes, listing and deletes. `s3://BUCKET/PREFIX` and `file:///PATH` go through the
//! `object_store` crate; tests may use its in-memory store.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use object_store::aws::AmazonS3ConfigKey;
use object_store::path::Path as ObjPath;
use object_store::ClientConfigKey;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use crate::error::{Error, Result};

/// Identifies one version of an object, for conditional updates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Version {
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

/// Precondition of a conditional put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Only if no object exists at the key.
    Create,
    /// Only if the object is still at this version.
    Match(Version),
}

/// Request counters, for requests-per-GB figures and later metrics.
#[derive(Debug, Default)]
pub struct RequestCounters {
    pub puts: AtomicU64,
    pub gets: AtomicU64,
    pub lists: AtomicU64,
    pub deletes: AtomicU64,
    pub copies: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub errors: AtomicU64,
}

type Fut<'a, T> = BoxFuture<'a, Result<T>>;

/// What the tiering layer needs from a bucket. Keys are full object paths.
pub trait Bucket: Send + Sync + 'static {
    /// For logs: the URL this bucket was opened from.
    fn describe(&self) -> String;
    /// Request counters.
    fn counters(&self) -> &RequestCounters;
    /// Write an object, replacing any previous one.
    fn put(&self, key: &str, data: Bytes) -> Fut<'_, ()>;
    /// Write `len` bytes of a local file as one object (multipart when large).
    fn put_file(&self, key: &str, file: Arc<File>, len: u64) -> Fut<'_, ()>;
    /// Write an object only if `cond` holds; `Error::ManifestConflict` otherwise.
    fn put_if(&self, key: &str, data: Bytes, cond: Condition) -> Fut<'_, Version>;
    /// Read a whole object with its version; `None` if absent.
    fn get(&self, key: &str) -> Fut<'_, Option<(Bytes, Version)>>;
    /// Read a byte range of an object.
    fn get_range(&self, key: &str, range: Range<u64>) -> Fut<'_, Bytes>;
    /// Delete an object (absent is fine).
    fn delete(&self, key: &str) -> Fut<'_, ()>;
    /// Every object under `prefix` (ending in '/') with its size.
    fn list(&self, prefix: &str) -> Fut<'_, Vec<(String, u64)>>;
    /// Copy an object inside the bucket, on the server side (no bytes through the node).
    fn copy(&self, from: &str, to: &str) -> Fut<'_, ()>;
    /// The bucket's name when it is an S3 bucket (a copy between two prefixes of one
    /// bucket can then stay on the server).
    fn s3_bucket_name(&self) -> Option<String> {
        None
    }
}

/// Objects above this size go up as multipart uploads.
const MULTIPART_THRESHOLD: u64 = 32 << 20;
/// Part size of multipart uploads (S3's minimum is 5 MiB).
const PART_SIZE: u64 = 16 << 20;

/// A bucket over an `object_store` implementation.
pub struct ObjectStoreBucket {
    store: Arc<dyn ObjectStore>,
    url: String,
    /// For `file://`: LocalFileSystem has no compare-and-swap on update, so conditional
    /// updates take an exclusive lock on this file (held by every writer on this machine).
    local_lock: Option<PathBuf>,
    counters: RequestCounters,
}

fn bucket_err(op: &'static str, key: &str, e: object_store::Error) -> Error {
    // The useful part (connection refused, timed out, ...) is often deep in the chain.
    let mut reason = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let t = s.to_string();
        if !reason.contains(&t) {
            reason.push_str(": ");
            reason.push_str(&t);
        }
        src = s.source();
    }
    Error::BucketRequest {
        op,
        key: key.to_string(),
        reason,
    }
}

impl ObjectStoreBucket {
    /// Wrap any object store (the in-memory one in tests).
    pub fn new(store: Arc<dyn ObjectStore>, url: &str) -> Self {
        ObjectStoreBucket {
            store,
            url: url.to_string(),
            local_lock: None,
            counters: RequestCounters::default(),
        }
    }

    /// Open `s3://BUCKET[/PREFIX]` or `file:///PATH`; returns the bucket and the key prefix
    /// ("" or "PREFIX/").
    pub fn open(url: &str) -> Result<(Self, String)> {
        let bad = |reason: &str| Error::ObjectStoreUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name"));
            }
            let prefix = prefix.trim_matches('/');
            // Endpoint, region, credentials and AWS_ALLOW_HTTP come from the environment;
            // requests are path-style unless AWS_VIRTUAL_HOSTED_STYLE_REQUEST says otherwise,
            // which is what MinIO and most S3-compatible servers want. Retries are kept short:
            // the uploader has its own backoff and a fetch should fail fast.
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(object_store::RetryConfig {
                    backoff: object_store::BackoffConfig {
                        init_backoff: Duration::from_millis(100),
                        max_backoff: Duration::from_secs(2),
                        base: 2.0,
                    },
                    max_retries: 3,
                    retry_timeout: Duration::from_secs(15),
                })
                // Through with_config, not with_client_options: the latter would drop the
                // client settings from_env read (AWS_ALLOW_HTTP among them).
                .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "30s")
                .with_config(
                    AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                    "5s",
                )
                .build()
                .map_err(|e| bad(&e.to_string()))?;
            let prefix = if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            };
            return Ok((Self::new(Arc::new(store), url), prefix));
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad("file:// needs an absolute path (file:///PATH)"));
            }
            std::fs::create_dir_all(path).map_err(|e| bad(&e.to_string()))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(path)
                .map_err(|e| bad(&e.to_string()))?;
            let mut b = Self::new(Arc::new(store), url);
            b.local_lock = Some(PathBuf::from(path).join(".strata-manifest.lock"));
            return Ok((b, String::new()));
        }
        Err(bad("must start with s3:// or file://"))
    }

    async fn put_if_local(
        &self,
        lock: PathBuf,
        key: &str,
        data: Bytes,
        expected: Version,
    ) -> Result<Version> {
        let guard = tokio::task::spawn_blocking(move || flock_exclusive(&lock))
            .await
            .map_err(|e| Error::RemoteUnavailable(e.to_string()))??;
        let path = ObjPath::from(key);
        let current = match self.store.head(&path).await {
            Ok(m) => Some(Version {
                e_tag: m.e_tag,
                version: m.version,
            }),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(bucket_err("head", key, e)),
        };
        if current.as_ref().map(|c| &c.e_tag) != Some(&expected.e_tag) {
            return Err(Error::ManifestConflict {
                key: key.to_string(),
            });
        }
        let len = data.len() as u64;
        let r = self
            .store
            .put(&path, PutPayload::from(data))
            .await
            .map_err(|e| bucket_err("put", key, e))?;
        self.counters.bytes_up.fetch_add(len, Ordering::Relaxed);
        drop(guard);
        Ok(Version {
            e_tag: r.e_tag,
            version: r.version,
        })
    }

    async fn put_multipart(&self, key: &str, file: Arc<File>, len: u64) -> Result<()> {
        let path = ObjPath::from(key);
        // Starting and completing the upload are requests too (billed as PUTs by S3).
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        let mut up = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| bucket_err("start multipart", key, e))?;
        let mut pos = 0u64;
        let result: Result<()> = async {
            while pos < len {
                let n = PART_SIZE.min(len - pos);
                let part = read_file_range(file.clone(), pos, n).await?;
                self.counters.puts.fetch_add(1, Ordering::Relaxed);
                up.put_part(PutPayload::from(part))
                    .await
                    .map_err(|e| bucket_err("put part", key, e))?;
                self.counters.bytes_up.fetch_add(n, Ordering::Relaxed);
                pos += n;
            }
            self.counters.puts.fetch_add(1, Ordering::Relaxed);
            up.complete()
                .await
                .map_err(|e| bucket_err("complete multipart", key, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            // Parts of an aborted upload would otherwise linger (and be billed).
            let _ = up.abort().await;
        }
        result
    }

    fn count<T>(&self, r: &Result<T>) {
        if r.is_err() {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Read `len` bytes at `pos` of a shared file on the blocking pool.
pub async fn read_file_range(file: Arc<File>, pos: u64, len: u64) -> Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, pos)
            .map(|_| Bytes::from(buf))
            .map_err(|e| Error::io("read segment for upload", e))
    })
    .await
    .map_err(|e| Error::RemoteUnavailable(e.to_string()))?
}

struct FlockGuard(File);

impl Drop for FlockGuard {
    fn drop(&mut self) {
        use std::os::unix::io::AsRawFd;
        // SAFETY: unlocking a valid descriptor owned by self.0.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn flock_exclusive(path: &std::path::Path) -> Result<FlockGuard> {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path.display().to_string(), e))?;
    // SAFETY: flock on a valid open descriptor owned by `f`.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        return Err(Error::io(
            path.display().to_string(),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(FlockGuard(f))
}

impl Bucket for ObjectStoreBucket {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn counters(&self) -> &RequestCounters {
        &self.counters
    }

    fn put(&self, key: &str, data: Bytes) -> Fut<'_, ()> {
        let key = key.to_string();
        async move {
            self.counters.puts.fetch_add(1, Ordering::Relaxed);
            let len = data.len() as u64;
            let r = self
                .store
                .put(&ObjPath::from(key.as_str()), PutPayload::from(data))
                .await
                .map(|_| ())
                .map_err(|e| bucket_err("put", &key, e));
            if r.is_ok() {
                self.counters.bytes_up.fetch_add(len, Ordering::Relaxed);
            }
            self.count(&r);
            r
        }
        .boxed()
    }

    fn put_file(&self, key: &str, file: Arc<File>, len: u64) -> Fut<'_, ()> {
        let key = key.to_string();
        async move {
            if len > MULTIPART_THRESHOLD {
                let r = self.put_multipart(&key, file, len).await;
                self.count(&r);
                return r;
            }
            let data = read_file_range(file, 0, len).await?;
            self.put(&key, data).await
        }
        .boxed()
    }

    fn put_if(&self, key: &str, data: Bytes, cond: Condition) -> Fut<'_, Version> {
        let key = key.to_string();
        async move {
            self.counters.puts.fetch_add(1, Ordering::Relaxed);
            if let (Condition::Match(v), Some(lock)) = (&cond, &self.local_lock) {
                let r = self.put_if_local(lock.clone(), &key, data, v.clone()).await;
                self.count(&r);
                return r;
            }
            let mode = match cond {
                Condition::Create => PutMode::Create,
                Condition::Match(v) => PutMode::Update(UpdateVersion {
                    e_tag: v.e_tag,
                    version: v.version,
                }),
            };
            let len = data.len() as u64;
            let r = self
                .store
                .put_opts(
                    &ObjPath::from(key.as_str()),
                    PutPayload::from(data),
                    PutOptions {
                        mode,
                        ..Default::default()
                    },
                )
                .await;
            let r = match r {
                Ok(r) => {
                    self.counters.bytes_up.fetch_add(len, Ordering::Relaxed);
                    Ok(Version {
                        e_tag: r.e_tag,
                        version: r.version,
                    })
                }
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => Err(Error::ManifestConflict { key: key.clone() }),
                Err(e) => Err(bucket_err("conditional put", &key, e)),
            };
            self.count(&r);
            r
        }
        .boxed()
    }

    fn get(&self, key: &str) -> Fut<'_, Option<(Bytes, Version)>> {
        let key = key.to_string();
        async move {
            self.counters.gets.fetch_add(1, Ordering::Relaxed);
            let r = async {
                let res = match self.store.get(&ObjPath::from(key.as_str())).await {
                    Ok(r) => r,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(bucket_err("get", &key, e)),
                };
                let v = Version {
                    e_tag: res.meta.e_tag.clone(),
                    version: res.meta.version.clone(),
                };
                let bytes = res.bytes().await.map_err(|e| bucket_err("get", &key, e))?;
                self.counters
                    .bytes_down
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Ok(Some((bytes, v)))
            }
            .await;
            self.count(&r);
            r
        }
        .boxed()
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Fut<'_, Bytes> {
        let key = key.to_string();
        async move {
            self.counters.gets.fetch_add(1, Ordering::Relaxed);
            let want = range.end - range.start;
            let r = self
                .store
                .get_range(&ObjPath::from(key.as_str()), range)
                .await
                .map_err(|e| bucket_err("ranged get", &key, e))
                .and_then(|b| {
                    if b.len() as u64 != want {
                        return Err(Error::CorruptRemoteSegment {
                            key: key.clone(),
                            reason: format!("asked for {want} bytes, got {}", b.len()),
                        });
                    }
                    Ok(b)
                });
            if let Ok(b) = &r {
                self.counters
                    .bytes_down
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
            }
            self.count(&r);
            r
        }
        .boxed()
    }

    fn delete(&self, key: &str) -> Fut<'_, ()> {
        let key = key.to_string();
        async move {
            self.counters.deletes.fetch_add(1, Ordering::Relaxed);
            let r = match self.store.delete(&ObjPath::from(key.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(bucket_err("delete", &key, e)),
            };
            self.count(&r);
            r
        }
        .boxed()
    }

    fn copy(&self, from: &str, to: &str) -> Fut<'_, ()> {
        let (from, to) = (from.to_string(), to.to_string());
        async move {
            self.counters.copies.fetch_add(1, Ordering::Relaxed);
            let r = self
                .store
                .copy(&ObjPath::from(from.as_str()), &ObjPath::from(to.as_str()))
                .await
                .map_err(|e| bucket_err("copy", &from, e));
            self.count(&r);
            r
        }
        .boxed()
    }

    fn s3_bucket_name(&self) -> Option<String> {
        let rest = self.url.strip_prefix("s3://")?;
        Some(rest.split('/').next().unwrap_or(rest).to_string())
    }

    fn list(&self, prefix: &str) -> Fut<'_, Vec<(String, u64)>> {
        let prefix = prefix.to_string();
        async move {
            self.counters.lists.fetch_add(1, Ordering::Relaxed);
            let p = ObjPath::from(prefix.trim_end_matches('/'));
            let mut stream = self.store.list(Some(&p));
            let mut out = Vec::new();
            let r = loop {
                match stream.next().await {
                    None => break Ok(out),
                    Some(Ok(m)) => out.push((m.location.to_string(), m.size)),
                    Some(Err(object_store::Error::NotFound { .. })) => break Ok(Vec::new()),
                    Some(Err(e)) => break Err(bucket_err("list", &prefix, e)),
                }
            };
            self.count(&r);
            r
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(ObjectStoreBucket::open("http://x").is_err());
        assert!(ObjectStoreBucket::open("file://relative").is_err());
        assert!(ObjectStoreBucket::open("s3://").is_err());
        let dir = tempfile::tempdir().unwrap();
        let (_, prefix) =
            ObjectStoreBucket::open(&format!("file://{}", dir.path().display())).unwrap();
        assert_eq!(prefix, "");
    }

    #[tokio::test]
    async fn local_conditional_puts() {
        let dir = tempfile::tempdir().unwrap();
        let (b, _) = ObjectStoreBucket::open(&format!("file://{}", dir.path().display())).unwrap();
        let v1 = b
            .put_if("a/m.json", Bytes::from_static(b"1"), Condition::Create)
            .await
            .unwrap();
        assert!(matches!(
            b.put_if("a/m.json", Bytes::from_static(b"x"), Condition::Create)
                .await,
            Err(Error::ManifestConflict { .. })
        ));
        let v2 = b
            .put_if(
                "a/m.json",
                Bytes::from_static(b"22"),
                Condition::Match(v1.clone()),
            )
            .await
            .unwrap();
        assert!(matches!(
            b.put_if("a/m.json", Bytes::from_static(b"3"), Condition::Match(v1))
                .await,
            Err(Error::ManifestConflict { .. })
        ));
        let (data, v) = b.get("a/m.json").await.unwrap().unwrap();
        assert_eq!(&data[..], b"22");
        assert_eq!(v.e_tag, v2.e_tag);
        assert_eq!(&b.get_range("a/m.json", 1..2).await.unwrap()[..], b"2");
        assert_eq!(
            b.list("a/").await.unwrap(),
            vec![("a/m.json".to_string(), 2)]
        );
        b.delete("a/m.json").await.unwrap();
        b.delete("a/m.json").await.unwrap();
        assert!(b.get("a/m.json").await.unwrap().is_none());
        assert!(b.list("nothing/").await.unwrap().is_empty());
    }
}

/// Against a real S3-compatible server when `STRATA_TEST_S3_URL` is set (tests/tiering sets
/// it up); skipped otherwise.
#[cfg(test)]
mod s3_smoke {
    use super::*;

    #[tokio::test]
    async fn conditional_puts_against_s3() {
        let Ok(url) = std::env::var("STRATA_TEST_S3_URL") else {
            return;
        };
        let (b, prefix) = ObjectStoreBucket::open(&url).unwrap();
        let key = format!("{prefix}smoke/{}", uuid::Uuid::new_v4());
        let r = b
            .put_if(&key, Bytes::from_static(b"1"), Condition::Create)
            .await;
        let v1 = r.map_err(|e| format!("{e:?}")).unwrap();
        assert!(matches!(
            b.put_if(&key, Bytes::from_static(b"x"), Condition::Create)
                .await,
            Err(Error::ManifestConflict { .. })
        ));
        b.put_if(&key, Bytes::from_static(b"2"), Condition::Match(v1.clone()))
            .await
            .unwrap();
        assert!(matches!(
            b.put_if(&key, Bytes::from_static(b"3"), Condition::Match(v1))
                .await,
            Err(Error::ManifestConflict { .. })
        ));
        b.delete(&key).await.unwrap();
    }
}
