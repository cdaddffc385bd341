//! `duet-load`: holds N signaling connections as N/2 rooms and replays call
//! setups through them, to measure what the server sustains.
//!
//! Each room is a real [`duet_signal`] client pair on real sockets. Once every
//! connection has joined, each room repeats a call setup every `--interval-ms`
//! (staggered over the interval so the load is even): the caller sends a 4 KiB
//! offer and 10 candidates; the callee answers the offer with a 4 KiB answer
//! and 10 candidates of its own. Every relayed message carries its send time
//! (`t=<ns since start>;`), so the receiver measures relay latency; counting
//! what arrived against what was sent gives lost messages. The server is a
//! separate `duet serve` process (spawned here, or named by `--server-pid`), so
//! its peak RSS and CPU time are read from `/proc` without sharing our heap.
//! Percentiles and process usage are `duet-measure`'s, as in every Duet report.
//!
//! With `--scale-out`, the load goes through HAProxy to two `duet serve
//! --redis` instances (`scale_out.rs`), and the report gives each one's RSS
//! and CPU.
//!
//! Beyond what one process's open-file limit allows, the connections are
//! held by several copies of this program (`workers.rs`), each driving its
//! own rooms (`rooms.rs`), and HAProxy runs as several processes too.
//!
//! Honest connections come from 127.1.x.y, 40 per address. With `--hostile N`,
//! N hostile clients (never-reading, slowloris, half-open; `hostile.rs`) keep
//! coming and going from 127.2.0.1–8 throughout the run.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod hostile;
mod rooms;
mod scale_out;
mod workers;

use anyhow::{Context as _, bail};
use clap::Parser;
use duet_measure::{ProcessUsage, Samples, Summary};
use rooms::{MESSAGES_PER_SETUP, Pace, RoomShare};

/// Load generator for the Duet signaling server.
#[derive(Debug, Parser)]
#[command(name = "duet-load", version, about)]
struct Args {
    /// Connections to hold (two per room).
    #[arg(long, short = 'n', default_value_t = 1000)]
    connections: usize,
    /// Server base URL; when absent, a `duet serve` is spawned on a free port.
    #[arg(long)]
    server: Option<String>,
    /// PID of the server given with `--server`, to read its RSS and CPU time.
    #[arg(long, requires = "server")]
    server_pid: Option<u32>,
    /// The `duet` binary to spawn; defaults to the one beside this program.
    #[arg(long)]
    duet: Option<PathBuf>,
    /// Call setups each room performs.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Time between two setups of one room; rooms are spread evenly over it.
    #[arg(long, default_value_t = 5000)]
    interval_ms: u64,
    /// Connection attempts in flight at once while ramping up.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Hostile clients kept coming and going meanwhile (never-reading, slowloris,
    /// half-open; see `hostile.rs`).
    #[arg(long, default_value_t = 0)]
    hostile: usize,
    /// Make every hostile client of this kind (default: a mix).
    #[arg(long, value_enum, requires = "hostile")]
    hostile_kind: Option<hostile::HostileKind>,
    /// Spawn two `duet serve --redis --proxy-protocol` instances sharing a
    /// spawned `redis-server`, behind a spawned HAProxy, and load them through it.
    #[arg(long, conflicts_with = "server")]
    scale_out: bool,
    /// HAProxy's configuration for `--scale-out`.
    #[arg(long, default_value = "deploy/haproxy.cfg")]
    haproxy_config: PathBuf,
    /// Write the report as JSON to this file as well.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Processes that hold the connections; by default as many as the
    /// open-file limit needs (one below ~19,000 connections at a limit of
    /// 20,000). See `workers.rs`.
    #[arg(long)]
    processes: Option<usize>,
    /// Run as one of those processes: join the rooms, print `joined`, wait
    /// for `go` on stdin, print the outcome as JSON.
    #[arg(long, hide = true, requires = "server")]
    worker: bool,
    /// The worker's first room number.
    #[arg(long, hide = true, default_value_t = 0)]
    first_room: usize,
}

impl Args {
    fn pace(&self) -> Pace {
        Pace {
            rounds: self.rounds,
            interval: Duration::from_millis(self.interval_ms),
            connect_concurrency: self.connect_concurrency,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.connections < 2 || args.connections % 2 != 0 {
        bail!("--connections must be an even number of at least 2");
    }
    // Each connection is a file descriptor here and one at the server.
    let limit =
        rlimit::increase_nofile_limit(u64::MAX).context("cannot raise the open-file limit")?;
    let processes = match args.processes {
        _ if args.worker => 1,
        Some(0) => bail!("--processes must be at least 1"),
        Some(n) => n,
        None => workers::processes_needed(args.connections, limit),
    };
    // Each load process holds its share; this one also the hostile clients.
    let per_process = args.connections.div_ceil(processes);
    let here = args.hostile + if processes == 1 { per_process } else { 0 };
    if limit < here.max(per_process) as u64 + 64 {
        bail!(
            "the open-file limit is {limit}; {} connections in {processes} process(es) need more",
            args.connections
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if args.worker {
        let share = RoomShare {
            first: args.first_room,
            count: args.connections / 2,
        };
        let url = args.server.as_deref().context("a worker needs --server")?;
        return runtime.block_on(workers::serve_as_worker(url, share, args.pace()));
    }
    let report = runtime.block_on(run(&args, processes, limit))?;
    print!("{}", report.text());
    if let Some(path) = &args.json {
        std::fs::write(path, report.json().to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if report.lost > 0 || report.errors > 0 {
        bail!("{} messages lost, {} errors", report.lost, report.errors);
    }
    Ok(())
}

/// A `duet serve` child process, killed when dropped.
struct SpawnedServer {
    child: Child,
    url: String,
}

/// One server process's usage over the run.
#[derive(Debug, Clone, Copy)]
struct ServerUsage {
    peak_rss_mb: Option<f64>,
    cpu_s: Option<f64>,
    peak_cpu_percent: Option<f64>,
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(duet: Option<&PathBuf>, extra: &[&str]) -> anyhow::Result<SpawnedServer> {
    let duet = match duet {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("cannot locate this program")?
            .with_file_name("duet"),
    };
    let mut child = Command::new(&duet)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("DUET_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (build it with `cargo build --release -p duet`)",
                duet.display()
            )
        })?;
    let stdout = child.stdout.take().context("no stdout from the server")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .context("cannot read the server's address")?;
    let addr = line.trim();
    if addr.is_empty() {
        let _ = child.kill();
        bail!("the server exited before printing its address");
    }
    Ok(SpawnedServer {
        url: format!("ws://{addr}"),
        child,
    })
}

/// Everything the run measured.
#[derive(Debug)]
struct Report {
    connections: usize,
    rounds: u32,
    interval_ms: u64,
    join_ms: Option<Summary>,
    relay_ms: Option<Summary>,
    relayed: u64,
    expected: u64,
    lost: u64,
    errors: u64,
    ramp_s: f64,
    load_s: f64,
    /// One per server process (two with `--scale-out`).
    servers: Vec<ServerUsage>,
    /// With `--scale-out`: relayed messages that crossed between instances.
    forwarded: Option<u64>,
    hostile: Option<HostileReport>,
    /// Processes that held the connections (`workers.rs`).
    load_processes: usize,
    /// With `--scale-out`: HAProxy processes sharing the front port.
    proxies: Option<usize>,
}

/// What the hostile clients did.
#[derive(Debug, Clone, Copy)]
struct HostileReport {
    clients: usize,
    opened: u64,
    cut_by_server: u64,
    held_to_the_end: u64,
}

/// Nearest-rank percentiles of durations in microseconds, in milliseconds.
fn summary_ms(micros: &[u32]) -> Option<Summary> {
    micros
        .iter()
        .map(|us| f64::from(*us) / 1000.0)
        .collect::<Samples>()
        .summary()
}

/// A summary as the text report prints it.
fn summary_text(summary: Option<Summary>) -> String {
    match summary {
        Some(s) => format!(
            "p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
            s.p50, s.p95, s.p99, s.max
        ),
        None => "n/a".into(),
    }
}

impl Report {
    fn text(&self) -> String {
        let opt = |v: Option<f64>, unit: &str| v.map_or("n/a".into(), |v| format!("{v:.1}{unit}"));
        format!(
            "connections          {}\n\
             rooms                {}\n\
             setups per room      {} (one every {} ms)\n\
             ramp-up              {:.1} s\n\
             join ms              {}\n\
             relay ms             {}\n\
             relayed              {} of {} ({:.0} msg/s during the load phase)\n\
             lost                 {}\n\
             errors               {}\n\
             load processes       {}\n",
            self.connections,
            self.connections / 2,
            self.rounds,
            self.interval_ms,
            self.ramp_s,
            summary_text(self.join_ms),
            summary_text(self.relay_ms),
            self.relayed,
            self.expected,
            self.relayed as f64 / self.load_s,
            self.lost,
            self.errors,
            self.load_processes,
        ) + &self
            .servers
            .iter()
            .enumerate()
            .map(|(i, usage)| {
                let name = if self.servers.len() > 1 {
                    format!("instance {}", i + 1)
                } else {
                    "server".to_owned()
                };
                format!(
                    "{name:<11}peak RSS {}\n{name:<11}CPU      {} in all, peak {}\n",
                    opt(usage.peak_rss_mb, " MB"),
                    opt(usage.cpu_s, " s"),
                    opt(usage.peak_cpu_percent, " % of one core"),
                )
            })
            .collect::<String>()
            + &self.forwarded.map_or(String::new(), |n| {
                format!("between instances    {n} of the relayed messages (over Redis)\n")
            })
            + &self.proxies.map_or(String::new(), |n| {
                format!("HAProxy processes    {n} (sharing the front port)\n")
            })
            + &match self.hostile {
                Some(h) => format!(
                    "hostile clients      {} ({} connections: {} cut off or refused by the server, {} ended by the client after 15 s or at the end)\n",
                    h.clients, h.opened, h.cut_by_server, h.held_to_the_end
                ),
                None => String::new(),
            }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "connections": self.connections,
            "rounds": self.rounds,
            "interval_ms": self.interval_ms,
            "join_ms": self.join_ms,
            "relay_ms": self.relay_ms,
            "relayed": self.relayed,
            "expected": self.expected,
            "lost": self.lost,
            "errors": self.errors,
            "server_peak_rss_mb": self.servers.first().and_then(|u| u.peak_rss_mb),
            "server_cpu_s": self.servers.first().and_then(|u| u.cpu_s),
            "server_peak_cpu_percent": self.servers.first().and_then(|u| u.peak_cpu_percent),
            "servers": self.servers.iter().map(|u| serde_json::json!({
                "peak_rss_mb": u.peak_rss_mb,
                "cpu_s": u.cpu_s,
                "peak_cpu_percent": u.peak_cpu_percent,
            })).collect::<Vec<_>>(),
            "forwarded": self.forwarded,
            "load_processes": self.load_processes,
            "proxies": self.proxies,
            "hostile": self.hostile.map(|h| serde_json::json!({
                "clients": h.clients,
                "opened": h.opened,
                "cut_by_server": h.cut_by_server,
                "held_to_the_end": h.held_to_the_end,
            })),
        })
    }
}

async fn run(args: &Args, processes: usize, limit: u64) -> anyhow::Result<Report> {
    let (url, spawned, scale_out) = match &args.server {
        Some(url) => (url.clone(), None, None),
        None if args.scale_out => {
            let proxies = scale_out::proxies_needed(args.connections, limit);
            let scale_out =
                scale_out::ScaleOut::start(args.duet.as_ref(), &args.haproxy_config, proxies)?;
            (scale_out.url.clone(), None, Some(scale_out))
        }
        None => {
            let server = spawn_server(args.duet.as_ref(), &[])?;
            (server.url.clone(), Some(server), None)
        }
    };
    let pids: Vec<u32> = match &scale_out {
        Some(scale_out) => scale_out.instances.iter().map(|s| s.child.id()).collect(),
        None => args
            .server_pid
            .or(spawned.as_ref().map(|s| s.child.id()))
            .into_iter()
            .collect(),
    };
    let samplers: Vec<CpuSampler> = pids.iter().copied().map(CpuSampler::start).collect();
    let hostile = match args.hostile {
        0 => None,
        count => {
            let addr = url
                .trim_start_matches("ws://")
                .parse()
                .context("--hostile needs a ws://IP:PORT server")?;
            Some(hostile::Hostile::start(addr, count, args.hostile_kind))
        }
    };

    let rooms = args.connections / 2;
    let outcome = if processes == 1 {
        let share = RoomShare {
            first: 0,
            count: rooms,
        };
        rooms::run_share(&url, share, args.pace(), async { Ok(()) }).await?
    } else {
        let shares = workers::shares(rooms, processes);
        // The ramp-up's concurrency is the run's, shared among the processes.
        let pace = Pace {
            connect_concurrency: args.connect_concurrency.div_ceil(shares.len()),
            ..args.pace()
        };
        let exe = std::env::current_exe().context("cannot locate this program")?;
        workers::run_split(&exe, &url, &shares, pace).await?
    };
    let hostile = match hostile {
        Some(hostile) => Some(hostile.stop().await),
        None => None,
    };

    let mut servers = Vec::with_capacity(pids.len());
    for (pid, sampler) in pids.into_iter().zip(samplers) {
        let (cpu_s, peak_cpu_percent) = sampler.stop().await;
        servers.push(ServerUsage {
            peak_rss_mb: ProcessUsage::of(pid).map(|u| u.max_rss_mb),
            cpu_s,
            peak_cpu_percent,
        });
    }
    let forwarded = scale_out.as_ref().and_then(scale_out::ScaleOut::forwarded);
    let proxies = scale_out.as_ref().map(|s| s.proxies());
    drop(spawned);
    drop(scale_out);

    let expected = MESSAGES_PER_SETUP * u64::from(args.rounds) * rooms as u64;
    Ok(Report {
        connections: args.connections,
        rounds: args.rounds,
        interval_ms: args.interval_ms,
        join_ms: summary_ms(&outcome.join_us),
        relay_ms: summary_ms(&outcome.latencies_us),
        relayed: outcome.relayed,
        expected,
        lost: expected.saturating_sub(outcome.relayed),
        errors: outcome.errors,
        ramp_s: outcome.ramp_s,
        load_s: outcome.load_s,
        servers,
        forwarded,
        hostile: hostile.map(|counts| HostileReport {
            clients: args.hostile,
            opened: counts.opened.load(Ordering::Relaxed),
            cut_by_server: counts.cut_by_server.load(Ordering::Relaxed),
            held_to_the_end: counts.held_to_the_end.load(Ordering::Relaxed),
        }),
        load_processes: processes,
        proxies,
    })
}

/// Samples a process's CPU time every 500 ms to find its busiest interval.
struct CpuSampler {
    stop: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<(Option<f64>, Option<f64>)>,
}

impl CpuSampler {
    fn start(pid: u32) -> CpuSampler {
        let stop = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let tick = Duration::from_millis(500);
                let cpu_s = || ProcessUsage::of(pid).map(|u| u.cpu_seconds);
                let mut last = cpu_s();
                let mut peak: Option<f64> = None;
                while stop.load(Ordering::Relaxed) == 0 {
                    tokio::time::sleep(tick).await;
                    let now = cpu_s();
                    if let (Some(a), Some(b)) = (last, now) {
                        let percent = (b - a) / tick.as_secs_f64() * 100.0;
                        peak = Some(peak.map_or(percent, |p: f64| p.max(percent)));
                    }
                    last = now;
                }
                (last, peak)
            }
        });
        CpuSampler { stop, task }
    }

    async fn stop(self) -> (Option<f64>, Option<f64>) {
        self.stop.store(1, Ordering::Relaxed);
        self.task.await.unwrap_or((None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_are_summarised_in_milliseconds_by_nearest_rank() {
        let micros: Vec<u32> = (1..=100).map(|v| v * 1000).collect();
        let s = summary_ms(&micros).expect("samples");
        assert_eq!((s.p50, s.p95, s.p99, s.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(summary_ms(&[]), None);
        assert_eq!(summary_text(None), "n/a");
    }
}
