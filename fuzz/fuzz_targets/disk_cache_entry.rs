//! A file of the disk cache for bucket reads, as a crash or a damaged volume may leave it:
//! decode it, and through a real cache directory read it back under the name and block it
//! claims.
//!
//! Decoding must never panic; an entry it accepts must encode back to the same bytes, and
//! a cache must return exactly its data for its own name and block, and nothing for any
//! other block.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_node::tiering::disk_cache::{decode_entry, encode_entry, DiskCache};

#[global_allocator]
static ALLOC: strata_node::alloc::LazyLargeAlloc = strata_node::alloc::LazyLargeAlloc;

fuzz_target!(|data: &[u8]| {
    let Ok(e) = decode_entry(data) else {
        return;
    };
    assert_eq!(encode_entry(e.name, e.block, e.data), data);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cache = DiskCache::open(dir.path(), 1 << 30).expect("a cache");
    cache.put(e.name, e.block, e.data);
    assert_eq!(cache.get(e.name, e.block).as_deref(), Some(e.data));
    assert!(cache.get(e.name, e.block.wrapping_add(1)).is_none());
});
