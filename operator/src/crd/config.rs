//! Kafka topic configuration maps (`Topic.spec.config`, `Cluster.spec.topicDefaults`): their
//! schema and the admission rules on retention that Kafka itself enforces.
//!
//! Kafka (KIP-405) reads `local.retention.*` against `retention.*`: the local copy can never be
//! kept longer than the whole log, `-2` on the local setting means "as long as the total", and
//! `-1` means unlimited. The API server refuses what Kafka would refuse, so a bad value fails at
//! `kubectl apply` instead of in a reconcile loop.

use kube::core::{Message, Reason, Rule};
use schemars::{json_schema, Schema, SchemaGenerator};

/// At most this many entries in one config map (Kafka has about forty topic configs).
pub const MAX_ENTRIES: u64 = 256;
/// Longest accepted config value. Bounds the CEL cost estimate of the rules below.
pub const MAX_VALUE_LENGTH: u64 = 4096;

/// Kafka's `retention.ms`.
pub const RETENTION_MS: &str = "retention.ms";
/// Kafka's `retention.bytes`.
pub const RETENTION_BYTES: &str = "retention.bytes";
/// Kafka's `local.retention.ms` (tiered storage: how long the hot tail stays on local disk).
pub const LOCAL_RETENTION_MS: &str = "local.retention.ms";
/// Kafka's `local.retention.bytes`.
pub const LOCAL_RETENTION_BYTES: &str = "local.retention.bytes";
/// Kafka's `remote.storage.enable` (tiered storage on for the topic).
pub const REMOTE_STORAGE_ENABLE: &str = "remote.storage.enable";

/// A value Kafka parses as a long: digits with an optional minus, at most 19 of them.
const INTEGER: &str = "^-?[0-9]{1,19}$";

/// Schema of a config map: string keys to string values, bounded so CEL rules stay cheap.
pub fn config_map_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": MAX_ENTRIES,
        "additionalProperties": {
            "type": "string",
            "maxLength": MAX_VALUE_LENGTH,
        },
    })
}

/// The retention settings must be integers (checked first so the other rules may call `int()`).
pub fn retention_integers_rule() -> Rule {
    let keys = [
        RETENTION_MS,
        RETENTION_BYTES,
        LOCAL_RETENTION_MS,
        LOCAL_RETENTION_BYTES,
    ];
    let list = keys.map(|k| format!("'{k}'")).join(", ");
    Rule::new(format!(
        "[{list}].all(k, !(k in self) || self[k].matches('{INTEGER}'))"
    ))
    .message(Message::Message(
        "retention.ms, retention.bytes, local.retention.ms and local.retention.bytes must be integers"
            .into(),
    ))
    .reason(Reason::FieldValueInvalid)
}

/// `retention.*` is -1 (unlimited) or more; `local.retention.*` is -2 (same as total) or more.
pub fn retention_ranges_rule() -> Rule {
    let total = [RETENTION_MS, RETENTION_BYTES]
        .map(|k| at_least(k, -1))
        .join(" && ");
    let local = [LOCAL_RETENTION_MS, LOCAL_RETENTION_BYTES]
        .map(|k| at_least(k, -2))
        .join(" && ");
    Rule::new(format!("{total} && {local}"))
        .message(Message::Message(
            "retention.ms and retention.bytes must be -1 (unlimited) or more; local.retention.ms \
             and local.retention.bytes must be -2 (same as the total retention), -1 or more"
                .into(),
        ))
        .reason(Reason::FieldValueInvalid)
}

/// `local.retention.bytes` may not keep more than `retention.bytes` (when both are set).
pub fn local_retention_bytes_rule() -> Rule {
    local_within_total(LOCAL_RETENTION_BYTES, RETENTION_BYTES)
}

/// `local.retention.ms` may not keep longer than `retention.ms` (when both are set).
pub fn local_retention_ms_rule() -> Rule {
    local_within_total(LOCAL_RETENTION_MS, RETENTION_MS)
}

/// CEL: `key` is absent, not an integer (another rule reports that), or at least `min`.
fn at_least(key: &str, min: i64) -> String {
    format!("(!('{key}' in self) || !self['{key}'].matches('{INTEGER}') || int(self['{key}']) >= {min})")
}

/// As Kafka validates it: when the total is limited (not -1) and the local setting is not -2,
/// the local setting must be limited too (not -1) and no larger than the total.
fn local_within_total(local: &str, total: &str) -> Rule {
    let l = format!("int(self['{local}'])");
    let t = format!("int(self['{total}'])");
    Rule::new(format!(
        "!('{local}' in self && '{total}' in self) \
         || !self['{local}'].matches('{INTEGER}') || !self['{total}'].matches('{INTEGER}') \
         || {t} == -1 || {l} == -2 || ({l} != -1 && {l} <= {t})"
    ))
    .message(Message::Message(format!(
        "{local} cannot exceed {total}: the local copy is part of the total \
         (use -2 to keep as much locally as in total)"
    )))
    .reason(Reason::FieldValueInvalid)
}
