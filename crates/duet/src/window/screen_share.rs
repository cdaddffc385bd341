//! The window's "Share screen" toggle: which video source is sent while a
//! screen is shared, and which one comes back when sharing stops or never
//! started (the desktop portal's dialog declined, say).

use duet_media::source::VideoSpec;

/// What the toggle remembers between its two states.
#[derive(Debug, Default)]
pub struct ScreenShareToggle {
    /// What was sent before the screen, to send again afterwards.
    before: Option<VideoSpec>,
}

impl ScreenShareToggle {
    /// The source to send when the toggle is pressed while `sending`.
    pub fn pressed(&mut self, sending: &VideoSpec) -> VideoSpec {
        if sending.is_screen() {
            self.before.take().unwrap_or(VideoSpec::Camera(0))
        } else {
            self.before = Some(sending.clone());
            VideoSpec::Screen(None)
        }
    }

    /// A switch to `asked` failed while `sending` was thought to be sent:
    /// what is really sent (`None`: `sending` is right).
    pub fn refused(&mut self, asked: &VideoSpec, sending: &VideoSpec) -> Option<VideoSpec> {
        if asked != sending || !asked.is_screen() {
            return None;
        }
        self.before.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharing_goes_back_to_what_was_sent_before() {
        let mut toggle = ScreenShareToggle::default();
        let file = VideoSpec::File("talk.y4m".into());
        assert_eq!(toggle.pressed(&file), VideoSpec::Screen(None));
        assert_eq!(toggle.pressed(&VideoSpec::Screen(None)), file);
        // Started on a screen (`--video screen`): back to the camera.
        assert_eq!(
            toggle.pressed(&VideoSpec::Screen(Some(1))),
            VideoSpec::Camera(0)
        );
    }

    #[test]
    fn a_share_that_never_started_leaves_the_toggle_as_it_was() {
        let mut toggle = ScreenShareToggle::default();
        let screen = toggle.pressed(&VideoSpec::Test);
        assert_eq!(toggle.refused(&screen, &screen), Some(VideoSpec::Test));
        // Only once, and only for what was asked last.
        assert_eq!(toggle.refused(&screen, &screen), None);
        let screen = toggle.pressed(&VideoSpec::Test);
        assert_eq!(toggle.refused(&screen, &VideoSpec::Camera(1)), None);
    }
}
