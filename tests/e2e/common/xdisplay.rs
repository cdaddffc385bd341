//! An Xvfb display of a test's own, and a window on it that shows the
//! stamped test pattern (`docs/test-signals.md`) live: something on a screen
//! whose every picture says when it was drawn, for screen-sharing tests.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::screen::{PatternPainter, png_luma};
use x11rb::connection::Connection as _;
use x11rb::protocol::xproto::{
    ConnectionExt as _, CreateGCAux, CreateWindowAux, ImageFormat, WindowClass,
};
use x11rb::wrapper::ConnectionExt as _;

/// An Xvfb display, stopped when dropped.
pub struct VirtualDisplay {
    server: Child,
    /// `:N`.
    pub name: String,
}

impl VirtualDisplay {
    /// A new display of `width`x`height` on a free number.
    pub fn start(width: u32, height: u32) -> VirtualDisplay {
        for number in (700 + std::process::id() % 500..).take(50) {
            let name = format!(":{number}");
            let socket = format!("/tmp/.X11-unix/X{number}");
            if Path::new(&socket).exists() {
                continue;
            }
            let mut server = Command::new("Xvfb")
                .args([
                    &name,
                    "-screen",
                    "0",
                    &format!("{width}x{height}x24"),
                    "-nolisten",
                    "tcp",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("Xvfb runs (./scripts/install-deps.sh installs it)");
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if Path::new(&socket).exists() {
                    return VirtualDisplay { server, name };
                }
                if server.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = server.kill();
            let _ = server.wait();
        }
        panic!("no free X display for Xvfb");
    }

    /// The whole screen, as luma (BT.601 from the RGB pixels), width and height.
    pub fn screenshot(&self, save_to: &Path) -> (Vec<u8>, usize, usize) {
        let output = Command::new("import")
            .args(["-display", &self.name, "-window", "root", "png:-"])
            .output()
            .expect("ImageMagick's import runs");
        assert!(
            output.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(save_to, &output.stdout).unwrap();
        png_luma(&output.stdout)
    }

    /// Does what a window manager does for the close button: sends
    /// WM_DELETE_WINDOW to every top-level window whose title contains `title`.
    /// Returns the connection, to be kept open until the app is gone, as a
    /// window manager's is: a sender that disconnected at once left Mesa's
    /// software renderer in the app waiting forever in its next buffer swap
    /// (Xvfb; 6 runs in 8), which no real desktop does.
    pub fn close_window(&self, title: &str) -> x11rb::rust_connection::RustConnection {
        use x11rb::connection::Connection as _;
        use x11rb::protocol::xproto::{
            AtomEnum, ClientMessageEvent, ConnectionExt as _, EventMask,
        };
        let (conn, screen) = x11rb::connect(Some(&self.name)).expect("connect to Xvfb");
        let root = conn.setup().roots[screen].root;
        let atom = |name: &[u8]| conn.intern_atom(false, name).unwrap().reply().unwrap().atom;
        let (protocols, delete) = (atom(b"WM_PROTOCOLS"), atom(b"WM_DELETE_WINDOW"));
        let (net_name, utf8) = (atom(b"_NET_WM_NAME"), atom(b"UTF8_STRING"));
        let mut closed = 0;
        for window in conn.query_tree(root).unwrap().reply().unwrap().children {
            let name = conn
                .get_property(false, window, net_name, utf8, 0, 1024)
                .unwrap()
                .reply()
                .unwrap()
                .value;
            let name = if name.is_empty() {
                conn.get_property(false, window, AtomEnum::WM_NAME, AtomEnum::ANY, 0, 1024)
                    .unwrap()
                    .reply()
                    .unwrap()
                    .value
            } else {
                name
            };
            if String::from_utf8_lossy(&name).contains(title) {
                let event = ClientMessageEvent::new(32, window, protocols, [delete, 0, 0, 0, 0]);
                conn.send_event(false, window, EventMask::NO_EVENT, event)
                    .unwrap();
                closed += 1;
            }
        }
        conn.flush().unwrap();
        assert!(closed > 0, "no window titled {title:?}");
        conn
    }
}

impl Drop for VirtualDisplay {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A window at the top left of a display, as wide as `width`, showing the
/// stamped test pattern redrawn `fps` times a second; closed when dropped.
pub struct PatternWindow {
    _painter: PatternPainter,
}

impl PatternWindow {
    pub fn show(display: &str, width: u32, height: u32, fps: u32) -> PatternWindow {
        let (conn, screen) = x11rb::connect(Some(display)).expect("the display answers");
        let screen = &conn.setup().roots[screen];
        let (root, depth) = (screen.root, screen.root_depth);
        let window = conn.generate_id().unwrap();
        conn.create_window(
            depth,
            window,
            root,
            0,
            0,
            width as u16,
            height as u16,
            0,
            WindowClass::INPUT_OUTPUT,
            0,
            &CreateWindowAux::new().override_redirect(1),
        )
        .unwrap();
        let gc = conn.generate_id().unwrap();
        conn.create_gc(gc, window, &CreateGCAux::new()).unwrap();
        conn.map_window(window).unwrap();
        conn.sync().unwrap();
        // Bands small enough for one request without BIG-REQUESTS.
        let rows_per_put = (200_000 / (width as usize * 4)).max(1);
        let painter = PatternPainter::start(width, height, fps, move |bgrx| {
            for (band, rows) in bgrx.chunks(rows_per_put * width as usize * 4).enumerate() {
                let band_height = rows.len() / (width as usize * 4);
                conn.put_image(
                    ImageFormat::Z_PIXMAP,
                    window,
                    gc,
                    width as u16,
                    band_height as u16,
                    0,
                    (band * rows_per_put) as i16,
                    0,
                    depth,
                    rows,
                )
                .unwrap();
            }
            conn.sync().is_ok()
        });
        PatternWindow { _painter: painter }
    }
}
