//! An artificial mouth and ear on a [`PulseAudio`] daemon, as a sound lab
//! measures mouth-to-ear delay: the [`Mouth`] plays the beeps of
//! `docs/test-signals.md` ([`BeepSource`], 880 Hz, 100 ms from every whole
//! second of the wall clock) into a sink so that each beep is played at its
//! whole second, and an [`Ear`] says when each beep starts in a source.
//!
//! # Timing
//!
//! Both are PulseAudio's own clients, `pacat` and `parec` (48 kHz mono float:
//! the null sinks' own format, nothing resampled or mixed), run with
//! `--verbose`: about every 50 ms they print their stream's time, the
//! position of the sample being played (or recorded) at that instant, which
//! PulseAudio works out from the device's latency and its own buffers. The
//! stream time of the n-th sample written or read is n / 48 kHz, so each
//! report ties the stream to the wall clock ([`StreamClock`]). The lower
//! quartile over the reports within a second of an instant discounts the
//! 1 ms steps the time is printed in and the reports that reached us late.
//! The mouth writes 150 ms ahead of its stream, and re-places its beeps
//! when that reading moves by more than 1 ms (a stream that ran dry).
//!
//! For a monitor source that time is the instant the sink plays the sample
//! (its latency is negative: a null sink hands sound to its monitor up to
//! one of its blocks ahead), so the mouth and the ear agree: played straight
//! from a mouth into an ear they read 0.2–0.6 ms here (the onset rule's own
//! lag included). ALSA's PulseAudio plugin, which cpal and `duet` use, rounds
//! that negative latency up to zero: read through it (with cpal's capture
//! timestamps), a monitor's beeps came 2 to 10 ms early, by how much
//! depending on the stream.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, ChildStderr, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use duet_media::BeepSource;
use duet_media::frame::SAMPLE_RATE;

use super::{PULSE_HINT, PulseAudio};

/// The mouth's beeps.
pub const BEEP_HZ: f32 = 880.0;
/// An onset this much before its whole second still belongs to it: a chain
/// that reads early shows as a negative delay, not as a missing beep.
pub const EARLY_MS: f64 = 100.0;

/// The latency the mouth's `pacat` asks PulseAudio for: its timing comes from
/// the stream's clock, not from this, so it is generous (smaller ones ran
/// dry while two Chromiums kept both cores busy).
const MOUTH_LATENCY_MS: u32 = 40;
/// How far ahead of its playing the mouth writes (more than `pacat` buffers).
const LEAD: Duration = Duration::from_millis(150);
/// The latency the ear's `parec` asks for.
const EAR_LATENCY_MS: u32 = 10;
/// The mouth writes this many samples at a time (10 ms).
const CHUNK: usize = SAMPLE_RATE as usize / 100;
/// The mouth re-places its beeps when its clock's reading moves by more
/// than this many samples (1 ms).
const REPLACE_AFTER: u64 = SAMPLE_RATE as u64 / 1000;
/// A clock's reports count this long either side of an instant.
const REPORTS_AROUND_S: f64 = 1.0;
/// A clock is running once it has this many reports of a moving stream.
const RUNNING_AFTER: usize = 5;

/// The delay of each beep of `played` (whole seconds) to the first of
/// `heard` (ms since the epoch) from [`EARLY_MS`] before its second to as
/// long before the next; beeps not heard are left out.
pub fn delays_ms(played: &[u64], heard: &[f64]) -> Vec<f64> {
    played
        .iter()
        .filter_map(|&second| {
            let at = second as f64 * 1000.0;
            heard
                .iter()
                .map(|onset| onset - at)
                .find(|delay| (-EARLY_MS..1000.0 - EARLY_MS).contains(delay))
        })
        .collect()
}

/// Plays the beeps into a sink (`pacat`), each placed by the stream's clock
/// so that it is played at its whole second.
pub struct Mouth {
    child: Child,
    clock: StreamClock,
    stop: Arc<AtomicBool>,
    beeping: Arc<AtomicBool>,
    /// The whole seconds whose beeps were written, so far.
    played: Arc<Mutex<Vec<u64>>>,
    writer: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Mouth {
    pub fn start(pulse: &PulseAudio, sink: &str) -> anyhow::Result<Mouth> {
        let mut child = pulse
            .command("pacat")
            .args(["--playback", "--verbose", "--raw", "--format=float32le"])
            .args(["--rate=48000", "--channels=1"])
            .arg(format!("--latency-msec={MOUTH_LATENCY_MS}"))
            .arg(format!("--device={sink}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run pacat: {PULSE_HINT}"))?;
        let clock = StreamClock::follow(child.stderr.take().context("no stderr")?);
        let stdin = child.stdin.take().context("no stdin")?;
        let stop = Arc::new(AtomicBool::new(false));
        let beeping = Arc::new(AtomicBool::new(true));
        let played = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let (clock, stop, beeping, played) = (
                clock.clone(),
                Arc::clone(&stop),
                Arc::clone(&beeping),
                Arc::clone(&played),
            );
            std::thread::spawn(move || write_beeps(stdin, &clock, &stop, &beeping, &played))
        };
        Ok(Mouth {
            child,
            clock,
            stop,
            beeping,
            played,
            writer: Some(writer),
        })
    }

    /// Waits up to `limit` until it has played `count` beeps.
    pub fn wait_for_beeps(&mut self, count: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while lock(&self.played).len() < count {
            if Instant::now() > deadline {
                bail!("the mouth played fewer than {count} beeps within {limit:?}");
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("pacat exited ({status})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Plays silence from now on (the stream keeps its sink running).
    pub fn hush(&self) {
        self.beeping.store(false, Ordering::Relaxed);
    }

    /// Stops; the whole seconds whose beeps it played, and how its clock reported.
    pub fn finish(mut self) -> anyhow::Result<(Vec<u64>, ClockSummary)> {
        // Before its stream runs dry.
        let summary = self.clock.summary();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(writer) = self.writer.take() {
            writer
                .join()
                .map_err(|_| anyhow::anyhow!("the mouth's writer panicked"))?
                .context("the mouth could not write to pacat")?;
        }
        let mut played = lock(&self.played).clone();
        played.dedup();
        Ok((played, summary))
    }
}

impl Drop for Mouth {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mouth's writer: the beep signal, [`LEAD`] ahead of its playing, placed
/// by the stream's clock (silence until the clock runs, or when hushed).
fn write_beeps(
    mut pacat: impl std::io::Write,
    clock: &StreamClock,
    stop: &AtomicBool,
    beeping: &AtomicBool,
    played: &Mutex<Vec<u64>>,
) -> anyhow::Result<()> {
    let beeps = BeepSource::new(BEEP_HZ, SystemTime::now())?;
    let rate = f64::from(SAMPLE_RATE);
    let started = unix_seconds(SystemTime::now());
    let mut written: u64 = 0;
    // The absolute index (`duet_media::test_audio::sample_index`) of the
    // sample played with stream sample 0: moved only when the clock's reading
    // moves by more than [`REPLACE_AFTER`] samples, so the signal stays whole.
    let mut shift: Option<u64> = None;
    let mut bytes = Vec::with_capacity(CHUNK * 4);
    while !stop.load(Ordering::Relaxed) {
        // Wall clock minus stream time: where the stream is now.
        let offset = clock.offset_recent();
        if let Some(offset) = offset {
            let reading = (offset * rate).round() as u64;
            if shift.is_none_or(|shift| shift.abs_diff(reading) > REPLACE_AFTER) {
                shift = Some(reading);
            }
        }
        let due = offset.unwrap_or(started) + written as f64 / rate;
        let ahead = due - unix_seconds(SystemTime::now()) - LEAD.as_secs_f64();
        if ahead > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(ahead.min(0.01)));
            continue;
        }
        bytes.clear();
        let first = shift
            .filter(|_| beeping.load(Ordering::Relaxed))
            .map(|shift| shift + written);
        for n in 0..CHUNK as u64 {
            let sample = first.map_or(0.0, |first| beeps.sample(first + n));
            bytes.extend_from_slice(&sample.to_le_bytes());
        }
        if let Some(first) = first {
            let rate = u64::from(SAMPLE_RATE);
            let seconds = first.div_ceil(rate)..(first + CHUNK as u64).div_ceil(rate);
            lock(played).extend(seconds);
        }
        pacat.write_all(&bytes)?;
        written += CHUNK as u64;
    }
    Ok(())
}

/// Says when beeps start in a source (`parec`).
pub struct Ear {
    child: Child,
    clock: StreamClock,
    reader: Option<JoinHandle<anyhow::Result<Vec<u64>>>>,
}

impl Ear {
    pub fn start(pulse: &PulseAudio, source: &str) -> anyhow::Result<Ear> {
        let mut child = pulse
            .command("parec")
            .args(["--verbose", "--raw", "--format=float32le"])
            .args(["--rate=48000", "--channels=1"])
            .arg(format!("--latency-msec={EAR_LATENCY_MS}"))
            .arg(format!("--device={source}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run parec: {PULSE_HINT}"))?;
        let clock = StreamClock::follow(child.stderr.take().context("no stderr")?);
        let stdout = child.stdout.take().context("no stdout")?;
        let reader = std::thread::spawn(move || find_onsets(stdout));
        Ok(Ear {
            child,
            clock,
            reader: Some(reader),
        })
    }

    /// Waits up to `limit` until its stream runs.
    pub fn wait_until_running(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while !self.clock.running() {
            if Instant::now() > deadline {
                bail!("the ear heard nothing within {limit:?}");
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("parec exited ({status})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops; when each beep started (ms since the epoch), and how its clock reported.
    pub fn finish(mut self) -> anyhow::Result<(Vec<f64>, ClockSummary)> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let onsets = match self.reader.take() {
            Some(reader) => reader
                .join()
                .map_err(|_| anyhow::anyhow!("the ear's reader panicked"))??,
            None => Vec::new(),
        };
        let rate = f64::from(SAMPLE_RATE);
        let heard = onsets
            .iter()
            .filter_map(|&index| {
                let stream_s = index as f64 / rate;
                let offset = self.clock.offset_near(stream_s)?;
                Some((stream_s + offset) * 1000.0)
            })
            .collect();
        Ok((heard, self.clock.summary()))
    }
}

impl Drop for Ear {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `parec`'s samples to the end; the index of each beep's onset.
fn find_onsets(mut parec: impl std::io::Read) -> anyhow::Result<Vec<u64>> {
    let mut onsets = OnsetReader::new();
    let mut found = Vec::new();
    let mut bytes = vec![0u8; 16 * 1024];
    let mut pending = Vec::new();
    let mut samples = Vec::new();
    let mut index = 0u64;
    loop {
        let read = parec.read(&mut bytes)?;
        if read == 0 {
            return Ok(found);
        }
        pending.extend_from_slice(&bytes[..read]);
        let whole = pending.len() / 4 * 4;
        samples.clear();
        samples.extend(
            pending[..whole]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        pending.drain(..whole);
        onsets.push(index, &samples, |onset| found.push(onset));
        index += samples.len() as u64;
    }
}

/// A `pacat` or `parec` stream's clock, from the reports it prints with
/// `--verbose` (`Time: 1.181 sec; Latency: -4387 usec.`, each ended by a
/// carriage return): when, on the wall clock, the stream was where.
#[derive(Debug, Clone, Default)]
pub struct StreamClock(Arc<Mutex<Reports>>);

#[derive(Debug, Default)]
struct Reports {
    /// (stream time, wall clock − stream time), in seconds, oldest first.
    points: Vec<(f64, f64)>,
    underruns: u64,
}

impl StreamClock {
    /// Follows the reports on `stderr`, in a thread of its own.
    fn follow(stderr: ChildStderr) -> StreamClock {
        let clock = StreamClock::default();
        let reports = Arc::clone(&clock.0);
        std::thread::spawn(move || {
            let mut stderr = BufReader::new(stderr);
            let mut line = Vec::new();
            // Reports end with '\r', messages with '\n': split at both.
            while stderr.read_until(b'\r', &mut line).is_ok_and(|n| n > 0) {
                let now = unix_seconds(SystemTime::now());
                for part in String::from_utf8_lossy(&line).split('\n') {
                    let mut reports = lock(&reports);
                    if let Some(time) = stream_time(part) {
                        reports.points.push((time, now - time));
                    } else if part.contains("underrun") {
                        reports.underruns += 1;
                    }
                }
                line.clear();
            }
        });
        clock
    }

    /// Whether its stream moves.
    fn running(&self) -> bool {
        lock(&self.0).points.iter().filter(|p| p.0 > 0.0).count() >= RUNNING_AFTER
    }

    /// Wall clock minus stream time around `stream_s`.
    fn offset_near(&self, stream_s: f64) -> Option<f64> {
        let reports = lock(&self.0);
        let around = reports
            .points
            .iter()
            .filter(|(time, _)| *time > 0.0 && (time - stream_s).abs() <= REPORTS_AROUND_S)
            .map(|(_, offset)| *offset);
        lower_quartile(around)
    }

    /// Wall clock minus stream time now: over the last second's reports.
    fn offset_recent(&self) -> Option<f64> {
        let latest = lock(&self.0).points.last().map(|p| p.0)?;
        self.offset_near(latest)
    }

    /// How it reported.
    fn summary(&self) -> ClockSummary {
        let reports = lock(&self.0);
        let moving: Vec<f64> = reports
            .points
            .iter()
            .filter(|(time, _)| *time > 0.0)
            .map(|(_, offset)| *offset)
            .collect();
        // How far each report was from the clock's reading around it.
        let mut late: Vec<f64> = reports
            .points
            .iter()
            .filter(|(time, _)| *time > 0.0)
            .filter_map(|(time, offset)| {
                let around = reports
                    .points
                    .iter()
                    .filter(|(t, _)| *t > 0.0 && (t - time).abs() <= REPORTS_AROUND_S)
                    .map(|(_, o)| *o);
                Some((offset - lower_quartile(around)?) * 1000.0)
            })
            .collect();
        late.sort_by(f64::total_cmp);
        ClockSummary {
            reports: moving.len(),
            late_p90_ms: duet_measure::nearest_rank(&late, 90.0).unwrap_or(0.0),
            underruns: reports.underruns,
        }
    }
}

/// How a stream's clock reported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClockSummary {
    /// Reports of a moving stream.
    pub reports: usize,
    /// 90th percentile of how much later than the clock's reading a report
    /// came (scheduling, and the 1 ms steps of the printed time).
    pub late_p90_ms: f64,
    /// Underruns `pacat` reported (its stream ran dry).
    pub underruns: u64,
}

impl ClockSummary {
    /// Both together.
    pub fn merge(self, other: ClockSummary) -> ClockSummary {
        ClockSummary {
            reports: self.reports + other.reports,
            late_p90_ms: self.late_p90_ms.max(other.late_p90_ms),
            underruns: self.underruns + other.underruns,
        }
    }
}

/// The stream time of a report line, `Time: 1.181 sec; Latency: -4387 usec.`
fn stream_time(line: &str) -> Option<f64> {
    let rest = line.trim().strip_prefix("Time: ")?;
    rest.split_once(" sec")?.0.parse().ok()
}

fn lower_quartile(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    duet_measure::nearest_rank(&values, 25.0)
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Locks `mutex`, also when a thread panicked holding it (what it guards
/// stays consistent: values are only pushed).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Finds beep onsets: a 5 ms RMS window (sliding sample by sample) rising
/// above [`OnsetReader::THRESHOLD`] after 300 ms below it, followed by a tone
/// at [`BEEP_HZ`] (most of the power of the 60 ms from 20 ms after the onset
/// at that frequency, by a Goertzel filter). The rule of
/// `docs/test-signals.md` with a lower threshold, so that the onset barely
/// depends on the level gain control leaves.
struct OnsetReader {
    window: std::collections::VecDeque<f32>,
    sum_squares: f64,
    /// Samples in a row below the threshold.
    quiet: u64,
    /// An onset being judged: its index and the samples since.
    pending: Option<(u64, Vec<f32>)>,
}

impl OnsetReader {
    const WINDOW: usize = SAMPLE_RATE as usize / 200;
    const QUIET: u64 = SAMPLE_RATE as u64 * 3 / 10;
    /// −34 dBFS: far above silence and a codec's comfort noise, far below a
    /// beep at any level gain control leaves it.
    const THRESHOLD: f64 = 0.02;
    const TONE_FROM: usize = SAMPLE_RATE as usize / 50;
    const TONE_LEN: usize = SAMPLE_RATE as usize * 6 / 100;
    /// Least share of the power at the beep's frequency.
    const TONE_SHARE: f64 = 0.5;

    fn new() -> OnsetReader {
        OnsetReader {
            window: std::collections::VecDeque::with_capacity(Self::WINDOW + 1),
            sum_squares: 0.0,
            quiet: Self::QUIET,
            pending: None,
        }
    }

    /// Feeds `samples`, the first at index `first`; `found` gets the index
    /// of each beep's onset.
    fn push(&mut self, first: u64, samples: &[f32], mut found: impl FnMut(u64)) {
        for (index, &sample) in (first..).zip(samples) {
            if let Some((onset, tail)) = &mut self.pending {
                tail.push(sample);
                if tail.len() >= Self::TONE_FROM + Self::TONE_LEN {
                    let share = tone_share(&tail[Self::TONE_FROM..], f64::from(BEEP_HZ));
                    if share >= Self::TONE_SHARE {
                        found(*onset);
                    }
                    self.pending = None;
                }
            }
            self.sum_squares += f64::from(sample) * f64::from(sample);
            self.window.push_back(sample);
            if self.window.len() > Self::WINDOW
                && let Some(old) = self.window.pop_front()
            {
                self.sum_squares -= f64::from(old) * f64::from(old);
            }
            let rms = (self.sum_squares.max(0.0) / Self::WINDOW as f64).sqrt();
            if rms > Self::THRESHOLD {
                if self.quiet >= Self::QUIET && self.pending.is_none() {
                    let tail = Vec::with_capacity(Self::TONE_FROM + Self::TONE_LEN);
                    self.pending = Some((index, tail));
                }
                self.quiet = 0;
            } else {
                self.quiet += 1;
            }
        }
    }
}

/// The share of the power of `samples` that is at `hz` (a Goertzel filter):
/// about 1 for a sine at that frequency, about 0 for anything else.
fn tone_share(samples: &[f32], hz: f64) -> f64 {
    let omega = std::f64::consts::TAU * hz / f64::from(SAMPLE_RATE);
    let coefficient = 2.0 * omega.cos();
    let (mut s1, mut s2, mut energy) = (0.0, 0.0, 0.0);
    for &x in samples {
        let x = f64::from(x);
        let s0 = x + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
        energy += x * x;
    }
    let n = samples.len() as f64;
    let power_at_hz = (s1 * s1 + s2 * s2 - coefficient * s1 * s2) * 2.0 / (n * n);
    let mean_square = energy / n;
    if mean_square > 0.0 {
        power_at_hz / mean_square
    } else {
        0.0
    }
}
