//! The OTA server as curl (a client people trust) meets it, over HTTPS through the gate and
//! over plain HTTP: every variant misbehaves exactly as promised, Range requests resume a cut
//! download, and no path outside the served directory is ever served.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::pki;
use esp_formats::Chip;
use esp_formats::image::{self, AppSpec};
use sparring_services::ota::{HttpRecord, OtaConfig, OtaService};
use sparring_services::{Event, EventBus, EventKind, gate};
use tokio::sync::broadcast;

const SLOT: u32 = 0x20000;
const HOST: &str = "ota.sparring.test";

fn base_image() -> Vec<u8> {
    let mut spec = AppSpec::new(Chip::Esp32C3, "esp-at", "2.5.0.0");
    spec.code_len = 64 * 1024;
    image::build_app(&spec).unwrap()
}

struct Lab {
    service: OtaService,
    events: broadcast::Receiver<Event>,
    dir: tempfile::TempDir,
}

async fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("fw.bin"), b"firmware from the directory").unwrap();
    std::fs::write(
        dir.path().join("secret.txt"),
        b"outside the served directory",
    )
    .unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), files.join("link.bin")).unwrap();
    let tls = gate::from_pki(pki(), "valid", false).unwrap();
    let events = EventBus::default();
    let receiver = events.subscribe();
    let config = OtaConfig {
        image: base_image(),
        slot_size: SLOT,
        running_version: "2.4.0.0".into(),
        files: Some(files),
    };
    let service = OtaService::start("127.0.0.1:0".parse().unwrap(), tls, config, events)
        .await
        .unwrap();
    Lab {
        service,
        events: receiver,
        dir,
    }
}

impl Lab {
    fn https(&self, path: &str) -> String {
        format!("https://{HOST}:{}{path}", self.service.addr.port())
    }

    fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.service.plain.port())
    }

    /// Runs curl (verifying the server with the lab's root) into `out`; returns its output,
    /// stdout carrying the HTTP status.
    async fn curl(&self, url: &str, out: &Path, extra: &[&str]) -> Output {
        let port = self.service.addr.port();
        tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--path-as-is"])
            .args(["--write-out", "%{http_code}"])
            .arg("--resolve")
            .arg(format!("{HOST}:{port}:127.0.0.1"))
            .arg("--cacert")
            .arg(pki().path(&pki().manifest.authorities.root.cert.pem))
            .arg("--output")
            .arg(out)
            .args(extra)
            .arg(url)
            .output()
            .await
            .unwrap()
    }

    /// The next HTTP record (bounded wait).
    async fn next_http(&mut self) -> HttpRecord {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let EventKind::Http(record) = self.events.recv().await.unwrap().kind {
                    return record;
                }
            }
        })
        .await
        .expect("an HTTP record within 10 s")
    }
}

fn status(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn every_image_variant_is_what_it_promises() {
    if !common::tool_available("curl", "--version") {
        return;
    }
    let mut lab = lab().await;
    let base = base_image();
    let out = lab.dir.path().join("download.bin");
    let port = lab.service.addr.port();
    let fetch = |name: &str| format!("https://{HOST}:{port}/variants/{name}.bin");

    let valid = lab.curl(&fetch("valid"), &out, &[]).await;
    assert_eq!(status(&valid), "200", "{valid:?}");
    assert_eq!(std::fs::read(&out).unwrap(), base);
    let record = lab.next_http().await;
    assert!(record.body_complete && record.user_agent.unwrap().starts_with("curl/"));

    let truncated = lab.curl(&fetch("truncated"), &out, &[]).await;
    assert!(truncated.status.success(), "{truncated:?}");
    assert_eq!(std::fs::read(&out).unwrap(), base[..base.len() / 2]);
    assert!(image::parse(&std::fs::read(&out).unwrap()).is_err());

    for (name, problem) in [("corrupt-byte", "Checksum"), ("bad-sha", "hash")] {
        let result = lab.curl(&fetch(name), &out, &[]).await;
        assert_eq!(status(&result), "200");
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(bytes.len(), base.len());
        let error = image::parse(&bytes).unwrap_err().to_string();
        assert!(error.contains(problem), "{name}: {error}");
    }

    lab.curl(&fetch("wrong-chip"), &out, &[]).await;
    let wrong_chip = image::parse(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(wrong_chip.header.chip_id, Chip::Esp32.id());

    for (name, version) in [("older-version", "0.0.1"), ("same-version", "2.4.0.0")] {
        lab.curl(&fetch(name), &out, &[]).await;
        let parsed = image::parse(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(parsed.descriptor.unwrap().version, version, "{name}");
    }

    lab.curl(&fetch("oversize"), &out, &[]).await;
    assert!(std::fs::metadata(&out).unwrap().len() > u64::from(SLOT));

    // Content-Length promises twice the body: curl reports a partial transfer (18).
    let lying = lab.curl(&fetch("wrong-length"), &out, &[]).await;
    assert_eq!(lying.status.code(), Some(18), "{lying:?}");

    for (name, code) in [("404", "404"), ("500", "500"), ("redirect", "302")] {
        let result = lab.curl(&fetch(name), &out, &[]).await;
        assert_eq!(status(&result), code, "{name}");
    }
    let followed = lab.curl(&fetch("redirect"), &out, &["--location"]).await;
    assert_eq!(status(&followed), "200");
    assert_eq!(std::fs::read(&out).unwrap(), base);
}

#[tokio::test]
async fn throttled_stalled_and_reset_downloads() {
    if !common::tool_available("curl", "--version") {
        return;
    }
    let lab = lab().await;
    let base = base_image();
    let out = lab.dir.path().join("download.bin");

    // ~66 KiB at 40 KB/s: well over a second, complete.
    let started = Instant::now();
    let slow = lab
        .curl(&lab.https("/variants/throttled.bin?rate=40000"), &out, &[])
        .await;
    assert_eq!(status(&slow), "200", "{slow:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(std::fs::read(&out).unwrap(), base);

    // 1000 bytes, then nothing: curl's own timeout (28) ends it with exactly those bytes.
    let stalled = lab
        .curl(
            &lab.https("/variants/stall-after.bin?after=1000"),
            &out,
            &["--max-time", "2"],
        )
        .await;
    assert_eq!(stalled.status.code(), Some(28), "{stalled:?}");
    assert_eq!(std::fs::read(&out).unwrap(), base[..1000]);

    // 1000 bytes, then a TCP reset (plain HTTP: curl sees the reset itself, 56).
    let reset = lab
        .curl(&lab.http("/variants/reset-after.bin?after=1000"), &out, &[])
        .await;
    assert_eq!(reset.status.code(), Some(56), "{reset:?}");
    assert!(
        String::from_utf8_lossy(&reset.stderr).contains("reset"),
        "{reset:?}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), base[..1000]);
}

#[tokio::test]
async fn range_requests_resume_a_cut_download() {
    if !common::tool_available("curl", "--version") {
        return;
    }
    let mut lab = lab().await;
    let base = base_image();
    let out = lab.dir.path().join("resumed.bin");
    let cut = lab
        .curl(
            &lab.https("/variants/stall-after.bin?after=5000"),
            &out,
            &["--max-time", "1"],
        )
        .await;
    assert_eq!(cut.status.code(), Some(28));
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 5000);
    let _ = lab.next_http().await;
    // `-C -`: curl asks for the rest with `Range: bytes=5000-` and appends.
    let resumed = lab
        .curl(
            &lab.https("/variants/valid.bin"),
            &out,
            &["--continue-at", "-"],
        )
        .await;
    assert_eq!(status(&resumed), "206", "{resumed:?}");
    assert_eq!(std::fs::read(&out).unwrap(), base);
    let record = lab.next_http().await;
    assert_eq!(record.range.as_deref(), Some("bytes=5000-"));
    assert_eq!(record.status, 206);
    assert_eq!(record.bytes_sent, (base.len() - 5000) as u64);

    let unsatisfiable = lab
        .curl(
            &lab.https("/variants/valid.bin"),
            &out,
            &["--range", "999999999-"],
        )
        .await;
    assert_eq!(status(&unsatisfiable), "416");
}

#[tokio::test]
async fn files_are_served_from_the_directory_and_nothing_outside_it() {
    if !common::tool_available("curl", "--version") {
        return;
    }
    let mut lab = lab().await;
    let out = lab.dir.path().join("file.bin");
    let served = lab.curl(&lab.https("/files/fw.bin"), &out, &[]).await;
    assert_eq!(status(&served), "200");
    assert_eq!(std::fs::read(&out).unwrap(), b"firmware from the directory");
    let _ = lab.next_http().await;
    for path in [
        "/files/../secret.txt",
        "/files/%2e%2e/secret.txt",
        "/files//etc/passwd",
        "/files/./fw.bin",
        "/files/link.bin",
    ] {
        let refused = lab.curl(&lab.https(path), &out, &[]).await;
        assert_eq!(status(&refused), "403", "{path}: {refused:?}");
        let record = lab.next_http().await;
        assert_eq!((record.path.as_str(), record.status), (path, 403));
    }
    let missing = lab.curl(&lab.https("/files/none.bin"), &out, &[]).await;
    assert_eq!(status(&missing), "404");
}
