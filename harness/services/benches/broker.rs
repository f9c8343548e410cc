//! The broker behind the TLS gate under load, on loopback (release build): mutual-TLS
//! handshakes per second; 500 concurrent mutual-TLS MQTT clients each publishing QoS 1
//! messages, counted by a subscriber (messages lost must be 0); and resident memory per
//! connection.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use rustls::RootCertStore;
use sparring_pki::{Options, PkiDir, TempPki};
use sparring_services::{EventBus, MqttService, gate};
use tokio::sync::{Barrier, Semaphore};

const HANDSHAKES: usize = 1000;
const HANDSHAKE_CONCURRENCY: usize = 16;
const CLIENTS: usize = 500;
const MESSAGES_PER_CLIENT: usize = 10;
/// Every wait is bounded.
const PHASE_LIMIT: Duration = Duration::from_secs(120);

fn client_config(pki: &PkiDir) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.root().expect("root")).expect("root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(
                pki.chain("device-valid").expect("chain"),
                pki.key("device-valid").expect("key"),
            )
            .expect("client certificate"),
    )
}

/// Resident set size of this process, from /proc (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn handshakes_per_second(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) {
    let connector = tokio_rustls::TlsConnector::from(config);
    let permits = Arc::new(Semaphore::new(HANDSHAKE_CONCURRENCY));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..HANDSHAKES {
        let (connector, permits) = (connector.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire().await.ok()?;
            let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
            let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
            connector.connect(name, tcp).await.ok().map(drop)
        });
    }
    let mut ok = 0;
    while let Some(result) = tasks.join_next().await {
        ok += usize::from(matches!(result, Ok(Some(()))));
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "mutual-TLS handshakes: {ok}/{HANDSHAKES} in {elapsed:.2} s = {:.0} per second ({HANDSHAKE_CONCURRENCY} at a time)",
        ok as f64 / elapsed
    );
}

async fn many_clients(service: &MqttService, config: Arc<rustls::ClientConfig>) {
    // The counting subscriber talks plain MQTT to rumqttd directly.
    let mut options = MqttOptions::new("bench-counter", "127.0.0.1", service.broker.port());
    options.set_keep_alive(Duration::from_secs(60));
    let (counter, mut counter_loop) = AsyncClient::new(options, 1000);
    counter
        .subscribe("bench/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let expected = CLIENTS * MESSAGES_PER_CLIENT;
    let counting = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let deadline = Instant::now() + PHASE_LIMIT;
        while seen.len() < expected && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(5), counter_loop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    seen.insert((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {}
                Ok(Ok(_)) => {}
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(_) => {}
            }
        }
        seen.len()
    });

    let rss_before = rss_kib();
    let connected = Arc::new(Barrier::new(CLIENTS + 1));
    let publish = Arc::new(Barrier::new(CLIENTS + 1));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let (config, connected, publish) = (config.clone(), connected.clone(), publish.clone());
        let port = service.gate.addr.port();
        clients.spawn(async move {
            let mut options = MqttOptions::new(format!("bench-{i}"), "localhost", port);
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
            options.set_keep_alive(Duration::from_secs(60));
            let (client, mut eventloop) = AsyncClient::new(options, MESSAGES_PER_CLIENT + 2);
            let deadline = Instant::now() + PHASE_LIMIT;
            let mut up = false;
            while !up && Instant::now() < deadline {
                up = matches!(
                    tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await,
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_))))
                );
            }
            connected.wait().await;
            publish.wait().await;
            for n in 0..MESSAGES_PER_CLIENT {
                let _ = client
                    .publish(format!("bench/{i}"), QoS::AtLeastOnce, false, n.to_string())
                    .await;
            }
            let mut acked = 0;
            while acked < MESSAGES_PER_CLIENT && Instant::now() < deadline {
                match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                    Ok(Ok(_)) => {}
                    _ => break,
                }
            }
            // Keep the connection until every client is done (memory was measured before).
            (up, acked, client, eventloop)
        });
    }
    connected.wait().await;
    let connect_time = started.elapsed().as_secs_f64();
    let rss_connected = rss_kib();
    publish.wait().await;
    let publish_started = Instant::now();
    let mut up = 0;
    let mut acked = 0;
    let mut held = Vec::new();
    while let Some(result) = clients.join_next().await {
        if let Ok((ok, n, client, eventloop)) = result {
            up += usize::from(ok);
            acked += n;
            held.push((client, eventloop));
        }
    }
    let received = counting.await.unwrap_or(0);
    let publish_time = publish_started.elapsed().as_secs_f64();
    println!(
        "{CLIENTS} concurrent mutual-TLS MQTT clients: {up} connected in {connect_time:.2} s; \
         {expected} QoS 1 publishes, {acked} PUBACKs, {received} received by the subscriber \
         in {publish_time:.2} s; messages lost: {}",
        expected - received
    );
    if let (Some(before), Some(after)) = (rss_before, rss_connected) {
        println!(
            "resident memory: {before} KiB before, {after} KiB with {CLIENTS} connections = {:.1} KiB per connection \
             (gate + broker + the client in this same process: an upper bound for the server side)",
            after.saturating_sub(before) as f64 / CLIENTS as f64
        );
    }
    drop(held);
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let options = Options {
            key_cache: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("key-cache")),
            ..Options::default()
        };
        let pki = TempPki::generate(options).expect("PKI");
        let config = gate::from_pki(&pki.pki, "valid", true).expect("gate config");
        let service = MqttService::start(
            "127.0.0.1:0".parse().expect("addr"),
            config,
            EventBus::default(),
        )
        .await
        .expect("broker");
        let client = client_config(&pki.pki);
        handshakes_per_second(service.gate.addr, client.clone()).await;
        many_clients(&service, client).await;
    });
}
