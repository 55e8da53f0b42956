//! Authorization shared by the handlers: checks on the one cluster resource, and Kafka's bit
//! field of the operations a caller may perform on a resource (the `*_authorized_operations`
//! fields of Metadata, DescribeCluster and DescribeGroups).
//!
//! Metadata and DescribeCluster are answered by `metadata.rs`; the wrappers here add the
//! authorized-operations fields that clients ask for (`kafka-topics.sh --describe`,
//! `Admin.describeCluster(includeAuthorizedOperations)`).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use strata_security::acl::{Operation, ResourceType};

use crate::node::Node;
use crate::security::Caller;

/// May `cx` do `op` on the cluster?
pub fn on_cluster(b: &Node, cx: &Caller, op: Operation) -> bool {
    b.security
        .authorize(cx, op, ResourceType::Cluster, super::security::CLUSTER)
}

/// The operations Kafka reports for a resource type (its `AclEntry.supportedOperations`).
pub fn supported_operations(resource: ResourceType) -> &'static [Operation] {
    use Operation::*;
    match resource {
        ResourceType::Topic => &[
            Read,
            Write,
            Create,
            Describe,
            Delete,
            Alter,
            DescribeConfigs,
            AlterConfigs,
        ],
        ResourceType::Group => &[Read, Describe, Delete, DescribeConfigs, AlterConfigs],
        ResourceType::Cluster => &[
            Create,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
            Alter,
            Describe,
        ],
        ResourceType::TransactionalId => &[Describe, Write],
        ResourceType::DelegationToken => &[Describe],
        ResourceType::User => &[CreateTokens, DescribeTokens],
    }
}

/// Kafka's bit field of a set of operations: bit `n` is the operation whose wire code is `n`.
pub fn bit_field(ops: impl IntoIterator<Item = Operation>) -> i32 {
    ops.into_iter().fold(0, |bits, op| bits | 1 << op.code())
}

/// The bit field of the supported operations `cx` may perform on a resource (every one of
/// them without an authorizer, as in Kafka).
pub fn authorized_operations(b: &Node, cx: &Caller, resource: ResourceType, name: &str) -> i32 {
    bit_field(
        supported_operations(resource)
            .iter()
            .copied()
            .filter(|op| b.security.authorize(cx, *op, resource, name)),
    )
}

/// The cluster's field: its operations when `cx` may describe the cluster, 0 otherwise.
fn cluster_operations(b: &Node, cx: &Caller) -> i32 {
    if on_cluster(b, cx, Operation::Describe) {
        authorized_operations(b, cx, ResourceType::Cluster, super::security::CLUSTER)
    } else {
        0
    }
}

/// Answer Metadata, with the authorized operations of each listed topic (v8+) and of the
/// cluster (v8 to v10; later clients use DescribeCluster) when asked.
pub async fn metadata(
    b: &Arc<Node>,
    cx: &Caller,
    v: i16,
    req: MetadataRequest,
) -> MetadataResponse {
    let topic_ops = v >= 8 && req.include_topic_authorized_operations;
    let cluster_ops = (8..=10).contains(&v) && req.include_cluster_authorized_operations;
    let mut resp = super::metadata::handle(b, cx, v, req).await;
    if topic_ops {
        for t in &mut resp.topics {
            // Kafka leaves the schema default on topics refused to the caller and on unknown
            // topic ids; topics it looked up (found or not) get their operations.
            if t.error_code == ResponseError::TopicAuthorizationFailed.code() {
                continue;
            }
            if let Some(name) = t.name.as_ref().filter(|n| !n.0.is_empty()) {
                t.topic_authorized_operations =
                    authorized_operations(b, cx, ResourceType::Topic, name.0.as_str());
            }
        }
    }
    if cluster_ops {
        resp.cluster_authorized_operations = cluster_operations(b, cx);
    }
    resp
}

/// Answer DescribeCluster, with the cluster's authorized operations when asked.
pub fn describe_cluster(
    b: &Arc<Node>,
    cx: &Caller,
    v: i16,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let ops = req.include_cluster_authorized_operations;
    let mut resp = super::metadata::describe_cluster(b, cx, v, req);
    if ops && resp.error_code == 0 {
        resp.cluster_authorized_operations = cluster_operations(b, cx);
    }
    resp
}

#[cfg(test)]
pub(crate) mod testing {
    //! A node with the ACL authorizer, for the handlers' authorization tests.

    use std::sync::Arc;

    use bytes::{Buf, Bytes};
    use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::Decodable;
    use strata_controller::proto as pb;
    use strata_security::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};

    use crate::config::NodeConfig;
    use crate::node::Node;
    use crate::protocol::{Frame, Pending, Reply};
    use crate::security::config::AuthorizerKind;
    use crate::security::Caller;

    /// The super user of [`node`].
    pub const ADMIN: &str = "User:admin";

    /// A caller with principal `User:<name>`.
    pub fn user(name: &str) -> Caller {
        Caller {
            principal: format!("User:{name}").into(),
            ..Caller::internal()
        }
    }

    /// The super user.
    pub fn admin() -> Caller {
        user(ADMIN.trim_start_matches("User:"))
    }

    /// A literal ALLOW ACL for `User:<who>` from any host.
    pub fn allow(who: &str, op: Operation, resource: ResourceType, name: &str) -> AclBinding {
        AclBinding {
            resource_type: resource,
            resource_name: name.to_string(),
            pattern_type: PatternType::Literal,
            principal: format!("User:{who}"),
            host: "*".to_string(),
            operation: op,
            permission: Permission::Allow,
        }
    }

    /// A request frame from `cx`, for the handlers that take the frame (they read its header
    /// and caller; the body comes decoded).
    pub fn frame(cx: &Caller, key: ApiKey, v: i16) -> Frame {
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = v;
        header.correlation_id = 7;
        Frame {
            header,
            client_host: "/127.0.0.1".into(),
            caller: cx.clone(),
            api_key: key,
            body: Bytes::new(),
        }
    }

    /// The response a handler's reply carries; None when it sends none or closes.
    pub async fn answer<T: Decodable>(key: ApiKey, v: i16, pending: Pending) -> Option<T> {
        let Reply::Bytes(bytes) = pending.await else {
            return None;
        };
        let mut buf = Bytes::from(bytes.to_vec());
        buf.advance(4);
        ResponseHeader::decode(&mut buf, key.response_header_version(v)).expect("header");
        Some(T::decode(&mut buf, v).expect("response"))
    }

    /// A node in `dir` with `--authorizer acl`, `User:admin` as super user and `acls`.
    pub async fn node(dir: &std::path::Path, acls: &[AclBinding]) -> Arc<Node> {
        let mut config = NodeConfig::for_tests(dir.to_path_buf());
        config.security.authorizer = AuthorizerKind::Acl;
        config.security.super_users = vec![ADMIN.to_string()];
        let b = Node::open_and_start(config).await.expect("node starts");
        grant(&b, acls).await;
        b
    }

    /// Add ACLs through the controller (returns once this node has applied them).
    pub async fn grant(b: &Node, acls: &[AclBinding]) {
        if acls.is_empty() {
            return;
        }
        let acls = acls
            .iter()
            .map(strata_controller::service::acl_to_proto)
            .collect();
        let results = b
            .cluster
            .create_acls(pb::CreateAclsRequest { acls })
            .await
            .expect("ACLs created");
        assert!(results.iter().all(|r| r.error_code == 0), "{results:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{admin, allow, node, user};
    use super::*;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;

    #[test]
    fn bit_fields_are_kafkas() {
        // Kafka's Utils.to32BitField over AclOperation codes.
        assert_eq!(bit_field([Operation::Read]), 1 << 3);
        assert_eq!(bit_field([]), 0);
        let topic = bit_field(supported_operations(ResourceType::Topic).iter().copied());
        // READ WRITE CREATE DELETE ALTER DESCRIBE DESCRIBE_CONFIGS ALTER_CONFIGS = 3..=8, 10, 11.
        assert_eq!(topic, 0b1101_1111_1000);
        let group = bit_field(supported_operations(ResourceType::Group).iter().copied());
        assert_eq!(group, 1 << 3 | 1 << 6 | 1 << 8 | 1 << 10 | 1 << 11);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn metadata_and_describe_cluster_report_authorized_operations() {
        let dir = tempfile::tempdir().unwrap();
        let b = node(
            dir.path(),
            &[
                allow("alice", Operation::Read, ResourceType::Topic, "t"),
                allow(
                    "alice",
                    Operation::Describe,
                    ResourceType::Cluster,
                    "kafka-cluster",
                ),
            ],
        )
        .await;
        b.broker
            .create_topic("t", 1, 1, Default::default(), false)
            .await
            .unwrap();
        let mut req = MetadataRequest::default();
        let mut t = MetadataRequestTopic::default();
        t.name = Some(super::super::topic_name("t"));
        req.topics = Some(vec![t]);
        req.include_topic_authorized_operations = true;
        req.include_cluster_authorized_operations = true;
        let resp = metadata(&b, &user("alice"), 10, req.clone()).await;
        // Read implies Describe.
        assert_eq!(
            resp.topics[0].topic_authorized_operations,
            bit_field([Operation::Read, Operation::Describe])
        );
        assert_eq!(
            resp.cluster_authorized_operations,
            bit_field([Operation::Describe])
        );
        // Not asked: the schema default.
        let mut plain = req.clone();
        plain.include_topic_authorized_operations = false;
        plain.include_cluster_authorized_operations = false;
        let resp = metadata(&b, &user("alice"), 10, plain).await;
        assert_eq!(resp.topics[0].topic_authorized_operations, i32::MIN);
        assert_eq!(resp.cluster_authorized_operations, i32::MIN);
        // Bob may not describe the topic nor the cluster.
        let resp = metadata(&b, &user("bob"), 10, req.clone()).await;
        assert_eq!(
            resp.topics[0].error_code,
            ResponseError::TopicAuthorizationFailed.code()
        );
        assert_eq!(resp.topics[0].topic_authorized_operations, i32::MIN);
        assert_eq!(resp.cluster_authorized_operations, 0);
        // A super user may do everything; v11+ has no cluster field.
        let resp = metadata(&b, &admin(), 12, req).await;
        assert_eq!(
            resp.topics[0].topic_authorized_operations,
            bit_field(supported_operations(ResourceType::Topic).iter().copied())
        );
        assert_eq!(resp.cluster_authorized_operations, i32::MIN);

        let mut dc = DescribeClusterRequest::default();
        dc.include_cluster_authorized_operations = true;
        let resp = describe_cluster(&b, &user("alice"), 1, dc);
        assert_eq!(resp.error_code, 0);
        assert_eq!(
            resp.cluster_authorized_operations,
            bit_field([Operation::Describe])
        );
    }
}
