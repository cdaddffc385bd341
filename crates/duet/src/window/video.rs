//! Pictures for the window. A [`VideoFeed`] thread sleeps on a call's
//! [`FrameSlot`], converts each new picture to RGBA (off the UI thread) and
//! asks the window to repaint; the UI thread only uploads the finished image.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use duet_call::FrameSlot;
use eframe::egui;

/// A converted picture waiting to be uploaded, with the slot version it came from.
type Converted = Option<(egui::ColorImage, u64)>;

/// One video stream on its way to the screen.
pub struct VideoFeed {
    name: &'static str,
    converted: Arc<Mutex<Converted>>,
    texture: Option<(egui::TextureHandle, u64)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for VideoFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoFeed")
            .field("name", &self.name)
            .field(
                "version",
                &self.texture.as_ref().map(|(_, version)| version),
            )
            .finish_non_exhaustive()
    }
}

impl VideoFeed {
    /// Starts converting the pictures of `slot`; `ctx` is asked to repaint for
    /// each one within `repaint_within` (zero: at once). A lenient deadline lets
    /// a self-view ride on the repaints the remote picture causes anyway,
    /// instead of doubling the frame rate of the window.
    pub fn start(
        name: &'static str,
        slot: FrameSlot,
        ctx: egui::Context,
        repaint_within: Duration,
    ) -> VideoFeed {
        let converted: Arc<Mutex<Converted>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name(format!("duet-{name}-view"))
            .spawn({
                let (converted, stop) = (Arc::clone(&converted), Arc::clone(&stop));
                move || {
                    let mut seen = 0;
                    let mut rgba = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let Some((frame, version)) =
                            slot.wait_newer(seen, Duration::from_millis(100))
                        else {
                            continue;
                        };
                        seen = version;
                        if let Err(err) = frame.to_rgba_into(&mut rgba) {
                            tracing::warn!(%err, "cannot convert a picture for display");
                            continue;
                        }
                        let size = [frame.width() as usize, frame.height() as usize];
                        let image = egui::ColorImage::from_rgba_unmultiplied(size, &rgba);
                        if let Ok(mut converted) = converted.lock() {
                            *converted = Some((image, version));
                        }
                        ctx.request_repaint_after(repaint_within);
                    }
                }
            })
            .map_err(|err| tracing::warn!(%err, "cannot start the {name} video thread"))
            .ok();
        VideoFeed {
            name,
            converted,
            texture: None,
            stop,
            thread,
        }
    }

    /// The newest picture as a texture, uploading it first if it is new.
    pub fn texture(&mut self, ctx: &egui::Context) -> Option<&egui::TextureHandle> {
        let fresh = self.converted.lock().ok().and_then(|mut c| c.take());
        if let Some((image, version)) = fresh {
            match &mut self.texture {
                Some((texture, seen)) => {
                    texture.set(image, egui::TextureOptions::LINEAR);
                    *seen = version;
                }
                None => {
                    let texture = ctx.load_texture(self.name, image, egui::TextureOptions::LINEAR);
                    self.texture = Some((texture, version));
                }
            }
        }
        self.texture.as_ref().map(|(texture, _)| texture)
    }
}

impl Drop for VideoFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
