//! `.y4m` video files (8-bit 4:2:0) as a looped, real-time paced source.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::MediaError;
use crate::frame::VideoFrame;
use crate::test_video::FramePacer;

/// What is wrong with a video file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Y4mError {
    /// The file is empty.
    #[error("the file is empty")]
    Empty,
    /// The file does not start with `YUV4MPEG2 `.
    #[error("not a Y4M file (it does not start with \"YUV4MPEG2 \")")]
    WrongMagic,
    /// The stream header or a frame header cannot be parsed.
    #[error("malformed header: {0}")]
    Malformed(String),
    /// Not 8-bit 4:2:0.
    #[error("unsupported colour space {0}; only 8-bit 4:2:0 is supported")]
    UnsupportedColorspace(String),
    /// Width or height is odd (H.264 and 4:2:0 need even sizes).
    #[error("odd size {width}x{height}: 4:2:0 video needs an even width and height")]
    OddSize {
        /// Width in the header.
        width: usize,
        /// Height in the header.
        height: usize,
    },
    /// A frame ends before its planes do.
    #[error("frame {frame} is truncated")]
    TruncatedFrame {
        /// Index of the frame, from 0.
        frame: u64,
    },
    /// No frame at all after the header.
    #[error("the file has a header but no frames")]
    NoFrames,
    /// Reading failed.
    #[error("{0}")]
    Io(String),
}

/// Reads frames from a `.y4m` file, starting over at the end.
pub struct Y4mSource {
    path: PathBuf,
    decoder: y4m::Decoder<BufReader<File>>,
    width: u32,
    height: u32,
    frame_index: u64,
    pacer: FramePacer,
}

impl std::fmt::Debug for Y4mSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Y4mSource")
            .field("path", &self.path)
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

fn file_error(path: &Path, error: Y4mError) -> MediaError {
    MediaError::VideoFile {
        path: path.to_owned(),
        error,
    }
}

/// A decoder positioned at the first frame, with the picture size and frame rate.
struct OpenedFile {
    decoder: y4m::Decoder<BufReader<File>>,
    width: u32,
    height: u32,
    fps: f64,
}

fn open_decoder(path: &Path) -> Result<OpenedFile, MediaError> {
    let mut file = File::open(path).map_err(|e| file_error(path, Y4mError::Io(e.to_string())))?;
    let mut magic = [0u8; 10];
    let read = file
        .read(&mut magic)
        .map_err(|e| file_error(path, Y4mError::Io(e.to_string())))?;
    if read == 0 {
        return Err(file_error(path, Y4mError::Empty));
    }
    if read < magic.len() || &magic != b"YUV4MPEG2 " {
        return Err(file_error(path, Y4mError::WrongMagic));
    }
    let file_len = file
        .metadata()
        .map_err(|e| file_error(path, Y4mError::Io(e.to_string())))?
        .len();
    let mut head = magic.to_vec();
    let mut rest = [0u8; 256];
    let n = file
        .read(&mut rest)
        .map_err(|e| file_error(path, Y4mError::Io(e.to_string())))?;
    head.extend_from_slice(&rest[..n]);
    let header_len = head.iter().position(|&b| b == b'\n').map(|p| p as u64 + 1);
    let file = File::open(path).map_err(|e| file_error(path, Y4mError::Io(e.to_string())))?;
    let decoder = y4m::Decoder::new(BufReader::new(file)).map_err(|e| match e {
        y4m::Error::UnknownColorspace => {
            file_error(path, Y4mError::UnsupportedColorspace("(unknown)".into()))
        }
        other => file_error(path, Y4mError::Malformed(other.to_string())),
    })?;
    match decoder.get_colorspace() {
        y4m::Colorspace::C420
        | y4m::Colorspace::C420jpeg
        | y4m::Colorspace::C420paldv
        | y4m::Colorspace::C420mpeg2 => {}
        other => {
            return Err(file_error(
                path,
                Y4mError::UnsupportedColorspace(format!("{other:?}")),
            ));
        }
    }
    let (width, height) = (decoder.get_width(), decoder.get_height());
    if width % 2 != 0 || height % 2 != 0 {
        return Err(file_error(path, Y4mError::OddSize { width, height }));
    }
    // The y4m crate reports a frame cut short as a clean end of file, so the
    // size is checked here: frames of plain `FRAME\n` headers must fill the file.
    if let Some(header_len) = header_len {
        let frame_len = (width * height + 2 * width.div_ceil(2) * height.div_ceil(2) + 6) as u64;
        let body = file_len.saturating_sub(header_len);
        if body % frame_len != 0 {
            return Err(file_error(
                path,
                Y4mError::TruncatedFrame {
                    frame: body / frame_len,
                },
            ));
        }
    }
    let too_big = || file_error(path, Y4mError::Malformed(format!("size {width}x{height}")));
    let w = u32::try_from(width).map_err(|_| too_big())?;
    let h = u32::try_from(height).map_err(|_| too_big())?;
    let rate = decoder.get_framerate();
    let fps = if rate.num > 0 && rate.den > 0 {
        rate.num as f64 / rate.den as f64
    } else {
        30.0
    };
    Ok(OpenedFile {
        decoder,
        width: w,
        height: h,
        fps,
    })
}

impl Y4mSource {
    /// Opens `path`; `fps` overrides the file's frame rate when given.
    pub fn open(path: &Path, fps: Option<u32>) -> Result<Y4mSource, MediaError> {
        let OpenedFile {
            decoder,
            width,
            height,
            fps: file_fps,
        } = open_decoder(path)?;
        let fps = fps.map_or(file_fps, f64::from).clamp(1.0, 240.0);
        let mut source = Y4mSource {
            path: path.to_owned(),
            decoder,
            width,
            height,
            frame_index: 0,
            pacer: FramePacer::new(Instant::now(), Duration::from_secs_f64(1.0 / fps)),
        };
        // Read the first frame now so a file without frames fails at open.
        source.read_next()?;
        source.rewind()?;
        Ok(source)
    }

    /// Picture width.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Picture height.
    pub fn height(&self) -> u32 {
        self.height
    }

    fn rewind(&mut self) -> Result<(), MediaError> {
        self.decoder = open_decoder(&self.path)?.decoder;
        self.frame_index = 0;
        Ok(())
    }

    /// The next frame in file order, starting over after the last; not paced.
    pub fn read_next(&mut self) -> Result<VideoFrame, MediaError> {
        let error = match self.decoder.read_frame() {
            Ok(frame) => {
                let frame = VideoFrame::from_planes(
                    self.width,
                    self.height,
                    frame.get_y_plane(),
                    frame.get_u_plane(),
                    frame.get_v_plane(),
                    SystemTime::now(),
                )?;
                self.frame_index += 1;
                return Ok(frame);
            }
            Err(error) => error,
        };
        let at_end = match &error {
            y4m::Error::EOF => true,
            y4m::Error::IoError(io) => io.kind() != std::io::ErrorKind::UnexpectedEof,
            y4m::Error::ParseError(_) => false,
            _ => false,
        };
        let index = self.frame_index;
        match error {
            _ if at_end && index > 0 => {
                self.rewind()?;
                self.read_next()
            }
            _ if at_end => Err(file_error(&self.path, Y4mError::NoFrames)),
            y4m::Error::IoError(_) => Err(file_error(
                &self.path,
                Y4mError::TruncatedFrame { frame: index },
            )),
            other => Err(file_error(
                &self.path,
                Y4mError::Malformed(format!("frame {index}: {other}")),
            )),
        }
    }

    /// Waits for the next frame time, then returns the next frame stamped now.
    pub fn next_frame(&mut self) -> Result<VideoFrame, MediaError> {
        self.pacer.wait();
        let mut frame = self.read_next()?;
        frame.capture_time = SystemTime::now();
        Ok(frame)
    }
}

/// Writes frames as a `.y4m` file (for tests and for saving what was received).
pub fn write_y4m(path: &Path, frames: &[VideoFrame], fps: u32) -> Result<(), MediaError> {
    let first = frames
        .first()
        .ok_or_else(|| file_error(path, Y4mError::NoFrames))?;
    let io = |e: &dyn std::fmt::Display| file_error(path, Y4mError::Io(e.to_string()));
    let file = File::create(path).map_err(|e| io(&e))?;
    let mut encoder = y4m::encode(
        first.width() as usize,
        first.height() as usize,
        y4m::Ratio::new(fps as usize, 1),
    )
    .with_colorspace(y4m::Colorspace::C420jpeg)
    .write_header(std::io::BufWriter::new(file))
    .map_err(|e| io(&e))?;
    for frame in frames {
        let (y, u, v) = frame.planes();
        encoder
            .write_frame(&y4m::Frame::new([y, u, v], None))
            .map_err(|e| io(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::StampReader;
    use crate::test_video::TestPatternSource;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("duet-y4m-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join(name)
    }

    fn error_of(path: &Path) -> Y4mError {
        match Y4mSource::open(path, None) {
            Err(MediaError::VideoFile { error, path: p }) => {
                assert_eq!(p, path);
                error
            }
            other => panic!("expected a file error, got {other:?}"),
        }
    }

    fn three_frames(path: &Path) {
        let pattern = TestPatternSource::new(320, 240, 30).expect("valid");
        let frames: Vec<VideoFrame> = (0..3)
            .map(|i| pattern.draw(i, SystemTime::UNIX_EPOCH + Duration::from_millis(1000 + i)))
            .collect();
        write_y4m(path, &frames, 30).expect("writes");
    }

    #[test]
    fn a_good_file_round_trips_and_loops() {
        let path = temp("good.y4m");
        three_frames(&path);
        let mut source = Y4mSource::open(&path, None).expect("opens");
        assert_eq!((source.width(), source.height()), (320, 240));
        let stamps: Vec<Option<u32>> = (0..7)
            .map(|_| StampReader::read(&source.read_next().expect("frame")))
            .collect();
        assert_eq!(
            stamps,
            [1000, 1001, 1002, 1000, 1001, 1002, 1000]
                .map(Some)
                .to_vec()
        );
    }

    #[test]
    fn each_kind_of_bad_file_has_its_own_error() {
        let empty = temp("empty.y4m");
        std::fs::write(&empty, b"").expect("write");
        assert_eq!(error_of(&empty), Y4mError::Empty);

        let magic = temp("magic.y4m");
        std::fs::write(&magic, b"RIFF0000WAVEfmt ").expect("write");
        assert_eq!(error_of(&magic), Y4mError::WrongMagic);

        let odd = temp("odd.y4m");
        std::fs::write(&odd, b"YUV4MPEG2 W321 H240 F30:1 C420jpeg\n").expect("write");
        assert!(matches!(
            error_of(&odd),
            Y4mError::OddSize {
                width: 321,
                height: 240
            }
        ));

        let no_frames = temp("noframes.y4m");
        std::fs::write(&no_frames, b"YUV4MPEG2 W320 H240 F30:1 C420jpeg\n").expect("write");
        assert_eq!(error_of(&no_frames), Y4mError::NoFrames);

        let truncated = temp("truncated.y4m");
        three_frames(&truncated);
        let bytes = std::fs::read(&truncated).expect("read");
        std::fs::write(&truncated, &bytes[..bytes.len() / 6]).expect("write");
        assert_eq!(error_of(&truncated), Y4mError::TruncatedFrame { frame: 0 });

        let c444 = temp("c444.y4m");
        std::fs::write(&c444, b"YUV4MPEG2 W320 H240 F30:1 C444\nFRAME\n").expect("write");
        assert!(matches!(
            error_of(&c444),
            Y4mError::UnsupportedColorspace(_)
        ));

        let missing = temp("does-not-exist.y4m");
        assert!(matches!(error_of(&missing), Y4mError::Io(_)));
    }
}
