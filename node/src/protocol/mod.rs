//! Kafka wire protocol: framing, request headers, version negotiation and dispatch to one
//! handler per API key. Message types come from the `kafka-protocol` crate. Handlers see
//! the whole node (`crate::node::Node`): they are the request path into its parts.

pub mod handlers;
pub mod versions;

use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::error::{Error, Result};

/// A decoded request header with the body still undecoded.
#[derive(Debug)]
pub struct Frame {
    pub header: RequestHeader,
    /// The client's address, as Kafka reports it ("/IP").
    pub client_host: String,
    /// Who sent it, from where, on which listener.
    pub caller: crate::security::Caller,
    pub api_key: ApiKey,
    pub body: Bytes,
}

/// What to do with a request frame.
#[derive(Debug)]
pub enum Parsed {
    /// A supported API and version.
    Request(Frame),
    /// ApiVersions at a version we do not know: answer v0 with UNSUPPORTED_VERSION.
    UnsupportedApiVersions { correlation_id: i32 },
    /// Anything else we cannot answer: close the connection, as Kafka does.
    Close(String),
}

/// What a request turns into.
#[derive(Debug)]
pub enum Reply {
    /// An encoded response to send.
    Bytes(ResponseBytes),
    /// No response (acks=0 produce).
    Nothing,
    /// Close the connection (malformed or unanswerable request).
    Close,
}

/// A response being produced.
pub type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send>>;

/// Parse a complete request frame (without its 4-byte length prefix).
pub fn parse_frame(mut buf: Bytes) -> Parsed {
    if buf.len() < 8 {
        return Parsed::Close(format!(
            "request of {} bytes is shorter than a header",
            buf.len()
        ));
    }
    let key = i16::from_be_bytes([buf[0], buf[1]]);
    let version = i16::from_be_bytes([buf[2], buf[3]]);
    let correlation_id = i32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let Ok(api_key) = ApiKey::try_from(key) else {
        return Parsed::Close(format!("unknown api key {key}"));
    };
    if !versions::is_supported(api_key, version) {
        if api_key == ApiKey::ApiVersions {
            return Parsed::UnsupportedApiVersions { correlation_id };
        }
        return Parsed::Close(format!("unsupported version {version} of {api_key:?}"));
    }
    let header_version = api_key.request_header_version(version);
    let header = match RequestHeader::decode(&mut buf, header_version) {
        Ok(h) => h,
        Err(e) => return Parsed::Close(format!("malformed request header: {e}")),
    };
    Parsed::Request(Frame {
        header,
        client_host: String::new(),
        caller: crate::security::Caller::internal(),
        api_key,
        body: buf,
    })
}

/// Decode a request body.
pub fn decode_body<T: Decodable>(frame: &Frame) -> Result<T> {
    let mut body = frame.body.clone();
    let msg = T::decode(&mut body, frame.header.request_api_version).map_err(|e| {
        Error::InvalidRequest(format!(
            "malformed {:?} v{}: {e}",
            frame.api_key, frame.header.request_api_version
        ))
    })?;
    if body.has_remaining() {
        // Apache Kafka ignores bytes after the fields it knows (librdkafka, for one, sends
        // fields of older versions in Metadata v12); so do we.
        tracing::debug!(trailing = body.remaining(), api = ?frame.api_key, "ignoring trailing request bytes");
    }
    Ok(msg)
}

/// An encoded response frame (size prefix, header, body) as consecutive chunks. Most
/// responses are one chunk; a Fetch response's record sets are chunks of their own, shared
/// with what the log read, so that they are not copied into the response.
#[derive(Debug, Clone, Default)]
pub struct ResponseBytes {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Frame {
    /// The caller, for authorization checks.
    pub fn caller(&self) -> crate::security::Caller {
        self.caller.clone()
    }
}

impl ResponseBytes {
    /// The frame's chunks, to be written one after the other.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// Length of the whole frame.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame has no bytes (never the case for an encoded response).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole frame in one buffer (tests and tools; the server writes the chunks).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for c in &self.chunks {
            out.extend_from_slice(c);
        }
        out
    }
}

/// Record sets smaller than this are copied into the response: not worth a chunk of their own.
const SPLICE_MIN_BYTES: usize = 4096;

/// The encoder's output buffer, which turns the byte fields listed in `splice` into chunks of
/// their own instead of copying them. The encoder writes a `bytes` field with one
/// `put_slice` of the field's whole value, so a slice with the pointer and length of the next
/// listed field is that field (or other bytes equal to it): it is sent from the listed
/// `Bytes` instead. The output is byte for byte what a plain buffer would hold.
struct SplicingBuf<'a> {
    /// Finished chunks.
    chunks: Vec<Bytes>,
    /// Bytes in `chunks`.
    done: usize,
    /// What the encoder writes now.
    tail: BytesMut,
    /// Fields still to splice, in the order the encoder writes them.
    splice: &'a [Bytes],
}

impl SplicingBuf<'_> {
    fn finish(mut self) -> ResponseBytes {
        if !self.tail.is_empty() || self.chunks.is_empty() {
            self.done += self.tail.len();
            self.chunks.push(self.tail.freeze());
        }
        ResponseBytes {
            chunks: self.chunks,
            len: self.done,
        }
    }

    /// Go back to one contiguous buffer (the encoder wants to rewrite finished bytes).
    fn unsplice(&mut self) {
        let mut all = BytesMut::with_capacity(self.done + self.tail.capacity());
        for c in self.chunks.drain(..) {
            all.extend_from_slice(&c);
        }
        all.extend_from_slice(&self.tail);
        self.tail = all;
        self.done = 0;
        self.splice = &[];
    }
}

// SAFETY: the required methods delegate to `tail`, a `BytesMut`, so `chunk_mut`,
// `advance_mut` and `remaining_mut` describe one buffer exactly as they do for it;
// `put_slice` only adds whole chunks besides writing through `tail`'s own `put_slice`.
unsafe impl BufMut for SplicingBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.tail.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's guarantee (cnt bytes of `chunk_mut` initialised) is about
        // `tail`'s chunk, which is what `chunk_mut` returned.
        unsafe { self.tail.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.tail.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if let Some((next, rest)) = self.splice.split_first() {
            if src.as_ptr() == next.as_ptr() && src.len() == next.len() {
                if !self.tail.is_empty() {
                    self.done += self.tail.len();
                    self.chunks.push(self.tail.split().freeze());
                }
                self.done += next.len();
                self.chunks.push(next.clone());
                self.splice = rest;
                return;
            }
        }
        self.tail.put_slice(src);
    }
}

impl ByteBufMut for SplicingBuf<'_> {
    fn offset(&self) -> usize {
        self.done + self.tail.len()
    }

    fn seek(&mut self, offset: usize) {
        if offset < self.done {
            self.unsplice();
        }
        self.tail.resize(offset - self.done, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        if r.start < self.done {
            self.unsplice();
        }
        &mut self.tail[r.start - self.done..r.end - self.done]
    }
}

/// Encode a response with its size prefix and header.
pub fn encode_response<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<ResponseBytes> {
    encode_response_splicing(api_key, version, correlation_id, body, &[])
}

/// Encode a Fetch response, its larger record sets as chunks of their own.
pub fn encode_fetch_response(
    version: i16,
    correlation_id: i32,
    body: &FetchResponse,
) -> Result<ResponseBytes> {
    let records: Vec<Bytes> = body
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.clone())
        .filter(|r| r.len() >= SPLICE_MIN_BYTES)
        .collect();
    encode_response_splicing(ApiKey::Fetch, version, correlation_id, body, &records)
}

/// Encode a response with its size prefix and header; `splice` lists byte fields of `body`,
/// in the order the encoder writes them, to send as chunks of their own.
fn encode_response_splicing<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
    splice: &[Bytes],
) -> Result<ResponseBytes> {
    // ApiVersions responses always use header v0 so that any client can read them.
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    };
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let size = header
        .compute_size(header_version)
        .and_then(|h| body.compute_size(version).map(|b| h + b))
        .map_err(|e| {
            Error::InvalidRequest(format!("cannot size {api_key:?} v{version} response: {e}"))
        })?;
    let spliced: usize = splice.iter().map(|b| b.len()).sum();
    let mut out = SplicingBuf {
        chunks: Vec::with_capacity(2 * splice.len() + 1),
        done: 0,
        tail: BytesMut::with_capacity((4 + size).saturating_sub(spliced)),
        splice,
    };
    out.put_i32(size as i32);
    header
        .encode(&mut out, header_version)
        .and_then(|_| body.encode(&mut out, version))
        .map_err(|e| {
            Error::InvalidRequest(format!(
                "cannot encode {api_key:?} v{version} response: {e}"
            ))
        })?;
    Ok(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    /// The response as one buffer, encoded the plain way.
    fn plain(version: i16, correlation_id: i32, body: &FetchResponse) -> Vec<u8> {
        let hv = ApiKey::Fetch.response_header_version(version);
        let mut header = ResponseHeader::default();
        header.correlation_id = correlation_id;
        let size = header.compute_size(hv).unwrap() + body.compute_size(version).unwrap();
        let mut out = BytesMut::new();
        out.put_i32(size as i32);
        header.encode(&mut out, hv).unwrap();
        body.encode(&mut out, version).unwrap();
        out.to_vec()
    }

    fn partition(index: i32, records: Option<Bytes>) -> PartitionData {
        let mut p = PartitionData::default();
        p.partition_index = index;
        p.high_watermark = 1000 + index as i64;
        p.records = records;
        p
    }

    fn response(version: i16, big: &Bytes) -> FetchResponse {
        let small = Bytes::from(vec![7u8; 100]);
        let huge = Bytes::from((0..70_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let mut topics = Vec::new();
        for (t, parts) in [
            vec![
                partition(0, Some(big.clone())),
                partition(1, None),
                partition(2, Some(small)),
                partition(3, Some(Bytes::new())),
                partition(4, Some(big.clone())),
            ],
            vec![
                partition(0, Some(huge)),
                partition(1, Some(big.slice(10..))),
            ],
        ]
        .into_iter()
        .enumerate()
        {
            let mut ft = FetchableTopicResponse::default();
            if version >= 13 {
                ft.topic_id = uuid::Uuid::from_u128(t as u128 + 1);
            } else {
                ft.topic = TopicName(StrBytes::from_string(format!("topic-{t}")));
            }
            ft.partitions = parts;
            topics.push(ft);
        }
        let mut r = FetchResponse::default();
        r.responses = topics;
        r
    }

    #[test]
    fn fetch_responses_with_spliced_records_match_the_plain_encoding_at_every_version() {
        let (_, lo, hi) = *versions::SUPPORTED
            .iter()
            .find(|(k, _, _)| *k == ApiKey::Fetch)
            .expect("Fetch is supported");
        let big = Bytes::from(vec![0xabu8; 5000]);
        for v in lo..=hi {
            let body = response(v, &big);
            let encoded = encode_fetch_response(v, 42, &body).unwrap();
            let bytes = encoded.to_vec();
            assert_eq!(bytes, plain(v, 42, &body), "Fetch v{v}");
            assert_eq!(encoded.len(), bytes.len());
            // The large record sets are sent from the log's buffers, not copied.
            let shared = encoded
                .chunks()
                .iter()
                .filter(|c| c.as_ptr() == big.as_ptr())
                .count();
            assert_eq!(
                shared, 2,
                "Fetch v{v}: both uses of the 5000-byte set spliced"
            );
            let large = encoded.chunks().iter().filter(|c| c.len() >= 4096).count();
            assert_eq!(large, 4, "Fetch v{v}: every set of 4 KiB or more spliced");
            // And it decodes back to the same response.
            let mut frame = Bytes::from(bytes);
            frame.advance(4);
            ResponseHeader::decode(&mut frame, ApiKey::Fetch.response_header_version(v)).unwrap();
            assert_eq!(FetchResponse::decode(&mut frame, v).unwrap(), body);
        }
    }

    #[test]
    fn rewriting_spliced_bytes_falls_back_to_one_buffer() {
        let big = Bytes::from(vec![1u8; 5000]);
        let splice = [big.clone()];
        let mut buf = SplicingBuf {
            chunks: Vec::new(),
            done: 0,
            tail: BytesMut::new(),
            splice: &splice,
        };
        buf.put_slice(b"ab");
        buf.put_slice(&big);
        buf.put_slice(b"cd");
        assert_eq!(buf.offset(), 5004);
        buf.range(0..2).copy_from_slice(b"XY");
        buf.seek(5006);
        let out = buf.finish();
        assert_eq!(out.chunks().len(), 1);
        let mut want = b"XY".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"cd\0\0");
        assert_eq!(out.to_vec(), want);
    }

    #[test]
    fn other_responses_are_one_chunk() {
        let body = kafka_protocol::messages::ApiVersionsResponse::default();
        let encoded = encode_response(ApiKey::ApiVersions, 3, 9, &body).unwrap();
        assert_eq!(encoded.chunks().len(), 1);
        assert_eq!(&encoded.to_vec()[4..8], &9i32.to_be_bytes());
    }
}
