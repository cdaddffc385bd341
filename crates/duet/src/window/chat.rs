//! The chat beside the pictures: the messages of the call, each with its time
//! and who wrote it (and for ours, whether it arrived), and a message box.
//! [`ChatHistory`] holds what the session said (no I/O); [`chat_side_panel`]
//! draws it and returns what the person typed as [`Action::SendChat`].

use duet_call::{ChatAuthor, ChatMessage, ChatState, MAX_CHAT_BYTES};
use eframe::egui::{self, Color32, RichText};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::view::Action;

/// How many messages the window keeps.
const KEPT: usize = 500;

/// The messages shown, oldest first, and how many the person has not seen.
#[derive(Debug)]
pub struct ChatHistory {
    messages: Vec<ChatMessage>,
    /// Where the current session's messages begin: our ids start from 1 in
    /// each session, so a state change only matches a message after this.
    session_start: usize,
    unread: usize,
    /// Whose clock the times are shown on.
    zone: TimeZone,
}

impl Default for ChatHistory {
    /// Times on this computer's clock (its time zone, `TZ` or
    /// `/etc/localtime`), as a person reads the time.
    fn default() -> Self {
        ChatHistory::in_zone(TimeZone::system())
    }
}

impl ChatHistory {
    /// An empty history whose times are shown in `zone`.
    pub fn in_zone(zone: TimeZone) -> ChatHistory {
        ChatHistory {
            messages: Vec::new(),
            session_start: 0,
            unread: 0,
            zone,
        }
    }

    /// A new session (call again) starts numbering our messages anew.
    pub fn new_session(&mut self) {
        self.session_start = self.messages.len();
    }

    /// Takes in a message from the session: a new one, or one of ours whose state changed.
    pub fn apply(&mut self, message: ChatMessage) {
        if message.author == ChatAuthor::Me
            && let Some(known) = self.messages[self.session_start..]
                .iter_mut()
                .rev()
                .find(|m| m.author == ChatAuthor::Me && m.id == message.id)
        {
            known.state = message.state;
            return;
        }
        if message.author == ChatAuthor::Peer {
            self.unread += 1;
        }
        self.messages.push(message);
        if self.messages.len() > KEPT {
            let extra = self.messages.len() - KEPT;
            self.messages.drain(..extra);
            self.session_start = self.session_start.saturating_sub(extra);
        }
    }

    /// The messages, oldest first.
    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    /// Messages from the other person not yet seen (the panel was closed).
    pub fn unread(&self) -> usize {
        self.unread
    }

    /// The person looked at the chat.
    pub fn mark_read(&mut self) {
        self.unread = 0;
    }
}

/// `HH:MM:SS UTC` of a wall-clock time in ms since the Unix epoch: the
/// headless progress lines, read by scripts as much as by people, say the
/// same wherever they run.
pub fn utc_time_of_day(ms: u64) -> String {
    format!("{} UTC", time_of_day(ms, &TimeZone::UTC))
}

/// `HH:MM:SS` of a wall-clock time (ms since the Unix epoch) in `zone`.
pub fn time_of_day(ms: u64, zone: &TimeZone) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .map_or_else(
            || "--:--:--".to_owned(),
            |at| at.to_zoned(zone.clone()).strftime("%H:%M:%S").to_string(),
        )
}

/// One message's header line: who, when, and for ours where it is.
fn header(message: &ChatMessage, zone: &TimeZone) -> String {
    let time = time_of_day(message.sent_at_ms, zone);
    match (message.author, message.state) {
        (ChatAuthor::Peer, _) => format!("Them · {time}"),
        (ChatAuthor::Me, ChatState::Delivered) => format!("You · {time} · delivered"),
        (ChatAuthor::Me, ChatState::Sending) => format!("You · {time} · sending…"),
        (ChatAuthor::Me, state) => format!("You · {time} · {}", state.as_str()),
    }
}

/// The chat on the right-hand side of the window. `draft` is the message box;
/// Enter (or the button) sends it while `can_send` (a session runs).
pub fn chat_side_panel(
    ui: &mut egui::Ui,
    history: &ChatHistory,
    draft: &mut String,
    can_send: bool,
) -> Vec<Action> {
    egui::Panel::right("chat")
        .resizable(true)
        .default_size(280.0)
        .show(ui, |ui| chat_panel(ui, history, draft, can_send))
        .inner
}

/// Draws the chat: the message box at the bottom, the messages above it.
pub fn chat_panel(
    ui: &mut egui::Ui,
    history: &ChatHistory,
    draft: &mut String,
    can_send: bool,
) -> Vec<Action> {
    let mut actions = Vec::new();
    ui.heading("Chat");
    egui::Panel::bottom("chat-box")
        .resizable(false)
        .show(ui, |ui| {
            ui.add_space(4.0);
            let bytes = draft.len();
            let too_long = bytes > MAX_CHAT_BYTES;
            let edit = ui.add_enabled(
                can_send,
                egui::TextEdit::singleline(draft)
                    .hint_text("Message (Enter sends)")
                    .desired_width(f32::INFINITY),
            );
            let entered = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            ui.horizontal(|ui| {
                let send = ui
                    .add_enabled(
                        can_send && !too_long && !draft.trim().is_empty(),
                        egui::Button::new("Send"),
                    )
                    .clicked();
                if too_long {
                    ui.label(
                        RichText::new(format!("{bytes} of {MAX_CHAT_BYTES} bytes: too long"))
                            .color(Color32::from_rgb(0xe6, 0x7e, 0x22)),
                    );
                }
                if (send || entered) && !too_long && !draft.trim().is_empty() {
                    actions.push(Action::SendChat(std::mem::take(draft)));
                    edit.request_focus();
                }
            });
            ui.add_space(4.0);
        });
    egui::ScrollArea::vertical()
        .stick_to_bottom(true)
        .auto_shrink([false, false])
        .show(ui, |ui| {
            if history.messages().is_empty() {
                ui.label(RichText::new("No messages yet.").weak());
            }
            for message in history.messages() {
                let colour = match message.state {
                    ChatState::NotDelivered => Color32::from_rgb(0xe6, 0x7e, 0x22),
                    _ => Color32::GRAY,
                };
                ui.label(
                    RichText::new(header(message, &history.zone))
                        .small()
                        .color(colour),
                );
                ui.label(&message.text);
                ui.add_space(6.0);
            }
        });
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable as _;

    fn message(author: ChatAuthor, id: u64, text: &str, state: ChatState) -> ChatMessage {
        ChatMessage {
            id,
            author,
            text: text.into(),
            sent_at_ms: 1_700_000_000_000,
            state,
        }
    }

    #[test]
    fn our_messages_change_state_in_place_and_a_new_session_numbers_anew() {
        let mut history = ChatHistory::default();
        history.apply(message(ChatAuthor::Me, 1, "hi", ChatState::Sending));
        history.apply(message(ChatAuthor::Peer, 1, "hello", ChatState::Received));
        history.apply(message(ChatAuthor::Me, 1, "hi", ChatState::Delivered));
        let states: Vec<_> = history.messages().iter().map(|m| m.state).collect();
        assert_eq!(states, [ChatState::Delivered, ChatState::Received]);
        assert_eq!(history.unread(), 1);
        history.mark_read();
        history.new_session();
        history.apply(message(ChatAuthor::Me, 1, "again", ChatState::Sending));
        history.apply(message(ChatAuthor::Me, 1, "again", ChatState::NotDelivered));
        let shown: Vec<_> = history
            .messages()
            .iter()
            .map(|m| (m.text.as_str(), m.state))
            .collect();
        assert_eq!(
            shown,
            [
                ("hi", ChatState::Delivered),
                ("hello", ChatState::Received),
                ("again", ChatState::NotDelivered)
            ]
        );
        assert_eq!(history.unread(), 0);
    }

    struct State {
        history: ChatHistory,
        draft: String,
        actions: Vec<Action>,
    }

    fn harness(history: ChatHistory) -> Harness<'static, State> {
        Harness::new_ui_state(
            |ui, state: &mut State| {
                let actions = chat_panel(ui, &state.history, &mut state.draft, true);
                state.actions.extend(actions);
            },
            State {
                history,
                draft: String::new(),
                actions: Vec::new(),
            },
        )
    }

    #[test]
    fn times_are_shown_on_the_readers_clock() {
        // 1_700_000_000_000 ms is 22:13:20 UTC.
        assert_eq!(time_of_day(1_700_000_000_000, &TimeZone::UTC), "22:13:20");
        let paris_in_winter = TimeZone::fixed(jiff::tz::offset(1));
        assert_eq!(time_of_day(1_700_000_000_000, &paris_in_winter), "23:13:20");
        let new_york = TimeZone::fixed(jiff::tz::offset(-5));
        assert_eq!(time_of_day(1_700_000_000_000, &new_york), "17:13:20");
        assert_eq!(time_of_day(u64::MAX, &TimeZone::UTC), "--:--:--");
    }

    #[test]
    fn messages_show_who_and_when_and_enter_sends_the_box() {
        let mut history = ChatHistory::in_zone(TimeZone::fixed(jiff::tz::offset(1)));
        history.apply(message(
            ChatAuthor::Peer,
            1,
            "здравствуй, мир",
            ChatState::Received,
        ));
        history.apply(message(
            ChatAuthor::Me,
            1,
            "hi there",
            ChatState::NotDelivered,
        ));
        let mut harness = harness(history);
        harness.run();
        harness.get_by_label("Them · 23:13:20");
        harness.get_by_label("здравствуй, мир");
        harness.get_by_label("You · 23:13:20 · not delivered");
        harness.get_by_label("hi there");

        harness
            .get_by_role(egui::accesskit::Role::TextInput)
            .focus();
        harness.run();
        harness
            .get_by_role(egui::accesskit::Role::TextInput)
            .type_text("ünïcödé €");
        harness.run();
        harness.key_press(egui::Key::Enter);
        harness.run();
        assert_eq!(
            harness.state().actions,
            [Action::SendChat("ünïcödé €".into())]
        );
        assert_eq!(harness.state().draft, "", "the box is emptied");
    }

    #[test]
    fn a_message_over_4_kb_is_not_sent_and_says_why() {
        let mut harness = harness(ChatHistory::default());
        harness.state_mut().draft = "€".repeat(1366);
        harness.run();
        harness.get_by_label("4098 of 4096 bytes: too long");
        assert!(harness.state().actions.is_empty());
    }
}
