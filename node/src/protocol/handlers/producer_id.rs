//! InitProducerId for idempotent producers (transactions are not implemented).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::node::Node;

/// Hand out a fresh producer id with epoch 0.
pub async fn handle(b: &Arc<Node>, _v: i16, req: InitProducerIdRequest) -> InitProducerIdResponse {
    if req.transactional_id.is_some() {
        return build!(InitProducerIdResponse {
            error_code: ResponseError::CoordinatorNotAvailable.code(),
            producer_id: ProducerId(-1),
            producer_epoch: -1
        });
    }
    match b.broker.allocate_producer_id().await {
        Ok(id) => build!(InitProducerIdResponse {
            producer_id: ProducerId(id),
            producer_epoch: 0
        }),
        Err(e) => {
            tracing::error!(error = %e, "producer id allocation failed");
            build!(InitProducerIdResponse {
                error_code: ResponseError::KafkaStorageError.code(),
                producer_id: ProducerId(-1),
                producer_epoch: -1
            })
        }
    }
}
