//! One generated PKI per test binary, and waiting for the next TLS record on the event stream.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use sparring_pki::{Options, PkiDir, TempPki};
use sparring_services::events::TlsRecord;
use sparring_services::{Event, EventKind};
use tokio::sync::broadcast;

pub fn pki() -> &'static PkiDir {
    static PKI: OnceLock<TempPki> = OnceLock::new();
    let options = Options {
        key_cache: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("key-cache")),
        ..Options::default()
    };
    &PKI.get_or_init(|| TempPki::generate(options).expect("generate the test PKI"))
        .pki
}

/// The next TLS record from the stream (bounded wait).
pub async fn next_tls(events: &mut broadcast::Receiver<Event>) -> TlsRecord {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let EventKind::Tls(record) = events.recv().await.expect("event stream open").kind {
                return record;
            }
        }
    })
    .await
    .expect("a TLS event within 10 s")
}
