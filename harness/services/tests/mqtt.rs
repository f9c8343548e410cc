//! The broker behind the TLS gate, with real clients: rumqttc over mutual TLS and
//! mosquitto_pub; every handshake is recorded with the reason a device was refused.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::{mqtt_options, next_tls, pki, start, start_with};

use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use sparring_services::events::{Direction, RejectReason, TlsOutcome};
use sparring_services::{EventKind, gate};

#[tokio::test]
async fn valid_device_connects_publishes_and_receives() {
    let (service, mut events) = start().await;
    let mut options = mqtt_options("sparring-dut-1", service.gate.addr, Some("device-valid"));
    options.set_last_will(rumqttc::LastWill::new(
        "sparring/status",
        "offline",
        QoS::AtLeastOnce,
        false,
    ));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client
        .subscribe("sparring/echo", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .publish("sparring/echo", QoS::AtLeastOnce, false, b"hello".to_vec())
        .await
        .unwrap();
    let received = common::next_incoming(&mut eventloop, |packet| match packet {
        rumqttc::Packet::Publish(p) => Some(p),
        _ => None,
    })
    .await;
    assert_eq!(&received.payload[..], b"hello");

    let tls = next_tls(&mut events).await;
    assert_eq!(tls.outcome, TlsOutcome::Established);
    assert_eq!(tls.client_cn.as_deref(), Some("sparring-dut-1"));
    assert_eq!(tls.sni.as_deref(), Some("localhost"));
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let EventKind::Mqtt(m) = event.kind {
            seen.push(m);
        }
    }
    assert!(
        seen.iter().any(|m| m.direction == Direction::FromDevice
            && m.packet == "CONNECT"
            && m.client_id.as_deref() == Some("sparring-dut-1")
            && m.will_topic.as_deref() == Some("sparring/status")
            && m.keep_alive == Some(30)),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|m| m.direction == Direction::FromDevice
            && m.packet == "PUBLISH"
            && m.topic.as_deref() == Some("sparring/echo")
            && m.qos == Some(1)
            && m.payload_size == Some(5)
            && m.dup == Some(false)),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|m| m.direction == Direction::ToDevice && m.packet == "CONNACK"),
        "{seen:?}"
    );
}

/// Each bad device certificate (or none at all) and the reason the gate must record.
const BAD_DEVICES: [(Option<&str>, RejectReason); 4] = [
    (Some("device-expired"), RejectReason::ClientCertExpired),
    (Some("device-untrusted"), RejectReason::UnknownIssuer),
    (Some("device-revoked"), RejectReason::Revoked),
    (None, RejectReason::ClientCertMissing),
];

async fn rejected_reason(device: Option<&str>) -> TlsOutcome {
    let (service, mut events) = start().await;
    let (_client, mut eventloop) =
        AsyncClient::new(mqtt_options("dut", service.gate.addr, device), 10);
    let result = tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
        .await
        .unwrap();
    assert!(result.is_err(), "{device:?} must not connect");
    next_tls(&mut events).await.outcome
}

#[tokio::test]
async fn bad_device_certificates_are_rejected_with_the_reason() {
    for (device, reason) in BAD_DEVICES {
        match rejected_reason(device).await {
            TlsOutcome::RejectedByUs { reason: got, .. } => assert_eq!(got, reason, "{device:?}"),
            other => panic!("{device:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn optional_client_auth_admits_no_certificate_but_still_refuses_a_bad_one() {
    let mut config = gate::from_pki(pki(), "valid", true).unwrap();
    let gate::ClientAuth::Required { roots, crls } = config.client_auth else {
        panic!("from_pki(mutual) gives Required");
    };
    config.client_auth = gate::ClientAuth::Optional { roots, crls };
    let (service, mut events) = start_with(config).await;
    for (device, expect_cn) in [(None, false), (Some("device-valid"), true)] {
        let (_client, mut eventloop) =
            AsyncClient::new(mqtt_options("dut", service.gate.addr, device), 10);
        let connack = tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
            .await
            .unwrap();
        assert!(connack.is_ok(), "{device:?}: {connack:?}");
        let record = next_tls(&mut events).await;
        assert_eq!(record.outcome, TlsOutcome::Established, "{device:?}");
        assert_eq!(record.client_cn.is_some(), expect_cn, "{device:?}");
    }
    let (_client, mut eventloop) = AsyncClient::new(
        mqtt_options("dut", service.gate.addr, Some("device-expired")),
        10,
    );
    let refused = tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
        .await
        .unwrap();
    assert!(refused.is_err());
    match next_tls(&mut events).await.outcome {
        TlsOutcome::RejectedByUs { reason, .. } => {
            assert_eq!(reason, RejectReason::ClientCertExpired)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_silent_connection_does_not_delay_another_handshake() {
    let (service, mut events) = start().await;
    let _silent = tokio::net::TcpStream::connect(service.gate.addr)
        .await
        .unwrap();
    let (_client, mut eventloop) = AsyncClient::new(
        mqtt_options("sparring-dut-1", service.gate.addr, Some("device-valid")),
        10,
    );
    let connack = tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await;
    assert!(
        matches!(
            connack,
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))))
        ),
        "{connack:?}"
    );
    assert_eq!(next_tls(&mut events).await.outcome, TlsOutcome::Established);
}

/// mosquitto_pub, a client people trust, against the same gate: the valid device publishes,
/// every bad one is refused and the gate records which fault it was.
#[tokio::test]
async fn mosquitto_pub_connects_with_a_valid_certificate_only() {
    if !common::tool_available("mosquitto_pub", "--help") {
        return;
    }
    let (service, mut events) = start().await;
    let run = |device: Option<&str>| {
        let mut command = tokio::process::Command::new("mosquitto_pub");
        command
            .args([
                "-h",
                "localhost",
                "-p",
                &service.gate.addr.port().to_string(),
            ])
            .args(["-t", "sparring/test", "-m", "hi", "-i", "sparring-dut-1"])
            .arg("--cafile")
            .arg(pki().path(&pki().manifest.authorities.root.cert.pem));
        if let Some(device) = device {
            let profile = pki().profile(device).unwrap();
            command
                .arg("--cert")
                .arg(pki().path(&profile.files.chain_pem))
                .arg("--key")
                .arg(pki().path(&profile.files.key.pem));
        }
        command.output()
    };
    let ok = run(Some("device-valid")).await.unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        next_tls(&mut events).await.client_cn.as_deref(),
        Some("sparring-dut-1")
    );
    for (device, reason) in BAD_DEVICES {
        let refused = run(device).await.unwrap();
        assert!(!refused.status.success(), "{device:?} must be refused");
        match next_tls(&mut events).await.outcome {
            TlsOutcome::RejectedByUs { reason: got, .. } => assert_eq!(got, reason, "{device:?}"),
            other => panic!("{device:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn mosquitto_sub_receives_what_a_device_publishes() {
    if !common::tool_available("mosquitto_sub", "--help") {
        return;
    }
    let (service, mut events) = start().await;
    let profile = pki().profile("device-valid").unwrap();
    // One message, at most 20 s.
    let subscriber = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "localhost",
            "-p",
            &service.gate.addr.port().to_string(),
        ])
        .args(["-t", "sparring/out", "-i", "sparring-dut-1", "-q", "1"])
        .args(["-C", "1", "-W", "20"])
        .arg("--cafile")
        .arg(pki().path(&pki().manifest.authorities.root.cert.pem))
        .arg("--cert")
        .arg(pki().path(&profile.files.chain_pem))
        .arg("--key")
        .arg(pki().path(&profile.files.key.pem))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Publish only once the gate saw the subscription.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let EventKind::Mqtt(m) = events.recv().await.unwrap().kind
                && m.packet == "SUBSCRIBE"
            {
                return;
            }
        }
    })
    .await
    .expect("mosquitto_sub subscribed");
    let (client, mut eventloop) = AsyncClient::new(
        mqtt_options("sparring-dut-2", service.gate.addr, Some("device-valid")),
        10,
    );
    client
        .publish(
            "sparring/out",
            QoS::AtLeastOnce,
            false,
            b"telemetry 42".to_vec(),
        )
        .await
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(20), async {
        let waiting = subscriber.wait_with_output();
        tokio::pin!(waiting);
        loop {
            tokio::select! {
                output = &mut waiting => return output.unwrap(),
                _ = eventloop.poll() => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "telemetry 42"
    );
}

#[tokio::test]
async fn an_mqtt5_client_is_routed_to_rumqttd_v5_and_recorded() {
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
    let (service, mut events) = start().await;
    let mut options =
        rumqttc::v5::MqttOptions::new("sparring-dut-1", "localhost", service.gate.addr.port());
    options.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(common::client_config(Some("device-valid"))),
    ));
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 10);
    client
        .subscribe("sparring/v5", QoS5::AtLeastOnce)
        .await
        .unwrap();
    client
        .publish("sparring/v5", QoS5::AtLeastOnce, false, b"five".to_vec())
        .await
        .unwrap();
    let received = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let rumqttc::v5::Event::Incoming(Packet5::Publish(p)) =
                eventloop.poll().await.unwrap()
            {
                return p;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(&received.payload[..], b"five");
    let connect = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let EventKind::Mqtt(m) = events.recv().await.unwrap().kind
                && m.packet == "CONNECT"
            {
                return m;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(connect.protocol.as_deref(), Some("5"));
    assert_eq!(connect.client_id.as_deref(), Some("sparring-dut-1"));
}

#[tokio::test]
async fn the_observer_link_sees_device_publishes_and_reaches_devices() {
    let (mut service, _events) = start().await;
    service.observer.subscribe("sparring/up").unwrap();
    let (client, mut eventloop) = AsyncClient::new(
        mqtt_options("sparring-dut-1", service.gate.addr, Some("device-valid")),
        10,
    );
    client
        .subscribe("sparring/down", QoS::AtMostOnce)
        .await
        .unwrap();
    // Until the broker confirmed the subscription, polling the device's connection.
    common::next_incoming(&mut eventloop, |packet| {
        matches!(packet, rumqttc::Packet::SubAck(_)).then_some(())
    })
    .await;
    client
        .publish(
            "sparring/up",
            QoS::AtLeastOnce,
            false,
            b"from the device".to_vec(),
        )
        .await
        .unwrap();
    service
        .observer
        .publish("sparring/down", b"from the observer".to_vec())
        .unwrap();
    let received = common::next_incoming(&mut eventloop, |packet| match packet {
        rumqttc::Packet::Publish(p) => Some(p),
        _ => None,
    })
    .await;
    assert_eq!(&received.payload[..], b"from the observer");
    let mut observer = service.observer;
    let seen = tokio::task::spawn_blocking(move || {
        observer.next_message(std::time::Instant::now() + Duration::from_secs(10))
    })
    .await
    .unwrap()
    .expect("the observer got the device's publish");
    assert_eq!(seen.topic, "sparring/up");
    assert_eq!(seen.payload, b"from the device");
}
