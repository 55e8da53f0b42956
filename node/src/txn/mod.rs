//! The transaction coordinator (KIP-98): transactional ids, their producer ids and epochs,
//! and the two-phase end of a transaction, stored as records in the compacted
//! `__transaction_state` topic and rebuilt from it.
//!
//! The coordinator of a transactional id is the leader of `__transaction_state` partition
//! hash(id) mod N, exactly as groups are placed on `__consumer_offsets`; it moves with that
//! partition's leadership and a new leader replays the partition, finishing transactions
//! left half ended. Its epoch (written into every marker) is the partition's leader epoch,
//! so markers from a deposed coordinator are refused.
//!
//! Ending a transaction is Kafka's protocol: the PrepareCommit or PrepareAbort record is
//! made durable first, then a marker goes to every partition of the transaction (through
//! [`TxnHost::write_markers`]: appended here or sent to the partition's leader as
//! WriteTxnMarkers), then the Complete record. The client is answered once the markers are
//! written, so that its next transaction never meets the previous one's.
//!
//! The coordinator reaches the node only through [`TxnHost`].

pub mod records;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::Compression;
use parking_lot::Mutex;

use crate::coordinator::records::partition_for;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::partition::Partition;
use records::{TxnMeta, TxnState};

/// Name of the internal topic holding transaction state.
pub const TXN_TOPIC: &str = "__transaction_state";

/// Kafka's transaction.max.timeout.ms.
pub const DEFAULT_MAX_TIMEOUT_MS: i32 = 900_000;

/// Settings of the coordinator.
#[derive(Debug, Clone, Copy)]
pub struct TxnConfig {
    /// transaction.max.timeout.ms.
    pub max_timeout_ms: i32,
    /// transactional.id.expiration.ms: an id idle this long (no transaction open) is
    /// forgotten.
    pub id_expiration_ms: i64,
}

/// An answer to a client: Kafka's error code on failure.
pub type TxnResult<T> = std::result::Result<T, ResponseError>;

/// The markers ending one transaction.
#[derive(Debug, Clone)]
pub struct MarkerRequest {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub coordinator_epoch: i32,
    pub commit: bool,
    pub partitions: Vec<(String, i32)>,
}

/// What the coordinator needs of the node.
pub trait TxnHost: Send + Sync + 'static {
    /// The transaction topic's partition count, if it exists.
    fn txn_partitions(&self) -> Option<i32>;
    /// Ask for the transaction topic to be created; its partition count once it exists.
    fn ensure_txn_topic(&self) -> Result<i32>;
    /// A partition hosted here.
    fn partition(&self, topic: &str, p: i32) -> Option<Arc<Partition>>;
    /// Whether partitions are replicated, so that coordination may be elsewhere.
    fn replicated(&self) -> bool;
    /// Append a batch to a partition led here and wait until it is written as an acks=all
    /// produce would be.
    fn write(&self, part: Arc<Partition>, batch: Bytes) -> BoxFuture<'static, Result<()>>;
    /// A new producer id.
    fn allocate_producer_id(&self) -> BoxFuture<'static, Result<i64>>;
    /// Write the markers to the leaders of their partitions; returns the partitions not
    /// written (to be retried). A partition that no longer exists counts as written.
    fn write_markers(&self, req: MarkerRequest) -> BoxFuture<'static, Vec<(String, i32)>>;
}

struct Entry {
    meta: TxnMeta,
    /// A change is being written: other requests for the id get CONCURRENT_TRANSACTIONS.
    pending: bool,
    /// The epoch the producer held before the coordinator bumped it to abort a timed-out
    /// transaction: the producer may still ask to bump from it (KIP-360).
    fenced_epoch: Option<i16>,
}

/// A transaction as DescribeTransactions and ListTransactions show it.
#[derive(Debug, Clone)]
pub struct TxnDescription {
    pub transactional_id: String,
    pub meta: TxnMeta,
}

/// The transaction coordinator.
pub struct TransactionCoordinator {
    host: Arc<dyn TxnHost>,
    cfg: TxnConfig,
    txns: Mutex<HashMap<String, Entry>>,
    /// Transaction-topic partitions led here, by the number of the load that replays
    /// them (None: being replayed; Some: loaded by that load). Ids of a partition led here
    /// but not loaded answer COORDINATOR_LOAD_IN_PROGRESS.
    loads: Mutex<HashMap<i32, (u64, bool)>>,
    next_load: std::sync::atomic::AtomicU64,
}

fn now_ms() -> i64 {
    fsutil::now_ms()
}

/// How a write failure reaches a client.
fn write_error(e: &Error) -> ResponseError {
    match e {
        Error::NotLeader(_) => ResponseError::NotCoordinator,
        _ => ResponseError::CoordinatorNotAvailable,
    }
}

/// What an EndTxn v5+ does to a transactional id in a given state.
#[derive(Debug, PartialEq, Eq)]
enum EndV2 {
    /// Already done (a retry): answer with the current producer id and epoch.
    Done,
    /// Prepare the end, with the transaction's partitions or (nothing was added) none.
    Prepare { with_partitions: bool },
}

/// Kafka's rules for EndTxn under transaction version 2: the producer's epoch must be the
/// current one, or, for a retry of an end already written, the one before it (or the
/// last epoch of the producer id an overflow replaced).
fn plan_end_v2(m: &TxnMeta, commit: bool, producer_id: i64, epoch: i16) -> TxnResult<EndV2> {
    let retry_bump = m.producer_id == producer_id && epoch.checked_add(1) == Some(m.producer_epoch);
    let retry_overflow = m.prev_producer_id == producer_id
        && m.prev_producer_id >= 0
        && epoch == i16::MAX - 1
        && m.producer_epoch == 0;
    if m.producer_id != producer_id && !retry_overflow {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    let current = m.producer_id == producer_id && epoch == m.producer_epoch;
    let valid = match m.state {
        TxnState::Ongoing | TxnState::Empty => current,
        TxnState::PrepareCommit | TxnState::PrepareAbort => retry_bump,
        TxnState::CompleteCommit | TxnState::CompleteAbort => {
            retry_bump || retry_overflow || current
        }
        TxnState::Dead | TxnState::PrepareEpochFence => false,
    };
    if !valid {
        return Err(ResponseError::ProducerFenced);
    }
    let retry = retry_bump || retry_overflow;
    match (m.state, commit) {
        (TxnState::Ongoing, _) => Ok(EndV2::Prepare {
            with_partitions: true,
        }),
        (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) if retry => {
            Ok(EndV2::Done)
        }
        (TxnState::CompleteCommit | TxnState::CompleteAbort | TxnState::Empty, false) if !retry => {
            Ok(EndV2::Prepare {
                with_partitions: false,
            })
        }
        (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
            Err(ResponseError::ConcurrentTransactions)
        }
        _ => Err(ResponseError::InvalidTxnState),
    }
}

impl TransactionCoordinator {
    pub fn new(host: Arc<dyn TxnHost>, cfg: TxnConfig) -> Self {
        TransactionCoordinator {
            host,
            cfg,
            txns: Mutex::new(HashMap::new()),
            loads: Mutex::new(HashMap::new()),
            next_load: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The transaction-topic partition of `id`, if this node coordinates it now.
    fn partition_of(&self, id: &str) -> TxnResult<Arc<Partition>> {
        if id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        let n = match self.host.txn_partitions() {
            Some(n) => n,
            None => self
                .host
                .ensure_txn_topic()
                .map_err(|_| ResponseError::CoordinatorNotAvailable)?,
        };
        let p = partition_for(id, n);
        let part = self
            .host
            .partition(TXN_TOPIC, p)
            .ok_or(ResponseError::NotCoordinator)?;
        if !part.is_leader() {
            return Err(ResponseError::NotCoordinator);
        }
        if !self.loads.lock().get(&p).is_some_and(|(_, loaded)| *loaded) {
            return Err(ResponseError::CoordinatorLoadInProgress);
        }
        Ok(part)
    }

    /// Check that this node coordinates `id` now.
    pub fn check_available(&self, id: &str) -> TxnResult<()> {
        self.partition_of(id).map(|_| ())
    }

    /// Make `meta` the durable state of `id`.
    async fn persist(&self, id: &str, meta: &TxnMeta) -> TxnResult<()> {
        self.write_record(id, Some(meta.encode())).await
    }

    /// Write the record of `id` (None: a tombstone, the id forgotten).
    async fn write_record(&self, id: &str, value: Option<Bytes>) -> TxnResult<()> {
        let part = self.partition_of(id)?;
        let record =
            crate::log::records::plain_record(0, now_ms(), Some(records::encode_key(id)), value);
        let batch = crate::log::records::encode(&[record], Compression::None)
            .map_err(|_| ResponseError::UnknownServerError)?;
        self.host.write(part, batch.into()).await.map_err(|e| {
            tracing::warn!(transactional_id = id, error = %e, "transaction state write failed");
            write_error(&e)
        })
    }

    /// Take the id for a change: its current state (None: unknown id), marked pending.
    fn claim(&self, id: &str) -> TxnResult<Option<(TxnMeta, Option<i16>)>> {
        let mut txns = self.txns.lock();
        match txns.get_mut(id) {
            None => Ok(None),
            Some(e) if e.pending => Err(ResponseError::ConcurrentTransactions),
            Some(e) => {
                e.pending = true;
                Ok(Some((e.meta.clone(), e.fenced_epoch)))
            }
        }
    }

    /// Release the id, with its new state if the change was written.
    fn release(&self, id: &str, meta: Option<TxnMeta>, fenced_epoch: Option<Option<i16>>) {
        let mut txns = self.txns.lock();
        match (txns.get_mut(id), meta) {
            (Some(e), Some(m)) => {
                e.meta = m;
                e.pending = false;
                if let Some(f) = fenced_epoch {
                    e.fenced_epoch = f;
                }
            }
            (Some(e), None) => e.pending = false,
            (None, Some(m)) => {
                txns.insert(
                    id.to_string(),
                    Entry {
                        meta: m,
                        pending: false,
                        fenced_epoch: fenced_epoch.flatten(),
                    },
                );
            }
            (None, None) => {}
        }
    }

    /// InitProducerId with a transactional id: a producer id and a new epoch, fencing any
    /// older producer of the id (its open transaction is aborted first). `expected` is the
    /// producer id and epoch a producer that already has one asks to bump (KIP-360).
    pub async fn init_producer_id(
        &self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> TxnResult<(i64, i16)> {
        if timeout_ms <= 0 || timeout_ms > self.cfg.max_timeout_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        self.partition_of(id)?;
        // Twice at most: an open transaction is aborted (fenced) first.
        for _ in 0..3 {
            let current = {
                let mut txns = self.txns.lock();
                match txns.get_mut(id) {
                    Some(e) if e.pending => return Err(ResponseError::ConcurrentTransactions),
                    Some(e) => {
                        e.pending = true;
                        Some((e.meta.clone(), e.fenced_epoch))
                    }
                    None => {
                        // Reserve the id while its producer id is allocated.
                        txns.insert(
                            id.to_string(),
                            Entry {
                                meta: TxnMeta::new(-1, -1, timeout_ms, now_ms()),
                                pending: true,
                                fenced_epoch: None,
                            },
                        );
                        None
                    }
                }
            };
            let Some((m, fenced_epoch)) = current else {
                let pid = match self.host.allocate_producer_id().await {
                    Ok(pid) => pid,
                    Err(e) => {
                        tracing::warn!(error = %e, "producer id allocation failed");
                        self.txns.lock().remove(id);
                        return Err(ResponseError::CoordinatorNotAvailable);
                    }
                };
                let meta = TxnMeta::new(pid, 0, timeout_ms, now_ms());
                if let Err(code) = self.persist(id, &meta).await {
                    self.txns.lock().remove(id);
                    return Err(code);
                }
                self.release(id, Some(meta), Some(None));
                return Ok((pid, 0));
            };
            if let Some((pid, epoch)) = expected {
                let known = pid == m.producer_id
                    && (epoch == m.producer_epoch || Some(epoch) == fenced_epoch);
                if !known {
                    self.release(id, None, None);
                    return Err(ResponseError::ProducerFenced);
                }
            }
            match m.state {
                TxnState::PrepareCommit | TxnState::PrepareAbort => {
                    self.release(id, None, None);
                    return Err(ResponseError::ConcurrentTransactions);
                }
                TxnState::Ongoing => {
                    // Fence the old producer: its transaction ends aborted, under a bumped
                    // epoch, then the new producer gets the next one.
                    self.release(id, None, None);
                    self.end_transaction(id, false, None, true).await?;
                    continue;
                }
                _ => {}
            }
            let mut next = m.clone();
            next.next_producer_id = -1;
            if m.producer_epoch >= i16::MAX - 1 {
                next.prev_producer_id = m.producer_id;
                next.producer_id = match self.host.allocate_producer_id().await {
                    Ok(pid) => pid,
                    Err(_) => {
                        self.release(id, None, None);
                        return Err(ResponseError::CoordinatorNotAvailable);
                    }
                };
                next.producer_epoch = 0;
            } else {
                next.producer_epoch = m.producer_epoch + 1;
            }
            next.timeout_ms = timeout_ms;
            next.state = TxnState::Empty;
            next.partitions.clear();
            next.update_ms = now_ms();
            next.start_ms = -1;
            if let Err(code) = self.persist(id, &next).await {
                self.release(id, None, None);
                return Err(code);
            }
            let answer = (next.producer_id, next.producer_epoch);
            self.release(id, Some(next), Some(None));
            return Ok(answer);
        }
        Err(ResponseError::ConcurrentTransactions)
    }

    /// The checks every request of a producer in a transaction passes: the id is known,
    /// maps to this producer id, at this epoch.
    fn check_producer(m: &TxnMeta, producer_id: i64, epoch: i16) -> TxnResult<()> {
        if m.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if m.producer_epoch != epoch {
            return Err(ResponseError::ProducerFenced);
        }
        Ok(())
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's offsets partition): the
    /// partitions join the open transaction, which starts if none is open. With
    /// `verify_only` (a partition leader checking a produce, KIP-890), nothing changes and
    /// the answer says whether they are all in the open transaction. `client_version` is
    /// the transaction protocol of the producer (2: partitions added implicitly by its
    /// produce and offset commits, KIP-890's second part).
    pub async fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
        verify_only: bool,
        client_version: i16,
    ) -> TxnResult<()> {
        if verify_only {
            return partitions
                .iter()
                .try_for_each(|(t, p)| self.verify(id, producer_id, epoch, t, *p));
        }
        self.partition_of(id)?;
        let Some((m, _)) = self.claim(id)? else {
            return Err(ResponseError::InvalidProducerIdMapping);
        };
        let state_ok = match m.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(ResponseError::ConcurrentTransactions)
            }
            TxnState::Dead | TxnState::PrepareEpochFence => Err(ResponseError::InvalidTxnState),
            _ => Ok(()),
        };
        let checked = Self::check_producer(&m, producer_id, epoch).and(state_ok);
        if let Err(code) = checked {
            self.release(id, None, None);
            return Err(code);
        }
        if m.state == TxnState::Ongoing
            && m.client_version == client_version
            && partitions.iter().all(|p| m.partitions.contains(p))
        {
            self.release(id, None, None);
            return Ok(());
        }
        let mut next = m.clone();
        if next.state != TxnState::Ongoing {
            next.partitions.clear();
            next.start_ms = now_ms();
        }
        next.state = TxnState::Ongoing;
        next.client_version = client_version;
        next.partitions.extend(partitions);
        next.update_ms = now_ms();
        if let Err(code) = self.persist(id, &next).await {
            self.release(id, None, None);
            return Err(code);
        }
        self.release(id, Some(next), None);
        Ok(())
    }

    /// Whether `topic`-`p` is in the open transaction of `id` under this producer id and
    /// epoch (a partition leader's check of a transactional produce, KIP-890).
    pub fn verify(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        p: i32,
    ) -> TxnResult<()> {
        self.partition_of(id)?;
        let txns = self.txns.lock();
        let e = txns
            .get(id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        Self::check_producer(&e.meta, producer_id, epoch)?;
        let added = e.meta.state == TxnState::Ongoing
            && e.meta.partitions.contains(&(topic.to_string(), p));
        if added {
            Ok(())
        } else {
            Err(ResponseError::InvalidTxnState)
        }
    }

    /// EndTxn, a timeout, or a fence: end the open transaction of `id`. `producer` is the
    /// client's producer id and epoch (None: the coordinator's own decision). With `bump`,
    /// the epoch goes up first, fencing the producer that holds the current one.
    pub async fn end_transaction(
        &self,
        id: &str,
        commit: bool,
        producer: Option<(i64, i16)>,
        bump: bool,
    ) -> TxnResult<()> {
        let part = self.partition_of(id)?;
        let Some((m, _)) = self.claim(id)? else {
            return Err(ResponseError::InvalidProducerIdMapping);
        };
        if let Some((pid, epoch)) = producer {
            if let Err(code) = Self::check_producer(&m, pid, epoch) {
                self.release(id, None, None);
                return Err(code);
            }
        }
        let target = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        match m.state {
            TxnState::Ongoing => {}
            // A retried EndTxn whose first attempt completed.
            s if s == target && producer.is_some() => {
                self.release(id, None, None);
                return Ok(());
            }
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                self.release(id, None, None);
                return Err(ResponseError::ConcurrentTransactions);
            }
            _ => {
                self.release(id, None, None);
                return Err(ResponseError::InvalidTxnState);
            }
        }
        let mut prepared = m.clone();
        let fenced = if bump {
            prepared.producer_epoch = m.producer_epoch.saturating_add(1);
            Some(m.producer_epoch)
        } else {
            None
        };
        prepared.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        self.prepare_and_finish(id, prepared, fenced, &part)
            .await
            .map(|_| ())
    }

    /// EndTxn v5 and later (KIP-890's second part): every end of a transaction bumps the
    /// producer's epoch (markers carry the new one, so a late write of the old transaction
    /// is refused), and the answer carries the producer id and epoch of the next
    /// transaction. A retry of an end already done is recognised by the epoch one below.
    pub async fn end_transaction_v2(
        &self,
        id: &str,
        commit: bool,
        producer_id: i64,
        epoch: i16,
    ) -> TxnResult<(i64, i16)> {
        let part = self.partition_of(id)?;
        let Some((m, _)) = self.claim(id)? else {
            return Err(ResponseError::InvalidProducerIdMapping);
        };
        let with_partitions = match plan_end_v2(&m, commit, producer_id, epoch) {
            Err(code) => {
                self.release(id, None, None);
                return Err(code);
            }
            Ok(EndV2::Done) => {
                self.release(id, None, None);
                return Ok((m.producer_id, m.producer_epoch));
            }
            Ok(EndV2::Prepare { with_partitions }) => with_partitions,
        };
        let mut prepared = m.clone();
        if !with_partitions {
            // Abort with nothing added (allowed in V2): no marker to write.
            prepared.partitions.clear();
            prepared.start_ms = now_ms();
        }
        prepared.client_version = 2;
        if m.producer_epoch >= i16::MAX - 1 {
            // The epoch is exhausted: the next transaction gets a new producer id.
            prepared.next_producer_id = match self.host.allocate_producer_id().await {
                Ok(pid) => pid,
                Err(e) => {
                    tracing::warn!(error = %e, "producer id allocation failed");
                    self.release(id, None, None);
                    return Err(ResponseError::CoordinatorNotAvailable);
                }
            };
        }
        prepared.producer_epoch = m.producer_epoch.saturating_add(1);
        prepared.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        let done = self.prepare_and_finish(id, prepared, None, &part).await?;
        Ok((done.producer_id, done.producer_epoch))
    }

    /// Make the Prepare state durable, then finish the transaction (markers, Complete).
    /// `fenced`: the epoch a fence bumped the producer from.
    async fn prepare_and_finish(
        &self,
        id: &str,
        mut prepared: TxnMeta,
        fenced: Option<i16>,
        part: &Partition,
    ) -> TxnResult<TxnMeta> {
        prepared.update_ms = now_ms();
        if let Err(code) = self.persist(id, &prepared).await {
            self.release(id, None, None);
            return Err(code);
        }
        {
            let mut txns = self.txns.lock();
            if let Some(e) = txns.get_mut(id) {
                e.meta = prepared.clone();
                if fenced.is_some() {
                    e.fenced_epoch = fenced;
                }
            }
        }
        let coordinator_epoch = part.leader_epoch();
        self.finish(id, prepared, coordinator_epoch).await
    }

    /// Second phase: markers to every partition, then the Complete record. Runs until the
    /// markers are written or this node stops coordinating the id (the next coordinator
    /// finishes from the Prepare record).
    async fn finish(
        &self,
        id: &str,
        prepared: TxnMeta,
        coordinator_epoch: i32,
    ) -> TxnResult<TxnMeta> {
        let commit = prepared.state == TxnState::PrepareCommit;
        let mut left: Vec<(String, i32)> = prepared.partitions.iter().cloned().collect();
        let mut delay = Duration::from_millis(50);
        while !left.is_empty() {
            left = self
                .host
                .write_markers(MarkerRequest {
                    producer_id: prepared.producer_id,
                    producer_epoch: prepared.producer_epoch,
                    coordinator_epoch,
                    commit,
                    partitions: left,
                })
                .await;
            if left.is_empty() {
                break;
            }
            if self.partition_of(id).is_err() {
                self.release(id, None, None);
                return Err(ResponseError::NotCoordinator);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
        let mut done = prepared;
        done.state = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        done.partitions.clear();
        done.update_ms = now_ms();
        if done.next_producer_id >= 0 {
            done.prev_producer_id = done.producer_id;
            done.producer_id = done.next_producer_id;
            done.producer_epoch = 0;
            done.next_producer_id = -1;
        }
        if let Err(code) = self.persist(id, &done).await {
            // The markers are written: the transaction is over whatever the record says;
            // a coordinator replaying Prepare writes them again (markers are idempotent
            // for a completed transaction).
            tracing::warn!(
                transactional_id = id,
                ?code,
                "could not record the end of a transaction; it is finished from its prepare record"
            );
        }
        self.release(id, Some(done.clone()), None);
        Ok(done)
    }

    /// Abort transactions open longer than their timeout (bumping the epoch, so their
    /// producer is fenced), and finish transactions left prepared by a previous
    /// coordinator.
    pub async fn tick(self: &Arc<Self>) {
        let now = now_ms();
        let (expired, prepared): (Vec<String>, Vec<(String, TxnMeta)>) = {
            let txns = self.txns.lock();
            let expired = txns
                .iter()
                .filter(|(_, e)| {
                    !e.pending
                        && e.meta.state == TxnState::Ongoing
                        && e.meta.start_ms + e.meta.timeout_ms as i64 <= now
                })
                .map(|(id, _)| id.clone())
                .collect();
            let prepared = txns
                .iter()
                .filter(|(_, e)| {
                    !e.pending
                        && matches!(
                            e.meta.state,
                            TxnState::PrepareCommit | TxnState::PrepareAbort
                        )
                })
                .map(|(id, e)| (id.clone(), e.meta.clone()))
                .collect();
            (expired, prepared)
        };
        self.expire_idle_ids(now).await;
        for id in expired {
            if self.partition_of(&id).is_err() {
                continue;
            }
            tracing::info!(transactional_id = %id, "aborting a transaction open past its timeout");
            if let Err(code) = self.end_transaction(&id, false, None, true).await {
                tracing::debug!(transactional_id = %id, ?code, "timed-out transaction not aborted yet");
            }
        }
        for (id, meta) in prepared {
            let Ok(part) = self.partition_of(&id) else {
                continue;
            };
            if self.claim(&id).ok().flatten().is_none() {
                continue;
            }
            let me = self.clone();
            let epoch = part.leader_epoch();
            tokio::spawn(async move {
                tracing::info!(transactional_id = %id, "finishing a transaction its previous coordinator prepared");
                let _ = me.finish(&id, meta, epoch).await;
            });
        }
    }

    /// Forget ids with no transaction open whose last change is older than
    /// transactional.id.expiration.ms: a tombstone, then out of memory (Kafka's expiry).
    async fn expire_idle_ids(&self, now: i64) {
        let idle: Vec<String> = {
            let txns = self.txns.lock();
            txns.iter()
                .filter(|(_, e)| {
                    !e.pending
                        && matches!(
                            e.meta.state,
                            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                        )
                        && now - e.meta.update_ms > self.cfg.id_expiration_ms
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in idle {
            if self.partition_of(&id).is_err() || self.claim(&id).ok().flatten().is_none() {
                continue;
            }
            match self.write_record(&id, None).await {
                Ok(()) => {
                    self.txns.lock().remove(&id);
                    tracing::info!(transactional_id = %id, "expired an idle transactional id");
                }
                Err(_) => self.release(&id, None, None),
            }
        }
    }

    /// Every transaction coordinated here (ListTransactions).
    pub fn list(&self) -> Vec<TxnDescription> {
        let loads = self.loads.lock().clone();
        let n = self.host.txn_partitions().unwrap_or(0);
        self.txns
            .lock()
            .iter()
            .filter(|(id, e)| {
                e.meta.producer_id >= 0
                    && loads
                        .get(&partition_for(id, n))
                        .is_some_and(|(_, loaded)| *loaded)
            })
            .map(|(id, e)| TxnDescription {
                transactional_id: id.clone(),
                meta: e.meta.clone(),
            })
            .collect()
    }

    /// One transactional id's state (DescribeTransactions).
    pub fn describe(&self, id: &str) -> TxnResult<TxnMeta> {
        self.partition_of(id)?;
        self.txns
            .lock()
            .get(id)
            .filter(|e| e.meta.producer_id >= 0)
            .map(|e| e.meta.clone())
            .ok_or(ResponseError::TransactionalIdNotFound)
    }

    fn load_partition(&self, p: i32) -> Result<()> {
        let Some(part) = self.host.partition(TXN_TOPIC, p) else {
            return Ok(());
        };
        let mut offset = part.log().log_start_offset();
        let mut found: HashMap<String, Option<TxnMeta>> = HashMap::new();
        loop {
            let plan = {
                let log = part.log();
                log.plan_read(offset, 4 << 20, true, log.log_end_offset())?
            };
            let Some(plan) = plan else { break };
            let raw = plan.read()?;
            for set in crate::log::records::decode_all(&raw)? {
                for r in set.records {
                    offset = r.offset + 1;
                    let Some(id) = r.key.and_then(|k| records::decode_key(k).ok().flatten()) else {
                        continue;
                    };
                    let meta = match r.value {
                        Some(v) => Some(TxnMeta::decode(v)?),
                        None => None,
                    };
                    found.insert(id, meta);
                }
            }
        }
        let mut txns = self.txns.lock();
        let n = self.host.txn_partitions().unwrap_or(1);
        txns.retain(|id, _| partition_for(id, n) != p);
        for (id, meta) in found {
            if let Some(meta) = meta {
                txns.insert(
                    id,
                    Entry {
                        meta,
                        pending: false,
                        fenced_epoch: None,
                    },
                );
            }
        }
        Ok(())
    }

    /// This node started or stopped leading transaction partition `p`: taking over
    /// replays it (its ids answer COORDINATOR_LOAD_IN_PROGRESS meanwhile); giving up
    /// forgets its ids.
    pub fn on_leadership(self: &Arc<Self>, p: i32, leading: bool) {
        let Some(n) = self.host.txn_partitions() else {
            return;
        };
        self.txns.lock().retain(|id, _| partition_for(id, n) != p);
        if !leading {
            self.loads.lock().remove(&p);
            return;
        }
        let load = self
            .next_load
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.loads.lock().insert(p, (load, false));
        let me = self.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            if let Some(part) = me.host.partition(TXN_TOPIC, p) {
                part.wait_caught_up(Duration::from_secs(10));
            }
            let res = me.load_partition(p);
            if !me
                .host
                .partition(TXN_TOPIC, p)
                .is_some_and(|x| x.is_leader())
            {
                return;
            }
            match res {
                Ok(()) => {
                    // Only if no later leadership change started another load (or ended it).
                    if let Some(state) = me.loads.lock().get_mut(&p) {
                        if state.0 == load {
                            state.1 = true;
                        }
                    }
                    tracing::info!(
                        partition = p,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "coordinating the transactions of this partition"
                    );
                }
                Err(e) => {
                    tracing::error!(partition = p, error = %e, "failed to load transaction state")
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{LogConfig, PartitionLog};
    use crate::partition::replica::ReplicaState;

    /// One transaction partition in a temporary directory; markers are recorded, not
    /// written.
    struct FakeHost {
        part: Arc<Partition>,
        next_pid: Mutex<i64>,
        markers: Mutex<Vec<MarkerRequest>>,
    }

    impl FakeHost {
        fn new(dir: &std::path::Path) -> Arc<FakeHost> {
            let log = PartitionLog::open(
                &dir.join("t-0"),
                uuid::Uuid::new_v4(),
                LogConfig::default(),
                false,
            )
            .unwrap();
            let part = Partition::new(TXN_TOPIC, 0, ReplicaState::standalone(1, 3), 0, log);
            Arc::new(FakeHost {
                part: Arc::new(part),
                next_pid: Mutex::new(1000),
                markers: Mutex::new(Vec::new()),
            })
        }
    }

    impl TxnHost for FakeHost {
        fn txn_partitions(&self) -> Option<i32> {
            Some(1)
        }
        fn ensure_txn_topic(&self) -> Result<i32> {
            Ok(1)
        }
        fn partition(&self, topic: &str, p: i32) -> Option<Arc<Partition>> {
            (topic == TXN_TOPIC && p == 0).then(|| self.part.clone())
        }
        fn replicated(&self) -> bool {
            false
        }
        fn write(&self, part: Arc<Partition>, batch: Bytes) -> BoxFuture<'static, Result<()>> {
            let spans = crate::log::batch::validate_produce_records(&batch).unwrap();
            let r = part.log().append(&batch, &spans, 3, now_ms());
            part.recompute_high_watermark();
            Box::pin(async move { r.map(|_| ()) })
        }
        fn allocate_producer_id(&self) -> BoxFuture<'static, Result<i64>> {
            let mut n = self.next_pid.lock();
            *n += 1;
            let id = *n;
            Box::pin(async move { Ok(id) })
        }
        fn write_markers(&self, req: MarkerRequest) -> BoxFuture<'static, Vec<(String, i32)>> {
            self.markers.lock().push(req);
            Box::pin(async { Vec::new() })
        }
    }

    fn coordinator(host: &Arc<FakeHost>, expiry_ms: i64) -> Arc<TransactionCoordinator> {
        let c = Arc::new(TransactionCoordinator::new(
            host.clone(),
            TxnConfig {
                max_timeout_ms: 60_000,
                id_expiration_ms: expiry_ms,
            },
        ));
        c.load_partition(0).unwrap();
        c.loads.lock().insert(0, (0, true));
        c
    }

    fn t(name: &str, p: i32) -> (String, i32) {
        (name.to_string(), p)
    }

    #[tokio::test]
    async fn a_transaction_commits_through_markers_and_its_state_survives_a_replay() {
        let dir = tempfile::tempdir().unwrap();
        let host = FakeHost::new(dir.path());
        let c = coordinator(&host, 1 << 40);
        let (pid, epoch) = c.init_producer_id("tx", 30_000, None).await.unwrap();
        assert_eq!(epoch, 0);
        // Nothing open: ending is INVALID_TXN_STATE; a wrong producer id is refused.
        assert_eq!(
            c.end_transaction("tx", true, Some((pid, 0)), false).await,
            Err(ResponseError::InvalidTxnState)
        );
        assert_eq!(
            c.add_partitions("tx", pid + 1, 0, vec![t("a", 0)], false, 0)
                .await,
            Err(ResponseError::InvalidProducerIdMapping)
        );
        c.add_partitions("tx", pid, 0, vec![t("a", 0), t("b", 1)], false, 0)
            .await
            .unwrap();
        assert_eq!(c.verify("tx", pid, 0, "a", 0), Ok(()));
        assert_eq!(
            c.verify("tx", pid, 0, "a", 1),
            Err(ResponseError::InvalidTxnState)
        );
        assert_eq!(c.describe("tx").unwrap().state, TxnState::Ongoing);
        c.end_transaction("tx", true, Some((pid, 0)), false)
            .await
            .unwrap();
        let m = host.markers.lock().pop().unwrap();
        assert!(m.commit);
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.coordinator_epoch),
            (pid, 0, 3)
        );
        assert_eq!(m.partitions, vec![t("a", 0), t("b", 1)]);
        // A retried commit succeeds; an abort of the committed transaction does not.
        c.end_transaction("tx", true, Some((pid, 0)), false)
            .await
            .unwrap();
        assert_eq!(
            c.end_transaction("tx", false, Some((pid, 0)), false).await,
            Err(ResponseError::InvalidTxnState)
        );
        // A new coordinator replays the partition and carries on with the next epoch.
        let again = coordinator(&host, 1 << 40);
        assert_eq!(
            again.describe("tx").unwrap().state,
            TxnState::CompleteCommit
        );
        assert_eq!(
            again.init_producer_id("tx", 30_000, None).await.unwrap(),
            (pid, 1)
        );
        // The old epoch is fenced.
        assert_eq!(
            again
                .add_partitions("tx", pid, 0, vec![t("a", 0)], false, 0)
                .await,
            Err(ResponseError::ProducerFenced)
        );
    }

    #[tokio::test]
    async fn a_new_producer_fences_the_old_and_timeouts_abort_under_a_bumped_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let host = FakeHost::new(dir.path());
        let c = coordinator(&host, 1 << 40);
        let (pid, _) = c.init_producer_id("tx", 30_000, None).await.unwrap();
        c.add_partitions("tx", pid, 0, vec![t("a", 0)], false, 0)
            .await
            .unwrap();
        // A second producer: the open transaction is aborted under epoch 1, then it gets 2.
        assert_eq!(
            c.init_producer_id("tx", 30_000, None).await.unwrap(),
            (pid, 2)
        );
        let m = host.markers.lock().pop().unwrap();
        assert!(!m.commit);
        assert_eq!(m.producer_epoch, 1);
        // A transaction open past its timeout is aborted by the tick, fencing its producer,
        // which may still bump from the epoch it held (KIP-360).
        c.add_partitions("tx", pid, 2, vec![t("a", 0)], false, 0)
            .await
            .unwrap();
        c.txns.lock().get_mut("tx").unwrap().meta.start_ms = now_ms() - 60_000;
        c.tick().await;
        assert_eq!(c.describe("tx").unwrap().state, TxnState::CompleteAbort);
        assert_eq!(host.markers.lock().pop().unwrap().producer_epoch, 3);
        assert_eq!(
            c.end_transaction("tx", true, Some((pid, 2)), false).await,
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            c.init_producer_id("tx", 30_000, Some((pid, 2)))
                .await
                .unwrap(),
            (pid, 4)
        );
        assert_eq!(
            c.init_producer_id("tx", 30_000, Some((pid, 1))).await,
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            c.init_producer_id("tx", 120_000, None).await,
            Err(ResponseError::InvalidTransactionTimeout)
        );
    }

    #[tokio::test]
    async fn idle_ids_expire_and_stay_forgotten_after_a_replay() {
        let dir = tempfile::tempdir().unwrap();
        let host = FakeHost::new(dir.path());
        let c = coordinator(&host, 1_000);
        c.init_producer_id("idle", 30_000, None).await.unwrap();
        let (pid, _) = c.init_producer_id("busy", 30_000, None).await.unwrap();
        c.add_partitions("busy", pid, 0, vec![t("a", 0)], false, 0)
            .await
            .unwrap();
        for id in ["idle", "busy"] {
            c.txns.lock().get_mut(id).unwrap().meta.update_ms = now_ms() - 5_000;
        }
        c.expire_idle_ids(now_ms()).await;
        assert_eq!(
            c.describe("idle").unwrap_err(),
            ResponseError::TransactionalIdNotFound
        );
        assert_eq!(c.describe("busy").unwrap().state, TxnState::Ongoing);
        let again = coordinator(&host, 1_000);
        assert!(again.describe("idle").is_err());
        assert!(again.describe("busy").is_ok());
    }

    #[tokio::test]
    async fn version_2_bumps_the_epoch_at_every_end_and_recognises_retries() {
        let dir = tempfile::tempdir().unwrap();
        let host = FakeHost::new(dir.path());
        let c = coordinator(&host, 1 << 40);
        let (pid, e0) = c.init_producer_id("tx", 30_000, None).await.unwrap();
        // Partitions come with produce (client version 2); the commit bumps the epoch and
        // the markers carry the new one.
        c.add_partitions("tx", pid, e0, vec![t("a", 0)], false, 2)
            .await
            .unwrap();
        let e1 = c.end_transaction_v2("tx", true, pid, e0).await.unwrap();
        assert_eq!(e1, (pid, e0 + 1));
        let m = host.markers.lock().pop().unwrap();
        assert_eq!((m.producer_epoch, m.commit), (e0 + 1, true));
        // A retry with the old epoch is answered with the new one; an abort under the old
        // epoch is not (the commit is done), and an older epoch is fenced.
        assert_eq!(c.end_transaction_v2("tx", true, pid, e0).await, Ok(e1));
        assert_eq!(
            c.end_transaction_v2("tx", false, pid, e0).await,
            Err(ResponseError::InvalidTxnState)
        );
        assert_eq!(
            c.end_transaction_v2("tx", true, pid, e0 - 1).await,
            Err(ResponseError::ProducerFenced)
        );
        // A write under the old epoch cannot join a transaction any more.
        assert_eq!(
            c.add_partitions("tx", pid, e0, vec![t("a", 0)], false, 2)
                .await,
            Err(ResponseError::ProducerFenced)
        );
        // Aborting with nothing added is allowed and bumps too, without markers.
        let e2 = c.end_transaction_v2("tx", false, pid, e1.1).await.unwrap();
        assert_eq!(e2, (pid, e1.1 + 1));
        assert!(host.markers.lock().is_empty());
        // Committing nothing is not.
        assert_eq!(
            c.end_transaction_v2("tx", true, pid, e2.1).await,
            Err(ResponseError::InvalidTxnState)
        );
        // The state, version 2 included, survives a replay.
        c.add_partitions("tx", pid, e2.1, vec![t("b", 1)], false, 2)
            .await
            .unwrap();
        let before = c.describe("tx").unwrap();
        assert_eq!(before.client_version, 2);
        c.load_partition(0).unwrap();
        assert_eq!(c.describe("tx").unwrap(), before);
    }

    #[tokio::test]
    async fn version_2_moves_to_a_new_producer_id_when_the_epoch_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let host = FakeHost::new(dir.path());
        let c = coordinator(&host, 1 << 40);
        let (pid, _) = c.init_producer_id("tx", 30_000, None).await.unwrap();
        let last = i16::MAX - 1;
        c.txns.lock().get_mut("tx").unwrap().meta.producer_epoch = last;
        c.add_partitions("tx", pid, last, vec![t("a", 0)], false, 2)
            .await
            .unwrap();
        let (next, epoch) = c.end_transaction_v2("tx", true, pid, last).await.unwrap();
        assert_ne!(next, pid);
        assert_eq!(epoch, 0);
        // The markers end the transaction under the old id, at an epoch above any the
        // producer used.
        let m = host.markers.lock().pop().unwrap();
        assert_eq!((m.producer_id, m.producer_epoch), (pid, i16::MAX));
        // A retry from the old id and epoch gets the new id.
        assert_eq!(
            c.end_transaction_v2("tx", true, pid, last).await,
            Ok((next, 0))
        );
        c.load_partition(0).unwrap();
        assert_eq!(c.describe("tx").unwrap().prev_producer_id, pid);
    }

    #[test]
    fn version_2_end_rules() {
        let mut m = TxnMeta::new(7, 5, 1000, 0);
        let plan = |m: &TxnMeta, commit, epoch| plan_end_v2(m, commit, 7, epoch);
        m.state = TxnState::Ongoing;
        assert_eq!(
            plan(&m, true, 5),
            Ok(EndV2::Prepare {
                with_partitions: true
            })
        );
        assert_eq!(plan(&m, true, 4), Err(ResponseError::ProducerFenced));
        assert_eq!(plan(&m, true, 6), Err(ResponseError::ProducerFenced));
        assert_eq!(
            plan_end_v2(&m, true, 8, 5),
            Err(ResponseError::InvalidProducerIdMapping)
        );
        m.state = TxnState::PrepareCommit;
        assert_eq!(
            plan(&m, true, 4),
            Err(ResponseError::ConcurrentTransactions)
        );
        assert_eq!(plan(&m, true, 5), Err(ResponseError::ProducerFenced));
        m.state = TxnState::CompleteAbort;
        assert_eq!(plan(&m, false, 4), Ok(EndV2::Done));
        assert_eq!(plan(&m, true, 4), Err(ResponseError::InvalidTxnState));
        assert_eq!(
            plan(&m, false, 5),
            Ok(EndV2::Prepare {
                with_partitions: false
            })
        );
    }
}
