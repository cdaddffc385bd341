//! Sharing a screen (`--video screen`, `screen:N`): read from X11
//! (`screen_x11.rs`) or, in a Wayland session, through the desktop portal
//! (`screen_portal.rs`, which asks the person which screen). Either way the
//! picture is scaled to at most [`MAX_SCREEN_WIDTH`] wide and paced at a
//! screen's rate: text wants sharp pixels more than motion, so 5–15
//! pictures a second ([`screen_fps`]).

use std::sync::atomic::AtomicBool;

use crate::MediaError;
use crate::frame::VideoFrame;
pub use crate::screen_picture::{MAX_SCREEN_WIDTH, SCREEN_FPS, screen_fps, sent_size};
#[cfg(feature = "wayland-portal")]
use crate::screen_portal::PortalFailure;
#[cfg(feature = "wayland-portal")]
pub use crate::screen_portal::PortalScreen;
pub use crate::screen_x11::X11Screen;

/// Where a screen is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScreenBackend {
    /// The X display of this name (`:0`).
    X11(String),
    /// The desktop portal of a Wayland session; where it cannot share at all
    /// (none installed, no screen-cast backend), the X display of XWayland,
    /// if there is one, is read instead.
    #[cfg(feature = "wayland-portal")]
    Portal {
        /// `DISPLAY`, if set.
        x_fallback: Option<String>,
    },
}

/// Where a screen would be read from, given `DISPLAY` and `WAYLAND_DISPLAY`;
/// a one-line reason where there is nothing Duet can read.
pub fn screen_backend(
    display: Option<&str>,
    wayland: Option<&str>,
) -> Result<ScreenBackend, MediaError> {
    let display = display.filter(|d| !d.is_empty()).map(str::to_owned);
    let wayland = wayland.is_some_and(|w| !w.is_empty());
    match (display, wayland) {
        #[cfg(feature = "wayland-portal")]
        (x_fallback, true) => Ok(ScreenBackend::Portal { x_fallback }),
        (Some(display), _) => Ok(ScreenBackend::X11(display)),
        #[cfg(not(feature = "wayland-portal"))]
        (None, true) => Err(MediaError::NoScreen(
            "this is a Wayland session, and this build of Duet has no desktop portal support \
             (built without the `wayland-portal` feature)"
                .into(),
        )),
        (None, _) => Err(MediaError::NoScreen(
            "no screen to share (neither DISPLAY nor WAYLAND_DISPLAY is set)".into(),
        )),
    }
}

/// [`screen_backend`] of this process's environment.
pub fn this_sessions_screen() -> Result<ScreenBackend, MediaError> {
    screen_backend(
        std::env::var("DISPLAY").ok().as_deref(),
        std::env::var("WAYLAND_DISPLAY").ok().as_deref(),
    )
}

/// An open screen delivering I420 pictures at a steady rate.
#[derive(Debug)]
pub enum ScreenSource {
    /// Read from an X display.
    X11(Box<X11Screen>),
    /// Streamed by the desktop portal.
    #[cfg(feature = "wayland-portal")]
    Portal(PortalScreen),
}

impl ScreenSource {
    /// Opens the screen of this session ([`this_sessions_screen`]): the
    /// whole screen (`monitor` `None`) or monitor `monitor` on X11; on
    /// Wayland the portal asks the person which one. Captured at `fps` (see
    /// [`screen_fps`]).
    pub fn open(monitor: Option<u32>, fps: u32) -> Result<ScreenSource, MediaError> {
        ScreenSource::open_unless(monitor, fps, &AtomicBool::new(false))
    }

    /// [`ScreenSource::open`], given up as soon as `cancelled` is set: the
    /// portal's dialog may wait for the person for minutes.
    pub fn open_unless(
        monitor: Option<u32>,
        fps: u32,
        cancelled: &AtomicBool,
    ) -> Result<ScreenSource, MediaError> {
        #[cfg(not(feature = "wayland-portal"))]
        let _ = cancelled;
        match this_sessions_screen()? {
            ScreenBackend::X11(display) => {
                X11Screen::open(&display, monitor, fps).map(|x| ScreenSource::X11(Box::new(x)))
            }
            #[cfg(feature = "wayland-portal")]
            ScreenBackend::Portal { x_fallback } => {
                match PortalScreen::open(monitor, fps, cancelled) {
                    Ok(screen) => Ok(ScreenSource::Portal(screen)),
                    Err(PortalFailure::Unavailable(why)) if x_fallback.is_some() => {
                        let x_display = x_fallback.unwrap_or_default();
                        tracing::warn!(
                            %why,
                            %x_display,
                            "no desktop portal to share the screen; reading XWayland's screen, \
                             which shows only X11 windows"
                        );
                        X11Screen::open(&x_display, monitor, fps)
                            .map(|x| ScreenSource::X11(Box::new(x)))
                    }
                    Err(failure) => Err(failure.into()),
                }
            }
        }
    }

    /// Waits until the next picture is due and returns it.
    pub fn next_frame(&mut self) -> Result<VideoFrame, MediaError> {
        match self {
            ScreenSource::X11(screen) => screen.next_frame(),
            #[cfg(feature = "wayland-portal")]
            ScreenSource::Portal(screen) => screen.next_frame(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_screen_is_read_from_x11_or_through_the_portal_and_else_one_clear_line() {
        assert_eq!(
            screen_backend(Some(":3"), None).ok(),
            Some(ScreenBackend::X11(":3".into()))
        );
        let none = screen_backend(Some(""), Some(""))
            .expect_err("no display")
            .to_string();
        assert_eq!(
            none,
            "cannot share a screen: no screen to share (neither DISPLAY nor WAYLAND_DISPLAY is set)"
        );
        #[cfg(feature = "wayland-portal")]
        {
            assert_eq!(
                screen_backend(Some(":0"), Some("wayland-0")).ok(),
                Some(ScreenBackend::Portal {
                    x_fallback: Some(":0".into())
                }),
                "XWayland is the fallback where the portal cannot share"
            );
            assert_eq!(
                screen_backend(None, Some("wayland-1")).ok(),
                Some(ScreenBackend::Portal { x_fallback: None })
            );
        }
        #[cfg(not(feature = "wayland-portal"))]
        {
            assert_eq!(
                screen_backend(Some(":0"), Some("wayland-0")).ok(),
                Some(ScreenBackend::X11(":0".into()))
            );
            let wayland = screen_backend(None, Some("wayland-0"))
                .expect_err("wayland")
                .to_string();
            assert!(wayland.contains("portal"), "{wayland}");
            assert!(!wayland.contains('\n'));
        }
    }
}
