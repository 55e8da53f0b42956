//! strata-node: a Kafka-compatible storage node.

pub mod alloc;
pub mod broker;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod fsutil;
pub mod log;
pub mod metadata;
pub mod node;
pub mod partition;
pub mod protocol;
pub mod replication;
pub mod security;
pub mod server;
pub mod tiering;
pub mod txn;
