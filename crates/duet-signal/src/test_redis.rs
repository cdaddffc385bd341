//! A real `redis-server` (Debian's, from `scripts/install-deps.sh`) for the
//! tests of this crate: started on a free loopback port, stopped on drop.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`: nothing saved to disk, or (with a data
/// directory) every write kept in an append-only file there, so a restart
/// finds what was written.
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
    data: Option<PathBuf>,
}

impl RedisServer {
    /// Starts one that keeps nothing, and waits until it accepts connections.
    pub(crate) fn start() -> RedisServer {
        RedisServer::start_in(None)
    }

    /// Starts one that keeps its data in `dir` across [`RedisServer::restart`].
    pub(crate) fn start_keeping_data(dir: &Path) -> RedisServer {
        RedisServer::start_in(Some(dir.to_owned()))
    }

    fn start_in(data: Option<PathBuf>) -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = RedisServer {
            child: None,
            port,
            data,
        };
        server.run();
        server
    }

    fn run(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--loglevel", "warning"]);
        match &self.data {
            Some(dir) => command
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir),
            None => command.args(["--appendonly", "no"]),
        };
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/install-deps.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.run();
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
