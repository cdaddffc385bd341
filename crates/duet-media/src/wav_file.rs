//! `.wav` audio files: a looped source (PCM 16-bit or float, any rate, mono or
//! stereo, converted to 48 kHz mono) and a writer for `--record-audio`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::MediaError;
use crate::frame::{AudioFrame, FRAME_SAMPLES, SAMPLE_RATE};
use crate::resample;
use crate::test_audio::{sample_index, sample_time};

/// What is wrong with an audio file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    /// The file is empty.
    #[error("the file is empty")]
    Empty,
    /// Not a RIFF/WAVE file, or its header is damaged.
    #[error("not a WAV file: {0}")]
    NotWav(String),
    /// A sample format Duet does not read.
    #[error("{0} is not supported; use 16-bit PCM or 32-bit float")]
    UnsupportedFormat(String),
    /// More than two channels.
    #[error("{0} channels are not supported; use mono or stereo")]
    UnsupportedChannels(u16),
    /// The data ends before the header says it does.
    #[error("the audio data is truncated after {samples} samples")]
    Truncated {
        /// Samples read before the end.
        samples: usize,
    },
    /// No samples at all.
    #[error("the file holds no audio")]
    NoAudio,
    /// Reading or writing failed.
    #[error("{0}")]
    Io(String),
}

fn file_error(path: &Path, error: WavError) -> MediaError {
    MediaError::AudioFile {
        path: path.to_owned(),
        error,
    }
}

/// Reads a whole WAV file as 48 kHz mono.
pub fn read_wav(path: &Path) -> Result<Vec<f32>, MediaError> {
    let metadata =
        std::fs::metadata(path).map_err(|e| file_error(path, WavError::Io(e.to_string())))?;
    if metadata.len() == 0 {
        return Err(file_error(path, WavError::Empty));
    }
    let reader = hound::WavReader::open(path).map_err(|e| {
        file_error(
            path,
            match e {
                hound::Error::IoError(io) => WavError::Io(io.to_string()),
                hound::Error::Unsupported => {
                    WavError::UnsupportedFormat("this WAV encoding".into())
                }
                other => WavError::NotWav(other.to_string()),
            },
        )
    })?;
    let spec = reader.spec();
    if !(1..=2).contains(&spec.channels) {
        return Err(file_error(
            path,
            WavError::UnsupportedChannels(spec.channels),
        ));
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => collect(path, reader.into_samples::<i16>(), |s| {
            f32::from(s) / 32768.0
        })?,
        (hound::SampleFormat::Float, 32) => collect(path, reader.into_samples::<f32>(), |s| s)?,
        (hound::SampleFormat::Int, bits) => {
            return Err(file_error(
                path,
                WavError::UnsupportedFormat(format!("{bits}-bit PCM")),
            ));
        }
        (hound::SampleFormat::Float, bits) => {
            return Err(file_error(
                path,
                WavError::UnsupportedFormat(format!("{bits}-bit float")),
            ));
        }
    };
    if interleaved.is_empty() {
        return Err(file_error(path, WavError::NoAudio));
    }
    let mono = resample::downmix(&interleaved, usize::from(spec.channels));
    resample::to_48k(mono, spec.sample_rate)
}

fn collect<S>(
    path: &Path,
    samples: impl Iterator<Item = hound::Result<S>>,
    convert: impl Fn(S) -> f32,
) -> Result<Vec<f32>, MediaError> {
    let mut out = Vec::new();
    for sample in samples {
        match sample {
            Ok(s) => out.push(convert(s)),
            // The header promised more samples than the file holds.
            Err(hound::Error::IoError(_)) => {
                return Err(file_error(path, WavError::Truncated { samples: out.len() }));
            }
            Err(other) => return Err(file_error(path, WavError::Io(other.to_string()))),
        }
    }
    Ok(out)
}

/// A WAV file played in a loop, paced in real time in 20 ms frames.
#[derive(Debug)]
pub struct WavSource {
    path: PathBuf,
    samples: Vec<f32>,
    position: usize,
    next_sample: u64,
}

impl WavSource {
    /// Reads the whole file (converted to 48 kHz mono) into memory.
    pub fn open(path: &Path) -> Result<WavSource, MediaError> {
        Ok(WavSource {
            path: path.to_owned(),
            samples: read_wav(path)?,
            position: 0,
            next_sample: sample_index(SystemTime::now()),
        })
    }

    /// The next 20 ms, starting over at the end of the file; not paced.
    pub fn generate(&mut self) -> AudioFrame {
        let mut samples = Vec::with_capacity(FRAME_SAMPLES);
        while samples.len() < FRAME_SAMPLES {
            let take = (FRAME_SAMPLES - samples.len()).min(self.samples.len() - self.position);
            samples.extend_from_slice(&self.samples[self.position..self.position + take]);
            self.position = (self.position + take) % self.samples.len();
        }
        let frame = AudioFrame {
            samples,
            capture_time: sample_time(self.next_sample),
        };
        self.next_sample += FRAME_SAMPLES as u64;
        frame
    }

    /// Waits until the next frame is due on the wall clock, then returns it.
    pub fn next_frame(&mut self) -> AudioFrame {
        if let Ok(wait) = sample_time(self.next_sample).duration_since(SystemTime::now()) {
            std::thread::sleep(wait.min(Duration::from_millis(100)));
        }
        self.generate()
    }

    /// The file this plays.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes 48 kHz mono 16-bit WAV, as `--record-audio` asks.
pub struct WavRecorder {
    path: PathBuf,
    writer: hound::WavWriter<std::io::BufWriter<std::fs::File>>,
}

impl std::fmt::Debug for WavRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavRecorder")
            .field("path", &self.path)
            .finish()
    }
}

impl WavRecorder {
    /// Creates (or replaces) `path`.
    pub fn create(path: &Path) -> Result<WavRecorder, MediaError> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec)
            .map_err(|e| file_error(path, WavError::Io(e.to_string())))?;
        Ok(WavRecorder {
            path: path.to_owned(),
            writer,
        })
    }

    /// Appends samples in [-1, 1] (clipped).
    pub fn write(&mut self, samples: &[f32]) -> Result<(), MediaError> {
        for &s in samples {
            let value = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
            self.writer
                .write_sample(value)
                .map_err(|e| file_error(&self.path, WavError::Io(e.to_string())))?;
        }
        Ok(())
    }

    /// Writes the header's final sizes and closes the file.
    pub fn finish(self) -> Result<(), MediaError> {
        let path = self.path;
        self.writer
            .finalize()
            .map_err(|e| file_error(&path, WavError::Io(e.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("duet-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join(name)
    }

    fn write(path: &Path, spec: hound::WavSpec, frames: usize) {
        let mut writer = hound::WavWriter::create(path, spec).expect("create");
        for n in 0..frames * usize::from(spec.channels) {
            let v = ((n as f32) * 0.01).sin() * 0.25;
            match (spec.sample_format, spec.bits_per_sample) {
                (hound::SampleFormat::Float, _) => writer.write_sample(v).expect("write"),
                (_, 16) => writer.write_sample((v * 32767.0) as i16).expect("write"),
                (_, bits) => writer
                    .write_sample((v * (1 << (bits - 1)) as f32) as i32)
                    .expect("write"),
            }
        }
        writer.finalize().expect("finalize");
    }

    fn error_of(path: &Path) -> WavError {
        match read_wav(path) {
            Err(MediaError::AudioFile { error, .. }) => error,
            other => panic!("expected a file error, got {other:?}"),
        }
    }

    fn spec(channels: u16, rate: u32, bits: u16, float: bool) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        }
    }

    #[test]
    fn good_files_of_every_supported_kind_read_as_48k_mono() {
        for (channels, rate, bits, float) in [
            (1, 48_000, 16, false),
            (2, 44_100, 16, false),
            (1, 16_000, 32, true),
            (2, 48_000, 32, true),
        ] {
            let path = temp(&format!("good-{channels}-{rate}-{bits}.wav"));
            write(&path, spec(channels, rate, bits, float), rate as usize / 2);
            let samples = read_wav(&path).expect("reads");
            assert!(
                (23_000..=24_500).contains(&samples.len()),
                "{path:?}: {}",
                samples.len()
            );
        }
    }

    #[test]
    fn the_recorder_writes_what_the_reader_reads_and_the_source_loops() {
        let path = temp("recorded.wav");
        let mut recorder = WavRecorder::create(&path).expect("create");
        let tone: Vec<f32> = (0..1000).map(|n| (n as f32 * 0.05).sin() * 0.5).collect();
        recorder.write(&tone).expect("write");
        recorder.finish().expect("finish");
        let back = read_wav(&path).expect("reads");
        assert_eq!(back.len(), 1000);
        assert!(back.iter().zip(&tone).all(|(a, b)| (a - b).abs() < 1e-3));
        let mut source = WavSource::open(&path).expect("opens");
        let frame = source.generate();
        assert_eq!(frame.samples.len(), 960);
        let frame = source.generate();
        // Sample 960 of the loop is sample 960 of the file; sample 1000 wraps to 0.
        assert!((frame.samples[0] - tone[960]).abs() < 1e-3);
        assert!((frame.samples[40] - tone[0]).abs() < 1e-3);
    }

    #[test]
    fn each_kind_of_bad_file_has_its_own_error() {
        let empty = temp("empty.wav");
        std::fs::write(&empty, b"").expect("write");
        assert_eq!(error_of(&empty), WavError::Empty);

        let magic = temp("magic.wav");
        std::fs::write(&magic, b"YUV4MPEG2 W320 H240 F30:1\n").expect("write");
        assert!(matches!(error_of(&magic), WavError::NotWav(_)));

        let deep = temp("24bit.wav");
        write(&deep, spec(1, 48_000, 24, false), 100);
        assert_eq!(
            error_of(&deep),
            WavError::UnsupportedFormat("24-bit PCM".into())
        );

        let truncated = temp("truncated.wav");
        write(&truncated, spec(1, 48_000, 16, false), 4800);
        let bytes = std::fs::read(&truncated).expect("read");
        std::fs::write(&truncated, &bytes[..bytes.len() - 1001]).expect("write");
        assert!(
            matches!(error_of(&truncated), WavError::Truncated { .. }),
            "{:?}",
            error_of(&truncated)
        );

        let silent = temp("nodata.wav");
        write(&silent, spec(1, 48_000, 16, false), 0);
        assert_eq!(error_of(&silent), WavError::NoAudio);
    }
}
