//! TCP server: accepts connections, reads size-prefixed frames with a hard size bound,
//! dispatches them, and writes responses back in request order.

use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::Instrument;

use crate::node::Node;
use crate::protocol::{self, handlers, Parsed, Pending, Reply, ResponseBytes};

/// Requests one connection may have in flight before we stop reading from it.
const MAX_IN_FLIGHT: usize = 64;

/// Serve Kafka on `listener` until `shutdown` flips to true; then stop accepting and wait
/// for connection tasks to finish their current requests.
pub async fn serve(broker: Arc<Node>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(broker.config.max_connections));
    let mut tasks = tokio::task::JoinSet::new();
    let mut conn_id: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "connection limit reached; refusing connection");
                    drop(stream);
                    continue;
                };
                conn_id += 1;
                let b = broker.clone();
                let sd = shutdown.clone();
                let span = tracing::info_span!("conn", id = conn_id, %peer);
                tasks.spawn(async move {
                    use std::sync::atomic::Ordering::Relaxed;
                    b.metrics.connections.fetch_add(1, Relaxed);
                    if let Err(e) = connection(b.clone(), stream, sd).await {
                        tracing::debug!(error = %e, "connection closed with error");
                    }
                    b.metrics.connections.fetch_sub(1, Relaxed);
                    drop(permit);
                }.instrument(span));
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn connection(
    broker: Arc<Node>,
    stream: TcpStream,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let client_host = stream
        .peer_addr()
        .map(|a| format!("/{}", a.ip()))
        .unwrap_or_default();
    let (mut rd, mut wr) = stream.into_split();
    let max = broker.config.max_request_bytes;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut in_flight: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut eof = false;
    // On shutdown: read no new requests, answer those in flight, then close.
    let mut draining = false;
    loop {
        // Dispatch every complete frame already buffered.
        while !draining && in_flight.len() < MAX_IN_FLIGHT && buf.len() >= 4 {
            let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if size < 0 || size as usize > max {
                tracing::warn!(size, max, "frame size out of bounds; closing connection");
                return Ok(());
            }
            let size = size as usize;
            if buf.len() < 4 + size {
                buf.reserve((4 + size - buf.len()).min(1 << 20));
                break;
            }
            buf.advance(4);
            broker
                .metrics
                .bytes_in
                .fetch_add(4 + size as u64, std::sync::atomic::Ordering::Relaxed);
            let frame = buf.split_to(size).freeze();
            match protocol::parse_frame(frame) {
                Parsed::Request(mut frame) => {
                    frame.client_host = client_host.clone();
                    let key = frame.api_key as i16;
                    let started = std::time::Instant::now();
                    let pending = handlers::dispatch(&broker, frame);
                    let b = broker.clone();
                    in_flight.push_back(Box::pin(async move {
                        let reply = pending.await;
                        b.metrics.observe(key, started.elapsed());
                        reply
                    }))
                }
                Parsed::UnsupportedApiVersions { correlation_id } => {
                    in_flight.push_back(Box::pin(std::future::ready(
                        handlers::api_versions::unsupported(correlation_id),
                    )));
                }
                Parsed::Close(reason) => {
                    tracing::warn!(%reason, "closing connection");
                    // Answer what is already in flight, then close.
                    while let Some(resp) = in_flight.next().await {
                        match resp {
                            Reply::Bytes(bytes) => write_response(&mut wr, &bytes).await?,
                            Reply::Nothing => {}
                            Reply::Close => break,
                        }
                    }
                    return Ok(());
                }
            }
        }
        if (eof || draining) && in_flight.is_empty() {
            return Ok(());
        }
        let can_read = !eof && !draining && in_flight.len() < MAX_IN_FLIGHT;
        tokio::select! {
            biased;
            Some(resp) = in_flight.next(), if !in_flight.is_empty() => {
                match resp {
                    Reply::Bytes(bytes) => {
                        let n = bytes.len();
                        broker
                            .metrics
                            .bytes_out
                            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                        write_response(&mut wr, &bytes).await?
                    }
                    Reply::Nothing => {}
                    Reply::Close => return Ok(()),
                }
            }
            n = rd.read_buf(&mut buf), if can_read => {
                if n? == 0 {
                    eof = true;
                }
            }
            _ = shutdown.changed(), if !draining => draining = true,
        }
    }
}

/// Write a response's chunks with vectored writes (one `writev` for the whole response when
/// the socket takes it), continuing after partial writes.
async fn write_response(wr: &mut OwnedWriteHalf, response: &ResponseBytes) -> std::io::Result<()> {
    if let [one] = response.chunks() {
        return wr.write_all(one).await;
    }
    let mut slices: Vec<IoSlice<'_>> = response.chunks().iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        let n = wr.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}
