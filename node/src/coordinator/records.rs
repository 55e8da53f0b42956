//! Records of the `__consumer_offsets` topic, in Apache Kafka's own layout so its tools can
//! read them: offset commits (key v1, value v3) and group metadata (key v2, value v3).
//! The `kafka-protocol` crate has no types for these, so the codec is here, bounds-checked.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};

/// A key in the offsets topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// Committed offset of one partition for one group.
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    /// Membership and assignment of one group.
    Group { group: String },
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// One member as stored in group metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout: i32,
    pub session_timeout: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// Group metadata as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

pub(crate) fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn put_nstr(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

pub(crate) fn bad(what: &str) -> Error {
    Error::CorruptBatch(format!("coordinator record: {what}"))
}

pub(crate) fn need(buf: &Bytes, n: usize, what: &str) -> Result<()> {
    if buf.remaining() < n {
        return Err(bad(&format!("truncated {what}")));
    }
    Ok(())
}

pub(crate) fn get_i16(b: &mut Bytes) -> Result<i16> {
    need(b, 2, "int16")?;
    Ok(b.get_i16())
}
pub(crate) fn get_i32(b: &mut Bytes) -> Result<i32> {
    need(b, 4, "int32")?;
    Ok(b.get_i32())
}
pub(crate) fn get_i64(b: &mut Bytes) -> Result<i64> {
    need(b, 8, "int64")?;
    Ok(b.get_i64())
}
fn get_nstr(b: &mut Bytes) -> Result<Option<String>> {
    let n = get_i16(b)?;
    if n < 0 {
        return Ok(None);
    }
    need(b, n as usize, "string")?;
    let raw = b.split_to(n as usize);
    String::from_utf8(raw.to_vec())
        .map(Some)
        .map_err(|_| bad("string is not UTF-8"))
}
pub(crate) fn get_str(b: &mut Bytes) -> Result<String> {
    get_nstr(b)?.ok_or_else(|| bad("null string"))
}
fn get_bytes(b: &mut Bytes) -> Result<Bytes> {
    let n = get_i32(b)?;
    if n < 0 {
        return Ok(Bytes::new());
    }
    need(b, n as usize, "bytes")?;
    Ok(b.split_to(n as usize))
}

impl Key {
    /// Encode in Kafka's layout.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            Key::Offset {
                group,
                topic,
                partition,
            } => {
                b.put_i16(1);
                put_str(&mut b, group);
                put_str(&mut b, topic);
                b.put_i32(*partition);
            }
            Key::Group { group } => {
                b.put_i16(2);
                put_str(&mut b, group);
            }
        }
        b.freeze()
    }

    /// Decode; `None` for key versions this node does not use (e.g. KIP-848 records).
    pub fn decode(mut b: Bytes) -> Result<Option<Key>> {
        match get_i16(&mut b)? {
            0 | 1 => Ok(Some(Key::Offset {
                group: get_str(&mut b)?,
                topic: get_str(&mut b)?,
                partition: get_i32(&mut b)?,
            })),
            2 => Ok(Some(Key::Group {
                group: get_str(&mut b)?,
            })),
            _ => Ok(None),
        }
    }

    /// The group this key belongs to.
    pub fn group(&self) -> &str {
        match self {
            Key::Offset { group, .. } | Key::Group { group } => group,
        }
    }
}

impl OffsetValue {
    /// Encode as value version 3.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(3);
        b.put_i64(self.offset);
        b.put_i32(self.leader_epoch);
        put_str(&mut b, &self.metadata);
        b.put_i64(self.commit_timestamp);
        b.freeze()
    }

    /// Decode value versions 0 to 3.
    pub fn decode(mut b: Bytes) -> Result<OffsetValue> {
        let version = get_i16(&mut b)?;
        if !(0..=4).contains(&version) {
            return Err(bad(&format!("unknown offset value version {version}")));
        }
        let offset = get_i64(&mut b)?;
        let leader_epoch = if version >= 3 { get_i32(&mut b)? } else { -1 };
        let metadata = get_str(&mut b)?;
        let commit_timestamp = get_i64(&mut b)?;
        if version == 1 {
            let _expire = get_i64(&mut b)?;
        }
        Ok(OffsetValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp,
        })
    }
}

impl GroupValue {
    /// Encode as value version 3.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(3);
        put_str(&mut b, &self.protocol_type);
        b.put_i32(self.generation);
        put_nstr(&mut b, self.protocol.as_deref());
        put_nstr(&mut b, self.leader.as_deref());
        b.put_i64(self.current_state_timestamp);
        b.put_i32(self.members.len() as i32);
        for m in &self.members {
            put_str(&mut b, &m.member_id);
            put_nstr(&mut b, m.group_instance_id.as_deref());
            put_str(&mut b, &m.client_id);
            put_str(&mut b, &m.client_host);
            b.put_i32(m.rebalance_timeout);
            b.put_i32(m.session_timeout);
            put_bytes(&mut b, &m.subscription);
            put_bytes(&mut b, &m.assignment);
        }
        b.freeze()
    }

    /// Decode value versions 0 to 3.
    pub fn decode(mut b: Bytes) -> Result<GroupValue> {
        let version = get_i16(&mut b)?;
        if !(0..=4).contains(&version) {
            return Err(bad(&format!("unknown group value version {version}")));
        }
        let protocol_type = get_str(&mut b)?;
        let generation = get_i32(&mut b)?;
        let protocol = get_nstr(&mut b)?;
        let leader = get_nstr(&mut b)?;
        let current_state_timestamp = if version >= 2 { get_i64(&mut b)? } else { -1 };
        let n = get_i32(&mut b)?;
        if n < 0 || n as usize > b.remaining() {
            return Err(bad("member count exceeds record"));
        }
        let mut members = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let member_id = get_str(&mut b)?;
            let group_instance_id = if version >= 3 {
                get_nstr(&mut b)?
            } else {
                None
            };
            let client_id = get_str(&mut b)?;
            let client_host = get_str(&mut b)?;
            let rebalance_timeout = if version >= 1 { get_i32(&mut b)? } else { 0 };
            let session_timeout = get_i32(&mut b)?;
            let subscription = get_bytes(&mut b)?;
            let assignment = get_bytes(&mut b)?;
            members.push(MemberValue {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout,
                session_timeout,
                subscription,
                assignment,
            });
        }
        Ok(GroupValue {
            protocol_type,
            generation,
            protocol,
            leader,
            current_state_timestamp,
            members,
        })
    }
}

/// Kafka's `Utils.abs(groupId.hashCode) % partitions`: Java's String.hashCode over UTF-16.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for u in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(u as i32);
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrips() {
        let k = Key::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
        };
        assert_eq!(Key::decode(k.encode()).unwrap(), Some(k));
        let k = Key::Group {
            group: "grp".into(),
        };
        assert_eq!(Key::decode(k.encode()).unwrap(), Some(k));
        let v = OffsetValue {
            offset: 42,
            leader_epoch: 1,
            metadata: "m".into(),
            commit_timestamp: 7,
        };
        assert_eq!(OffsetValue::decode(v.encode()).unwrap(), v);
        let g = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("a".into()),
            current_state_timestamp: 9,
            members: vec![MemberValue {
                member_id: "a".into(),
                group_instance_id: Some("i".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout: 1,
                session_timeout: 2,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(GroupValue::decode(g.encode()).unwrap(), g);
    }

    #[test]
    fn hostile_input_is_an_error() {
        assert!(Key::decode(Bytes::from_static(&[0, 1, 0x7f, 0xff])).is_err());
        let mut b = BytesMut::new();
        b.put_i16(3);
        put_str(&mut b, "consumer");
        b.put_i32(1);
        b.put_i16(-1);
        b.put_i16(-1);
        b.put_i64(0);
        b.put_i32(i32::MAX);
        assert!(GroupValue::decode(b.freeze()).is_err());
    }

    #[test]
    fn partition_matches_java_hashcode() {
        // "test_group".hashCode() == 2059298962 in Java; 2059298962 % 50 == 12.
        assert_eq!(partition_for("test_group", 50), 12);
        assert_eq!(partition_for("", 50), 0);
    }
}
