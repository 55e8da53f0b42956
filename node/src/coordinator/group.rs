//! One consumer group under Kafka's classic rebalance protocol: a state machine over plain
//! data. Join and sync responses that must wait are parked as oneshot senders.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;

use super::records::{GroupValue, MemberValue, OffsetValue};

/// Group states, named as Kafka names them in DescribeGroups and ListGroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// Kafka's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Timeouts and limits the coordinator runs with.
#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    pub initial_rebalance_delay: Duration,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
}

/// What a JoinGroup gets back.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, instance id, metadata): only for the leader.
    pub members: Vec<(String, Option<String>, Bytes)>,
    pub skip_assignment: bool,
}

impl JoinResult {
    fn error(code: ResponseError, member_id: &str) -> Self {
        JoinResult {
            error: code.code(),
            generation: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

/// What a SyncGroup gets back.
#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// Either an answer now or one to wait for.
pub enum Outcome<T> {
    Now(T),
    Wait(oneshot::Receiver<T>),
}

/// One member.
#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat: Instant,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// The parameters of a JoinGroup.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: an unknown member must first be given an id (MEMBER_ID_REQUIRED).
    pub require_known_member_id: bool,
    /// v9+: the leader may skip assignment when a static leader rejoins.
    pub supports_skip_assignment: bool,
}

/// A consumer group.
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: IndexMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, awaiting the second join.
    pending: HashMap<String, Instant>,
    static_members: HashMap<String, String>,
    pub offsets: BTreeMap<(String, i32), OffsetValue>,
    rebalance_deadline: Option<Instant>,
    initial_delay_until: Option<Instant>,
    sync_deadline: Option<Instant>,
    /// Wall-clock ms of the last state change.
    pub state_timestamp: i64,
    /// Set when the persisted group metadata is out of date.
    pub needs_persist: bool,
}

fn now_ms() -> i64 {
    crate::fsutil::now_ms()
}

impl Group {
    /// A new, empty group.
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: IndexMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            offsets: BTreeMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            sync_deadline: None,
            state_timestamp: now_ms(),
            needs_persist: false,
        }
    }

    /// Restore from a persisted metadata record; members get a fresh session to reconnect.
    pub fn restore(&mut self, v: GroupValue, now: Instant) {
        self.generation = v.generation;
        self.protocol_type = Some(v.protocol_type).filter(|s| !s.is_empty());
        self.protocol = v.protocol;
        self.leader = v.leader;
        self.state_timestamp = v.current_state_timestamp;
        self.members.clear();
        self.static_members.clear();
        for m in v.members {
            if let Some(i) = &m.group_instance_id {
                self.static_members.insert(i.clone(), m.member_id.clone());
            }
            let proto = self.protocol.clone().unwrap_or_default();
            self.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id,
                    instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout: Duration::from_millis(m.session_timeout.max(0) as u64),
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout.max(0) as u64),
                    protocols: vec![(proto, m.subscription)],
                    assignment: m.assignment,
                    last_heartbeat: now,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
    }

    /// The record describing this group now.
    pub fn to_record(&self) -> GroupValue {
        let proto = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            current_state_timestamp: self.state_timestamp,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout: m.rebalance_timeout.as_millis() as i32,
                    session_timeout: m.session_timeout.as_millis() as i32,
                    subscription: m.metadata_for(&proto),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    fn set_state(&mut self, s: GroupState) {
        self.state = s;
        self.state_timestamp = now_ms();
    }

    /// Whether every member supports some protocol in `protocols`, and the type matches.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// Handle a JoinGroup.
    pub fn join(
        &mut self,
        req: JoinRequest,
        cfg: &GroupConfig,
        now: Instant,
    ) -> Outcome<JoinResult> {
        if req.session_timeout_ms < cfg.min_session_timeout_ms
            || req.session_timeout_ms > cfg.max_session_timeout_ms
        {
            return Outcome::Now(JoinResult::error(
                ResponseError::InvalidSessionTimeout,
                &req.member_id,
            ));
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return Outcome::Now(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        if self.state == GroupState::Dead {
            return Outcome::Now(JoinResult::error(
                ResponseError::CoordinatorNotAvailable,
                &req.member_id,
            ));
        }
        if !self.supports(&req.protocol_type, &req.protocols) {
            return Outcome::Now(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        if req.member_id.is_empty() {
            return self.join_unknown(req, cfg, now);
        }
        self.join_known(req, cfg, now)
    }

    fn join_unknown(
        &mut self,
        req: JoinRequest,
        cfg: &GroupConfig,
        now: Instant,
    ) -> Outcome<JoinResult> {
        let new_id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
        if let Some(instance) = &req.instance_id {
            if let Some(old_id) = self.static_members.get(instance).cloned() {
                return self.replace_static(old_id, new_id, req, cfg, now);
            }
            // A new static member joins directly, without the member-id round trip.
            return self.add_and_rebalance(new_id, req, cfg, now);
        }
        if req.require_known_member_id {
            self.pending.insert(
                new_id.clone(),
                now + Duration::from_millis(req.session_timeout_ms as u64),
            );
            return Outcome::Now(JoinResult::error(ResponseError::MemberIdRequired, &new_id));
        }
        self.add_and_rebalance(new_id, req, cfg, now)
    }

    fn replace_static(
        &mut self,
        old_id: String,
        new_id: String,
        req: JoinRequest,
        cfg: &GroupConfig,
        now: Instant,
    ) -> Outcome<JoinResult> {
        let Some(mut old) = self.members.shift_remove(&old_id) else {
            self.static_members
                .remove(req.instance_id.as_deref().unwrap_or_default());
            return self.add_and_rebalance(new_id, req, cfg, now);
        };
        // Fence the old incarnation's parked calls.
        if let Some(w) = old.join_waiter.take() {
            let _ = w.send(JoinResult::error(ResponseError::FencedInstanceId, &old_id));
        }
        if let Some(w) = old.sync_waiter.take() {
            let _ = w.send(SyncResult {
                error: ResponseError::FencedInstanceId.code(),
                ..Default::default()
            });
        }
        let same_protocols = old.protocols == req.protocols;
        old.id = new_id.clone();
        old.protocols = req.protocols.clone();
        old.session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
        old.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
        old.client_id = req.client_id.clone();
        old.client_host = req.client_host.clone();
        old.last_heartbeat = now;
        let was_leader = self.leader.as_deref() == Some(old_id.as_str());
        self.members.insert(new_id.clone(), old);
        self.static_members
            .insert(req.instance_id.clone().unwrap_or_default(), new_id.clone());
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        self.needs_persist = true;
        if self.state == GroupState::Stable && same_protocols {
            // No rebalance: the member keeps its assignment under the current generation.
            let proto = self.protocol.clone().unwrap_or_default();
            let mut result = JoinResult {
                error: 0,
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol.clone(),
                leader: self.leader.clone().unwrap_or_default(),
                member_id: new_id.clone(),
                ..Default::default()
            };
            if was_leader && req.supports_skip_assignment {
                result.skip_assignment = true;
                result.members = self
                    .members
                    .values()
                    .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata_for(&proto)))
                    .collect();
            } else if was_leader {
                // Older leaders would reassign from scratch: rebalance properly instead.
                return self.rejoin_and_rebalance(new_id, cfg, now);
            }
            return Outcome::Now(result);
        }
        self.rejoin_and_rebalance(new_id, cfg, now)
    }

    fn rejoin_and_rebalance(
        &mut self,
        id: String,
        cfg: &GroupConfig,
        now: Instant,
    ) -> Outcome<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(&id) {
            m.join_waiter = Some(tx);
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(cfg, now);
        }
        self.maybe_complete_join(now);
        Outcome::Wait(rx)
    }

    fn add_and_rebalance(
        &mut self,
        id: String,
        req: JoinRequest,
        cfg: &GroupConfig,
        now: Instant,
    ) -> Outcome<JoinResult> {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(i) = &req.instance_id {
            self.static_members.insert(i.clone(), id.clone());
        }
        let (tx, rx) = oneshot::channel();
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                instance_id: req.instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout: Duration::from_millis(req.session_timeout_ms as u64),
                rebalance_timeout: Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64),
                protocols: req.protocols,
                assignment: Bytes::new(),
                last_heartbeat: now,
                join_waiter: Some(tx),
                sync_waiter: None,
            },
        );
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(cfg, now);
        } else if let Some(until) = self.initial_delay_until {
            // A join during the initial delay extends it, within the rebalance timeout.
            let limit = self.rebalance_deadline.unwrap_or(now);
            self.initial_delay_until =
                Some((now + cfg.initial_rebalance_delay).min(limit).max(until));
        }
        self.maybe_complete_join(now);
        Outcome::Wait(rx)
    }

    fn join_known(
        &mut self,
        req: JoinRequest,
        cfg: &GroupConfig,
        now: Instant,
    ) -> Outcome<JoinResult> {
        let id = req.member_id.clone();
        if self.pending.remove(&id).is_some() {
            return self.add_and_rebalance(id, req, cfg, now);
        }
        let Some(member) = self.members.get_mut(&id) else {
            return Outcome::Now(JoinResult::error(ResponseError::UnknownMemberId, &id));
        };
        if let (Some(want), Some(have)) = (&req.instance_id, &member.instance_id) {
            if want != have {
                return Outcome::Now(JoinResult::error(ResponseError::FencedInstanceId, &id));
            }
        }
        member.last_heartbeat = now;
        let changed = member.protocols != req.protocols;
        member.protocols = req.protocols.clone();
        member.session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
        member.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
        match self.state {
            GroupState::PreparingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(old) = member.join_waiter.replace(tx) {
                    drop(old);
                }
                self.maybe_complete_join(now);
                Outcome::Wait(rx)
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if !changed && self.leader.as_deref() != Some(id.as_str()) =>
            {
                // A follower rejoining with nothing new: answer with the current generation.
                Outcome::Now(self.join_result_for(&id, false))
            }
            _ => self.rejoin_and_rebalance(id, cfg, now),
        }
    }

    fn join_result_for(&self, id: &str, with_members: bool) -> JoinResult {
        let proto = self.protocol.clone().unwrap_or_default();
        JoinResult {
            error: 0,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: id.to_string(),
            members: if with_members {
                self.members
                    .values()
                    .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata_for(&proto)))
                    .collect()
            } else {
                vec![]
            },
            skip_assignment: false,
        }
    }

    fn prepare_rebalance(&mut self, cfg: &GroupConfig, now: Instant) {
        // Members parked in SyncGroup learn that a new rebalance started.
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult {
                    error: ResponseError::RebalanceInProgress.code(),
                    ..Default::default()
                });
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.rebalance_deadline = Some(now + timeout);
        // An empty group's first rebalance is the initial one, with its delay (even a zero
        // one: Kafka's InitialDelayedJoin completes with whoever joined when it expires).
        self.initial_delay_until = (self.state == GroupState::Empty)
            .then(|| (now + cfg.initial_rebalance_delay).min(now + timeout));
        self.sync_deadline = None;
        self.set_state(GroupState::PreparingRebalance);
    }

    /// Complete the join phase: the first rebalance of an empty group once its initial delay
    /// is over, with whoever joined by then (Kafka's InitialDelayedJoin: a member that was
    /// given an id but never came back with it does not hold the group up for its session
    /// timeout); any other once every member and pending member has rejoined; either way
    /// when the rebalance timeout passed.
    pub fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let ready = match self.initial_delay_until {
            Some(until) => now >= until,
            None => {
                self.members.values().all(|m| m.join_waiter.is_some()) && self.pending.is_empty()
            }
        };
        let timed_out = self.rebalance_deadline.is_some_and(|d| now >= d);
        if ready || timed_out {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: Instant) {
        // Members that did not rejoin in time are removed.
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.pending.clear();
        self.initial_delay_until = None;
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.set_state(GroupState::Empty);
            self.needs_persist = true;
            return;
        }
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.set_state(GroupState::CompletingRebalance);
        let rebalance_timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.sync_deadline = Some(now + rebalance_timeout);
        let leader = self.leader.clone().unwrap_or_default();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result_for(&id, id == leader);
            if let Some(m) = self.members.get_mut(&id) {
                m.last_heartbeat = now;
                m.assignment = Bytes::new();
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(result);
                }
            }
        }
    }

    /// Kafka's selection: candidates every member supports; each member votes for its most
    /// preferred candidate; most votes wins (ties by the first member's preference).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(x, _)| x == *n))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0usize, *c)).collect();
        for m in self.members.values() {
            if let Some((pref, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == pref) {
                    v.0 += 1;
                }
            }
        }
        let best = votes.iter().map(|(n, _)| *n).max()?;
        votes
            .iter()
            .find(|(n, _)| *n == best)
            .map(|(_, c)| (*c).clone())
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(m) = self.members.shift_remove(id) {
            if let Some(i) = &m.instance_id {
                if self.static_members.get(i).map(String::as_str) == Some(id) {
                    self.static_members.remove(i);
                }
            }
            if let Some(w) = m.join_waiter {
                let _ = w.send(JoinResult::error(ResponseError::UnknownMemberId, id));
            }
            if let Some(w) = m.sync_waiter {
                let _ = w.send(SyncResult {
                    error: ResponseError::UnknownMemberId.code(),
                    ..Default::default()
                });
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    fn check_member(
        &self,
        id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if let Some(i) = instance_id {
            match self.static_members.get(i) {
                Some(current) if current != id => return Err(ResponseError::FencedInstanceId),
                _ => {}
            }
        }
        if !self.members.contains_key(id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// Handle a SyncGroup; `assignments` are the leader's.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Outcome<SyncResult> {
        let err = |e: ResponseError| {
            Outcome::Now(SyncResult {
                error: e.code(),
                ..Default::default()
            })
        };
        if let Err(e) = self.check_member(id, instance_id, generation) {
            return err(e);
        }
        if protocol_type.is_some_and(|p| Some(p) != self.protocol_type.as_deref())
            || protocol_name.is_some_and(|p| Some(p) != self.protocol.as_deref())
        {
            return err(ResponseError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty => err(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => err(ResponseError::RebalanceInProgress),
            GroupState::Stable => {
                let m = &self.members[id];
                Outcome::Now(SyncResult {
                    error: 0,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    assignment: m.assignment.clone(),
                })
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(id) {
                    m.sync_waiter = Some(tx);
                    m.last_heartbeat = now;
                }
                if self.leader.as_deref() == Some(id) {
                    let map: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = map.get(&m.id).cloned().unwrap_or_default();
                    }
                    self.set_state(GroupState::Stable);
                    self.sync_deadline = None;
                    self.needs_persist = true;
                    self.release_syncs();
                }
                Outcome::Wait(rx)
            }
            GroupState::Dead => err(ResponseError::CoordinatorNotAvailable),
        }
    }

    fn release_syncs(&mut self) {
        let (pt, pn) = (self.protocol_type.clone(), self.protocol.clone());
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult {
                    error: 0,
                    protocol_type: pt.clone(),
                    protocol_name: pn.clone(),
                    assignment: m.assignment.clone(),
                });
            }
        }
    }

    /// Handle a Heartbeat.
    pub fn heartbeat(
        &mut self,
        id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> i16 {
        if self.state == GroupState::Empty {
            return ResponseError::UnknownMemberId.code();
        }
        if let Err(e) = self.check_member(id, instance_id, generation) {
            return e.code();
        }
        if let Some(m) = self.members.get_mut(id) {
            m.last_heartbeat = now;
        }
        match self.state {
            GroupState::PreparingRebalance => ResponseError::RebalanceInProgress.code(),
            _ => 0,
        }
    }

    /// Handle one member of a LeaveGroup.
    pub fn leave(
        &mut self,
        id: &str,
        instance_id: Option<&str>,
        cfg: &GroupConfig,
        now: Instant,
    ) -> i16 {
        let target = match instance_id {
            Some(i) => match self.static_members.get(i) {
                Some(current) if id.is_empty() || current == id => current.clone(),
                Some(_) => return ResponseError::FencedInstanceId.code(),
                None => return ResponseError::UnknownMemberId.code(),
            },
            None => id.to_string(),
        };
        if self.pending.remove(&target).is_some() {
            return 0;
        }
        if !self.members.contains_key(&target) {
            return ResponseError::UnknownMemberId.code();
        }
        self.remove_member(&target);
        self.member_gone(cfg, now);
        0
    }

    fn member_gone(&mut self, cfg: &GroupConfig, now: Instant) {
        self.needs_persist = true;
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(cfg, now)
            }
            _ => {}
        }
        self.maybe_complete_join(now);
    }

    /// Expire members whose session lapsed, pending ids never confirmed, and stalled
    /// rebalances. Returns whether anything changed.
    pub fn tick(&mut self, cfg: &GroupConfig, now: Instant) -> bool {
        let before = (self.state, self.generation, self.members.len());
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                // Members parked in JoinGroup are bounded by the rebalance timeout instead.
                m.join_waiter.is_none() && now.duration_since(m.last_heartbeat) > m.session_timeout
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member(id);
        }
        if !expired.is_empty() {
            self.member_gone(cfg, now);
        }
        if self.state == GroupState::CompletingRebalance
            && self.sync_deadline.is_some_and(|d| now >= d)
        {
            // The leader never sent assignments: start over.
            self.prepare_rebalance(cfg, now);
        }
        self.maybe_complete_join(now);
        before != (self.state, self.generation, self.members.len())
    }

    /// Whether any member's subscription names `topic` (consumer protocol only).
    pub fn subscribed_to(&self, topic: &str) -> bool {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type.as_deref() != Some("consumer") || self.members.is_empty() {
            return false;
        }
        let proto = self.protocol.clone().unwrap_or_default();
        self.members.values().any(|m| {
            let mut meta = m.metadata_for(&proto);
            if meta.len() < 2 {
                return false;
            }
            let version = i16::from_be_bytes([meta[0], meta[1]]);
            bytes::Buf::advance(&mut meta, 2);
            ConsumerProtocolSubscription::decode(&mut meta, version.clamp(0, 3))
                .map(|s| s.topics.iter().any(|t| t.as_str() == topic))
                .unwrap_or(true)
        })
    }

    /// Parked join responses count (for tests and metrics).
    pub fn waiting_joins(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.join_waiter.is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay: Duration::ZERO,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
        }
    }

    fn req(member: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member.to_string(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from_static(b"m")))
                .collect(),
            require_known_member_id: true,
            supports_skip_assignment: true,
        }
    }

    fn now_result(o: Outcome<JoinResult>) -> JoinResult {
        match o {
            Outcome::Now(r) => r,
            Outcome::Wait(mut rx) => rx.try_recv().expect("join completed"),
        }
    }

    fn join_two_step(g: &mut Group, protocols: &[&str], now: Instant) -> Outcome<JoinResult> {
        let first = now_result(g.join(req("", protocols), &cfg(), now));
        assert_eq!(first.error, ResponseError::MemberIdRequired.code());
        g.join(req(&first.member_id, protocols), &cfg(), now)
    }

    #[test]
    fn single_member_joins_and_syncs() {
        let mut g = Group::new("g");
        let now = Instant::now();
        let r = now_result(join_two_step(&mut g, &["range"], now));
        assert_eq!(r.error, 0);
        assert_eq!(r.generation, 1);
        assert_eq!(r.leader, r.member_id);
        assert_eq!(r.members.len(), 1);
        assert_eq!(g.state, GroupState::CompletingRebalance);
        let s = g.sync(
            &r.member_id,
            None,
            1,
            None,
            None,
            vec![(r.member_id.clone(), Bytes::from_static(b"a"))],
            now,
        );
        let Outcome::Wait(mut rx) = s else {
            panic!("leader waits for release")
        };
        assert_eq!(rx.try_recv().unwrap().assignment, Bytes::from_static(b"a"));
        assert_eq!(g.state, GroupState::Stable);
        assert!(g.needs_persist);
        assert_eq!(g.heartbeat(&r.member_id, None, 1, now), 0);
        assert_eq!(
            g.heartbeat(&r.member_id, None, 0, now),
            ResponseError::IllegalGeneration.code()
        );
        assert_eq!(
            g.heartbeat("nobody", None, 1, now),
            ResponseError::UnknownMemberId.code()
        );
    }

    #[test]
    fn second_member_triggers_rebalance_and_protocol_vote() {
        let mut g = Group::new("g");
        let now = Instant::now();
        let a = now_result(join_two_step(&mut g, &["range", "roundrobin"], now));
        let _ = g.sync(&a.member_id, None, 1, None, None, vec![], now);
        // b prefers roundrobin; a still prefers range: tie goes to the first member's order.
        let b_wait = join_two_step(&mut g, &["roundrobin", "range"], now);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(
            g.heartbeat(&a.member_id, None, 1, now),
            ResponseError::RebalanceInProgress.code()
        );
        let a2 = now_result(g.join(req(&a.member_id, &["range", "roundrobin"]), &cfg(), now));
        let b = now_result(b_wait);
        assert_eq!(a2.generation, 2);
        assert_eq!(b.generation, 2);
        assert_eq!(a2.protocol_name.as_deref(), Some("range"));
        assert_eq!(a2.members.len(), 2, "leader gets the member list");
        assert!(b.members.is_empty());
        // The follower syncs first and waits; the leader's assignment releases both.
        let Outcome::Wait(mut bw) = g.sync(&b.member_id, None, 2, None, None, vec![], now) else {
            panic!()
        };
        assert!(bw.try_recv().is_err());
        let _ = g.sync(
            &a.member_id,
            None,
            2,
            None,
            None,
            vec![(b.member_id.clone(), Bytes::from_static(b"B"))],
            now,
        );
        assert_eq!(bw.try_recv().unwrap().assignment, Bytes::from_static(b"B"));
    }

    #[test]
    fn inconsistent_protocols_and_bad_timeouts() {
        let mut g = Group::new("g");
        let now = Instant::now();
        let _ = now_result(join_two_step(&mut g, &["range"], now));
        let r = now_result(g.join(req("", &["other"]), &cfg(), now));
        assert_eq!(r.error, ResponseError::InconsistentGroupProtocol.code());
        let r = now_result(g.join(req("", &[]), &cfg(), now));
        assert_eq!(r.error, ResponseError::InconsistentGroupProtocol.code());
        let mut bad = req("", &["range"]);
        bad.session_timeout_ms = 10;
        assert_eq!(
            now_result(g.join(bad, &cfg(), now)).error,
            ResponseError::InvalidSessionTimeout.code()
        );
        let r = now_result(g.join(req("ghost", &["range"]), &cfg(), now));
        assert_eq!(r.error, ResponseError::UnknownMemberId.code());
    }

    #[test]
    fn session_expiry_moves_partitions() {
        let mut g = Group::new("g");
        let t0 = Instant::now();
        let a = now_result(join_two_step(&mut g, &["range"], t0));
        let _ = g.sync(&a.member_id, None, 1, None, None, vec![], t0);
        let b_wait = join_two_step(&mut g, &["range"], t0);
        let _ = g.join(req(&a.member_id, &["range"]), &cfg(), t0);
        let b = now_result(b_wait);
        let _ = g.sync(&b.member_id, None, 2, None, None, vec![], t0);
        let _ = g.sync(&a.member_id, None, 2, None, None, vec![], t0);
        assert_eq!(g.state, GroupState::Stable);
        // b keeps heartbeating, a goes silent past its 10 s session.
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(g.heartbeat(&b.member_id, None, 2, t1), 0);
        assert!(g.tick(&cfg(), t1));
        assert!(!g.members.contains_key(&a.member_id));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(
            g.heartbeat(&b.member_id, None, 2, t1),
            ResponseError::RebalanceInProgress.code()
        );
        let r = now_result(g.join(req(&b.member_id, &["range"]), &cfg(), t1));
        assert_eq!(r.generation, 3);
        assert_eq!(r.leader, b.member_id);
    }

    #[test]
    fn static_member_rejoin_keeps_assignment_without_rebalance() {
        let mut g = Group::new("g");
        let now = Instant::now();
        let mut r1 = req("", &["range"]);
        r1.instance_id = Some("i-1".into());
        let a = now_result(g.join(r1.clone(), &cfg(), now));
        assert_eq!(a.error, 0);
        let mut r2 = req("", &["range"]);
        r2.instance_id = Some("i-2".into());
        let b_wait = g.join(r2.clone(), &cfg(), now);
        let _ = g.join(
            JoinRequest {
                member_id: a.member_id.clone(),
                ..r1.clone()
            },
            &cfg(),
            now,
        );
        let b = now_result(b_wait);
        let _ = g.sync(
            &b.member_id,
            Some("i-2"),
            b.generation,
            None,
            None,
            vec![],
            now,
        );
        let _ = g.sync(
            &a.member_id,
            Some("i-1"),
            b.generation,
            None,
            None,
            vec![(b.member_id.clone(), Bytes::from_static(b"B"))],
            now,
        );
        assert_eq!(g.state, GroupState::Stable);
        let gen = g.generation;
        // b restarts (new process, same instance id): no rebalance, same generation.
        let b2 = now_result(g.join(r2, &cfg(), now));
        assert_eq!(b2.error, 0);
        assert_eq!(b2.generation, gen);
        assert_ne!(b2.member_id, b.member_id);
        assert_eq!(g.state, GroupState::Stable);
        // The old incarnation is fenced.
        assert_eq!(
            g.heartbeat(&b.member_id, Some("i-2"), gen, now),
            ResponseError::FencedInstanceId.code()
        );
        let Outcome::Now(s) = g.sync(&b2.member_id, Some("i-2"), gen, None, None, vec![], now)
        else {
            panic!()
        };
        assert_eq!(s.assignment, Bytes::from_static(b"B"));
    }

    #[test]
    fn initial_delay_holds_the_first_rebalance() {
        let mut g = Group::new("g");
        let c = GroupConfig {
            initial_rebalance_delay: Duration::from_secs(3),
            ..cfg()
        };
        let t0 = Instant::now();
        let first = now_result(g.join(req("", &["range"]), &c, t0));
        let Outcome::Wait(mut rx) = g.join(req(&first.member_id, &["range"]), &c, t0) else {
            panic!()
        };
        assert!(rx.try_recv().is_err());
        g.tick(&c, t0 + Duration::from_secs(1));
        assert!(rx.try_recv().is_err());
        g.tick(&c, t0 + Duration::from_millis(3001));
        assert_eq!(rx.try_recv().unwrap().generation, 1);
    }

    #[test]
    fn a_member_id_never_used_does_not_hold_the_first_rebalance() {
        // A consumer given an id (MEMBER_ID_REQUIRED) that asks again without it, as after
        // a lost response: the first id stays pending for its session timeout, but the first
        // rebalance completes when the initial delay is over, with the member that joined.
        let mut g = Group::new("g");
        let c = GroupConfig {
            initial_rebalance_delay: Duration::from_secs(3),
            ..cfg()
        };
        let t0 = Instant::now();
        let _lost = now_result(g.join(req("", &["range"]), &c, t0));
        let second = now_result(g.join(req("", &["range"]), &c, t0));
        let Outcome::Wait(mut rx) = g.join(req(&second.member_id, &["range"]), &c, t0) else {
            panic!()
        };
        g.tick(&c, t0 + Duration::from_secs(2));
        assert!(rx.try_recv().is_err(), "the initial delay still runs");
        g.tick(&c, t0 + Duration::from_millis(3001));
        let joined = rx.try_recv().unwrap();
        assert_eq!(
            (joined.generation, joined.leader),
            (1, second.member_id.clone())
        );
        assert_eq!(g.state, GroupState::CompletingRebalance);
    }

    #[test]
    fn leave_rebalances_and_empties() {
        let mut g = Group::new("g");
        let now = Instant::now();
        let a = now_result(join_two_step(&mut g, &["range"], now));
        let _ = g.sync(&a.member_id, None, 1, None, None, vec![], now);
        assert_eq!(g.leave(&a.member_id, None, &cfg(), now), 0);
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.generation, 2);
        assert_eq!(
            g.leave(&a.member_id, None, &cfg(), now),
            ResponseError::UnknownMemberId.code()
        );
    }
}
