//! DescribeLogDirs (`kafka-log-dirs.sh --describe`): the node's one log directory (its data
//! directory) with every partition hosted here, and from v4 the volume's total and usable
//! bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::*;

use kafka_protocol::error::ResponseError;
use strata_security::acl::Operation;

use super::{s, topic_name};
use crate::node::Node;
use crate::security::Caller;

/// Answer DescribeLogDirs. `topics` null means every partition; otherwise only the named
/// partitions that live here are listed, as Kafka does. A caller that may not describe the
/// cluster gets no directory and (from v3) CLUSTER_AUTHORIZATION_FAILED.
pub fn describe_log_dirs(
    b: &Arc<Node>,
    cx: &Caller,
    v: i16,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    if !super::authz::on_cluster(b, cx, Operation::Describe) {
        return build!(DescribeLogDirsResponse {
            error_code: ResponseError::ClusterAuthorizationFailed.code()
        });
    }
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let mut topics: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for part in b.broker.all_partitions() {
        if let Some(w) = &wanted {
            if !w
                .iter()
                .any(|(t, ps)| *t == part.topic && ps.contains(&part.index))
            {
                continue;
            }
        }
        let (size, leo) = {
            let log = part.log();
            (log.size_bytes(), log.log_end_offset())
        };
        // Kafka's lag of a replica's log: how far its end is behind the high watermark. A
        // leader's end is never behind; a follower's is by what the leader has committed
        // and it has not fetched yet (it does not know the leader's own log end).
        let lag = (part.high_watermark() - leo).max(0);
        topics
            .entry(part.topic.clone())
            .or_default()
            .push(build!(DescribeLogDirsPartition {
                partition_index: part.index,
                partition_size: i64::try_from(size).unwrap_or(i64::MAX),
                offset_lag: lag,
                is_future_key: false
            }));
    }
    let dir =
        std::fs::canonicalize(&b.config.data_dir).unwrap_or_else(|_| b.config.data_dir.clone());
    let mut result = build!(DescribeLogDirsResult {
        log_dir: s(dir.display().to_string()),
        topics: topics
            .into_iter()
            .map(|(name, mut partitions)| {
                partitions.sort_by_key(|p| p.partition_index);
                build!(DescribeLogDirsTopic {
                    name: topic_name(&name),
                    partitions: partitions
                })
            })
            .collect()
    });
    if v >= 4 {
        match crate::fsutil::volume_bytes(&dir) {
            Ok((total, usable)) => {
                result.total_bytes = i64::try_from(total).unwrap_or(i64::MAX);
                result.usable_bytes = i64::try_from(usable).unwrap_or(i64::MAX);
            }
            // -1 is Kafka's "unknown"; the directory itself still answers.
            Err(e) => tracing::warn!(error = %e, "cannot read the data directory's volume size"),
        }
    }
    build!(DescribeLogDirsResponse {
        results: vec![result]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;

    #[tokio::test(flavor = "multi_thread")]
    async fn every_hosted_partition_with_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let b = Node::open_and_start(NodeConfig::for_tests(dir.path().to_path_buf()))
            .await
            .unwrap();
        b.broker
            .create_topic("a", 2, 1, Default::default(), false)
            .await
            .unwrap();
        b.broker
            .create_topic("b", 1, 1, Default::default(), false)
            .await
            .unwrap();
        let mut all = DescribeLogDirsRequest::default();
        all.topics = None;
        let resp = describe_log_dirs(&b, &Caller::internal(), 4, all);
        assert_eq!(resp.results.len(), 1);
        let r = &resp.results[0];
        assert_eq!(r.error_code, 0);
        let want = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(r.log_dir.as_str(), want.display().to_string());
        assert!(r.total_bytes > 0 && r.usable_bytes >= 0 && r.usable_bytes <= r.total_bytes);
        let listed: Vec<(String, i32, i64, bool)> = r
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    (
                        t.name.0.to_string(),
                        p.partition_index,
                        p.offset_lag,
                        p.is_future_key,
                    )
                })
            })
            .collect();
        assert_eq!(
            listed,
            vec![
                ("a".into(), 0, 0, false),
                ("a".into(), 1, 0, false),
                ("b".into(), 0, 0, false),
            ]
        );
        for t in &r.topics {
            for p in &t.partitions {
                let part = b
                    .broker
                    .partition(t.name.0.as_str(), p.partition_index)
                    .unwrap();
                assert_eq!(p.partition_size as u64, part.log().size_bytes());
            }
        }

        // A topic filter lists only the named partitions that live here.
        let mut req = DescribeLogDirsRequest::default();
        let mut t = DescribableLogDirTopic::default();
        t.topic = topic_name("a");
        t.partitions = vec![1, 9];
        let mut missing = DescribableLogDirTopic::default();
        missing.topic = topic_name("zz");
        missing.partitions = vec![0];
        req.topics = Some(vec![t, missing]);
        let resp = describe_log_dirs(&b, &Caller::internal(), 1, req);
        let r = &resp.results[0];
        assert_eq!(r.topics.len(), 1);
        assert_eq!(r.topics[0].name.0.as_str(), "a");
        assert_eq!(r.topics[0].partitions.len(), 1);
        assert_eq!(r.topics[0].partitions[0].partition_index, 1);
        assert_eq!(r.total_bytes, -1, "v1 carries no volume sizes");

        // An empty list (not null) asks for nothing.
        let resp = describe_log_dirs(
            &b,
            &Caller::internal(),
            4,
            DescribeLogDirsRequest::default(),
        );
        assert!(resp.results[0].topics.is_empty());
    }
}
