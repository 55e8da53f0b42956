//! Replication: partitions with a leader and followers on different nodes, driven by the
//! controller (`strata-operator`). the pure rules (ISR, high watermark) are
//! `partition::replica`; `cluster` is the node's link to the controller; `fetcher` is the follower side.

pub mod client;
pub mod cluster;
pub mod fetcher;
