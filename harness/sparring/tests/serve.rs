//! `sparring serve` as a user runs it: ready line, real clients (mosquitto_pub, curl) show up
//! in the event lines, a `--config` file's broker fault is applied, Ctrl-C ends it cleanly;
//! a broken config file is one clear error.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `sparring certs` into `dir/certs`.
fn generate_certs(dir: &std::path::Path) -> std::path::PathBuf {
    let certs = dir.join("certs");
    let generated = Command::new(env!("CARGO_BIN_EXE_sparring"))
        .args(["certs", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(generated.status.success());
    certs
}

/// `sparring serve` on free ports with `certs` and the given extra arguments.
fn serve(certs: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sparring"));
    command
        .args([
            "serve",
            "--mqtt-port",
            "0",
            "--sntp-port",
            "0",
            "--ota-port",
            "0",
        ])
        .arg("--certs")
        .arg(certs);
    command
}

#[test]
fn serves_a_real_client_and_stops_on_ctrl_c() {
    let found = Command::new("mosquitto_pub").arg("--help").output().is_ok();
    assert!(
        found || std::env::var_os("CI").is_none(),
        "mosquitto_pub is required under CI (.ci/run installs it)"
    );
    if !found {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = generate_certs(dir.path());

    let config = dir.path().join("serve.toml");
    std::fs::write(&config, "[broker]\ndelay = [\"puback\"]\ndelay-ms = 10\n").unwrap();
    let mut child = serve(&certs)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, incoming) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let ready: serde_json::Value =
        serde_json::from_str(&incoming.recv_timeout(Duration::from_secs(20)).unwrap()).unwrap();
    let port = ready["mqtt"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    assert!(ready["ca"].as_str().unwrap().ends_with("ca/root.pem"));

    let device = certs.join("device/device-valid");
    let published = Command::new("mosquitto_pub")
        .args([
            "-h",
            "localhost",
            "-p",
            &port,
            "-t",
            "sparring/hello",
            "-m",
            "hi",
            "-i",
            "sparring-dut-1",
            "-q",
            "1",
            "--cafile",
        ])
        .arg(certs.join("ca/root.pem"))
        .arg("--cert")
        .arg(device.join("chain.pem"))
        .arg("--key")
        .arg(device.join("key.pem"))
        .output()
        .unwrap();
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("PUBLISH sparring/hello"))
    {
        seen.push(
            incoming
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no PUBLISH event in {seen:#?}")),
        );
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("TLS sni=localhost client_cn=sparring-dut-1 established")),
        "{seen:#?}"
    );
    // The config file's fault: the PUBACK went out late.
    while !seen.iter().any(|l: &String| l.contains("PUBACK")) {
        seen.push(
            incoming
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no PUBACK event in {seen:#?}")),
        );
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("PUBACK") && l.contains("[delayed]")),
        "{seen:#?}"
    );

    // The OTA server from the ready line, with curl.
    let ota = ready["ota"].as_str().unwrap().to_owned();
    let fetched = Command::new("curl")
        .args(["--silent", "--show-error", "--output", "/dev/null"])
        .args(["--write-out", "%{http_code} %{size_download}", "--cacert"])
        .arg(certs.join("ca/root.pem"))
        .arg(format!("{ota}variants/valid.bin"))
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&fetched.stdout).into_owned();
    assert!(answer.starts_with("200 "), "{answer} {fetched:?}");
    while !seen.iter().any(|l: &String| l.contains("HTTP GET")) {
        seen.push(
            incoming
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no HTTP event in {seen:#?}")),
        );
    }
    let size = answer.split(' ').nth(1).unwrap();
    assert!(
        seen.iter()
            .any(|l| l.contains("HTTP GET /variants/valid.bin -> 200 (")
                && l.contains(&format!("({size} bytes)"))),
        "{seen:#?}"
    );

    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "Ctrl-C must end `serve` cleanly");
}

#[test]
fn an_unknown_profile_is_a_usage_error_naming_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let certs = generate_certs(dir.path());
    let output = serve(&certs).args(["--profile", "bogus"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown profile \"bogus\"; known profiles: valid, expired"),
        "{stderr}"
    );
}

#[test]
fn a_broken_config_file_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let certs = generate_certs(dir.path());
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, "[broker]\nwithhold = [\"pubrel\"]\n").unwrap();
    let output = serve(&certs).arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("serve.toml") && stderr.contains("line 2") && stderr.contains("pubrel"),
        "{stderr}"
    );
}
