//! Reading a PipeWire video stream of a screen, as the desktop portal hands
//! it over (`screen_portal.rs`): a thread of its own (`duet-pipewire`; the
//! PipeWire objects cannot leave it) negotiates packed 32-bit RGB in shared
//! memory and keeps the newest picture for the capture side.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pipewire as pw;
use pw::spa;

/// How often the thread looks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// The newest picture of the stream, tightly packed BGRX.
#[derive(Debug, Default)]
pub(crate) struct Picture {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) bgrx: Vec<u8>,
}

/// What the PipeWire thread hands to the capture side.
#[derive(Debug, Default)]
pub(crate) struct StreamNews {
    picture: Option<Picture>,
    /// How many pictures came so far: which one [`StreamNews::newest`] is.
    pictures: u64,
    /// Why the stream ended, once it has.
    ended: Option<String>,
}

/// [`StreamNews`] behind a lock, with a signal for the first picture.
#[derive(Debug, Default)]
struct NewsBoard {
    news: Mutex<StreamNews>,
    changed: Condvar,
}

impl StreamNews {
    /// The newest picture and its number (the same number: the same
    /// picture), or why there is none.
    pub(crate) fn newest(&self) -> Result<(u64, &Picture), String> {
        if let Some(why) = &self.ended {
            return Err(why.clone());
        }
        self.picture
            .as_ref()
            .map(|picture| (self.pictures, picture))
            .ok_or_else(|| "the shared screen has no picture".to_owned())
    }

    fn put(&mut self, picture: Picture) {
        self.picture = Some(picture);
        self.pictures += 1;
    }
}

impl NewsBoard {
    fn lock(&self) -> MutexGuard<'_, StreamNews> {
        self.news
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn end(&self, why: String) {
        let mut news = self.lock();
        if news.ended.is_none() {
            tracing::info!(%why, "screen stream ended");
            news.ended = Some(why);
        }
        self.changed.notify_all();
    }
}

/// The thread that reads a screen's stream; stopped (and joined) when
/// dropped.
#[derive(Debug)]
pub(crate) struct StreamReader {
    board: Arc<NewsBoard>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StreamReader {
    /// Reads the stream `node` of the PipeWire connection `remote`.
    pub(crate) fn start(remote: OwnedFd, node: u32) -> Result<StreamReader, String> {
        let board = Arc::new(NewsBoard::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("duet-pipewire".into())
            .spawn({
                let (board, stop) = (Arc::clone(&board), Arc::clone(&stop));
                move || {
                    if let Err(err) = read_stream(remote, node, &board, &stop) {
                        board.end(format!("cannot read the screen's PipeWire stream: {err}"));
                    }
                }
            })
            .map_err(|err| format!("cannot start a thread: {err}"))?;
        Ok(StreamReader {
            board,
            stop,
            thread: Some(thread),
        })
    }

    /// Waits up to `limit` for the first picture; why none came otherwise.
    pub(crate) fn wait_for_first_picture(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut news = self.board.lock();
        while news.picture.is_none() {
            if let Some(why) = &news.ended {
                return Err(why.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the shared screen sent no picture within {} s",
                    limit.as_secs()
                ));
            }
            news = self
                .board
                .changed
                .wait_timeout(news, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        Ok(())
    }

    /// What the stream brought so far (hold it briefly: the thread waits).
    pub(crate) fn news(&self) -> MutexGuard<'_, StreamNews> {
        self.board.lock()
    }

    /// Ends the stream and waits for the thread.
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the stream's callbacks keep between calls.
struct StreamState {
    board: Arc<NewsBoard>,
    format: spa::param::video::VideoInfoRaw,
    streaming: bool,
}

/// Reads the PipeWire stream `node` of the portal's `remote` until `stop`:
/// each picture becomes the board's newest.
fn read_stream(
    remote: OwnedFd,
    node: u32,
    board: &Arc<NewsBoard>,
    stop: &AtomicBool,
) -> Result<(), pw::Error> {
    pw::init();
    let main_loop = pw::main_loop::MainLoopBox::new(None)?;
    let context = pw::context::ContextBox::new(main_loop.loop_(), None)?;
    let core = context.connect_fd(remote, None)?;
    let stream = pw::stream::StreamBox::new(
        &core,
        "duet-screen",
        pw::properties::properties! {
            *pw::keys::MEDIA_TYPE => "Video",
            *pw::keys::MEDIA_CATEGORY => "Capture",
            *pw::keys::MEDIA_ROLE => "Screen",
        },
    )?;
    let state = StreamState {
        board: Arc::clone(board),
        format: Default::default(),
        streaming: false,
    };
    let listener = stream
        .add_local_listener_with_user_data(state)
        .state_changed(|_, state, old, new| {
            tracing::debug!(?old, ?new, "screen stream");
            match new {
                pw::stream::StreamState::Streaming => state.streaming = true,
                pw::stream::StreamState::Error(why) => state
                    .board
                    .end(format!("the shared screen's stream failed: {why}")),
                pw::stream::StreamState::Unconnected if state.streaming => {
                    state.board.end("the shared screen was closed".into());
                }
                _ => {}
            }
        })
        .param_changed(|_, state, id, param| {
            let Some(param) = param else { return };
            if id != spa::param::ParamType::Format.as_raw() {
                return;
            }
            match state.format.parse(param) {
                Ok(_) => tracing::info!(
                    format = ?state.format.format(),
                    width = state.format.size().width,
                    height = state.format.size().height,
                    "screen stream format"
                ),
                Err(err) => tracing::warn!(%err, "screen stream format not understood"),
            }
        })
        .process(|stream, state| {
            // Only the newest picture matters; older ones go back at once.
            let mut newest = None;
            while let Some(buffer) = stream.dequeue_buffer() {
                newest = Some(buffer);
            }
            let Some(mut buffer) = newest else { return };
            let Some(data) = buffer.datas_mut().first_mut() else {
                return;
            };
            let chunk = data.chunk();
            let (offset, stride, size, flags) =
                (chunk.offset(), chunk.stride(), chunk.size(), chunk.flags());
            if size == 0 || flags.contains(spa::buffer::ChunkFlags::CORRUPTED) {
                return;
            }
            let size = state.format.size();
            let layout = PixelLayout::of(state.format.format());
            let Some(bytes) = data.data() else {
                tracing::debug!("a screen picture that is not in shared memory: skipped");
                return;
            };
            let Some(layout) = layout else { return };
            let picture = packed_bgrx(bytes, offset, stride, size.width, size.height, layout);
            if let Some(picture) = picture {
                state.board.lock().put(picture);
                state.board.changed.notify_all();
            }
        })
        .register()?;
    // The screen's node going away is the share's end (stopped from the
    // desktop, its screen-cast backend gone): the stream itself only pauses.
    let registry = core.get_registry()?;
    let _registry_listener = registry
        .add_listener_local()
        .global_remove({
            let board = Arc::clone(board);
            move |id| {
                if id == node {
                    board.end("sharing was stopped from the desktop".into());
                }
            }
        })
        .register();
    let format = enum_format()?;
    let mut params = [spa::pod::Pod::from_bytes(&format).ok_or(pw::Error::CreationFailed)?];
    stream.connect(
        spa::utils::Direction::Input,
        Some(node),
        pw::stream::StreamFlags::AUTOCONNECT | pw::stream::StreamFlags::MAP_BUFFERS,
        &mut params,
    )?;
    while !stop.load(Ordering::Relaxed) && board.lock().ended.is_none() {
        main_loop
            .loop_()
            .iterate(pw::loop_::Timeout::Finite(STOP_CHECK));
    }
    // Our own disconnecting is no news for the capture side.
    drop(listener);
    let _ = stream.disconnect();
    Ok(())
}

/// The pictures Duet takes: packed 32-bit RGB of any size and rate, in
/// shared memory (no modifier offered, so no DMA buffers).
fn enum_format() -> Result<Vec<u8>, pw::Error> {
    use spa::param::format::{FormatProperties, MediaSubtype, MediaType};
    use spa::param::video::VideoFormat;
    use spa::utils::{Fraction, Rectangle, SpaTypes};
    let object = spa::pod::object!(
        SpaTypes::ObjectParamFormat,
        spa::param::ParamType::EnumFormat,
        spa::pod::property!(FormatProperties::MediaType, Id, MediaType::Video),
        spa::pod::property!(FormatProperties::MediaSubtype, Id, MediaSubtype::Raw),
        spa::pod::property!(
            FormatProperties::VideoFormat,
            Choice,
            Enum,
            Id,
            VideoFormat::BGRx,
            VideoFormat::BGRx,
            VideoFormat::BGRA,
            VideoFormat::RGBx,
            VideoFormat::RGBA
        ),
        spa::pod::property!(
            FormatProperties::VideoSize,
            Choice,
            Range,
            Rectangle,
            Rectangle {
                width: 1920,
                height: 1080
            },
            Rectangle {
                width: 2,
                height: 2
            },
            Rectangle {
                width: 8192,
                height: 8192
            }
        ),
        spa::pod::property!(
            FormatProperties::VideoFramerate,
            Choice,
            Range,
            Fraction,
            Fraction { num: 15, denom: 1 },
            Fraction { num: 0, denom: 1 },
            Fraction { num: 60, denom: 1 }
        ),
    );
    spa::pod::serialize::PodSerializer::serialize(
        std::io::Cursor::new(Vec::new()),
        &spa::pod::Value::Object(object),
    )
    .map(|(bytes, _)| bytes.into_inner())
    .map_err(|_| pw::Error::CreationFailed)
}

/// Where red and blue sit in a packed 32-bit pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PixelLayout {
    /// Blue first (`BGRx`, `BGRA`): what X11 and most compositors use.
    Bgr,
    /// Red first (`RGBx`, `RGBA`).
    Rgb,
}

impl PixelLayout {
    fn of(format: spa::param::video::VideoFormat) -> Option<PixelLayout> {
        use spa::param::video::VideoFormat;
        match format {
            VideoFormat::BGRx | VideoFormat::BGRA => Some(PixelLayout::Bgr),
            VideoFormat::RGBx | VideoFormat::RGBA => Some(PixelLayout::Rgb),
            _ => None,
        }
    }
}

/// A `width`x`height` picture of `bytes` (rows `stride` apart from
/// `offset`) as tightly packed BGRX; `None` if the buffer is too short for it.
fn packed_bgrx(
    bytes: &[u8],
    offset: u32,
    stride: i32,
    width: u32,
    height: u32,
    layout: PixelLayout,
) -> Option<Picture> {
    let row = width as usize * 4;
    let stride = usize::try_from(stride)
        .ok()
        .filter(|s| *s >= row)
        .unwrap_or(row);
    let start = offset as usize;
    let needed = start + stride * (height as usize).saturating_sub(1) + row;
    if width < 2 || height < 2 || bytes.len() < needed {
        return None;
    }
    let mut bgrx = Vec::with_capacity(row * height as usize);
    for y in 0..height as usize {
        let line = &bytes[start + y * stride..][..row];
        match layout {
            PixelLayout::Bgr => bgrx.extend_from_slice(line),
            PixelLayout::Rgb => {
                for pixel in line.chunks_exact(4) {
                    bgrx.extend_from_slice(&[pixel[2], pixel[1], pixel[0], pixel[3]]);
                }
            }
        }
    }
    Some(Picture {
        width,
        height,
        bgrx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_is_read_row_by_row_past_padding_and_offset() {
        // 2x2 BGRx with 4 bytes of padding per row, after 3 bytes of offset.
        let mut bytes = vec![9; 3];
        bytes.extend_from_slice(&[1, 2, 3, 0, 4, 5, 6, 0, 7, 7, 7, 7]);
        bytes.extend_from_slice(&[10, 11, 12, 0, 13, 14, 15, 0]);
        let picture = packed_bgrx(&bytes, 3, 12, 2, 2, PixelLayout::Bgr).expect("picture");
        assert_eq!((picture.width, picture.height), (2, 2));
        assert_eq!(
            picture.bgrx,
            [1, 2, 3, 0, 4, 5, 6, 0, 10, 11, 12, 0, 13, 14, 15, 0]
        );
    }

    #[test]
    fn red_first_pixels_are_turned_blue_first() {
        let bytes = [1, 2, 3, 255].repeat(4);
        let picture = packed_bgrx(&bytes, 0, 8, 2, 2, PixelLayout::Rgb).expect("picture");
        assert_eq!(picture.bgrx, [3, 2, 1, 255].repeat(4));
    }

    #[test]
    fn a_buffer_too_short_for_its_picture_is_skipped() {
        let bytes = [0u8; 15];
        assert!(packed_bgrx(&bytes, 0, 8, 2, 2, PixelLayout::Bgr).is_none());
        // A stride that is not set (0) means rows follow each other.
        assert!(packed_bgrx(&[0u8; 16], 0, 0, 2, 2, PixelLayout::Bgr).is_some());
    }
}
