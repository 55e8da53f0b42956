//! The pure part of the User reconciler: principals, ACL and quota plans, client settings.

use serde_json::json;
use strata_security::quota::QuotaValue;

use super::*;

fn spec(v: serde_json::Value) -> UserSpec {
    serde_json::from_value(v).expect("a valid spec")
}

fn binding(
    rt: ResourceType,
    name: &str,
    pt: PatternType,
    principal: &str,
    op: Operation,
    perm: Permission,
) -> AclBinding {
    AclBinding {
        resource_type: rt,
        resource_name: name.into(),
        pattern_type: pt,
        principal: principal.into(),
        host: "*".into(),
        operation: op,
        permission: perm,
    }
}

#[test]
fn principals_follow_kafkas_defaults() {
    assert_eq!(
        principal("alice", AuthenticationType::ScramSha512),
        "User:alice"
    );
    assert_eq!(principal("alice", AuthenticationType::Tls), "User:CN=alice");
    assert_eq!(
        quota_entity("User:CN=alice").user,
        Some(EntityName::Named("CN=alice".into()))
    );
}

#[test]
fn every_operation_of_a_rule_is_one_binding() {
    let s = spec(json!({
        "authentication": {"type": "scram-sha-512"},
        "authorization": {"type": "simple", "acls": [
            {"resource": {"type": "topic", "name": "orders-", "patternType": "prefix"},
             "operations": ["Read", "Describe"]},
            {"resource": {"type": "group", "name": "*"}, "operations": ["Read"], "type": "deny",
             "host": "10.0.0.1"},
            {"resource": {"type": "cluster"}, "operations": ["IdempotentWrite"]},
            {"resource": {"type": "transactionalId", "name": "tx"}, "operations": ["Write"]},
        ]}
    }));
    let got = desired_acls(&s, "User:alice");
    let p = "User:alice";
    let mut group_deny = binding(
        ResourceType::Group,
        "*",
        PatternType::Literal,
        p,
        Operation::Read,
        Permission::Deny,
    );
    group_deny.host = "10.0.0.1".into();
    let want: BTreeSet<AclBinding> = [
        binding(
            ResourceType::Topic,
            "orders-",
            PatternType::Prefixed,
            p,
            Operation::Read,
            Permission::Allow,
        ),
        binding(
            ResourceType::Topic,
            "orders-",
            PatternType::Prefixed,
            p,
            Operation::Describe,
            Permission::Allow,
        ),
        group_deny,
        binding(
            ResourceType::Cluster,
            "kafka-cluster",
            PatternType::Literal,
            p,
            Operation::IdempotentWrite,
            Permission::Allow,
        ),
        binding(
            ResourceType::TransactionalId,
            "tx",
            PatternType::Literal,
            p,
            Operation::Write,
            Permission::Allow,
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
    let none = spec(json!({"authentication": {"type": "tls"}}));
    assert!(desired_acls(&none, "User:CN=alice").is_empty());
}

#[test]
fn the_acl_plan_touches_only_the_users_principals() {
    let read = |p: &str| {
        binding(
            ResourceType::Topic,
            "a",
            PatternType::Literal,
            p,
            Operation::Read,
            Permission::Allow,
        )
    };
    let write = |p: &str| {
        binding(
            ResourceType::Topic,
            "a",
            PatternType::Literal,
            p,
            Operation::Write,
            Permission::Allow,
        )
    };
    let current: BTreeSet<AclBinding> = [
        read("User:alice"),    // kept
        write("User:alice"),   // no longer asked for
        read("User:CN=alice"), // the other principal: removed
        read("User:bob"),      // someone else's: untouched
        read("User:alice2"),   // a longer name: untouched
    ]
    .into_iter()
    .collect();
    let desired: BTreeSet<AclBinding> = [read("User:alice"), write("User:alice").clone()]
        .into_iter()
        .filter(|b| b.operation == Operation::Read)
        .chain([binding(
            ResourceType::Group,
            "g",
            PatternType::Literal,
            "User:alice",
            Operation::Read,
            Permission::Allow,
        )])
        .collect();
    let (create, delete) = acl_plan(&current, "alice", &desired);
    assert_eq!(
        create,
        vec![binding(
            ResourceType::Group,
            "g",
            PatternType::Literal,
            "User:alice",
            Operation::Read,
            Permission::Allow
        )]
    );
    assert_eq!(delete.len(), 2);
    assert!(delete.contains(&write("User:alice")));
    assert!(delete.contains(&read("User:CN=alice")));
    // Applied, the plan is a fixed point.
    let after: BTreeSet<AclBinding> = current
        .iter()
        .filter(|b| !delete.contains(b))
        .cloned()
        .chain(create)
        .collect();
    assert_eq!(acl_plan(&after, "alice", &desired), (vec![], vec![]));
}

#[test]
fn the_quota_plan_sets_asked_keys_and_removes_the_rest() {
    let s = spec(json!({
        "authentication": {"type": "scram-sha-512"},
        "quotas": {"producerByteRate": 1048576, "requestPercentage": 50}
    }));
    let desired = desired_quotas(&s);
    assert_eq!(desired.len(), 2);
    let mut current = QuotaMap::new();
    // Set before: consumer rate (to remove) and a quota on the tls principal (to remove).
    current.insert(
        quota_entity("User:alice"),
        BTreeMap::from([(QuotaKey::ConsumerByteRate, QuotaValue(10.0))]),
    );
    current.insert(
        quota_entity("User:CN=alice"),
        BTreeMap::from([(QuotaKey::ProducerByteRate, QuotaValue(10.0))]),
    );
    let plan = quota_plan(&current, "alice", "User:alice", &desired);
    assert_eq!(plan.len(), 2);
    let scram = plan
        .iter()
        .find(|a| a.entity == vec![("user".to_string(), Some("alice".to_string()))])
        .expect("the active principal's entry");
    let ops: BTreeMap<String, Option<f64>> = scram.ops.iter().cloned().collect();
    assert_eq!(ops["producer_byte_rate"], Some(1048576.0));
    assert_eq!(ops["request_percentage"], Some(50.0));
    assert_eq!(ops["consumer_byte_rate"], None);
    let tls = plan
        .iter()
        .find(|a| a.entity == vec![("user".to_string(), Some("CN=alice".to_string()))])
        .expect("the other principal's entry");
    assert_eq!(tls.ops, vec![("producer_byte_rate".to_string(), None)]);
    // Each alteration validates against Kafka's rules.
    for a in &plan {
        strata_security::quota::alter(&current, a).expect("valid alteration");
    }
    // Matching quotas: nothing to do.
    let mut done = QuotaMap::new();
    done.insert(
        quota_entity("User:alice"),
        desired.iter().map(|(k, v)| (*k, QuotaValue(*v))).collect(),
    );
    assert!(quota_plan(&done, "alice", "User:alice", &desired).is_empty());
}

#[test]
fn jaas_config_escapes_what_kafkas_parser_reads() {
    assert_eq!(
        jaas_config("alice", "pa\"ss\\word"),
        "org.apache.kafka.common.security.scram.ScramLoginModule required \
         username=\"alice\" password=\"pa\\\"ss\\\\word\";"
    );
}

#[test]
fn the_secret_carries_what_a_client_needs() {
    let settings = ClientSettings {
        bootstrap: Some("strata-bootstrap.ns.svc:9092".into()),
        protocol: Some("SASL_SSL".into()),
        ca_bundle: Some("PEM".into()),
    };
    let d = scram_secret_data("alice", "secret", &settings);
    assert_eq!(d["username"], "alice");
    assert_eq!(d["password"], "secret");
    assert_eq!(d["sasl.mechanism"], "SCRAM-SHA-512");
    assert_eq!(d["security.protocol"], "SASL_SSL");
    assert_eq!(d["bootstrap.servers"], "strata-bootstrap.ns.svc:9092");
    assert_eq!(d["ca.crt"], "PEM");
    assert!(d["sasl.jaas.config"].contains("password=\"secret\""));
    let bare = scram_secret_data("alice", "secret", &ClientSettings::default());
    assert!(!bare.contains_key("ca.crt") && !bare.contains_key("bootstrap.servers"));
}

#[test]
fn generated_passwords_are_long_and_fresh() {
    let a = generate_password().unwrap();
    assert_eq!(a.len(), PASSWORD_LENGTH);
    assert_ne!(a, generate_password().unwrap());
}
