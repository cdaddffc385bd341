//! The media threads of a session, owned: each is started here and joined
//! before the session says it ended, so a device (camera, microphone,
//! speaker) is closed by then and a new call can open it.
//!
//! Every media thread checks `MediaShared::stopped` at
//! least every 100 ms or so (a frame, an audio tick, a bounded wait for input)
//! and then returns, so joining takes about that long.

use std::thread::JoinHandle;
use std::time::Duration;

use duet_media::MediaError;
use duet_media::source::Notice;
use tokio::sync::oneshot;

use crate::CallError;

/// Longest wait for the media threads at the end of a session. They stop
/// within a frame or a tick; a device driver stuck in a call could hold one
/// longer, and the session must end anyway (with a warning).
pub(crate) const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The running media threads of a session.
#[derive(Debug, Default)]
pub(crate) struct MediaThreads {
    threads: Vec<JoinHandle<()>>,
}

impl MediaThreads {
    /// No threads yet.
    pub(crate) fn new() -> MediaThreads {
        MediaThreads::default()
    }

    /// Takes ownership of a started thread.
    pub(crate) fn add(&mut self, thread: JoinHandle<()>) {
        self.threads.push(thread);
    }

    /// Threads owned.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.threads.len()
    }

    /// Waits for every thread to return; blocking (from async code, run it on
    /// a blocking thread). The threads must have been told to stop.
    pub(crate) fn join(self) {
        for thread in self.threads {
            let name = thread.thread().name().unwrap_or("media").to_owned();
            if thread.join().is_err() {
                tracing::warn!(thread = %name, "a media thread panicked");
            }
        }
    }

    /// Joins from async code without blocking the runtime, waiting at most
    /// [`JOIN_TIMEOUT`]; says whether every thread returned.
    pub(crate) async fn join_async(self) -> bool {
        let joined = tokio::task::spawn_blocking(move || self.join());
        match tokio::time::timeout(JOIN_TIMEOUT, joined).await {
            Ok(Ok(())) => true,
            Ok(Err(err)) => {
                tracing::warn!(%err, "joining the media threads failed");
                false
            }
            Err(_) => {
                tracing::warn!("media threads still running after {JOIN_TIMEOUT:?}");
                false
            }
        }
    }
}

/// Starts a media thread that first opens its device (camera, microphone and
/// speaker handles cannot move between threads) and then runs with it; the
/// thread joins `threads`. Resolves once opening is done: `Some(notice)` when
/// a device was opened (the notice, if any, says it was replaced), `None` when
/// there is nothing to open (`none`), an error when opening failed (a bad file
/// is the user's to fix before anyone is called).
pub(crate) async fn spawn_with_device<D>(
    name: &str,
    threads: &mut MediaThreads,
    open: impl FnOnce() -> Result<(Option<D>, Option<Notice>), MediaError> + Send + 'static,
    run: impl FnOnce(D) + Send + 'static,
) -> Result<Option<Option<Notice>>, CallError> {
    let (opened_tx, opened) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || match open() {
            Ok((Some(device), notice)) => {
                let _ = opened_tx.send(Ok(notice));
                run(device);
            }
            // Dropping the sender tells the caller there is nothing to run.
            Ok((None, _)) => {}
            Err(err) => {
                let _ = opened_tx.send(Err(err));
            }
        })
        .map_err(|err| CallError::Media(format!("cannot start a media thread: {err}")))?;
    threads.add(thread);
    match opened.await {
        Ok(Ok(notice)) => Ok(Some(notice)),
        Ok(Err(err)) => Err(err.into()),
        Err(_) => Ok(None),
    }
}

/// Starts a media thread without a device to open.
pub(crate) fn spawn(
    name: &str,
    threads: &mut MediaThreads,
    run: impl FnOnce() + Send + 'static,
) -> Result<(), CallError> {
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(run)
        .map_err(|err| CallError::Media(format!("cannot start a media thread: {err}")))?;
    threads.add(thread);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_thread_that_opened_its_device_is_owned_and_joined_after_stop() {
        let stop = Arc::new(AtomicBool::new(false));
        let ran_to_end = Arc::new(AtomicBool::new(false));
        let mut threads = MediaThreads::new();
        let (thread_stop, thread_end) = (Arc::clone(&stop), Arc::clone(&ran_to_end));
        let opened = spawn_with_device(
            "test-device",
            &mut threads,
            || Ok((Some(7u32), Some("replaced".to_owned()))),
            move |device| {
                assert_eq!(device, 7);
                while !thread_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                thread_end.store(true, Ordering::Relaxed);
            },
        )
        .await
        .expect("started");
        assert_eq!(opened, Some(Some("replaced".to_owned())));
        assert_eq!(threads.len(), 1);
        stop.store(true, Ordering::Relaxed);
        assert!(threads.join_async().await);
        assert!(
            ran_to_end.load(Ordering::Relaxed),
            "joined only once it returned"
        );
    }

    #[tokio::test]
    async fn nothing_to_open_and_a_failed_open_are_told_apart() {
        let mut threads = MediaThreads::new();
        let nothing = spawn_with_device(
            "test-none",
            &mut threads,
            || Ok((None::<u32>, None)),
            |_| {},
        )
        .await
        .expect("no error");
        assert_eq!(nothing, None);
        let failed = spawn_with_device(
            "test-fail",
            &mut threads,
            || Err::<(Option<u32>, _), _>(MediaError::Device("no such file".into())),
            |_| {},
        )
        .await;
        assert!(matches!(failed, Err(CallError::Media(text)) if text.contains("no such file")));
        assert!(threads.join_async().await);
    }
}
