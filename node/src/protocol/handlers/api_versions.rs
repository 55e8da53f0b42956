//! ApiVersions: advertise exactly what is implemented.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::{ApiVersion, SupportedFeatureKey};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use super::reply;
use crate::node::Node;
use crate::protocol::versions::SUPPORTED;
use crate::protocol::Reply;

fn api_list() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(k, lo, hi)| {
            build!(ApiVersion {
                api_key: *k as i16,
                min_version: *lo,
                max_version: *hi
            })
        })
        .collect()
}

/// The features this node supports (KIP-584), at the levels it implements:
/// `transaction.version` 0 (Kafka's transaction protocol before KIP-890's second part),
/// and `group.version` 0 (the classic group protocol only). Nothing is finalized above
/// level 0, so clients use the protocols of level 0, and `kafka-features.sh describe`
/// lists what the node supports.
fn supported_features() -> Vec<SupportedFeatureKey> {
    ["transaction.version", "group.version"]
        .into_iter()
        .map(|name| {
            build!(SupportedFeatureKey {
                name: super::s(name),
                min_version: 0,
                max_version: 0
            })
        })
        .collect()
}

/// Answer ApiVersions.
pub fn handle(_b: &Arc<Node>, _v: i16, _req: ApiVersionsRequest) -> ApiVersionsResponse {
    build!(ApiVersionsResponse {
        error_code: 0,
        api_keys: api_list(),
        supported_features: supported_features(),
        finalized_features_epoch: -1
    })
}

/// Answer an ApiVersions request of a version we do not know: v0 body, UNSUPPORTED_VERSION,
/// and our list, so the client retries with a version we speak.
pub fn unsupported(correlation_id: i32) -> Reply {
    let resp = build!(ApiVersionsResponse {
        error_code: ResponseError::UnsupportedVersion.code(),
        api_keys: api_list()
    });
    reply(ApiKey::ApiVersions, 0, correlation_id, &resp)
}
