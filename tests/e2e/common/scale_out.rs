//! Several `duet serve` instances sharing rooms: a real `redis-server` and a
//! real `haproxy` (Debian's, from `scripts/install-deps.sh`), each started
//! on free loopback ports and stopped when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{LivePeer, Scratch, duet_bin};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until something accepts connections on `port`.
fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `redis-server` whose data survives a restart (an append-only file in the scratch directory).
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Redis {
    pub fn start(scratch: &Scratch) -> Redis {
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir: scratch.0.clone(),
        };
        redis.run();
        redis
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/install-deps.sh installs it)");
        self.child = Some(child);
        wait_for_port(self.port, "redis-server");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL: no goodbye to its clients) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with the data it had.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `duet serve --redis URL` instance on a free port.
pub struct Instance {
    pub process: LivePeer,
    /// `ADDR:PORT`.
    pub addr: String,
    /// Started with `--proxy-protocol`: every connection must begin with a PROXY header.
    proxied: bool,
}

impl Instance {
    /// Starts one, with `extra` options after `--redis URL`.
    pub fn start(scratch: &Scratch, name: &str, redis_url: &str, extra: &[&str]) -> Instance {
        let mut command = Command::new(duet_bin());
        command.args(["serve", "--listen", "127.0.0.1:0", "--redis", redis_url]);
        command.args(extra);
        let mut process = LivePeer::spawn_command(command, &scratch.0, name);
        let addr = process.expect_line(":", Duration::from_secs(30));
        Instance {
            process,
            addr,
            proxied: extra.contains(&"--proxy-protocol"),
        }
    }

    /// Its `ws://` URL.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// A GET straight to it (with a `PROXY UNKNOWN` header when it expects one).
    pub fn get(&self, path: &str) -> String {
        let prefix = if self.proxied {
            "PROXY UNKNOWN\r\n"
        } else {
            ""
        };
        http_get_after(&self.addr, path, prefix)
    }

    /// The value of an unlabelled metric on its `/metrics` page.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let page = self.get("/metrics");
        page.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }
}

/// `haproxy` with the repository's `deploy/haproxy.cfg`, in front of `backends`.
pub struct Haproxy {
    child: Child,
    pub addr: String,
}

impl Haproxy {
    /// Its log goes to `haproxy.log` in `scratch`.
    pub fn start(scratch: &Scratch, backends: [&str; 2]) -> Haproxy {
        let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy.cfg");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&config)
            .arg("-db") // stay in the foreground
            .env("DUET_LISTEN", &addr)
            .env("DUET_1", backends[0])
            .env("DUET_2", backends[1])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(scratch.path("haproxy.log")).expect("a log file"))
            .spawn()
            .expect("haproxy on PATH (scripts/install-deps.sh installs it)");
        wait_for_port(port, "haproxy");
        Haproxy { child, addr }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP GET after `prefix` bytes; the whole response, head and body.
fn http_get_after(addr: &str, path: &str, prefix: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = TcpStream::connect(addr).expect("the server listens");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a socket option");
    write!(
        stream,
        "{prefix}GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("the request goes out");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("a response comes back");
    response
}
