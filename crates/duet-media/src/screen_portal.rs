//! Screen capture on Wayland. A Wayland compositor lets no client read the
//! screen; the desktop portal (xdg-desktop-portal, over D-Bus) asks the
//! person which screen to share and hands back a PipeWire stream of it.
//!
//! The portal conversation runs once, when the screen is opened
//! ([`PortalScreen::open`]); a thread of our own (`duet-pipewire`) then reads
//! the stream and keeps its newest picture. A compositor sends a picture
//! only when the screen changes, so [`PortalScreen::next_frame`] repeats the
//! newest one at the screen's pace. Closing the D-Bus connection (dropping
//! the [`PortalScreen`]) ends the portal's session and with it the sharing.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ashpd::desktop::screencast::{CursorMode, Screencast, SelectSourcesOptions, SourceType};
use ashpd::desktop::{PersistMode, ResponseError, Session};
use pipewire as pw;
use pw::spa;

use crate::MediaError;
use crate::frame::VideoFrame;
use crate::screen::{scale_bgrx, screen_fps, sent_size};
use crate::test_video::FramePacer;

/// How long the portal may take to answer what needs no person.
const PORTAL_ANSWERS: Duration = Duration::from_secs(10);
/// How long the person may take to pick a screen in the portal's dialog.
const PERSON_PICKS: Duration = Duration::from_secs(300);
/// How long the first picture may take once the stream is there.
const FIRST_PICTURE: Duration = Duration::from_secs(5);
/// How often the PipeWire thread looks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Why the portal could not share a screen.
#[derive(Debug)]
pub(crate) enum PortalFailure {
    /// There is no portal that shares screens here (none running, or none
    /// with a screen-cast backend): another way may work.
    Unavailable(String),
    /// The portal was there, and sharing failed or was declined.
    Failed(String),
}

impl From<PortalFailure> for MediaError {
    fn from(failure: PortalFailure) -> MediaError {
        match failure {
            PortalFailure::Unavailable(why) => MediaError::NoScreen(format!(
                "this is a Wayland session and {why}: install xdg-desktop-portal and your \
                 desktop's backend (xdg-desktop-portal-gnome, -kde or -wlr)"
            )),
            PortalFailure::Failed(why) => MediaError::NoScreen(why),
        }
    }
}

/// What the portal said, in the words a person reads.
fn portal_failure(step: &str, err: ashpd::Error) -> PortalFailure {
    match err {
        ashpd::Error::Response(ResponseError::Cancelled) => {
            PortalFailure::Failed("sharing was declined in the desktop portal's dialog".into())
        }
        ashpd::Error::Response(ResponseError::Other) => PortalFailure::Failed(format!(
            "the desktop portal could not share the screen ({step}; its log may say why)"
        )),
        ashpd::Error::PortalNotFound(_) => {
            PortalFailure::Unavailable("the desktop portal has no screen-cast backend".into())
        }
        ashpd::Error::Zbus(err) if step == "connect" => {
            PortalFailure::Unavailable(format!("there is no D-Bus session ({err})"))
        }
        ashpd::Error::Zbus(zbus::Error::MethodError(name, _, _))
            if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown" =>
        {
            PortalFailure::Unavailable("no desktop portal is running".into())
        }
        err => PortalFailure::Failed(format!("the desktop portal failed ({step}): {err}")),
    }
}

/// Runs one step of the portal conversation, for at most `limit`, and only
/// until `cancelled` is set.
async fn step<T>(
    name: &str,
    limit: Duration,
    cancelled: &AtomicBool,
    work: impl Future<Output = Result<T, ashpd::Error>>,
) -> Result<T, PortalFailure> {
    let work = async { work.await.map_err(|err| portal_failure(name, err)) };
    let late = async {
        async_io::Timer::after(limit).await;
        Err(PortalFailure::Failed(format!(
            "the desktop portal did not answer within {} s ({name})",
            limit.as_secs()
        )))
    };
    let given_up = async {
        while !cancelled.load(Ordering::Relaxed) {
            async_io::Timer::after(STOP_CHECK).await;
        }
        Err(PortalFailure::Failed("sharing was called off".into()))
    };
    futures_lite::future::or(work, futures_lite::future::or(late, given_up)).await
}

/// The screen the person picked, as the portal hands it over.
struct PickedScreen {
    /// Ends the sharing when dropped (the portal closes the session of a
    /// connection that goes away).
    connection: zbus::Connection,
    session: Session<Screencast>,
    /// The PipeWire connection that may see the picked screen.
    remote: OwnedFd,
    node: u32,
}

/// The portal conversation: a session, the person's pick, the stream.
async fn pick_screen(cancelled: &AtomicBool) -> Result<PickedScreen, PortalFailure> {
    // A connection of our own rather than ashpd's process-wide one: it lives
    // exactly as long as the sharing, whatever the session bus did meanwhile.
    let connection = step("connect", PORTAL_ANSWERS, cancelled, async {
        Ok(zbus::Connection::session().await?)
    })
    .await?;
    let portal = step(
        "screen cast",
        PORTAL_ANSWERS,
        cancelled,
        Screencast::with_connection(connection.clone()),
    )
    .await?;
    // Asking for a property proves a backend answers (creating the proxy does not).
    let sources = step(
        "source types",
        PORTAL_ANSWERS,
        cancelled,
        portal.available_source_types(),
    )
    .await?;
    if !sources.contains(SourceType::Monitor) {
        return Err(PortalFailure::Unavailable(
            "the desktop portal cannot share whole screens".into(),
        ));
    }
    // The pointer drawn into the picture, where the portal can.
    let cursor = match portal.available_cursor_modes().await {
        Ok(modes) if modes.contains(CursorMode::Embedded) => CursorMode::Embedded,
        _ => CursorMode::Hidden,
    };
    let session = step(
        "session",
        PORTAL_ANSWERS,
        cancelled,
        portal.create_session(Default::default()),
    )
    .await?;
    step(
        "select",
        // Some portals (wlroots') ask the person here rather than at the start.
        PERSON_PICKS,
        cancelled,
        async {
            let options = SelectSourcesOptions::default()
                .set_cursor_mode(cursor)
                .set_sources(ashpd::enumflags2::BitFlags::from(SourceType::Monitor))
                .set_multiple(false)
                .set_persist_mode(PersistMode::DoNot);
            portal.select_sources(&session, options).await?.response()
        },
    )
    .await?;
    let streams = step("pick", PERSON_PICKS, cancelled, async {
        portal
            .start(&session, None, Default::default())
            .await?
            .response()
    })
    .await?;
    let node = streams
        .streams()
        .first()
        .map(|stream| stream.pipe_wire_node_id())
        .ok_or_else(|| PortalFailure::Failed("the desktop portal shared no screen".into()))?;
    let remote = step(
        "PipeWire",
        PORTAL_ANSWERS,
        cancelled,
        portal.open_pipe_wire_remote(&session, Default::default()),
    )
    .await?;
    Ok(PickedScreen {
        connection,
        session,
        remote,
        node,
    })
}

/// The newest picture of the stream, tightly packed BGRX.
#[derive(Debug, Default)]
struct Picture {
    width: u32,
    height: u32,
    bgrx: Vec<u8>,
}

/// What the PipeWire thread hands to the capture side.
#[derive(Debug, Default)]
struct StreamNews {
    picture: Option<Picture>,
    /// Why the stream ended, once it has.
    ended: Option<String>,
}

/// [`StreamNews`] behind a lock, with a signal for the first picture.
#[derive(Debug, Default)]
struct NewsBoard {
    news: Mutex<StreamNews>,
    changed: Condvar,
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

/// A screen shared through the desktop portal, delivering I420 pictures at
/// a steady rate.
pub struct PortalScreen {
    board: Arc<NewsBoard>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    picked: Option<PickedScreen>,
    pacer: FramePacer,
    scaled: Vec<u8>,
}

impl std::fmt::Debug for PortalScreen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalScreen")
            .field("node", &self.picked.as_ref().map(|picked| picked.node))
            .finish_non_exhaustive()
    }
}

impl PortalScreen {
    /// Asks the portal for a screen (its dialog lets the person pick one and
    /// may take minutes, unless `cancelled` is set), then waits for its first
    /// picture. `monitor` is the person's to pick in that dialog, so it is
    /// only noted. Captured at `fps` (see [`screen_fps`]).
    pub(crate) fn open(
        monitor: Option<u32>,
        fps: u32,
        cancelled: &AtomicBool,
    ) -> Result<PortalScreen, PortalFailure> {
        if let Some(n) = monitor {
            tracing::info!(
                n,
                "on Wayland the portal's dialog picks the screen, not screen:N"
            );
        }
        let picked = async_io::block_on(pick_screen(cancelled))?;
        let fd = picked.remote.try_clone().map_err(|err| {
            PortalFailure::Failed(format!("cannot use the PipeWire remote: {err}"))
        })?;
        let board = Arc::new(NewsBoard::default());
        let stop = Arc::new(AtomicBool::new(false));
        let reader = std::thread::Builder::new()
            .name("duet-pipewire".into())
            .spawn({
                let (board, stop, node) = (Arc::clone(&board), Arc::clone(&stop), picked.node);
                move || {
                    if let Err(err) = read_stream(fd, node, &board, &stop) {
                        board.end(format!("cannot read the screen's PipeWire stream: {err}"));
                    }
                }
            })
            .map_err(|err| PortalFailure::Failed(format!("cannot start a thread: {err}")))?;
        let fps = screen_fps(fps);
        tracing::info!(
            node = picked.node,
            fps,
            "screen shared through the desktop portal"
        );
        let mut screen = PortalScreen {
            board,
            stop,
            reader: Some(reader),
            picked: Some(picked),
            pacer: FramePacer::new(Instant::now(), Duration::from_secs(1) / fps),
            scaled: Vec::new(),
        };
        screen.wait_for_first_picture()?;
        Ok(screen)
    }

    fn wait_for_first_picture(&mut self) -> Result<(), PortalFailure> {
        let deadline = Instant::now() + FIRST_PICTURE;
        let mut news = self.board.lock();
        while news.picture.is_none() {
            if let Some(why) = &news.ended {
                return Err(PortalFailure::Failed(why.clone()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PortalFailure::Failed(format!(
                    "the shared screen sent no picture within {} s",
                    FIRST_PICTURE.as_secs()
                )));
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

    /// Waits until the next picture is due and returns the newest one (the
    /// same again while the screen does not change).
    pub fn next_frame(&mut self) -> Result<VideoFrame, MediaError> {
        self.pacer.wait();
        let at = SystemTime::now();
        let news = self.board.lock();
        if let Some(why) = &news.ended {
            return Err(MediaError::NoScreen(why.clone()));
        }
        let Some(picture) = &news.picture else {
            return Err(MediaError::NoScreen(
                "the shared screen has no picture".into(),
            ));
        };
        let (out_w, out_h) = sent_size(picture.width, picture.height);
        if (out_w, out_h) == (picture.width, picture.height) {
            VideoFrame::from_bgra(out_w, out_h, &picture.bgrx, at)
        } else {
            scale_bgrx(
                &picture.bgrx,
                picture.width,
                picture.height,
                out_w,
                out_h,
                &mut self.scaled,
            );
            VideoFrame::from_bgra(out_w, out_h, &self.scaled, at)
        }
    }
}

impl Drop for PortalScreen {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if let Some(picked) = self.picked.take() {
            // Closing politely lets the compositor drop its sharing indicator
            // at once; the connection going away does the same a bit later.
            let never = AtomicBool::new(false);
            let close = async {
                let closed = step("close", Duration::from_secs(1), &never, async {
                    picked.session.close().await
                });
                if let Err(err) = closed.await {
                    tracing::debug!(?err, "portal session not closed");
                }
            };
            async_io::block_on(close);
            drop(picked.connection);
        }
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
                state.board.lock().picture = Some(picture);
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

    #[test]
    fn the_portal_declining_or_missing_reads_as_one_line() {
        let declined: MediaError =
            portal_failure("pick", ashpd::Error::Response(ResponseError::Cancelled)).into();
        assert_eq!(
            declined.to_string(),
            "cannot share a screen: sharing was declined in the desktop portal's dialog"
        );
        let missing = portal_failure(
            "source types",
            ashpd::Error::PortalNotFound(
                zbus::names::OwnedInterfaceName::try_from("org.freedesktop.portal.ScreenCast")
                    .expect("name"),
            ),
        );
        assert!(matches!(missing, PortalFailure::Unavailable(_)));
        let line = MediaError::from(missing).to_string();
        assert!(line.contains("Wayland") && line.contains("xdg-desktop-portal"));
        assert!(!line.contains('\n'));
    }
}
