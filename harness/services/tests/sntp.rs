//! The SNTP server asked by ntplib, a client people use: it reports the skewed time, or
//! nothing when silent; every request is recorded.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;
use std::time::Duration;

use sparring_services::sntp::{SntpConfig, SntpServer};
use sparring_services::{EventBus, EventKind};

/// Asks with ntplib; returns the offset it computed, `Err` with its message, or `None` when
/// ntplib is missing outside CI.
fn ntplib_offset(port: u16) -> Option<Result<f64, String>> {
    let script = format!(
        "import ntplib\ntry:\n    print(ntplib.NTPClient().request('127.0.0.1', port={port}, version=4, timeout=1).offset)\nexcept ntplib.NTPException as e:\n    print('ERR', e)"
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .ok()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No module named 'ntplib'") {
        assert!(
            std::env::var_os("CI").is_none(),
            "ntplib is required under CI (.ci/run installs it)"
        );
        return None;
    }
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Some(
        stdout
            .parse::<f64>()
            .map_err(|_| format!("{stdout} {stderr}")),
    )
}

/// A server on loopback and the receiver of its events.
async fn start(
    config: SntpConfig,
) -> (
    SntpServer,
    tokio::sync::broadcast::Receiver<sparring_services::Event>,
) {
    let events = EventBus::default();
    let receiver = events.subscribe();
    let server = SntpServer::start("127.0.0.1:0".parse().unwrap(), config, events)
        .await
        .unwrap();
    (server, receiver)
}

#[tokio::test]
async fn reports_the_skewed_time_to_a_real_client() {
    let skew = 2 * 365 * 86_400;
    let (server, mut receiver) = start(SntpConfig {
        skew_seconds: skew,
        silent: false,
        ignore_first: 0,
    })
    .await;
    let port = server.addr.port();
    let Some(offset) = tokio::task::spawn_blocking(move || ntplib_offset(port))
        .await
        .unwrap()
    else {
        return;
    };
    let offset = offset.unwrap();
    assert!(
        (offset - skew as f64).abs() < 2.0,
        "ntplib saw an offset of {offset} s, expected {skew}"
    );
    let event = tokio::time::timeout(Duration::from_secs(5), receiver.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(event.kind, EventKind::Sntp(r) if r.answered && r.skew_seconds == skew));
}

#[tokio::test]
async fn a_silent_server_records_but_never_answers() {
    let (server, mut receiver) = start(SntpConfig {
        skew_seconds: 0,
        silent: true,
        ignore_first: 0,
    })
    .await;
    let port = server.addr.port();
    let Some(result) = tokio::task::spawn_blocking(move || ntplib_offset(port))
        .await
        .unwrap()
    else {
        return;
    };
    assert!(
        result.unwrap_err().contains("No response"),
        "a silent server must time the client out"
    );
    let event = tokio::time::timeout(Duration::from_secs(5), receiver.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(event.kind, EventKind::Sntp(r) if !r.answered));
}

/// A late server: the first requests are recorded unanswered, the next one is answered.
#[tokio::test]
async fn a_late_server_answers_after_the_requests_it_ignores() {
    let (server, mut receiver) = start(SntpConfig {
        skew_seconds: 0,
        silent: false,
        ignore_first: 2,
    })
    .await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut request = [0u8; 48];
    request[0] = 0x23; // version 4, mode 3 (client)
    let mut answered = Vec::new();
    for _ in 0..3 {
        socket.send_to(&request, server.addr).await.unwrap();
        let event = tokio::time::timeout(Duration::from_secs(5), receiver.recv())
            .await
            .unwrap()
            .unwrap();
        let EventKind::Sntp(record) = event.kind else {
            panic!("not an SNTP event: {event:?}");
        };
        answered.push(record.answered);
    }
    assert_eq!(answered, [false, false, true]);
    let mut reply = [0u8; 48];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((n, reply[0] & 0x07), (48, 4));
}
