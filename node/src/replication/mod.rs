//! Replication: partitions with a leader and followers on different nodes, driven by the
//! controller (`strata-operator`). `cluster` is the node's link to the controller (the only
//! place that speaks its gRPC contract); `roles` takes up a partition's role from an
//! assignment; `fetcher` is the follower side and the leader's ISR upkeep; `client` is the
//! Kafka client followers fetch with. The pure rules (ISR, high watermark) live in
//! `partition::replica`. Calls `partition`, `metadata` and `log`; never the broker.

pub mod client;
pub mod cluster;
pub mod fetcher;
pub mod image;
pub mod roles;
pub mod rpc;
