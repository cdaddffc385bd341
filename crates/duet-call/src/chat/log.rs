//! The chat's rules without I/O: numbering, the 4 KB limit, acknowledgements,
//! resending what was not acknowledged when a new channel opens, showing
//! each peer's messages once and only in order (asking for what is missing),
//! and giving up on a message nobody acknowledged in time.
//!
//! Messages go only once the peer's `hello` says its side of the channel is
//! open: webrtc-rs dropped the first messages written on a negotiated channel
//! whose other end had not yet opened (28 of 100, sent at once).
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

/// How long messages in flight may go without an acknowledgement before
/// they are sent again on the same channel. A receiver asks for a gap it
/// sees, but not for the last messages of a burst: webrtc-rs sometimes held
/// the last few messages from Chromium until more data arrived (4 of 100, in
/// about 1 run in 4).
pub(crate) const RETRANSMIT_AFTER: Duration = Duration::from_secs(2);

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
    /// A channel is open on our side.
    open: bool,
    /// The peer said hello on the current channel: messages may go.
    peer_ready: bool,
    /// We answered the peer's first hello on this channel.
    answered_hello: bool,
    /// The gap we asked to have filled (session, first missing id), so that
    /// every later message of the gap does not ask again.
    asked_resend: Option<(String, u64)>,
    /// When messages in flight are sent again if nothing is acknowledged.
    retransmit_at: Option<Instant>,
    /// Ids of ours (re)sent on this channel after the hello or a resend request (for the log line).
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
            peer_ready: false,
            answered_hello: false,
            asked_resend: None,
            retransmit_at: None,
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

    /// Sends `text` now if the channel is open (and the peer's side too),
    /// else when it is.
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
        if self.can_send() {
            actions.push(ChatAction::Transmit(frame.clone()));
            self.retransmit_at.get_or_insert(now + RETRANSMIT_AFTER);
        }
        self.unacknowledged.push_back(Unacknowledged {
            message,
            frame,
            written_at: now,
        });
        Ok(actions)
    }

    /// A channel to the peer opened: say hello. Messages wait for the
    /// peer's hello ([`ChatLog::receive`]).
    pub(crate) fn channel_opened(&mut self) -> Vec<ChatAction> {
        self.open = true;
        self.peer_ready = false;
        self.answered_hello = false;
        self.asked_resend = None;
        self.retransmit_at = None;
        vec![ChatAction::Transmit(ChatFrame::Hello.encode())]
    }

    /// The channel closed (or a write failed): hold messages until the next one opens.
    pub(crate) fn channel_closed(&mut self) {
        self.open = false;
        self.peer_ready = false;
        self.retransmit_at = None;
    }

    /// Whether a channel is open (frames can be written on it).
    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    fn can_send(&self) -> bool {
        self.open && self.peer_ready
    }

    /// Everything not yet acknowledged from id `from` on, in order.
    fn transmit_waiting(&mut self, from: u64, now: Instant) -> Vec<ChatAction> {
        let again: Vec<_> = self
            .unacknowledged
            .iter()
            .filter(|u| u.message.id >= from)
            .collect();
        self.resent.extend(again.iter().map(|u| u.message.id));
        if !again.is_empty() {
            tracing::debug!(ids = ?self.resent, "chat messages (re)sent");
            self.retransmit_at = Some(now + RETRANSMIT_AFTER);
        }
        again
            .into_iter()
            .map(|u| ChatAction::Transmit(u.frame.clone()))
            .collect()
    }

    /// Ids of our messages sent on the current channel after the peer's hello or a resend request.
    #[cfg(test)]
    pub(crate) fn resent(&self) -> &BTreeSet<u64> {
        &self.resent
    }

    /// A frame arrived on the channel at `now`.
    pub(crate) fn receive(&mut self, data: &str, now: Instant) -> Vec<ChatAction> {
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
                let last = *self.shown.get(&from).unwrap_or(&0);
                let ack = |id| {
                    ChatAction::Transmit(
                        ChatFrame::Ack {
                            to: from.clone(),
                            id,
                        }
                        .encode(),
                    )
                };
                if id <= last {
                    // A resend of what we showed: its acknowledgement was lost.
                    return vec![ack(last)];
                }
                if id > last + 1 {
                    // Something before it went missing: shown only in order.
                    let gap = (from.clone(), last + 1);
                    if self.asked_resend.as_ref() == Some(&gap) {
                        return Vec::new();
                    }
                    tracing::debug!(
                        missing_from = last + 1,
                        got = id,
                        "chat messages missing; asking again"
                    );
                    self.asked_resend = Some(gap);
                    let resend = ChatFrame::Resend {
                        to: from,
                        from: last + 1,
                    };
                    return vec![ChatAction::Transmit(resend.encode())];
                }
                let ack = ack(id);
                self.shown.insert(from, id);
                let message = ChatMessage {
                    id,
                    author: ChatAuthor::Peer,
                    text,
                    sent_at_ms: sent_at,
                    state: ChatState::Received,
                };
                vec![ChatAction::Show(message), ack]
            }
            Some(ChatFrame::Hello) => {
                let mut actions = Vec::new();
                if !self.answered_hello {
                    // Our own hello may have gone before the peer could read it.
                    self.answered_hello = true;
                    actions.push(ChatAction::Transmit(ChatFrame::Hello.encode()));
                }
                if !self.peer_ready {
                    self.peer_ready = true;
                    self.resent.clear();
                    actions.extend(self.transmit_waiting(0, now));
                }
                actions
            }
            Some(ChatFrame::Resend { to, from }) => {
                if to != self.tag || !self.can_send() {
                    return Vec::new();
                }
                self.transmit_waiting(from, now)
            }
            Some(ChatFrame::Ack { to, id }) => {
                if to != self.tag {
                    return Vec::new();
                }
                let mut delivered = Vec::new();
                // The receiver shows in order: an acknowledgement for `id`
                // covers everything before it.
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
                if !delivered.is_empty() {
                    self.retransmit_at =
                        (!self.unacknowledged.is_empty()).then_some(now + RETRANSMIT_AFTER);
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
        let give_up = self
            .unacknowledged
            .front()
            .map(|u| u.written_at + GIVE_UP_AFTER);
        match (give_up, self.retransmit_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends again what has waited [`RETRANSMIT_AFTER`] for an
    /// acknowledgement, and marks messages that waited too long as not delivered.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<ChatAction> {
        let mut actions = Vec::new();
        if self.retransmit_at.is_some_and(|at| now >= at) {
            self.retransmit_at = None;
            if self.can_send() {
                actions.extend(self.transmit_waiting(0, now));
            }
        }
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

    /// Two chats joined by a channel that can lose frames; what each showed.
    struct Pair {
        a: ChatLog,
        b: ChatLog,
        to_a: Vec<String>,
        to_b: Vec<String>,
        shown_a: Vec<(u64, ChatState, String)>,
        shown_b: Vec<(u64, ChatState, String)>,
    }

    impl Pair {
        fn new() -> Pair {
            Pair {
                a: ChatLog::new("a".into()),
                b: ChatLog::new("b".into()),
                to_a: Vec::new(),
                to_b: Vec::new(),
                shown_a: Vec::new(),
                shown_b: Vec::new(),
            }
        }

        fn did_at_a(&mut self, actions: Vec<ChatAction>) {
            self.to_b.extend(transmitted(&actions));
            self.shown_a.extend(shown(&actions));
        }

        fn did_at_b(&mut self, actions: Vec<ChatAction>) {
            self.to_a.extend(transmitted(&actions));
            self.shown_b.extend(shown(&actions));
        }

        fn open(&mut self) {
            let (a, b) = (self.a.channel_opened(), self.b.channel_opened());
            self.did_at_a(a);
            self.did_at_b(b);
        }

        /// Carries frames both ways until none are left; `keep` decides
        /// whether a frame to B arrives.
        fn pump(&mut self, keep: &mut dyn FnMut(&str) -> bool) {
            while !self.to_a.is_empty() || !self.to_b.is_empty() {
                for frame in std::mem::take(&mut self.to_b) {
                    if keep(&frame) {
                        let actions = self.b.receive(&frame, Instant::now());
                        self.did_at_b(actions);
                    }
                }
                for frame in std::mem::take(&mut self.to_a) {
                    let actions = self.a.receive(&frame, Instant::now());
                    self.did_at_a(actions);
                }
            }
        }

        fn deliver(&mut self) {
            self.pump(&mut |_| true);
        }

        fn texts_at_b(&self) -> Vec<String> {
            self.shown_b.iter().map(|(_, _, t)| t.clone()).collect()
        }

        fn states_at_a(&self) -> Vec<(u64, ChatState)> {
            self.shown_a.iter().map(|(id, s, _)| (*id, *s)).collect()
        }
    }

    #[test]
    fn messages_arrive_in_order_intact_and_are_acknowledged() {
        let t0 = Instant::now();
        let mut pair = Pair::new();
        pair.open();
        pair.deliver();
        let texts = ["hello", "ünïcödé ✓", "日本語のテキスト", "👋🏽 emoji"];
        for (i, text) in texts.iter().enumerate() {
            let actions = pair.a.send(text, t0, 1000 + i as u64).expect("sent");
            assert_eq!(transmitted(&actions).len(), 1, "goes at once");
            pair.did_at_a(actions);
        }
        pair.deliver();
        assert_eq!(pair.texts_at_b(), texts);
        assert!(
            pair.shown_b
                .iter()
                .all(|(_, s, _)| *s == ChatState::Received)
        );
        let states = pair.states_at_a();
        assert_eq!(
            &states[..4],
            [1, 2, 3, 4].map(|id| (id, ChatState::Sending))
        );
        assert_eq!(
            &states[4..],
            [1, 2, 3, 4].map(|id| (id, ChatState::Delivered))
        );
        assert_eq!(pair.a.poll_timeout(), None, "nothing left waiting");
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
    fn messages_wait_for_the_peers_hello_and_go_in_order_after_it() {
        let t0 = Instant::now();
        let mut pair = Pair::new();
        for text in ["one", "two"] {
            let actions = pair.a.send(text, t0, 0).expect("sent");
            assert!(transmitted(&actions).is_empty(), "no channel yet");
            pair.did_at_a(actions);
        }
        // A's channel opens first; its hello is lost (B's end is not open).
        let hello = pair.a.channel_opened();
        assert_eq!(transmitted(&hello), [r#"{"type":"hello"}"#]);
        // B opens: its hello gets A going, and A answers it.
        let b_hello = pair.b.channel_opened();
        pair.did_at_b(b_hello);
        pair.deliver();
        assert_eq!(pair.texts_at_b(), ["one", "two"]);
        assert_eq!(pair.a.poll_timeout(), None, "both acknowledged");
    }

    #[test]
    fn a_lost_message_is_asked_for_once_and_everything_is_shown_in_order() {
        let t0 = Instant::now();
        let mut pair = Pair::new();
        pair.open();
        pair.deliver();
        for i in 1..=5 {
            let actions = pair.a.send(&format!("m{i}"), t0, 0).expect("sent");
            pair.did_at_a(actions);
        }
        // Messages 2 and 3 are lost once; 4 and 5 arrive after the gap.
        let mut lost = vec!["\"m2\"", "\"m3\""];
        pair.pump(
            &mut |frame| match lost.iter().position(|m| frame.contains(m)) {
                Some(at) => {
                    lost.remove(at);
                    false
                }
                None => true,
            },
        );
        assert_eq!(
            pair.texts_at_b(),
            ["m1", "m2", "m3", "m4", "m5"],
            "each once"
        );
        assert_eq!(pair.a.poll_timeout(), None, "all acknowledged");
        // One request for the gap from 2, answered with 2 to 5.
        let resent: Vec<u64> = pair.a.resent().iter().copied().collect();
        assert_eq!(resent, [2, 3, 4, 5]);
    }

    #[test]
    fn the_lost_end_of_a_burst_is_sent_again_after_2_s_without_an_acknowledgement() {
        let t0 = Instant::now();
        let mut pair = Pair::new();
        pair.open();
        pair.deliver();
        for i in 1..=4 {
            let actions = pair.a.send(&format!("m{i}"), t0, 0).expect("sent");
            pair.did_at_a(actions);
        }
        // The last two never arrive: nobody sees a gap.
        pair.pump(&mut |frame| !frame.contains("\"m3\"") && !frame.contains("\"m4\""));
        assert_eq!(pair.texts_at_b(), ["m1", "m2"]);
        // 2 s after the last acknowledgement (of m2).
        let at = pair.a.poll_timeout().expect("a retransmission is due");
        assert!(at >= t0 + RETRANSMIT_AFTER && at < t0 + GIVE_UP_AFTER);
        assert!(
            pair.a
                .handle_timeout(at - Duration::from_millis(1))
                .is_empty()
        );
        let again = pair.a.handle_timeout(at);
        pair.did_at_a(again);
        pair.deliver();
        assert_eq!(pair.texts_at_b(), ["m1", "m2", "m3", "m4"]);
        // Acknowledged: nothing more to send or give up.
        assert_eq!(pair.a.poll_timeout(), None);
    }

    #[test]
    fn a_new_channel_resends_the_unacknowledged_and_the_receiver_drops_duplicates() {
        let t0 = Instant::now();
        let mut pair = Pair::new();
        pair.open();
        pair.deliver();
        let one = pair.a.send("one", t0, 0).expect("sent");
        let two = pair.a.send("two", t0, 0).expect("sent");
        // "one" arrives, but its ack is lost with the channel; "two" is lost.
        let shown_one = pair.b.receive(&transmitted(&one)[0], Instant::now());
        assert_eq!(shown(&shown_one).len(), 1);
        drop(two);
        pair.a.channel_closed();
        pair.b.channel_closed();
        let three = pair.a.send("three", t0, 0).expect("sent");
        assert!(transmitted(&three).is_empty());
        pair.open();
        pair.deliver();
        assert_eq!(
            pair.a.resent().iter().copied().collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(
            pair.texts_at_b(),
            ["two", "three"],
            "the resent \"one\" is not shown twice"
        );
        assert_eq!(pair.a.poll_timeout(), None, "all acknowledged");
    }

    #[test]
    fn a_message_nobody_acknowledges_is_marked_not_delivered_and_a_late_ack_corrects_it() {
        let t0 = Instant::now();
        let mut pair = Pair::new();
        pair.open();
        pair.deliver();
        let frame = transmitted(&pair.a.send("anyone?", t0, 0).expect("sent"));
        // Sent again every 2 s while nothing comes back, then given up.
        let mut at = t0;
        let mut sent_again = 0;
        while let Some(next) = pair.a.poll_timeout().filter(|n| *n < t0 + GIVE_UP_AFTER) {
            assert_eq!(next, at + RETRANSMIT_AFTER);
            at = next;
            let again = pair.a.handle_timeout(at);
            assert_eq!(transmitted(&again), frame, "the same frame again");
            assert!(shown(&again).is_empty());
            sent_again += 1;
        }
        assert_eq!(sent_again, 14);
        let gave_up = pair.a.handle_timeout(t0 + GIVE_UP_AFTER);
        assert_eq!(
            shown(&gave_up),
            [(1, ChatState::NotDelivered, "anyone?".into())]
        );
        let ack = transmitted(&pair.b.receive(&frame[0], Instant::now()));
        let late = pair.a.receive(&ack[0], Instant::now());
        assert_eq!(shown(&late), [(1, ChatState::Delivered, "anyone?".into())]);
    }

    #[test]
    fn the_end_of_the_call_marks_what_waits_as_not_delivered() {
        let mut a = ChatLog::new("a".into());
        a.send("late", Instant::now(), 0).expect("sent");
        assert_eq!(
            shown(&a.end()),
            [(1, ChatState::NotDelivered, "late".into())]
        );
    }

    #[test]
    fn a_new_peer_numbers_from_one_again_and_is_not_taken_for_a_duplicate() {
        let t0 = Instant::now();
        let mut me = ChatLog::new("me".into());
        me.channel_opened();
        for tag in ["first-peer", "second-peer"] {
            let mut peer = ChatLog::new(tag.into());
            peer.channel_opened();
            peer.receive(r#"{"type":"hello"}"#, Instant::now());
            let frames = transmitted(&peer.send("hi", t0, 0).expect("sent"));
            assert_eq!(
                shown(&me.receive(&frames[0], Instant::now())).len(),
                1,
                "{tag}"
            );
        }
    }

    #[test]
    fn acks_for_another_session_and_junk_change_nothing() {
        let t0 = Instant::now();
        let mut a = ChatLog::new("a".into());
        a.channel_opened();
        a.send("x", t0, 0).expect("sent");
        let foreign = ChatFrame::Ack {
            to: "someone-else".into(),
            id: 1,
        }
        .encode();
        assert!(a.receive(&foreign, Instant::now()).is_empty());
        assert!(a.receive("not json", Instant::now()).is_empty());
        let oversized = ChatFrame::Message {
            from: "b".into(),
            id: 1,
            sent_at: 0,
            text: "y".repeat(MAX_CHAT_BYTES + 1),
        }
        .encode();
        assert!(a.receive(&oversized, Instant::now()).is_empty());
        assert_eq!(a.poll_timeout(), Some(t0 + GIVE_UP_AFTER));
    }
}
