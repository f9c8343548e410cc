//! `sparring run` end to end: the repository's scenarios against the virtual ESP32-C3 pass and
//! write the three reports; every defect switch makes the suite fail, naming what went wrong;
//! a broken scenario file stops the run with file:line:column.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sparring(args: &[&str], report: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sparring"))
        .current_dir(workspace())
        .arg("run")
        .args(args)
        .arg("--report")
        .arg(report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn results(report: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(report.join("report.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["format_version"], 1);
    json["run"]["results"].as_array().unwrap().clone()
}

/// The scenario files at the top of `scenarios/` (the library under `lib/` is not run).
fn scenario_count() -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "toml")
        })
        .count()
}

#[test]
fn the_suite_passes_on_the_virtual_board_and_writes_three_reports() {
    let dir = tempfile::tempdir().unwrap();
    let output = sparring(&[], dir.path()).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let scenarios = scenario_count();
    assert!(
        stderr.contains(&format!("{} pass, 1 pass-with-warnings", scenarios - 1)),
        "{stderr}"
    );
    let results = results(dir.path());
    assert_eq!(results.len(), scenarios);
    // Every scenario passes; the board's silent close on the oversized chain (as mbedTLS
    // does) is the one warning.
    for result in &results {
        let expected = if result["id"] == "tls-large-chain" {
            "pass-with-warnings"
        } else {
            "pass"
        };
        assert_eq!(result["verdict"], expected, "{result}");
    }
    let large_chain = results
        .iter()
        .find(|r| r["id"] == "tls-large-chain")
        .unwrap();
    assert!(
        large_chain["reason"]
            .as_str()
            .unwrap()
            .contains("without sending an alert"),
        "{large_chain}"
    );
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), scenarios, "{junit}");
    assert!(
        junit.contains("<testsuite name=\"virtual:esp32c3\""),
        "{junit}"
    );
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("sparring qualification report") && html.contains("tls-expired"));
    // Raw serial logs of both ports are kept per scenario.
    let logs = dir.path().join("logs/virtual_esp32c3");
    let at_log = std::fs::read_to_string(logs.join("tls-valid.at.log")).unwrap();
    assert!(
        at_log.contains("+MQTTSUBRECV:0,\"sparring/cmd\",12,reboot-later"),
        "{at_log}"
    );
    // And the services' events, one JSON object per line.
    let events = std::fs::read_to_string(logs.join("tls-valid.events.jsonl")).unwrap();
    let connect = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["packet"] == "CONNECT")
        .unwrap_or_else(|| panic!("no CONNECT in {events}"));
    assert_eq!(connect["client_id"], "sparring-dut-1", "{connect}");
    // The board's ClientHello is mbedTLS-like: TLS 1.2 suites only.
    let hello = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "tls" && e["service"] == "mqtt")
        .unwrap_or_else(|| panic!("no broker handshake in {events}"));
    let offered = hello["cipher_suites_offered"].as_array().unwrap();
    assert!(
        !offered.is_empty()
            && offered
                .iter()
                .all(|s| !s.as_str().unwrap().starts_with("TLS13")),
        "{hello}"
    );
}

/// Each switch, a scenario it must make fail, and words the failure reason must contain.
const DEFECTS: [(&str, &str, &str); 8] = [
    ("skip-server-verify", "tls-self-signed", "-0x2700"),
    ("skip-cn-check", "tls-wrong-host", "-0x2700"),
    ("ignore-expiry", "tls-expired", "-0x2700"),
    ("no-sntp-wait", "time-no-sntp", "TIME_UPDATED"),
    ("leak-per-connect=4096", "heap-low-tls", "free-heap"),
    ("crash-on-large-record", "mqtt-large-message", "crashed"),
    ("accept-any-ota-image", "ota-corrupt-image", "/^ERROR$/"),
    ("no-rollback", "ota-valid", "rollback cancelled"),
];

#[test]
fn every_defect_switch_makes_a_scenario_fail_naming_its_effect() {
    let dirs: Vec<_> = DEFECTS
        .iter()
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    // The runs mostly wait on timeouts, not the CPU: four side by side (more would starve
    // the virtual boards of the two CI cores).
    let mut outputs: Vec<Output> = Vec::new();
    for batch in DEFECTS.iter().zip(&dirs).collect::<Vec<_>>().chunks(4) {
        let runs: Vec<Child> = batch
            .iter()
            .map(|((defect, _, _), dir)| sparring(&["--defect", defect], dir.path()))
            .collect();
        outputs.extend(runs.into_iter().map(|c| c.wait_with_output().unwrap()));
    }
    for (((defect, scenario, words), dir), output) in DEFECTS.iter().zip(&dirs).zip(outputs) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "--defect {defect}: {stderr}");
        let results = results(dir.path());
        let failed = results
            .iter()
            .find(|r| r["id"] == *scenario)
            .unwrap_or_else(|| panic!("{scenario} missing"));
        assert_eq!(failed["verdict"], "fail", "--defect {defect}: {failed}");
        let reason = failed["reason"].as_str().unwrap();
        assert!(
            reason.contains(words),
            "--defect {defect}: reason {reason:?} lacks {words:?}"
        );
    }
}

/// The virtual firmware's ELF (next to its flash file) decodes the crash it prints: the
/// scenario's evidence in report.json carries each backtrace address's function, file and line.
#[test]
fn a_crash_is_reported_with_its_backtrace_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let output = sparring(&["--filter", "crash-large-record"], dir.path())
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let results = results(dir.path());
    let crash = results
        .iter()
        .find(|r| r["id"] == "crash-large-record")
        .unwrap_or_else(|| panic!("crash-large-record missing: {results:?}"));
    let evidence: Vec<&str> = crash["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line.as_str().unwrap())
        .collect();
    let backtrace = evidence
        .iter()
        .position(|line| line.starts_with("Backtrace: "))
        .unwrap_or_else(|| panic!("no backtrace in {evidence:#?}"));
    let decoded = evidence[backtrace + 1..].join("\n");
    for frame in [
        "at_mqtt_subscribe_data_cb at /esp-at/components/at/src/at_mqtt_cmd.c:412",
        "esp_mqtt_task at /idf/components/mqtt/esp-mqtt/mqtt_client.c:1650",
        "vPortTaskWrapper at /idf/components/freertos/port/xtensa/port.c:131",
    ] {
        assert!(decoded.contains(frame), "{frame} not in {evidence:#?}");
    }
}

#[test]
fn a_broken_scenario_stops_the_run_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        "id = \"broken\"\ntitle = \"t\"\n[board]\npersonality = \"esp-at\"\n\n[[steps]]\nexpect = { port = \"at\", regex = '(', within_ms = 10 }\n",
    )
    .unwrap();
    let output = sparring(&[file.to_str().unwrap()], &dir.path().join("report"))
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("broken.toml:7:33: expected a valid regular expression"),
        "{stderr}"
    );
}

/// Ctrl-C after the first verdict: the run finishes its step, skips the rest, still writes all
/// three reports with what ran, and does not exit 0.
#[test]
fn ctrl_c_stops_the_run_and_still_writes_the_reports() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = sparring(&[], dir.path());
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first_verdict = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.starts_with(" PASS ") || l.starts_with(" FAIL "));
    assert!(first_verdict.is_some(), "the run ended before any verdict");
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.starts_with("interrupted: ")),
        "no interrupted summary in {rest:?}"
    );
    let results = results(dir.path());
    assert_eq!(
        results.len(),
        scenario_count(),
        "every scenario is accounted for"
    );
    let skipped = results.iter().filter(|r| r["verdict"] == "skipped").count();
    assert!(
        skipped > 0 && skipped < results.len(),
        "some ran, the rest were skipped: {results:?}"
    );
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), results.len());
    assert!(dir.path().join("report.html").exists());
}
