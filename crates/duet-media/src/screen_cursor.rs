//! The pointer in a shared screen.
//!
//! X11's `GetImage` reads the screen without the pointer: the X server draws
//! it in hardware or in its own layer. A person showing their screen points
//! at things, so Duet asks the XFixes extension for the pointer's picture and
//! place with every frame (one small round trip) and draws it in, as a
//! browser's `getDisplayMedia` does.

use x11rb::connection::RequestConnection as _;
use x11rb::protocol::xfixes::{self, ConnectionExt as _};
use x11rb::rust_connection::RustConnection;

/// The pointer as XFixes shows it: premultiplied ARGB pixels, with its top
/// left corner at (`left`, `top`) of the root window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pointer {
    pub left: i32,
    pub top: i32,
    pub width: u32,
    pub height: u32,
    /// Row by row, `0xAARRGGBB`, colours already multiplied by alpha.
    pub pixels: Vec<u32>,
}

/// Reads the pointer of one X connection, where the server has XFixes.
#[derive(Debug)]
pub(crate) struct PointerReader {
    available: bool,
}

impl PointerReader {
    /// Asks for XFixes once; a server without it shares screens without the pointer.
    pub(crate) fn new(connection: &RustConnection) -> PointerReader {
        let available = connection
            .extension_information(xfixes::X11_EXTENSION_NAME)
            .ok()
            .flatten()
            .is_some()
            && connection
                .xfixes_query_version(4, 0)
                .ok()
                .and_then(|cookie| cookie.reply().ok())
                .is_some();
        if !available {
            tracing::info!("this X server has no XFixes: the shared screen shows no pointer");
        }
        PointerReader { available }
    }

    /// The pointer now, or `None` where it cannot be read (no XFixes, a
    /// failed request: the frame is sent without it).
    pub(crate) fn read(&self, connection: &RustConnection) -> Option<Pointer> {
        if !self.available {
            return None;
        }
        let reply = connection.xfixes_get_cursor_image().ok()?.reply().ok()?;
        let (width, height) = (u32::from(reply.width), u32::from(reply.height));
        if reply.cursor_image.len() < (width * height) as usize {
            return None;
        }
        Some(Pointer {
            left: i32::from(reply.x) - i32::from(reply.xhot),
            top: i32::from(reply.y) - i32::from(reply.yhot),
            width,
            height,
            pixels: reply.cursor_image,
        })
    }
}

/// Draws `pointer` over a BGRX picture of `width`x`height` pixels whose top
/// left corner is at (`origin_x`, `origin_y`) of the root window (a monitor's
/// place); the parts of the pointer outside the picture are left out.
pub(crate) fn draw_pointer(
    bgrx: &mut [u8],
    width: u32,
    height: u32,
    (origin_x, origin_y): (i32, i32),
    pointer: &Pointer,
) {
    let stride = width as usize * 4;
    if bgrx.len() < stride * height as usize {
        return;
    }
    for row in 0..pointer.height {
        let y = pointer.top + row as i32 - origin_y;
        if y < 0 || y >= height as i32 {
            continue;
        }
        for column in 0..pointer.width {
            let x = pointer.left + column as i32 - origin_x;
            if x < 0 || x >= width as i32 {
                continue;
            }
            let argb = pointer.pixels[(row * pointer.width + column) as usize];
            let alpha = argb >> 24;
            if alpha == 0 {
                continue;
            }
            let at = y as usize * stride + x as usize * 4;
            // Premultiplied: out = pointer + screen * (1 - alpha).
            for (channel, shift) in [(0, 0), (1, 8), (2, 16)] {
                let over = (argb >> shift) & 0xff;
                let under = u32::from(bgrx[at + channel]);
                bgrx[at + channel] = (over + under * (255 - alpha) / 255).min(255) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2x2 pointer: opaque white, half-transparent red (premultiplied),
    /// fully transparent, opaque black.
    fn pointer(left: i32, top: i32) -> Pointer {
        Pointer {
            left,
            top,
            width: 2,
            height: 2,
            pixels: vec![0xffff_ffff, 0x8080_0000, 0x0000_0000, 0xff00_0000],
        }
    }

    fn pixel(bgrx: &[u8], width: u32, x: u32, y: u32) -> [u8; 3] {
        let at = ((y * width + x) * 4) as usize;
        [bgrx[at], bgrx[at + 1], bgrx[at + 2]]
    }

    #[test]
    fn the_pointer_is_blended_over_the_screen_at_its_place() {
        let (width, height) = (4, 3);
        // A mid-grey screen.
        let mut bgrx = vec![100u8; (width * height * 4) as usize];
        draw_pointer(&mut bgrx, width, height, (0, 0), &pointer(1, 1));
        assert_eq!(pixel(&bgrx, width, 1, 1), [255, 255, 255]);
        // Red at half: 0x80 + 100 * 127 / 255 in red, 100 * 127 / 255 in blue and green.
        assert_eq!(pixel(&bgrx, width, 2, 1), [49, 49, 128 + 49]);
        assert_eq!(pixel(&bgrx, width, 1, 2), [100, 100, 100], "transparent");
        assert_eq!(pixel(&bgrx, width, 2, 2), [0, 0, 0]);
        assert_eq!(pixel(&bgrx, width, 0, 0), [100, 100, 100], "untouched");
    }

    #[test]
    fn a_pointer_at_the_edge_or_on_another_monitor_is_clipped() {
        let (width, height) = (4, 3);
        let mut bgrx = vec![100u8; (width * height * 4) as usize];
        // Half off the top left corner: only its last pixel lands, at (0, 0).
        draw_pointer(&mut bgrx, width, height, (0, 0), &pointer(-1, -1));
        assert_eq!(pixel(&bgrx, width, 0, 0), [0, 0, 0]);
        assert_eq!(bgrx.iter().filter(|&&b| b != 100).count(), 3);

        // A monitor whose picture starts at x = 1000: a pointer at x = 1001
        // of the root is at x = 1 of the picture; one at x = 10 is elsewhere.
        let mut monitor = vec![100u8; (width * height * 4) as usize];
        draw_pointer(&mut monitor, width, height, (1000, 0), &pointer(10, 0));
        assert!(monitor.iter().all(|&b| b == 100));
        draw_pointer(&mut monitor, width, height, (1000, 0), &pointer(1001, 0));
        assert_eq!(pixel(&monitor, width, 1, 0), [255, 255, 255]);

        // A picture shorter than its size says is left alone, not indexed past.
        let mut short = vec![100u8; 8];
        draw_pointer(&mut short, width, height, (0, 0), &pointer(0, 0));
        assert!(short.iter().all(|&b| b == 100));
    }
}
