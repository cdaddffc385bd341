//! A Wayland proxy that tells its clients each screen capture could also be
//! had as a GPU buffer, where the compositor did not say so: the workaround
//! that lets xdg-desktop-portal-wlr 0.7.0 share a screen on a machine
//! without a GPU (`wayland.rs` says why). Messages pass whole and unchanged,
//! with the file descriptors that come with them; one event is added.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A Wayland proxy that tells its clients each screen capture could also be
/// had as a DMA buffer (the `linux_dmabuf` event of `zwlr_screencopy_frame_v1`
/// version 3) where the compositor did not say so. See the module comment.
pub struct DmabufHintProxy {
    stop: Arc<AtomicBool>,
    listener: Option<JoinHandle<()>>,
    path: PathBuf,
}

/// What the proxy tracks of one client's objects.
#[derive(Default)]
struct ScreencopyIds {
    registry: Option<u32>,
    manager: Option<u32>,
    /// Frames, with the shared-memory format and size announced for each.
    frames: std::collections::HashMap<u32, Option<(u32, u32, u32)>>,
}

/// `zwlr_screencopy_frame_v1` events.
const FRAME_BUFFER: u16 = 0;
const FRAME_LINUX_DMABUF: u16 = 5;
const FRAME_BUFFER_DONE: u16 = 6;

fn word(message: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(message[at..at + 4].try_into().unwrap())
}

/// A string argument at `at`: its text and where the next argument starts.
fn string_at(message: &[u8], at: usize) -> (String, usize) {
    let len = word(message, at) as usize;
    let text =
        String::from_utf8_lossy(&message[at + 4..at + 4 + len.saturating_sub(1)]).into_owned();
    (text, at + 4 + len.div_ceil(4) * 4)
}

impl ScreencopyIds {
    fn client_sent(&mut self, message: &[u8]) {
        let (object, opcode) = (word(message, 0), (word(message, 4) & 0xffff) as u16);
        if object == 1 && opcode == 1 {
            // wl_display.get_registry(new_id)
            self.registry = Some(word(message, 8));
        } else if Some(object) == self.registry && opcode == 0 {
            // wl_registry.bind(name, interface, version, new_id)
            let (interface, next) = string_at(message, 12);
            if interface == "zwlr_screencopy_manager_v1" {
                self.manager = Some(word(message, next + 4));
            }
        } else if Some(object) == self.manager && (opcode == 0 || opcode == 1) {
            // capture_output(new_id frame, ...) / capture_output_region(...)
            self.frames.insert(word(message, 8), None);
        }
    }

    /// The server's `message`, plus a `linux_dmabuf` event before a frame's
    /// `buffer_done` where the server sent none.
    fn server_sent(&mut self, message: &[u8], out: &mut Vec<u8>) {
        let (object, opcode) = (word(message, 0), (word(message, 4) & 0xffff) as u16);
        if let Some(announced) = self.frames.get_mut(&object) {
            match opcode {
                FRAME_BUFFER => {
                    *announced = Some((word(message, 8), word(message, 12), word(message, 16)))
                }
                FRAME_LINUX_DMABUF => *announced = None,
                FRAME_BUFFER_DONE => {
                    if let Some((shm_format, width, height)) = announced.take() {
                        // wl_shm's two named formats; the others are DRM codes already.
                        let drm = match shm_format {
                            0 => u32::from_le_bytes(*b"AR24"),
                            1 => u32::from_le_bytes(*b"XR24"),
                            other => other,
                        };
                        out.extend_from_slice(&object.to_le_bytes());
                        out.extend_from_slice(
                            &((20u32 << 16) | u32::from(FRAME_LINUX_DMABUF)).to_le_bytes(),
                        );
                        for value in [drm, width, height] {
                            out.extend_from_slice(&value.to_le_bytes());
                        }
                    }
                }
                _ => {}
            }
        }
        out.extend_from_slice(message);
    }
}

impl DmabufHintProxy {
    /// Listens at `path`; each client is connected to the compositor at `upstream`.
    pub fn start(path: &Path, upstream: &Path) -> DmabufHintProxy {
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_owned();
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            client.set_nonblocking(false).unwrap();
                            let Ok(server) = UnixStream::connect(&upstream) else {
                                continue;
                            };
                            let ids = Arc::new(Mutex::new(ScreencopyIds::default()));
                            let (c2, s2) =
                                (client.try_clone().unwrap(), server.try_clone().unwrap());
                            let ids2 = Arc::clone(&ids);
                            std::thread::spawn(move || pump(client, server, ids, true));
                            std::thread::spawn(move || pump(s2, c2, ids2, false));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }
        });
        DmabufHintProxy {
            stop,
            listener: Some(thread),
            path: path.to_owned(),
        }
    }
}

impl Drop for DmabufHintProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.listener.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copies whole messages (and the file descriptors that come with them)
/// from `from` to `to`, showing each to `ids`.
fn pump(from: UnixStream, to: UnixStream, ids: Arc<Mutex<ScreencopyIds>>, from_client: bool) {
    use rustix::net::{
        RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
        SendAncillaryMessage, SendFlags,
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(28))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let Ok(got) = rustix::net::recvmsg(
            &from,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) else {
            break;
        };
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if got.bytes == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..got.bytes]);
        let mut out = Vec::new();
        let mut used = 0;
        while pending.len() - used >= 8 {
            let size = (word(&pending, used + 4) >> 16) as usize;
            if size < 8 || pending.len() - used < size {
                break;
            }
            let message = &pending[used..used + size];
            let mut ids = ids.lock().unwrap();
            if from_client {
                ids.client_sent(message);
                out.extend_from_slice(message);
            } else {
                ids.server_sent(message, &mut out);
            }
            used += size;
        }
        pending.drain(..used);
        if out.is_empty() {
            continue;
        }
        let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(28))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !borrowed.is_empty() {
            control.push(SendAncillaryMessage::ScmRights(&borrowed));
        }
        if rustix::net::sendmsg(&to, &[IoSlice::new(&out)], &mut control, SendFlags::empty())
            .is_err()
        {
            break;
        }
        drop(borrowed);
        fds.clear();
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}
