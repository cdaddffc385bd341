//! `duet-load --processes`: the load split across copies of the program
//! against a real server, with their measurements merged into one report.
#![allow(clippy::unwrap_used)]

use duet_signal::{ServerConfig, SignalServer};

#[tokio::test(flavor = "multi_thread")]
async fn three_load_processes_relay_every_message_and_report_as_one() {
    let server = SignalServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        None,
        ServerConfig::default(),
    )
    .unwrap()
    .spawn();
    let report = std::env::temp_dir().join(format!("duet-load-{}.json", std::process::id()));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_duet-load"))
        .args(["--server", server.url()])
        .args(["--connections", "62", "--processes", "3"])
        .args(["--rounds", "2", "--interval-ms", "300"])
        .arg("--json")
        .arg(&report)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let _ = std::fs::remove_file(&report);
    assert_eq!(json["load_processes"], 3);
    // 31 rooms dealt 11, 10, 10: each process says how many it joined.
    assert_eq!(
        stderr.matches("22 connections joined").count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("20 connections joined").count(),
        2,
        "{stderr}"
    );
    // 31 rooms, 2 setups of 22 messages each, every one relayed and timed.
    assert_eq!(json["expected"], 31 * 2 * 22);
    assert_eq!(json["relayed"], json["expected"]);
    assert_eq!(json["lost"], 0);
    assert_eq!(json["errors"], 0);
    assert!(json["relay_ms"]["p99"].as_f64().is_some(), "{json}");
    assert!(json["join_ms"]["p99"].as_f64().is_some(), "{json}");
    server.shutdown().await.unwrap();
}
