//! Switching a source or speaker while the call runs.

use std::sync::Mutex;

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
    match open(&spec) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_switch_keeps_only_the_newest_request() {
        let switch = DeviceSwitch::default();
        assert_eq!(switch.take(), None::<u32>);
        switch.request(1);
        switch.request(2);
        assert_eq!(switch.take(), Some(2));
        assert_eq!(switch.take(), None);
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
}
