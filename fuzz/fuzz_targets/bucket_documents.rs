//! The JSON documents a bucket holds for each partition and topic, as another writer, a
//! damaged object or a newer build may leave them: a partition's manifest (first byte even)
//! or a topic's catalog entry (first byte odd), through the parsers a node runs at start-up,
//! on a follower's rebuild and in a whole-cluster restore.
//!
//! Parsing must never panic; a document it accepts must encode to one that parses back
//! equal, and the views a restore takes of it (epoch history, first restored epoch,
//! retired producer state) must be computable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_node::tiering::catalog::{first_epoch, TopicDescriptor};
use strata_node::tiering::manifest::Manifest;

#[global_allocator]
static ALLOC: strata_node::alloc::LazyLargeAlloc = strata_node::alloc::LazyLargeAlloc;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, doc)) = data.split_first() else {
        return;
    };
    if kind % 2 == 0 {
        let Ok(m) = Manifest::parse("fuzz/manifest.json", doc) else {
            return;
        };
        let again = Manifest::parse("fuzz/manifest.json", &m.to_bytes()).expect("re-parse");
        assert_eq!(again, m);
        let history = m.epoch_history();
        let _ = first_epoch(m.leader_epoch, &history);
        let _ = m.retired_producers();
    } else {
        let Ok(d) = TopicDescriptor::parse("fuzz/topic.json", doc) else {
            return;
        };
        let again = TopicDescriptor::parse("fuzz/topic.json", &d.to_bytes()).expect("re-parse");
        assert_eq!(again, d);
    }
});
