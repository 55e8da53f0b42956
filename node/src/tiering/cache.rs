//! A bounded in-memory cache of object blocks for reads from the bucket. Blocks are fixed
//! aligned ranges of an object (one ranged GET each); concurrent readers of a missing block
//! share one request; least recently used blocks are evicted past the byte budget.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;

use super::disk_cache::DiskCache;
use super::store::Bucket;
use crate::error::{Error, Result};

/// Block size: one ranged GET. Large enough that requests per GB stay low (256), small
/// enough that a consumer's first fetch from a cold segment is quick.
pub const BLOCK: u64 = 4 << 20;

/// Marks a whole-object entry (indexes) instead of a block number.
const WHOLE: u64 = u64::MAX;

type Key = (Arc<str>, u64);
type Pending = Shared<BoxFuture<'static, Result<Bytes, Arc<Error>>>>;

#[derive(Default)]
struct Inner {
    map: HashMap<Key, (Bytes, u64)>,
    lru: BTreeMap<u64, Key>,
    tick: u64,
    bytes: u64,
    pending: HashMap<Key, Pending>,
}

/// Cache statistics.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
}

/// The block cache.
pub struct BlockCache {
    max_bytes: u64,
    inner: Mutex<Inner>,
    pub counters: CacheCounters,
    /// Below memory: blocks kept on the node's volume (see `disk_cache`).
    disk: Option<Arc<DiskCache>>,
}

/// The error of a shared request, for each reader that waited on it.
fn again(e: &Arc<Error>) -> Error {
    match &**e {
        Error::BucketRequest { op, key, reason } => Error::BucketRequest {
            op,
            key: key.clone(),
            reason: reason.clone(),
        },
        Error::CorruptRemoteSegment { key, reason } => Error::CorruptRemoteSegment {
            key: key.clone(),
            reason: reason.clone(),
        },
        other => Error::RemoteUnavailable(other.to_string()),
    }
}

impl BlockCache {
    /// A cache holding at most `max_bytes` (at least one block is always kept).
    pub fn new(max_bytes: u64) -> Self {
        BlockCache {
            max_bytes,
            inner: Mutex::new(Inner::default()),
            counters: CacheCounters::default(),
            disk: None,
        }
    }

    /// The same, with `disk` beneath it: a block missing in memory is looked for there
    /// before the bucket, and a block read from the bucket is kept there too.
    pub fn with_disk(mut self, disk: Arc<DiskCache>) -> Self {
        self.disk = Some(disk);
        self
    }

    /// The disk cache beneath, if any.
    pub fn disk(&self) -> Option<&Arc<DiskCache>> {
        self.disk.as_ref()
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.inner.lock().bytes
    }

    fn lookup(&self, key: &Key) -> Option<Bytes> {
        let mut g = self.inner.lock();
        g.tick += 1;
        let tick = g.tick;
        let (data, old) = {
            let e = g.map.get_mut(key)?;
            let old = e.1;
            e.1 = tick;
            (e.0.clone(), old)
        };
        g.lru.remove(&old);
        g.lru.insert(tick, key.clone());
        Some(data)
    }

    fn insert(&self, key: Key, data: Bytes) {
        let mut g = self.inner.lock();
        if g.map.contains_key(&key) {
            return;
        }
        g.tick += 1;
        let tick = g.tick;
        g.bytes += data.len() as u64;
        g.map.insert(key.clone(), (data, tick));
        g.lru.insert(tick, key);
        while g.bytes > self.max_bytes && g.map.len() > 1 {
            let Some((_, k)) = g.lru.pop_first() else {
                break;
            };
            if let Some((d, _)) = g.map.remove(&k) {
                g.bytes -= d.len() as u64;
                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether a block is cached or being fetched.
    fn present(&self, key: &Key) -> bool {
        let g = self.inner.lock();
        g.map.contains_key(key) || g.pending.contains_key(key)
    }

    async fn load(
        self: &Arc<Self>,
        bucket: &Arc<dyn Bucket>,
        key: Key,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Bytes> {
        if let Some(b) = self.lookup(&key) {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(b);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let fut = {
            let mut g = self.inner.lock();
            if let Some(p) = g.pending.get(&key) {
                p.clone()
            } else {
                let bucket = bucket.clone();
                let name = key.0.clone();
                let me = self.clone();
                let k = key.clone();
                let disk = self.disk.clone();
                let f = async move {
                    let block = k.1;
                    let on_disk = match &disk {
                        Some(d) => {
                            let (d, n) = (d.clone(), name.clone());
                            tokio::task::spawn_blocking(move || d.get(&n, block))
                                .await
                                .ok()
                                .flatten()
                        }
                        None => None,
                    };
                    let from_disk = on_disk.is_some();
                    let r = match (on_disk, range) {
                        (Some(b), _) => Ok(b),
                        (None, Some(r)) => bucket.get_range(&name, r).await,
                        (None, None) => match bucket.get(&name).await {
                            Ok(Some((b, _))) => Ok(b),
                            Ok(None) => Err(Error::CorruptRemoteSegment {
                                key: name.to_string(),
                                reason: "object referenced by the manifest is missing".into(),
                            }),
                            Err(e) => Err(e),
                        },
                    };
                    if let (Some(d), Ok(b), false) = (&disk, &r, from_disk) {
                        let (d, n, b) = (d.clone(), name.clone(), b.clone());
                        // Written in the background: the reader does not wait for it.
                        d.writing(1);
                        tokio::task::spawn_blocking(move || {
                            d.put(&n, block, &b);
                            d.writing(-1);
                        });
                    }
                    me.inner.lock().pending.remove(&k);
                    match r {
                        Ok(b) => {
                            me.insert(k, b.clone());
                            Ok(b)
                        }
                        Err(e) => Err(Arc::new(e)),
                    }
                }
                .boxed()
                .shared();
                g.pending.insert(key, f.clone());
                f
            }
        };
        fut.await.map_err(|e| again(&e))
    }

    /// A whole small object (an index), cached.
    pub async fn object(self: &Arc<Self>, bucket: &Arc<dyn Bucket>, name: &str) -> Result<Bytes> {
        self.load(bucket, (Arc::from(name), WHOLE), None).await
    }

    /// Bytes `[start, end)` of an object of `size` bytes, through aligned blocks.
    pub async fn range(
        self: &Arc<Self>,
        bucket: &Arc<dyn Bucket>,
        name: &str,
        size: u64,
        start: u64,
        end: u64,
    ) -> Result<Bytes> {
        let end = end.min(size);
        if start >= end {
            return Ok(Bytes::new());
        }
        let name: Arc<str> = Arc::from(name);
        let first = start / BLOCK;
        let last = (end - 1) / BLOCK;
        let mut parts = Vec::with_capacity((last - first + 1) as usize);
        for b in first..=last {
            let r = b * BLOCK..((b + 1) * BLOCK).min(size);
            parts.push(self.load(bucket, (name.clone(), b), Some(r)).await?);
        }
        if parts.len() == 1 {
            let off = (start - first * BLOCK) as usize;
            return Ok(parts[0].slice(off..off + (end - start) as usize));
        }
        let mut out = BytesMut::with_capacity((end - start) as usize);
        for (i, p) in parts.iter().enumerate() {
            let b = first + i as u64;
            let lo = start.max(b * BLOCK) - b * BLOCK;
            let hi = end.min(b * BLOCK + p.len() as u64) - b * BLOCK;
            out.extend_from_slice(&p[lo as usize..hi as usize]);
        }
        Ok(out.freeze())
    }

    /// Start fetching the blocks of `[start, end)` not already cached, in the background.
    pub fn prefetch(
        self: &Arc<Self>,
        bucket: &Arc<dyn Bucket>,
        name: &str,
        size: u64,
        start: u64,
        end: u64,
    ) {
        let end = end.min(size);
        if start >= end {
            return;
        }
        let name: Arc<str> = Arc::from(name);
        for b in start / BLOCK..=(end - 1) / BLOCK {
            let key = (name.clone(), b);
            if self.present(&key) {
                continue;
            }
            let me = self.clone();
            let bucket = bucket.clone();
            let r = b * BLOCK..((b + 1) * BLOCK).min(size);
            tokio::spawn(async move {
                let _ = me.load(&bucket, key, Some(r)).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiering::store::ObjectStoreBucket;

    #[tokio::test]
    async fn ranges_across_blocks_and_eviction() {
        let mem: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::memory::InMemory::new());
        let bucket: Arc<dyn Bucket> = Arc::new(ObjectStoreBucket::new(mem, "memory://"));
        let size = BLOCK * 2 + 100;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        bucket.put("o", Bytes::from(data.clone())).await.unwrap();
        let cache = Arc::new(BlockCache::new(BLOCK * 2));
        let got = cache
            .range(&bucket, "o", size, BLOCK - 10, BLOCK * 2 + 50)
            .await
            .unwrap();
        assert_eq!(
            &got[..],
            &data[(BLOCK - 10) as usize..(BLOCK * 2 + 50) as usize]
        );
        assert!(cache.bytes() <= BLOCK * 2);
        let gets = bucket.counters().gets.load(Ordering::Relaxed);
        let again = cache
            .range(&bucket, "o", size, BLOCK * 2, size)
            .await
            .unwrap();
        assert_eq!(&again[..], &data[(BLOCK * 2) as usize..]);
        assert_eq!(
            bucket.counters().gets.load(Ordering::Relaxed),
            gets,
            "cached"
        );
        assert!(cache
            .range(&bucket, "o", size, 5, 5)
            .await
            .unwrap()
            .is_empty());
        assert!(cache.object(&bucket, "missing").await.is_err());
    }
}
