//! The call benchmark of `BENCHMARKS.md`: a real loopback call between two
//! headless `duet` processes through `duet serve`, with the test sources, for
//! each size asked for. Prints, per peer, what its `--stats-json` report
//! measured: time to first remote frame, video latency from the stamps, audio
//! latency from the beeps, CPU and peak memory.
//!
//! ```sh
//! cargo build --release -p duet
//! cargo run --release --example call_benchmark -- [SECONDS] [WxH ...]
//! ```
//! Defaults: 20 seconds, 640x480 and 1280x720, 30 fps. Set `DUET_BIN` to use
//! another binary than `target/release/duet`, and `DUET_BENCH_KEEP` to keep
//! each peer's report and log (its stderr, with `DUET_LOG` as you set it) in
//! the printed folder.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u32 = match args.next() {
        Some(s) => s
            .parse()
            .context("the first argument is the call length in seconds")?,
        None => 20,
    };
    let mut sizes: Vec<String> = args.collect();
    if sizes.is_empty() {
        sizes = vec!["640x480".into(), "1280x720".into()];
    }
    let bin = support::release_duet()?;
    let dir = std::env::temp_dir().join(format!("duet-call-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    println!(
        "| size | peer | first remote frame ms | connected ms | video p50 / p99 / max ms | frames decoded / sent | audio p50 ms | beeps | CPU s (share of a core) | peak RSS MB |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for size in &sizes {
        let reports = one_call(&bin, &dir, size, seconds)?;
        for (name, report, other) in [
            ("caller", &reports.0, &reports.1),
            ("callee", &reports.1, &reports.0),
        ] {
            let f = |path: &[&str]| -> String {
                let mut v = report;
                for key in path {
                    v = &v[key];
                }
                match v.as_f64() {
                    Some(x) => format!("{x:.1}"),
                    None => "–".into(),
                }
            };
            let cpu = report["cpu_seconds"].as_f64().unwrap_or(f64::NAN);
            let share = cpu / f64::from(seconds) * 100.0;
            println!(
                "| {size} | {name} | {} | {} | {} / {} / {} | {} / {} | {} | {} | {cpu:.1} ({share:.0} %) | {} |",
                f(&["time_to_first_remote_frame_ms"]),
                f(&["time_to_connected_ms"]),
                f(&["video", "latency_ms", "p50"]),
                f(&["video", "latency_ms", "p99"]),
                f(&["video", "latency_ms", "max"]),
                report["video"]["frames_decoded"],
                other["video"]["frames_sent"],
                f(&["audio", "latency_ms", "p50"]),
                report["audio"]["beeps_detected"],
                f(&["max_rss_mb"]),
            );
        }
    }
    if std::env::var_os("DUET_BENCH_KEEP").is_some() {
        eprintln!("reports and logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn one_call(bin: &Path, dir: &Path, size: &str, seconds: u32) -> anyhow::Result<(Value, Value)> {
    let server = support::Server::start(bin)?;
    let url = format!("ws://{}", server.addr);
    let duration = seconds.to_string();
    let keep = std::env::var_os("DUET_BENCH_KEEP").is_some();
    let log = |name: &str| -> anyhow::Result<Stdio> {
        Ok(if keep {
            Stdio::from(std::fs::File::create(dir.join(name))?)
        } else {
            Stdio::null()
        })
    };
    let peer = |role: &str, tone: &str| -> anyhow::Result<Child> {
        let stats = dir.join(format!("{role}.json"));
        Command::new(bin)
            .args([
                role,
                "--headless",
                "--server",
                &url,
                "--video",
                "test",
                "--audio",
                "test",
                "--tone-hz",
                tone,
                "--size",
                size,
                "--fps",
                "30",
                "--duration",
                &duration,
                "--stats-json",
            ])
            .arg(&stats)
            .stdout(Stdio::null())
            .stderr(log(&format!("{role}-{size}.log"))?)
            .spawn()
            .with_context(|| format!("cannot start the {role}"))
    };
    let callee = peer("callee", "660")?;
    std::thread::sleep(Duration::from_millis(300));
    let caller = peer("caller", "880")?;
    for (name, child) in [("callee", callee), ("caller", caller)] {
        let status = child.wait_with_output()?.status;
        if !status.success() {
            bail!("the {name} failed ({status}) at {size}");
        }
    }
    let read = |role: &str| -> anyhow::Result<Value> {
        let text = std::fs::read_to_string(dir.join(format!("{role}.json")))?;
        Ok(serde_json::from_str(&text)?)
    };
    Ok((read("caller")?, read("callee")?))
}
