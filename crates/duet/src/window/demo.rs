//! `duet demo`: both ends of a real call in one window, through a signaling
//! server embedded on a free port.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duet_call::{AudioOutput, CallConfig};
use duet_media::source::{AudioSpec, VideoSpec};
use duet_signal::RoleRequest;
use eframe::egui;

use super::call_end::CallEnd;
use super::picture::GpuPictures;
use super::view::{self, SettingsForm};
use super::{
    DeviceCatalog, HANG_UP_LIMIT, ViewChoices, WindowOutcome, closing, end_view, form_for,
    run_window, take,
};

/// `duet demo`'s window: both ends of a call through an embedded server.
struct DemoWindow {
    you: CallEnd,
    them: CallEnd,
    form: SettingsForm,
    devices: DeviceCatalog,
    you_choices: ViewChoices,
    them_choices: ViewChoices,
    server_url: String,
    interrupted: Arc<AtomicBool>,
    outcome: Arc<Mutex<WindowOutcome>>,
    gpu: GpuPictures,
}

impl eframe::App for DemoWindow {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        let now = Instant::now();
        self.you.poll(now);
        self.them.poll(now);
        if closing(&ctx, &self.interrupted) {
            self.you.hang_up_and_wait(HANG_UP_LIMIT);
            self.them.hang_up_and_wait(HANG_UP_LIMIT);
            if let Ok(mut outcome) = self.outcome.lock() {
                outcome.connected = self.you.ever_connected();
                outcome.failure = self.you.last_error().cloned();
            }
            return;
        }
        // Shortcuts act on your end.
        let mut you_actions = view::shortcuts(&ctx);
        let mut them_actions = Vec::new();
        egui::Panel::top("demo-banner")
            .resizable(false)
            .show(ui, |ui| {
                ui.add_space(4.0);
                ui.label(
                    egui::RichText::new(format!(
                        "Duet demo: a real call between two ends on this machine, through a signaling server at {}",
                        self.server_url
                    ))
                    .weak(),
                );
                ui.add_space(4.0);
            });
        if self.you_choices.settings_open {
            let devices = self.devices.lists();
            you_actions.extend(view::settings_side_panel(
                ui,
                &mut self.form,
                devices.as_ref(),
                false,
            ));
        }
        let you_view = end_view(
            &mut self.you,
            &self.you_choices,
            Some("You · caller · camera and microphone when present"),
            false,
            now,
        );
        let them_view = end_view(
            &mut self.them,
            &self.them_choices,
            Some("The other end · callee · test pattern and beeps"),
            false,
            now,
        );
        egui::CentralPanel::default()
            .frame(egui::Frame::new())
            .show(ui, |ui| {
                ui.columns(2, |columns| {
                    you_actions.extend(view::end_view(&mut columns[0], &you_view, "you"));
                    them_actions.extend(view::end_view(&mut columns[1], &them_view, "them"));
                });
            });
        for action in you_actions {
            self.you_choices
                .apply(action, &mut self.you, &mut self.form, &ctx);
        }
        self.gpu.finish_frame(&ctx);
        let mut them_form = form_for(self.them.config());
        for action in them_actions {
            self.them_choices
                .apply(action, &mut self.them, &mut them_form, &ctx);
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

/// `duet demo`: an embedded signaling server on a free port, a caller (camera
/// and microphone when present, test signals otherwise) and a callee (always
/// the test signals, so one camera is never opened twice), in one window.
pub fn run_demo(runtime: &tokio::runtime::Runtime) -> anyhow::Result<WindowOutcome> {
    let server = {
        let _guard = runtime.enter();
        let bound = duet_signal::SignalServer::bind(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            None,
            duet_signal::ServerConfig::default(),
        )?;
        bound.spawn()
    };
    let server_url = server.url().to_owned();
    tracing::info!("demo signaling server at {server_url}");
    let room = "demo";
    let mut you = CallConfig::new(&server_url, room, RoleRequest::Caller);
    you.video = VideoSpec::Camera(0);
    you.audio = AudioSpec::Mic(None);
    let mut them = CallConfig::new(&server_url, room, RoleRequest::Callee);
    them.video = VideoSpec::Test;
    them.audio = AudioSpec::Test;
    them.tone_hz = 660.0;
    // Both ends play on one machine: only yours is heard, or it would echo.
    them.audio_output = AudioOutput::HEADLESS;

    let outcome = Arc::new(Mutex::new(WindowOutcome::default()));
    let result = run_window(runtime, "Duet — demo", [1280.0, 680.0], {
        let outcome = Arc::clone(&outcome);
        let handle = runtime.handle().clone();
        move |ctx, interrupted| {
            let devices = DeviceCatalog::load(ctx.clone());
            let form = form_for(&you);
            let gpu = GpuPictures::default();
            let mut you = CallEnd::new(handle.clone(), ctx.clone(), you, gpu.clone(), "you");
            let mut them = CallEnd::new(handle, ctx, them, gpu.clone(), "them");
            them.start();
            you.start();
            Box::new(DemoWindow {
                you,
                them,
                form,
                devices,
                you_choices: ViewChoices::default(),
                them_choices: ViewChoices::default(),
                server_url,
                interrupted,
                outcome,
                gpu,
            })
        }
    });
    let stopped = runtime.block_on(async {
        tokio::time::timeout(Duration::from_millis(500), server.shutdown()).await
    });
    if let Ok(Err(err)) = stopped {
        tracing::warn!(%err, "the demo server did not stop cleanly");
    }
    result?;
    Ok(take(&outcome))
}
