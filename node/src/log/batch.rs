//! Record batch (magic v2) header parsing, validation and offset patching.
//!
//! Batches are stored exactly as producers send them. The broker only reads the fixed
//! 61-byte header, checks the CRC32C, and patches `base_offset` and
//! `partition_leader_epoch`, which lie outside the CRC-covered range (and, on LogAppendTime
//! topics, the attributes and max timestamp, recomputing the CRC). Only the header changes,
//! so the log writes a patched copy of it followed by the producer's bytes as they came.

use crate::error::{Error, Result};

/// Size of the fixed v2 batch header.
pub const HEADER_LEN: usize = 61;
/// Bytes before the `batch_length` field ends: base offset (8) + length (4).
pub const LOG_OVERHEAD: usize = 12;

const OFF_BASE_OFFSET: usize = 0;
const OFF_LENGTH: usize = 8;
const OFF_LEADER_EPOCH: usize = 12;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_BASE_TIMESTAMP: usize = 27;
const OFF_MAX_TIMESTAMP: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQUENCE: usize = 53;
const OFF_RECORD_COUNT: usize = 57;

/// Attribute bit: timestamps are LogAppendTime.
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;
/// Attribute bit: part of a transaction.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit: control batch.
pub const ATTR_CONTROL: i16 = 0x20;

/// The parsed fixed header of one v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Length of the batch after the length field.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Total bytes of the batch including the offset and length fields.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }
    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & 0x07
    }
    /// Whether the producer asked for idempotent sequencing.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
    /// Last sequence number in the batch, wrapping as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        if last > i32::MAX as i64 {
            (last - i32::MAX as i64 - 1) as i32
        } else {
            last as i32
        }
    }
    /// Whether this is a transactional or control batch.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Whether the batch belongs to a transaction (data or marker).
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("slice of 8"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("slice of 4"))
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("slice of 2"))
}

/// Parse the header at the start of `buf` without checking the CRC.
///
/// Returns `None` when `buf` is shorter than a header. Errors when the header
/// describes an impossible batch.
pub fn parse_header(buf: &[u8]) -> Result<Option<BatchHeader>> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let h = BatchHeader {
        base_offset: be_i64(buf, OFF_BASE_OFFSET),
        batch_length: be_i32(buf, OFF_LENGTH),
        partition_leader_epoch: be_i32(buf, OFF_LEADER_EPOCH),
        magic: buf[OFF_MAGIC] as i8,
        crc: u32::from_be_bytes(buf[OFF_CRC..OFF_CRC + 4].try_into().expect("4")),
        attributes: be_i16(buf, OFF_ATTRIBUTES),
        last_offset_delta: be_i32(buf, OFF_LAST_OFFSET_DELTA),
        base_timestamp: be_i64(buf, OFF_BASE_TIMESTAMP),
        max_timestamp: be_i64(buf, OFF_MAX_TIMESTAMP),
        producer_id: be_i64(buf, OFF_PRODUCER_ID),
        producer_epoch: be_i16(buf, OFF_PRODUCER_EPOCH),
        base_sequence: be_i32(buf, OFF_BASE_SEQUENCE),
        record_count: be_i32(buf, OFF_RECORD_COUNT),
    };
    if h.magic != 2 {
        return Err(Error::UnsupportedMagic(h.magic));
    }
    if (h.batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
        return Err(Error::CorruptBatch(format!(
            "batch length {} too small",
            h.batch_length
        )));
    }
    if h.last_offset_delta < 0 || h.record_count < 0 {
        return Err(Error::CorruptBatch(
            "negative record count or offset delta".into(),
        ));
    }
    // The base offset lies outside the CRC: a corrupt one must not make offsets overflow.
    if h.base_offset < 0
        || h.base_offset
            .checked_add(h.last_offset_delta as i64 + 1)
            .is_none()
    {
        return Err(Error::CorruptBatch(format!(
            "impossible base offset {}",
            h.base_offset
        )));
    }
    Ok(Some(h))
}

/// CRC32C over the attributes-to-end range of a complete batch.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[OFF_ATTRIBUTES..])
}

/// Check that `batch` (exactly one complete batch) has a valid CRC.
pub fn verify_crc(h: &BatchHeader, batch: &[u8]) -> Result<()> {
    let actual = compute_crc(batch);
    if actual != h.crc {
        return Err(Error::CorruptBatch(format!(
            "crc mismatch: stored {:#010x}, computed {:#010x}",
            h.crc, actual
        )));
    }
    Ok(())
}

/// One batch found while walking a buffer of concatenated batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchSpan {
    pub header: BatchHeader,
    /// Byte position of the batch within the walked buffer.
    pub position: usize,
    /// Whether some record has a null key (refused by compacted topics).
    pub any_null_key: bool,
}

/// Split a producer's record set into batches, validating each one fully.
///
/// Used on the produce path: every batch must be complete, magic 2, CRC-valid, consistent
/// (record count matches the offset delta), and its records well formed.
pub fn validate_produce_records(buf: &[u8]) -> Result<Vec<BatchSpan>> {
    let mut spans = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let rest = &buf[pos..];
        let h = parse_header(rest)?
            .ok_or_else(|| Error::CorruptBatch("truncated batch header".into()))?;
        let len = h.total_len();
        if len > rest.len() {
            return Err(Error::CorruptBatch(format!(
                "batch claims {} bytes but only {} remain",
                len,
                rest.len()
            )));
        }
        verify_crc(&h, &rest[..len])?;
        if h.record_count == 0 {
            return Err(Error::InvalidRecord("batch holds no records".into()));
        }
        if h.record_count as i64 != h.last_offset_delta as i64 + 1 {
            return Err(Error::InvalidRecord(format!(
                "record count {} does not match last offset delta {}",
                h.record_count, h.last_offset_delta
            )));
        }
        // An uncompressed record needs at least 7 bytes (length, attributes, deltas, key,
        // value, header-count varints); compressed payloads can hold far more.
        if h.compression() == 0 && h.record_count as usize > (len - HEADER_LEN) / 7 {
            return Err(Error::CorruptBatch(
                "record count exceeds batch size".into(),
            ));
        }
        let summary = super::records::validate_produce_batch(&h, &rest[..len])?;
        if summary.records != h.record_count as usize {
            return Err(Error::CorruptBatch(
                "record count does not match the records".into(),
            ));
        }
        spans.push(BatchSpan {
            header: h,
            position: pos,
            any_null_key: summary.any_null_key,
        });
        pos += len;
    }
    if spans.is_empty() {
        return Err(Error::InvalidRecord("empty record set".into()));
    }
    Ok(spans)
}

/// Patch the offset and leader epoch of a batch in place (fields outside the CRC).
pub fn assign_offset(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Rewrite a batch header to LogAppendTime with `now` as its max timestamp, recomputing the
/// CRC. `header` is the batch's fixed header and `body` the rest of the batch: they may live
/// apart, so the append path can patch a copy of the header and leave the records in place.
pub fn set_log_append_time(header: &mut [u8; HEADER_LEN], body: &[u8], now: i64) {
    let attrs = be_i16(header, OFF_ATTRIBUTES) | ATTR_LOG_APPEND_TIME;
    header[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
    header[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&now.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[OFF_ATTRIBUTES..]), body);
    header[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// A copy of the header of `batch` (one complete, validated batch) patched as the log stores
/// it: offset and leader epoch, and LogAppendTime when `log_append_time` is given.
pub fn patched_header(
    batch: &[u8],
    base_offset: i64,
    leader_epoch: i32,
    log_append_time: Option<i64>,
) -> [u8; HEADER_LEN] {
    let (head, body) = batch.split_at(HEADER_LEN);
    let mut header: [u8; HEADER_LEN] = head.try_into().expect("split at HEADER_LEN");
    assign_offset(&mut header, base_offset, leader_epoch);
    if let Some(now) = log_append_time {
        set_log_append_time(&mut header, body, now);
    }
    header
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// Build a real v2 batch with the crate's encoder.
    pub fn make_batch(values: &[&[u8]], ts: i64, pid: i64, seq: i32) -> Vec<u8> {
        make_batch_keyed(
            values.iter().map(|v| (None, Some(*v))).collect(),
            ts,
            pid,
            seq,
        )
    }

    /// Build a batch whose records carry the given timestamps (in any order).
    pub fn make_batch_stamped(stamps: &[i64], value: &[u8]) -> Vec<u8> {
        let mut raw = bytes::Bytes::from(make_batch(&vec![value; stamps.len()], 0, -1, -1));
        let mut set = kafka_protocol::records::RecordBatchDecoder::decode(&mut raw)
            .unwrap()
            .records;
        for (r, ts) in set.iter_mut().zip(stamps) {
            r.timestamp = *ts;
        }
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &set,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    /// A record's optional key and value.
    pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    /// Build a batch of (key, value) records.
    pub fn make_batch_keyed(kv: Vec<KeyValue<'_>>, ts: i64, pid: i64, seq: i32) -> Vec<u8> {
        encode_keyed(kv, ts, pid, seq, false)
    }

    /// Build a transactional batch of (key, value) records of producer `pid` (epoch 0)
    /// from sequence `seq`.
    pub fn make_txn_batch(kv: Vec<KeyValue<'_>>, ts: i64, pid: i64, seq: i32) -> Vec<u8> {
        encode_keyed(kv, ts, pid, seq, true)
    }

    fn encode_keyed(
        kv: Vec<KeyValue<'_>>,
        ts: i64,
        pid: i64,
        seq: i32,
        transactional: bool,
    ) -> Vec<u8> {
        let records: Vec<Record> = kv
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Record {
                transactional,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: pid,
                producer_epoch: if pid >= 0 { 0 } else { -1 },
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: if seq >= 0 {
                    seq + i as i32
                } else {
                    i as i32 - 1
                },
                timestamp: ts + i as i64,
                key: k.map(bytes::Bytes::copy_from_slice),
                value: v.map(bytes::Bytes::copy_from_slice),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    #[test]
    fn parses_and_validates_encoder_output() {
        let b = make_batch(&[b"a", b"bc", b"def"], 1000, -1, -1);
        let spans = validate_produce_records(&b).unwrap();
        assert_eq!(spans.len(), 1);
        let h = spans[0].header;
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.base_timestamp, 1000);
        assert_eq!(h.max_timestamp, 1002);
        assert_eq!(h.total_len(), b.len());
    }

    #[test]
    fn offset_patch_keeps_crc_valid() {
        let mut b = make_batch(&[b"x"], 5, -1, -1);
        assign_offset(&mut b, 42, 7);
        let h = parse_header(&b).unwrap().unwrap();
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.partition_leader_epoch, 7);
        verify_crc(&h, &b).unwrap();
    }

    #[test]
    fn log_append_time_recomputes_crc() {
        let b = make_batch(&[b"x", b"yz"], 5, -1, -1);
        let header = patched_header(&b, 42, 3, Some(99));
        let mut stored = header.to_vec();
        stored.extend_from_slice(&b[HEADER_LEN..]);
        let h = parse_header(&stored).unwrap().unwrap();
        assert_eq!(h.max_timestamp, 99);
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.partition_leader_epoch, 3);
        assert!(h.attributes & ATTR_LOG_APPEND_TIME != 0);
        verify_crc(&h, &stored).unwrap();
        // The CRC is the one of the whole patched batch, as if it were patched in place.
        assert_eq!(h.crc, compute_crc(&stored));
    }

    #[test]
    fn patched_header_without_log_append_time_changes_only_offset_and_epoch() {
        let b = make_batch(&[b"x"], 5, -1, -1);
        let header = patched_header(&b, 7, 2, None);
        let mut in_place = b.clone();
        assign_offset(&mut in_place, 7, 2);
        assert_eq!(&header[..], &in_place[..HEADER_LEN]);
    }

    #[test]
    fn bad_crc_is_rejected() {
        let mut b = make_batch(&[b"hello"], 5, -1, -1);
        let n = b.len();
        b[n - 1] ^= 0xff;
        assert!(matches!(
            validate_produce_records(&b),
            Err(Error::CorruptBatch(_))
        ));
    }

    #[test]
    fn truncated_is_rejected() {
        let b = make_batch(&[b"hello"], 5, -1, -1);
        assert!(validate_produce_records(&b[..b.len() - 1]).is_err());
        assert!(validate_produce_records(&b[..30]).is_err());
        assert!(validate_produce_records(&[]).is_err());
    }

    #[test]
    fn impossible_base_offsets_are_corrupt() {
        let mut b = make_batch(&[b"a", b"b"], 0, -1, -1);
        assign_offset(&mut b, i64::MAX - 1, 0);
        assert!(matches!(parse_header(&b), Err(Error::CorruptBatch(_))));
        assign_offset(&mut b, -7, 0);
        assert!(matches!(parse_header(&b), Err(Error::CorruptBatch(_))));
    }

    #[test]
    fn sequence_wraps() {
        let mut b = make_batch(&[b"a", b"b"], 0, 1, 0);
        // base sequence = i32::MAX, delta 1 -> last sequence wraps to 0
        b[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        let h = parse_header(&b).unwrap().unwrap();
        assert_eq!(h.last_sequence(), 0);
    }
}
