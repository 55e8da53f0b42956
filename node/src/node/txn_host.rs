//! The transaction coordinator's view of the node ([`TxnHost`]): the transaction topic,
//! acks=all writes to it, producer ids, and markers, appended here for partitions this
//! node leads and sent as WriteTxnMarkers to the leaders of the others.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, ProducerId, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};

use super::Node;
use crate::error::{Error, Result};
use crate::log::txn::Marker;
use crate::partition::Partition;
use crate::replication::client::Connection;
use crate::txn::{MarkerRequest, TxnHost, TXN_TOPIC};

/// The node as the transaction coordinator sees it. Weak: the coordinator belongs to the
/// node.
pub struct NodeTxnHost {
    pub(super) node: Weak<Node>,
    /// One connection per other node, for WriteTxnMarkers (one request at a time each).
    peers: Arc<tokio::sync::Mutex<HashMap<i32, Connection>>>,
}

impl NodeTxnHost {
    pub fn new(node: Weak<Node>) -> Self {
        NodeTxnHost {
            node,
            peers: Arc::new(tokio::sync::Mutex::new(HashMap::new())),
        }
    }

    fn node(&self) -> Result<Arc<Node>> {
        self.node
            .upgrade()
            .ok_or_else(|| Error::StorageFailed("the node is stopping".into()))
    }
}

/// Whether a marker's failure means it will never be needed (the partition is gone).
fn gone(e: &Error) -> bool {
    matches!(e, Error::UnknownTopicOrPartition(_))
}

impl TxnHost for NodeTxnHost {
    fn txn_partitions(&self) -> Option<i32> {
        let node = self.node.upgrade()?;
        node.broker.topic(TXN_TOPIC).map(|t| t.meta.partitions)
    }

    fn ensure_txn_topic(&self) -> Result<i32> {
        let node = self.node()?;
        if let Some(t) = node.broker.topic(TXN_TOPIC) {
            return Ok(t.meta.partitions);
        }
        node.broker.request_txn_topic();
        Err(Error::ControllerUnavailable(
            "the transaction topic is being created".into(),
        ))
    }

    fn partition(&self, topic: &str, p: i32) -> Option<Arc<Partition>> {
        self.node.upgrade()?.broker.partition(topic, p)
    }

    fn replicated(&self) -> bool {
        true
    }

    fn write(&self, part: Arc<Partition>, batch: Bytes) -> BoxFuture<'static, Result<()>> {
        let node = self.node();
        Box::pin(async move {
            let node = node?;
            let (info, _) = node.broker.append(&part, batch)?;
            node.broker
                .complete_write(&part, info.last_offset, -1, Duration::from_secs(10))
                .await
        })
    }

    fn allocate_producer_id(&self) -> BoxFuture<'static, Result<i64>> {
        let node = self.node();
        Box::pin(async move { node?.broker.allocate_producer_id().await })
    }

    fn write_markers(&self, req: MarkerRequest) -> BoxFuture<'static, Vec<(String, i32)>> {
        let node = self.node.upgrade();
        let peers = self.peers.clone();
        Box::pin(async move {
            let Some(node) = node else {
                return req.partitions;
            };
            write_markers(&node, &peers, req).await
        })
    }
}

async fn write_markers(
    node: &Arc<Node>,
    peers: &tokio::sync::Mutex<HashMap<i32, Connection>>,
    req: MarkerRequest,
) -> Vec<(String, i32)> {
    let marker = if req.commit {
        Marker::Commit
    } else {
        Marker::Abort
    };
    let view = node.cluster.view();
    let me = node.config.node_id;
    let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
    let mut left = Vec::new();
    for (t, p) in req.partitions.clone() {
        match view.assignment(&t, p) {
            Some(a) if a.leader >= 0 => by_leader.entry(a.leader).or_default().push((t, p)),
            // No such partition any more: nothing to end there.
            None if node.broker.topic(&t).is_none() => {}
            _ => left.push((t, p)),
        }
    }
    for (leader, parts) in by_leader {
        if leader == me {
            for (t, p) in parts {
                let r = crate::protocol::handlers::txn::write_marker(
                    node,
                    &t,
                    p,
                    marker,
                    req.producer_id,
                    req.producer_epoch,
                    req.coordinator_epoch,
                )
                .await;
                match r {
                    Ok(()) => {}
                    Err(e) if gone(&e) => {}
                    Err(e) => {
                        tracing::debug!(topic = %t, partition = p, error = %e, "marker not written yet");
                        left.push((t, p));
                    }
                }
            }
            continue;
        }
        let sent = send(node, peers, leader, &req, marker, &parts).await;
        match sent {
            Ok(failed) => left.extend(failed),
            Err(e) => {
                tracing::debug!(leader, error = %e, "markers not sent yet");
                peers.lock().await.remove(&leader);
                left.extend(parts);
            }
        }
    }
    left
}

/// WriteTxnMarkers to another node; returns the partitions it did not write.
async fn send(
    node: &Arc<Node>,
    peers: &tokio::sync::Mutex<HashMap<i32, Connection>>,
    leader: i32,
    req: &MarkerRequest,
    marker: Marker,
    parts: &[(String, i32)],
) -> Result<Vec<(String, i32)>> {
    let mut peers = peers.lock().await;
    let conn = match peers.entry(leader) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(slot) => {
            let view = node.cluster.view();
            let n = view
                .nodes
                .get(&leader)
                .ok_or_else(|| Error::Replication(format!("node {leader} is unknown")))?;
            let tls = node.security.peer_tls(&n.host)?;
            let conn =
                Connection::connect(&format!("{}:{}", n.host, n.port), node.config.node_id, tls)
                    .await?;
            slot.insert(conn)
        }
    };
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in parts {
        topics.entry(t.as_str()).or_default().push(*p);
    }
    let mut m = WritableTxnMarker::default();
    m.producer_id = ProducerId(req.producer_id);
    m.producer_epoch = req.producer_epoch;
    m.transaction_result = marker == Marker::Commit;
    m.coordinator_epoch = req.coordinator_epoch;
    m.topics = topics
        .into_iter()
        .map(|(t, ps)| {
            let mut topic = WritableTxnMarkerTopic::default();
            topic.name = crate::protocol::handlers::topic_name(t);
            topic.partition_indexes = ps;
            topic
        })
        .collect();
    let mut request = WriteTxnMarkersRequest::default();
    request.markers = vec![m];
    let resp: WriteTxnMarkersResponse = tokio::time::timeout(
        Duration::from_secs(40),
        conn.call(ApiKey::WriteTxnMarkers, 1, &request),
    )
    .await
    .map_err(|_| Error::Replication(format!("WriteTxnMarkers to node {leader} timed out")))??;
    let mut failed = Vec::new();
    for m in resp.markers {
        for t in m.topics {
            for p in t.partitions {
                let code = p.error_code;
                if code != 0 && code != ResponseError::UnknownTopicOrPartition.code() {
                    failed.push((t.name.0.to_string(), p.partition_index));
                }
            }
        }
    }
    Ok(failed)
}
