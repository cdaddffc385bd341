//! Running out of file descriptors: new connections are refused at once (the
//! client sees its connection closed instead of hanging in the backlog) and
//! the calls already up keep working. Its own test binary, because it lowers
//! the process's open-file limit.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;

use common::{PATIENCE, RawPeer, start_server};
use duet_signal::ServerConfig;
use rlimit::Resource;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_new_connections_are_refused_and_calls_go_on() {
    let server = start_server(ServerConfig::default());
    let mut caller = RawPeer::connect(server.url()).await;
    caller.join("fd-room", "caller").await;

    let (soft, hard) = Resource::NOFILE.get().unwrap();
    Resource::NOFILE.set(open_descriptors() + 32, hard).unwrap();
    let mut hog = Vec::new();
    let exhausted = loop {
        match File::open("/dev/null") {
            Ok(file) => hog.push(file),
            Err(err) => break err,
        }
    };
    assert_eq!(exhausted.raw_os_error(), Some(libc::EMFILE));

    for attempt in 0..3 {
        // One descriptor for this client's socket; the server has none to accept with.
        hog.pop();
        let mut client = TcpStream::connect(server.local_addr()).await.unwrap();
        let mut buf = [0u8; 64];
        let ended = tokio::time::timeout(PATIENCE, client.read(&mut buf)).await;
        assert!(
            matches!(ended, Ok(Ok(0) | Err(_))),
            "attempt {attempt}: the connection was left hanging: {ended:?}"
        );
        drop(client);
        hog.push(File::open("/dev/null").unwrap());
    }
    // The call that was up is not disturbed.
    caller.assert_open().await;

    drop(hog);
    Resource::NOFILE.set(soft, hard).unwrap();
    let mut callee = RawPeer::connect(server.url()).await;
    callee.join("fd-room", "callee").await;
    assert!(matches!(
        caller.message().await,
        duet_signal::ServerMessage::PeerJoined { .. }
    ));
}
