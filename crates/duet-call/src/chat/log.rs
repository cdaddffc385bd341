//! The chat's rules without I/O: numbering, the 4 KB limit, acknowledgements,
//! resending what was not acknowledged when a new channel opens, dropping
//! duplicates, and giving up on a message nobody acknowledged in time.
//!
//! The shell (`channel`) feeds it the channel's events and the clock, and
//! carries out the [`ChatAction`]s it returns.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::wire::ChatFrame;
use super::{ChatAuthor, ChatError, ChatMessage, ChatState, MAX_CHAT_BYTES};

/// How long a message may wait for its acknowledgement (through reconnections
/// and new connections) before it is marked as not delivered.
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

/// What the shell does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChatAction {
    /// Send this frame on the open channel.
    Transmit(String),
    /// Show this message (new, or with a new state) to the person.
    Show(ChatMessage),
}

/// A message of ours that the peer has not acknowledged yet.
#[derive(Debug)]
struct Unacknowledged {
    message: ChatMessage,
    frame: String,
    written_at: Instant,
}

/// One side's chat: what was sent and not yet acknowledged, and what was received.
#[derive(Debug)]
pub(crate) struct ChatLog {
    /// This session's tag in every message it sends.
    tag: String,
    next_id: u64,
    unacknowledged: VecDeque<Unacknowledged>,
    /// Given up on, kept so that a late acknowledgement still says "delivered".
    given_up: HashMap<u64, ChatMessage>,
    /// Of each sending session, the highest message id shown.
    shown: HashMap<String, u64>,
    open: bool,
    /// Ids of ours resent since the channel last opened (for the log line).
    resent: BTreeSet<u64>,
}

impl ChatLog {
    /// A chat whose messages carry `tag` (unique per session).
    pub(crate) fn new(tag: String) -> ChatLog {
        ChatLog {
            tag,
            next_id: 1,
            unacknowledged: VecDeque::new(),
            given_up: HashMap::new(),
            shown: HashMap::new(),
            open: false,
            resent: BTreeSet::new(),
        }
    }

    /// Whether `text` can be sent: not empty and at most 4 KB of UTF-8.
    pub(crate) fn check(text: &str) -> Result<(), ChatError> {
        if text.trim().is_empty() {
            return Err(ChatError::Empty);
        }
        if text.len() > MAX_CHAT_BYTES {
            return Err(ChatError::TooLong(text.len()));
        }
        Ok(())
    }

    /// Sends `text` now if the channel is open, else when it opens.
    pub(crate) fn send(
        &mut self,
        text: &str,
        now: Instant,
        wall_ms: u64,
    ) -> Result<Vec<ChatAction>, ChatError> {
        ChatLog::check(text)?;
        let id = self.next_id;
        self.next_id += 1;
        let message = ChatMessage {
            id,
            author: ChatAuthor::Me,
            text: text.to_owned(),
            sent_at_ms: wall_ms,
            state: ChatState::Sending,
        };
        let frame = ChatFrame::Message {
            from: self.tag.clone(),
            id,
            sent_at: wall_ms,
            text: text.to_owned(),
        }
        .encode();
        let mut actions = vec![ChatAction::Show(message.clone())];
        if self.open {
            actions.push(ChatAction::Transmit(frame.clone()));
        }
        self.unacknowledged.push_back(Unacknowledged {
            message,
            frame,
            written_at: now,
        });
        Ok(actions)
    }

    /// A channel to the peer opened: everything not yet acknowledged goes
    /// (again) on it, in order. The receiver drops what it already has.
    pub(crate) fn channel_opened(&mut self) -> Vec<ChatAction> {
        self.open = true;
        self.resent = self.unacknowledged.iter().map(|u| u.message.id).collect();
        self.unacknowledged
            .iter()
            .map(|u| ChatAction::Transmit(u.frame.clone()))
            .collect()
    }

    /// The channel closed (or a write failed): hold messages until the next one opens.
    pub(crate) fn channel_closed(&mut self) {
        self.open = false;
    }

    /// Whether a channel is open.
    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    /// Ids of our messages resent when the channel last opened.
    pub(crate) fn resent(&self) -> &BTreeSet<u64> {
        &self.resent
    }

    /// A frame arrived on the channel.
    pub(crate) fn receive(&mut self, data: &str) -> Vec<ChatAction> {
        match ChatFrame::decode(data) {
            Some(ChatFrame::Message {
                from,
                id,
                sent_at,
                text,
            }) => {
                if text.len() > MAX_CHAT_BYTES {
                    tracing::warn!(bytes = text.len(), "a chat message over 4 KB was refused");
                    return Vec::new();
                }
                let ack = ChatAction::Transmit(
                    ChatFrame::Ack {
                        to: from.clone(),
                        id,
                    }
                    .encode(),
                );
                let last = self.shown.entry(from).or_insert(0);
                if id <= *last {
                    // A resend of what we showed: its acknowledgement was lost.
                    return vec![ack];
                }
                *last = id;
                let message = ChatMessage {
                    id,
                    author: ChatAuthor::Peer,
                    text,
                    sent_at_ms: sent_at,
                    state: ChatState::Received,
                };
                vec![ChatAction::Show(message), ack]
            }
            Some(ChatFrame::Ack { to, id }) => {
                if to != self.tag {
                    return Vec::new();
                }
                let mut delivered = Vec::new();
                // Acknowledgements come in order; one for `id` also covers
                // anything older still waiting (its own ack may be in flight).
                while self
                    .unacknowledged
                    .front()
                    .is_some_and(|u| u.message.id <= id)
                {
                    if let Some(mut done) = self.unacknowledged.pop_front() {
                        done.message.state = ChatState::Delivered;
                        delivered.push(ChatAction::Show(done.message));
                    }
                }
                if let Some(mut late) = self.given_up.remove(&id) {
                    late.state = ChatState::Delivered;
                    delivered.push(ChatAction::Show(late));
                }
                delivered
            }
            None => {
                tracing::debug!(bytes = data.len(), "not a chat frame; ignored");
                Vec::new()
            }
        }
    }

    /// When [`ChatLog::handle_timeout`] has something to do.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.unacknowledged
            .front()
            .map(|u| u.written_at + GIVE_UP_AFTER)
    }

    /// Marks messages that waited too long as not delivered.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<ChatAction> {
        let mut actions = Vec::new();
        while self
            .unacknowledged
            .front()
            .is_some_and(|u| now >= u.written_at + GIVE_UP_AFTER)
        {
            if let Some(waited) = self.unacknowledged.pop_front() {
                actions.push(self.give_up(waited));
            }
        }
        actions
    }

    /// The call is over: whatever is not acknowledged was not delivered.
    pub(crate) fn end(&mut self) -> Vec<ChatAction> {
        let waiting: Vec<_> = self.unacknowledged.drain(..).collect();
        waiting.into_iter().map(|w| self.give_up(w)).collect()
    }

    fn give_up(&mut self, waited: Unacknowledged) -> ChatAction {
        let mut message = waited.message;
        message.state = ChatState::NotDelivered;
        self.given_up.insert(message.id, message.clone());
        ChatAction::Show(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transmitted(actions: &[ChatAction]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                ChatAction::Transmit(frame) => Some(frame.clone()),
                ChatAction::Show(_) => None,
            })
            .collect()
    }

    fn shown(actions: &[ChatAction]) -> Vec<(u64, ChatState, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                ChatAction::Show(m) => Some((m.id, m.state, m.text.clone())),
                ChatAction::Transmit(_) => None,
            })
            .collect()
    }

    /// Carries every frame of `from` to `to`, returning what `to` showed.
    fn carry(frames: Vec<String>, to: &mut ChatLog) -> (Vec<ChatAction>, Vec<String>) {
        let mut all = Vec::new();
        for frame in frames {
            all.extend(to.receive(&frame));
        }
        let replies = transmitted(&all);
        (all, replies)
    }

    #[test]
    fn messages_arrive_in_order_intact_and_are_acknowledged() {
        let t0 = Instant::now();
        let (mut a, mut b) = (ChatLog::new("a".into()), ChatLog::new("b".into()));
        assert!(a.channel_opened().is_empty());
        b.channel_opened();
        let texts = ["hello", "ünïcödé ✓", "日本語のテキスト", "👋🏽 emoji"];
        let mut frames = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let actions = a.send(text, t0, 1000 + i as u64).unwrap();
            assert_eq!(
                shown(&actions),
                [(i as u64 + 1, ChatState::Sending, (*text).into())]
            );
            frames.extend(transmitted(&actions));
        }
        let (at_b, acks) = carry(frames, &mut b);
        let received: Vec<_> = shown(&at_b).into_iter().map(|(_, s, t)| (s, t)).collect();
        assert_eq!(
            received,
            texts.map(|t| (ChatState::Received, t.to_owned())).to_vec()
        );
        let (at_a, _) = carry(acks, &mut a);
        assert_eq!(
            shown(&at_a)
                .into_iter()
                .map(|(id, s, _)| (id, s))
                .collect::<Vec<_>>(),
            [1, 2, 3, 4].map(|id| (id, ChatState::Delivered)).to_vec()
        );
        assert_eq!(a.poll_timeout(), None, "nothing left waiting");
    }

    #[test]
    fn the_limit_is_4_kb_of_utf8_not_characters() {
        let mut log = ChatLog::new("a".into());
        let now = Instant::now();
        assert!(log.send(&"x".repeat(4096), now, 0).is_ok());
        assert_eq!(
            log.send(&"x".repeat(4097), now, 0),
            Err(ChatError::TooLong(4097))
        );
        // 1366 characters of 3 bytes each: 4098 bytes.
        assert_eq!(
            log.send(&"€".repeat(1366), now, 0),
            Err(ChatError::TooLong(4098))
        );
        assert_eq!(log.send(" \n", now, 0), Err(ChatError::Empty));
    }

    #[test]
    fn messages_wait_for_a_channel_and_go_in_order_when_it_opens() {
        let t0 = Instant::now();
        let (mut a, mut b) = (ChatLog::new("a".into()), ChatLog::new("b".into()));
        assert!(transmitted(&a.send("one", t0, 0).unwrap()).is_empty());
        assert!(transmitted(&a.send("two", t0, 0).unwrap()).is_empty());
        let frames = transmitted(&a.channel_opened());
        let (at_b, _) = carry(frames, &mut b);
        assert_eq!(
            shown(&at_b)
                .into_iter()
                .map(|(_, _, t)| t)
                .collect::<Vec<_>>(),
            ["one", "two"]
        );
    }

    #[test]
    fn a_new_channel_resends_the_unacknowledged_and_the_receiver_drops_duplicates() {
        let t0 = Instant::now();
        let (mut a, mut b) = (ChatLog::new("a".into()), ChatLog::new("b".into()));
        a.channel_opened();
        b.channel_opened();
        let first = transmitted(&a.send("one", t0, 0).unwrap());
        let second = transmitted(&a.send("two", t0, 0).unwrap());
        // "one" arrives, but its ack is lost with the channel; "two" is lost.
        let (at_b, _lost_ack) = carry(first, &mut b);
        assert_eq!(shown(&at_b).len(), 1);
        drop(second);
        a.channel_closed();
        assert!(transmitted(&a.send("three", t0, 0).unwrap()).is_empty());
        let resent = transmitted(&a.channel_opened());
        assert_eq!(resent.len(), 3);
        assert_eq!(a.resent().iter().copied().collect::<Vec<_>>(), [1, 2, 3]);
        let (at_b, acks) = carry(resent, &mut b);
        assert_eq!(
            shown(&at_b)
                .into_iter()
                .map(|(_, _, t)| t)
                .collect::<Vec<_>>(),
            ["two", "three"],
            "the resent \"one\" is not shown twice"
        );
        assert_eq!(acks.len(), 3, "but acknowledged again");
        let (at_a, _) = carry(acks, &mut a);
        assert_eq!(
            shown(&at_a)
                .into_iter()
                .map(|(id, s, _)| (id, s))
                .collect::<Vec<_>>(),
            [1, 2, 3].map(|id| (id, ChatState::Delivered)).to_vec()
        );
    }

    #[test]
    fn a_message_nobody_acknowledges_is_marked_not_delivered_and_a_late_ack_corrects_it() {
        let t0 = Instant::now();
        let mut a = ChatLog::new("a".into());
        let mut b = ChatLog::new("b".into());
        a.channel_opened();
        let frame = transmitted(&a.send("anyone?", t0, 0).unwrap());
        assert_eq!(a.poll_timeout(), Some(t0 + GIVE_UP_AFTER));
        assert!(
            a.handle_timeout(t0 + GIVE_UP_AFTER - Duration::from_millis(1))
                .is_empty()
        );
        let gave_up = a.handle_timeout(t0 + GIVE_UP_AFTER);
        assert_eq!(
            shown(&gave_up),
            [(1, ChatState::NotDelivered, "anyone?".into())]
        );
        assert_eq!(a.poll_timeout(), None);
        let (_, acks) = carry(frame, &mut b);
        let (late, _) = carry(acks, &mut a);
        assert_eq!(shown(&late), [(1, ChatState::Delivered, "anyone?".into())]);
    }

    #[test]
    fn the_end_of_the_call_marks_what_waits_as_not_delivered() {
        let mut a = ChatLog::new("a".into());
        a.send("late", Instant::now(), 0).unwrap();
        assert_eq!(
            shown(&a.end()),
            [(1, ChatState::NotDelivered, "late".into())]
        );
    }

    #[test]
    fn a_new_peer_numbers_from_one_again_and_is_not_taken_for_a_duplicate() {
        let t0 = Instant::now();
        let mut me = ChatLog::new("me".into());
        for tag in ["first-peer", "second-peer"] {
            let mut peer = ChatLog::new(tag.into());
            peer.channel_opened();
            let frames = transmitted(&peer.send("hi", t0, 0).unwrap());
            let (shown_here, _) = carry(frames, &mut me);
            assert_eq!(shown(&shown_here).len(), 1, "{tag}");
        }
    }

    #[test]
    fn acks_for_another_session_and_junk_change_nothing() {
        let t0 = Instant::now();
        let mut a = ChatLog::new("a".into());
        a.channel_opened();
        a.send("x", t0, 0).unwrap();
        let foreign = ChatFrame::Ack {
            to: "someone-else".into(),
            id: 1,
        }
        .encode();
        assert!(a.receive(&foreign).is_empty());
        assert!(a.receive("not json").is_empty());
        let oversized = ChatFrame::Message {
            from: "b".into(),
            id: 1,
            sent_at: 0,
            text: "y".repeat(MAX_CHAT_BYTES + 1),
        }
        .encode();
        assert!(a.receive(&oversized).is_empty());
        assert_eq!(a.poll_timeout(), Some(t0 + GIVE_UP_AFTER));
    }
}
