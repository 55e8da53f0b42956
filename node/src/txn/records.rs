//! Records of the `__transaction_state` topic, in Apache Kafka's layout (key v0; value v0,
//! or the flexible v1 when a field only v1 carries is set): one record per transactional
//! id, the latest of which is its state.

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
    /// The transaction protocol the producer speaks (Kafka's ClientTransactionVersion):
    /// 2 is KIP-890's second part, the epoch bumped at the end of every transaction.
    pub client_version: i16,
    /// The producer id before the last epoch overflow gave the id a new one (-1: none),
    /// so that a retried EndTxn from the old id is recognised.
    pub prev_producer_id: i64,
    /// The producer id an ending transaction hands over to when the epoch overflows
    /// (-1: none).
    pub next_producer_id: i64,
}

impl TxnMeta {
    /// A fresh id's state: no transaction, no protocol version known yet.
    pub fn new(producer_id: i64, producer_epoch: i16, timeout_ms: i32, now_ms: i64) -> TxnMeta {
        TxnMeta {
            producer_id,
            producer_epoch,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            update_ms: now_ms,
            start_ms: -1,
            client_version: 0,
            prev_producer_id: -1,
            next_producer_id: -1,
        }
    }
}

fn put_uvarint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn get_uvarint(b: &mut Bytes) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..35).step_by(7) {
        need(b, 1, "varint")?;
        let byte = b.get_u8();
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad("varint too long"))
}

/// A compact array or string length (stored plus one; None: null).
fn get_compact_len(b: &mut Bytes) -> Result<Option<usize>> {
    Ok(get_uvarint(b)?.checked_sub(1).map(|n| n as usize))
}

fn get_compact_str(b: &mut Bytes) -> Result<String> {
    let n = get_compact_len(b)?.ok_or_else(|| bad("null string"))?;
    need(b, n, "string")?;
    String::from_utf8(b.split_to(n).to_vec()).map_err(|_| bad("string is not UTF-8"))
}

/// Skip a tagged-field section, returning the fields of known tags.
fn get_tagged(b: &mut Bytes) -> Result<Vec<(u64, Bytes)>> {
    let n = get_uvarint(b)?;
    let mut out = Vec::new();
    for _ in 0..n {
        let tag = get_uvarint(b)?;
        let size = get_uvarint(b)? as usize;
        need(b, size, "tagged field")?;
        out.push((tag, b.split_to(size)));
    }
    Ok(out)
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
    /// Whether only value v1 can hold this state (its tagged fields are set).
    fn needs_v1(&self) -> bool {
        self.client_version != 0 || self.prev_producer_id != -1 || self.next_producer_id != -1
    }

    /// Encode as value v0, or as v1 when a tagged field of v1 is set (as Kafka does, the
    /// tagged fields at their default are left out).
    pub fn encode(&self) -> Bytes {
        let flexible = self.needs_v1();
        let mut b = BytesMut::new();
        b.put_i16(if flexible { 1 } else { 0 });
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
        if flexible {
            put_uvarint(&mut b, topics.len() as u64 + 1);
        } else {
            b.put_i32(topics.len() as i32);
        }
        for (t, ps) in topics {
            if flexible {
                put_uvarint(&mut b, t.len() as u64 + 1);
                b.put_slice(t.as_bytes());
                put_uvarint(&mut b, ps.len() as u64 + 1);
            } else {
                put_str(&mut b, t);
                b.put_i32(ps.len() as i32);
            }
            for p in ps {
                b.put_i32(p);
            }
            if flexible {
                put_uvarint(&mut b, 0);
            }
        }
        b.put_i64(self.update_ms);
        b.put_i64(self.start_ms);
        if flexible {
            let mut tagged: Vec<(u64, Vec<u8>)> = Vec::new();
            if self.prev_producer_id != -1 {
                tagged.push((0, self.prev_producer_id.to_be_bytes().to_vec()));
            }
            if self.next_producer_id != -1 {
                tagged.push((1, self.next_producer_id.to_be_bytes().to_vec()));
            }
            if self.client_version != 0 {
                tagged.push((2, self.client_version.to_be_bytes().to_vec()));
            }
            put_uvarint(&mut b, tagged.len() as u64);
            for (tag, data) in tagged {
                put_uvarint(&mut b, tag);
                put_uvarint(&mut b, data.len() as u64);
                b.put_slice(&data);
            }
        }
        b.freeze()
    }

    /// Decode value v0 or v1.
    pub fn decode(mut raw: Bytes) -> Result<TxnMeta> {
        let version = get_i16(&mut raw)?;
        if !(0..=1).contains(&version) {
            return Err(bad(&format!(
                "transaction state value of unknown version {version}"
            )));
        }
        let flexible = version == 1;
        let producer_id = get_i64(&mut raw)?;
        let producer_epoch = get_i16(&mut raw)?;
        let timeout_ms = get_i32(&mut raw)?;
        need(&raw, 1, "int8")?;
        let code = raw.get_i8();
        let state = TxnState::from_code(code)
            .ok_or_else(|| bad(&format!("unknown transaction state {code}")))?;
        let mut partitions = BTreeSet::new();
        let topics = if flexible {
            get_compact_len(&mut raw)?.unwrap_or(0)
        } else {
            get_i32(&mut raw)?.max(0) as usize
        };
        // Each topic needs at least 3 bytes, each partition 4: a count larger than what
        // remains is corrupt (and must not size an allocation).
        if topics > raw.remaining() / 3 {
            return Err(bad("topic count exceeds the record"));
        }
        for _ in 0..topics {
            let (topic, n) = if flexible {
                let t = get_compact_str(&mut raw)?;
                (t, get_compact_len(&mut raw)?.unwrap_or(0))
            } else {
                let t = get_str(&mut raw)?;
                (t, get_i32(&mut raw)?.max(0) as usize)
            };
            if n > raw.remaining() / 4 {
                return Err(bad("partition count exceeds the record"));
            }
            for _ in 0..n {
                partitions.insert((topic.clone(), get_i32(&mut raw)?));
            }
            if flexible {
                get_tagged(&mut raw)?;
            }
        }
        let update_ms = get_i64(&mut raw)?;
        let start_ms = get_i64(&mut raw)?;
        let mut meta = TxnMeta {
            producer_id,
            producer_epoch,
            timeout_ms,
            state,
            partitions,
            update_ms,
            start_ms,
            client_version: 0,
            prev_producer_id: -1,
            next_producer_id: -1,
        };
        if flexible {
            for (tag, mut data) in get_tagged(&mut raw)? {
                match tag {
                    0 => meta.prev_producer_id = get_i64(&mut data)?,
                    1 => meta.next_producer_id = get_i64(&mut data)?,
                    2 => meta.client_version = get_i16(&mut data)?,
                    _ => {}
                }
            }
        }
        Ok(meta)
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
            client_version: 0,
            prev_producer_id: -1,
            next_producer_id: -1,
        };
        assert_eq!(m.encode()[..2], [0, 0], "v0 while no v1 field is set");
        assert_eq!(TxnMeta::decode(m.encode()).unwrap(), m);
        let v2 = TxnMeta {
            client_version: 2,
            prev_producer_id: 17,
            next_producer_id: 4001,
            ..m.clone()
        };
        assert_eq!(v2.encode()[..2], [0, 1]);
        // What Kafka 4.1's TransactionLogValue writes for the same state at version 1.
        let kafka = "00010000000000000fa000030000ea600203026103000000000000000200026202000000\
                     010000000000000004d200000000000003e8030008000000000000001101080000000000\
                     000fa102020002";
        let hex: String = v2.encode().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, kafka);
        assert_eq!(TxnMeta::decode(v2.encode()).unwrap(), v2);
        let raw = v2.encode();
        for cut in 0..raw.len() {
            assert!(
                TxnMeta::decode(raw.slice(..cut)).is_err(),
                "v1 cut at {cut}"
            );
        }
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
