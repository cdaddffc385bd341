//! A Wayland desktop for tests, as a person's would share a screen from:
//! sway (headless, software rendering), PipeWire and WirePlumber, and the
//! desktop portal (xdg-desktop-portal with its wlroots backend), each on a
//! D-Bus session bus of its own, all from Debian's packages and torn down
//! when dropped. And a surface on it that shows the stamped test pattern.
//!
//! One workaround: xdg-desktop-portal-wlr 0.7.0 (Debian 12) shares a screen
//! only if the compositor offers the capture as a DMA buffer too, which a
//! machine without a GPU never does; 0.8 dropped that check. Between it and
//! sway sits [`DmabufHintProxy`] (`wayland_hint_proxy.rs`), which adds that
//! offer to each capture's announcement. The pictures still come through
//! shared memory, exactly as without the proxy.
#![allow(dead_code)]

use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::screen::PatternPainter;
use super::wayland_hint_proxy::DmabufHintProxy;

/// The sway output the portal shares (headless outputs are 1280x720).
pub const OUTPUT: &str = "HEADLESS-1";

/// What the "person" does in the portal's dialog.
#[derive(Debug, Clone, Copy)]
pub enum Pick {
    /// Picks the one output after this long (zero: no dialog at all).
    After(Duration),
    /// Closes the dialog without picking.
    Declined,
}

/// A running Wayland desktop whose screen the portal can share.
pub struct WaylandDesktop {
    /// `XDG_RUNTIME_DIR` of the desktop: its sockets and logs.
    pub runtime: PathBuf,
    /// Started in order, stopped in reverse.
    processes: Vec<(&'static str, Child)>,
    proxy: Option<DmabufHintProxy>,
}

fn wait_for(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < deadline,
            "the Wayland desktop did not start: no {what} after {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl WaylandDesktop {
    /// Starts the desktop, whose portal shares its one output as `pick`
    /// says; panics with what is missing (run `scripts/install-deps.sh`) or
    /// did not start.
    pub fn start(name: &str, pick: Pick) -> WaylandDesktop {
        for program in [
            "dbus-daemon",
            "pipewire",
            "wireplumber",
            "sway",
            "setpriv",
            "/usr/libexec/xdg-desktop-portal",
            "/usr/libexec/xdg-desktop-portal-wlr",
        ] {
            let found = program.starts_with('/') && Path::new(program).exists()
                || Command::new("sh")
                    .args(["-c", &format!("command -v {program}")])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
            assert!(
                found,
                "{program} is missing: run scripts/install-deps.sh (sway, pipewire, wireplumber, \
                 xdg-desktop-portal, xdg-desktop-portal-wlr)"
            );
        }
        let runtime = super::fresh_temp_path(&format!("wl-{name}"));
        std::fs::create_dir_all(runtime.join("config/xdg-desktop-portal-wlr")).unwrap();
        std::fs::create_dir_all(runtime.join("portals")).unwrap();
        let mut desktop = WaylandDesktop {
            runtime,
            processes: Vec::new(),
            proxy: None,
        };
        desktop.write_configs(pick);
        let dir = desktop.runtime.clone();

        // A bus of our own, without service activation: every service the
        // portal needs is started here, and nothing else (no FUSE mounts).
        desktop.spawn(
            "dbus",
            "dbus-daemon",
            &["--config-file=bus.conf", "--nofork"],
        );
        wait_for("session bus", Duration::from_secs(10), || {
            dir.join("bus").exists()
        });
        desktop.spawn("pipewire", "pipewire", &[]);
        wait_for("PipeWire", Duration::from_secs(10), || {
            dir.join("pipewire-0").exists()
        });
        desktop.spawn("wireplumber", "wireplumber", &[]);
        // sway refuses to run as root; the socket directory becomes its.
        let chown = Command::new("chown")
            .args(["nobody", dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(chown.success(), "cannot hand {dir:?} to nobody");
        desktop.spawn(
            "sway",
            "setpriv",
            &[
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "sway",
                "-c",
                "sway.conf",
            ],
        );
        wait_for("Wayland display", Duration::from_secs(20), || {
            dir.join("wayland-1").exists()
        });
        desktop.proxy = Some(DmabufHintProxy::start(
            &dir.join("wayland-xdpw"),
            &dir.join("wayland-1"),
        ));
        desktop.spawn_with(
            "xdpw",
            "/usr/libexec/xdg-desktop-portal-wlr",
            &["-l", "DEBUG"],
            &[("WAYLAND_DISPLAY", "wayland-xdpw")],
        );
        desktop.wait_for_bus_name("org.freedesktop.impl.portal.desktop.wlr");
        desktop.spawn_with(
            "portal",
            "/usr/libexec/xdg-desktop-portal",
            &["-v", "-r"],
            &[(
                "XDG_DESKTOP_PORTAL_DIR",
                dir.join("portals").to_str().unwrap(),
            )],
        );
        desktop.wait_for_bus_name("org.freedesktop.portal.Desktop");
        desktop
    }

    fn write_configs(&self, pick: Pick) {
        let dir = &self.runtime;
        let bus = format!(
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
             \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
             <busconfig><type>session</type><listen>unix:path={}/bus</listen>\
             <auth>EXTERNAL</auth><policy context=\"default\"><allow send_destination=\"*\" \
             eavesdrop=\"true\"/><allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>\n",
            dir.display()
        );
        std::fs::write(dir.join("bus.conf"), bus).unwrap();
        // No pointer in the picture (headless cursors are drawn into it), and
        // no wallpaper program: the pattern surface is all there is to see.
        std::fs::write(
            dir.join("sway.conf"),
            "xwayland disable\ndefault_border none\nseat * hide_cursor 100\n",
        )
        .unwrap();
        // A test has no person to pick the output in a dialog: the portal
        // shares it at once, or after a "person" (a command) took a while.
        let chooser = match pick {
            Pick::After(delay) if delay.is_zero() => {
                format!("chooser_type=none\noutput_name={OUTPUT}")
            }
            Pick::After(delay) => format!(
                "chooser_type=simple\nchooser_cmd=sleep {:.1}; echo {OUTPUT}",
                delay.as_secs_f64()
            ),
            // A chooser that names no output: what closing the dialog says.
            Pick::Declined => "chooser_type=simple\nchooser_cmd=sleep 0.5".to_owned(),
        };
        std::fs::write(
            dir.join("config/xdg-desktop-portal-wlr/config"),
            format!("[screencast]\n{chooser}\nmax_fps=30\n"),
        )
        .unwrap();
        std::fs::copy(
            "/usr/share/xdg-desktop-portal/portals/wlr.portal",
            dir.join("portals/wlr.portal"),
        )
        .unwrap();
    }

    /// What a program on this desktop finds in its environment.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let dir = self.runtime.display();
        vec![
            ("XDG_RUNTIME_DIR", dir.to_string()),
            ("XDG_CONFIG_HOME", format!("{dir}/config")),
            ("XDG_STATE_HOME", format!("{dir}/state")),
            ("XDG_CURRENT_DESKTOP", "sway".into()),
            ("XDG_SESSION_TYPE", "wayland".into()),
            ("DBUS_SESSION_BUS_ADDRESS", format!("unix:path={dir}/bus")),
            ("WAYLAND_DISPLAY", "wayland-1".into()),
            ("SWAYSOCK", format!("{dir}/sway-ipc.sock")),
            ("WLR_BACKENDS", "headless".into()),
            ("WLR_RENDERER", "pixman".into()),
            ("WLR_LIBINPUT_NO_DEVICES", "1".into()),
            // No X display: the screen is Wayland's.
            ("DISPLAY", String::new()),
        ]
    }

    fn spawn(&mut self, name: &'static str, program: &str, args: &[&str]) {
        self.spawn_with(name, program, args, &[]);
    }

    fn spawn_with(
        &mut self,
        name: &'static str,
        program: &str,
        args: &[&str],
        extra: &[(&str, &str)],
    ) {
        let log = std::fs::File::create(self.runtime.join(format!("{name}.log"))).unwrap();
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(&self.runtime)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (key, value) in self.env() {
            command.env(key, value);
        }
        command.envs(extra.iter().copied());
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {program}: {err}"));
        self.processes.push((name, child));
    }

    fn wait_for_bus_name(&self, name: &str) {
        wait_for(name, Duration::from_secs(30), || {
            let mut ask = Command::new("dbus-send");
            ask.args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/",
                "org.freedesktop.DBus.NameHasOwner",
                &format!("string:{name}"),
            ]);
            for (key, value) in self.env() {
                ask.env(key, value);
            }
            ask.output()
                .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("true"))
        });
    }

    /// Runs `swaymsg ARGS` on this desktop.
    pub fn swaymsg(&self, args: &[&str]) {
        let mut command = Command::new("swaymsg");
        command.args(args);
        for (key, value) in self.env() {
            command.env(key, value);
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "swaymsg {args:?}: {out:?}");
    }

    /// Ends every screen cast from the desktop's side, as its "stop sharing"
    /// does: the portal's screen-cast backend goes away with its streams.
    pub fn stop_screen_casts(&mut self) {
        if let Some(at) = self.processes.iter().position(|(name, _)| *name == "xdpw") {
            let (_, mut xdpw) = self.processes.remove(at);
            let _ = xdpw.kill();
            let _ = xdpw.wait();
        }
    }

    /// The logs of the desktop's programs, to explain a failure.
    pub fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|(name, _)| {
                let text = std::fs::read_to_string(self.runtime.join(format!("{name}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {name}\n{}", tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for WaylandDesktop {
    fn drop(&mut self) {
        while let Some((_, mut child)) = self.processes.pop() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.proxy.take();
        super::remove_unless_kept(&self.runtime);
    }
}

/// A surface at the top left of the desktop's output showing the stamped
/// test pattern, redrawn `fps` times a second; gone when dropped.
pub struct PatternSurface {
    _painter: PatternPainter,
}

mod pattern_client {
    use wayland_client::protocol::{
        wl_buffer, wl_compositor, wl_registry, wl_shm, wl_shm_pool, wl_surface,
    };
    use wayland_client::{Connection, Dispatch, QueueHandle, delegate_noop};
    use wayland_protocols_wlr::layer_shell::v1::client::{
        zwlr_layer_shell_v1, zwlr_layer_surface_v1,
    };

    #[derive(Default)]
    pub struct State {
        pub compositor: Option<wl_compositor::WlCompositor>,
        pub shm: Option<wl_shm::WlShm>,
        pub layers: Option<zwlr_layer_shell_v1::ZwlrLayerShellV1>,
        pub configured: bool,
    }

    impl Dispatch<wl_registry::WlRegistry, ()> for State {
        fn event(
            state: &mut State,
            registry: &wl_registry::WlRegistry,
            event: wl_registry::Event,
            _: &(),
            _: &Connection,
            qh: &QueueHandle<State>,
        ) {
            if let wl_registry::Event::Global {
                name, interface, ..
            } = event
            {
                match interface.as_str() {
                    "wl_compositor" => state.compositor = Some(registry.bind(name, 4, qh, ())),
                    "wl_shm" => state.shm = Some(registry.bind(name, 1, qh, ())),
                    "zwlr_layer_shell_v1" => state.layers = Some(registry.bind(name, 1, qh, ())),
                    _ => {}
                }
            }
        }
    }

    impl Dispatch<zwlr_layer_surface_v1::ZwlrLayerSurfaceV1, ()> for State {
        fn event(
            state: &mut State,
            surface: &zwlr_layer_surface_v1::ZwlrLayerSurfaceV1,
            event: zwlr_layer_surface_v1::Event,
            _: &(),
            _: &Connection,
            _: &QueueHandle<State>,
        ) {
            if let zwlr_layer_surface_v1::Event::Configure { serial, .. } = event {
                surface.ack_configure(serial);
                state.configured = true;
            }
        }
    }

    delegate_noop!(State: ignore wl_compositor::WlCompositor);
    delegate_noop!(State: ignore wl_shm::WlShm);
    delegate_noop!(State: ignore wl_shm_pool::WlShmPool);
    delegate_noop!(State: ignore wl_buffer::WlBuffer);
    delegate_noop!(State: ignore wl_surface::WlSurface);
    delegate_noop!(State: ignore zwlr_layer_shell_v1::ZwlrLayerShellV1);
}

impl PatternSurface {
    pub fn show(desktop: &WaylandDesktop, width: u32, height: u32, fps: u32) -> PatternSurface {
        use wayland_client::protocol::wl_shm;
        use wayland_protocols_wlr::layer_shell::v1::client::{
            zwlr_layer_shell_v1, zwlr_layer_surface_v1,
        };

        let socket = UnixStream::connect(desktop.runtime.join("wayland-1")).unwrap();
        let connection = wayland_client::Connection::from_socket(socket).unwrap();
        let mut queue = connection.new_event_queue();
        let qh = queue.handle();
        let _registry = connection.display().get_registry(&qh, ());
        let mut state = pattern_client::State::default();
        queue.roundtrip(&mut state).unwrap();
        let (Some(compositor), Some(shm), Some(layers)) = (
            state.compositor.clone(),
            state.shm.clone(),
            state.layers.clone(),
        ) else {
            panic!("sway lacks wl_compositor, wl_shm or the layer shell");
        };
        let surface = compositor.create_surface(&qh, ());
        let layer = layers.get_layer_surface(
            &surface,
            None,
            zwlr_layer_shell_v1::Layer::Top,
            "duet-pattern".into(),
            &qh,
            (),
        );
        layer.set_size(width, height);
        layer.set_anchor(zwlr_layer_surface_v1::Anchor::Top | zwlr_layer_surface_v1::Anchor::Left);
        surface.commit();
        while !state.configured {
            queue.blocking_dispatch(&mut state).unwrap();
        }
        // Two buffers in one file, drawn in turn.
        let frame_bytes = (width * height * 4) as usize;
        let file_path = desktop.runtime.join("pattern.shm");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&file_path)
            .unwrap();
        let _ = std::fs::remove_file(&file_path);
        file.set_len(2 * frame_bytes as u64).unwrap();
        let pool = shm.create_pool(file.as_fd(), 2 * frame_bytes as i32, &qh, ());
        let buffers: Vec<_> = (0..2)
            .map(|i| {
                pool.create_buffer(
                    (i * frame_bytes) as i32,
                    width as i32,
                    height as i32,
                    (width * 4) as i32,
                    wl_shm::Format::Xrgb8888,
                    &qh,
                    (),
                )
            })
            .collect();
        let mut index = 0usize;
        let painter = PatternPainter::start(width, height, fps, move |bgrx| {
            let which = index % 2;
            index += 1;
            file.write_all_at(bgrx, (which * frame_bytes) as u64)
                .unwrap();
            surface.attach(Some(&buffers[which]), 0, 0);
            surface.damage_buffer(0, 0, width as i32, height as i32);
            surface.commit();
            // Keeps the layer surface (and so the picture) alive too.
            let _ = &layer;
            queue.roundtrip(&mut state).is_ok()
        });
        PatternSurface { _painter: painter }
    }
}
