//! Asks each TURN server for a relay once, when a call starts, so that a
//! refused credential or a server that does not answer is a sentence the
//! person reads rather than a call that quietly never finds a path.
//!
//! webrtc-rs only logs such failures. This check makes the same request it
//! would (an Allocate with the long-term credentials, through `rtc`'s
//! sans-IO TURN client), reads the answer, and gives the allocation back at
//! once. Its verdict is a notice: the call goes on with whatever direct path
//! exists.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::sansio::Protocol as _;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::turn::client::{Client, ClientConfig, Event};
use tokio::net::UdpSocket;

use crate::ice_servers::IceServer;

/// How long the server gets to answer: the TURN client's own retransmissions
/// (0.5 s, then 1 s, 2 s) fit in it.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(4);

/// What a TURN server said to a request for a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TurnVerdict {
    /// It gave a relay address: relayed calls work.
    Relays,
    /// It answered with an error: the credentials were refused (401), or the
    /// request otherwise (its words).
    Refused(String),
    /// It did not answer in time.
    Silent,
    /// The request could not even be sent (a name that does not resolve, no route).
    Unreachable(String),
}

impl TurnVerdict {
    /// The notice for the person, or `None` when all is well.
    pub(crate) fn notice(&self, server: &IceServer) -> Option<String> {
        let url = &server.url;
        match self {
            TurnVerdict::Relays => None,
            TurnVerdict::Refused(why) if why.contains("401") => Some(format!(
                "TURN refused the credentials ({url}): they are wrong or expired; \
                 the call can use direct paths only"
            )),
            TurnVerdict::Refused(why) => Some(format!(
                "TURN refused a relay ({url}: {why}); the call can use direct paths only"
            )),
            TurnVerdict::Silent => Some(format!(
                "the TURN server {url} does not answer; the call can use direct paths only"
            )),
            TurnVerdict::Unreachable(why) => Some(format!(
                "the TURN server {url} cannot be reached ({why}); the call can use direct paths only"
            )),
        }
    }
}

/// Asks `server` (a TURN server) for a relay and gives it back.
pub(crate) async fn check_turn(server: &IceServer) -> TurnVerdict {
    match run_check(server).await {
        Ok(verdict) => verdict,
        Err(why) => TurnVerdict::Unreachable(why),
    }
}

async fn run_check(server: &IceServer) -> Result<TurnVerdict, String> {
    let address = server
        .url
        .strip_prefix("turn:")
        .unwrap_or(&server.url)
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let socket = UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|err| err.to_string())?;
    let local_addr = socket.local_addr().map_err(|err| err.to_string())?;
    let crypto = rtc::crypto::default_provider().map_err(|err| err.to_string())?;
    let config = ClientConfig {
        turn_serv_addr: address,
        local_addr,
        transport_protocol: TransportProtocol::UDP,
        username: server.username.clone(),
        password: server.credential.clone(),
        rto_in_ms: 500,
        ..ClientConfig::default()
    };
    let mut client = Client::new(config, Arc::clone(&crypto)).map_err(|err| err.to_string())?;
    let started = Instant::now();
    let allocate = client.allocate(started).map_err(|err| err.to_string())?;
    let deadline = started + CHECK_TIMEOUT;
    let mut buffer = vec![0u8; 2048];
    loop {
        while let Some(out) = client.poll_write() {
            socket
                .send_to(&out.message, out.transport.peer_addr)
                .await
                .map_err(|err| err.to_string())?;
        }
        while let Some(event) = client.poll_event() {
            match event {
                Event::AllocateResponse(id, relayed) if id == allocate => {
                    release(&mut client, &socket, relayed).await;
                    return Ok(TurnVerdict::Relays);
                }
                Event::AllocateError(id, err) if id == allocate => {
                    return Ok(TurnVerdict::Refused(err.to_string()));
                }
                Event::TransactionTimeout(id) if id == allocate => {
                    return Ok(TurnVerdict::Silent);
                }
                _ => {}
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(TurnVerdict::Silent);
        }
        let wake = client
            .poll_timeout()
            .map_or(deadline, |at| at.min(deadline));
        tokio::select! {
            received = socket.recv_from(&mut buffer) => {
                let (length, from) = received.map_err(|err| err.to_string())?;
                let message = TaggedBytesMut {
                    now: Instant::now(),
                    transport: transport(local_addr, from),
                    message: BytesMut::from(&buffer[..length]),
                };
                // A datagram that is not the server's answer is no verdict.
                if let Err(err) = client.handle_read(message) {
                    tracing::debug!(%err, "TURN check: a datagram it could not read");
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                let _ = client.handle_timeout(Instant::now());
            }
        }
    }
}

/// Gives the relay back (a Refresh with lifetime 0), without waiting for the answer.
async fn release(client: &mut Client, socket: &UdpSocket, relayed: SocketAddr) {
    if let Ok(mut relay) = client.relay(relayed)
        && relay.close(Instant::now()).is_ok()
    {
        while let Some(out) = client.poll_write() {
            let _ = socket.send_to(&out.message, out.transport.peer_addr).await;
        }
    }
}

fn transport(local_addr: SocketAddr, peer_addr: SocketAddr) -> TransportContext {
    TransportContext {
        local_addr,
        peer_addr,
        transport_protocol: TransportProtocol::UDP,
        ecn: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> IceServer {
        IceServer::parse("turn:u:p@10.0.0.1:3478").expect("valid")
    }

    #[test]
    fn each_failure_reads_as_one_line_that_names_the_server() {
        let server = server();
        assert_eq!(TurnVerdict::Relays.notice(&server), None);
        let refused =
            TurnVerdict::Refused("Allocate error response (error 401: Unauthorized)".into())
                .notice(&server)
                .expect("a notice");
        assert!(
            refused.starts_with("TURN refused the credentials (turn:10.0.0.1:3478)"),
            "{refused}"
        );
        let quota = TurnVerdict::Refused("error 486: Allocation Quota Reached".into())
            .notice(&server)
            .expect("a notice");
        assert!(quota.contains("486"), "{quota}");
        for verdict in [
            TurnVerdict::Silent,
            TurnVerdict::Unreachable("no route".into()),
        ] {
            let notice = verdict.notice(&server).expect("a notice");
            assert!(
                !notice.contains('\n') && notice.contains("turn:10.0.0.1:3478"),
                "{notice}"
            );
            assert!(!notice.contains(":p@"), "no password: {notice}");
        }
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_silent_within_the_timeout() {
        // A bound socket that reads nothing: the request goes nowhere useful.
        let quiet = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let address = quiet.local_addr().expect("address");
        let server = IceServer::parse(&format!("turn:u:p@{address}")).expect("valid");
        let started = Instant::now();
        assert_eq!(check_turn(&server).await, TurnVerdict::Silent);
        assert!(started.elapsed() < CHECK_TIMEOUT + Duration::from_secs(2));
    }
}
