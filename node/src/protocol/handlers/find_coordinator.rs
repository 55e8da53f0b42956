//! FindCoordinator: the coordinator of a group is the leader of its `__consumer_offsets`
//! partition, that of a transactional id the leader of its `__transaction_state` partition.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use kafka_protocol::protocol::StrBytes;

use super::s;
use crate::coordinator::records::partition_for;
use crate::coordinator::OFFSETS_TOPIC;
use crate::node::Node;
use crate::security::Caller;
use crate::txn::TXN_TOPIC;
use strata_security::acl::{Operation, ResourceType};

/// Longest a FindCoordinator waits for the internal topic it had to create.
const OFFSETS_TOPIC_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Answer FindCoordinator (single key before v4, batched keys from v4). Group keys need
/// Describe on the group (GROUP_AUTHORIZATION_FAILED otherwise).
pub async fn handle(
    b: &Arc<Node>,
    cx: &Caller,
    v: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    // Groups are coordinated through the offsets topic: create it on first use. The
    // creation runs on its own task and the answer waits for it only briefly: Kafka answers
    // COORDINATOR_NOT_AVAILABLE at once while the topic is made, and a client whose request
    // hangs until its request timeout (30 s in Java) loses that whole time.
    let internal = if req.key_type == 0 {
        OFFSETS_TOPIC
    } else {
        TXN_TOPIC
    };
    let offsets_topic = if req.key_type == 0 || req.key_type == 1 {
        Some(match b.broker.topic(internal) {
            Some(t) => Ok(t),
            None => {
                let node = b.clone();
                let txn = req.key_type == 1;
                let creation = tokio::spawn(async move {
                    if txn {
                        node.broker.ensure_txn_topic().await
                    } else {
                        node.broker.ensure_offsets_topic().await
                    }
                });
                match tokio::time::timeout(OFFSETS_TOPIC_WAIT, creation).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => Err(crate::error::Error::ControllerUnavailable(format!(
                        "creating the offsets topic: {e}"
                    ))),
                    Err(_) => Err(crate::error::Error::ControllerUnavailable(
                        "the offsets topic is being created".into(),
                    )),
                }
            }
        })
    } else {
        None
    };
    let answer = |key_type: i8| -> (i16, Option<String>) {
        match key_type {
            0 | 1 => match &offsets_topic {
                Some(Ok(_)) => (0, None),
                None => (0, None),
                Some(Err(e)) => (
                    ResponseError::CoordinatorNotAvailable.code(),
                    Some(e.to_string()),
                ),
            },
            _ => (
                ResponseError::InvalidRequest.code(),
                Some(format!("unknown key type {key_type}")),
            ),
        }
    };
    // The coordinator of a group is the leader of its offsets partition.
    let locate = |key: &str| -> (i16, Option<String>, BrokerId, StrBytes, i32) {
        if req.key_type == 0
            && !b
                .security
                .authorize(cx, Operation::Describe, ResourceType::Group, key)
        {
            return (
                ResponseError::GroupAuthorizationFailed.code(),
                None,
                BrokerId(-1),
                s(""),
                -1,
            );
        }
        if req.key_type == 1
            && !b
                .security
                .authorize(cx, Operation::Describe, ResourceType::TransactionalId, key)
        {
            return (
                ResponseError::TransactionalIdAuthorizationFailed.code(),
                None,
                BrokerId(-1),
                s(""),
                -1,
            );
        }
        let (code, msg) = answer(req.key_type);
        if code != 0 {
            return (code, msg, BrokerId(-1), s(""), -1);
        }
        let view = b.cluster.view();
        let n = b
            .broker
            .topic(internal)
            .map(|t| t.meta.partitions)
            .unwrap_or(0);
        let leader = (n > 0)
            .then(|| view.assignment(internal, partition_for(key, n)))
            .flatten()
            .map(|a| a.leader)
            .and_then(|l| view.nodes.get(&l).filter(|n| n.alive))
            .and_then(|n| {
                n.endpoint(&cx.listener)
                    .map(|(h, p)| (n.id, h.to_string(), p))
            });
        match leader {
            Some((id, host, port)) => (0, None, BrokerId(id), s(host), port),
            None => (
                ResponseError::CoordinatorNotAvailable.code(),
                Some("the group's offsets partition has no leader yet".into()),
                BrokerId(-1),
                s(""),
                -1,
            ),
        }
    };
    if v >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let (code, msg, node, host, port) = locate(k.as_str());
                build!(Coordinator {
                    key: k.clone(),
                    node_id: if code == 0 { node } else { BrokerId(-1) },
                    host: if code == 0 { host.clone() } else { s("") },
                    port: if code == 0 { port } else { -1 },
                    error_code: code,
                    error_message: msg.map(s)
                })
            })
            .collect();
        return build!(FindCoordinatorResponse {
            coordinators: coordinators
        });
    }
    let (code, msg, node, host, port) = locate(req.key.as_str());
    build!(FindCoordinatorResponse {
        error_code: code,
        error_message: msg.map(s),
        node_id: if code == 0 { node } else { BrokerId(-1) },
        host: if code == 0 { host } else { s("") },
        port: if code == 0 { port } else { -1 }
    })
}
