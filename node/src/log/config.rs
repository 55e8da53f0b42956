//! Topic configuration: Kafka's names, defaults, validation, and the effective log config.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// How a config value is typed, for validation and DescribeConfigs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Long,
    Int,
    Boolean,
    String,
    List,
    Double,
}

impl ConfigType {
    /// The DescribeConfigs v3+ config_type code.
    pub fn code(self) -> i8 {
        match self {
            ConfigType::Boolean => 1,
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Long => 5,
            ConfigType::Double => 6,
            ConfigType::List => 7,
        }
    }
}

/// One known topic config key.
#[derive(Debug, Clone, Copy)]
pub struct ConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    /// Kafka's default, as a string.
    pub default: &'static str,
    /// Whether Strata enforces this config (false: stored and reported, no effect yet).
    pub enforced: bool,
    pub doc: &'static str,
}

const fn def(
    name: &'static str,
    kind: ConfigType,
    default: &'static str,
    enforced: bool,
    doc: &'static str,
) -> ConfigDef {
    ConfigDef {
        name,
        kind,
        default,
        enforced,
        doc,
    }
}

use ConfigType::{Boolean, Double, Int, List, Long};

/// Every topic config Strata accepts. Unknown names are refused with INVALID_CONFIG, as Kafka does.
pub static TOPIC_CONFIGS: &[ConfigDef] = &[
    def(
        "cleanup.policy",
        List,
        "delete",
        true,
        "delete, compact, or both",
    ),
    def(
        "compression.type",
        ConfigType::String,
        "producer",
        false,
        "Stored batches keep the producer's codec",
    ),
    def(
        "delete.retention.ms",
        Long,
        "86400000",
        true,
        "How long tombstones survive compaction",
    ),
    def(
        "file.delete.delay.ms",
        Long,
        "60000",
        false,
        "Delay before deleting a file",
    ),
    def(
        "flush.messages",
        Long,
        "9223372036854775807",
        false,
        "See the node's --flush-policy",
    ),
    def(
        "flush.ms",
        Long,
        "9223372036854775807",
        false,
        "See the node's --flush-policy",
    ),
    def(
        "index.interval.bytes",
        Int,
        "4096",
        true,
        "Bytes between offset index entries",
    ),
    def(
        "local.retention.bytes",
        Long,
        "-2",
        true,
        "Bytes kept on local disk with tiering (-2: retention.bytes)",
    ),
    def(
        "local.retention.ms",
        Long,
        "-2",
        true,
        "Time kept on local disk with tiering (-2: retention.ms)",
    ),
    def(
        "max.compaction.lag.ms",
        Long,
        "9223372036854775807",
        false,
        "Maximum compaction lag",
    ),
    def(
        "max.message.bytes",
        Int,
        "1048588",
        true,
        "Largest record batch accepted",
    ),
    def(
        "message.timestamp.after.max.ms",
        Long,
        "9223372036854775807",
        false,
        "Future timestamp bound",
    ),
    def(
        "message.timestamp.before.max.ms",
        Long,
        "9223372036854775807",
        false,
        "Past timestamp bound",
    ),
    def(
        "message.timestamp.type",
        ConfigType::String,
        "CreateTime",
        true,
        "CreateTime or LogAppendTime",
    ),
    def(
        "min.cleanable.dirty.ratio",
        Double,
        "0.5",
        true,
        "Dirty ratio that triggers compaction",
    ),
    def(
        "min.compaction.lag.ms",
        Long,
        "0",
        true,
        "Minimum age before a record may be compacted",
    ),
    def(
        "min.insync.replicas",
        Int,
        "1",
        true,
        "Replicas that must acknowledge acks=all",
    ),
    def(
        "preallocate",
        Boolean,
        "false",
        false,
        "Preallocate segment files",
    ),
    def(
        "remote.storage.enable",
        Boolean,
        "false",
        true,
        "Tier closed segments to object storage (needs the node's --object-store)",
    ),
    def(
        "retention.bytes",
        Long,
        "-1",
        true,
        "Bytes kept per partition (-1: unbounded)",
    ),
    def(
        "retention.ms",
        Long,
        "604800000",
        true,
        "Time records are kept (-1: forever)",
    ),
    def(
        "segment.bytes",
        Int,
        "1073741824",
        true,
        "Segment size before a roll",
    ),
    def(
        "segment.index.bytes",
        Int,
        "10485760",
        false,
        "Index size per segment",
    ),
    def(
        "segment.jitter.ms",
        Long,
        "0",
        false,
        "Jitter on time-based rolls",
    ),
    def(
        "segment.ms",
        Long,
        "604800000",
        true,
        "Age before a segment rolls",
    ),
    def(
        "unclean.leader.election.enable",
        Boolean,
        "false",
        false,
        "Elect out-of-sync replicas",
    ),
];

/// Look up a config definition by name.
pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Validate one `key=value` against its definition, on a node without tiered storage.
pub fn validate_entry(key: &str, value: &str) -> Result<()> {
    validate_entry_for(key, value, false)
}

/// Validate one `key=value`; `tiering` says whether this node has an object store.
pub fn validate_entry_for(key: &str, value: &str, tiering: bool) -> Result<()> {
    let bad = |reason: &str| Error::InvalidConfig {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let d = config_def(key).ok_or_else(|| bad("unknown topic config"))?;
    match d.kind {
        Long => {
            value.trim().parse::<i64>().map_err(|_| bad("not a long"))?;
        }
        Int => {
            value.trim().parse::<i32>().map_err(|_| bad("not an int"))?;
        }
        Boolean => {
            if !matches!(value.trim().to_ascii_lowercase().as_str(), "true" | "false") {
                return Err(bad("not a boolean"));
            }
        }
        Double => {
            value
                .trim()
                .parse::<f64>()
                .map_err(|_| bad("not a number"))?;
        }
        ConfigType::String | List => {}
    }
    match key {
        "cleanup.policy" => {
            for p in value.split(',').map(str::trim) {
                if p != "delete" && p != "compact" {
                    return Err(bad("must be delete, compact, or delete,compact"));
                }
            }
        }
        "message.timestamp.type" if value != "CreateTime" && value != "LogAppendTime" => {
            return Err(bad("must be CreateTime or LogAppendTime"));
        }
        "segment.bytes" if value.trim().parse::<i64>().unwrap_or(0) < 14 => {
            return Err(bad("must be at least 14"));
        }
        "max.message.bytes" | "min.insync.replicas" | "index.interval.bytes"
            if value.trim().parse::<i64>().unwrap_or(0) < 1 =>
        {
            return Err(bad("must be positive"));
        }
        "segment.ms" if value.trim().parse::<i64>().unwrap_or(0) < 1 => {
            return Err(bad("must be positive"));
        }
        "retention.ms" | "retention.bytes" if value.trim().parse::<i64>().unwrap_or(0) < -1 => {
            return Err(bad("must be -1 or more"));
        }
        "min.cleanable.dirty.ratio" => {
            let r: f64 = value.trim().parse().unwrap_or(-1.0);
            if !(0.0..=1.0).contains(&r) {
                return Err(bad("must be between 0 and 1"));
            }
        }
        "local.retention.ms" | "local.retention.bytes"
            if value.trim().parse::<i64>().unwrap_or(0) < -2 =>
        {
            return Err(bad("must be -2 (the total retention), -1 or more"));
        }
        "remote.storage.enable" if !tiering && value.trim().eq_ignore_ascii_case("true") => {
            return Err(bad(
                "tiered storage is not available on this node (no --object-store configured)",
            ));
        }
        _ => {}
    }
    Ok(())
}

/// Validate a whole set of topic overrides.
pub fn validate(overrides: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in overrides {
        validate_entry(k, v)?;
    }
    Ok(())
}

/// Validate topic overrides on a node (with or without tiered storage), including the
/// checks that span keys once node defaults are applied: local retention within the total.
/// Compacted topics may tier (Kafka refuses it; here the bucket's copy is compacted too).
pub fn validate_for_node(
    overrides: &BTreeMap<String, String>,
    node_defaults: &BTreeMap<String, String>,
    tiering: bool,
) -> Result<()> {
    for (k, v) in overrides {
        validate_entry_for(k, v, tiering)?;
    }
    let c = LogConfig::resolve(overrides, node_defaults);
    let value = |k: &str| LogConfig::describe(k, overrides, node_defaults).0;
    let exceeds = |local: i64, total: i64| total >= 0 && (local < 0 || local > total);
    if exceeds(c.local_retention_ms, c.retention_ms) {
        return Err(Error::InvalidConfig {
            key: "local.retention.ms".into(),
            value: value("local.retention.ms"),
            reason: format!("must not exceed retention.ms ({})", c.retention_ms),
        });
    }
    if exceeds(c.local_retention_bytes, c.retention_bytes) {
        return Err(Error::InvalidConfig {
            key: "local.retention.bytes".into(),
            value: value("local.retention.bytes"),
            reason: format!("must not exceed retention.bytes ({})", c.retention_bytes),
        });
    }
    Ok(())
}

/// The effective config a partition log runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub compact: bool,
    pub delete: bool,
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    pub delete_retention_ms: i64,
    pub min_compaction_lag_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    pub index_interval_bytes: u64,
    pub min_insync_replicas: i32,
    /// Tier closed segments to the node's object store.
    pub remote_storage: bool,
    /// Local-tier retention with tiering (resolved: -2 became the total).
    pub local_retention_ms: i64,
    pub local_retention_bytes: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig::resolve(&BTreeMap::new(), &BTreeMap::new())
    }
}

impl LogConfig {
    /// Resolve topic overrides over node defaults over Kafka defaults.
    pub fn resolve(
        overrides: &BTreeMap<String, String>,
        node_defaults: &BTreeMap<String, String>,
    ) -> LogConfig {
        let get = |k: &str| -> String {
            overrides
                .get(k)
                .or_else(|| node_defaults.get(k))
                .cloned()
                .unwrap_or_else(|| config_def(k).map(|d| d.default).unwrap_or("").to_string())
        };
        let long = |k: &str| get(k).trim().parse::<i64>().unwrap_or(0);
        let policy = get("cleanup.policy");
        let local = |k: &str, total: &str| match long(k) {
            -2 => long(total),
            v => v,
        };
        LogConfig {
            segment_bytes: long("segment.bytes").max(14) as u64,
            segment_ms: long("segment.ms").max(1),
            retention_ms: long("retention.ms"),
            retention_bytes: long("retention.bytes"),
            compact: policy.split(',').any(|p| p.trim() == "compact"),
            delete: policy.split(',').any(|p| p.trim() == "delete"),
            max_message_bytes: long("max.message.bytes").max(1) as usize,
            log_append_time: get("message.timestamp.type") == "LogAppendTime",
            delete_retention_ms: long("delete.retention.ms"),
            min_compaction_lag_ms: long("min.compaction.lag.ms"),
            min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio").parse().unwrap_or(0.5),
            index_interval_bytes: long("index.interval.bytes").max(1) as u64,
            min_insync_replicas: long("min.insync.replicas").max(1) as i32,
            remote_storage: get("remote.storage.enable")
                .trim()
                .eq_ignore_ascii_case("true"),
            local_retention_ms: local("local.retention.ms", "retention.ms"),
            local_retention_bytes: local("local.retention.bytes", "retention.bytes"),
        }
    }

    /// The value a key resolves to, and whether it came from the topic override.
    pub fn describe(
        key: &str,
        overrides: &BTreeMap<String, String>,
        node_defaults: &BTreeMap<String, String>,
    ) -> (String, ConfigSource) {
        if let Some(v) = overrides.get(key) {
            return (v.clone(), ConfigSource::Topic);
        }
        if let Some(v) = node_defaults.get(key) {
            return (v.clone(), ConfigSource::Node);
        }
        (
            config_def(key).map(|d| d.default).unwrap_or("").to_string(),
            ConfigSource::Default,
        )
    }
}

/// Where a described config value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    Topic,
    Node,
    Default,
}

impl ConfigSource {
    /// DescribeConfigs config_source code.
    pub fn code(self) -> i8 {
        match self {
            ConfigSource::Topic => 1,
            ConfigSource::Node => 4,
            ConfigSource::Default => 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_kafka() {
        let c = LogConfig::default();
        assert_eq!(c.segment_bytes, 1 << 30);
        assert_eq!(c.retention_ms, 7 * 24 * 3600 * 1000);
        assert_eq!(c.retention_bytes, -1);
        assert!(c.delete && !c.compact);
        assert_eq!(c.max_message_bytes, 1048588);
    }

    #[test]
    fn overrides_win_over_node_defaults() {
        let mut o = BTreeMap::new();
        o.insert("cleanup.policy".to_string(), "compact".to_string());
        let mut n = BTreeMap::new();
        n.insert("cleanup.policy".to_string(), "delete".to_string());
        n.insert("segment.bytes".to_string(), "1000".to_string());
        let c = LogConfig::resolve(&o, &n);
        assert!(c.compact && !c.delete);
        assert_eq!(c.segment_bytes, 1000);
    }

    #[test]
    fn validation() {
        assert!(validate_entry("retention.ms", "100").is_ok());
        assert!(validate_entry("retention.ms", "abc").is_err());
        assert!(validate_entry("no.such.config", "1").is_err());
        assert!(validate_entry("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_entry("cleanup.policy", "archive").is_err());
        assert!(validate_entry("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate_entry("segment.bytes", "1").is_err());
        assert!(validate_entry("remote.storage.enable", "true").is_err());
        assert!(validate_entry("remote.storage.enable", "false").is_ok());
    }

    #[test]
    fn tiering_configs() {
        let none = BTreeMap::new();
        let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let on = map(&[("remote.storage.enable", "true")]);
        // Refused without an object store, accepted with one.
        assert!(validate_for_node(&on, &none, false).is_err());
        validate_for_node(&on, &none, true).unwrap();
        let c = LogConfig::resolve(&on, &none);
        assert!(c.remote_storage);
        assert_eq!(c.local_retention_ms, c.retention_ms, "-2 means the total");
        let ok = map(&[
            ("remote.storage.enable", "true"),
            ("retention.bytes", "1000"),
            ("local.retention.bytes", "100"),
        ]);
        validate_for_node(&ok, &none, true).unwrap();
        assert_eq!(LogConfig::resolve(&ok, &none).local_retention_bytes, 100);
        for bad in [
            map(&[
                ("retention.bytes", "100"),
                ("local.retention.bytes", "1000"),
            ]),
            map(&[("retention.bytes", "100"), ("local.retention.bytes", "-1")]),
            map(&[("retention.ms", "100"), ("local.retention.ms", "1000")]),
            map(&[("local.retention.ms", "-3")]),
        ] {
            assert!(validate_for_node(&bad, &none, true).is_err(), "{bad:?}");
        }
        // Compacted topics tier (the bucket's copy is compacted too).
        let compacted = map(&[
            ("remote.storage.enable", "true"),
            ("cleanup.policy", "compact"),
        ]);
        assert!(validate_for_node(&compacted, &none, true).is_ok());
        // A node default counts too.
        let node = map(&[("retention.ms", "50")]);
        assert!(validate_for_node(&map(&[("local.retention.ms", "60")]), &node, true).is_err());
    }
}
