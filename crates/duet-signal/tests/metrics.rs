//! `GET /metrics`: what the server counts, in the Prometheus text format,
//! read off a real server after real traffic.
#![allow(clippy::unwrap_used)]

mod common;

use common::{RawPeer, get_path, start_server};
use duet_signal::ServerConfig;

/// The value of `name` (with its labels, if any) on the page.
fn value(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_connections_peers_rooms_relays_and_errors_by_code() {
    let server = start_server(ServerConfig::default());
    let mut caller = RawPeer::connect(server.url()).await;
    let mut callee = RawPeer::connect(server.url()).await;
    let mut lonely = RawPeer::connect(server.url()).await;
    caller.join("kitchen", "caller").await;
    callee.join("kitchen", "callee").await;
    caller.message().await; // peer-joined
    for _ in 0..3 {
        caller.send_text(r#"{"type":"offer","sdp":"v=0"}"#).await;
        callee.message().await;
    }
    lonely.send_text("{not json").await;
    lonely.message().await;
    lonely.send_text(r#"{"type":"offer","sdp":"v=0"}"#).await;
    lonely.message().await;

    let (status, page) = get_path(server.url(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("# TYPE duet_messages_relayed_total counter"),
        "{page}"
    );
    assert_eq!(value(&page, "duet_connections"), Some(3.0), "{page}");
    assert_eq!(value(&page, "duet_joined_peers"), Some(2.0));
    assert_eq!(value(&page, "duet_rooms"), Some(1.0));
    assert_eq!(value(&page, "duet_messages_relayed_total"), Some(3.0));
    assert_eq!(value(&page, "duet_messages_forwarded_total"), Some(0.0));
    assert_eq!(
        value(&page, r#"duet_errors_total{code="bad_message"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&page, r#"duet_errors_total{code="not_joined"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&page, r#"duet_errors_total{code="room_full"}"#),
        Some(0.0)
    );
    assert_eq!(value(&page, "duet_resumes_total"), Some(0.0));
    assert!(
        !page.contains("redis"),
        "no Redis, no Redis metrics: {page}"
    );
    // Every sample line is `name{labels} number`, after its HELP and TYPE.
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let (_, number) = line.rsplit_once(' ').unwrap();
        assert!(number.parse::<f64>().is_ok(), "{line}");
    }
    server.shutdown().await.unwrap();
}
