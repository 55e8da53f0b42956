//! The controller's metadata image as the node holds it between watch messages: the first
//! message of a watch is whole, the ones after it (when the node asks for them) carry only
//! what changed, and [`WholeImage::merge`] folds them in; [`WholeImage::decode`] turns it into
//! the node's metadata, again only what changed. Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use strata_controller::proto as pb;

use crate::coordinator::OFFSETS_TOPIC;
use crate::metadata::{
    Assignment, ClusterView, MetadataImage, NodeAddr, TopicMeta, METADATA_VERSION,
};

/// The last whole image of a watch: every field of the last message, with the topics kept
/// by name so an increment replaces only what it names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WholeImage {
    /// The last message's fields, `topics` left empty.
    pub rest: pb::ClusterMetadata,
    /// Every topic, whole.
    pub topics: BTreeMap<String, pb::TopicInfo>,
}

impl WholeImage {
    /// The image a watch message makes from the one before it (`None` at a stream's start).
    /// An increment needs the image it was made from: one with another base (or a partial
    /// topic the base does not have with that id and size) is refused with the reason, and
    /// the caller opens a new watch, which starts whole.
    pub fn merge(prev: Option<WholeImage>, mut md: pb::ClusterMetadata) -> Result<Self, String> {
        let topics = std::mem::take(&mut md.topics);
        let removed = std::mem::take(&mut md.removed_topics);
        if !md.incremental {
            return Ok(WholeImage {
                topics: topics.into_iter().map(|t| (t.name.clone(), t)).collect(),
                rest: md,
            });
        }
        let Some(mut image) = prev else {
            return Err(format!(
                "an increment from version {} opened the watch",
                md.base_version
            ));
        };
        if image.rest.version != md.base_version {
            return Err(format!(
                "an increment from version {} follows version {}",
                md.base_version, image.rest.version
            ));
        }
        for name in removed {
            image.topics.remove(&name);
        }
        for t in topics {
            if !t.partial {
                image.topics.insert(t.name.clone(), t);
                continue;
            }
            let Some(whole) = image
                .topics
                .get_mut(&t.name)
                .filter(|w| w.topic_id == t.topic_id)
            else {
                return Err(format!("partial topic {} is not in the base image", t.name));
            };
            for p in t.partitions {
                let slot = usize::try_from(p.partition)
                    .ok()
                    .and_then(|i| whole.partitions.get_mut(i))
                    .filter(|slot| slot.partition == p.partition)
                    .ok_or_else(|| {
                        format!(
                            "partition {}-{} is not in the base image",
                            t.name, p.partition
                        )
                    })?;
                *slot = p;
            }
            whole.configs = t.configs;
            whole.internal = t.internal;
        }
        image.rest = pb::ClusterMetadata {
            incremental: false,
            base_version: 0,
            ..md
        };
        Ok(image)
    }

    /// The controller's image in the node's terms: topics, and nodes with assignments. Given
    /// the image decoded before and the topics changed since, only those topics are decoded
    /// again; the others are shared with it (nodes, credentials, ACLs and quotas are small and
    /// always decoded whole).
    pub fn decode(
        &self,
        since: Option<(&(MetadataImage, ClusterView), &BTreeSet<String>)>,
    ) -> (MetadataImage, ClusterView) {
        let whole = self;
        let md = &whole.rest;
        let mut view = ClusterView {
            version: md.version,
            cluster_id: md.cluster_id.clone(),
            controller_id: md.controller_id,
            ..Default::default()
        };
        for n in &md.nodes {
            view.nodes.insert(
                n.node_id,
                NodeAddr {
                    id: n.node_id,
                    host: n.host.clone(),
                    port: n.port,
                    rack: (!n.rack.is_empty()).then(|| n.rack.clone()),
                    alive: n.alive,
                    listeners: n
                        .listeners
                        .iter()
                        .map(|e| (e.name.clone(), (e.host.clone(), e.port)))
                        .collect(),
                },
            );
        }
        view.scram_credentials = md
            .scram_credentials
            .iter()
            .filter_map(|c| {
                strata_controller::service::scram_from_proto(c).map(|cred| (c.user.clone(), cred))
            })
            .collect();
        view.acls = md
        .acls
        .iter()
        .filter_map(|a| match strata_controller::service::acl_from_proto(a) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an ACL of the metadata this build cannot read");
                None
            }
        })
        .collect();
        view.client_quotas = std::sync::Arc::new(
        md.client_quotas
            .iter()
            .filter_map(
                |q| match strata_controller::service::client_quota_from_proto(q) {
                    Ok(entry) => Some(entry),
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring a client quota of the metadata this build cannot read");
                        None
                    }
                },
            )
            .collect(),
    );
        let mut image = MetadataImage {
            version: METADATA_VERSION,
            cluster_id: md.cluster_id.clone(),
            producer_id_block_end: 0,
            topics: BTreeMap::new(),
        };
        let decode_topic =
            |image: &mut MetadataImage, view: &mut ClusterView, t: &pb::TopicInfo| {
                let assignments = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let a = Assignment {
                            replicas: p.replicas.clone(),
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                            isr: p.isr.clone(),
                            partition_epoch: p.partition_epoch,
                        };
                        (p.partition, a)
                    })
                    .collect();
                view.assignments
                    .insert(t.name.clone(), Arc::new(assignments));
                image.topics.insert(t.name.clone(), topic_meta(t));
            };
        match since {
            Some(((prev_image, prev_view), changed)) => {
                image.topics = prev_image.topics.clone();
                view.assignments = prev_view.assignments.clone();
                for name in changed {
                    image.topics.remove(name);
                    view.assignments.remove(name);
                    if let Some(t) = whole.topics.get(name) {
                        decode_topic(&mut image, &mut view, t);
                    }
                }
            }
            None => {
                for t in whole.topics.values() {
                    decode_topic(&mut image, &mut view, t);
                }
            }
        }
        (image, view)
    }
}

/// A topic of the controller's image as the node's metadata holds it.
pub(crate) fn topic_meta(t: &pb::TopicInfo) -> TopicMeta {
    TopicMeta {
        id: uuid::Uuid::from_slice(&t.topic_id).unwrap_or_default(),
        partitions: t.partitions.len() as i32,
        replication_factor: t
            .partitions
            .first()
            .map(|p| p.replicas.len() as i16)
            .unwrap_or(0),
        configs: t
            .configs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        leader_epoch: 0,
        internal: t.internal || t.name == OFFSETS_TOPIC || t.name == crate::txn::TXN_TOPIC,
    }
}

#[cfg(test)]
mod tests;
