//! Drawing: plain functions from what to show ([`EndView`], [`SettingsForm`])
//! to what the person asked for ([`Action`]). They hold no call state and do
//! no I/O, which is what lets `egui_kittest` test them without a call.

use duet_media::ProcessingSettings;
use duet_media::source::{AudioSpec, VideoSpec};
use eframe::egui::{self, Color32, Rect, RichText, Vec2, pos2};

use super::picture::Picture;
use super::stats::StatsView;
use super::status::{StatusLine, Tone};

/// The colour behind the pictures: the window's clear colour.
pub const BACKDROP: Color32 = Color32::from_gray(14);

/// Something the person asked for, by a click or a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// M: mute or unmute the microphone.
    ToggleMute,
    /// V: camera off or on.
    ToggleCamera,
    /// H: hang up, or call again when no call runs.
    HangUpOrCall,
    /// S: the stats overlay.
    ToggleStats,
    /// F: full screen.
    ToggleFullscreen,
    /// The settings panel.
    ToggleSettings,
    /// Another camera (or the test pattern).
    SwitchVideo(VideoSpec),
    /// Another microphone (or the test beeps).
    SwitchAudio(AudioSpec),
    /// Another speaker (`None`: the default one).
    SwitchSpeaker(Option<String>),
    /// Echo cancellation, noise suppression or gain control switched.
    SetProcessing(ProcessingSettings),
    /// Put this text on the clipboard (the invitation to the call).
    Copy(String),
    /// C: the chat panel.
    ToggleChat,
    /// D: share the screen instead of the camera, or back.
    ToggleScreenShare,
    /// Send this chat message.
    SendChat(String),
}

/// How the other person joins, while this end waits for them.
#[derive(Debug, Clone, PartialEq)]
pub struct InvitationView {
    /// The browser page's address for the call, if the server has one.
    pub link: Option<String>,
    /// What "Copy invitation" puts on the clipboard: the command and the link.
    pub text: String,
}

/// The call's verification code as the window shows it: the pictures by
/// their names (egui's fonts have no emoji), then the digits.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeView {
    /// `dog · rocket · pizza · key · 048 213`.
    pub code: String,
}

/// One end of a call, as it is to be drawn.
#[derive(Debug, Clone)]
pub struct EndView<'a> {
    /// Names the end when a window shows two (`duet demo`).
    pub title: Option<&'a str>,
    /// The status line.
    pub line: StatusLine,
    /// Device fallbacks and the like.
    pub notices: &'a [String],
    /// The remote picture.
    pub remote: Option<Picture>,
    /// The self-view (drawn mirrored).
    pub local: Option<Picture>,
    /// Microphone muted.
    pub muted: bool,
    /// Camera off.
    pub camera_off: bool,
    /// The screen is shared instead of the camera.
    pub sharing_screen: bool,
    /// A session runs (the red button hangs up; otherwise it calls).
    pub running: bool,
    /// Figures for the overlay, when it is shown.
    pub stats: Option<&'a StatsView>,
    /// The overlay is on (it may have no figures yet).
    pub show_stats: bool,
    /// The window is full screen.
    pub fullscreen: bool,
    /// The settings panel is open.
    pub settings_open: bool,
    /// A chat button, with the number of unread messages (`None`: no chat here).
    pub chat: Option<usize>,
    /// While waiting: how the other person joins.
    pub invitation: Option<InvitationView>,
    /// While in a call: the code to compare.
    pub verification: Option<CodeView>,
}

/// The keyboard shortcuts pressed this frame; none while a text field has the keyboard.
pub fn shortcuts(ctx: &egui::Context) -> Vec<Action> {
    if ctx.egui_wants_keyboard_input() {
        return Vec::new();
    }
    ctx.input(|input| {
        [
            (egui::Key::M, Action::ToggleMute),
            (egui::Key::V, Action::ToggleCamera),
            (egui::Key::H, Action::HangUpOrCall),
            (egui::Key::S, Action::ToggleStats),
            (egui::Key::F, Action::ToggleFullscreen),
            (egui::Key::C, Action::ToggleChat),
            (egui::Key::D, Action::ToggleScreenShare),
        ]
        .into_iter()
        .filter(|(key, _)| input.key_pressed(*key) && input.modifiers.is_none())
        .map(|(_, action)| action)
        .collect()
    })
}

fn tone_colour(tone: Tone) -> Color32 {
    match tone {
        Tone::Busy => Color32::from_rgb(0xb8, 0xc4, 0xd6),
        Tone::Good => Color32::from_rgb(0x6d, 0xd1, 0x8a),
        Tone::Warning => Color32::from_rgb(0xf0, 0xb4, 0x4c),
        Tone::Error => Color32::from_rgb(0xf2, 0x6d, 0x6d),
    }
}

/// Draws one end of a call in `ui`: status line on top, controls below, the
/// remote picture (or a calm state screen) between, and the self-view in a corner.
pub fn end_view(ui: &mut egui::Ui, view: &EndView<'_>, id: &str) -> Vec<Action> {
    let mut actions = Vec::new();
    egui::Panel::top(format!("{id}-status"))
        .resizable(false)
        .frame(bar_frame(ui.style()))
        .show(ui, |ui| {
            ui.add_space(4.0);
            if let Some(title) = view.title {
                ui.label(RichText::new(title).small().weak());
            }
            ui.label(
                RichText::new(&view.line.headline)
                    .size(18.0)
                    .strong()
                    .color(tone_colour(view.line.tone)),
            );
            ui.horizontal_wrapped(|ui| {
                ui.label(RichText::new(&view.line.detail).weak());
                if let Some(code) = &view.verification {
                    ui.label(RichText::new(format!("Verification code: {}", code.code)).strong())
                        .on_hover_text(
                            "Read it to the other person. The same code on both screens \
                             means nobody sits in between, not even the server.",
                        );
                }
            });
            if let Some(invitation) = &view.invitation {
                ui.horizontal_wrapped(|ui| {
                    if let Some(link) = &invitation.link {
                        ui.label(RichText::new(format!("or in a browser: {link}")).weak());
                    }
                    if ui.button("Copy invitation").clicked() {
                        actions.push(Action::Copy(invitation.text.clone()));
                    }
                });
            }
            ui.add_space(4.0);
        });
    egui::Panel::bottom(format!("{id}-controls"))
        .resizable(false)
        .frame(bar_frame(ui.style()))
        .show(ui, |ui| {
            ui.add_space(4.0);
            for notice in view.notices {
                ui.label(
                    RichText::new(format!("Notice: {notice}")).color(tone_colour(Tone::Warning)),
                );
            }
            ui.horizontal_wrapped(|ui| controls(ui, view, &mut actions));
            ui.add_space(4.0);
        });
    // No fill: the window is cleared to [`BACKDROP`] before drawing. Filling
    // the picture's area too would draw it twice, which a software renderer
    // pays for in full.
    egui::CentralPanel::default()
        .frame(egui::Frame::new())
        .show(ui, |ui| {
            let area = ui.max_rect();
            match &view.remote {
                Some(picture) => {
                    ui.painter().add(picture.shape(fit(area, picture.size)));
                }
                None => state_screen(ui, area, &view.line),
            }
            if let Some(picture) = &view.local {
                // The picture mirrors itself, as people expect to see themselves.
                let pip = picture_in_picture(area, picture.size);
                ui.painter()
                    .rect_filled(pip.expand(2.0), 4.0, Color32::from_gray(60));
                ui.painter().add(picture.shape(pip));
            }
            if view.show_stats {
                stats_overlay(ui, area, view.stats);
            }
        });
    actions
}

/// The status and control bars: laid out as egui's panels are, but not
/// filled, so they show the [`BACKDROP`] the window is cleared to. A software
/// renderer blends a panel's fill over every pixel of it, 30 times a second:
/// the two fills cost about 3 % of a core of a 960x720 window under Xvfb
/// (BENCHMARKS.md, "The window's cost").
fn bar_frame(style: &egui::Style) -> egui::Frame {
    egui::Frame::side_top_panel(style).fill(Color32::TRANSPARENT)
}

fn controls(ui: &mut egui::Ui, view: &EndView<'_>, actions: &mut Vec<Action>) {
    let mute = if view.muted { "Unmute (M)" } else { "Mute (M)" };
    if ui
        .add(egui::Button::new(mute).selected(view.muted))
        .clicked()
    {
        actions.push(Action::ToggleMute);
    }
    let camera = if view.camera_off {
        "Camera on (V)"
    } else {
        "Camera off (V)"
    };
    if ui
        .add(egui::Button::new(camera).selected(view.camera_off))
        .clicked()
    {
        actions.push(Action::ToggleCamera);
    }
    let share = if view.sharing_screen {
        "Stop sharing (D)"
    } else {
        "Share screen (D)"
    };
    if ui
        .add(egui::Button::new(share).selected(view.sharing_screen))
        .clicked()
    {
        actions.push(Action::ToggleScreenShare);
    }
    let (call, colour) = if view.running {
        ("Hang up (H)", Color32::from_rgb(0xc0, 0x39, 0x2b))
    } else {
        ("Call (H)", Color32::from_rgb(0x23, 0x8b, 0x4f))
    };
    if ui
        .add(egui::Button::new(RichText::new(call).color(Color32::WHITE)).fill(colour))
        .clicked()
    {
        actions.push(Action::HangUpOrCall);
    }
    if ui
        .add(egui::Button::new("Stats (S)").selected(view.show_stats))
        .clicked()
    {
        actions.push(Action::ToggleStats);
    }
    if ui
        .add(egui::Button::new("Full screen (F)").selected(view.fullscreen))
        .clicked()
    {
        actions.push(Action::ToggleFullscreen);
    }
    if ui
        .add(egui::Button::new("Settings").selected(view.settings_open))
        .clicked()
    {
        actions.push(Action::ToggleSettings);
    }
    if let Some(unread) = view.chat {
        let label = match unread {
            0 => "Chat (C)".to_owned(),
            n => format!("Chat (C) · {n} new"),
        };
        if ui.button(label).clicked() {
            actions.push(Action::ToggleChat);
        }
    }
}

/// What shows where the remote picture will be: where the call is, calmly.
fn state_screen(ui: &mut egui::Ui, area: Rect, line: &StatusLine) {
    let centre = area.center();
    let radius = (area.height().min(area.width()) * 0.08).clamp(14.0, 40.0);
    let colour = tone_colour(line.tone);
    ui.painter().circle_stroke(
        centre - Vec2::new(0.0, radius * 1.6),
        radius,
        egui::Stroke::new(3.0, colour.gamma_multiply(0.6)),
    );
    let text_area = Rect::from_center_size(
        centre + Vec2::new(0.0, radius),
        Vec2::new(area.width() * 0.85, radius * 3.0),
    );
    ui.scope_builder(egui::UiBuilder::new().max_rect(text_area), |ui| {
        ui.vertical_centered(|ui| {
            ui.label(RichText::new(&line.headline).size(20.0).color(colour));
            ui.label(RichText::new(&line.detail).color(Color32::from_gray(170)));
        });
    });
}

fn stats_overlay(ui: &mut egui::Ui, area: Rect, stats: Option<&StatsView>) {
    let lines = match stats {
        Some(stats) => stats.lines(),
        None => vec!["measuring…".to_owned()],
    };
    let rect = Rect::from_min_size(area.min + Vec2::splat(10.0), Vec2::new(340.0, 92.0));
    ui.scope_builder(egui::UiBuilder::new().max_rect(rect), |ui| {
        egui::Frame::new()
            .fill(Color32::from_black_alpha(180))
            .corner_radius(6.0)
            .inner_margin(8.0)
            .show(ui, |ui| {
                for line in lines {
                    ui.label(
                        RichText::new(line)
                            .monospace()
                            .size(11.0)
                            .color(Color32::WHITE),
                    );
                }
            });
    });
}

/// The largest rectangle of `size`'s aspect ratio centred in `area`.
pub fn fit(area: Rect, size: Vec2) -> Rect {
    if size.x <= 0.0 || size.y <= 0.0 {
        return area;
    }
    let scale = (area.width() / size.x).min(area.height() / size.y);
    Rect::from_center_size(area.center(), size * scale)
}

/// The self-view's place: bottom right, about a quarter of the width.
pub fn picture_in_picture(area: Rect, size: Vec2) -> Rect {
    let width = (area.width() * 0.28).clamp(96.0, 360.0);
    let height = if size.x > 0.0 {
        width * size.y / size.x
    } else {
        width * 0.75
    };
    let margin = 12.0;
    Rect::from_min_size(
        pos2(
            area.right() - width - margin,
            area.bottom() - height - margin,
        ),
        Vec2::new(width, height),
    )
}

/// The devices found, for the settings panel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceLists {
    /// Cameras: index and name.
    pub cameras: Vec<(u32, String)>,
    /// Microphone names.
    pub microphones: Vec<String>,
    /// Speaker names.
    pub speakers: Vec<String>,
}

/// The settings panel's editable fields and what is in use.
#[derive(Debug, Clone)]
pub struct SettingsForm {
    /// Server URL for the next call.
    pub server: String,
    /// Room for the next call.
    pub room: String,
    /// Video source in use.
    pub video: VideoSpec,
    /// Audio source in use.
    pub audio: AudioSpec,
    /// Speaker in use (`None`: the default one).
    pub speaker: Option<String>,
    /// Microphone processing in use.
    pub processing: ProcessingSettings,
}

/// [`settings_panel`] on the right-hand side of the window.
pub fn settings_side_panel(
    ui: &mut egui::Ui,
    form: &mut SettingsForm,
    devices: Option<&DeviceLists>,
    can_edit_destination: bool,
) -> Vec<Action> {
    egui::Panel::right("settings")
        .resizable(false)
        .default_size(260.0)
        .show(ui, |ui| {
            settings_panel(ui, form, devices, can_edit_destination)
        })
        .inner
}

/// Draws the settings; returns device switches. Server and room are edited in
/// place, and only while `can_edit_destination` (no call running).
pub fn settings_panel(
    ui: &mut egui::Ui,
    form: &mut SettingsForm,
    devices: Option<&DeviceLists>,
    can_edit_destination: bool,
) -> Vec<Action> {
    let mut actions = Vec::new();
    ui.heading("Settings");
    ui.add_space(6.0);
    let label = ui.label("Server");
    ui.add_enabled(
        can_edit_destination,
        egui::TextEdit::singleline(&mut form.server).hint_text("ws://host:8787"),
    )
    .labelled_by(label.id);
    let label = ui.label("Room");
    ui.add_enabled(
        can_edit_destination,
        egui::TextEdit::singleline(&mut form.room).hint_text("empty: a new room"),
    )
    .labelled_by(label.id);
    if !can_edit_destination {
        ui.label(
            RichText::new("Hang up to change the server or room.")
                .small()
                .weak(),
        );
    }
    ui.separator();
    let Some(devices) = devices else {
        ui.label("Looking for devices…");
        return actions;
    };

    let cameras = devices
        .cameras
        .iter()
        .map(|(index, name)| (VideoSpec::Camera(*index), name.clone()));
    let shown = video_name(&form.video, devices);
    if let Some(video) = device_choice(
        ui,
        ("camera", "Camera"),
        &mut form.video,
        shown,
        cameras.chain([(VideoSpec::Test, "Test pattern".to_owned())]),
        devices.cameras.is_empty().then_some("No camera found."),
    ) {
        actions.push(Action::SwitchVideo(video));
    }
    let microphones = devices
        .microphones
        .iter()
        .map(|name| (AudioSpec::Mic(Some(name.clone())), name.clone()));
    let shown = audio_name(&form.audio);
    if let Some(audio) = device_choice(
        ui,
        ("microphone", "Microphone"),
        &mut form.audio,
        shown,
        microphones.chain([(AudioSpec::Test, "Test beeps".to_owned())]),
        devices
            .microphones
            .is_empty()
            .then_some("No microphone found."),
    ) {
        actions.push(Action::SwitchAudio(audio));
    }
    let speakers = devices
        .speakers
        .iter()
        .map(|name| (Some(name.clone()), name.clone()));
    let shown = form.speaker.clone().unwrap_or_else(|| "Default".to_owned());
    if let Some(speaker) = device_choice(
        ui,
        ("speaker", "Speaker"),
        &mut form.speaker,
        shown,
        [(None, "Default".to_owned())].into_iter().chain(speakers),
        devices
            .speakers
            .is_empty()
            .then_some("No speaker found: sound is not played."),
    ) {
        actions.push(Action::SwitchSpeaker(speaker));
    }
    let before = form.processing;
    let processing = &mut form.processing;
    ui.checkbox(&mut processing.echo_cancel, "Echo cancellation")
        .on_hover_text("Removes your speaker's sound from your microphone, so the other person does not hear themselves.");
    ui.checkbox(&mut processing.noise_suppression, "Noise suppression")
        .on_hover_text("Removes steady background noise: fans, hum, hiss.");
    ui.checkbox(&mut processing.auto_gain, "Automatic gain")
        .on_hover_text("Keeps your voice at a steady level.");
    if form.processing != before {
        actions.push(Action::SetProcessing(form.processing));
    }
    actions
}

/// One labelled device list: `current` follows the person's pick, which is
/// returned when it changed; `none_found` is said under the list.
fn device_choice<T: Clone + PartialEq>(
    ui: &mut egui::Ui,
    (id, label): (&str, &str),
    current: &mut T,
    shown: String,
    options: impl Iterator<Item = (T, String)>,
    none_found: Option<&str>,
) -> Option<T> {
    let label = ui.label(label);
    let mut picked = current.clone();
    egui::ComboBox::from_id_salt(id)
        .selected_text(shown)
        .width(220.0)
        .show_ui(ui, |ui| {
            for (value, name) in options {
                ui.selectable_value(&mut picked, value, name);
            }
        })
        .response
        .labelled_by(label.id);
    if let Some(text) = none_found {
        ui.label(RichText::new(text).small().weak());
    }
    if picked == *current {
        return None;
    }
    *current = picked.clone();
    Some(picked)
}

fn video_name(spec: &VideoSpec, devices: &DeviceLists) -> String {
    match spec {
        VideoSpec::Camera(index) => devices
            .cameras
            .iter()
            .find(|(i, _)| i == index)
            .map_or_else(|| format!("Camera {index}"), |(_, name)| name.clone()),
        VideoSpec::Test => "Test pattern".to_owned(),
        VideoSpec::NoisyTest => "Noisy test pattern".to_owned(),
        VideoSpec::Screen(None) => "Screen".to_owned(),
        VideoSpec::Screen(Some(n)) => format!("Screen {n}"),
        VideoSpec::File(path) => path.display().to_string(),
        VideoSpec::None => "None".to_owned(),
    }
}

fn audio_name(spec: &AudioSpec) -> String {
    match spec {
        AudioSpec::Mic(None) => "Default microphone".to_owned(),
        AudioSpec::Mic(Some(name)) => name.clone(),
        AudioSpec::Test => "Test beeps".to_owned(),
        AudioSpec::File(path) => path.display().to_string(),
        AudioSpec::None => "None".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use duet_call::CallError;
    use duet_signal::{ClientError, ErrorCode, RoleRequest};
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable;

    use super::*;
    use crate::window::status::CallStatus;

    fn line(headline: &str, detail: &str, tone: Tone) -> StatusLine {
        StatusLine {
            headline: headline.into(),
            detail: detail.into(),
            tone,
        }
    }

    /// Fails unless some node's label contains `text`.
    fn shows<State>(harness: &Harness<'_, State>, text: &str) {
        assert!(
            harness.query_all_by_label_contains(text).count() > 0,
            "nothing on screen says {text:?}"
        );
    }

    fn view(line: StatusLine) -> EndView<'static> {
        EndView {
            title: None,
            line,
            notices: &[],
            remote: None,
            local: None,
            muted: false,
            camera_off: false,
            running: true,
            stats: None,
            show_stats: false,
            fullscreen: false,
            settings_open: false,
            sharing_screen: false,
            chat: Some(2),
            invitation: None,
            verification: None,
        }
    }

    /// A harness that draws `view` and collects the actions it returns.
    fn harness(view: EndView<'static>) -> Harness<'static, Vec<Action>> {
        let mut harness = Harness::builder()
            .with_size(Vec2::new(900.0, 600.0))
            .build_ui_state(
                move |ui, actions: &mut Vec<Action>| {
                    actions.extend(end_view(ui, &view, "test"));
                },
                Vec::new(),
            );
        harness.run();
        harness
    }

    #[test]
    fn the_status_line_and_the_state_screen_say_where_the_call_is() {
        let harness = harness(view(line(
            "Waiting for the other person",
            "Room “den”. They join with: duet callee --server ws://h:1 --room den",
            Tone::Busy,
        )));
        assert!(
            harness
                .query_all_by_label("Waiting for the other person")
                .count()
                >= 2,
            "in the status line and on the state screen"
        );
        shows(&harness, "duet callee --server ws://h:1 --room den");
    }

    #[test]
    fn pictures_keep_their_shape_and_the_self_view_stays_small_in_the_corner() {
        let noop = || std::sync::Arc::new(eframe::egui_glow::CallbackFn::new(|_, _| {}));
        let mut shown = view(line("In call · 0:02", "", Tone::Good));
        shown.remote = Some(Picture {
            size: Vec2::new(640.0, 480.0),
            paint: noop(),
        });
        shown.local = Some(Picture {
            size: Vec2::new(1280.0, 720.0),
            paint: noop(),
        });
        let harness = harness(shown);
        let drawn: Vec<Rect> = harness
            .output()
            .shapes
            .iter()
            .filter_map(|clipped| match &clipped.shape {
                egui::Shape::Callback(callback) => Some(callback.rect),
                _ => None,
            })
            .collect();
        let [remote, local] = drawn[..] else {
            panic!("two pictures drawn: {drawn:?}");
        };
        assert!(
            (remote.aspect_ratio() - 4.0 / 3.0).abs() < 0.01,
            "{remote:?}"
        );
        assert!(
            (local.aspect_ratio() - 16.0 / 9.0).abs() < 0.01,
            "{local:?}"
        );
        assert!(local.width() <= 360.0 && local.width() < remote.width() / 2.0);
        assert!(local.center().x > remote.center().x && local.center().y > remote.center().y);
        assert_eq!(
            harness.query_all_by_label("In call · 0:02").count(),
            1,
            "the picture, not the state screen, fills the middle"
        );
    }

    #[test]
    fn every_control_button_asks_for_its_action() {
        let mut harness = harness(view(line("In call · 0:03", "Room “den”", Tone::Good)));
        for (label, action) in [
            ("Mute (M)", Action::ToggleMute),
            ("Camera off (V)", Action::ToggleCamera),
            ("Hang up (H)", Action::HangUpOrCall),
            ("Stats (S)", Action::ToggleStats),
            ("Full screen (F)", Action::ToggleFullscreen),
            ("Chat (C) · 2 new", Action::ToggleChat),
            ("Share screen (D)", Action::ToggleScreenShare),
            ("Settings", Action::ToggleSettings),
        ] {
            harness.state_mut().clear();
            harness.get_by_label(label).click();
            harness.run();
            assert_eq!(harness.state(), &vec![action], "{label}");
        }
    }

    #[test]
    fn a_waiting_end_shows_the_link_and_copies_the_invitation() {
        let mut waiting = view(line(
            "Waiting for the other person",
            "Room “k7m2”. They join with: duet callee --server ws://h:1 --room k7m2",
            Tone::Busy,
        ));
        waiting.invitation = Some(InvitationView {
            link: Some("http://h:1/?room=k7m2".into()),
            text: "duet callee --server ws://h:1 --room k7m2\nhttp://h:1/?room=k7m2".into(),
        });
        let mut harness = harness(waiting);
        shows(&harness, "or in a browser: http://h:1/?room=k7m2");
        harness.get_by_label("Copy invitation").click();
        harness.run();
        assert_eq!(
            harness.state(),
            &vec![Action::Copy(
                "duet callee --server ws://h:1 --room k7m2\nhttp://h:1/?room=k7m2".into()
            )]
        );
    }

    #[test]
    fn a_call_shows_its_verification_code_and_no_invitation() {
        let mut in_call = view(line("In call · 0:05", "Room “k7m2”", Tone::Good));
        in_call.verification = Some(CodeView {
            code: "dog · rocket · pizza · key · 048 213".into(),
        });
        let harness = harness(in_call);
        shows(
            &harness,
            "Verification code: dog · rocket · pizza · key · 048 213",
        );
        assert_eq!(harness.query_all_by_label("Copy invitation").count(), 0);
    }

    #[test]
    fn the_buttons_say_what_they_will_do_next() {
        let mut muted = view(line(
            "Call ended",
            "Press H or Call to call again.",
            Tone::Busy,
        ));
        muted.muted = true;
        muted.camera_off = true;
        muted.running = false;
        let harness = harness(muted);
        harness.get_by_label("Unmute (M)");
        harness.get_by_label("Camera on (V)");
        harness.get_by_label("Call (H)");
        assert!(harness.query_by_label("Hang up (H)").is_none());
    }

    #[test]
    fn errors_show_in_plain_words_with_what_to_do() {
        let mut status = CallStatus::new("ws://h:1", "den", RoleRequest::Caller);
        status.fail(&CallError::Signaling(ClientError::Rejected {
            code: ErrorCode::RoomFull,
            message: "room full".into(),
        }));
        let harness = harness(view(status.line(Instant::now())));
        shows(&harness, "Room “den” is full");
        shows(&harness, "Pick another room in Settings");

        let mut status = CallStatus::new("ws://nowhere.test:9", "den", RoleRequest::Caller);
        status.fail(&CallError::Signaling(ClientError::Unreachable {
            url: "ws://nowhere.test:9/ws".into(),
            reason: "refused".into(),
        }));
        let harness = self::harness(view(status.line(Instant::now())));
        shows(&harness, "Cannot reach the server at ws://nowhere.test:9");
        shows(&harness, "duet serve");
    }

    #[test]
    fn device_fallback_notices_are_visible() {
        let mut with_notice = view(line("In call · 0:01", "", Tone::Good));
        with_notice.notices = Box::leak(Box::new(vec![
            "no camera found; sending the test pattern".to_owned(),
        ]));
        let harness = harness(with_notice);
        harness.get_by_label("Notice: no camera found; sending the test pattern");
    }

    #[test]
    fn the_stats_overlay_shows_every_figure() {
        let stats: &'static StatsView = Box::leak(Box::new(StatsView {
            remote_size: Some((640, 480)),
            fps_in: 30.0,
            fps_out: 30.0,
            kbps_in: 900.0,
            kbps_out: 1000.0,
            rtt_ms: Some(1.0),
            packets_lost: Some(2),
            video_latency_ms: Some(4.0),
            audio_latency_ms: Some(47.0),
            path: Some(duet_call::PathKind::Direct),
        }));
        let mut shown = view(line("In call · 0:05", "", Tone::Good));
        shown.show_stats = true;
        shown.stats = Some(stats);
        let harness = harness(shown);
        harness.get_by_label_contains("640×480 · 30 fps · 900 kbit/s");
        harness.get_by_label_contains("30 fps · 1000 kbit/s");
        harness.get_by_label_contains("direct · RTT 1 ms · 2 packets lost");
        harness.get_by_label_contains("video 4 ms · audio 47 ms");

        let mut waiting = view(line("In call · 0:00", "", Tone::Good));
        waiting.show_stats = true;
        harness_with(waiting).get_by_label("measuring…");
    }

    fn harness_with(view: EndView<'static>) -> Harness<'static, Vec<Action>> {
        harness(view)
    }

    #[test]
    fn keyboard_shortcuts_map_to_actions() {
        let mut harness = Harness::builder().build_ui_state(
            |ui, actions: &mut Vec<Action>| actions.extend(shortcuts(ui.ctx())),
            Vec::new(),
        );
        for (key, action) in [
            (egui::Key::M, Action::ToggleMute),
            (egui::Key::V, Action::ToggleCamera),
            (egui::Key::H, Action::HangUpOrCall),
            (egui::Key::S, Action::ToggleStats),
            (egui::Key::F, Action::ToggleFullscreen),
            (egui::Key::C, Action::ToggleChat),
            (egui::Key::D, Action::ToggleScreenShare),
        ] {
            harness.state_mut().clear();
            harness.key_press(key);
            harness.run();
            assert_eq!(harness.state(), &vec![action], "{key:?}");
        }
    }

    #[derive(Debug)]
    struct SettingsState {
        form: SettingsForm,
        actions: Vec<Action>,
    }

    fn settings_harness(devices: DeviceLists, can_edit: bool) -> Harness<'static, SettingsState> {
        let state = SettingsState {
            form: SettingsForm {
                server: "ws://h:1".into(),
                room: "den".into(),
                video: VideoSpec::Camera(0),
                audio: AudioSpec::Mic(None),
                speaker: None,
                processing: ProcessingSettings::default(),
            },
            actions: Vec::new(),
        };
        let mut harness = Harness::builder()
            .with_size(Vec2::new(400.0, 600.0))
            .build_ui_state(
                move |ui, state: &mut SettingsState| {
                    let mut actions = shortcuts(ui.ctx());
                    actions.extend(settings_panel(
                        ui,
                        &mut state.form,
                        Some(&devices),
                        can_edit,
                    ));
                    state.actions.extend(actions);
                },
                state,
            );
        harness.run();
        harness
    }

    #[test]
    fn settings_switch_devices_and_edit_server_and_room_without_triggering_shortcuts() {
        let devices = DeviceLists {
            cameras: vec![(0, "Front camera".into()), (1, "USB camera".into())],
            microphones: vec!["Headset".into()],
            speakers: vec!["Headphones".into()],
        };
        let mut harness = settings_harness(devices, true);
        harness.get_by_label("Camera").click();
        harness.run();
        harness.get_by_label("USB camera").click();
        harness.run();
        assert_eq!(
            harness.state().actions,
            vec![Action::SwitchVideo(VideoSpec::Camera(1))]
        );

        harness.state_mut().actions.clear();
        harness.get_by_label("Speaker").click();
        harness.run();
        harness.get_by_label("Headphones").click();
        harness.run();
        assert_eq!(
            harness.state().actions,
            vec![Action::SwitchSpeaker(Some("Headphones".into()))]
        );

        harness.state_mut().actions.clear();
        harness.get_by_label("Echo cancellation").click();
        harness.run();
        assert_eq!(
            harness.state().actions,
            vec![Action::SetProcessing(ProcessingSettings {
                echo_cancel: false,
                ..ProcessingSettings::default()
            })]
        );

        // Typing an M into the room is text, not the mute shortcut.
        harness.state_mut().actions.clear();
        harness.get_by_label("Room").focus();
        harness.run();
        harness.get_by_label("Room").type_text("m");
        harness.run();
        assert_eq!(harness.state().form.room, "denm");
        assert!(
            harness.state().actions.is_empty(),
            "{:?}",
            harness.state().actions
        );
    }

    #[test]
    fn settings_without_devices_offer_the_test_signals_and_say_why() {
        let mut harness = settings_harness(DeviceLists::default(), false);
        harness.get_by_label("No camera found.");
        harness.get_by_label("No microphone found.");
        harness.get_by_label("No speaker found: sound is not played.");
        harness.get_by_label("Hang up to change the server or room.");
        harness.get_by_label("Camera").click();
        harness.run();
        harness.get_by_label("Test pattern").click();
        harness.run();
        assert_eq!(
            harness.state().actions,
            vec![Action::SwitchVideo(VideoSpec::Test)]
        );
    }
}
