//! The desktop window (eframe/egui, OpenGL through glow): one call from
//! `duet caller`/`callee`/`call`, or both ends side by side in `duet demo`.
//!
//! - [`status`]: where a call is, in words (no I/O).
//! - [`stats`]: the overlay's rates (no I/O).
//! - [`view`]: drawing, from view structs to [`view::Action`]s.
//! - [`chat`]: the messages of the call and the message box.
//! - [`call_end`]: one end of a call, driving a session on the async runtime.
//! - [`video`]: each new picture wakes the window, and is taken by reference.
//! - [`picture`]: pictures on the GPU, drawn by paint callbacks; display latency.
//! - [`yuv_gl`]: the OpenGL program that turns I420 pictures into RGB.

pub mod call_end;
pub mod chat;
mod demo;
pub mod picture;
pub mod screen_share;
pub mod stats;
pub mod status;
pub mod video;
pub mod view;
pub mod yuv_gl;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duet_call::{AudioOutput, CallConfig, CallError};
use eframe::egui;

use call_end::CallEnd;
pub use demo::run_demo;
use picture::GpuPictures;
use view::{Action, CodeView, DeviceLists, EndView, InvitationView, SettingsForm};

/// How long closing the window waits for the `bye` to go out.
const HANG_UP_LIMIT: Duration = Duration::from_millis(1500);

/// How a window run ended, for the exit status.
#[derive(Debug, Default)]
pub struct WindowOutcome {
    /// A call connected at some point.
    pub connected: bool,
    /// Why no call could be made, when none was.
    pub failure: Option<CallError>,
    /// Why `--stats-json` could not be written, when it could not.
    pub report_failure: Option<String>,
}

/// The app icon, decoded from the PNG in `assets/`.
fn icon() -> Option<egui::IconData> {
    let decoder = png::Decoder::new(std::io::Cursor::new(
        include_bytes!("../../../../assets/duet.png").as_slice(),
    ));
    let mut reader = decoder.read_info().ok()?;
    let mut rgba = vec![0; reader.output_buffer_size()?];
    let info = reader.next_frame(&mut rgba).ok()?;
    if info.color_type != png::ColorType::Rgba || info.bit_depth != png::BitDepth::Eight {
        return None;
    }
    rgba.truncate(info.buffer_size());
    Some(egui::IconData {
        rgba,
        width: info.width,
        height: info.height,
    })
}

fn native_options(title: &str, size: [f32; 2]) -> eframe::NativeOptions {
    let mut viewport = egui::ViewportBuilder::default()
        .with_title(title)
        .with_app_id("duet")
        .with_inner_size(size)
        .with_min_inner_size([480.0, 360.0]);
    if let Some(icon) = icon() {
        viewport = viewport.with_icon(icon);
    }
    eframe::NativeOptions {
        viewport,
        renderer: eframe::Renderer::Glow,
        // Frames are drawn when a picture arrives (30 a second), not at the
        // display's refresh; and waiting for a vertical blank that a software
        // renderer only emulates stalled the window under Xvfb.
        glow_options: egui_glow_options(),
        ..Default::default()
    }
}

fn egui_glow_options() -> eframe::egui_glow::GlowConfiguration {
    eframe::egui_glow::GlowConfiguration {
        vsync: false,
        ..Default::default()
    }
}

/// Opens the window and runs until it is closed (or SIGINT/SIGTERM).
fn run_window(
    runtime: &tokio::runtime::Runtime,
    title: &str,
    size: [f32; 2],
    make: impl FnOnce(egui::Context, Arc<AtomicBool>) -> Box<dyn eframe::App> + 'static,
) -> anyhow::Result<()> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let result = eframe::run_native(
        "duet",
        native_options(title, size),
        Box::new({
            let interrupted = Arc::clone(&interrupted);
            let handle = runtime.handle().clone();
            move |cc| {
                let ctx = cc.egui_ctx.clone();
                ctx.set_visuals(egui::Visuals::dark());
                // SIGINT/SIGTERM close the window the same way the close button does.
                handle.spawn({
                    let (ctx, interrupted) = (ctx.clone(), Arc::clone(&interrupted));
                    async move {
                        crate::shutdown_signal().await;
                        interrupted.store(true, Ordering::Relaxed);
                        ctx.request_repaint();
                    }
                });
                Ok(make(ctx, interrupted))
            }
        }),
    );
    result.map_err(|err| {
        anyhow::anyhow!("cannot open a window: {err} (no display? set DISPLAY, or add --headless)")
    })
}

/// Whether this frame closes the window: the close button, or a signal.
fn closing(ctx: &egui::Context, interrupted: &AtomicBool) -> bool {
    let asked = ctx.input(|input| input.viewport().close_requested());
    if interrupted.swap(false, Ordering::Relaxed) {
        ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        return true;
    }
    asked
}

/// Device lists, found on a thread of their own (listing can take a while).
#[derive(Debug, Clone, Default)]
struct DeviceCatalog {
    found: Arc<Mutex<Option<DeviceLists>>>,
}

impl DeviceCatalog {
    fn load(ctx: egui::Context) -> DeviceCatalog {
        let catalog = DeviceCatalog::default();
        let found = Arc::clone(&catalog.found);
        let spawned = std::thread::Builder::new()
            .name("duet-devices".into())
            .spawn(move || {
                use duet_media::devices::{list_audio_devices, list_cameras};
                let lists = DeviceLists {
                    cameras: list_cameras()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|camera| (camera.index, camera.name))
                        .collect(),
                    microphones: list_audio_devices(true).unwrap_or_default(),
                    speakers: list_audio_devices(false).unwrap_or_default(),
                };
                if let Ok(mut found) = found.lock() {
                    *found = Some(lists);
                }
                ctx.request_repaint();
            });
        if let Err(err) = spawned {
            tracing::warn!(%err, "cannot look for devices");
        }
        catalog
    }

    fn lists(&self) -> Option<DeviceLists> {
        self.found.lock().ok().and_then(|found| found.clone())
    }
}

/// The person's view choices that are not part of the call.
#[derive(Debug, Default)]
struct ViewChoices {
    show_stats: bool,
    fullscreen: bool,
    settings_open: bool,
    chat_open: bool,
}

impl ViewChoices {
    /// Carries out `action` on `end`, or on the view.
    fn apply(
        &mut self,
        action: Action,
        end: &mut CallEnd,
        form: &mut SettingsForm,
        ctx: &egui::Context,
    ) {
        match action {
            Action::ToggleMute => end.toggle_mute(),
            Action::ToggleCamera => end.toggle_camera(),
            Action::HangUpOrCall => {
                if !end.running() {
                    end.set_destination(&form.server, &form.room);
                    // An empty room became a new one: show which.
                    form.room.clone_from(&end.config().room);
                }
                end.hang_up_or_call();
            }
            Action::ToggleStats => self.show_stats = !self.show_stats,
            Action::ToggleFullscreen => {
                self.fullscreen = !self.fullscreen;
                ctx.send_viewport_cmd(egui::ViewportCommand::Fullscreen(self.fullscreen));
            }
            Action::ToggleSettings => self.settings_open = !self.settings_open,
            Action::SwitchVideo(spec) => end.switch_video(spec),
            Action::SwitchAudio(spec) => end.switch_audio(spec),
            Action::SwitchSpeaker(name) => end.switch_speaker(name),
            Action::SetProcessing(settings) => end.set_processing(settings),
            Action::Copy(text) => ctx.copy_text(text),
            Action::ToggleChat => self.chat_open = !self.chat_open,
            Action::SendChat(text) => end.send_chat(&text),
            Action::ToggleScreenShare => {
                end.toggle_screen_share();
                form.video.clone_from(&end.config().video);
            }
        }
    }
}

/// What to draw for `end`.
fn end_view<'a>(
    end: &'a mut CallEnd,
    choices: &ViewChoices,
    title: Option<&'a str>,
    chat_button: bool,
    now: Instant,
) -> EndView<'a> {
    let line = end.status().line(now);
    let (muted, camera_off, running) = (end.muted(), end.camera_off(), end.running());
    let (remote, local) = end.pictures();
    EndView {
        title,
        line,
        notices: end.status().notices(),
        remote,
        local,
        muted,
        camera_off,
        sharing_screen: end.config().video.is_screen(),
        running,
        stats: end.stats(),
        show_stats: choices.show_stats,
        fullscreen: choices.fullscreen,
        settings_open: choices.settings_open,
        chat: chat_button.then(|| end.chat().unread()),
        invitation: end.status().waiting().then(|| {
            let invitation = end.status().invitation();
            InvitationView {
                link: invitation.browser_link(),
                text: invitation.text(),
            }
        }),
        verification: end.status().verification().map(|code| CodeView {
            code: format!("{} · {}", code.names().join(" · "), code.digits()),
        }),
    }
}

fn form_for(config: &CallConfig) -> SettingsForm {
    SettingsForm {
        server: config.server.clone(),
        room: config.room.clone(),
        video: config.video.clone(),
        audio: config.audio.clone(),
        speaker: match &config.audio_output {
            AudioOutput::Speaker(name) => name.clone(),
            _ => None,
        },
        processing: config.processing,
    }
}

/// The window of one call.
struct CallWindow {
    end: CallEnd,
    form: SettingsForm,
    devices: DeviceCatalog,
    choices: ViewChoices,
    interrupted: Arc<AtomicBool>,
    outcome: Arc<Mutex<WindowOutcome>>,
    /// `--duration`: hang up and close after this long connected, or when
    /// the other person hangs up first.
    close_after: Option<Duration>,
    gpu: GpuPictures,
    /// The chat's message box.
    chat_draft: String,
}

impl eframe::App for CallWindow {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        let now = Instant::now();
        self.end.poll(now);
        let timed_out = match (self.close_after, self.end.connected_for(now)) {
            (Some(limit), Some(connected)) => connected >= limit,
            (Some(_), None) => self.end.peer_left(),
            (None, _) => false,
        };
        if timed_out {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        if closing(&ctx, &self.interrupted) || timed_out {
            self.end.hang_up_and_wait(HANG_UP_LIMIT);
            if let Ok(mut outcome) = self.outcome.lock() {
                outcome.connected = self.end.ever_connected();
                outcome.failure = self.end.last_error().cloned();
                outcome.report_failure = self.end.report_failure().map(str::to_owned);
            }
            return;
        }
        let mut actions = view::shortcuts(&ctx);
        if self.choices.settings_open {
            let devices = self.devices.lists();
            let can_edit = !self.end.running();
            actions.extend(view::settings_side_panel(
                ui,
                &mut self.form,
                devices.as_ref(),
                can_edit,
            ));
        }
        if self.choices.chat_open {
            self.end.chat_mut().mark_read();
            actions.extend(chat::chat_side_panel(
                ui,
                self.end.chat(),
                &mut self.chat_draft,
                self.end.running(),
            ));
        }
        let view = end_view(&mut self.end, &self.choices, None, true, now);
        actions.extend(view::end_view(ui, &view, "call"));
        self.gpu.finish_frame(&ctx);
        for action in actions {
            self.choices
                .apply(action, &mut self.end, &mut self.form, &ctx);
        }
    }

    fn on_exit(&mut self, gl: Option<&eframe::glow::Context>) {
        if let Some(gl) = gl {
            self.gpu.destroy(gl);
        }
    }

    fn clear_color(&self, _visuals: &egui::Visuals) -> [f32; 4] {
        view::BACKDROP.to_normalized_gamma_f32()
    }
}

/// `duet caller`/`callee`/`call` with a window: calls at once with `config`,
/// then lets the person hang up, call again, change devices, server and room.
/// With `report_to`, the report of `docs/cli.md` is written there whenever a
/// call ends.
pub fn run_call_window(
    runtime: &tokio::runtime::Runtime,
    config: CallConfig,
    close_after: Option<Duration>,
    report_to: Option<PathBuf>,
) -> anyhow::Result<WindowOutcome> {
    let outcome = Arc::new(Mutex::new(WindowOutcome::default()));
    let title = format!("Duet — room {}", config.room);
    run_window(runtime, &title, [960.0, 720.0], {
        let outcome = Arc::clone(&outcome);
        let handle = runtime.handle().clone();
        move |ctx, interrupted| {
            let devices = DeviceCatalog::load(ctx.clone());
            let form = form_for(&config);
            let gpu = GpuPictures::default();
            let mut end = CallEnd::new(handle, ctx, config, gpu.clone(), "call");
            if let Some(path) = report_to {
                end.write_report_to(path);
            }
            end.start();
            Box::new(CallWindow {
                end,
                form,
                devices,
                choices: ViewChoices::default(),
                interrupted,
                outcome,
                close_after,
                gpu,
                chat_draft: String::new(),
            })
        }
    })?;
    Ok(take(&outcome))
}

fn take(outcome: &Mutex<WindowOutcome>) -> WindowOutcome {
    outcome
        .lock()
        .map(|mut outcome| std::mem::take(&mut *outcome))
        .unwrap_or_default()
}
