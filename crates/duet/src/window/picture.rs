//! The window's pictures on the GPU, drawn through egui paint callbacks
//! (`egui_glow`): each picture keeps one texture ([`yuv_gl`]),
//! refilled only when its [`FrameSlot`](duet_call::FrameSlot) version changes.
//!
//! It is also where the window measures what a person sees: when a remote
//! picture is uploaded to be shown for the first time, its stamp is read
//! (`docs/test-signals.md`), and once the frame that shows it has been drawn,
//! its latency is recorded as `video.display_latency_ms`. eframe 0.37 has no
//! hook after its buffer swap, so the time is taken by the last paint callback
//! of the frame, right after `glFinish`: the picture is then in the back buffer
//! and only the swap is left (a copy to the X server with Mesa's software
//! renderer, about a millisecond for a 960x720 window; a buffer flip on a GPU).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use duet_call::CallHandle;
use duet_media::frame::unix_ms;
use duet_media::{StampReader, VideoFrame, stamp};
use eframe::egui::{self, Vec2};
use eframe::egui_glow::CallbackFn;
use eframe::glow::{self, HasContext as _};

use super::yuv_gl::{PictureTexture, YuvProgram, step_for};

/// One picture as the view draws it: its size in pixels (for the layout) and
/// the paint callback that draws it into whatever rectangle the view picks.
/// Without OpenGL (a test harness) the callback never runs and the place
/// stays the colour of the panel behind it.
#[derive(Clone)]
pub struct Picture {
    /// Width and height of the picture in pixels.
    pub size: Vec2,
    /// Draws the picture (`egui_glow` callback).
    pub paint: Arc<CallbackFn>,
}

impl std::fmt::Debug for Picture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picture")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Picture {
    /// The shape that draws the picture in `rect`.
    pub fn shape(&self, rect: egui::Rect) -> egui::Shape {
        egui::Shape::Callback(egui::PaintCallback {
            rect,
            callback: Arc::clone(&self.paint) as _,
        })
    }
}

/// The GL objects of one window and what the paint callbacks pass on. Cheap
/// to clone: every clone shares the same state.
#[derive(Debug, Clone, Default)]
pub struct GpuPictures {
    state: Arc<Mutex<GpuState>>,
}

#[derive(Debug, Default)]
enum ProgramState {
    #[default]
    NotYet,
    Ready(YuvProgram),
    /// The shader did not build: pictures are not drawn (said once in the log).
    Failed,
}

#[derive(Debug, Default)]
struct GpuState {
    program: ProgramState,
    /// Per picture: its texture, and the slot version and step it holds.
    pictures: HashMap<egui::Id, (PictureTexture, (u64, usize))>,
    /// Stamps of remote pictures shown for the first time in the frame being
    /// drawn, with the call to record their latency in.
    shown: Vec<(u32, CallHandle)>,
}

impl GpuPictures {
    /// The picture `frame` (slot version `version`) under `id`, mirrored or
    /// not. With `latency_to`, the picture's stamp is read the first time it
    /// is shown and its display latency recorded there.
    pub fn picture(
        &self,
        id: egui::Id,
        frame: Arc<VideoFrame>,
        version: u64,
        mirrored: bool,
        latency_to: Option<CallHandle>,
    ) -> Picture {
        let size = Vec2::new(frame.width() as f32, frame.height() as f32);
        let state = Arc::clone(&self.state);
        let paint = CallbackFn::new(move |info, painter| {
            let gl = painter.gl();
            let Ok(mut state) = state.lock() else { return };
            let state = &mut *state;
            let Some(program) = built(&mut state.program, gl) else {
                return;
            };
            let (texture, uploaded) = match state.pictures.entry(id) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => match PictureTexture::new(gl) {
                    Ok(texture) => entry.insert((texture, (0, 0))),
                    Err(err) => {
                        tracing::warn!(%err, "cannot make the texture of a picture");
                        return;
                    }
                },
            };
            let drawn_width = info.viewport_in_pixels().width_px.max(0) as u32;
            let step = step_for(frame.width(), drawn_width);
            if *uploaded != (version, step) || !texture.filled() {
                let first_shown = uploaded.0 != version;
                texture.upload(gl, program, &frame, step);
                *uploaded = (version, step);
                if first_shown
                    && let Some(handle) = &latency_to
                    && let Some(stamp) = StampReader::read(&frame)
                {
                    state.shown.push((stamp, handle.clone()));
                }
            }
            program.draw(gl, texture, mirrored);
        });
        Picture {
            size,
            paint: Arc::new(paint),
        }
    }

    /// Adds the frame's last paint callback, which records the display latency
    /// of the remote pictures first shown in this frame. Call once per frame.
    pub fn finish_frame(&self, ctx: &egui::Context) {
        let state = Arc::clone(&self.state);
        let finish = CallbackFn::new(move |_info, painter| {
            let Ok(mut state) = state.lock() else { return };
            if state.shown.is_empty() {
                return;
            }
            // Wait until the frame is drawn: with a software renderer the
            // drawing happens here, not when the commands were issued.
            gl_finish(painter.gl());
            let now_ms = unix_ms(SystemTime::now());
            for (stamp, handle) in state.shown.drain(..) {
                // Only a live test stamp is a latency (docs/test-signals.md).
                if let Some(ms) = stamp::live_latency_ms(stamp, now_ms) {
                    handle.record_display_latency(ms);
                }
            }
        });
        let layer = egui::LayerId::new(egui::Order::Debug, egui::Id::unique("duet-frame-drawn"));
        ctx.layer_painter(layer).add(egui::PaintCallback {
            rect: egui::Rect::from_min_size(egui::Pos2::ZERO, Vec2::splat(1.0)),
            callback: Arc::new(finish),
        });
    }

    /// Frees every GL object (when the window closes).
    pub fn destroy(&self, gl: &glow::Context) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        for (_, (texture, _)) in state.pictures.drain() {
            texture.destroy(gl);
        }
        if let ProgramState::Ready(program) = std::mem::take(&mut state.program) {
            program.destroy(gl);
        }
        state.shown.clear();
    }
}

/// The shader program, built on first use.
fn built<'a>(program: &'a mut ProgramState, gl: &glow::Context) -> Option<&'a YuvProgram> {
    if matches!(program, ProgramState::NotYet) {
        *program = match YuvProgram::new(gl) {
            Ok(program) => ProgramState::Ready(program),
            Err(err) => {
                tracing::error!(%err, "pictures cannot be drawn");
                ProgramState::Failed
            }
        };
    }
    match program {
        ProgramState::Ready(program) => Some(program),
        _ => None,
    }
}

/// `glFinish`: returns when everything drawn so far is in the framebuffer.
#[allow(unsafe_code)]
fn gl_finish(gl: &glow::Context) {
    // SAFETY: called from a paint callback, with the window's context current.
    unsafe { gl.finish() };
}
