//! Topic resources <-> the controller. The spec is the desired topic (created, grown, its
//! configs set); the status is the controller's state of it; a finalizer deletes the topic.
//! Topics made through the Kafka admin API (or auto-created) get a Topic resource, and a
//! topic deleted through Kafka loses its resource: one source of truth either way.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;
use strata_controller::core::{Image, NewTopic, TopicRecord};
use strata_controller::{ControllerHandle, Error as ControllerError};

use crate::crd::topic::{
    ClusterRef, DeletionPolicy, PartitionStatus, Topic, TopicSpec, TopicStatus,
};
use crate::k8s::conditions::{carry_transitions, condition};
use crate::k8s::metrics::OperatorMetrics;

pub const FINALIZER: &str = "strata.dev/topic";
/// Set on Topic resources the operator made for topics created through Kafka.
pub const ORIGIN_ANNOTATION: &str = "strata.dev/origin";
const OFFSETS_TOPIC: &str = "__consumer_offsets";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("controller refused {op} of {topic}: {source}")]
    Refused {
        op: &'static str,
        topic: String,
        #[source]
        source: ControllerError,
    },
    #[error("controller unavailable: {0}")]
    Unavailable(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// What the reconciler works with.
pub struct Ctx {
    pub api: Api<Topic>,
    pub controller: ControllerHandle,
    pub metrics: Arc<OperatorMetrics>,
    /// The Cluster resource new Topic resources (made for Kafka-created topics) point to.
    pub default_cluster: String,
}

/// The status a Topic should show, from the controller's view of its topic (None: not
/// created yet, with `pending` saying why).
pub fn status_for(t: &Topic, info: Option<&TopicRecord>, pending: Option<String>) -> TopicStatus {
    let generation = t.metadata.generation;
    let Some(info) = info else {
        let refused = pending.is_some();
        let why = pending.unwrap_or_else(|| "creating the topic".into());
        return TopicStatus {
            observed_generation: generation,
            conditions: vec![
                condition("Ready", false, "NotCreated", why.clone(), generation),
                condition("Progressing", true, "Creating", why.clone(), generation),
                condition("Degraded", refused, "CreateRefused", why, generation),
            ],
            ..Default::default()
        };
    };
    let parts: Vec<PartitionStatus> = info
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| PartitionStatus {
            partition: i as i32,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
        })
        .collect();
    let leaderless = parts.iter().filter(|p| p.leader < 0).count();
    let under = parts
        .iter()
        .filter(|p| p.isr.len() < p.replicas.len())
        .count();
    let growing = (info.partitions.len() as i32) < t.spec.partitions;
    let configs = info.configs.clone();
    let config_pending = configs != t.spec.config;
    let ready = leaderless == 0 && !growing;
    let progressing = growing || config_pending || pending.is_some();
    let ready_msg = if ready {
        format!("{} partitions, all with a leader", parts.len())
    } else if growing {
        format!("{} of {} partitions exist", parts.len(), t.spec.partitions)
    } else {
        format!("{leaderless} partitions have no leader")
    };
    let degraded_msg = match (&pending, under, leaderless) {
        (Some(p), _, _) => p.clone(),
        (None, 0, 0) => "every partition is fully replicated".into(),
        (None, u, l) => format!("{u} under-replicated partitions, {l} without a leader"),
    };
    TopicStatus {
        observed_generation: generation,
        conditions: vec![
            condition(
                "Ready",
                ready,
                if ready { "Ready" } else { "NotReady" },
                ready_msg,
                generation,
            ),
            condition(
                "Progressing",
                progressing,
                if progressing {
                    "Reconciling"
                } else {
                    "Reconciled"
                },
                if progressing {
                    "applying the spec".into()
                } else {
                    "the topic matches its spec".into()
                },
                generation,
            ),
            condition(
                "Degraded",
                pending.is_some() || under > 0 || leaderless > 0,
                if pending.is_some() {
                    "Refused"
                } else if under > 0 || leaderless > 0 {
                    "UnderReplicated"
                } else {
                    "Healthy"
                },
                degraded_msg,
                generation,
            ),
        ],
        partitions: Some(info.partitions.len() as i32),
        replication_factor: info.partitions.first().map(|p| p.replicas.len() as i32),
        topic_id: Some(info.topic_id.to_string()),
        partition_status: parts,
        under_replicated_partitions: Some(under as i32),
        effective_config: configs,
        local_bytes: None,
        remote_bytes: None,
    }
}

/// The explicit mapping of the controller's errors at this boundary: a failure to make the
/// change durable is retried; anything else is the controller's answer to the request, the
/// user's to fix.
fn controller_error(op: &'static str, topic: &str, e: ControllerError) -> ReconcileError {
    match e {
        ControllerError::StoreIo { .. } | ControllerError::StoreConflict { .. } => {
            ReconcileError::Unavailable(e.to_string())
        }
        refusal => ReconcileError::Refused {
            op,
            topic: topic.to_string(),
            source: refusal,
        },
    }
}

/// Bring the controller's topic to the spec; returns the refusal to show, if any.
async fn apply_spec(t: &Topic, ctx: &Ctx) -> Result<Option<String>, ReconcileError> {
    let name = t.kafka_name().unwrap_or_default().to_string();
    let md = ctx.controller.image();
    let res: Result<(), ReconcileError> = async {
        match md.topics.get(&name) {
            None => {
                let topic = NewTopic {
                    name: name.clone(),
                    partitions: t.spec.partitions,
                    replication_factor: t.spec.replication_factor.unwrap_or(-1),
                    configs: t.spec.config.clone(),
                    assignments: vec![],
                    ..Default::default()
                };
                ctx.controller
                    .create_topic(topic)
                    .await
                    .map_err(|e| controller_error("creation", &name, e))?;
                tracing::info!(topic = %name, partitions = t.spec.partitions, "created topic from its resource");
            }
            Some(info) => {
                if (info.partitions.len() as i32) < t.spec.partitions {
                    ctx.controller
                        .grow_topic(&name, t.spec.partitions)
                        .await
                        .map_err(|e| controller_error("partition increase", &name, e))?;
                    tracing::info!(topic = %name, from = info.partitions.len(), to = t.spec.partitions, "added partitions");
                }
                if info.configs != t.spec.config {
                    ctx.controller
                        .alter_topic_configs(&name, t.spec.config.clone(), false)
                        .await
                        .map_err(|e| controller_error("config change", &name, e))?;
                    tracing::info!(topic = %name, "topic configs set from the resource");
                }
            }
        }
        Ok(())
    }
    .await;
    match res {
        Ok(()) => Ok(None),
        // A refusal is the user's to fix: show it in the status, do not hammer the controller.
        Err(ReconcileError::Refused { op, source, .. }) => {
            Ok(Some(format!("{op} refused: {source}")))
        }
        Err(e) => Err(e),
    }
}

async fn write_status(t: &Topic, ctx: &Ctx, pending: Option<String>) -> Result<(), ReconcileError> {
    let name = t.kafka_name().unwrap_or_default().to_string();
    let md = ctx.controller.image();
    let mut status = status_for(t, md.topics.get(&name).map(|t| &**t), pending);
    if status.topic_id.is_some() {
        let sizes = ctx.controller.topic_sizes();
        let (local, remote) = sizes.get(&name).copied().unwrap_or((0, 0));
        status.local_bytes = Some(local);
        status.remote_bytes = Some(remote);
    }
    if let Some(old) = &t.status {
        carry_transitions(&old.conditions, &mut status.conditions);
        if *old == status {
            return Ok(());
        }
    }
    let patch = serde_json::json!({ "status": status });
    ctx.api
        .patch_status(
            &t.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

async fn apply(t: Arc<Topic>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    if deleted_through_kafka(&t, &ctx.controller.image()) {
        // The resource sync deletes this resource. Creating the topic again, or writing a
        // status without its id (after which it would be created), would undo the user's
        // delete whenever this reconcile ran before the sync.
        tracing::info!(
            topic = t.kafka_name().unwrap_or_default(),
            "topic deleted through Kafka; leaving its resource to the sync"
        );
        return Ok(Action::await_change());
    }
    let pending = apply_spec(&t, &ctx).await?;
    write_status(&t, &ctx, pending.clone()).await?;
    // Sizes move without metadata changes: refresh the status every few seconds.
    Ok(Action::requeue(Duration::from_secs(5)))
}

async fn cleanup(t: Arc<Topic>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let name = t.kafka_name().unwrap_or_default().to_string();
    let md = ctx.controller.image();
    if let Some(info) = md.topics.get(&name) {
        if t.spec.deletion_policy == DeletionPolicy::Retain
            && info
                .configs
                .get(strata_controller::RETAIN_REMOTE_DATA_CONFIG)
                .map(String::as_str)
                != Some("true")
        {
            // Tell the nodes to keep the tiered data before the topic goes.
            let mut configs = info.configs.clone();
            configs.insert(
                strata_controller::RETAIN_REMOTE_DATA_CONFIG.into(),
                "true".into(),
            );
            ctx.controller
                .alter_topic_configs(&name, configs, false)
                .await
                .map_err(|e| controller_error("retain marking", &name, e))?;
        }
        match ctx.controller.delete_topic(&name).await {
            // Already gone is fine: the resource may go.
            Ok(_) | Err(ControllerError::UnknownTopicOrPartition { .. }) => {}
            Err(e) => return Err(controller_error("deletion", &name, e)),
        }
        tracing::info!(topic = %name, policy = ?t.spec.deletion_policy, "deleted topic with its resource");
    }
    Ok(Action::await_change())
}

async fn reconcile(t: Arc<Topic>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let res = finalizer(&ctx.api, FINALIZER, t, |ev| async {
        match ev {
            Event::Apply(t) => apply(t, ctx.clone()).await,
            Event::Cleanup(t) => cleanup(t, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(e.to_string()));
    ctx.metrics
        .observe_reconcile("topic", started.elapsed(), res.is_ok());
    res
}

fn error_policy(t: Arc<Topic>, e: &ReconcileError, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(topic = %t.name_any(), error = %e, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// A DNS-1123 name for a Topic resource of Kafka topic `name` (Kafka allows `_`, `.` and
/// upper case; resource names do not), and whether `spec.topicName` must carry the real one.
pub fn resource_name(name: &str) -> (String, bool) {
    let mut out: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '.' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    out = out.trim_matches(|c| c == '-' || c == '.').to_string();
    if out.is_empty() {
        out = "topic".into();
    }
    if out.len() > 253 {
        out.truncate(253);
    }
    let differs = out != name;
    (out, differs)
}

/// The resource's topic existed (its status has an id) and is gone from the image.
fn deleted_through_kafka(t: &Topic, md: &Image) -> bool {
    let had_id = t.status.as_ref().is_some_and(|s| s.topic_id.is_some());
    let gone = t.kafka_name().is_some_and(|n| !md.topics.contains_key(n));
    had_id && gone && t.metadata.deletion_timestamp.is_none()
}

/// Keep resources and Kafka topics in step after every metadata change: a topic without a
/// resource gets one, a resource whose topic was deleted through Kafka goes.
///
/// Only a change of the set of topic names can call for that, so the resources are listed
/// again only then: an ISR change in a cluster of thousands of topics costs no API call here.
async fn sync_resources(ctx: Arc<Ctx>) {
    let mut rx = ctx.controller.subscribe();
    // The topic names of the image the last successful sync used.
    let mut synced: Option<Vec<String>> = None;
    loop {
        let same = synced
            .as_ref()
            .is_some_and(|names| rx.borrow().topics.keys().eq(names.iter()));
        if !same {
            match sync_once(&ctx, &mut rx).await {
                Ok(names) => synced = Some(names),
                Err(e) => {
                    tracing::warn!(error = %e, "syncing Topic resources with the controller failed; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Returns the topic names of the image it synced with.
async fn sync_once(
    ctx: &Ctx,
    images: &mut tokio::sync::watch::Receiver<Arc<Image>>,
) -> Result<Vec<String>, kube::Error> {
    let resources = ctx.api.list(&Default::default()).await?;
    // The image is read after the list, never before: a Topic resource's finalizer deletes
    // the Kafka topic before it lets the resource go, so a resource missing from the list has
    // its topic missing from any image taken after it. An image from before the list could
    // still hold the topic, and the resource would be made again for a topic being deleted.
    let md = images.borrow_and_update().clone();
    let md = md.as_ref();
    let by_kafka: BTreeMap<String, &Topic> = resources
        .items
        .iter()
        .filter_map(|t| t.kafka_name().map(|n| (n.to_string(), t)))
        .collect();
    for (kafka_name, info) in &md.topics {
        if info.internal || kafka_name == OFFSETS_TOPIC || by_kafka.contains_key(kafka_name) {
            continue;
        }
        let (rname, differs) = resource_name(kafka_name);
        let spec = TopicSpec {
            partitions: info.partitions.len() as i32,
            replication_factor: info.partitions.first().map(|p| p.replicas.len() as i32),
            config: info.configs.clone(),
            cluster_ref: ClusterRef {
                name: ctx.default_cluster.clone(),
            },
            deletion_policy: Default::default(),
            topic_name: differs.then(|| kafka_name.clone()),
        };
        let t = Topic {
            metadata: ObjectMeta {
                name: Some(rname.clone()),
                annotations: Some(BTreeMap::from([(
                    ORIGIN_ANNOTATION.to_string(),
                    "kafka".to_string(),
                )])),
                ..Default::default()
            },
            spec,
            status: None,
        };
        match ctx.api.create(&PostParams::default(), &t).await {
            Ok(_) => {
                tracing::info!(topic = %kafka_name, resource = %rname, "made a Topic resource for a topic created through Kafka")
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    // Deleted through Kafka: the resource had a topic id, the topic is gone. (A resource
    // still being created has no id yet and is left alone.)
    for t in &resources.items {
        let Some(name) = t.kafka_name() else { continue };
        let had_id = t.status.as_ref().and_then(|s| s.topic_id.as_ref());
        let same_id = md.topics.get(name).map(|i| i.topic_id.to_string());
        if deleted_through_kafka(t, md) {
            tracing::info!(topic = %name, "topic deleted through Kafka; deleting its resource");
            match ctx.api.delete(&t.name_any(), &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        } else if had_id.is_some() && same_id.is_some() && had_id != same_id.as_ref() {
            tracing::warn!(topic = %name, "the topic was recreated through Kafka with a new id; its resource now describes the new one");
        }
    }
    Ok(md.topics.keys().cloned().collect())
}

/// Kafka names of the topics whose record differs between two images: added, changed or
/// removed. Topics unchanged since `prev` are shared with it, so this costs a pointer
/// comparison per topic.
pub fn changed_topics(prev: &Image, next: &Image) -> HashSet<String> {
    let removed = prev.topics.keys().filter(|n| !next.topics.contains_key(*n));
    let changed = next
        .topics
        .iter()
        .filter(|(n, t)| prev.topics.get(*n) != Some(*t))
        .map(|(n, _)| n);
    removed.chain(changed).cloned().collect()
}

/// Run the Topic controller and the resource sync until the process stops.
pub async fn run(ctx: Arc<Ctx>) {
    tokio::spawn(sync_resources(ctx.clone()));
    // A metadata change re-reconciles the Topics whose topic it changed (leaders, ISR and
    // new partitions show in their statuses at once), and only those: a status depends on
    // nothing else of the image.
    let controller = Controller::new(ctx.api.clone(), watcher::Config::default());
    let store = controller.store();
    let rx = ctx.controller.subscribe();
    let first = rx.borrow().clone();
    let trigger = futures::stream::unfold((rx, first), |(mut rx, prev)| async move {
        rx.changed().await.ok()?;
        let next = rx.borrow_and_update().clone();
        let names = changed_topics(&prev, &next);
        Some((names, (rx, next)))
    })
    .flat_map(move |names| {
        let refs: Vec<ObjectRef<Topic>> = store
            .state()
            .iter()
            .filter(|t| t.kafka_name().is_some_and(|n| names.contains(n)))
            .map(|t| ObjectRef::from_obj(&**t))
            .collect();
        futures::stream::iter(refs)
    });
    controller
        .reconcile_on(trigger)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_controller::core::PartitionRecord;

    fn image(topics: &[(&str, Arc<TopicRecord>)]) -> Image {
        Image {
            version: 1,
            cluster_id: "c".into(),
            controller_id: 0,
            nodes: Default::default(),
            topics: topics
                .iter()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect(),
            scram_credentials: Default::default(),
            acls: Default::default(),
            client_quotas: Default::default(),
        }
    }

    fn topic(leader: i32) -> Arc<TopicRecord> {
        Arc::new(TopicRecord {
            topic_id: uuid::Uuid::from_u128(1),
            configs: Default::default(),
            internal: false,
            partitions: vec![PartitionRecord {
                replicas: vec![1, 2],
                leader,
                leader_epoch: 0,
                isr: vec![1, 2],
                partition_epoch: 0,
                target_replicas: None,
                original_replicas: None,
            }],
        })
    }

    #[test]
    fn only_changed_added_and_removed_topics_are_reconciled() {
        let kept = topic(1);
        let prev = image(&[
            ("kept", kept.clone()),
            ("moved", topic(1)),
            ("gone", topic(1)),
        ]);
        let next = image(&[("kept", kept), ("moved", topic(2)), ("new", topic(1))]);
        let mut names: Vec<String> = changed_topics(&prev, &next).into_iter().collect();
        names.sort();
        assert_eq!(names, vec!["gone", "moved", "new"]);
        assert!(changed_topics(&next, &next).is_empty());
    }
}
