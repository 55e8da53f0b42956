//! Kafka wire protocol: framing, request headers, version negotiation and dispatch to one
//! handler per API key. Message types come from the `kafka-protocol` crate.

pub mod handlers;
pub mod versions;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::error::{Error, Result};

/// A decoded request header with the body still undecoded.
#[derive(Debug)]
pub struct Frame {
    pub header: RequestHeader,
    /// The client's address, as Kafka reports it ("/IP").
    pub client_host: String,
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

/// Encode a response with its size prefix and header.
pub fn encode_response<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<BytesMut> {
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
    let mut out = BytesMut::with_capacity(4 + size);
    out.put_i32(size as i32);
    header
        .encode(&mut out, header_version)
        .and_then(|_| body.encode(&mut out, version))
        .map_err(|e| {
            Error::InvalidRequest(format!(
                "cannot encode {api_key:?} v{version} response: {e}"
            ))
        })?;
    Ok(out)
}
