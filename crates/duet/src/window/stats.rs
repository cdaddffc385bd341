//! The stats overlay's figures: rates worked out from two readings of a
//! call's running totals ([`LiveFigures`]) a second or more apart. No I/O.

use std::time::{Duration, Instant};

use duet_call::{LiveFigures, PathKind};

/// What the overlay shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsView {
    /// Size of the remote picture.
    pub remote_size: Option<(u32, u32)>,
    /// Remote pictures decoded per second.
    pub fps_in: f64,
    /// Local pictures sent per second.
    pub fps_out: f64,
    /// Video received, kbit/s.
    pub kbps_in: f64,
    /// Video sent, kbit/s.
    pub kbps_out: f64,
    /// Round-trip time.
    pub rtt_ms: Option<f64>,
    /// Inbound packets lost since the overlay started counting.
    pub packets_lost: Option<i64>,
    /// Camera-to-screen latency of the newest stamped frames.
    pub video_latency_ms: Option<f64>,
    /// Mouth-to-ear latency of the newest beeps.
    pub audio_latency_ms: Option<f64>,
    /// Which way the packets go.
    pub path: Option<PathKind>,
}

impl StatsView {
    /// The overlay's lines.
    pub fn lines(&self) -> Vec<String> {
        let ms = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.0} ms"));
        let size = self
            .remote_size
            .map_or("–".to_owned(), |(w, h)| format!("{w}×{h}"));
        vec![
            format!(
                "video in   {size} · {:.0} fps · {:.0} kbit/s",
                self.fps_in, self.kbps_in
            ),
            format!(
                "video out  {:.0} fps · {:.0} kbit/s",
                self.fps_out, self.kbps_out
            ),
            format!(
                "network    {} · RTT {} · {} packets lost",
                self.path.map_or("–", PathKind::words),
                ms(self.rtt_ms),
                self.packets_lost.map_or("–".to_owned(), |n| n.to_string())
            ),
            format!(
                "latency    video {} · audio {}",
                ms(self.video_latency_ms),
                ms(self.audio_latency_ms)
            ),
        ]
    }
}

/// Turns readings into a [`StatsView`] about once a second.
#[derive(Debug, Default)]
pub struct StatsMeter {
    previous: Option<(Instant, LiveFigures)>,
    view: Option<StatsView>,
}

/// Rates are taken over at least this long, so they do not flicker.
const WINDOW: Duration = Duration::from_secs(1);

impl StatsMeter {
    /// Takes a reading; rates update once a [`WINDOW`] has passed since the last update.
    pub fn update(&mut self, now: Instant, figures: LiveFigures) {
        let Some((then, before)) = self.previous else {
            self.previous = Some((now, figures));
            return;
        };
        let elapsed = now.saturating_duration_since(then);
        if elapsed < WINDOW {
            return;
        }
        let secs = elapsed.as_secs_f64();
        let rate = |after: u64, before: u64| after.saturating_sub(before) as f64 / secs;
        self.view = Some(StatsView {
            remote_size: figures.remote_size,
            fps_in: rate(figures.frames_decoded, before.frames_decoded),
            fps_out: rate(figures.frames_sent, before.frames_sent),
            kbps_in: rate(figures.video_bytes_received, before.video_bytes_received) * 8.0 / 1000.0,
            kbps_out: rate(figures.video_bytes_sent, before.video_bytes_sent) * 8.0 / 1000.0,
            rtt_ms: figures.rtt_ms,
            packets_lost: figures.packets_lost,
            video_latency_ms: figures.video_latency_ms,
            audio_latency_ms: figures.audio_latency_ms,
            path: figures.path,
        });
        self.previous = Some((now, figures));
    }

    /// The newest figures, once there are two readings a second apart.
    pub fn view(&self) -> Option<&StatsView> {
        self.view.as_ref()
    }

    /// Starts over (a new call).
    pub fn reset(&mut self) {
        *self = StatsMeter::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_two_readings_at_least_a_second_apart() {
        let t0 = Instant::now();
        let mut meter = StatsMeter::default();
        meter.update(t0, LiveFigures::default());
        assert!(meter.view().is_none());
        let later = LiveFigures {
            frames_sent: 60,
            frames_decoded: 58,
            video_bytes_sent: 250_000,
            video_bytes_received: 125_000,
            remote_size: Some((640, 480)),
            rtt_ms: Some(1.5),
            packets_lost: Some(0),
            video_latency_ms: Some(4.0),
            audio_latency_ms: Some(47.0),
            path: Some(PathKind::Relayed),
        };
        meter.update(t0 + Duration::from_millis(500), later);
        assert!(meter.view().is_none(), "too soon for a rate");
        meter.update(t0 + Duration::from_secs(2), later);
        let view = meter.view().expect("a view after two seconds");
        assert_eq!(view.fps_out, 30.0);
        assert_eq!(view.fps_in, 29.0);
        assert_eq!(view.kbps_out, 1000.0);
        assert_eq!(view.kbps_in, 500.0);
        let lines = view.lines().join("\n");
        assert!(lines.contains("640×480 · 29 fps · 500 kbit/s"), "{lines}");
        assert!(
            lines.contains("network    relayed (TURN) · RTT 2 ms"),
            "{lines}"
        );
        assert!(lines.contains("RTT 2 ms · 0 packets lost"), "{lines}");
        assert!(lines.contains("video 4 ms · audio 47 ms"), "{lines}");
    }
}
