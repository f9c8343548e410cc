//! The broker's misbehaviour on demand, as a real client (rumqttc over mutual TLS) meets it:
//! refused and withheld CONNACKs, withheld PUBACK and PINGRESP, a delayed SUBACK, a
//! disconnect after a good connect, and the client-id = CN policy. The gate records each.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::{mqtt_options, pki, start_with};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, Outgoing, Packet, QoS};
use sparring_services::events::{Direction, MqttRecord};
use sparring_services::{Ack, BrokerBehaviour, EventKind, gate};
use tokio::sync::broadcast;

async fn broker(
    behaviour: BrokerBehaviour,
) -> (
    sparring_services::MqttService,
    broadcast::Receiver<sparring_services::Event>,
) {
    let mut config = gate::from_pki(pki(), "valid", true).unwrap();
    config.broker = behaviour;
    start_with(config).await
}

fn client(service: &sparring_services::MqttService, id: &str) -> (AsyncClient, EventLoop) {
    let mut options = mqtt_options(id, service.gate.addr, Some("device-valid"));
    options.set_keep_alive(Duration::from_secs(5));
    AsyncClient::new(options, 10)
}

/// The next MQTT record from the gate matching `wanted` (bounded wait).
async fn next_mqtt(
    events: &mut broadcast::Receiver<sparring_services::Event>,
    wanted: impl Fn(&MqttRecord) -> bool,
) -> MqttRecord {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let EventKind::Mqtt(m) = events.recv().await.unwrap().kind
                && wanted(&m)
            {
                return m;
            }
        }
    })
    .await
    .expect("the record within 10 s")
}

#[tokio::test]
async fn refused_connects_get_server_unavailable_then_the_broker_accepts() {
    let (service, mut events) = broker(BrokerBehaviour {
        refuse_connects: 1,
        ..BrokerBehaviour::default()
    })
    .await;
    let (_c, mut eventloop) = client(&service, "sparring-dut-1");
    let first = tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
        .await
        .unwrap();
    let refused = format!("{first:?}");
    assert!(refused.contains("ServiceUnavailable"), "{refused}");
    let record = next_mqtt(&mut events, |m| m.packet == "CONNACK").await;
    assert_eq!(record.fault.as_deref(), Some("refused"));
    assert_eq!(record.return_code.as_deref(), Some("ServiceUnavailable"));
    // The second CONNECT reaches rumqttd and succeeds.
    let (_c2, mut eventloop) = client(&service, "sparring-dut-1");
    match tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
        .await
        .unwrap()
        .unwrap()
    {
        Event::Incoming(Packet::ConnAck(ack)) => assert_eq!(ack.code, ConnectReturnCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn a_withheld_connack_leaves_the_client_waiting() {
    let (service, mut events) = broker(BrokerBehaviour {
        withhold_connack: 1,
        ..BrokerBehaviour::default()
    })
    .await;
    let (_c, mut eventloop) = client(&service, "sparring-dut-1");
    // rumqttc gives up on a missing CONNACK after its connection timeout (5 s by default).
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(15), eventloop.poll())
        .await
        .unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "gave up at once: {outcome:?}"
    );
    let record = next_mqtt(&mut events, |m| m.packet == "CONNACK").await;
    assert_eq!(record.fault.as_deref(), Some("withheld"));
    assert_eq!(record.direction, Direction::ToDevice);
}

#[tokio::test]
async fn withheld_puback_is_never_seen_while_the_publish_reached_the_broker() {
    let (service, mut events) = broker(BrokerBehaviour {
        withhold: vec![Ack::Puback],
        ..BrokerBehaviour::default()
    })
    .await;
    let (client, mut eventloop) = client(&service, "sparring-dut-1");
    client
        .publish("sparring/t", QoS::AtLeastOnce, false, b"x".to_vec())
        .await
        .unwrap();
    // Poll for a while: the PUBLISH goes out, no PUBACK ever comes in.
    let mut published = false;
    let mut acked = false;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await {
            Ok(Ok(Event::Outgoing(Outgoing::Publish(_)))) => published = true,
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked = true,
            Ok(Err(e)) => panic!("{e}"),
            _ => {}
        }
    }
    assert!(published && !acked, "published {published}, acked {acked}");
    let publish = next_mqtt(&mut events, |m| m.packet == "PUBLISH").await;
    assert_eq!(publish.direction, Direction::FromDevice);
    let record = next_mqtt(&mut events, |m| m.packet == "PUBACK").await;
    assert_eq!(record.fault.as_deref(), Some("withheld"));
}

#[tokio::test]
async fn withheld_pingresp_makes_the_client_time_out_its_keepalive() {
    let (service, mut events) = broker(BrokerBehaviour {
        withhold: vec![Ack::Pingresp],
        ..BrokerBehaviour::default()
    })
    .await;
    let (_client, mut eventloop) = {
        let mut options = mqtt_options("sparring-dut-1", service.gate.addr, Some("device-valid"));
        options.set_keep_alive(Duration::from_secs(1));
        AsyncClient::new(options, 10)
    };
    // rumqttc sends PINGREQ each keep-alive and fails when the previous one is unanswered.
    let failure = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Err(e) = eventloop.poll().await {
                return e;
            }
        }
    })
    .await
    .unwrap();
    assert!(
        format!("{failure:?}").contains("AwaitPingResp"),
        "{failure:?}"
    );
    let record = next_mqtt(&mut events, |m| m.packet == "PINGRESP").await;
    assert_eq!(record.fault.as_deref(), Some("withheld"));
}

#[tokio::test]
async fn delayed_suback_arrives_late_and_disconnect_after_closes_the_connection() {
    let (service, mut events) = broker(BrokerBehaviour {
        delay: vec![Ack::Suback],
        delay_ms: 400,
        disconnect_after_ms: Some(1500),
        ..BrokerBehaviour::default()
    })
    .await;
    let (client, mut eventloop) = client(&service, "sparring-dut-1");
    client
        .subscribe("sparring/cmd", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut connected_at = None;
    let mut subscribed_at = None;
    let mut suback_at = None;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => connected_at = Some(Instant::now()),
                Ok(Event::Outgoing(Outgoing::Subscribe(_))) => subscribed_at = Some(Instant::now()),
                Ok(Event::Incoming(Packet::SubAck(_))) => suback_at = Some(Instant::now()),
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    })
    .await
    .unwrap();
    let (Some(connected_at), Some(subscribed_at), Some(suback_at)) =
        (connected_at, subscribed_at, suback_at)
    else {
        panic!(
            "connected {connected_at:?}, subscribed {subscribed_at:?}, SUBACK {suback_at:?}; \
             the connection ended with {ended:?}"
        );
    };
    let closed_after = connected_at.elapsed();
    let late = suback_at - subscribed_at;
    assert!(late >= Duration::from_millis(400), "SUBACK after {late:?}");
    assert!(
        closed_after >= Duration::from_millis(1400),
        "closed {closed_after:?} after CONNACK"
    );
    let delayed = next_mqtt(&mut events, |m| m.packet == "SUBACK").await;
    assert_eq!(delayed.fault.as_deref(), Some("delayed"));
    let close = next_mqtt(&mut events, |m| m.packet == "CLOSE").await;
    assert_eq!(close.fault.as_deref(), Some("disconnect-after-ms"));
}

#[tokio::test]
async fn client_id_must_match_the_certificate_cn() {
    let (service, mut events) = broker(BrokerBehaviour {
        client_id_must_match_cn: true,
        ..BrokerBehaviour::default()
    })
    .await;
    let (_c, mut eventloop) = client(&service, "someone-else");
    let refused = tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
        .await
        .unwrap();
    assert!(
        format!("{refused:?}").contains("BadClientId"),
        "{refused:?}"
    );
    let record = next_mqtt(&mut events, |m| m.packet == "CONNACK").await;
    assert_eq!(record.return_code.as_deref(), Some("BadClientId"));
    // The device's own CN is accepted.
    let (_c2, mut eventloop) = client(&service, "sparring-dut-1");
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
            .await
            .unwrap(),
        Ok(Event::Incoming(Packet::ConnAck(_)))
    ));
}

#[tokio::test]
async fn an_mqtt5_client_is_refused_with_an_mqtt5_reason_code() {
    let (service, mut events) = broker(BrokerBehaviour {
        refuse_connects: 1,
        ..BrokerBehaviour::default()
    })
    .await;
    let mut options =
        rumqttc::v5::MqttOptions::new("sparring-dut-1", "localhost", service.gate.addr.port());
    options.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(common::client_config(Some("device-valid"))),
    ));
    let (_client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 10);
    let refused = tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
        .await
        .unwrap();
    assert!(
        format!("{refused:?}").contains("ServerUnavailable"),
        "{refused:?}"
    );
    let record = next_mqtt(&mut events, |m| m.packet == "CONNACK").await;
    assert_eq!(record.return_code.as_deref(), Some("ServerUnavailable"));
    assert_eq!(record.fault.as_deref(), Some("refused"));
}
