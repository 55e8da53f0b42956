//! TCP server: one accept loop per listener, TLS on SSL listeners, then per connection:
//! reads size-prefixed frames with a hard size bound, lets the connection's security
//! [`Session`] gate them (SASL first on SASL listeners), dispatches them, and writes
//! responses back in request order.
//!
//! Limits that keep one client from hurting the others: the node's connection cap, a cap per
//! client address, a deadline for a new connection's TLS handshake, first request and
//! authentication, and an idle timeout.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use crate::node::Node;
use crate::protocol::{self, handlers, Parsed, Pending, Reply, ResponseBytes};
use crate::security::config::Listener;
use crate::security::session::{Gate, Session};

/// Requests one connection may have in flight before we stop reading from it.
const MAX_IN_FLIGHT: usize = 64;

/// A bound listener socket and its settings.
pub struct Bound {
    pub listener: Arc<Listener>,
    pub socket: TcpListener,
}

impl Bound {
    /// `socket` serving the node's first configured listener (tests and tools that bind
    /// their own socket).
    pub fn first(node: &Node, socket: TcpListener) -> Bound {
        Bound {
            listener: Arc::new(node.config.security.listeners[0].clone()),
            socket,
        }
    }
}

/// Serve Kafka on every listener until `shutdown` flips to true; then stop accepting and
/// wait for connection tasks to finish their current requests.
pub async fn serve(node: Arc<Node>, listeners: Vec<Bound>, shutdown: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(node.config.max_connections));
    let mut loops = tokio::task::JoinSet::new();
    for (i, b) in listeners.into_iter().enumerate() {
        loops.spawn(accept_loop(
            node.clone(),
            b,
            limit.clone(),
            shutdown.clone(),
            (i as u64) << 48,
        ));
    }
    while loops.join_next().await.is_some() {}
}

async fn accept_loop(
    node: Arc<Node>,
    bound: Bound,
    limit: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    first_id: u64,
) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut conn_id = first_id;
    let listener = bound.listener;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = bound.socket.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(ip_permit) = node.security.admit(peer.ip()) else {
                    tracing::debug!(%peer, "connections from this address at their limit; refusing");
                    drop(stream);
                    continue;
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "connection limit reached; refusing connection");
                    drop(stream);
                    continue;
                };
                conn_id += 1;
                let b = node.clone();
                let sd = shutdown.clone();
                let l = listener.clone();
                let span = tracing::info_span!("conn", id = conn_id, %peer, listener = %l.name);
                tasks.spawn(async move {
                    b.metrics.connections.fetch_add(1, Relaxed);
                    if let Err(e) = accept_connection(b.clone(), l, stream, peer, sd).await {
                        tracing::debug!(error = %e, "connection closed with error");
                    }
                    b.metrics.connections.fetch_sub(1, Relaxed);
                    drop(permit);
                    drop(ip_permit);
                }.instrument(span));
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// TLS handshake if the listener wants it, then serve the connection.
async fn accept_connection(
    node: Arc<Node>,
    listener: Arc<Listener>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let setup = Duration::from_millis(node.security.config.connection_setup_timeout_ms);
    let deadline = Instant::now() + setup;
    if !listener.protocol.tls() {
        let session = Session::new(node.security.clone(), listener, None);
        let (rd, wr) = stream.into_split();
        return connection(node, session, peer, rd, wr, deadline, shutdown).await;
    }
    let Some(config) = node.security.tls_config_for(&listener.name) else {
        // Config validation makes TLS listeners need TLS files.
        return Ok(());
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "TLS handshake failed");
            return Ok(());
        }
        Err(_) => {
            node.security.metrics.setup_timeouts.fetch_add(1, Relaxed);
            tracing::info!("TLS handshake not finished in time; closing");
            return Ok(());
        }
    };
    let user = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| node.security.tls_user(leaf.as_ref()));
    let session = Session::new(node.security.clone(), listener, user);
    let (rd, wr) = tokio::io::split(tls);
    connection(node, session, peer, rd, wr, deadline, shutdown).await
}

async fn connection<R, W>(
    node: Arc<Node>,
    mut session: Session,
    peer: SocketAddr,
    mut rd: R,
    mut wr: W,
    setup_deadline: Instant,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let client_host = format!("/{}", peer.ip());
    let sec = &node.security.config;
    let idle = Duration::from_millis(sec.connections_max_idle_ms);
    let max = node.config.max_request_bytes;
    let listener_name: Arc<str> = session.listener().name.as_str().into();
    // ACL hosts are compared with the address as Java prints it.
    let acl_host: Arc<str> = strata_security::acl::host_address(peer.ip()).into();
    let throttle = Arc::new(crate::security::Throttle::default());
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut in_flight: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut eof = false;
    // On shutdown: read no new requests, answer those in flight, then close.
    let mut draining = false;
    // Until the first request (and, on SASL listeners, authentication) the short setup
    // deadline applies; after it, the idle timeout.
    let mut set_up = false;
    let mut deadline = setup_deadline;
    // After a failed authentication: answer what is in flight, then close.
    let mut closing = false;
    loop {
        // Dispatch every complete frame already buffered (none while a quota mutes us).
        let mut muted = throttle.muted_until();
        while !draining
            && !closing
            && muted.is_none()
            && !throttle.held()
            && in_flight.len() < MAX_IN_FLIGHT
            && buf.len() >= 4
        {
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
            node.metrics.bytes_in.fetch_add(4 + size as u64, Relaxed);
            let frame = buf.split_to(size).freeze();
            match protocol::parse_frame(frame) {
                Parsed::Request(mut frame) => {
                    match session.gate(frame.api_key) {
                        Gate::Pass => {}
                        Gate::Close(reason) => {
                            tracing::info!(%reason, "closing connection");
                            closing = true;
                            break;
                        }
                        Gate::Sasl => {
                            let handled = session.handle(&frame);
                            if handled.failed {
                                tokio::time::sleep(node.security.failed_auth_delay(peer.ip()))
                                    .await;
                                closing = true;
                            }
                            in_flight.push_back(Box::pin(std::future::ready(handled.reply)));
                            continue;
                        }
                    }
                    frame.client_host = client_host.clone();
                    frame.caller = crate::security::Caller {
                        principal: session.principal().clone(),
                        host: acl_host.clone(),
                        listener: listener_name.clone(),
                        throttle: throttle.clone(),
                    };
                    let key = frame.api_key as i16;
                    let started = std::time::Instant::now();
                    let pending = handlers::dispatch(&node, frame);
                    let b = node.clone();
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
                    closing = true;
                    break;
                }
            }
            if !set_up && session.ready() {
                set_up = true;
            }
            muted = throttle.muted_until();
        }
        if (eof || draining || closing) && in_flight.is_empty() {
            if closing {
                let _ = wr.shutdown().await;
            }
            return Ok(());
        }
        if set_up {
            deadline = Instant::now() + idle;
        }
        let held = throttle.held();
        let can_read = !eof
            && !draining
            && !closing
            && muted.is_none()
            && !held
            && in_flight.len() < MAX_IN_FLIGHT;
        tokio::select! {
            biased;
            Some(resp) = in_flight.next(), if !in_flight.is_empty() => {
                match resp {
                    Reply::Bytes(bytes) => {
                        node.metrics.bytes_out.fetch_add(bytes.len() as u64, Relaxed);
                        write_response(&mut wr, &bytes).await?;
                        // TLS keeps encrypted records buffered until flushed (a no-op on TCP).
                        wr.flush().await?
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
            _ = tokio::time::sleep_until(muted.unwrap_or(deadline)), if muted.is_some() => {}
            _ = throttle.released(), if held => {}
            _ = tokio::time::sleep_until(deadline), if in_flight.is_empty() => {
                if set_up {
                    node.security.metrics.idle_closed.fetch_add(1, Relaxed);
                    tracing::debug!("idle for connections.max.idle.ms; closing");
                } else {
                    node.security.metrics.setup_timeouts.fetch_add(1, Relaxed);
                    tracing::info!("no request (or no authentication) in time; closing");
                }
                return Ok(());
            }
        }
    }
}

/// Write a response's chunks with vectored writes (one `writev` for the whole response when
/// the socket takes it), continuing after partial writes.
async fn write_response<W: AsyncWrite + Unpin>(
    wr: &mut W,
    response: &ResponseBytes,
) -> std::io::Result<()> {
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
