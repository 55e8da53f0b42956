//! A standalone node is a cluster of one. It runs the controller (`strata-controller`'s
//! core and service) in process, with its state in a file under `meta/controller`, and talks
//! to it exactly as a clustered node talks to `strata-operator`: one implementation of
//! topics, placement, producer ids and topic rules for both.
//!
//! The first start over a data directory written before this (topics in
//! `meta/metadata.json`) imports it: topic ids, partition counts, config overrides, leader
//! epochs, the producer-id block and the cluster id carry over, so every partition directory
//! is found again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use strata_controller::core::{
    Config as CoreConfig, PartitionRecord, State, TopicRecord, FORMAT_VERSION,
};
use strata_controller::handle::ServiceConfig;
use strata_controller::service::ControllerService;
use strata_controller::store::{FileStore, MetadataStore as _};

use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::metadata::MetadataImage;

/// The embedded controller's settings: a single node's defaults (every replication factor
/// is 1), the node's partition defaults, and no timers (the only node is this process).
fn service_config(config: &NodeConfig) -> ServiceConfig {
    ServiceConfig {
        core: CoreConfig {
            default_replication_factor: 1,
            num_partitions: config.num_partitions,
            offsets_topic_replication_factor: 1,
            offsets_topic_num_partitions: config.offsets_topic_partitions,
            ..CoreConfig::default()
        },
        heartbeat_interval_ms: 1000,
        leader_balance_interval: None,
    }
}

fn controller_error(what: &str, e: strata_controller::Error) -> Error {
    Error::ControllerUnavailable(format!("embedded controller: {what}: {e}"))
}

/// Open (or create) the node's embedded controller under `data_dir/meta/controller`. The
/// caller holds the data directory's lock.
pub async fn open(config: &NodeConfig) -> Result<ControllerService> {
    let dir = config.data_dir.join("meta").join("controller");
    let store = FileStore::open(&dir).map_err(|e| controller_error("open", e))?;
    if store
        .load()
        .await
        .map_err(|e| controller_error("load", e))?
        .is_none()
    {
        if let Some(state) = import(&config.data_dir, config.node_id)? {
            tracing::info!(
                topics = state.topics.len(),
                cluster_id = %state.cluster_id,
                "imported the standalone metadata of an earlier version into the embedded controller"
            );
            store
                .replace(&state)
                .await
                .map_err(|e| controller_error("save", e))?;
        }
    }
    ControllerService::start(service_config(config), Arc::new(store))
        .await
        .map_err(|e| controller_error("start", e))
}

/// The controller state equivalent to an earlier version's `meta/metadata.json`, if there
/// is one: every partition on this node, led by it, in its last leader epoch.
fn import(data_dir: &Path, me: i32) -> Result<Option<State>> {
    let path = data_dir.join("meta").join("metadata.json");
    if !path.exists() {
        return Ok(None);
    }
    let old: MetadataImage = crate::metadata::MetadataStore::new(data_dir)?.load()?;
    Ok(Some(state_from(&old, me)))
}

fn state_from(old: &MetadataImage, me: i32) -> State {
    let topics: BTreeMap<String, Arc<TopicRecord>> = old
        .topics
        .iter()
        .map(|(name, t)| {
            let partitions = (0..t.partitions)
                .map(|_| PartitionRecord {
                    replicas: vec![me],
                    leader: me,
                    leader_epoch: t.leader_epoch,
                    isr: vec![me],
                    partition_epoch: 0,
                    target_replicas: None,
                    original_replicas: None,
                })
                .collect();
            (
                name.clone(),
                Arc::new(TopicRecord {
                    topic_id: t.id,
                    configs: t.configs.clone(),
                    internal: t.internal,
                    partitions,
                }),
            )
        })
        .collect();
    State {
        format_version: FORMAT_VERSION,
        cluster_id: old.cluster_id.clone(),
        version: 1,
        next_broker_epoch: 1,
        producer_id_block_end: old.producer_id_block_end,
        nodes: BTreeMap::new(),
        topics,
        excluded_nodes: Default::default(),
        balanced_for: Default::default(),
        scram_credentials: Default::default(),
        acls: Default::default(),
        client_quotas: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::TopicMeta;

    #[test]
    fn an_earlier_standalone_image_keeps_ids_epochs_and_producer_ids() {
        let id = uuid::Uuid::new_v4();
        let mut old = MetadataImage {
            version: 1,
            cluster_id: "abc".into(),
            producer_id_block_end: 3000,
            topics: BTreeMap::new(),
        };
        old.topics.insert(
            "t".into(),
            TopicMeta {
                id,
                partitions: 3,
                replication_factor: 1,
                configs: [("retention.ms".to_string(), "5".to_string())].into(),
                leader_epoch: 2,
                internal: false,
            },
        );
        let s = state_from(&old, 7);
        assert_eq!(s.cluster_id, "abc");
        assert_eq!(s.producer_id_block_end, 3000);
        let t = &s.topics["t"];
        assert_eq!(t.topic_id, id);
        assert_eq!(t.configs["retention.ms"], "5");
        assert_eq!(t.partitions.len(), 3);
        assert!(t
            .partitions
            .iter()
            .all(|p| p.replicas == vec![7] && p.leader == 7 && p.leader_epoch == 2));
    }
}
