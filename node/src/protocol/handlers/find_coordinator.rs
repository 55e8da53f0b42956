//! FindCoordinator: this node coordinates every group (it leads every partition of the
//! offsets topic). Transaction coordination is not implemented.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::s;
use crate::broker::Broker;

/// Answer FindCoordinator (single key before v4, batched keys from v4).
pub fn handle(b: &Arc<Broker>, v: i16, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let answer = |key_type: i8| -> (i16, Option<String>) {
        match key_type {
            0 => match b.ensure_offsets_topic() {
                Ok(_) => (0, None),
                Err(e) => (
                    ResponseError::CoordinatorNotAvailable.code(),
                    Some(e.to_string()),
                ),
            },
            1 => (
                ResponseError::CoordinatorNotAvailable.code(),
                Some("transactions are not supported".into()),
            ),
            _ => (
                ResponseError::InvalidRequest.code(),
                Some(format!("unknown key type {key_type}")),
            ),
        }
    };
    let host = s(b.config.advertised_host.clone());
    let port = b.config.advertised_port;
    let node = BrokerId(b.config.node_id);
    if v >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let (code, msg) = answer(req.key_type);
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
    let (code, msg) = answer(req.key_type);
    build!(FindCoordinatorResponse {
        error_code: code,
        error_message: msg.map(s),
        node_id: if code == 0 { node } else { BrokerId(-1) },
        host: if code == 0 { host } else { s("") },
        port: if code == 0 { port } else { -1 }
    })
}
