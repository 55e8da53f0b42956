//! Kafka's ACL model and the decisions of its `StandardAuthorizer`, as plain data and pure
//! functions.
//!
//! The types mirror Kafka's `AclBinding` / `AclBindingFilter` with the same wire codes, so the
//! node maps CreateAcls, DescribeAcls and DeleteAcls fields straight onto them. [`Authorizer`]
//! is an immutable snapshot of the ACL set: the node builds a new one whenever the set
//! changes and asks it, on every request, whether a principal may act on a resource.
//!
//! Decision rules (Kafka's `StandardAuthorizerData`):
//! 1. a super user is always allowed;
//! 2. the ACLs that apply to a resource are the literal ones with its exact name, the literal
//!    ones named `*`, and the prefixed ones whose name starts the resource name;
//! 3. among those, an ACL counts when its principal is the caller's or `User:*` and its host
//!    is the caller's or `*`;
//! 4. a counting DENY for the operation (or `All`) denies; otherwise a counting ALLOW for the
//!    operation, `All`, or an operation that implies it (Read/Write/Delete/Alter imply
//!    Describe, AlterConfigs implies DescribeConfigs) allows;
//! 5. otherwise the caller is allowed only when no ACL at all applies to the resource and
//!    `allow.everyone.if.no.acl.found` is set.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The resource name of a literal ACL that applies to every resource of its type.
pub const WILDCARD_RESOURCE: &str = "*";
/// The principal of an ACL that applies to every principal.
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// The host of an ACL that applies to every client address.
pub const WILDCARD_HOST: &str = "*";
/// The only name a `Cluster` resource may have.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// The wire code meaning "any value" in filters (and refused in bindings).
const ANY_CODE: i8 = 1;

/// The name Kafka gives a wire code that it does not know, used in error messages.
const UNKNOWN_NAME: &str = "UNKNOWN";

/// Declares a wire enum with its codes and Kafka's upper-case names, in one table so the
/// three can never drift apart.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal => $kafka:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in wire-code order.
            pub const ALL_VALUES: &'static [$name] = &[$($name::$variant),+];

            /// The value's Kafka wire code.
            pub fn code(self) -> i8 {
                match self {
                    $( $name::$variant => $code, )+
                }
            }

            /// The value for a wire code; `None` for UNKNOWN (0), ANY (1) and unassigned codes.
            pub fn from_code(code: i8) -> Option<Self> {
                match code {
                    $( $code => Some($name::$variant), )+
                    _ => None,
                }
            }

            /// Kafka's name for the value (`TOPIC`, `LITERAL`, `DESCRIBE_CONFIGS`, ...).
            pub fn kafka_name(self) -> &'static str {
                match self {
                    $( $name::$variant => $kafka, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.kafka_name())
            }
        }
    };
}

wire_enum! {
    /// The kind of resource an ACL protects (Kafka's `ResourceType`).
    pub enum ResourceType {
        /// A topic.
        Topic = 2 => "TOPIC",
        /// A consumer group.
        Group = 3 => "GROUP",
        /// The cluster itself, always named [`CLUSTER_NAME`].
        Cluster = 4 => "CLUSTER",
        /// A transactional producer id.
        TransactionalId = 5 => "TRANSACTIONAL_ID",
        /// A delegation token.
        DelegationToken = 6 => "DELEGATION_TOKEN",
        /// A user (for quotas and SCRAM credentials).
        User = 7 => "USER",
    }
}

wire_enum! {
    /// How an ACL's resource name is matched (Kafka's `PatternType`, KIP-290).
    pub enum PatternType {
        /// The name is the resource's exact name, or `*` for every resource.
        Literal = 3 => "LITERAL",
        /// The name is a prefix of the names of the resources it covers.
        Prefixed = 4 => "PREFIXED",
    }
}

wire_enum! {
    /// What an ACL allows or denies (Kafka's `AclOperation`).
    pub enum Operation {
        /// Every operation.
        All = 2 => "ALL",
        /// Read (fetch, consume, commit offsets).
        Read = 3 => "READ",
        /// Write (produce).
        Write = 4 => "WRITE",
        /// Create topics.
        Create = 5 => "CREATE",
        /// Delete topics, records, groups.
        Delete = 6 => "DELETE",
        /// Alter (partitions, ACLs, ...).
        Alter = 7 => "ALTER",
        /// Describe (metadata, offsets, ...).
        Describe = 8 => "DESCRIBE",
        /// Inter-broker actions.
        ClusterAction = 9 => "CLUSTER_ACTION",
        /// Describe configs.
        DescribeConfigs = 10 => "DESCRIBE_CONFIGS",
        /// Alter configs.
        AlterConfigs = 11 => "ALTER_CONFIGS",
        /// Idempotent produce.
        IdempotentWrite = 12 => "IDEMPOTENT_WRITE",
        /// Create delegation tokens.
        CreateTokens = 13 => "CREATE_TOKENS",
        /// Describe delegation tokens.
        DescribeTokens = 14 => "DESCRIBE_TOKENS",
    }
}

wire_enum! {
    /// Whether an ACL allows or denies (Kafka's `AclPermissionType`).
    pub enum Permission {
        /// The ACL forbids the operation, whatever else allows it.
        Deny = 2 => "DENY",
        /// The ACL grants the operation.
        Allow = 3 => "ALLOW",
    }
}

impl ResourceType {
    /// Position in the authorizer's per-type index.
    fn index(self) -> usize {
        match self {
            ResourceType::Topic => 0,
            ResourceType::Group => 1,
            ResourceType::Cluster => 2,
            ResourceType::TransactionalId => 3,
            ResourceType::DelegationToken => 4,
            ResourceType::User => 5,
        }
    }
}

/// Number of resource types, the size of the authorizer's per-type index.
const RESOURCE_TYPES: usize = 6;

impl Operation {
    /// Whether an ALLOW ACL for `self` grants `requested`: the same operation, `All`, or an
    /// operation that implies it. Implication is for ALLOW only: Kafka never lets a DENY for
    /// Read deny Describe.
    pub fn grants(self, requested: Operation) -> bool {
        self == Operation::All
            || self == requested
            || (requested == Operation::Describe
                && matches!(
                    self,
                    Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                ))
            || (requested == Operation::DescribeConfigs && self == Operation::AlterConfigs)
    }

    /// Whether a DENY ACL for `self` denies `requested`: only the same operation or `All`.
    pub fn denies(self, requested: Operation) -> bool {
        self == Operation::All || self == requested
    }
}

/// Kafka's name for a wire code of a field, including ANY and UNKNOWN, for error messages.
fn code_name<T: Copy>(
    code: i8,
    from_code: fn(i8) -> Option<T>,
    name: fn(T) -> &'static str,
) -> &'static str {
    match from_code(code) {
        Some(value) => name(value),
        None if code == ANY_CODE => "ANY",
        None => UNKNOWN_NAME,
    }
}

/// One ACL: who may (or may not) do what on which resources, from where (Kafka's
/// `AclBinding`, flattened).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    /// The kind of resource.
    pub resource_type: ResourceType,
    /// The resource name, the prefix for `Prefixed`, or `*` for every resource.
    pub resource_name: String,
    /// How `resource_name` is matched.
    pub pattern_type: PatternType,
    /// `Type:name` (usually `User:alice`), or `User:*` for everyone.
    pub principal: String,
    /// The client address, or `*` for any.
    pub host: String,
    /// The operation allowed or denied.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

impl AclBinding {
    /// Builds a binding from CreateAcls' wire fields, refusing what Kafka refuses: unknown or
    /// ANY codes, MATCH/ANY pattern types, an empty resource name, a cluster resource not
    /// named `kafka-cluster`, and a principal without the `Type:name` colon.
    pub fn from_wire(
        resource_type: i8,
        resource_name: &str,
        pattern_type: i8,
        principal: &str,
        host: &str,
        operation: i8,
        permission: i8,
    ) -> Result<Self> {
        // Messages follow Kafka's AclControlManager.validateNewAcl and AclApis.
        let invalid =
            |field: &str, name: &str| Error::InvalidAcl(format!("Invalid {field} {name}"));
        let resource_type = ResourceType::from_code(resource_type).ok_or_else(|| {
            invalid(
                "resourceType",
                code_name(
                    resource_type,
                    ResourceType::from_code,
                    ResourceType::kafka_name,
                ),
            )
        })?;
        let pattern_type = PatternType::from_code(pattern_type).ok_or_else(|| {
            let name = match PatternFilter::from_code(pattern_type) {
                Some(PatternFilter::Any) => "ANY",
                Some(PatternFilter::Match) => "MATCH",
                _ => UNKNOWN_NAME,
            };
            invalid("patternType", name)
        })?;
        let operation = Operation::from_code(operation).ok_or_else(|| {
            invalid(
                "operation",
                code_name(operation, Operation::from_code, Operation::kafka_name),
            )
        })?;
        let permission = Permission::from_code(permission).ok_or_else(|| {
            invalid(
                "permissionType",
                code_name(permission, Permission::from_code, Permission::kafka_name),
            )
        })?;
        if resource_type == ResourceType::Cluster && resource_name != CLUSTER_NAME {
            return Err(Error::InvalidAcl(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            )));
        }
        if resource_name.is_empty() {
            return Err(Error::InvalidAcl("Invalid empty resource name".to_owned()));
        }
        // Kafka's KafkaPrincipal parsing: split at the first colon; type and name may be
        // empty, but the colon must be there or the authorizer could never match it.
        if !principal.contains(':') {
            return Err(Error::InvalidAcl(format!(
                "expected a string in format principalType:principalName but got {principal}"
            )));
        }
        Ok(AclBinding {
            resource_type,
            resource_name: resource_name.to_owned(),
            pattern_type,
            principal: principal.to_owned(),
            host: host.to_owned(),
            operation,
            permission,
        })
    }

    /// The filter that matches exactly this binding (Kafka's `AclBinding.toFilter`).
    pub fn to_filter(&self) -> AclFilter {
        AclFilter {
            resource_type: Some(self.resource_type),
            resource_name: Some(self.resource_name.clone()),
            pattern: PatternFilter::Exact(self.pattern_type),
            principal: Some(self.principal.clone()),
            host: Some(self.host.clone()),
            operation: Some(self.operation),
            permission: Some(self.permission),
        }
    }
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Kafka's AclBinding.toString, so logs read the same as a Kafka broker's.
        write!(
            f,
            "(pattern=ResourcePattern(resourceType={}, name={}, patternType={}), \
             entry=(principal={}, host={}, operation={}, permissionType={}))",
            self.resource_type,
            self.resource_name,
            self.pattern_type,
            self.principal,
            self.host,
            self.operation,
            self.permission
        )
    }
}

/// How a filter selects resource patterns (Kafka's `PatternType` as used in filters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PatternFilter {
    /// Any pattern type; a given name must equal the binding's name exactly.
    Any,
    /// Every binding that would apply to a resource with the given name: literal ones with
    /// that name or `*`, and prefixed ones whose prefix starts the name.
    Match,
    /// Only bindings of this pattern type; a given name must equal the binding's exactly.
    Exact(PatternType),
}

impl PatternFilter {
    /// The filter's wire code (ANY=1, MATCH=2, LITERAL=3, PREFIXED=4).
    pub fn code(self) -> i8 {
        match self {
            PatternFilter::Any => ANY_CODE,
            PatternFilter::Match => 2,
            PatternFilter::Exact(pattern) => pattern.code(),
        }
    }

    /// The filter for a wire code; `None` for UNKNOWN (0) and unassigned codes.
    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            ANY_CODE => Some(PatternFilter::Any),
            2 => Some(PatternFilter::Match),
            _ => PatternType::from_code(code).map(PatternFilter::Exact),
        }
    }
}

/// A selection of bindings, as DescribeAcls and DeleteAcls send it (Kafka's
/// `AclBindingFilter`). `None` means "any".
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AclFilter {
    /// The resource type, or any.
    pub resource_type: Option<ResourceType>,
    /// The resource name, or any.
    pub resource_name: Option<String>,
    /// How the pattern type and name are compared.
    pub pattern: PatternFilter,
    /// The exact principal string, or any.
    pub principal: Option<String>,
    /// The exact host string, or any.
    pub host: Option<String>,
    /// The operation, or any.
    pub operation: Option<Operation>,
    /// The permission, or any.
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// The filter that matches every binding (Kafka's `AclBindingFilter.ANY`).
    pub fn any() -> Self {
        AclFilter {
            resource_type: None,
            resource_name: None,
            pattern: PatternFilter::Any,
            principal: None,
            host: None,
            operation: None,
            permission: None,
        }
    }

    /// Builds a filter from DescribeAcls' or DeleteAcls' wire fields; ANY (1) codes become
    /// "any", UNKNOWN (0) and unassigned codes are refused as Kafka refuses them.
    pub fn from_wire(
        resource_type: i8,
        resource_name: Option<&str>,
        pattern_type: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> Result<Self> {
        let unknown = |field: &str, code: i8| {
            Error::InvalidAcl(format!(
                "Filter contains UNKNOWN elements: {field} code {code}"
            ))
        };
        let resource_type = match resource_type {
            ANY_CODE => None,
            code => {
                Some(ResourceType::from_code(code).ok_or_else(|| unknown("resourceType", code))?)
            }
        };
        let pattern = PatternFilter::from_code(pattern_type)
            .ok_or_else(|| unknown("patternType", pattern_type))?;
        let operation = match operation {
            ANY_CODE => None,
            code => Some(Operation::from_code(code).ok_or_else(|| unknown("operation", code))?),
        };
        let permission = match permission {
            ANY_CODE => None,
            code => {
                Some(Permission::from_code(code).ok_or_else(|| unknown("permissionType", code))?)
            }
        };
        Ok(AclFilter {
            resource_type,
            resource_name: resource_name.map(str::to_owned),
            pattern,
            principal: principal.map(str::to_owned),
            host: host.map(str::to_owned),
            operation,
            permission,
        })
    }

    /// Whether the binding is selected (Kafka's `AclBindingFilter.matches`).
    pub fn matches(&self, b: &AclBinding) -> bool {
        self.matches_pattern(b) && self.matches_entry(b)
    }

    /// Kafka's `ResourcePatternFilter.matches`.
    fn matches_pattern(&self, b: &AclBinding) -> bool {
        if self.resource_type.is_some_and(|t| t != b.resource_type) {
            return false;
        }
        if let PatternFilter::Exact(pattern) = self.pattern {
            if pattern != b.pattern_type {
                return false;
            }
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        match (self.pattern, b.pattern_type) {
            (PatternFilter::Any | PatternFilter::Exact(_), _) => *name == b.resource_name,
            (PatternFilter::Match, PatternType::Literal) => {
                *name == b.resource_name || b.resource_name == WILDCARD_RESOURCE
            }
            (PatternFilter::Match, PatternType::Prefixed) => name.starts_with(&b.resource_name),
        }
    }

    /// Kafka's `AccessControlEntryFilter.matches`.
    fn matches_entry(&self, b: &AclBinding) -> bool {
        self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }
}

/// Why the authorizer decided as it did, for audit logs (Kafka logs the same rule names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The principal is a super user.
    SuperUser,
    /// A matching DENY ACL.
    DenyAcl,
    /// A matching ALLOW ACL and no matching DENY.
    AllowAcl,
    /// No ACL applies to the resource and `allow.everyone.if.no.acl.found` is set.
    DefaultAllow,
    /// No ACL grants the operation (the resource has ACLs, or the default is deny).
    DefaultDeny,
}

impl Decision {
    /// Whether the action may go ahead.
    pub fn is_allowed(self) -> bool {
        matches!(
            self,
            Decision::SuperUser | Decision::AllowAcl | Decision::DefaultAllow
        )
    }
}

/// The part of a binding that the authorizer checks once the resource matched.
#[derive(Clone, Debug)]
struct Rule {
    host: String,
    operation: Operation,
    permission: Permission,
}

/// The rules of one resource pattern, by principal string, so a decision reads only the
/// caller's rules and the wildcard principal's.
type RulesByPrincipal = HashMap<String, Vec<Rule>>;

/// The bindings of one resource type, indexed for lookups by resource name.
#[derive(Clone, Debug, Default)]
struct TypeIndex {
    /// Literal patterns by name, `*` included.
    literal: HashMap<String, RulesByPrincipal>,
    /// Prefixed patterns, sorted so the prefixes of a name are found without a full scan.
    prefixed: BTreeMap<String, RulesByPrincipal>,
}

impl TypeIndex {
    /// Calls `visit` on the rules of every prefixed pattern that starts `name`, longest
    /// first, until it returns true; returns whether it did.
    ///
    /// The walk follows Kafka's StandardAuthorizerData: take the greatest pattern not above
    /// the current bound; if it starts `name`, visit it and continue strictly below it;
    /// otherwise no longer pattern can start `name` beyond the shared prefix, so continue
    /// from that shared prefix. Every step shortens the bound, so a lookup costs at most a
    /// few B-tree searches per byte of the name and usually one or two.
    fn visit_prefixes_of(
        &self,
        name: &str,
        mut visit: impl FnMut(&RulesByPrincipal) -> bool,
    ) -> bool {
        let mut bound: Bound<&str> = Bound::Included(name);
        while let Some((pattern, rules)) = self
            .prefixed
            .range::<str, _>((Bound::Unbounded, bound))
            .next_back()
        {
            if name.starts_with(pattern.as_str()) {
                if visit(rules) {
                    return true;
                }
                bound = Bound::Excluded(&name[..pattern.len()]);
            } else {
                let mut shared = pattern
                    .bytes()
                    .zip(name.bytes())
                    .take_while(|(a, b)| a == b)
                    .count();
                // Only whole characters can form a pattern that starts `name`.
                while !name.is_char_boundary(shared) {
                    shared -= 1;
                }
                bound = Bound::Included(&name[..shared]);
            }
        }
        false
    }
}

/// What one pass over matching ACLs found.
#[derive(Default)]
struct Scan {
    /// Some ACL (of any principal) applies to the resource.
    resource_has_acls: bool,
    /// A matching ALLOW was seen.
    allowed: bool,
}

/// An immutable snapshot of the ACL set and the authorizer configuration, indexed for fast
/// decisions (Kafka's `StandardAuthorizer`).
#[derive(Clone, Debug)]
pub struct Authorizer {
    acls: Vec<AclBinding>,
    super_users: HashSet<String>,
    allow_everyone_if_no_acl_found: bool,
    by_type: [TypeIndex; RESOURCE_TYPES],
}

impl Default for Authorizer {
    fn default() -> Self {
        Authorizer::new(Vec::new(), Vec::new(), false)
    }
}

impl Authorizer {
    /// Indexes `acls` (duplicates count once, as in Kafka's ACL set) with the configured super
    /// users (`User:name` strings) and `allow.everyone.if.no.acl.found`.
    pub fn new(
        acls: impl IntoIterator<Item = AclBinding>,
        super_users: impl IntoIterator<Item = String>,
        allow_everyone_if_no_acl_found: bool,
    ) -> Self {
        let mut acls: Vec<AclBinding> = acls.into_iter().collect();
        acls.sort();
        acls.dedup();
        let mut by_type: [TypeIndex; RESOURCE_TYPES] = Default::default();
        for b in &acls {
            let index = &mut by_type[b.resource_type.index()];
            let by_pattern = match b.pattern_type {
                PatternType::Literal => index.literal.entry(b.resource_name.clone()).or_default(),
                PatternType::Prefixed => index.prefixed.entry(b.resource_name.clone()).or_default(),
            };
            by_pattern
                .entry(b.principal.clone())
                .or_default()
                .push(Rule {
                    host: b.host.clone(),
                    operation: b.operation,
                    permission: b.permission,
                });
        }
        Authorizer {
            acls,
            super_users: super_users.into_iter().collect(),
            allow_everyone_if_no_acl_found,
            by_type,
        }
    }

    /// Kafka's decision for one action: may `principal` connecting from `host` (as
    /// [`host_address`] writes it) do `operation` on the resource `name` of `resource_type`?
    /// (See the module docs.)
    pub fn authorize(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.decide(principal, host, operation, resource_type, name)
            .is_allowed()
    }

    /// [`Authorizer::authorize`] with the reason, for audit logs.
    pub fn decide(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Decision {
        if self.super_users.contains(principal) {
            return Decision::SuperUser;
        }
        let index = &self.by_type[resource_type.index()];
        let mut scan = Scan::default();
        // Each check returns true on a matching DENY, which settles the decision at once.
        let mut check =
            |rules: &RulesByPrincipal| scan_rules(rules, principal, host, operation, &mut scan);
        let denied = index.literal.get(name).is_some_and(&mut check)
            || (name != WILDCARD_RESOURCE
                && index.literal.get(WILDCARD_RESOURCE).is_some_and(&mut check))
            || index.visit_prefixes_of(name, &mut check);
        if denied {
            Decision::DenyAcl
        } else if scan.allowed {
            Decision::AllowAcl
        } else if !scan.resource_has_acls && self.allow_everyone_if_no_acl_found {
            Decision::DefaultAllow
        } else {
            Decision::DefaultDeny
        }
    }

    /// Kafka's `authorizeByResourceType` (KIP-679): may `principal` do `operation` on at least
    /// one resource of `resource_type`? Only ACLs for exactly `operation` or `All` count
    /// (no implication), and an ALLOW counts only when no DENY covers every name it covers.
    ///
    /// This walks every resource pattern of the type (reading only the caller's and
    /// `User:*`'s rules); it serves InitProducerId-style checks, not the per-request path.
    pub fn authorize_any(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        // Kafka first authorizes a made-up literal name, so super users and the
        // no-ACL default are honoured exactly as for a real resource.
        if self.authorize(principal, host, operation, resource_type, "hardcode") {
            return true;
        }
        let index = &self.by_type[resource_type.index()];
        let counts = |rules: &RulesByPrincipal, permission: Permission| {
            principals(principal).any(|p| {
                rules.get(p).is_some_and(|rules| {
                    // Exactly the operation or All, for ALLOW too: no implication here.
                    rules.iter().any(|r| {
                        r.permission == permission
                            && host_matches(&r.host, host)
                            && (r.operation == operation || r.operation == Operation::All)
                    })
                })
            })
        };

        let mut deny_literal: HashSet<&str> = HashSet::new();
        let mut allow_literal: Vec<&str> = Vec::new();
        let mut wildcard_allow = false;
        for (name, rules) in &index.literal {
            if counts(rules, Permission::Deny) {
                if name == WILDCARD_RESOURCE {
                    return false;
                }
                deny_literal.insert(name);
            }
            if counts(rules, Permission::Allow) {
                if name == WILDCARD_RESOURCE {
                    wildcard_allow = true;
                } else {
                    allow_literal.push(name);
                }
            }
        }
        let mut deny_prefixed: HashSet<&str> = HashSet::new();
        let mut allow_prefixed: Vec<&str> = Vec::new();
        for (name, rules) in &index.prefixed {
            if counts(rules, Permission::Deny) {
                // Kafka cannot store an empty prefix; if one is here it covers every name,
                // like a literal `*`, and is treated the same way.
                if name.is_empty() {
                    return false;
                }
                deny_prefixed.insert(name);
            }
            if counts(rules, Permission::Allow) {
                allow_prefixed.push(name);
            }
        }
        if wildcard_allow {
            return true;
        }
        // A denied prefix of an allowed name covers everything the allow covers.
        let dominated = |name: &str| {
            name.char_indices()
                .any(|(i, c)| deny_prefixed.contains(&name[..i + c.len_utf8()]))
        };
        allow_literal
            .iter()
            .any(|name| !deny_literal.contains(name) && !dominated(name))
            || allow_prefixed.iter().any(|name| !dominated(name))
    }

    /// Every binding, sorted and without duplicates.
    pub fn acls(&self) -> &[AclBinding] {
        &self.acls
    }

    /// The bindings a DescribeAcls or DeleteAcls filter selects.
    pub fn matching<'a>(
        &'a self,
        filter: &'a AclFilter,
    ) -> impl Iterator<Item = &'a AclBinding> + 'a {
        self.acls.iter().filter(move |b| filter.matches(b))
    }

    /// Whether `principal` is a configured super user.
    pub fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.contains(principal)
    }

    /// The `allow.everyone.if.no.acl.found` setting.
    pub fn allow_everyone_if_no_acl_found(&self) -> bool {
        self.allow_everyone_if_no_acl_found
    }
}

/// A client address written as Kafka writes it (Java's `InetAddress.getHostAddress`), which
/// is what ACL hosts are compared with: IPv6 in full lower-case groups without `::`
/// compression (`0:0:0:0:0:0:0:1`), and IPv4-mapped IPv6 as plain IPv4, as Java turns those
/// into IPv4 addresses.
pub fn host_address(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let groups: Vec<String> = v6.segments().iter().map(|g| format!("{g:x}")).collect();
                groups.join(":")
            }
        },
    }
}

/// The principal strings whose ACLs apply to `principal`: itself and the wildcard.
fn principals(principal: &str) -> impl Iterator<Item = &str> {
    std::iter::once(principal)
        .chain((principal != WILDCARD_PRINCIPAL).then_some(WILDCARD_PRINCIPAL))
}

/// Whether an ACL's host covers the client's address.
fn host_matches(acl_host: &str, host: &str) -> bool {
    acl_host == WILDCARD_HOST || acl_host == host
}

/// Reads the caller's and the wildcard principal's rules of one matching resource pattern
/// into `scan`; returns true on a DENY that applies.
fn scan_rules(
    rules: &RulesByPrincipal,
    principal: &str,
    host: &str,
    operation: Operation,
    scan: &mut Scan,
) -> bool {
    scan.resource_has_acls |= !rules.is_empty();
    for p in principals(principal) {
        for rule in rules.get(p).into_iter().flatten() {
            if !host_matches(&rule.host, host) {
                continue;
            }
            match rule.permission {
                Permission::Deny if rule.operation.denies(operation) => return true,
                Permission::Allow if rule.operation.grants(operation) => scan.allowed = true,
                _ => {}
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use Operation::*;
    use PatternType::{Literal, Prefixed};
    use Permission::{Allow, Deny};
    use ResourceType::{Cluster, Group, Topic, TransactionalId};

    fn acl(
        resource_type: ResourceType,
        name: &str,
        pattern_type: PatternType,
        principal: &str,
        host: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            resource_name: name.to_owned(),
            pattern_type,
            principal: principal.to_owned(),
            host: host.to_owned(),
            operation,
            permission,
        }
    }

    fn authz(acls: Vec<AclBinding>) -> Authorizer {
        Authorizer::new(acls, ["User:admin".to_owned()], false)
    }

    fn user(name: &str) -> String {
        format!("User:{name}")
    }

    // ---- wire codes ----

    #[test]
    fn wire_codes_match_kafka() {
        let rt: Vec<i8> = ResourceType::ALL_VALUES.iter().map(|v| v.code()).collect();
        assert_eq!(rt, [2, 3, 4, 5, 6, 7]);
        let pt: Vec<i8> = PatternType::ALL_VALUES.iter().map(|v| v.code()).collect();
        assert_eq!(pt, [3, 4]);
        let ops: Vec<i8> = Operation::ALL_VALUES.iter().map(|v| v.code()).collect();
        assert_eq!(ops, (2..=14).collect::<Vec<i8>>());
        let perms: Vec<i8> = Permission::ALL_VALUES.iter().map(|v| v.code()).collect();
        assert_eq!(perms, [2, 3]);
        assert_eq!(PatternFilter::Any.code(), 1);
        assert_eq!(PatternFilter::Match.code(), 2);
        assert_eq!(PatternFilter::Exact(Prefixed).code(), 4);
        for code in i8::MIN..=i8::MAX {
            if let Some(v) = ResourceType::from_code(code) {
                assert_eq!(v.code(), code);
            }
            if let Some(v) = Operation::from_code(code) {
                assert_eq!(v.code(), code);
            }
            if let Some(v) = PatternFilter::from_code(code) {
                assert_eq!(v.code(), code);
            }
        }
        assert_eq!(ResourceType::from_code(0), None);
        assert_eq!(ResourceType::from_code(1), None);
        assert_eq!(Operation::from_code(15), None);
        assert_eq!(Permission::from_code(1), None);
        assert_eq!(PatternFilter::from_code(0), None);
        assert_eq!(Operation::DescribeConfigs.to_string(), "DESCRIBE_CONFIGS");
        assert_eq!(
            ResourceType::TransactionalId.kafka_name(),
            "TRANSACTIONAL_ID"
        );
    }

    // ---- AclBinding::from_wire ----

    #[test]
    fn binding_from_wire_accepts_valid_fields() {
        let b = AclBinding::from_wire(2, "orders", 4, "User:alice", "*", 3, 3).expect("valid");
        assert_eq!(
            b,
            acl(Topic, "orders", Prefixed, "User:alice", "*", Read, Allow)
        );
        let cluster = AclBinding::from_wire(4, "kafka-cluster", 3, "User:bob", "10.0.0.1", 12, 2)
            .expect("valid");
        assert_eq!(cluster.operation, IdempotentWrite);
        assert_eq!(cluster.permission, Deny);
        // Kafka splits at the first colon only and allows empty parts.
        assert!(AclBinding::from_wire(3, "g", 3, "User:a:b", "*", 3, 3).is_ok());
        assert!(AclBinding::from_wire(3, "g", 3, ":anon", "*", 3, 3).is_ok());
    }

    fn refusal(result: Result<AclBinding>) -> String {
        match result {
            Err(Error::InvalidAcl(message)) => message,
            other => panic!("expected InvalidAcl, got {other:?}"),
        }
    }

    #[test]
    fn binding_from_wire_refuses_what_kafka_refuses() {
        let ok = |rt, name, pt, principal, op, perm| {
            AclBinding::from_wire(rt, name, pt, principal, "*", op, perm)
        };
        assert_eq!(
            refusal(ok(0, "t", 3, "User:a", 3, 3)),
            "Invalid resourceType UNKNOWN"
        );
        assert_eq!(
            refusal(ok(1, "t", 3, "User:a", 3, 3)),
            "Invalid resourceType ANY"
        );
        assert_eq!(
            refusal(ok(99, "t", 3, "User:a", 3, 3)),
            "Invalid resourceType UNKNOWN"
        );
        assert_eq!(
            refusal(ok(2, "t", 0, "User:a", 3, 3)),
            "Invalid patternType UNKNOWN"
        );
        assert_eq!(
            refusal(ok(2, "t", 1, "User:a", 3, 3)),
            "Invalid patternType ANY"
        );
        assert_eq!(
            refusal(ok(2, "t", 2, "User:a", 3, 3)),
            "Invalid patternType MATCH"
        );
        assert_eq!(
            refusal(ok(2, "t", 3, "User:a", 1, 3)),
            "Invalid operation ANY"
        );
        assert_eq!(
            refusal(ok(2, "t", 3, "User:a", -5, 3)),
            "Invalid operation UNKNOWN"
        );
        assert_eq!(
            refusal(ok(2, "t", 3, "User:a", 3, 1)),
            "Invalid permissionType ANY"
        );
        assert_eq!(
            refusal(ok(2, "t", 3, "User:a", 3, 0)),
            "Invalid permissionType UNKNOWN"
        );
        assert_eq!(
            refusal(ok(2, "", 3, "User:a", 3, 3)),
            "Invalid empty resource name"
        );
        assert_eq!(
            refusal(ok(4, "my-cluster", 3, "User:a", 7, 3)),
            "The only valid name for the CLUSTER resource is kafka-cluster"
        );
        assert_eq!(
            refusal(ok(2, "t", 3, "alice", 3, 3)),
            "expected a string in format principalType:principalName but got alice"
        );
        assert!(ok(2, "t", 3, "", 3, 3).is_err());
    }

    // ---- AclFilter ----

    #[test]
    fn filter_from_wire_maps_any_and_refuses_unknown() {
        let f = AclFilter::from_wire(1, None, 1, None, None, 1, 1).expect("valid");
        assert_eq!(f, AclFilter::any());
        let f =
            AclFilter::from_wire(2, Some("t"), 2, Some("User:a"), Some("*"), 8, 2).expect("valid");
        assert_eq!(f.resource_type, Some(Topic));
        assert_eq!(f.pattern, PatternFilter::Match);
        assert_eq!(f.operation, Some(Describe));
        assert_eq!(f.permission, Some(Deny));
        assert!(AclFilter::from_wire(0, None, 1, None, None, 1, 1).is_err());
        assert!(AclFilter::from_wire(1, None, 0, None, None, 1, 1).is_err());
        assert!(AclFilter::from_wire(1, None, 5, None, None, 1, 1).is_err());
        assert!(AclFilter::from_wire(1, None, 1, None, None, 0, 1).is_err());
        assert!(AclFilter::from_wire(1, None, 1, None, None, 1, 4).is_err());
    }

    fn sample_bindings() -> Vec<AclBinding> {
        vec![
            acl(Topic, "foo", Literal, "User:a", "*", Read, Allow),
            acl(Topic, "*", Literal, "User:a", "*", Read, Allow),
            acl(Topic, "fo", Prefixed, "User:a", "*", Read, Allow),
            acl(Topic, "foo", Prefixed, "User:a", "*", Read, Allow),
            acl(Topic, "foobar", Prefixed, "User:a", "*", Read, Allow),
            acl(Topic, "bar", Literal, "User:a", "*", Read, Allow),
            acl(Group, "foo", Literal, "User:a", "*", Read, Allow),
        ]
    }

    fn selected(filter: &AclFilter) -> Vec<usize> {
        sample_bindings()
            .iter()
            .enumerate()
            .filter(|(_, b)| filter.matches(b))
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn filter_match_selects_bindings_that_apply_to_the_name() {
        let f = AclFilter::from_wire(2, Some("foo"), 2, None, None, 1, 1).expect("valid");
        // literal foo, literal *, prefixed fo, prefixed foo; not foobar, bar or the group.
        assert_eq!(selected(&f), [0, 1, 2, 3]);
        let f = AclFilter::from_wire(1, None, 2, None, None, 1, 1).expect("valid");
        assert_eq!(
            selected(&f),
            [0, 1, 2, 3, 4, 5, 6],
            "MATCH without a name selects all"
        );
    }

    #[test]
    fn filter_any_and_exact_compare_names_exactly() {
        let any = AclFilter::from_wire(1, Some("foo"), 1, None, None, 1, 1).expect("valid");
        assert_eq!(selected(&any), [0, 3, 6]);
        let literal = AclFilter::from_wire(2, Some("foo"), 3, None, None, 1, 1).expect("valid");
        assert_eq!(selected(&literal), [0]);
        let prefixed = AclFilter::from_wire(2, None, 4, None, None, 1, 1).expect("valid");
        assert_eq!(selected(&prefixed), [2, 3, 4]);
        let star = AclFilter::from_wire(2, Some("*"), 1, None, None, 1, 1).expect("valid");
        assert_eq!(
            selected(&star),
            [1],
            "`*` in a filter is a name, not a wildcard"
        );
    }

    #[test]
    fn filter_entry_fields() {
        let b = acl(Topic, "t", Literal, "User:a", "h1", Write, Deny);
        assert!(b.to_filter().matches(&b));
        assert!(AclFilter::any().matches(&b));
        let mut f = AclFilter::any();
        f.principal = Some("User:b".into());
        assert!(!f.matches(&b));
        f.principal = Some("User:*".into());
        assert!(!f.matches(&b), "wildcard principal in a filter is literal");
        let mut f = AclFilter::any();
        f.host = Some("h2".into());
        assert!(!f.matches(&b));
        let mut f = AclFilter::any();
        f.operation = Some(All);
        assert!(!f.matches(&b));
        f.operation = Some(Write);
        f.permission = Some(Allow);
        assert!(!f.matches(&b));
        f.permission = Some(Deny);
        assert!(f.matches(&b));
    }

    #[test]
    fn authorizer_matching_and_dedup() {
        let b = acl(Topic, "t", Literal, "User:a", "*", Read, Allow);
        let a = authz(vec![
            b.clone(),
            b.clone(),
            acl(Group, "g", Literal, "User:a", "*", Read, Allow),
        ]);
        assert_eq!(a.acls().len(), 2);
        let mut f = AclFilter::any();
        f.resource_type = Some(Topic);
        assert_eq!(a.matching(&f).collect::<Vec<_>>(), [&b]);
    }

    // ---- authorize ----

    #[test]
    fn deny_wins_over_allow() {
        let a = authz(vec![
            acl(Topic, "t", Literal, "User:alice", "*", Read, Allow),
            acl(Topic, "t", Prefixed, "User:alice", "*", Read, Deny),
        ]);
        assert!(!a.authorize("User:alice", "h", Read, Topic, "t"));
        assert_eq!(
            a.decide("User:alice", "h", Read, Topic, "t"),
            Decision::DenyAcl
        );
        // The allow for Read implies Describe; the deny for Read does not deny Describe.
        assert_eq!(
            a.decide("User:alice", "h", Describe, Topic, "t"),
            Decision::AllowAcl
        );
        // Without the deny, the same allow grants Read.
        let a = authz(vec![acl(
            Topic,
            "t",
            Literal,
            "User:alice",
            "*",
            Read,
            Allow,
        )]);
        assert!(a.authorize("User:alice", "h", Read, Topic, "t"));
    }

    #[test]
    fn kafka_deny_precedence_with_operation_all() {
        // StandardAuthorizerTest.testDenyPrecedenceWithOperationAll
        let a = authz(vec![
            acl(Topic, "foo", Literal, "User:alice", "*", All, Deny),
            acl(Topic, "foo", Prefixed, "User:alice", "*", Read, Allow),
            acl(Topic, "foo", Literal, "User:*", "*", All, Deny),
            acl(Topic, "foo", Prefixed, "User:*", "*", Describe, Allow),
        ]);
        let alice = [
            (Write, "foo"),
            (Read, "foo"),
            (Describe, "foo"),
            (Read, "foobar"),
        ];
        let got: Vec<bool> = alice
            .iter()
            .map(|(op, n)| a.authorize("User:alice", "h", *op, Topic, n))
            .collect();
        assert_eq!(got, [false, false, false, true]);
        let bob = [
            (Describe, "foo"),
            (Read, "foo"),
            (Write, "foo"),
            (Describe, "foobaz"),
            (Read, "foobaz"),
        ];
        let got: Vec<bool> = bob
            .iter()
            .map(|(op, n)| a.authorize("User:bob", "h", *op, Topic, n))
            .collect();
        assert_eq!(got, [false, false, false, true, false]);
    }

    #[test]
    fn wildcard_principal_matches_every_user_but_only_user_star() {
        let a = authz(vec![
            acl(Group, "bar", Literal, WILDCARD_PRINCIPAL, "*", Read, Allow),
            acl(Group, "baz", Literal, "Group:*", "*", Read, Allow),
        ]);
        assert!(a.authorize("User:anyone", "h", Read, Group, "bar"));
        assert!(
            a.authorize("Group:x", "h", Read, Group, "bar"),
            "User:* covers every principal"
        );
        assert!(
            !a.authorize("User:anyone", "h", Read, Group, "baz"),
            "only User:* is a wildcard"
        );
        assert!(!a.authorize("Group:x", "h", Read, Group, "baz"));
        assert!(a.authorize("Group:*", "h", Read, Group, "baz"));
    }

    #[test]
    fn wildcard_and_exact_hosts() {
        // StandardAuthorizerTest.testHostAddressAclValidation, with 127.0.0.1 as local host.
        let a = authz(vec![
            acl(
                Topic,
                "foo",
                Literal,
                "User:alice",
                "192.168.1.1",
                Read,
                Deny,
            ),
            acl(Topic, "foo", Literal, "User:alice", "*", Read, Allow),
            acl(
                Topic,
                "bar",
                Literal,
                "User:bob",
                "192.168.1.2",
                Read,
                Allow,
            ),
            acl(
                Topic,
                "bar",
                Literal,
                "User:*",
                "127.0.0.1",
                Describe,
                Allow,
            ),
        ]);
        let check = |who: &str, host: &str| -> Vec<bool> {
            [(Read, "foo"), (Read, "bar"), (Describe, "bar")]
                .iter()
                .map(|(op, n)| a.authorize(&user(who), host, *op, Topic, n))
                .collect()
        };
        assert_eq!(check("alice", "127.0.0.1"), [true, false, true]);
        assert_eq!(check("alice", "192.168.1.1"), [false, false, false]);
        assert_eq!(check("alice", "192.168.1.2"), [true, false, false]);
        assert_eq!(check("bob", "127.0.0.1"), [false, false, true]);
        assert_eq!(check("bob", "192.168.1.1"), [false, false, false]);
        assert_eq!(check("bob", "192.168.1.2"), [false, true, true]);
    }

    #[test]
    fn prefixed_versus_literal() {
        // StandardAuthorizerTest.testPrefixAcls
        let a = authz(vec![
            acl(Topic, "fooa", Prefixed, "User:alice", "*", All, Allow),
            acl(Topic, "foobar", Literal, "User:bob", "*", All, Allow),
            acl(Topic, "f", Prefixed, "User:bob", "*", All, Allow),
        ]);
        assert!(a.authorize("User:bob", "h", Write, Topic, "foobarr"));
        assert!(!a.authorize("User:bob", "h", Read, Topic, "goobar"));
        assert!(a.authorize("User:bob", "h", Read, Topic, "fooa"));
        assert!(a.authorize("User:alice", "h", Describe, Topic, "fooa"));
        assert!(a.authorize("User:alice", "h", Describe, Topic, "fooabc"));
        assert!(
            !a.authorize("User:alice", "h", Write, Topic, "foo"),
            "prefix longer than name"
        );
        assert!(!a.authorize("User:alice", "h", Read, Topic, "baz"));
        // A literal name is not a prefix.
        let a = authz(vec![acl(Topic, "foo", Literal, "User:a", "*", Read, Allow)]);
        assert!(a.authorize("User:a", "h", Read, Topic, "foo"));
        assert!(!a.authorize("User:a", "h", Read, Topic, "foobar"));
        assert!(!a.authorize("User:a", "h", Read, Topic, "fo"));
    }

    #[test]
    fn many_acls_from_kafka_tests() {
        // StandardAuthorizerTest.addManyAcls / testAuthorizationWithManyAcls
        let a = authz(vec![
            acl(Topic, "green2", Literal, "User:*", "*", Read, Allow),
            acl(Topic, "green", Prefixed, "User:bob", "*", Read, Allow),
            acl(Topic, "betamax4", Literal, "User:bob", "*", Read, Allow),
            acl(Topic, "betamax", Literal, "User:bob", "*", Read, Allow),
            acl(Topic, "beta", Prefixed, "User:*", "*", Read, Allow),
            acl(Topic, "alpha", Prefixed, "User:*", "*", Read, Allow),
            acl(Topic, "alp", Prefixed, "User:bob", "*", Read, Deny),
            acl(Group, "*", Literal, "User:bob", "*", Write, Allow),
            acl(Group, "wheel", Literal, "User:*", "*", Write, Deny),
        ]);
        assert!(a.authorize("User:bob", "h", Read, Topic, "green1"));
        assert!(!a.authorize("User:bob", "h", Write, Group, "wheel"));
        assert!(!a.authorize("User:bob", "h", Read, Topic, "alpha"));
        assert!(a.authorize("User:bob", "h", Write, Group, "arbitrary"));
        assert!(!a.authorize("User:bob", "h", Read, Topic, "ala"));
        assert!(a.authorize("User:carol", "h", Read, Topic, "alpha1"));
        assert!(a.authorize("User:carol", "h", Read, Topic, "betamax"));
    }

    #[test]
    fn literal_wildcard_resource_applies_to_every_name() {
        let a = authz(vec![acl(Topic, "*", Literal, "User:a", "*", Write, Allow)]);
        assert!(a.authorize("User:a", "h", Write, Topic, "anything"));
        assert!(a.authorize("User:a", "h", Write, Topic, "*"));
        assert!(
            !a.authorize("User:a", "h", Write, Group, "anything"),
            "other resource type"
        );
        // A prefixed `*` is just the prefix "*".
        let a = authz(vec![acl(Topic, "*", Prefixed, "User:a", "*", Write, Allow)]);
        assert!(!a.authorize("User:a", "h", Write, Topic, "anything"));
        assert!(a.authorize("User:a", "h", Write, Topic, "*x"));
    }

    #[test]
    fn implied_describe_and_describe_configs() {
        // StandardAuthorizerTest.testFindResultImplication
        for op in [Describe, Read, Write, Delete, Alter] {
            let a = authz(vec![acl(
                Topic, "foo_", Prefixed, "User:bob", "*", op, Allow,
            )]);
            assert!(
                a.authorize("User:bob", "h", Describe, Topic, "foo_bar"),
                "{op} implies DESCRIBE"
            );
        }
        for op in [
            Create,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
        ] {
            let a = authz(vec![acl(
                Topic, "foo_", Prefixed, "User:bob", "*", op, Allow,
            )]);
            assert!(
                !a.authorize("User:bob", "h", Describe, Topic, "foo_bar"),
                "{op} does not imply DESCRIBE"
            );
        }
        for op in [DescribeConfigs, AlterConfigs] {
            let a = authz(vec![acl(
                Topic, "foo_", Prefixed, "User:bob", "*", op, Allow,
            )]);
            assert!(a.authorize("User:bob", "h", DescribeConfigs, Topic, "foo_bar"));
        }
        let a = authz(vec![acl(
            Topic, "foo_", Prefixed, "User:bob", "*", Read, Allow,
        )]);
        assert!(!a.authorize("User:bob", "h", DescribeConfigs, Topic, "foo_bar"));
        assert!(
            !a.authorize("User:bob", "h", Write, Topic, "foo_bar"),
            "Describe does not imply upward"
        );
        // Deny ACLs do not imply: a deny for Read leaves Describe to the allow.
        for op in [Read, Write, Delete, Alter] {
            let a = authz(vec![
                acl(Topic, "foo_", Prefixed, "User:bob", "*", op, Deny),
                acl(Topic, "foo_", Prefixed, "User:bob", "*", Describe, Allow),
            ]);
            assert!(a.authorize("User:bob", "h", Describe, Topic, "foo_bar"));
        }
        let a = authz(vec![
            acl(Topic, "foo_", Prefixed, "User:bob", "*", AlterConfigs, Deny),
            acl(
                Topic,
                "foo_",
                Prefixed,
                "User:bob",
                "*",
                DescribeConfigs,
                Allow,
            ),
        ]);
        assert!(a.authorize("User:bob", "h", DescribeConfigs, Topic, "foo_bar"));
        assert!(!a.authorize("User:bob", "h", AlterConfigs, Topic, "foo_bar"));
    }

    #[test]
    fn operation_all() {
        // StandardAuthorizerTest.testTopicAclWithOperationAll
        let a = authz(vec![
            acl(Topic, "foo", Literal, "User:*", "*", All, Allow),
            acl(Topic, "bar", Prefixed, "User:alice", "*", All, Allow),
            acl(Topic, "baz", Literal, "User:bob", "*", All, Allow),
        ]);
        let run = |who: &str, actions: [(Operation, &str); 3]| -> Vec<bool> {
            actions
                .iter()
                .map(|(op, n)| a.authorize(&user(who), "h", *op, Topic, n))
                .collect()
        };
        assert_eq!(
            run(
                "alice",
                [(Write, "foo"), (DescribeConfigs, "bar"), (Describe, "baz")]
            ),
            [true, true, false]
        );
        assert_eq!(
            run("bob", [(Write, "foo"), (Read, "bar"), (Describe, "baz")]),
            [true, false, true]
        );
        assert_eq!(
            run("malory", [(Describe, "foo"), (Write, "bar"), (Read, "baz")]),
            [true, false, false]
        );
        // A deny for All denies every operation.
        let a = authz(vec![
            acl(Topic, "t", Literal, "User:a", "*", All, Allow),
            acl(Topic, "t", Literal, "User:a", "*", All, Deny),
        ]);
        assert!(Operation::ALL_VALUES
            .iter()
            .all(|op| !a.authorize("User:a", "h", *op, Topic, "t")));
    }

    #[test]
    fn super_users_bypass_every_acl() {
        let a = Authorizer::new(
            vec![acl(Topic, "*", Literal, WILDCARD_PRINCIPAL, "*", All, Deny)],
            ["User:alice".to_owned(), "User:chris".to_owned()],
            false,
        );
        assert!(a.authorize("User:alice", "h", Write, Topic, "t"));
        assert_eq!(
            a.decide("User:chris", "h", Alter, Cluster, CLUSTER_NAME),
            Decision::SuperUser
        );
        assert!(!a.authorize("User:bob", "h", Write, Topic, "t"));
        assert!(
            !a.authorize("User:Alice", "h", Write, Topic, "t"),
            "names are case sensitive"
        );
        assert!(a.is_super_user("User:alice"));
    }

    #[test]
    fn allow_everyone_if_no_acl_found() {
        // StandardAuthorizerTest.testAllowEveryoneIfNoAclFoundConfig{Enabled,Disabled}
        let acls = vec![acl(
            Topic,
            "topic1",
            Literal,
            "User:Alice",
            "*",
            Read,
            Allow,
        )];
        let open = Authorizer::new(acls.clone(), ["User:alice".to_owned()], true);
        let closed = Authorizer::new(acls, ["User:alice".to_owned()], false);
        // topic1 has ACLs (for someone else): denied either way.
        assert!(!open.authorize("User:Bob", "h", Read, Topic, "topic1"));
        assert_eq!(
            open.decide("User:Bob", "h", Read, Topic, "topic1"),
            Decision::DefaultDeny
        );
        assert!(!closed.authorize("User:Bob", "h", Read, Topic, "topic1"));
        // topic2 has none: the default decides.
        assert_eq!(
            open.decide("User:Bob", "h", Read, Topic, "topic2"),
            Decision::DefaultAllow
        );
        assert!(!closed.authorize("User:Bob", "h", Read, Topic, "topic2"));
        // ACLs of another operation or host still count as "ACLs for the resource".
        let open = Authorizer::new(
            vec![acl(
                Topic, "t", Prefixed, "User:a", "10.0.0.1", Write, Allow,
            )],
            Vec::new(),
            true,
        );
        assert!(!open.authorize("User:a", "10.0.0.2", Read, Topic, "tx"));
        assert!(open.authorize("User:a", "10.0.0.2", Read, Topic, "u"));
        assert!(
            open.authorize("User:a", "10.0.0.2", Read, Group, "tx"),
            "other types are separate"
        );
    }

    #[test]
    fn multibyte_names_and_prefixes() {
        let a = authz(vec![
            acl(Topic, "é", Prefixed, "User:a", "*", Read, Allow),
            acl(Topic, "éa", Prefixed, "User:a", "*", Read, Deny),
            acl(Topic, "e", Prefixed, "User:a", "*", Write, Allow),
        ]);
        assert!(a.authorize("User:a", "h", Read, Topic, "éb"));
        assert!(!a.authorize("User:a", "h", Read, Topic, "éa"));
        assert!(!a.authorize("User:a", "h", Read, Topic, "e\u{301}"));
        assert!(a.authorize("User:a", "h", Write, Topic, "e\u{301}"));
        assert!(
            !a.authorize("User:a", "h", Read, Topic, "\u{e8}"),
            "è shares a lead byte with é"
        );
    }

    // ---- authorize_any (KIP-679, Kafka's BaseAuthorizerTest) ----

    const U1: &str = "User:user1";
    const H1: &str = "192.168.1.1";
    const H2: &str = "192.168.1.2";

    fn by_type(
        acls: &[AclBinding],
        principal: &str,
        host: &str,
        op: Operation,
        rt: ResourceType,
    ) -> bool {
        authz(acls.to_vec()).authorize_any(principal, host, op, rt)
    }

    #[test]
    fn authorize_any_allow_then_deny() {
        let allow = acl(Topic, "sb1", Literal, U1, H1, Read, Allow);
        let deny = acl(Topic, "sb1", Literal, U1, H1, Read, Deny);
        assert!(!by_type(&[], U1, H1, Read, Topic));
        assert!(by_type(std::slice::from_ref(&allow), U1, H1, Read, Topic));
        assert!(!by_type(&[allow, deny], U1, H1, Read, Topic));
        // Write: testAuthorizeByResourceTypeDenyTakesPrecedence
        let allow = acl(Topic, "sb1", Literal, U1, H1, Write, Allow);
        let deny = acl(Topic, "sb1", Literal, U1, H1, Write, Deny);
        assert!(by_type(std::slice::from_ref(&allow), U1, H1, Write, Topic));
        assert!(!by_type(&[allow, deny], U1, H1, Write, Topic));
    }

    #[test]
    fn authorize_any_unrelated_deny_does_not_dominate() {
        let u2 = "User:user2";
        let acls = [
            acl(Topic, "sb1", Literal, U1, H1, Read, Deny),
            acl(Topic, "sb1", Literal, u2, H1, Read, Deny),
            acl(Topic, "sb1", Literal, U1, H2, Write, Deny),
            acl(Topic, "sb1", Literal, u2, H2, Read, Deny),
            acl(Topic, "sb1", Literal, U1, H2, Read, Allow),
            acl(Topic, "sb2", Literal, U1, H2, Read, Deny),
            acl(Group, "s", Prefixed, U1, H2, Read, Deny),
        ];
        assert!(!by_type(&acls, U1, H1, Read, Topic));
        assert!(!by_type(&acls, U1, H1, Read, Group));
        assert!(!by_type(&acls, U1, H1, Read, TransactionalId));
        assert!(!by_type(&acls, U1, H1, Read, Cluster));
        assert!(by_type(&acls, U1, H2, Read, Topic));
    }

    #[test]
    fn authorize_any_prefixed_deny_dominates() {
        let allow = |name: &str| acl(Group, name, Prefixed, U1, H1, Read, Allow);
        let deny = |name: &str| acl(Group, name, Prefixed, U1, H1, Read, Deny);
        let mut acls = vec![allow("abcde")];
        assert!(by_type(&acls, U1, H1, Read, Group));
        acls.push(deny("abcd"));
        assert!(!by_type(&acls, U1, H1, Read, Group));
        acls.push(allow("abc"));
        assert!(by_type(&acls, U1, H1, Read, Group));
        acls.push(deny("a"));
        assert!(!by_type(&acls, U1, H1, Read, Group));
        acls.push(allow("ab"));
        assert!(!by_type(&acls, U1, H1, Read, Group));
        // A literal deny with the same name does not dominate a prefixed allow.
        let acls = [allow("x"), acl(Group, "x", Literal, U1, H1, Read, Deny)];
        assert!(by_type(&acls, U1, H1, Read, Group));
    }

    #[test]
    fn authorize_any_wildcard_deny_dominates() {
        let ace = |name: &str, pt, perm| acl(Group, name, pt, U1, H1, Write, perm);
        let mut acls = vec![ace("hello", Prefixed, Allow)];
        assert!(by_type(&acls, U1, H1, Write, Group));
        acls.push(ace("*", Literal, Deny));
        assert!(!by_type(&acls, U1, H1, Write, Group));
        acls.push(ace("*", Literal, Allow));
        assert!(!by_type(&acls, U1, H1, Write, Group));
        acls.push(ace("aloha", Literal, Allow));
        assert!(!by_type(&acls, U1, H1, Write, Group));
        // A wildcard allow alone wins over prefixed denies: some names stay allowed.
        let acls = [ace("*", Literal, Allow), ace("a", Prefixed, Deny)];
        assert!(by_type(&acls, U1, H1, Write, Group));
    }

    #[test]
    fn authorize_any_with_all_operation() {
        let deny_write = acl(Topic, "sb1", Literal, U1, H1, Write, Deny);
        let allow_all = acl(Topic, "sb1", Literal, U1, H1, All, Allow);
        let deny_all = acl(Topic, "sb1", Literal, U1, H1, All, Deny);
        assert!(!by_type(&[], U1, H1, Read, Topic));
        assert!(by_type(
            &[deny_write.clone(), allow_all.clone()],
            U1,
            H1,
            Read,
            Topic
        ));
        assert!(!by_type(
            &[deny_write, allow_all, deny_all],
            U1,
            H1,
            Read,
            Topic
        ));
        // No implication here: an allow for Write gives no Describe on "some topic".
        let a = authz(vec![acl(Topic, "t", Literal, U1, H1, Write, Allow)]);
        assert!(a.authorize(U1, H1, Describe, Topic, "t"));
        assert!(!a.authorize_any(U1, H1, Describe, Topic));
    }

    #[test]
    fn authorize_any_with_wildcard_host() {
        let allow_h1 = acl(Topic, "sb1", Literal, U1, H1, Read, Allow);
        let deny_all_hosts1 = acl(Topic, "sb1", Literal, U1, "*", Read, Deny);
        let deny_h1 = acl(Topic, "sb2", Literal, U1, H1, Read, Deny);
        let allow_all_hosts2 = acl(Topic, "sb2", Literal, U1, "*", Read, Allow);
        let deny_all_hosts2 = acl(Topic, "sb2", Literal, U1, "*", Read, Deny);
        let mut acls = vec![allow_h1];
        assert!(by_type(&acls, U1, H1, Read, Topic));
        acls.push(deny_all_hosts1);
        assert!(!by_type(&acls, U1, H1, Read, Topic));
        acls.push(deny_h1);
        assert!(!by_type(&acls, U1, H1, Read, Topic));
        assert!(!by_type(&acls, U1, H2, Read, Topic));
        acls.push(allow_all_hosts2);
        assert!(by_type(&acls, U1, H2, Read, Topic));
        acls.push(deny_all_hosts2);
        assert!(!by_type(&acls, U1, H2, Read, Topic));
    }

    #[test]
    fn authorize_any_with_wildcard_principal() {
        let u2 = "User:user2";
        let mut acls = vec![acl(Topic, "sb1", Literal, U1, H1, Read, Allow)];
        assert!(by_type(&acls, U1, H1, Read, Topic));
        acls.push(acl(
            Topic,
            "sb1",
            Literal,
            WILDCARD_PRINCIPAL,
            H1,
            Read,
            Deny,
        ));
        assert!(!by_type(&acls, U1, H1, Read, Topic));
        acls.push(acl(Topic, "sb2", Literal, U1, H1, Read, Deny));
        assert!(!by_type(&acls, U1, H1, Read, Topic));
        assert!(!by_type(&acls, u2, H1, Read, Topic));
        acls.push(acl(
            Topic,
            "sb2",
            Literal,
            WILDCARD_PRINCIPAL,
            H1,
            Read,
            Allow,
        ));
        assert!(by_type(&acls, u2, H1, Read, Topic));
        acls.push(acl(
            Topic,
            "sb2",
            Literal,
            WILDCARD_PRINCIPAL,
            H1,
            Read,
            Deny,
        ));
        assert!(!by_type(&acls, u2, H1, Read, Topic));
    }

    #[test]
    fn authorize_any_super_user_and_default() {
        let deny_all = |rt| acl(rt, "*", Literal, WILDCARD_PRINCIPAL, "*", All, Deny);
        let a = Authorizer::new(
            vec![
                deny_all(Topic),
                deny_all(Cluster),
                deny_all(Group),
                deny_all(TransactionalId),
            ],
            ["User:superuser1".to_owned()],
            false,
        );
        for rt in [Topic, Cluster, Group, TransactionalId] {
            assert!(a.authorize_any("User:superuser1", "192.0.4.4", Read, rt));
            assert!(!a.authorize_any("User:other", "192.0.4.4", Read, rt));
        }
        // With allow.everyone.if.no.acl.found, a type whose ACLs do not touch the made-up
        // name Kafka checks first is open to everyone, as in Kafka.
        let acls = vec![acl(Topic, "t", Literal, "User:x", "*", Read, Allow)];
        assert!(Authorizer::new(acls.clone(), Vec::new(), true).authorize_any(U1, H1, Write, Topic));
        assert!(!Authorizer::new(acls, Vec::new(), false).authorize_any(U1, H1, Write, Topic));
    }

    #[test]
    fn host_address_is_written_like_java() {
        let parse = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(host_address(parse("192.168.1.1")), "192.168.1.1");
        assert_eq!(host_address(parse("::1")), "0:0:0:0:0:0:0:1");
        assert_eq!(host_address(parse("2001:DB8::a:0")), "2001:db8:0:0:0:0:a:0");
        assert_eq!(host_address(parse("::ffff:10.0.0.7")), "10.0.0.7");
        let a = authz(vec![acl(
            Topic,
            "t",
            Literal,
            "User:a",
            "0:0:0:0:0:0:0:1",
            Read,
            Allow,
        )]);
        assert!(a.authorize("User:a", &host_address(parse("::1")), Read, Topic, "t"));
    }

    // ---- serde ----

    #[test]
    fn serde_json_round_trip() {
        let b = acl(
            TransactionalId,
            "tx-",
            Prefixed,
            "User:a",
            "*",
            IdempotentWrite,
            Deny,
        );
        let json = serde_json::to_string(&b).expect("serialize");
        assert!(
            json.contains("\"resource_type\":\"TransactionalId\""),
            "{json}"
        );
        let back: AclBinding = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, b);
        let list = vec![
            b.clone(),
            acl(Cluster, CLUSTER_NAME, Literal, "User:*", "*", All, Allow),
        ];
        let back: Vec<AclBinding> =
            serde_json::from_str(&serde_json::to_string(&list).expect("ser")).expect("de");
        assert_eq!(back, list);
        let f = b.to_filter();
        let back: AclFilter =
            serde_json::from_str(&serde_json::to_string(&f).expect("ser")).expect("de");
        assert_eq!(back, f);
        assert!(serde_json::from_str::<AclBinding>("{\"resource_type\":\"Any\"}").is_err());
    }

    #[test]
    fn display_reads_like_kafka() {
        let b = acl(Topic, "t", Literal, "User:a", "*", Read, Allow);
        assert_eq!(
            b.to_string(),
            "(pattern=ResourcePattern(resourceType=TOPIC, name=t, patternType=LITERAL), \
             entry=(principal=User:a, host=*, operation=READ, permissionType=ALLOW))"
        );
    }

    // ---- properties ----

    /// The rules written out directly over every binding, to check the index against.
    #[allow(clippy::too_many_arguments)] // mirrors authorize() plus the configuration
    fn naive_authorize(
        acls: &[AclBinding],
        super_users: &[String],
        allow_if_none: bool,
        principal: &str,
        host: &str,
        op: Operation,
        rt: ResourceType,
        name: &str,
    ) -> bool {
        if super_users.iter().any(|s| s == principal) {
            return true;
        }
        let applies = |b: &&AclBinding| {
            b.resource_type == rt
                && match b.pattern_type {
                    Literal => b.resource_name == name || b.resource_name == "*",
                    Prefixed => name.starts_with(&b.resource_name),
                }
        };
        let counts = |b: &AclBinding| {
            (b.principal == principal || b.principal == "User:*")
                && (b.host == "*" || b.host == host)
        };
        let implied = |acl_op: Operation| {
            acl_op == All
                || acl_op == op
                || (op == Describe && [Read, Write, Delete, Alter].contains(&acl_op))
                || (op == DescribeConfigs && acl_op == AlterConfigs)
        };
        let applicable: Vec<&AclBinding> = acls.iter().filter(applies).collect();
        let deny = applicable.iter().any(|b| {
            counts(b) && b.permission == Deny && (b.operation == All || b.operation == op)
        });
        let allow = applicable
            .iter()
            .any(|b| counts(b) && b.permission == Allow && implied(b.operation));
        !deny && (allow || (applicable.is_empty() && allow_if_none))
    }

    /// Kafka's default `authorizeByResourceType`, transcribed over the plain binding list.
    fn naive_authorize_any(
        a: &Authorizer,
        principal: &str,
        host: &str,
        op: Operation,
        rt: ResourceType,
    ) -> bool {
        if a.authorize(principal, host, op, rt, "hardcode") {
            return true;
        }
        let mut deny_lit = HashSet::new();
        let mut deny_pre = HashSet::new();
        let mut allow_lit = HashSet::new();
        let mut allow_pre = HashSet::new();
        let mut wildcard_allow = false;
        for b in a.acls().iter().filter(|b| b.resource_type == rt) {
            if b.host != host && b.host != "*" {
                continue;
            }
            if b.principal != principal && b.principal != "User:*" {
                continue;
            }
            if b.operation != op && b.operation != All {
                continue;
            }
            let name = b.resource_name.as_str();
            match (b.permission, b.pattern_type) {
                (Deny, Literal) if name == "*" => return false,
                (Deny, Prefixed) if name.is_empty() => return false,
                (Deny, Literal) => {
                    deny_lit.insert(name);
                }
                (Deny, Prefixed) => {
                    deny_pre.insert(name);
                }
                (Allow, Literal) if name == "*" => wildcard_allow = true,
                (Allow, Literal) => {
                    allow_lit.insert(name);
                }
                (Allow, Prefixed) => {
                    allow_pre.insert(name);
                }
            }
        }
        if wildcard_allow {
            return true;
        }
        let dominated =
            |s: &str| (1..=s.len()).any(|i| s.is_char_boundary(i) && deny_pre.contains(&s[..i]));
        allow_lit
            .iter()
            .any(|s| !deny_lit.contains(s) && !dominated(s))
            || allow_pre.iter().any(|s| !dominated(s))
    }

    const NAMES: &[&str] = &[
        "", "*", "a", "ab", "abc", "abd", "b", "ba", "é", "éa", "e", "hardcode", "hard",
    ];
    const PRINCIPALS: &[&str] = &["User:alice", "User:bob", "User:*", "Group:x", "User:admin"];
    const HOSTS: &[&str] = &["*", "h1", "h2"];

    fn binding_strategy() -> impl Strategy<Value = AclBinding> {
        (
            prop::sample::select(vec![Topic, Group]),
            prop::sample::select(NAMES.to_vec()),
            prop::sample::select(vec![Literal, Prefixed]),
            prop::sample::select(PRINCIPALS.to_vec()),
            prop::sample::select(HOSTS.to_vec()),
            prop::sample::select(Operation::ALL_VALUES.to_vec()),
            prop::sample::select(vec![Allow, Deny]),
        )
            .prop_map(|(rt, name, pt, principal, host, op, perm)| {
                acl(rt, name, pt, principal, host, op, perm)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn from_wire_never_panics(
            rt in any::<i8>(), pt in any::<i8>(), op in any::<i8>(), perm in any::<i8>(),
            name in ".*", principal in ".*", host in ".*",
            opt_name in proptest::option::of(".*"), opt_principal in proptest::option::of(".*"),
        ) {
            if let Ok(b) = AclBinding::from_wire(rt, &name, pt, &principal, &host, op, perm) {
                prop_assert_eq!(b.resource_type.code(), rt);
                prop_assert!(!b.resource_name.is_empty());
                prop_assert!(b.to_filter().matches(&b));
            }
            let filter = AclFilter::from_wire(
                rt, opt_name.as_deref(), pt, opt_principal.as_deref(), Some(&host), op, perm,
            );
            if let Ok(f) = filter {
                let b = acl(Topic, &name, Prefixed, &principal, &host, Read, Allow);
                let _ = f.matches(&b);
            }
        }

        #[test]
        fn authorize_agrees_with_a_full_scan(
            acls in prop::collection::vec(binding_strategy(), 0..40),
            allow_if_none in any::<bool>(),
            queries in prop::collection::vec((
                prop::sample::select(PRINCIPALS.to_vec()),
                prop::sample::select(vec!["h1", "h2", "*"]),
                prop::sample::select(Operation::ALL_VALUES.to_vec()),
                prop::sample::select(vec![Topic, Group]),
                prop::sample::select(vec!["a", "ab", "abc", "abcd", "abd", "b", "*", "é", "éa", "éé", "e", "x", "hardcode"]),
            ), 1..20),
        ) {
            let supers = vec!["User:admin".to_owned()];
            let a = Authorizer::new(acls.clone(), supers.clone(), allow_if_none);
            for (principal, host, op, rt, name) in queries {
                let expected = naive_authorize(&acls, &supers, allow_if_none, principal, host, op, rt, name);
                prop_assert_eq!(a.authorize(principal, host, op, rt, name), expected,
                    "{} {} {} {} {}", principal, host, op, rt, name);
                prop_assert_eq!(a.authorize_any(principal, host, op, rt),
                    naive_authorize_any(&a, principal, host, op, rt), "any {} {} {} {}", principal, host, op, rt);
            }
        }

        #[test]
        fn prefix_walk_finds_every_prefix(
            patterns in prop::collection::btree_set("[ab\u{e9}]{0,4}", 0..20),
            name in "[ab\u{e9}]{0,6}",
        ) {
            let acls = patterns.iter().map(|p| acl(Topic, p, Prefixed, "User:a", "*", Read, Allow));
            let a = authz(acls.collect());
            let index = &a.by_type[Topic.index()];
            let mut found = Vec::new();
            index.visit_prefixes_of(&name, |rules| {
                found.push(rules.len());
                false
            });
            let expected = patterns.iter().filter(|p| name.starts_with(p.as_str())).count();
            prop_assert_eq!(found.len(), expected);
        }
    }
}
