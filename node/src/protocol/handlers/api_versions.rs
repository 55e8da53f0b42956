//! ApiVersions: advertise exactly what is implemented.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
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
/// `transaction.version` up to 2 (KIP-890's second part), and `group.version` 0 (the
/// classic group protocol only). `kafka-features.sh describe` lists them.
fn supported_features() -> Vec<SupportedFeatureKey> {
    [("transaction.version", 2), ("group.version", 0)]
        .into_iter()
        .map(|(name, max)| {
            build!(SupportedFeatureKey {
                name: super::s(name),
                min_version: 0,
                max_version: max
            })
        })
        .collect()
}

/// The finalized levels (`--transaction-version`); a level of 0 is not listed, as Kafka
/// leaves it out. Clients pick their transaction protocol from it: Java 4.x producers use
/// version 2 once it is finalized at 2.
fn finalized_features(transaction_version: i16) -> Vec<FinalizedFeatureKey> {
    (transaction_version > 0)
        .then(|| {
            build!(FinalizedFeatureKey {
                name: super::s("transaction.version"),
                min_version_level: transaction_version,
                max_version_level: transaction_version
            })
        })
        .into_iter()
        .collect()
}

/// The epoch of the finalized features: clients keep the answer with the highest one.
/// Levels change only with a restart, and the start time grows from one to the next.
fn finalized_features_epoch() -> i64 {
    static STARTED_MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *STARTED_MS.get_or_init(crate::fsutil::now_ms)
}

/// Answer ApiVersions.
pub fn handle(b: &Arc<Node>, _v: i16, _req: ApiVersionsRequest) -> ApiVersionsResponse {
    build!(ApiVersionsResponse {
        error_code: 0,
        api_keys: api_list(),
        supported_features: supported_features(),
        finalized_features_epoch: finalized_features_epoch(),
        finalized_features: finalized_features(b.config.transaction_version)
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
