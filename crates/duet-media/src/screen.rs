//! Screen capture on X11 (`--video screen`, `screen:N`): the root window of
//! `$DISPLAY` read with `GetImage` (about 2 ms for 1280x720 under Xvfb), the
//! whole screen or one of its monitors (RandR), scaled to at most
//! [`MAX_SCREEN_WIDTH`] wide and paced at a screen's rate: text wants sharp
//! pixels more than motion, so 5–15 pictures a second ([`screen_fps`]). The
//! pointer, which `GetImage` leaves out, is drawn in (`screen_cursor.rs`).
//!
//! Wayland compositors do not let a client read the screen; sharing there
//! goes through the desktop portal (PipeWire), which Duet does not speak
//! yet: opening a screen there fails with a notice that says so.

use std::time::{Duration, Instant, SystemTime};

use x11rb::connection::Connection;
use x11rb::protocol::randr::ConnectionExt as _;
use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat, Window};
use x11rb::rust_connection::RustConnection;

use crate::MediaError;
use crate::frame::VideoFrame;
use crate::screen_cursor::{PointerReader, draw_pointer};
use crate::test_video::FramePacer;

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

/// Which display a screen would be read from, from `DISPLAY` and
/// `WAYLAND_DISPLAY`; a one-line reason where there is none Duet can read.
pub fn x_display(display: Option<&str>, wayland: Option<&str>) -> Result<String, MediaError> {
    match (
        display.filter(|d| !d.is_empty()),
        wayland.filter(|w| !w.is_empty()),
    ) {
        (Some(display), _) => Ok(display.to_owned()),
        (None, Some(_)) => Err(MediaError::NoScreen(
            "this is a Wayland session: sharing a screen there needs the desktop portal, \
             which Duet does not support yet (an X11 session, or DISPLAY set for XWayland, works)"
                .into(),
        )),
        (None, None) => Err(MediaError::NoScreen(
            "no X display to share (DISPLAY is not set)".into(),
        )),
    }
}

/// A part of the root window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Area {
    x: i16,
    y: i16,
    width: u16,
    height: u16,
}

/// An open X11 screen delivering I420 pictures at a steady rate.
pub struct ScreenSource {
    connection: RustConnection,
    root: Window,
    /// `None`: the whole screen; `Some(n)`: RandR monitor `n`.
    monitor: Option<u32>,
    area: Area,
    pacer: FramePacer,
    /// The scaled BGRX picture, kept between frames.
    scaled: Vec<u8>,
    /// `GetImage` leaves the pointer out; it is drawn in from XFixes.
    pointer: PointerReader,
}

impl std::fmt::Debug for ScreenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScreenSource")
            .field("monitor", &self.monitor)
            .field("area", &self.area)
            .finish_non_exhaustive()
    }
}

fn x_error(what: &str, err: impl std::fmt::Display) -> MediaError {
    MediaError::NoScreen(format!("{what}: {err}"))
}

impl ScreenSource {
    /// Opens the screen of `$DISPLAY` (`monitor` `None`) or its RandR monitor
    /// `monitor`, captured at `fps` (see [`screen_fps`]).
    pub fn open(monitor: Option<u32>, fps: u32) -> Result<ScreenSource, MediaError> {
        let display_name = x_display(
            std::env::var("DISPLAY").ok().as_deref(),
            std::env::var("WAYLAND_DISPLAY").ok().as_deref(),
        )?;
        ScreenSource::open_on(&display_name, monitor, fps)
    }

    /// [`ScreenSource::open`] on the X display `display_name` (`:0`) rather
    /// than `$DISPLAY`'s.
    pub fn open_on(
        display_name: &str,
        monitor: Option<u32>,
        fps: u32,
    ) -> Result<ScreenSource, MediaError> {
        let (connection, screen) = x11rb::connect(Some(display_name))
            .map_err(|err| x_error(&format!("cannot open the X display {display_name}"), err))?;
        let root = connection
            .setup()
            .roots
            .get(screen)
            .map(|s| s.root)
            .ok_or_else(|| {
                MediaError::NoScreen(format!("the X display {display_name} has no screen"))
            })?;
        let area = find_area(&connection, root, monitor)?;
        let fps = screen_fps(fps);
        tracing::info!(x_display = %display_name, ?monitor, ?area, fps, "screen open");
        let pointer = PointerReader::new(&connection);
        let mut source = ScreenSource {
            connection,
            pointer,
            root,
            monitor,
            area,
            pacer: FramePacer::new(Instant::now(), Duration::from_secs(1) / fps),
            scaled: Vec::new(),
        };
        // Read once now: a display that refuses GetImage fails here, not mid-call.
        source.capture(SystemTime::now())?;
        Ok(source)
    }

    /// Waits until the next picture is due, then reads the screen.
    pub fn next_frame(&mut self) -> Result<VideoFrame, MediaError> {
        self.pacer.wait();
        let at = SystemTime::now();
        match self.capture(at) {
            Ok(frame) => Ok(frame),
            Err(err) => {
                // The screen may have changed size (a monitor unplugged, a
                // new mode): look again once before giving up.
                tracing::debug!(%err, "screen read failed; measuring the screen again");
                self.area = find_area(&self.connection, self.root, self.monitor)?;
                self.capture(at)
            }
        }
    }

    fn capture(&mut self, at: SystemTime) -> Result<VideoFrame, MediaError> {
        let Area {
            x,
            y,
            width,
            height,
        } = self.area;
        let mut reply = self
            .connection
            .get_image(ImageFormat::Z_PIXMAP, self.root, x, y, width, height, !0)
            .map_err(|err| x_error("cannot read the screen", err))?
            .reply()
            .map_err(|err| x_error("cannot read the screen", err))?;
        let (width, height) = (u32::from(width), u32::from(height));
        let stride = width as usize * 4;
        if reply.data.len() < stride * height as usize {
            return Err(MediaError::NoScreen(format!(
                "a screen of depth {} (only 24- and 32-bit screens can be shared)",
                reply.depth
            )));
        }
        if let Some(pointer) = self.pointer.read(&self.connection) {
            let screen = &mut reply.data[..stride * height as usize];
            draw_pointer(screen, width, height, (x.into(), y.into()), &pointer);
        }
        let (out_w, out_h) = sent_size(width, height);
        let bgrx: &[u8] = if (out_w, out_h) == (width, height) {
            &reply.data[..stride * height as usize]
        } else {
            scale_bgrx(&reply.data, width, height, out_w, out_h, &mut self.scaled);
            &self.scaled
        };
        VideoFrame::from_bgra(out_w, out_h, bgrx, at)
    }
}

/// The part of the root window to read: all of it, or RandR monitor `n`.
fn find_area(
    connection: &RustConnection,
    root: Window,
    monitor: Option<u32>,
) -> Result<Area, MediaError> {
    let geometry = connection
        .get_geometry(root)
        .map_err(|err| x_error("cannot measure the screen", err))?
        .reply()
        .map_err(|err| x_error("cannot measure the screen", err))?;
    let whole = Area {
        x: 0,
        y: 0,
        width: geometry.width,
        height: geometry.height,
    };
    let Some(n) = monitor else {
        return Ok(whole);
    };
    let monitors = connection
        .randr_get_monitors(root, true)
        .ok()
        .and_then(|cookie| cookie.reply().ok())
        .map(|reply| reply.monitors)
        .unwrap_or_default();
    if monitors.is_empty() && n == 0 {
        // No RandR: the one screen is monitor 0.
        return Ok(whole);
    }
    let count = monitors.len().max(1);
    let m = monitors.get(n as usize).ok_or_else(|| {
        MediaError::NoScreen(format!(
            "screen:{n}: this display has {count} screen{} (screen:0{})",
            if count == 1 { "" } else { "s" },
            if count > 1 {
                format!(" to screen:{}", count - 1)
            } else {
                String::new()
            }
        ))
    })?;
    // A monitor reaching past the root window is read as far as the root goes.
    let width = (i32::from(m.width)).min(i32::from(geometry.width) - i32::from(m.x));
    let height = (i32::from(m.height)).min(i32::from(geometry.height) - i32::from(m.y));
    if width < 2 || height < 2 {
        return Err(MediaError::NoScreen(format!(
            "screen:{n} lies outside the screen"
        )));
    }
    Ok(Area {
        x: m.x,
        y: m.y,
        width: width as u16,
        height: height as u16,
    })
}

/// Scales a BGRX picture to `out_w`x`out_h` (smaller), each output pixel the
/// average of the source pixels under it (sharp text stays legible, unlike
/// picking one pixel of each block).
fn scale_bgrx(from: &[u8], width: u32, height: u32, out_w: u32, out_h: u32, to: &mut Vec<u8>) {
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
    fn without_an_x_display_the_reason_is_one_clear_line() {
        assert_eq!(x_display(Some(":3"), None).ok().as_deref(), Some(":3"));
        assert_eq!(
            x_display(Some(":0"), Some("wayland-0")).ok().as_deref(),
            Some(":0"),
            "XWayland"
        );
        let none = x_display(None, None).expect_err("no display").to_string();
        assert_eq!(
            none,
            "cannot share a screen: no X display to share (DISPLAY is not set)"
        );
        let wayland = x_display(Some(""), Some("wayland-0"))
            .expect_err("wayland")
            .to_string();
        assert!(
            wayland.contains("Wayland") && wayland.contains("portal"),
            "{wayland}"
        );
        assert!(!wayland.contains('\n'));
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
