//! Kafka client quotas as data (KIP-13, KIP-55, KIP-124, KIP-546): the entities a quota is
//! set on (user and/or client id, each named or the default), the keys Strata enforces, the
//! rules AlterClientQuotas validates with, DescribeClientQuotas filters, and the order in
//! which the quotas of a connection are resolved (the most specific entity wins).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Kafka's entity type of a user (the principal's name, without `User:`).
pub const USER: &str = "user";
/// Kafka's entity type of a client id.
pub const CLIENT_ID: &str = "client-id";
/// Kafka's entity type of an IP address (connection-rate quotas, not served here).
pub const IP: &str = "ip";

/// Kafka's INVALID_REQUEST.
pub const INVALID_REQUEST: i16 = 42;
/// Kafka's UNSUPPORTED_VERSION (what Kafka answers for an unknown filter entity type).
pub const UNSUPPORTED_VERSION: i16 = 35;

/// One component of an entity: a specific name or the default (`<default>`, a null name
/// on the wire).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntityName {
    /// The default for every name without its own quota.
    Default,
    /// One name.
    Named(String),
}

impl EntityName {
    /// From the wire: null is the default.
    pub fn from_wire(name: Option<&str>) -> EntityName {
        match name {
            None => EntityName::Default,
            Some(n) => EntityName::Named(n.to_string()),
        }
    }

    /// To the wire: the default is null.
    pub fn to_wire(&self) -> Option<&str> {
        match self {
            EntityName::Default => None,
            EntityName::Named(n) => Some(n),
        }
    }
}

/// What a quota is set on: a user, a client id, or both; never neither.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<EntityName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<EntityName>,
}

impl QuotaEntity {
    /// Validates an entity from the wire (type, name) pairs as Kafka's controller does.
    pub fn from_wire<'a>(
        parts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<QuotaEntity, QuotaError> {
        let mut e = QuotaEntity {
            user: None,
            client_id: None,
        };
        let mut any = false;
        for (ty, name) in parts {
            any = true;
            let slot = match ty {
                USER => &mut e.user,
                CLIENT_ID => &mut e.client_id,
                IP => {
                    return Err(QuotaError::invalid(
                        "IP quotas (connection_creation_rate) are not supported",
                    ))
                }
                other => {
                    return Err(QuotaError::invalid(format!(
                        "Unhandled client quota entity type: {other}"
                    )))
                }
            };
            if slot.is_some() {
                return Err(QuotaError::invalid(format!(
                    "Invalid client quota entity, duplicate entity entry {ty}"
                )));
            }
            if name == Some("") {
                return Err(QuotaError::invalid(format!("Empty {ty} not supported")));
            }
            *slot = Some(EntityName::from_wire(name));
        }
        if !any {
            return Err(QuotaError::invalid("Invalid empty client quota entity"));
        }
        Ok(e)
    }

    /// The (type, name) pairs of the wire, user first.
    pub fn to_wire(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut out = Vec::with_capacity(2);
        if let Some(u) = &self.user {
            out.push((USER, u.to_wire()));
        }
        if let Some(c) = &self.client_id {
            out.push((CLIENT_ID, c.to_wire()));
        }
        out
    }

    fn parts(&self) -> usize {
        usize::from(self.user.is_some()) + usize::from(self.client_id.is_some())
    }
}

impl std::fmt::Display for QuotaEntity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |n: &EntityName| match n {
            EntityName::Default => "<default>".to_string(),
            EntityName::Named(s) => s.clone(),
        };
        let mut parts = Vec::new();
        if let Some(u) = &self.user {
            parts.push(format!("user={}", show(u)));
        }
        if let Some(c) = &self.client_id {
            parts.push(format!("client-id={}", show(c)));
        }
        f.write_str(&parts.join(","))
    }
}

/// The quota keys of users and client ids that Strata enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum QuotaKey {
    /// Bytes per second a producer may send.
    #[serde(rename = "producer_byte_rate")]
    ProducerByteRate,
    /// Bytes per second a consumer may fetch.
    #[serde(rename = "consumer_byte_rate")]
    ConsumerByteRate,
    /// Percentage of one request-handler thread's time (KIP-124).
    #[serde(rename = "request_percentage")]
    RequestPercentage,
}

impl QuotaKey {
    /// Every key.
    pub const ALL: [QuotaKey; 3] = [
        QuotaKey::ProducerByteRate,
        QuotaKey::ConsumerByteRate,
        QuotaKey::RequestPercentage,
    ];

    /// Kafka's config name.
    pub fn name(self) -> &'static str {
        match self {
            QuotaKey::ProducerByteRate => "producer_byte_rate",
            QuotaKey::ConsumerByteRate => "consumer_byte_rate",
            QuotaKey::RequestPercentage => "request_percentage",
        }
    }

    /// From Kafka's config name.
    pub fn parse(name: &str) -> Option<QuotaKey> {
        QuotaKey::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Byte rates are Kafka LONG configs; the percentage is a DOUBLE.
    fn integral(self) -> bool {
        !matches!(self, QuotaKey::RequestPercentage)
    }

    /// Validates a value to set, with Kafka's rules and messages: known key, greater than
    /// zero, whole and within a long for the byte rates.
    pub fn validate(key: &str, value: f64) -> Result<QuotaKey, QuotaError> {
        let Some(k) = QuotaKey::parse(key) else {
            return Err(QuotaError::invalid(format!(
                "Invalid configuration key {key}"
            )));
        };
        if value.is_nan() || value <= 0.0 {
            return Err(QuotaError::invalid(format!(
                "Quota {key} must be greater than 0"
            )));
        }
        if k.integral() {
            if value > i64::MAX as f64 {
                return Err(QuotaError::invalid(format!(
                    "Proposed value for {key} is too large for a LONG."
                )));
            }
            if (value % 1.0).abs() > 1e-6 {
                return Err(QuotaError::invalid(format!(
                    "{key} cannot be a fractional value."
                )));
            }
        }
        Ok(k)
    }
}

/// A quota value. Compared by bits so that stored metadata can be `Eq`; only finite
/// positive values are ever stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QuotaValue(pub f64);

impl PartialEq for QuotaValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for QuotaValue {}

/// Every quota set: entity -> key -> value.
pub type QuotaMap = BTreeMap<QuotaEntity, BTreeMap<QuotaKey, QuotaValue>>;

/// A refusal with Kafka's error code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QuotaError {
    /// Kafka's error code.
    pub code: i16,
    /// Kafka's message.
    pub message: String,
}

impl QuotaError {
    fn invalid(message: impl Into<String>) -> QuotaError {
        QuotaError {
            code: INVALID_REQUEST,
            message: message.into(),
        }
    }
}

/// How a filter component matches an entity type (DescribeClientQuotas `match_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// This name (0 with a name).
    Exact(String),
    /// The default entity (1, or 0 with a null name).
    Default,
    /// Any entity of this type, default included (2).
    Any,
}

/// A DescribeClientQuotas filter, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaFilter {
    components: Vec<(String, Match)>,
    strict: bool,
}

impl QuotaFilter {
    /// From the wire components (entity type, match type, match) and `strict`, with
    /// Kafka's checks: no empty or repeated type, only known types, no IP with user or
    /// client id.
    pub fn from_wire<'a>(
        components: impl IntoIterator<Item = (&'a str, i8, Option<&'a str>)>,
        strict: bool,
    ) -> Result<QuotaFilter, QuotaError> {
        let mut out: Vec<(String, Match)> = Vec::new();
        for (ty, match_type, name) in components {
            if ty.is_empty() {
                return Err(QuotaError::invalid("Invalid empty entity type."));
            }
            if out.iter().any(|(t, _)| t == ty) {
                return Err(QuotaError::invalid(format!(
                    "Entity type {ty} cannot appear more than once in the filter."
                )));
            }
            if ![USER, CLIENT_ID, IP].contains(&ty) {
                return Err(QuotaError {
                    code: UNSUPPORTED_VERSION,
                    message: format!("Unsupported entity type {ty}"),
                });
            }
            let m = match (match_type, name) {
                (0, Some(n)) => Match::Exact(n.to_string()),
                (0, None) | (1, _) => Match::Default,
                (2, _) => Match::Any,
                (other, _) => {
                    return Err(QuotaError::invalid(format!(
                        "Unexpected match type: {other}"
                    )))
                }
            };
            out.push((ty.to_string(), m));
        }
        let has = |t: &str| out.iter().any(|(x, _)| x == t);
        if has(IP) && (has(USER) || has(CLIENT_ID)) {
            return Err(QuotaError::invalid(
                "Invalid entity filter component combination. IP filter component should not \
                 be used with user or clientId filter component.",
            ));
        }
        Ok(QuotaFilter {
            components: out,
            strict,
        })
    }

    /// Whether `e` is described: every component matches, and with `strict` the entity
    /// has no other types.
    pub fn matches(&self, e: &QuotaEntity) -> bool {
        if self.strict && e.parts() != self.components.len() {
            return false;
        }
        self.components.iter().all(|(ty, m)| {
            let part = match ty.as_str() {
                USER => e.user.as_ref(),
                CLIENT_ID => e.client_id.as_ref(),
                _ => None,
            };
            match (m, part) {
                (_, None) => false,
                (Match::Any, Some(_)) => true,
                (Match::Default, Some(n)) => *n == EntityName::Default,
                (Match::Exact(want), Some(n)) => *n == EntityName::Named(want.clone()),
            }
        })
    }
}

/// The quota that applies to (user, client id) for one key, and the entity it is set on,
/// in Kafka's order of precedence (most specific first):
/// user+client, user+default client, user, default user+client, default user+default
/// client, default user, client, default client.
pub fn resolve<'a>(
    quotas: &'a QuotaMap,
    user: &str,
    client_id: &str,
    key: QuotaKey,
) -> Option<(&'a QuotaEntity, f64)> {
    let named = |s: &str| Some(EntityName::Named(s.to_string()));
    let default = || Some(EntityName::Default);
    let order = [
        (named(user), named(client_id)),
        (named(user), default()),
        (named(user), None),
        (default(), named(client_id)),
        (default(), default()),
        (default(), None),
        (None, named(client_id)),
        (None, default()),
    ];
    order.into_iter().find_map(|(user, client_id)| {
        let (e, values) = quotas.get_key_value(&QuotaEntity { user, client_id })?;
        values.get(&key).map(|v| (e, v.0))
    })
}

/// One entry of AlterClientQuotas as the wire has it: the entity's (type, name) pairs and
/// (key, value) operations, `None` removing the key.
#[derive(Debug, Clone, PartialEq)]
pub struct Alteration {
    pub entity: Vec<(String, Option<String>)>,
    pub ops: Vec<(String, Option<f64>)>,
}

/// Validates one alteration against the current quotas: the entity, no key twice, every
/// value set. Returns the entity and its quotas after the change (empty: none left).
/// Removing a key that is not set changes nothing and is not checked, as in Kafka.
pub fn alter(
    quotas: &QuotaMap,
    a: &Alteration,
) -> Result<(QuotaEntity, BTreeMap<QuotaKey, QuotaValue>), QuotaError> {
    let entity = QuotaEntity::from_wire(a.entity.iter().map(|(t, n)| (t.as_str(), n.as_deref())))?;
    let mut seen: Vec<&str> = Vec::with_capacity(a.ops.len());
    for (key, _) in &a.ops {
        if seen.contains(&key.as_str()) {
            return Err(QuotaError::invalid(format!(
                "Duplicate quota key {key} not updating quota for this entity {entity}"
            )));
        }
        seen.push(key);
    }
    let mut values = quotas.get(&entity).cloned().unwrap_or_default();
    for (key, value) in &a.ops {
        match value {
            None => {
                if let Some(k) = QuotaKey::parse(key) {
                    values.remove(&k);
                }
            }
            Some(v) => {
                let k = QuotaKey::validate(key, *v)?;
                values.insert(k, QuotaValue(*v));
            }
        }
    }
    Ok((entity, values))
}

/// Serde for a [`QuotaMap`] as a list of `{entity, quotas}` (JSON maps need string keys).
pub mod as_list {
    use super::*;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Entry {
        entity: QuotaEntity,
        quotas: BTreeMap<QuotaKey, QuotaValue>,
    }

    /// Serialize.
    pub fn serialize<S: Serializer>(m: &QuotaMap, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter().map(|(entity, quotas)| Entry {
            entity: entity.clone(),
            quotas: quotas.clone(),
        }))
    }

    /// Deserialize.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<QuotaMap, D::Error> {
        let entries: Vec<Entry> = Vec::deserialize(d)?;
        Ok(entries.into_iter().map(|e| (e.entity, e.quotas)).collect())
    }
}

/// The principal's user name as quotas know it: `User:alice` is `alice`.
pub fn quota_user(principal: &str) -> &str {
    principal.strip_prefix("User:").unwrap_or(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(user: Option<Option<&str>>, client: Option<Option<&str>>) -> QuotaEntity {
        QuotaEntity {
            user: user.map(EntityName::from_wire),
            client_id: client.map(EntityName::from_wire),
        }
    }

    #[test]
    fn entities_are_validated_as_kafka_does() {
        assert_eq!(
            QuotaEntity::from_wire([(USER, Some("alice")), (CLIENT_ID, None)]).unwrap(),
            e(Some(Some("alice")), Some(None))
        );
        let err = |parts: Vec<(&str, Option<&str>)>| QuotaEntity::from_wire(parts).unwrap_err();
        assert_eq!(err(vec![]).message, "Invalid empty client quota entity");
        assert_eq!(
            err(vec![(USER, Some(""))]).message,
            "Empty user not supported"
        );
        assert!(err(vec![(USER, None), (USER, Some("a"))])
            .message
            .contains("duplicate entity entry user"));
        assert!(err(vec![("topic", Some("a"))])
            .message
            .contains("Unhandled client quota entity type: topic"));
        assert_eq!(err(vec![(IP, Some("1.2.3.4"))]).code, INVALID_REQUEST);
    }

    #[test]
    fn values_are_validated_as_kafka_does() {
        assert_eq!(
            QuotaKey::validate("producer_byte_rate", 1024.0),
            Ok(QuotaKey::ProducerByteRate)
        );
        assert_eq!(
            QuotaKey::validate("request_percentage", 12.5),
            Ok(QuotaKey::RequestPercentage)
        );
        let msg = |k, v| QuotaKey::validate(k, v).unwrap_err().message;
        assert_eq!(
            msg("consumer_byte_rate", 10.5),
            "consumer_byte_rate cannot be a fractional value."
        );
        assert_eq!(
            msg("producer_byte_rate", 0.0),
            "Quota producer_byte_rate must be greater than 0"
        );
        assert_eq!(
            msg("request_percentage", -1.0),
            "Quota request_percentage must be greater than 0"
        );
        assert!(QuotaKey::validate("producer_byte_rate", f64::NAN).is_err());
        assert!(msg("producer_byte_rate", 1e30).contains("too large for a LONG"));
        assert_eq!(
            msg("controller_mutation_rate", 1.0),
            "Invalid configuration key controller_mutation_rate"
        );
    }

    #[test]
    fn filters_match_exact_default_and_any() {
        let all = [
            e(Some(Some("alice")), None),
            e(Some(None), None),
            e(Some(Some("alice")), Some(Some("app"))),
            e(Some(Some("alice")), Some(None)),
            e(None, Some(Some("app"))),
            e(None, Some(None)),
        ];
        let pick = |f: QuotaFilter| -> Vec<usize> {
            (0..all.len()).filter(|&i| f.matches(&all[i])).collect()
        };
        // kafka-configs --describe --entity-type users: user of any name, not strict.
        let f = QuotaFilter::from_wire([(USER, 2, None)], false).unwrap();
        assert_eq!(pick(f), vec![0, 1, 2, 3]);
        // ... strict: user-only entities.
        let f = QuotaFilter::from_wire([(USER, 2, None)], true).unwrap();
        assert_eq!(pick(f), vec![0, 1]);
        // One user exactly, strict.
        let f = QuotaFilter::from_wire([(USER, 0, Some("alice"))], true).unwrap();
        assert_eq!(pick(f), vec![0]);
        // The default user (match type 1, or 0 with null).
        let f = QuotaFilter::from_wire([(USER, 1, None)], true).unwrap();
        assert_eq!(pick(f), vec![1]);
        let f = QuotaFilter::from_wire([(USER, 0, None)], true).unwrap();
        assert_eq!(pick(f), vec![1]);
        // Alice with the default client.
        let f =
            QuotaFilter::from_wire([(USER, 0, Some("alice")), (CLIENT_ID, 1, None)], true).unwrap();
        assert_eq!(pick(f), vec![3]);
        // Any client id entity.
        let f = QuotaFilter::from_wire([(CLIENT_ID, 2, None)], false).unwrap();
        assert_eq!(pick(f), vec![2, 3, 4, 5]);
        // No components, not strict: everything; strict: nothing.
        assert_eq!(pick(QuotaFilter::from_wire([], false).unwrap()).len(), 6);
        assert!(pick(QuotaFilter::from_wire([], true).unwrap()).is_empty());
        // IP type matches nothing stored here.
        assert!(pick(QuotaFilter::from_wire([(IP, 2, None)], false).unwrap()).is_empty());
    }

    #[test]
    fn filters_are_validated_as_kafka_does() {
        let err = |c: Vec<(&str, i8, Option<&str>)>| QuotaFilter::from_wire(c, false).unwrap_err();
        assert_eq!(err(vec![("", 2, None)]).code, INVALID_REQUEST);
        assert_eq!(
            err(vec![(USER, 2, None), (USER, 1, None)]).code,
            INVALID_REQUEST
        );
        assert_eq!(err(vec![("topic", 2, None)]).code, UNSUPPORTED_VERSION);
        assert_eq!(
            err(vec![(IP, 2, None), (USER, 2, None)]).code,
            INVALID_REQUEST
        );
        assert_eq!(err(vec![(USER, 7, None)]).code, INVALID_REQUEST);
    }

    #[test]
    fn the_most_specific_quota_wins() {
        let k = QuotaKey::ProducerByteRate;
        let mut q = QuotaMap::new();
        let mut set = |ent: QuotaEntity, v: f64| {
            q.entry(ent).or_default().insert(k, QuotaValue(v));
        };
        set(e(None, Some(None)), 8.0);
        set(e(None, Some(Some("app"))), 7.0);
        set(e(Some(None), None), 6.0);
        set(e(Some(None), Some(None)), 5.0);
        set(e(Some(None), Some(Some("app"))), 4.0);
        set(e(Some(Some("alice")), None), 3.0);
        set(e(Some(Some("alice")), Some(None)), 2.0);
        set(e(Some(Some("alice")), Some(Some("app"))), 1.0);
        let order = [
            e(Some(Some("alice")), Some(Some("app"))),
            e(Some(Some("alice")), Some(None)),
            e(Some(Some("alice")), None),
            e(Some(None), Some(Some("app"))),
            e(Some(None), Some(None)),
            e(Some(None), None),
            e(None, Some(Some("app"))),
            e(None, Some(None)),
        ];
        for (i, ent) in order.iter().enumerate() {
            let (got, v) = resolve(&q, "alice", "app", k).unwrap();
            assert_eq!((got, v), (ent, (i + 1) as f64));
            q.remove(ent);
        }
        assert!(resolve(&q, "alice", "app", k).is_none());
        // Another key is not inherited from an entity that only sets this one.
        let mut q = QuotaMap::new();
        q.entry(e(Some(Some("bob")), None))
            .or_default()
            .insert(QuotaKey::ConsumerByteRate, QuotaValue(10.0));
        assert!(resolve(&q, "bob", "x", k).is_none());
        assert_eq!(quota_user("User:bob"), "bob");
    }

    #[test]
    fn alterations_set_and_remove_keys() {
        let a = |ops: Vec<(&str, Option<f64>)>| Alteration {
            entity: vec![(USER.to_string(), Some("alice".to_string()))],
            ops: ops.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        let mut q = QuotaMap::new();
        let (ent, vals) = alter(&q, &a(vec![("producer_byte_rate", Some(100.0))])).unwrap();
        assert_eq!(ent, e(Some(Some("alice")), None));
        q.insert(ent, vals);
        let (_, vals) = alter(
            &q,
            &a(vec![
                ("consumer_byte_rate", Some(5.0)),
                ("producer_byte_rate", None),
            ]),
        )
        .unwrap();
        assert_eq!(
            vals.into_iter().collect::<Vec<_>>(),
            vec![(QuotaKey::ConsumerByteRate, QuotaValue(5.0))]
        );
        // Removing an unknown key is a no-op; setting one is refused.
        assert!(alter(&q, &a(vec![("nope", None)])).is_ok());
        assert!(alter(&q, &a(vec![("nope", Some(1.0))])).is_err());
        let dup = alter(
            &q,
            &a(vec![
                ("producer_byte_rate", Some(1.0)),
                ("producer_byte_rate", None),
            ]),
        )
        .unwrap_err();
        assert!(dup
            .message
            .starts_with("Duplicate quota key producer_byte_rate"));

        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Holder {
            #[serde(with = "as_list")]
            q: QuotaMap,
        }
        let h = Holder { q };
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), h);
    }
}
