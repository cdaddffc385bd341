//! One WebSocket connection: the RFC 6455 handshake on hyper's upgrade, then
//! a task that reads frames, enforces the per-connection limits (frame size,
//! rate, join timeout, liveness, write deadlines), feeds valid messages to the
//! registry and writes what the registry queues for it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::admission::AdmissionTicket;
use crate::hub::Hub;
use crate::limits::RateLimiter;
use crate::listener::ConnectionInfo;
use crate::log_text::excerpt;
use crate::outbox::{Outbox, Outgoing};
use crate::protocol::{ClientMessage, ErrorCode, MAX_FRAME_BYTES};
use crate::rooms::ConnId;
use crate::ws_fragments::send_text;
use crate::ws_write::{Socket, WriteError, by_deadline, close_gracefully};

/// Frames up to this size are read whole, so that the `too_large` error and the
/// 1009 close reach the peer cleanly. Larger frames are cut off by the
/// WebSocket layer at their header: the error and close are still sent, but the
/// unread rest of the frame makes the kernel reset the connection, which may
/// discard them at the peer. This bounds the memory one connection can pin
/// (a client may trickle a frame of this size and hold it), so it is kept at
/// four times the protocol's limit.
const HARD_FRAME_LIMIT: usize = 256 * 1024;

/// The WebSocket handshake of RFC 6455 on hyper's upgrade, then one task per
/// connection. Written here rather than taken from axum so that the socket is
/// tokio-tungstenite's own, which can send a long message as several frames.
pub(crate) async fn upgrade(State(hub): State<Arc<Hub>>, mut request: Request) -> Response {
    if hub.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let Some(info) = request.extensions().get::<ConnectionInfo>().cloned() else {
        // Every request comes through the accept loop, which attaches it.
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let headers = request.headers();
    let origin = headers.get(header::ORIGIN).map(HeaderValue::as_bytes);
    if !hub
        .origins
        .allows(origin, headers.get(header::HOST).map(HeaderValue::as_bytes))
    {
        tracing::debug!(peer = %info.peer, origin = %excerpt(&String::from_utf8_lossy(origin.unwrap_or_default())), "origin refused");
        return (
            StatusCode::FORBIDDEN,
            "this page's origin may not open /ws: only the server's own origin and the origins it allows\n",
        )
            .into_response();
    }
    let Some(accept) = websocket_key(request.headers())
        .map(|key| tungstenite::handshake::derive_accept_key(key.as_bytes()))
    else {
        return (
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (RFC 6455, version 13)\n",
        )
            .into_response();
    };
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return (
            StatusCode::BAD_REQUEST,
            "this connection cannot be upgraded\n",
        )
            .into_response();
    };
    if hub.live_connections.fetch_add(1, Ordering::AcqRel) >= hub.config.max_connections {
        hub.live_connections.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!(
            "connection refused: {} connections open",
            hub.config.max_connections
        );
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    }
    let task = hub.tracker.track_future({
        let hub = hub.clone();
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    info.ticket.upgraded();
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(socket_config()),
                    )
                    .await;
                    serve_connection(socket, &hub, &info.ticket).await;
                }
                Err(err) => tracing::debug!(%err, "websocket upgrade failed"),
            }
            hub.live_connections.fetch_sub(1, Ordering::AcqRel);
        }
    });
    tokio::spawn(task);
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The client's key, when the request asks for a WebSocket of version 13.
fn websocket_key(headers: &HeaderMap) -> Option<&HeaderValue> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let upgrade = has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    upgrade
        .then(|| headers.get(header::SEC_WEBSOCKET_KEY))
        .flatten()
}

/// Small buffers: most messages are small, and there may be 10,000 sockets.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_message_size(Some(HARD_FRAME_LIMIT))
        .max_frame_size(Some(HARD_FRAME_LIMIT))
}

/// How a connection's read loop ended.
#[derive(Debug)]
enum Ending {
    /// The peer closed, or the socket failed: nothing more to send.
    Gone,
    /// Send what is queued, then close with this code.
    Close { code: u16, reason: &'static str },
    /// The registry refused the connection: its error and close are queued in the outbox.
    Refused,
}

async fn serve_connection(mut socket: Socket, hub: &Hub, ticket: &AdmissionTicket) {
    let conn = ConnId(hub.next_conn.fetch_add(1, Ordering::Relaxed));
    let outbox = Arc::new(Outbox::default());
    hub.connect(conn, Arc::clone(&outbox));

    let config = &hub.config;
    let mut limiter = RateLimiter::new(config.rate_limit, Instant::now().into_std());
    let mut last_heard = Instant::now();
    let join_deadline = tokio::time::sleep(config.join_timeout);
    tokio::pin!(join_deadline);
    let mut join_checked = false;
    let mut pinger =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    pinger.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let ending = loop {
        tokio::select! {
            frame = socket.next() => {
                last_heard = Instant::now();
                let frame = match frame {
                    None | Some(Ok(Message::Close(_))) => break Ending::Gone,
                    Some(Ok(frame)) => frame,
                    Some(Err(err)) => {
                        if is_oversized(&err) {
                            Box::pin(hub.refuse(conn, ErrorCode::TooLarge, too_large_text(None))).await;
                            break Ending::Refused;
                        }
                        tracing::debug!(conn = conn.0, %err, "read failed");
                        break Ending::Gone;
                    }
                };
                if !matches!(frame, Message::Pong(_)) && !limiter.allow(last_heard.into_std()) {
                    Box::pin(hub.refuse(
                        conn,
                        ErrorCode::RateLimited,
                        format!("more than {} messages in a burst or {}/s sustained", config.rate_limit.burst, config.rate_limit.per_second),
                    )).await;
                    break Ending::Refused;
                }
                match frame {
                    Message::Text(text) if text.len() > MAX_FRAME_BYTES => {
                        Box::pin(hub.refuse(conn, ErrorCode::TooLarge, too_large_text(Some(text.len())))).await;
                        break Ending::Refused;
                    }
                    Message::Text(text) => {
                        let parsed = ClientMessage::parse(text.as_str());
                        if matches!(parsed, Ok(ClientMessage::Join { .. })) && !ticket.join() {
                            Box::pin(hub.refuse(
                                conn,
                                ErrorCode::RateLimited,
                                "too many joins from your address; wait a minute".into(),
                            )).await;
                            break Ending::Refused;
                        }
                        match parsed {
                            Ok(message) => Box::pin(hub.handle(conn, message)).await,
                            Err(reason) => hub.bad_message(conn, reason).await,
                        }
                    }
                    Message::Binary(_) => {
                        hub.bad_message(conn, "binary frames are not part of the protocol; send JSON as text".into()).await;
                    }
                    Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {}
                }
            }
            outgoing = outbox.pop() => match outgoing {
                Outgoing::Text(text) => {
                    if !Box::pin(write_in_loop(hub, conn, &outbox, send_text(&mut socket, text))).await {
                        break Ending::Gone;
                    }
                }
                Outgoing::Close { code, reason } => break Ending::Close { code, reason },
            },
            _ = pinger.tick() => {
                if last_heard.elapsed() >= config.idle_timeout {
                    tracing::info!(conn = conn.0, "no sign of life for {:?}; dropping the connection", config.idle_timeout);
                    break Ending::Gone;
                }
                if !Box::pin(write_in_loop(hub, conn, &outbox, socket.send(Message::Ping(Default::default())))).await {
                    break Ending::Gone;
                }
            }
            () = &mut join_deadline, if !join_checked => {
                join_checked = true;
                if !hub.rooms.has_joined(conn) {
                    tracing::info!(conn = conn.0, "no join within {:?}", config.join_timeout);
                    break Ending::Close { code: 1008, reason: "no join within the join timeout" };
                }
            }
            () = outbox.kill.cancelled() => break Ending::Close { code: 1008, reason: "too slow reading messages" },
            () = hub.shutdown.cancelled() => break Ending::Close { code: 1001, reason: "server shutting down" },
            () = hub.killed.cancelled() => return,
        }
    };

    // Leave the room first so the partner hears `peer-left` without waiting for our close handshake.
    Box::pin(hub.disconnect(conn)).await;
    let close = match ending {
        Ending::Gone => return,
        Ending::Close { code, reason } => Some((code, reason)),
        Ending::Refused => None,
    };
    // Boxed, as are the writes in the loop: a task's future is as large as its
    // largest state, and 10,000 idle connections should not carry these.
    Box::pin(finish(socket, hub, &outbox, close)).await;
}

/// Flushes what was queued before the close (an error must reach the peer
/// before its close frame), then closes: all of it by one deadline.
async fn finish(
    mut socket: Socket,
    hub: &Hub,
    outbox: &Outbox,
    mut close: Option<(u16, &'static str)>,
) {
    let config = &hub.config;
    let mut budget = config.write_timeout;
    if hub.shutdown.is_cancelled() {
        budget = budget.min(config.shutdown_grace);
    }
    let deadline = Instant::now() + budget;
    while let Some(outgoing) = outbox.try_pop() {
        match outgoing {
            Outgoing::Text(text) => {
                if by_deadline(deadline, send_text(&mut socket, text))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Outgoing::Close { code, reason } => {
                close = close.or(Some((code, reason)));
                break;
            }
        }
    }
    let (code, reason) = close.unwrap_or((1000, "closing"));
    tokio::select! {
        () = close_gracefully(socket, code, reason, deadline) => {}
        () = hub.killed.cancelled() => {}
    }
}

/// One write of a connection's read loop, by [`ServerConfig::write_timeout`];
/// abandoned when the server stops or the connection is dropped for falling
/// behind. False when the connection should be dropped.
async fn write_in_loop(
    hub: &Hub,
    conn: ConnId,
    outbox: &Outbox,
    write: impl Future<Output = Result<(), tungstenite::Error>>,
) -> bool {
    let deadline = Instant::now() + hub.config.write_timeout;
    let result = tokio::select! {
        result = by_deadline(deadline, write) => result,
        () = outbox.kill.cancelled() => return false,
        () = hub.shutdown.cancelled() => return false,
        () = hub.killed.cancelled() => return false,
    };
    match result {
        Ok(()) => true,
        Err(WriteError::Stalled) => {
            tracing::info!(
                conn = conn.0,
                "a write waited {:?} for the peer; dropping the connection",
                hub.config.write_timeout
            );
            false
        }
        Err(err) => {
            tracing::debug!(conn = conn.0, %err, "write failed");
            false
        }
    }
}

fn too_large_text(len: Option<usize>) -> String {
    match len {
        Some(len) => format!("a frame of {len} bytes is over the limit of {MAX_FRAME_BYTES} bytes"),
        None => format!("a frame is over the limit of {MAX_FRAME_BYTES} bytes"),
    }
}

fn is_oversized(err: &tungstenite::Error) -> bool {
    matches!(err, tungstenite::Error::Capacity(_))
}
