//! Sharing a screen (`--video screen`, `screen:N`): read from X11
//! (`screen_x11.rs`) or, in a Wayland session, through the desktop portal
//! (`screen_portal.rs`, which asks the person which screen). Either way the
//! picture is scaled to at most [`MAX_SCREEN_WIDTH`] wide and paced at a
//! screen's rate: text wants sharp pixels more than motion, so 5–15
//! pictures a second ([`screen_fps`]).

use std::sync::atomic::AtomicBool;

use crate::MediaError;
use crate::frame::VideoFrame;
#[cfg(feature = "wayland-portal")]
use crate::screen_portal::PortalFailure;
#[cfg(feature = "wayland-portal")]
pub use crate::screen_portal::PortalScreen;
pub use crate::screen_x11::X11Screen;

/// Screens wider than this are scaled down to it (height in proportion).
pub const MAX_SCREEN_WIDTH: u32 = 1920;
/// The frame rates a shared screen is sent at.
pub const SCREEN_FPS: std::ops::RangeInclusive<u32> = 5..=15;

/// The frame rate to capture a screen at when `asked` (`--fps`) was asked for.
pub fn screen_fps(asked: u32) -> u32 {
    asked.clamp(*SCREEN_FPS.start(), *SCREEN_FPS.end())
}

/// The size a screen of `width`x`height` is sent at: at most
/// [`MAX_SCREEN_WIDTH`] wide, the same shape, even on both sides (I420).
pub fn sent_size(width: u32, height: u32) -> (u32, u32) {
    let (w, h) = if width > MAX_SCREEN_WIDTH {
        let scaled = u64::from(height) * u64::from(MAX_SCREEN_WIDTH) / u64::from(width);
        (MAX_SCREEN_WIDTH, scaled as u32)
    } else {
        (width, height)
    };
    ((w & !1).max(2), (h & !1).max(2))
}

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

/// Scales a BGRX picture to `out_w`x`out_h` (smaller), each output pixel the
/// average of the source pixels under it (sharp text stays legible, unlike
/// picking one pixel of each block).
pub(crate) fn scale_bgrx(
    from: &[u8],
    width: u32,
    height: u32,
    out_w: u32,
    out_h: u32,
    to: &mut Vec<u8>,
) {
    let (width, height, out_w, out_h) = (
        width as usize,
        height as usize,
        out_w as usize,
        out_h as usize,
    );
    to.clear();
    to.resize(out_w * out_h * 4, 0);
    for oy in 0..out_h {
        let (y0, y1) = (
            oy * height / out_h,
            ((oy + 1) * height / out_h).max(oy * height / out_h + 1),
        );
        for ox in 0..out_w {
            let (x0, x1) = (
                ox * width / out_w,
                ((ox + 1) * width / out_w).max(ox * width / out_w + 1),
            );
            let mut sum = [0u32; 3];
            for row in y0..y1.min(height) {
                let line = &from[row * width * 4..];
                for col in x0..x1.min(width) {
                    for (c, total) in sum.iter_mut().enumerate() {
                        *total += u32::from(line[col * 4 + c]);
                    }
                }
            }
            let n = ((y1.min(height) - y0) * (x1.min(width) - x0)).max(1) as u32;
            let out = &mut to[(oy * out_w + ox) * 4..][..4];
            for c in 0..3 {
                out[c] = (sum[c] / n) as u8;
            }
            out[3] = 255;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screens_are_sent_at_most_1920_wide_in_their_shape_and_even() {
        assert_eq!(sent_size(1280, 800), (1280, 800));
        assert_eq!(sent_size(1920, 1080), (1920, 1080));
        assert_eq!(sent_size(2560, 1440), (1920, 1080));
        assert_eq!(sent_size(3840, 1080), (1920, 540));
        assert_eq!(sent_size(1366, 767), (1366, 766));
    }

    #[test]
    fn a_screen_is_sent_at_5_to_15_frames_a_second() {
        assert_eq!(screen_fps(30), 15);
        assert_eq!(screen_fps(10), 10);
        assert_eq!(screen_fps(1), 5);
    }

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

    #[test]
    fn scaling_averages_the_pixels_under_each_output_pixel() {
        // 4x2 BGRX: a white and a black column pair, scaled to 2x1.
        let white = [255, 255, 255, 0];
        let black = [0, 0, 0, 0];
        let row: Vec<u8> = [white, black, white, white].concat();
        let from = [row.clone(), row].concat();
        let mut to = Vec::new();
        scale_bgrx(&from, 4, 2, 2, 1, &mut to);
        assert_eq!(to, [127, 127, 127, 255, 255, 255, 255, 255]);
    }
}
