//! Screen capture on X11: the root window of an X display read with
//! `GetImage` (about 2 ms for 1280x720 under Xvfb), the whole screen or one
//! of its monitors (RandR). The pointer, which `GetImage` leaves out, is
//! drawn in (`screen_cursor.rs`).

use std::time::{Duration, Instant, SystemTime};

use x11rb::connection::Connection;
use x11rb::protocol::randr::ConnectionExt as _;
use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat, Window};
use x11rb::rust_connection::RustConnection;

use crate::MediaError;
use crate::frame::VideoFrame;
use crate::screen_cursor::{PointerReader, draw_pointer};
use crate::screen_picture::{scale_bgrx, screen_fps, sent_size};
use crate::test_video::FramePacer;

/// A part of the root window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Area {
    x: i16,
    y: i16,
    width: u16,
    height: u16,
}

/// An open X11 screen delivering I420 pictures at a steady rate.
pub struct X11Screen {
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

impl std::fmt::Debug for X11Screen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X11Screen")
            .field("monitor", &self.monitor)
            .field("area", &self.area)
            .finish_non_exhaustive()
    }
}

fn x_error(what: &str, err: impl std::fmt::Display) -> MediaError {
    MediaError::NoScreen(format!("{what}: {err}"))
}

impl X11Screen {
    /// Opens the X display `display_name` (`:0`): its whole screen
    /// (`monitor` `None`) or RandR monitor `monitor`, captured at `fps` (see
    /// [`screen_fps`]).
    pub fn open(
        display_name: &str,
        monitor: Option<u32>,
        fps: u32,
    ) -> Result<X11Screen, MediaError> {
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
        let mut source = X11Screen {
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
