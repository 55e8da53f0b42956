//! The transaction coordinator's view of the node ([`TxnHost`]): the transaction topic,
//! acks=all writes to it, producer ids, and markers, appended here for partitions this
//! node leads and sent as WriteTxnMarkers to the leaders of the others. And the other
//! way round, the node asking a transaction's coordinator to add partitions for a
//! producer speaking transaction version 2 ([`Node::add_to_transaction`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TransactionalId,
    WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::Node;
use crate::error::{Error, Result};
use crate::log::txn::Marker;
use crate::partition::Partition;
use crate::replication::client::Connection;
use crate::txn::{MarkerRequest, TxnHost, TxnResult, TXN_TOPIC};

/// Connections to the other nodes, one per node, each carrying one request at a time.
#[derive(Default)]
pub struct Peers(tokio::sync::Mutex<HashMap<i32, Connection>>);

impl Peers {
    /// Call node `to` (connecting first if needed); a failed call drops the connection.
    async fn call<Req: Encodable, Resp: Decodable>(
        &self,
        node: &Node,
        to: i32,
        key: ApiKey,
        version: i16,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp> {
        let mut peers = self.0.lock().await;
        let conn = match peers.entry(to) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let view = node.cluster.view();
                let n = view
                    .nodes
                    .get(&to)
                    .ok_or_else(|| Error::Replication(format!("node {to} is unknown")))?;
                let tls = node.security.peer_tls(&n.host)?;
                let conn = Connection::connect(
                    &format!("{}:{}", n.host, n.port),
                    node.config.node_id,
                    tls,
                )
                .await?;
                slot.insert(conn)
            }
        };
        let res = tokio::time::timeout(timeout, conn.call(key, version, req))
            .await
            .unwrap_or_else(|_| {
                Err(Error::Replication(format!(
                    "{key:?} to node {to} timed out"
                )))
            });
        if res.is_err() {
            peers.remove(&to);
        }
        res
    }
}

/// The node as the transaction coordinator sees it. Weak: the coordinator belongs to the
/// node.
pub struct NodeTxnHost {
    pub(super) node: Weak<Node>,
    /// For WriteTxnMarkers.
    peers: Arc<Peers>,
}

impl NodeTxnHost {
    pub fn new(node: Weak<Node>) -> Self {
        NodeTxnHost {
            node,
            peers: Arc::new(Peers::default()),
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

async fn write_markers(node: &Arc<Node>, peers: &Peers, req: MarkerRequest) -> Vec<(String, i32)> {
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
                left.extend(parts);
            }
        }
    }
    left
}

/// WriteTxnMarkers to another node; returns the partitions it did not write.
async fn send(
    node: &Arc<Node>,
    peers: &Peers,
    leader: i32,
    req: &MarkerRequest,
    marker: Marker,
    parts: &[(String, i32)],
) -> Result<Vec<(String, i32)>> {
    let topics = by_topic(parts);
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
    let resp: WriteTxnMarkersResponse = peers
        .call(
            node,
            leader,
            ApiKey::WriteTxnMarkers,
            1,
            &request,
            Duration::from_secs(40),
        )
        .await?;
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

/// Grouped by topic, in order.
fn by_topic(parts: &[(String, i32)]) -> BTreeMap<&str, Vec<i32>> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in parts {
        topics.entry(t.as_str()).or_default().push(*p);
    }
    topics
}

impl Node {
    /// Add partitions to the open transaction of `id` for a producer speaking transaction
    /// version 2, whose produce and offset commits add them implicitly (KIP-890's second
    /// part), or with `verify_only` check that they are in it (its first part): at this
    /// node's coordinator, or as AddPartitionsToTxn v5 to the node leading the id's
    /// transaction-state partition.
    pub async fn add_to_transaction(
        self: &Arc<Self>,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
        verify_only: bool,
    ) -> TxnResult<()> {
        match self.txns.check_available(id) {
            Err(ResponseError::NotCoordinator) => {}
            _ => {
                return self
                    .txns
                    .add_partitions(id, producer_id, epoch, partitions, verify_only, 2)
                    .await
            }
        }
        let n = self
            .broker
            .topic(TXN_TOPIC)
            .map(|t| t.meta.partitions)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let p = crate::coordinator::records::partition_for(id, n);
        let leader = self
            .cluster
            .view()
            .assignment(TXN_TOPIC, p)
            .map(|a| a.leader)
            .filter(|l| *l >= 0 && *l != self.config.node_id)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let mut t = AddPartitionsToTxnTransaction::default();
        t.transactional_id = TransactionalId(crate::protocol::handlers::s(id.to_string()));
        t.producer_id = ProducerId(producer_id);
        t.producer_epoch = epoch;
        t.verify_only = verify_only;
        t.topics = by_topic(&partitions)
            .into_iter()
            .map(|(name, ps)| {
                let mut topic = AddPartitionsToTxnTopic::default();
                topic.name = crate::protocol::handlers::topic_name(name);
                topic.partitions = ps;
                topic
            })
            .collect();
        let mut req = AddPartitionsToTxnRequest::default();
        req.transactions = vec![t];
        let resp: AddPartitionsToTxnResponse = self
            .txn_adds
            .call(
                self,
                leader,
                ApiKey::AddPartitionsToTxn,
                5,
                &req,
                Duration::from_secs(10),
            )
            .await
            .map_err(|e| {
                tracing::debug!(leader, error = %e, "AddPartitionsToTxn to the coordinator failed");
                ResponseError::NetworkException
            })?;
        if resp.error_code != 0 {
            return Err(code_error(resp.error_code));
        }
        let code = resp
            .results_by_transaction
            .iter()
            .flat_map(|r| &r.topic_results)
            .flat_map(|t| &t.results_by_partition)
            .map(|p| p.partition_error_code)
            .find(|c| *c != 0)
            .unwrap_or(0);
        match code {
            0 => Ok(()),
            c => Err(code_error(c)),
        }
    }
}

fn code_error(code: i16) -> ResponseError {
    ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError)
}
