//! The durable segmented log: batches stored as received, indexes, retention, compaction.
//! A leaf: it calls nothing of the node but `error` and `fsutil`. Tiering bounds local
//! retention through the log's own retention cap (`set_remote_upto`).

pub mod batch;
pub mod compaction;
pub mod config;
pub mod files;
pub mod index;
pub mod partition;
pub mod producer_state;
pub mod records;
pub mod retention;
pub mod segment;
pub mod txn;

pub use config::LogConfig;
pub use partition::{AppendInfo, PartitionLog, ReadPlan};
