//! The chat's async shell: one task that owns the [`ChatLog`], feeds it the
//! current data channel's events, the texts to send and the clock, and
//! carries out its actions. Each new peer connection brings a new channel
//! (negotiated out of band, id 0, on both sides: no extra round trip, and
//! the browser page does the same).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::PeerConnection;

use super::ChatMessage;
use super::log::{ChatAction, ChatLog};
use crate::CallEvent;

/// The data channel's label and stream id; the page uses the same.
const CHAT_LABEL: &str = "chat";
const CHAT_STREAM_ID: u16 = 0;

/// How long the end of a session waits for the chat to mark what is left.
const FINISH_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Opens the chat channel of a new peer connection; call before the offer or answer.
pub(crate) async fn open_chat_channel(
    connection: &dyn PeerConnection,
) -> Result<Arc<dyn DataChannel>, webrtc::error::Error> {
    let init = RTCDataChannelInit {
        ordered: true,
        negotiated: Some(CHAT_STREAM_ID),
        ..Default::default()
    };
    connection.create_data_channel(CHAT_LABEL, Some(init)).await
}

/// What the session holds of the chat: where new channels go, and the task.
#[derive(Debug)]
pub(crate) struct ChatLink {
    channels: mpsc::UnboundedSender<Arc<dyn DataChannel>>,
    task: JoinHandle<()>,
}

impl ChatLink {
    /// Chat goes over `channel` from now on (the one of the newest connection).
    pub(crate) fn attach(&self, channel: Arc<dyn DataChannel>) {
        let _ = self.channels.send(channel);
    }

    /// The call is over: messages still waiting are marked as not delivered
    /// (shown before the session's last event).
    pub(crate) async fn finish(self) {
        drop(self.channels);
        if tokio::time::timeout(FINISH_LIMIT, self.task).await.is_err() {
            tracing::debug!("the chat did not finish in time");
        }
    }
}

/// Starts the chat task: it shows messages as [`CallEvent::Chat`] on
/// `events` and sends the texts given to the returned sender.
pub(crate) fn start_chat(
    events: mpsc::UnboundedSender<CallEvent>,
) -> (ChatLink, mpsc::UnboundedSender<String>) {
    let (texts_tx, texts) = mpsc::unbounded_channel();
    let (channels_tx, channels) = mpsc::unbounded_channel();
    let log = ChatLog::new(format!("{:016x}", rand::random::<u64>()));
    let task = tokio::spawn(run_chat(log, texts, channels, events));
    (
        ChatLink {
            channels: channels_tx,
            task,
        },
        texts_tx,
    )
}

/// The current channel, numbered so that late events of an old one are ignored.
struct Current {
    serial: u64,
    channel: Arc<dyn DataChannel>,
}

async fn run_chat(
    mut log: ChatLog,
    mut texts: mpsc::UnboundedReceiver<String>,
    mut channels: mpsc::UnboundedReceiver<Arc<dyn DataChannel>>,
    events: mpsc::UnboundedSender<CallEvent>,
) {
    let (channel_events_tx, mut channel_events) = mpsc::unbounded_channel();
    let mut current: Option<Current> = None;
    let mut serial = 0;
    loop {
        let actions = tokio::select! {
            Some(text) = texts.recv() => match log.send(&text, Instant::now(), wall_ms()) {
                Ok(actions) => actions,
                Err(err) => {
                    let _ = events.send(CallEvent::Notice(format!("message not sent: {err}")));
                    Vec::new()
                }
            },
            channel = channels.recv() => {
                let Some(channel) = channel else { break };
                serial += 1;
                tokio::spawn(forward_events(Arc::clone(&channel), serial, channel_events_tx.clone()));
                current = Some(Current { serial, channel });
                log.channel_closed();
                Vec::new()
            }
            Some((from, event)) = channel_events.recv() => {
                if current.as_ref().map(|c| c.serial) != Some(from) {
                    continue;
                }
                match event {
                    Some(DataChannelEvent::OnOpen) => {
                        tracing::debug!("chat channel open");
                        log.channel_opened()
                    }
                    Some(DataChannelEvent::OnMessage(message)) => {
                        match std::str::from_utf8(&message.data) {
                            Ok(text) => log.receive(text, Instant::now()),
                            Err(_) => {
                                tracing::debug!("a chat frame that is not UTF-8; ignored");
                                Vec::new()
                            }
                        }
                    }
                    Some(DataChannelEvent::OnClose) | None => {
                        tracing::debug!("chat channel closed");
                        log.channel_closed();
                        current = None;
                        Vec::new()
                    }
                    Some(_) => Vec::new(),
                }
            }
            () = sleep_until(log.poll_timeout()) => log.handle_timeout(Instant::now()),
        };
        for action in actions {
            match action {
                ChatAction::Show(message) => show(&events, message),
                ChatAction::Transmit(frame) => {
                    let Some(open) = current.as_ref().filter(|_| log.is_open()) else {
                        continue;
                    };
                    if let Err(err) = open.channel.send_text(&frame).await {
                        // Held until the next channel opens, then resent.
                        tracing::debug!(%err, "chat channel write failed");
                        log.channel_closed();
                        current = None;
                    }
                }
            }
        }
    }
    for action in log.end() {
        if let ChatAction::Show(message) = action {
            show(&events, message);
        }
    }
}

fn show(events: &mpsc::UnboundedSender<CallEvent>, message: ChatMessage) {
    let _ = events.send(CallEvent::Chat(message));
}

/// Forwards one channel's events, tagged with its serial; `None` when it ends.
async fn forward_events(
    channel: Arc<dyn DataChannel>,
    serial: u64,
    events: mpsc::UnboundedSender<(u64, Option<DataChannelEvent>)>,
) {
    while let Some(event) = channel.poll().await {
        let closed = matches!(event, DataChannelEvent::OnClose);
        if events.send((serial, Some(event))).is_err() || closed {
            return;
        }
    }
    let _ = events.send((serial, None));
}

/// This machine's wall clock in ms since the Unix epoch (what the peer shows as the time).
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sleeps until `deadline`; forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
