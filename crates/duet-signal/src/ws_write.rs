//! Writes to a server WebSocket, each with a deadline: a peer that stops
//! reading fills its TCP window, and a write without one would then wait for
//! ever, holding the connection and every timer of its task.

use std::future::Future;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

/// A WebSocket of the server, on the connection hyper upgraded.
pub(crate) type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// How long a closing connection waits for the peer's close frame.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(1);

/// Why a write did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("{0}")]
    Failed(#[from] tungstenite::Error),
    #[error("the peer did not take the data before the write deadline")]
    Stalled,
}

/// Runs `write` until `deadline`.
pub(crate) async fn by_deadline(
    deadline: Instant,
    write: impl Future<Output = Result<(), tungstenite::Error>>,
) -> Result<(), WriteError> {
    match tokio::time::timeout_at(deadline, write).await {
        Ok(result) => result.map_err(WriteError::Failed),
        Err(_) => Err(WriteError::Stalled),
    }
}

/// Sends a close frame by `deadline` and waits briefly for the peer's, so that
/// what was sent before it (an error message) is not lost to a TCP reset.
pub(crate) async fn close_gracefully(
    mut socket: Socket,
    code: u16,
    reason: &'static str,
    deadline: Instant,
) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from_static(reason),
    };
    if by_deadline(deadline, socket.send(Message::Close(Some(frame))))
        .await
        .is_err()
    {
        return;
    }
    let drain = async {
        while let Some(Ok(frame)) = socket.next().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE, drain).await;
}
