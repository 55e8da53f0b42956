//! The table of partitions hosted here, and the signal long-polling fetches wait on.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::Partition;

/// Every partition this node hosts, by (topic, index).
pub struct PartitionTable {
    parts: RwLock<HashMap<(String, i32), Arc<Partition>>>,
    /// Bumped after every append, high watermark move or role change that a long-polling
    /// fetch may be waiting for.
    appended: tokio::sync::watch::Sender<u64>,
}

impl Default for PartitionTable {
    fn default() -> Self {
        let (appended, _) = tokio::sync::watch::channel(0);
        PartitionTable {
            parts: RwLock::new(HashMap::new()),
            appended,
        }
    }
}

impl PartitionTable {
    /// The partition, if hosted here.
    pub fn get(&self, topic: &str, p: i32) -> Option<Arc<Partition>> {
        self.parts.read().get(&(topic.to_string(), p)).cloned()
    }

    /// Every hosted partition.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.parts.read().values().cloned().collect()
    }

    /// Host `part`, replacing whatever was hosted under its name.
    pub fn insert(&self, part: Arc<Partition>) {
        self.parts
            .write()
            .insert((part.topic.clone(), part.index), part);
    }

    /// Stop hosting `part` (if it is still the one hosted under its name).
    pub fn remove(&self, part: &Arc<Partition>) {
        let mut parts = self.parts.write();
        let key = (part.topic.clone(), part.index);
        if parts.get(&key).is_some_and(|p| Arc::ptr_eq(p, part)) {
            parts.remove(&key);
        }
    }

    /// Stop hosting the partitions `0..count` of `topic`.
    pub fn remove_topic(&self, topic: &str, count: i32) {
        let mut parts = self.parts.write();
        for p in 0..count {
            parts.remove(&(topic.to_string(), p));
        }
    }

    /// Wake long-polling fetches (new data, a moved high watermark, a role change, shutdown).
    pub fn notify_appended(&self) {
        self.appended.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Subscribe to append notifications.
    pub fn subscribe_appends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
    }
}
