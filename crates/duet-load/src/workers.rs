//! The load split across several processes, when one may not hold it.
//!
//! Every connection is a file descriptor, and a process may open only so many
//! (20,000 in the container these benchmarks ran in, and not raisable there).
//! Beyond that, `duet-load` starts copies of itself (`--worker`), each
//! driving its own [`RoomShare`]. They speak a small line protocol over
//! their standard streams:
//!
//! 1. the worker joins its rooms, then prints `joined`;
//! 2. once every worker has, the parent writes `go` to each, so the load
//!    phase starts with every connection of the run held;
//! 3. the worker prints its [`ShareOutcome`] as one line of JSON and exits.
//!
//! A room's two peers are in one worker, so its latencies are read on the
//! clock that stamped them; the parent only merges.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::rooms::{Pace, RoomShare, ShareOutcome, run_share};

/// Descriptors a load process keeps for everything but its connections
/// (the runtime, standard streams, a hostile client mix).
pub(crate) const HEADROOM: u64 = 1024;

/// Prints one line to standard error in a single write.
///
/// Load processes share their parent's standard error, and `eprintln!` may
/// write a line in pieces, so two processes' lines could interleave mid-line
/// ("2220 connections joined"). One write of a short line to a pipe is atomic.
pub(crate) fn say(line: &str) {
    // Nothing to do if standard error is gone: the run's report still counts.
    let _ = write_whole_line(&mut std::io::stderr().lock(), line);
}

fn write_whole_line(out: &mut impl std::io::Write, line: &str) -> std::io::Result<()> {
    let mut whole = String::with_capacity(line.len() + 1);
    whole.push_str(line);
    whole.push('\n');
    out.write_all(whole.as_bytes())
}

/// How many processes `connections` need when each may open `limit` descriptors.
pub(crate) fn processes_needed(connections: usize, limit: u64) -> usize {
    let per_process = limit.saturating_sub(HEADROOM).max(2);
    (connections as u64).div_ceil(per_process).max(1) as usize
}

/// `rooms` rooms dealt to `processes` processes as evenly as whole rooms allow.
pub(crate) fn shares(rooms: usize, processes: usize) -> Vec<RoomShare> {
    let processes = processes.clamp(1, rooms.max(1));
    let mut first = 0;
    (0..processes)
        .map(|i| {
            let count = rooms / processes + usize::from(i < rooms % processes);
            let share = RoomShare { first, count };
            first += count;
            share
        })
        .collect()
}

/// The worker's side: drive `share`, holding the load phase until the parent says `go`.
pub(crate) async fn serve_as_worker(url: &str, share: RoomShare, pace: Pace) -> anyhow::Result<()> {
    let go = async {
        let mut stdout = tokio::io::stdout();
        stdout.write_all(b"joined\n").await?;
        stdout.flush().await?;
        let mut line = String::new();
        BufReader::new(tokio::io::stdin())
            .read_line(&mut line)
            .await
            .context("cannot read the parent's go")?;
        if line.trim() != "go" {
            bail!("the parent went away before the load phase");
        }
        anyhow::Ok(())
    };
    let outcome = run_share(url, share, pace, go).await?;
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("{}\n", outcome_json(&outcome)).as_bytes())
        .await?;
    stdout.flush().await?;
    Ok(())
}

/// One running worker, killed if the parent drops it.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    share: RoomShare,
}

impl Worker {
    async fn read_line(&mut self, what: &str) -> anyhow::Result<String> {
        let mut line = String::new();
        let read = self.stdout.read_line(&mut line).await?;
        if read == 0 {
            let status = self.child.wait().await?;
            bail!(
                "the load process for rooms {}..{} exited ({status}) before {what}",
                self.share.first,
                self.share.first + self.share.count
            );
        }
        Ok(line)
    }
}

/// The parent's side: runs every share in its own copy of this program
/// against `url`, starts their load phases together and merges what they measured.
pub(crate) async fn run_split(
    exe: &Path,
    url: &str,
    shares: &[RoomShare],
    pace: Pace,
) -> anyhow::Result<ShareOutcome> {
    let mut workers = Vec::with_capacity(shares.len());
    for &share in shares {
        let mut child = Command::new(exe)
            .arg("--worker")
            .args(["--server", url])
            .args(["--first-room", &share.first.to_string()])
            .args(["--connections", &(2 * share.count).to_string()])
            .args(["--rounds", &pace.rounds.to_string()])
            .args(["--interval-ms", &pace.interval.as_millis().to_string()])
            .args([
                "--connect-concurrency",
                &pace.connect_concurrency.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} as a load process", exe.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("a load process has no standard streams");
        };
        workers.push(Worker {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            share,
        });
    }
    for worker in &mut workers {
        let line = worker.read_line("joining its rooms").await?;
        if line.trim() != "joined" {
            bail!("a load process said {:?} instead of joined", line.trim());
        }
    }
    for worker in &mut workers {
        worker.stdin.write_all(b"go\n").await?;
        worker.stdin.flush().await?;
    }
    let reports = futures_util::future::try_join_all(workers.iter_mut().map(|worker| async {
        let line = worker.read_line("reporting").await?;
        parse_outcome(&line)
    }))
    .await?;
    let mut merged = ShareOutcome::default();
    for outcome in reports {
        merged.merge(outcome);
    }
    Ok(merged)
}

fn outcome_json(outcome: &ShareOutcome) -> Value {
    json!({
        "join_us": outcome.join_us,
        "latencies_us": outcome.latencies_us,
        "relayed": outcome.relayed,
        "errors": outcome.errors,
        "ramp_s": outcome.ramp_s,
        "load_s": outcome.load_s,
    })
}

fn parse_outcome(line: &str) -> anyhow::Result<ShareOutcome> {
    let value: Value = serde_json::from_str(line).context("a load process's report is not JSON")?;
    let micros = |key: &str| -> anyhow::Result<Vec<u32>> {
        value[key]
            .as_array()
            .with_context(|| format!("a load process's report has no {key}"))?
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .with_context(|| format!("a load process's {key} holds {v}"))
            })
            .collect()
    };
    let count = |key: &str| {
        value[key]
            .as_u64()
            .with_context(|| format!("a load process's report has no {key}"))
    };
    let seconds = |key: &str| {
        value[key]
            .as_f64()
            .with_context(|| format!("a load process's report has no {key}"))
    };
    Ok(ShareOutcome {
        join_us: micros("join_us")?,
        latencies_us: micros("latencies_us")?,
        relayed: count("relayed")?,
        errors: count("errors")?,
        ramp_s: seconds("ramp_s")?,
        load_s: seconds("load_s")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the writes a line takes.
    #[derive(Default)]
    struct CountedWrites {
        bytes: Vec<u8>,
        writes: usize,
    }

    impl std::io::Write for CountedWrites {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.writes += 1;
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_goes_out_in_one_write() {
        let mut out = CountedWrites::default();
        write_whole_line(
            &mut out,
            &format!("{} connections joined in {:.1} s", 22, 0.04),
        )
        .expect("a Vec takes every byte");
        assert_eq!(out.writes, 1);
        assert_eq!(out.bytes, b"22 connections joined in 0.0 s\n");
    }

    #[test]
    fn one_process_holds_what_its_limit_allows_and_more_are_added_beyond() {
        assert_eq!(processes_needed(10_000, 20_000), 1);
        assert_eq!(processes_needed(18_976, 20_000), 1);
        assert_eq!(processes_needed(20_000, 20_000), 2);
        assert_eq!(processes_needed(40_000, 20_000), 3);
        assert_eq!(processes_needed(1_000, u64::MAX), 1);
        // A limit below the headroom still gives an answer, not a division by zero.
        assert_eq!(processes_needed(10, 100), 5);
    }

    #[test]
    fn shares_cover_every_room_once_and_differ_by_at_most_one() {
        let dealt = shares(10_001, 3);
        assert_eq!(
            dealt,
            [
                RoomShare {
                    first: 0,
                    count: 3_334
                },
                RoomShare {
                    first: 3_334,
                    count: 3_334
                },
                RoomShare {
                    first: 6_668,
                    count: 3_333
                },
            ]
        );
        assert_eq!(shares(2, 5).len(), 2, "no process without a room");
        assert_eq!(shares(7, 1), [RoomShare { first: 0, count: 7 }]);
    }

    #[test]
    fn a_report_survives_the_pipe_and_a_damaged_one_is_an_error() {
        let outcome = ShareOutcome {
            join_us: vec![1_200, 900],
            latencies_us: vec![250, u32::MAX],
            relayed: 44,
            errors: 1,
            ramp_s: 2.5,
            load_s: 18.25,
        };
        let line = outcome_json(&outcome).to_string();
        assert!(!line.contains('\n'), "one line");
        assert_eq!(parse_outcome(&line).expect("parses"), outcome);
        assert!(parse_outcome("joined").is_err());
        assert!(parse_outcome(r#"{"join_us":[1],"latencies_us":[-1]}"#).is_err());
        assert!(parse_outcome(&line.replace("\"relayed\"", "\"sent\"")).is_err());
    }
}
