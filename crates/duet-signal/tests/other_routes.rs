//! A binary can serve more than signaling on the server's listener
//! ([`SignalServer::with_routes`]; `duet serve` adds the browser client), but
//! nothing it adds can take `/ws` or `/healthz` from the protocol.
#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::routing::get;
use common::{RawPeer, get_path, start_server};
use duet_signal::{ServerConfig, SignalServer};

#[tokio::test]
async fn added_routes_are_served_beside_the_protocol_which_they_cannot_shadow() {
    let page = Router::new()
        .route("/", get(|| async { "a page" }))
        .route("/healthz", get(|| async { "not the server's" }))
        .route("/ws", get(|| async { "not a websocket" }));
    let server = SignalServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        None,
        ServerConfig::default(),
    )
    .unwrap()
    .with_routes(page)
    .spawn();

    assert_eq!(get_path(server.url(), "/").await, (200, "a page".into()));
    assert_eq!(get_path(server.url(), "/healthz").await, (200, "ok".into()));
    assert_eq!(get_path(server.url(), "/nothing").await.0, 404);
    let mut peer = RawPeer::connect(server.url()).await;
    peer.join("routes", "auto").await;
    peer.assert_open().await;
}

#[tokio::test]
async fn the_server_alone_serves_only_the_protocol() {
    let server = start_server(ServerConfig::default());
    assert_eq!(get_path(server.url(), "/").await.0, 404);
    assert_eq!(get_path(server.url(), "/healthz").await, (200, "ok".into()));
}
