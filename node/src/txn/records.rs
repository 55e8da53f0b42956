//! Records of the `__transaction_state` topic, in Apache Kafka's layout (key v0, value v0):
//! one record per transactional id, the latest of which is its state.

use std::collections::BTreeSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::coordinator::records::{bad, get_i16, get_i32, get_i64, get_str, need, put_str};
use crate::error::Result;

/// Where a transaction is (Kafka's TransactionState, with its stored codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn code(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_code(c: i8) -> Option<TxnState> {
        Some(match c {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name Kafka's tools print (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }
}

/// The stored state of one transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions of the open (or ending) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    pub update_ms: i64,
    /// When the open transaction started (-1: none).
    pub start_ms: i64,
}

/// The key of a transactional id's record.
pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    put_str(&mut b, transactional_id);
    b.freeze()
}

/// The transactional id of a key; None for a key version this build does not know.
pub fn decode_key(mut raw: Bytes) -> Result<Option<String>> {
    let version = get_i16(&mut raw)?;
    if version != 0 {
        return Ok(None);
    }
    get_str(&mut raw).map(Some)
}

impl TxnMeta {
    /// Encode as value v0.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(0);
        b.put_i64(self.producer_id);
        b.put_i16(self.producer_epoch);
        b.put_i32(self.timeout_ms);
        b.put_i8(self.state.code());
        // Grouped by topic, as Kafka writes them.
        let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
        for (t, p) in &self.partitions {
            match topics.last_mut() {
                Some((last, ps)) if *last == t.as_str() => ps.push(*p),
                _ => topics.push((t, vec![*p])),
            }
        }
        b.put_i32(topics.len() as i32);
        for (t, ps) in topics {
            put_str(&mut b, t);
            b.put_i32(ps.len() as i32);
            for p in ps {
                b.put_i32(p);
            }
        }
        b.put_i64(self.update_ms);
        b.put_i64(self.start_ms);
        b.freeze()
    }

    /// Decode value v0 (or the fields v1 shares with it; tagged fields are ignored).
    pub fn decode(mut raw: Bytes) -> Result<TxnMeta> {
        let version = get_i16(&mut raw)?;
        if version != 0 {
            return Err(bad(&format!(
                "transaction state value of unknown version {version}"
            )));
        }
        let producer_id = get_i64(&mut raw)?;
        let producer_epoch = get_i16(&mut raw)?;
        let timeout_ms = get_i32(&mut raw)?;
        need(&raw, 1, "int8")?;
        let code = raw.get_i8();
        let state = TxnState::from_code(code)
            .ok_or_else(|| bad(&format!("unknown transaction state {code}")))?;
        let mut partitions = BTreeSet::new();
        let topics = get_i32(&mut raw)?;
        // Each topic needs at least 6 bytes, each partition 4: a count larger than what
        // remains is corrupt (and must not size an allocation).
        if topics > 0 && topics as usize > raw.remaining() / 6 {
            return Err(bad("topic count exceeds the record"));
        }
        for _ in 0..topics.max(0) {
            let topic = get_str(&mut raw)?;
            let n = get_i32(&mut raw)?;
            if n > 0 && n as usize > raw.remaining() / 4 {
                return Err(bad("partition count exceeds the record"));
            }
            for _ in 0..n.max(0) {
                partitions.insert((topic.clone(), get_i32(&mut raw)?));
            }
        }
        let update_ms = get_i64(&mut raw)?;
        let start_ms = get_i64(&mut raw)?;
        Ok(TxnMeta {
            producer_id,
            producer_epoch,
            timeout_ms,
            state,
            partitions,
            update_ms,
            start_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_keys_round_trip() {
        let m = TxnMeta {
            producer_id: 4000,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::PrepareCommit,
            partitions: [
                ("a".to_string(), 0),
                ("a".to_string(), 2),
                ("b".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            update_ms: 1234,
            start_ms: 1000,
        };
        assert_eq!(TxnMeta::decode(m.encode()).unwrap(), m);
        assert_eq!(
            decode_key(encode_key("tx-1")).unwrap().as_deref(),
            Some("tx-1")
        );
        let raw = m.encode();
        for cut in 0..raw.len() {
            assert!(TxnMeta::decode(raw.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
}
