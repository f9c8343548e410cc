//! `sparring certs` as users run it: generation, inspect, AtPKI bins, and bad input.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::path::Path;
use std::process::Output;

use common::{sparring, text};
use std::sync::OnceLock;

/// One generated set shared by the tests of this binary.
fn generated() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let result = sparring(&["certs", "--out", out.to_str().unwrap()]);
        assert!(result.status.success(), "{}", text(&result));
        dir
    });
    dir.path()
}

fn out(relative: &str) -> String {
    generated()
        .join("out")
        .join(relative)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn inspect_tells_der_from_pem() {
    let der = sparring(&["certs", "inspect", &out("server/valid/cert.der")]);
    assert!(der.status.success(), "{}", text(&der));
    assert!(
        text(&der).lines().next().unwrap().ends_with(": DER"),
        "{}",
        text(&der)
    );
    let pem = sparring(&["certs", "inspect", &out("server/valid/cert.pem")]);
    assert!(
        text(&pem).lines().next().unwrap().ends_with(": PEM"),
        "{}",
        text(&pem)
    );
    let key = sparring(&["certs", "inspect", &out("server/valid/key.der")]);
    assert!(text(&key).contains("private key (PKCS#8"), "{}", text(&key));
}

#[test]
fn inspect_spots_the_expired_intermediate() {
    let result = sparring(&[
        "certs",
        "inspect",
        &out("server/intermediate-expired/chain.pem"),
        "--ca",
        &out("ca/root.pem"),
    ]);
    assert_eq!(result.status.code(), Some(1), "{}", text(&result));
    let report = text(&result);
    assert!(
        report.contains("intermediate CA 'O=sparring test PKI, CN=sparring expired intermediate CA' EXPIRED since"),
        "{report}"
    );
    assert!(report.contains("chain does not verify"), "{report}");
}

#[test]
fn inspect_names_the_missing_intermediate() {
    let result = sparring(&[
        "certs",
        "inspect",
        &out("server/missing-intermediate/chain.pem"),
        "--ca",
        &out("ca/root.pem"),
    ]);
    assert_eq!(result.status.code(), Some(1), "{}", text(&result));
    assert!(
        text(&result).contains("missing intermediate: the chain ends with a certificate issued by 'O=sparring test PKI, CN=sparring test intermediate CA'"),
        "{}",
        text(&result)
    );
}

#[test]
fn inspect_accepts_a_good_chain_and_checks_the_host() {
    let good = sparring(&[
        "certs",
        "inspect",
        &out("server/valid/chain.pem"),
        "--ca",
        &out("ca/root.pem"),
        "--host",
        "broker.sparring.test",
    ]);
    assert!(good.status.success(), "{}", text(&good));
    assert!(text(&good).contains("ok: chain verifies against the CA"));
    let wrong = sparring(&[
        "certs",
        "inspect",
        &out("server/wrong-host/chain.pem"),
        "--ca",
        &out("ca/root.pem"),
        "--host",
        "broker.sparring.test",
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        text(&wrong).contains("NOT valid for broker.sparring.test"),
        "{}",
        text(&wrong)
    );
}

#[test]
fn inspect_reads_esp_at_bins_and_refuses_garbage() {
    let bin = sparring(&[
        "certs",
        "inspect",
        &out("device/device-valid/mqtt_cert.bin"),
        "--ca",
        &out("ca/root.pem"),
    ]);
    assert!(bin.status.success(), "{}", text(&bin));
    assert!(text(&bin).contains(": ESP-AT PKI bin"));
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.bin");
    std::fs::write(&garbage, b"\x00\x01hello, not a certificate").unwrap();
    let result = sparring(&["certs", "inspect", garbage.to_str().unwrap()]);
    assert_eq!(result.status.code(), Some(1));
    assert!(
        text(&result).contains("not a certificate, key or PKI bin"),
        "{}",
        text(&result)
    );
}

#[test]
fn atpki_round_trips_through_parse() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("client.bin");
    let built = sparring(&[
        "certs",
        "atpki",
        bin.to_str().unwrap(),
        "cert",
        &out("device/device-valid/cert.pem"),
        "key",
        &out("device/device-valid/key.pem"),
        "ca",
        &out("ca/root.der"),
    ]);
    assert!(built.status.success(), "{}", text(&built));
    let parsed = sparring(&["certs", "atpki", "--parse", bin.to_str().unwrap()]);
    assert!(parsed.status.success(), "{}", text(&parsed));
    let listing = text(&parsed);
    assert!(listing.contains("3 items"), "{listing}");
    let cert_len = std::fs::metadata(out("device/device-valid/cert.pem"))
        .unwrap()
        .len();
    assert!(
        listing.contains(&format!("cert id 0: {cert_len} bytes, PEM certificate")),
        "{listing}"
    );
    assert!(listing.contains("key id 0:"), "{listing}");
    assert!(
        listing.contains("ca id 0:") && listing.contains("DER certificate"),
        "{listing}"
    );
}

fn assert_usage_error(result: &Output, mentions: &str) {
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{}", text(result));
    assert!(
        stderr.contains(mentions),
        "error should name {mentions:?}: {stderr}"
    );
}

#[test]
fn bad_input_is_one_clear_error_and_exit_2() {
    let missing = sparring(&["certs", "inspect", "/nonexistent/cert.pem"]);
    assert_usage_error(&missing, "/nonexistent/cert.pem");
    assert_eq!(String::from_utf8_lossy(&missing.stderr).lines().count(), 1);

    let bad_type = sparring(&["certs", "atpki", "/tmp/x.bin", "certificate", "a.pem"]);
    assert_usage_error(&bad_type, "\"certificate\"");

    let bad_key = sparring(&["certs", "--key", "dsa-1024", "--out", "/tmp/never"]);
    assert_usage_error(&bad_key, "dsa-1024");
}

#[test]
fn a_failed_run_leaves_the_previous_set_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out");
    let first = sparring(&["certs", "--out", target.to_str().unwrap()]);
    assert!(first.status.success(), "{}", text(&first));
    let manifest_before = std::fs::read(target.join("manifest.json")).unwrap();

    let bad = sparring(&[
        "certs",
        "--out",
        target.to_str().unwrap(),
        "--host",
        "bad host!",
    ]);
    assert_usage_error(&bad, "bad host!");
    assert_eq!(
        std::fs::read(target.join("manifest.json")).unwrap(),
        manifest_before
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("out")]);

    let fresh = dir.path().join("never-created");
    let bad = sparring(&["certs", "--out", fresh.to_str().unwrap(), "--device-id", ""]);
    assert_usage_error(&bad, "--device-id");
    assert!(!fresh.exists());
}

/// Runs Espressif's NVS generator in `dir` on `csv`; `None` when it is not installed
/// (outside CI only: `.ci/run` installs it).
fn espressif_nvs_generator(dir: &Path, csv: &str, size: u32) -> Option<Vec<u8>> {
    let output = std::process::Command::new("python3")
        .current_dir(dir)
        .args(["-m", "esp_idf_nvs_partition_gen", "generate", csv])
        .arg("generated.bin")
        .arg(format!("0x{size:x}"))
        .output();
    let ci = std::env::var("CI").as_deref() == Ok("true");
    match output {
        Ok(out) if out.status.success() => {
            let bytes = std::fs::read(dir.join("generated.bin")).unwrap();
            std::fs::remove_file(dir.join("generated.bin")).unwrap();
            Some(bytes)
        }
        Ok(out) if ci => panic!("generator failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) if ci => panic!("python3 missing under CI: {e}"),
        _ => None,
    }
}

#[test]
fn mfg_nvs_images_match_what_espressifs_generator_makes_from_the_csv() {
    let dir = generated().join("out/device/device-valid");
    for (image, size) in [("mfg_nvs.bin", 0x1F000), ("mfg_nvs.esp32.bin", 0x1C000)] {
        let ours = std::fs::read(dir.join(image)).unwrap();
        assert_eq!(ours.len(), size as usize, "{image}");
        // Our reader finds the PEM items the firmware expects, under ESP-AT's key names.
        let items = esp_formats::nvs::read(&ours).unwrap();
        let blob = |ns: &str, key: &str| {
            items
                .iter()
                .find(|i| i.namespace == ns && i.key == key)
                .map(|i| i.value.clone())
        };
        let root = std::fs::read(generated().join("out/ca/root.pem")).unwrap();
        assert_eq!(
            blob("mqtt_ca", "mqtt_ca"),
            Some(esp_formats::nvs::Value::Blob(root))
        );
        assert!(blob("client_key", "client_key.0").is_some());
        let Some(theirs) = espressif_nvs_generator(&dir, "mfg_nvs.csv", size) else {
            eprintln!("skipped the generator comparison: esp-idf-nvs-partition-gen not installed");
            return;
        };
        assert!(ours == theirs, "{image} differs from the generator's image");
    }
}
