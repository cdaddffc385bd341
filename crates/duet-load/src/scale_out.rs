//! `--scale-out`: the load goes through HAProxy (the repository's
//! `deploy/haproxy.cfg`) to two `duet serve --redis --proxy-protocol`
//! instances sharing a `redis-server`, all spawned here on free loopback
//! ports and killed at the end. Each instance's RSS and CPU are read as the
//! single server's are; their `/metrics` say how many relayed messages
//! crossed from one instance to the other.
//!
//! HAProxy holds two descriptors per connection (the peer's and its own to
//! an instance). Where one process may not open that many, several HAProxy
//! processes share the front port (HAProxy binds it with `SO_REUSEPORT`, so
//! the kernel deals the connections out among them); a real deployment
//! raises the limit instead (`deploy/haproxy.cfg`). Those processes then
//! share the cores too: each runs `cores / processes` threads (HAProxy would
//! start one per core in each), which took the relay p99 at 20,000
//! connections from 16–38 ms to 12–13 ms here.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{SpawnedServer, spawn_server};

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A second HAProxy configuration file, giving each of several processes its
/// share of the cores; removed when dropped (HAProxy has read it by then).
struct ThreadsFile(std::path::PathBuf);

impl ThreadsFile {
    /// `None` for one process, which keeps HAProxy's own choice.
    fn write(proxies: usize) -> anyhow::Result<Option<ThreadsFile>> {
        if proxies <= 1 {
            return Ok(None);
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let path =
            std::env::temp_dir().join(format!("duet-load-haproxy-{}.cfg", std::process::id()));
        std::fs::write(
            &path,
            format!("global\n    nbthread {}\n", (cores / proxies).max(1)),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Some(ThreadsFile(path)))
    }
}

impl Drop for ThreadsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// HAProxy processes needed for `connections` when each may open `limit` descriptors.
pub(crate) fn proxies_needed(connections: usize, limit: u64) -> usize {
    crate::workers::processes_needed(2 * connections, limit)
}

/// Redis, two instances and HAProxy in front of them.
pub(crate) struct ScaleOut {
    /// Dropped first: no new connection reaches a dying instance.
    haproxies: Vec<Killed>,
    pub instances: Vec<SpawnedServer>,
    _redis: Killed,
    /// What the load connects to: HAProxy.
    pub url: String,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not start listening on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl ScaleOut {
    pub(crate) fn start(
        duet: Option<&std::path::PathBuf>,
        haproxy_config: &Path,
        proxies: usize,
    ) -> anyhow::Result<ScaleOut> {
        let redis_port = free_port()?;
        let redis = Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start redis-server (scripts/install-deps.sh installs it)")?;
        let redis = Killed(redis);
        wait_for_port(redis_port, "redis-server")?;
        let redis_url = format!("redis://127.0.0.1:{redis_port}");
        let instances = (0..2)
            .map(|_| spawn_server(duet, &["--redis", &redis_url, "--proxy-protocol"]))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let port = free_port()?;
        let threads = ThreadsFile::write(proxies)?;
        let mut haproxies = (0..proxies.max(1))
            .map(|_| {
                let mut haproxy = Command::new("haproxy");
                haproxy.arg("-f").arg(haproxy_config);
                if let Some(threads) = &threads {
                    haproxy.arg("-f").arg(&threads.0);
                }
                let haproxy = haproxy
                    .arg("-db")
                    .env("DUET_LISTEN", format!("127.0.0.1:{port}"))
                    .env("DUET_1", instances[0].url.trim_start_matches("ws://"))
                    .env("DUET_2", instances[1].url.trim_start_matches("ws://"))
                    .stdout(Stdio::null())
                    .spawn()
                    .with_context(|| {
                        format!(
                            "cannot start haproxy with {} (scripts/install-deps.sh installs it)",
                            haproxy_config.display()
                        )
                    })?;
                let haproxy = Killed(haproxy);
                wait_for_port(port, "haproxy")?;
                anyhow::Ok(haproxy)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if haproxies.len() > 1 {
            // The port answered for the first; a later one that could not
            // bind it exits at once.
            std::thread::sleep(Duration::from_millis(500));
            for (i, haproxy) in haproxies.iter_mut().enumerate() {
                if let Some(status) = haproxy.0.try_wait()? {
                    bail!("HAProxy process {} of {} exited ({status})", i + 1, proxies);
                }
            }
        }
        Ok(ScaleOut {
            haproxies,
            instances,
            _redis: redis,
            url: format!("ws://127.0.0.1:{port}"),
        })
    }

    /// HAProxy processes in front.
    pub(crate) fn proxies(&self) -> usize {
        self.haproxies.len()
    }

    /// Relayed messages that went from one instance to the other, from their `/metrics`.
    pub(crate) fn forwarded(&self) -> Option<u64> {
        self.instances
            .iter()
            .map(|instance| {
                metric(
                    instance.url.trim_start_matches("ws://"),
                    "duet_messages_forwarded_total",
                )
            })
            .sum()
    }
}

/// One unlabelled counter of an instance that expects a PROXY header.
fn metric(addr: &str, name: &str) -> Option<u64> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "PROXY UNKNOWN\r\nGET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut page = String::new();
    stream.read_to_string(&mut page).ok()?;
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}
