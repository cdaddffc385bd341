//! The newest picture for whoever draws it.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use duet_media::VideoFrame;

/// The newest picture, for whoever draws it: a slot, not a queue, so a slow
/// reader never delays the call and never sees stale frames pile up. A reader
/// on its own thread can sleep until a newer picture comes ([`FrameSlot::wait_newer`]).
#[derive(Debug, Clone, Default)]
pub struct FrameSlot {
    inner: Arc<(Mutex<SlotState>, Condvar)>,
}

#[derive(Debug, Default)]
struct SlotState {
    frame: Option<Arc<VideoFrame>>,
    version: u64,
}

impl FrameSlot {
    /// Replaces the picture and wakes the readers. The picture is shared, not
    /// copied: readers get a reference to the same planes.
    pub fn put(&self, frame: impl Into<Arc<VideoFrame>>) {
        let frame = frame.into();
        let (state, wake) = &*self.inner;
        if let Ok(mut state) = state.lock() {
            state.frame = Some(frame);
            state.version += 1;
        }
        wake.notify_all();
    }

    /// The newest picture, if any (shared, not copied).
    pub fn latest(&self) -> Option<Arc<VideoFrame>> {
        let (state, _) = &*self.inner;
        state.lock().ok().and_then(|state| state.frame.clone())
    }

    /// Increases with every new picture: cheap change detection for a UI.
    pub fn version(&self) -> u64 {
        let (state, _) = &*self.inner;
        state.lock().map(|state| state.version).unwrap_or(0)
    }

    /// Waits up to `timeout` for a picture newer than version `seen`; returns
    /// it with its version, or `None` when none came.
    pub fn wait_newer(&self, seen: u64, timeout: Duration) -> Option<(Arc<VideoFrame>, u64)> {
        let (state, wake) = &*self.inner;
        let state = state.lock().ok()?;
        let (state, _) = wake
            .wait_timeout_while(state, timeout, |state| state.version <= seen)
            .ok()?;
        if state.version <= seen {
            return None;
        }
        state.frame.clone().map(|frame| (frame, state.version))
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn a_frame_slot_keeps_only_the_newest_picture() {
        let slot = FrameSlot::default();
        assert!(slot.latest().is_none());
        let now = SystemTime::now();
        slot.put(VideoFrame::black(4, 4, now).expect("valid"));
        slot.put(VideoFrame::black(8, 8, now).expect("valid"));
        assert_eq!(slot.latest().map(|f| f.width()), Some(8));
        assert_eq!(slot.version(), 2);
    }

    #[test]
    fn a_picture_put_as_an_arc_is_shared_not_copied() {
        let slot = FrameSlot::default();
        let frame = Arc::new(VideoFrame::black(16, 16, SystemTime::now()).expect("valid"));
        slot.put(Arc::clone(&frame));
        let read = slot.latest().expect("a picture");
        assert!(Arc::ptr_eq(&frame, &read));
    }

    #[test]
    fn a_reader_waiting_on_a_frame_slot_wakes_for_a_newer_picture_only() {
        let slot = FrameSlot::default();
        assert!(slot.wait_newer(0, Duration::from_millis(5)).is_none());
        let writer = slot.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            writer.put(VideoFrame::black(16, 16, SystemTime::now()).expect("valid"));
        });
        let (frame, version) = slot
            .wait_newer(0, Duration::from_secs(5))
            .expect("woken by the new picture");
        assert_eq!((frame.width(), version), (16, 1));
        assert!(slot.wait_newer(1, Duration::from_millis(5)).is_none());
        thread.join().expect("writer");
    }
}
