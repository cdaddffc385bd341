//! Screen capture on Wayland. A Wayland compositor lets no client read the
//! screen; the desktop portal (xdg-desktop-portal, over D-Bus) asks the
//! person which screen to share and hands back a PipeWire stream of it.
//!
//! The portal conversation runs once, when the screen is opened
//! ([`PortalScreen::open`]); a thread of our own then reads the stream and
//! keeps its newest picture (`screen_pipewire.rs`). A compositor sends a
//! picture only when the screen changes, so [`PortalScreen::next_frame`]
//! repeats the newest one at the screen's pace. Closing the D-Bus connection
//! (dropping the [`PortalScreen`]) ends the portal's session and with it the
//! sharing.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::MediaError;
use crate::frame::VideoFrame;
use crate::screen_picture::{scale_bgrx, screen_fps, sent_size};
use crate::screen_pipewire::StreamReader;
use crate::test_video::FramePacer;
use ashpd::desktop::screencast::{CursorMode, Screencast, SelectSourcesOptions, SourceType};
use ashpd::desktop::{PersistMode, ResponseError, Session};

/// How long the portal may take to answer what needs no person.
const PORTAL_ANSWERS: Duration = Duration::from_secs(10);
/// How long the person may take to pick a screen in the portal's dialog.
const PERSON_PICKS: Duration = Duration::from_secs(300);
/// How long the first picture may take once the stream is there.
const FIRST_PICTURE: Duration = Duration::from_secs(5);
/// How often a step of the conversation looks whether it is called off.
const CALL_OFF_CHECK: Duration = Duration::from_millis(100);

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
            async_io::Timer::after(CALL_OFF_CHECK).await;
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
    node: u32,
}

/// The portal conversation: a session, the person's pick, the stream; and
/// the PipeWire connection that may see the picked screen.
async fn pick_screen(cancelled: &AtomicBool) -> Result<(PickedScreen, OwnedFd), PortalFailure> {
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
    let modes = step(
        "cursor modes",
        PORTAL_ANSWERS,
        cancelled,
        portal.available_cursor_modes(),
    );
    let cursor = match modes.await {
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
    let picked = PickedScreen {
        connection,
        session,
        node,
    };
    Ok((picked, remote))
}

/// A screen shared through the desktop portal, delivering I420 pictures at
/// a steady rate.
pub struct PortalScreen {
    /// Dropped first: the stream ends before the portal's session.
    reader: StreamReader,
    picked: Option<PickedScreen>,
    pacer: FramePacer,
    scaled: Vec<u8>,
    /// The newest picture's number and what it was converted to.
    converted: Option<(u64, VideoFrame)>,
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
        let (picked, remote) = async_io::block_on(pick_screen(cancelled))?;
        let reader = StreamReader::start(remote, picked.node).map_err(PortalFailure::Failed)?;
        let fps = screen_fps(fps);
        tracing::info!(
            node = picked.node,
            fps,
            "screen shared through the desktop portal"
        );
        reader
            .wait_for_first_picture(FIRST_PICTURE)
            .map_err(PortalFailure::Failed)?;
        Ok(PortalScreen {
            reader,
            picked: Some(picked),
            pacer: FramePacer::new(Instant::now(), Duration::from_secs(1) / fps),
            scaled: Vec::new(),
            converted: None,
        })
    }

    /// Waits until the next picture is due and returns the newest one (the
    /// same again while the screen does not change).
    pub fn next_frame(&mut self) -> Result<VideoFrame, MediaError> {
        self.pacer.wait();
        let at = SystemTime::now();
        let news = self.reader.news();
        let (number, picture) = news.newest().map_err(MediaError::NoScreen)?;
        // A still screen sends no new picture: the one converted last time
        // is sent again rather than converted again.
        if let Some((converted, frame)) = &self.converted
            && *converted == number
        {
            let mut frame = frame.clone();
            frame.capture_time = at;
            return Ok(frame);
        }
        let (out_w, out_h) = sent_size(picture.width, picture.height);
        let frame = if (out_w, out_h) == (picture.width, picture.height) {
            VideoFrame::from_bgra(out_w, out_h, &picture.bgrx, at)?
        } else {
            scale_bgrx(
                &picture.bgrx,
                picture.width,
                picture.height,
                out_w,
                out_h,
                &mut self.scaled,
            );
            VideoFrame::from_bgra(out_w, out_h, &self.scaled, at)?
        };
        self.converted = Some((number, frame.clone()));
        Ok(frame)
    }
}

impl Drop for PortalScreen {
    fn drop(&mut self) {
        self.reader.stop();
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

#[cfg(test)]
mod tests {
    use super::*;

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
