//! Switching a source or speaker while the call runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use duet_media::MediaError;
use duet_media::source::Notice;
use tokio::sync::mpsc;

use super::MediaNotice;

/// A device change asked for while the call runs; the media thread that owns
/// the device carries it out between two frames, so the call never drops.
#[derive(Debug)]
pub(crate) struct DeviceSwitch<T> {
    wanted: Mutex<Option<T>>,
}

impl<T> Default for DeviceSwitch<T> {
    fn default() -> Self {
        DeviceSwitch {
            wanted: Mutex::new(None),
        }
    }
}

impl<T> DeviceSwitch<T> {
    /// Asks for `value`; a newer request replaces one not yet carried out.
    pub(crate) fn request(&self, value: T) {
        if let Ok(mut wanted) = self.wanted.lock() {
            *wanted = Some(value);
        }
    }

    /// Whether a request waits to be carried out.
    pub(crate) fn is_pending(&self) -> bool {
        self.wanted.lock().is_ok_and(|wanted| wanted.is_some())
    }

    /// The pending request, if any.
    pub(crate) fn take(&self) -> Option<T> {
        self.wanted.lock().ok().and_then(|mut wanted| wanted.take())
    }
}

/// Carries out a pending switch of a media source: the newly opened source,
/// or `None` (the current one stays) when none was asked for, the spec was
/// `none`, or it cannot be opened — the last said in a notice.
pub(crate) fn switched_source<Spec: std::fmt::Debug, Source>(
    switch: &DeviceSwitch<Spec>,
    what: &str,
    notices: &mpsc::UnboundedSender<MediaNotice>,
    open: impl FnOnce(&Spec) -> Result<(Option<Source>, Option<Notice>), MediaError>,
) -> Option<Source> {
    let spec = switch.take()?;
    let opened = open(&spec);
    settle_switch(&spec, what, notices, opened)
}

/// What became of a switch to `spec` whose opening gave `opened`: the new
/// source, or `None` with a notice why the current one stays.
pub(crate) fn settle_switch<Spec: std::fmt::Debug, Source>(
    spec: &Spec,
    what: &str,
    notices: &mpsc::UnboundedSender<MediaNotice>,
    opened: Result<(Option<Source>, Option<Notice>), MediaError>,
) -> Option<Source> {
    match opened {
        Ok((new, notice)) => {
            if let Some(notice) = notice {
                let _ = notices.send(MediaNotice::Device(notice));
            }
            if new.is_some() {
                tracing::info!(?spec, "{what} source switched");
            }
            new
        }
        Err(err) => {
            let _ = notices.send(MediaNotice::Device(format!(
                "{err}; the {what} source is unchanged"
            )));
            None
        }
    }
}

/// A source being opened on a thread of its own while the current one keeps
/// going: a screen on Wayland waits for the person to pick it in the desktop
/// portal's dialog, and the other person should not see a frozen picture
/// meanwhile. Dropping it calls the opening off and waits for its thread.
#[derive(Debug)]
pub(crate) struct OpeningAside<Source> {
    result: std::sync::mpsc::Receiver<Result<Source, MediaError>>,
    call_off: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl<Source: Send + 'static> OpeningAside<Source> {
    /// Runs `open` on a new thread; `open` should give up once its flag is set.
    pub(crate) fn start(
        open: impl FnOnce(&AtomicBool) -> Result<Source, MediaError> + Send + 'static,
    ) -> Result<OpeningAside<Source>, MediaError> {
        let (tx, result) = std::sync::mpsc::sync_channel(1);
        let call_off = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("duet-source-open".into())
            .spawn({
                let call_off = Arc::clone(&call_off);
                move || {
                    let _ = tx.send(open(&call_off));
                }
            })
            .map_err(|err| MediaError::Device(format!("cannot start a thread: {err}")))?;
        Ok(OpeningAside {
            result,
            call_off,
            thread: Some(thread),
        })
    }

    /// The opened source or why it failed, once the opening is over.
    pub(crate) fn poll(&self) -> Option<Result<Source, MediaError>> {
        match self.result.try_recv() {
            Ok(result) => Some(result),
            Err(std::sync::mpsc::TryRecvError::Empty) => None,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Some(Err(MediaError::Device(
                "the source's opening failed".into(),
            ))),
        }
    }
}

impl<Source> Drop for OpeningAside<Source> {
    fn drop(&mut self) {
        self.call_off.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_switch_keeps_only_the_newest_request() {
        let switch = DeviceSwitch::default();
        assert_eq!(switch.take(), None::<u32>);
        switch.request(1);
        switch.request(2);
        assert!(switch.is_pending());
        assert_eq!(switch.take(), Some(2));
        assert_eq!(switch.take(), None);
        assert!(!switch.is_pending());
    }

    #[test]
    fn a_switch_that_cannot_open_keeps_the_source_and_says_so() {
        let switch = DeviceSwitch::default();
        switch.request("broken");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let opened: Option<u32> = switched_source(&switch, "video", &tx, |_| {
            Err(MediaError::Device("cannot open".into()))
        });
        assert_eq!(opened, None);
        match rx.try_recv() {
            Ok(MediaNotice::Device(text)) => assert!(text.contains("unchanged"), "{text}"),
            other => panic!("expected a device notice, got {other:?}"),
        }
        // Nothing pending: nothing opened, nothing said.
        let untouched: Option<u32> =
            switched_source(&switch, "video", &tx, |_| Ok((Some(1), None)));
        assert_eq!(untouched, None);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_source_opened_aside_arrives_later_and_the_caller_never_waits() {
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let opening = OpeningAside::start(move |_| {
            let _ = wait.recv();
            Ok(7u32)
        })
        .expect("thread");
        // Still opening: nothing yet, and asking does not block.
        assert!(opening.poll().is_none());
        go.send(()).expect("send");
        let started = std::time::Instant::now();
        let opened = loop {
            if let Some(result) = opening.poll() {
                break result;
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(opened.ok(), Some(7));
    }

    #[test]
    fn dropping_an_opening_calls_it_off_and_waits_for_its_thread() {
        let gave_up = Arc::new(AtomicBool::new(false));
        let opening = OpeningAside::start({
            let gave_up = Arc::clone(&gave_up);
            move |call_off| {
                while !call_off.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                gave_up.store(true, Ordering::Relaxed);
                Err::<u32, _>(MediaError::Device("called off".into()))
            }
        })
        .expect("thread");
        drop(opening);
        assert!(gave_up.load(Ordering::Relaxed), "the thread was joined");
    }
}
