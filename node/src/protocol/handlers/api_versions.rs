//! ApiVersions: advertise exactly what is implemented.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
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

/// Answer ApiVersions.
pub fn handle(_b: &Arc<Node>, _v: i16, _req: ApiVersionsRequest) -> ApiVersionsResponse {
    build!(ApiVersionsResponse {
        error_code: 0,
        api_keys: api_list()
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
