//! A minimal Kafka client connection for node-to-node traffic (a follower's Fetch,
//! OffsetForLeaderEpoch and ListOffsets to its leader). One request in flight at a time,
//! over plain TCP or mutual TLS (an SSL inter-broker listener).

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// Largest response a follower accepts (replica.fetch.response.max.bytes is 10 MiB in
/// Kafka; allow room for many partitions).
const MAX_RESPONSE: usize = 256 << 20;

/// A byte stream to a peer: TCP, or TLS over TCP.
trait PeerStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> PeerStream for T {}

/// One connection to another node's Kafka listener.
pub struct Connection {
    stream: Box<dyn PeerStream>,
    addr: String,
    client_id: String,
    next_correlation: i32,
}

fn net(addr: &str, e: impl std::fmt::Display) -> Error {
    Error::Replication(format!("{addr}: {e}"))
}

impl Connection {
    /// Connects to `addr`; with `tls` (a client config and the name the peer's certificate
    /// must carry), completes a TLS handshake within the same 5 s.
    pub async fn connect(
        addr: &str,
        node_id: i32,
        tls: Option<(Arc<rustls::ClientConfig>, String)>,
    ) -> Result<Connection> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| net(addr, "connect timed out"))?
            .map_err(|e| net(addr, e))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn PeerStream> = match tls {
            None => Box::new(tcp),
            Some((config, name)) => {
                let server_name = rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| net(addr, format!("TLS server name {name:?}: {e}")))?;
                let connector = tokio_rustls::TlsConnector::from(config);
                let s = tokio::time::timeout_at(deadline, connector.connect(server_name, tcp))
                    .await
                    .map_err(|_| net(addr, "TLS handshake timed out"))?
                    .map_err(|e| net(addr, format!("TLS handshake: {e}")))?;
                Box::new(s)
            }
        };
        Ok(Connection {
            stream,
            addr: addr.to_string(),
            client_id: format!("strata-replica-{node_id}"),
            next_correlation: 1,
        })
    }

    /// Send `req` at `version` and decode the response.
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp> {
        let correlation = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let mut header = RequestHeader::default();
        header.request_api_key = api_key as i16;
        header.request_api_version = version;
        header.correlation_id = correlation;
        header.client_id = Some(StrBytes::from_string(self.client_id.clone()));
        let hv = api_key.request_header_version(version);
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, hv)
            .and_then(|_| req.encode(&mut buf, version))
            .map_err(|e| net(&self.addr, format!("encode {api_key:?}: {e}")))?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.stream
            .write_all(&buf)
            .await
            .map_err(|e| net(&self.addr, e))?;
        let size = self
            .stream
            .read_i32()
            .await
            .map_err(|e| net(&self.addr, e))?;
        if size < 0 || size as usize > MAX_RESPONSE {
            return Err(net(&self.addr, format!("response of {size} bytes")));
        }
        let mut body = vec![0u8; size as usize];
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|e| net(&self.addr, e))?;
        let mut body = Bytes::from(body);
        let rh = ResponseHeader::decode(&mut body, api_key.response_header_version(version))
            .map_err(|e| net(&self.addr, format!("response header: {e}")))?;
        if rh.correlation_id != correlation {
            return Err(net(
                &self.addr,
                format!(
                    "correlation id {} for request {correlation}",
                    rh.correlation_id
                ),
            ));
        }
        let resp = Resp::decode(&mut body, version)
            .map_err(|e| net(&self.addr, format!("decode {api_key:?} v{version}: {e}")))?;
        let _ = body.remaining();
        Ok(resp)
    }
}
