//! Pictures for the window. A [`VideoFeed`] thread sleeps on a call's
//! [`FrameSlot`] and only asks the window to repaint when a new picture
//! arrives; the UI thread then takes the picture by reference (no copy, no
//! conversion) and hands it to the GPU ([`super::picture`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use duet_call::FrameSlot;
use duet_media::VideoFrame;
use eframe::egui;

/// How soon a new picture is painted. Not zero: egui answers a request for
/// an immediate repaint with two frames ("to give some things time to
/// settle"), which doubled the frames drawn per picture (60 a second for a
/// 30 fps call, counted by the buffer swaps); a delayed request gets one.
const SOON: Duration = Duration::from_millis(1);

/// One video stream on its way to the screen.
pub struct VideoFeed {
    name: &'static str,
    slot: FrameSlot,
    /// The picture shown last, with its slot version.
    newest: Option<(Arc<VideoFrame>, u64)>,
    /// The slot version the UI took last, for the thread.
    taken: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for VideoFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoFeed")
            .field("name", &self.name)
            .field("version", &self.newest.as_ref().map(|(_, version)| version))
            .finish_non_exhaustive()
    }
}

impl VideoFeed {
    /// Watches `slot`; `ctx` is asked to repaint for each new picture within
    /// `repaint_within` (zero: at once). With a deadline, the thread asks only
    /// if no repaint took the picture by then: a self-view rides on the
    /// repaints the remote picture causes anyway, instead of doubling the
    /// frame rate of the window (a repaint asked for later is not cancelled
    /// by an earlier one in eframe).
    pub fn start(
        name: &'static str,
        slot: FrameSlot,
        ctx: egui::Context,
        repaint_within: Duration,
    ) -> VideoFeed {
        let stop = Arc::new(AtomicBool::new(false));
        let taken = Arc::new(AtomicU64::new(0));
        let thread = std::thread::Builder::new()
            .name(format!("duet-{name}-view"))
            .spawn({
                let (slot, stop, taken) = (slot.clone(), Arc::clone(&stop), Arc::clone(&taken));
                move || {
                    let mut seen = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let Some((_, version)) = slot.wait_newer(seen, Duration::from_millis(100))
                        else {
                            continue;
                        };
                        seen = version;
                        if !repaint_within.is_zero() {
                            std::thread::sleep(repaint_within);
                            if taken.load(Ordering::Relaxed) >= version {
                                continue;
                            }
                        }
                        ctx.request_repaint_after(SOON);
                    }
                }
            })
            .map_err(|err| tracing::warn!(%err, "cannot start the {name} video thread"))
            .ok();
        VideoFeed {
            name,
            slot,
            newest: None,
            taken,
            stop,
            thread,
        }
    }

    /// The newest picture and its slot version (which changes with every new
    /// picture), without waiting and without copying it.
    pub fn newest(&mut self) -> Option<(Arc<VideoFrame>, u64)> {
        let seen = self.newest.as_ref().map_or(0, |(_, version)| *version);
        if let Some(fresh) = self.slot.wait_newer(seen, Duration::ZERO) {
            self.taken.store(fresh.1, Ordering::Relaxed);
            self.newest = Some(fresh);
        }
        self.newest.clone()
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn the_newest_picture_is_shared_not_copied_and_its_version_moves() {
        let slot = FrameSlot::default();
        let mut feed = VideoFeed::start(
            "test",
            slot.clone(),
            egui::Context::default(),
            Duration::ZERO,
        );
        assert!(feed.newest().is_none());
        let frame = Arc::new(VideoFrame::black(64, 48, SystemTime::now()).unwrap());
        slot.put(Arc::clone(&frame));
        let (first, version) = feed.newest().unwrap();
        assert!(Arc::ptr_eq(&first, &frame));
        assert_eq!(
            feed.newest().unwrap().1,
            version,
            "no new picture, same version"
        );
        slot.put(VideoFrame::black(32, 24, SystemTime::now()).unwrap());
        let (second, newer) = feed.newest().unwrap();
        assert!(newer > version);
        assert_eq!(second.width(), 32);
    }

    /// A context that counts the repaints asked of it.
    fn counting_repaints() -> (egui::Context, Arc<std::sync::atomic::AtomicUsize>) {
        let ctx = egui::Context::default();
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        ctx.set_request_repaint_callback({
            let asked = Arc::clone(&asked);
            move |_| {
                asked.fetch_add(1, Ordering::Relaxed);
            }
        });
        (ctx, asked)
    }

    #[test]
    fn a_new_picture_asks_for_a_repaint() {
        let slot = FrameSlot::default();
        let (ctx, asked) = counting_repaints();
        let _feed = VideoFeed::start("test", slot.clone(), ctx, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(asked.load(Ordering::Relaxed), 0, "nothing new, no repaint");
        slot.put(VideoFrame::black(64, 48, SystemTime::now()).unwrap());
        let waited = std::time::Instant::now();
        while asked.load(Ordering::Relaxed) == 0 && waited.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(asked.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn a_self_view_picture_taken_by_another_repaint_asks_for_none() {
        let slot = FrameSlot::default();
        let (ctx, asked) = counting_repaints();
        let deadline = Duration::from_millis(300);
        let mut feed = VideoFeed::start("test", slot.clone(), ctx, deadline);
        slot.put(VideoFrame::black(64, 48, SystemTime::now()).unwrap());
        // A repaint for the remote picture draws the self-view too.
        assert!(feed.newest().is_some());
        std::thread::sleep(deadline * 2);
        assert_eq!(asked.load(Ordering::Relaxed), 0, "already drawn");
        // Alone, the self-view still gets its repaint after the deadline.
        slot.put(VideoFrame::black(64, 48, SystemTime::now()).unwrap());
        std::thread::sleep(deadline * 2);
        assert_eq!(asked.load(Ordering::Relaxed), 1);
    }
}
