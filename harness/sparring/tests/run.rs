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
    // Every scenario passes; three with a warning: the board's silent close on the oversized
    // chain (as mbedTLS does), and the revoked and CN-only certificates mbedTLS accepts.
    let warned = [
        ("tls-large-chain", "without sending an alert"),
        ("tls-revoked", "device does not check revocation"),
        ("tls-cn-only", "from the CN alone"),
    ];
    assert!(
        stderr.contains(&format!(
            "{} pass, {} pass-with-warnings",
            scenarios - warned.len(),
            warned.len()
        )),
        "{stderr}"
    );
    let results = results(dir.path());
    assert_eq!(results.len(), scenarios);
    for result in &results {
        let warning = warned.iter().find(|(id, _)| result["id"] == *id);
        let expected = if warning.is_some() {
            "pass-with-warnings"
        } else {
            "pass"
        };
        assert_eq!(result["verdict"], expected, "{result}");
        if let Some((_, words)) = warning {
            assert!(
                result["reason"].as_str().unwrap().contains(words),
                "{result}"
            );
        }
    }
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
const DEFECTS: [(&str, &str, &str); 13] = [
    ("skip-server-verify", "tls-self-signed", "-0x2700"),
    ("skip-cn-check", "tls-wrong-host", "-0x2700"),
    ("ignore-expiry", "tls-expired", "-0x2700"),
    ("no-sntp-wait", "time-no-sntp", "TIME_UPDATED"),
    ("leak-per-connect=4096", "heap-low-tls", "free-heap"),
    ("crash-on-large-record", "mqtt-large-message", "crashed"),
    ("accept-any-ota-image", "ota-corrupt-image", "/^ERROR$/"),
    ("no-rollback", "ota-valid", "rollback cancelled"),
    ("no-backoff", "mqtt-server-disconnect", "backoff-ms"),
    ("no-retransmit", "mqtt-publish-retry-no-puback", "dup=1"),
    ("ignore-keepalive", "mqtt-keepalive-honoured", "PINGRESP"),
    ("crash-before-confirm", "ota-valid", "crashed"),
    ("accept-weak-crypto", "tls-rsa-1024", "RSA too short"),
];

/// Every switch the firmware has is in [`DEFECTS`].
#[test]
fn every_defect_switch_is_in_the_mutation_test() {
    for (name, _) in sparring_vboard::personality::Defect::ALL {
        assert!(
            DEFECTS
                .iter()
                .any(|(defect, _, _)| defect.split('=').next() == name.split('=').next()),
            "{name} has no scenario that catches it"
        );
    }
}

#[test]
fn every_defect_switch_makes_a_scenario_fail_naming_its_effect() {
    let dirs: Vec<_> = DEFECTS
        .iter()
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    // Each run plays only the scenario that must catch its switch (the whole suite with every
    // switch would take many minutes). The runs mostly wait on timeouts, not the CPU: four
    // side by side (more would starve the virtual boards of the two CI cores).
    let mut outputs: Vec<Output> = Vec::new();
    for batch in DEFECTS.iter().zip(&dirs).collect::<Vec<_>>().chunks(4) {
        let runs: Vec<Child> = batch
            .iter()
            .map(|((defect, scenario, _), dir)| {
                sparring(&["--defect", defect, "--filter", scenario], dir.path())
            })
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

/// Expectations are ordered and waits look only at events since the last action: a scenario
/// that names lines out of the order the board printed them fails, as does one waiting for an
/// event from an earlier exchange; each opt-out makes the same scenario pass.
#[test]
fn expectations_check_order_and_waits_ignore_earlier_exchanges() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = |id: &str, steps: &str| {
        let text = format!(
            "id = \"{id}\"\ntitle = \"{id}\"\n[board]\npersonality = \"esp-at\"\n\n\
             [[steps]]\ninclude = {{ file = \"esp-at/boot.toml\" }}\n\n\
             [[steps]]\ninclude = {{ file = \"esp-at/join-wifi.toml\" }}\n\n\
             [[steps]]\ninclude = {{ file = \"esp-at/sync-time.toml\" }}\n\n{steps}"
        );
        std::fs::write(dir.path().join(format!("{id}.toml")), text).unwrap();
    };
    // AT+GMR answers its version lines, then OK.
    let gmr = "[[steps]]\nsend = { port = \"at\", line = \"AT+GMR\" }\n\n\
               [[steps]]\nexpect = { port = \"at\", regex = '^OK$', within_ms = 2000 }\n\n";
    scenario(
        "out-of-order",
        &format!(
            "{gmr}[[steps]]\nexpect = {{ port = \"at\", regex = '^AT version:', within_ms = 300 }}\n"
        ),
    );
    scenario(
        "any-order",
        &format!(
            "{gmr}[[steps]]\nexpect = {{ port = \"at\", regex = '^AT version:', within_ms = 300, after = \"send\" }}\n"
        ),
    );
    // The SNTP answer came during sync-time, before this `send`.
    let at = "[[steps]]\nsend = { port = \"at\", line = \"AT\" }\n\n\
              [[steps]]\nexpect = { port = \"at\", regex = '^OK$', within_ms = 2000 }\n\n";
    scenario(
        "stale-event",
        &format!(
            "{at}[[steps]]\nwait-event = {{ event = \"sntp\", matching = 'answered=true', within_ms = 300 }}\n"
        ),
    );
    scenario(
        "any-event",
        &format!(
            "{at}[[steps]]\nwait-event = {{ event = \"sntp\", matching = 'answered=true', within_ms = 300, since = \"start\" }}\n"
        ),
    );
    let report = dir.path().join("report");
    let output = sparring(&[dir.path().to_str().unwrap()], &report)
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let results = results(&report);
    let verdict = |id: &str| {
        let result = results.iter().find(|r| r["id"] == id).unwrap();
        (
            result["verdict"].as_str().unwrap().to_owned(),
            result["reason"].as_str().unwrap().to_owned(),
        )
    };
    let (out_of_order, reason) = verdict("out-of-order");
    assert_eq!(out_of_order, "fail", "{stderr}");
    assert!(reason.contains("after the previous match"), "{reason}");
    let (stale, reason) = verdict("stale-event");
    assert_eq!(stale, "fail", "{stderr}");
    assert!(reason.contains("since the last action"), "{reason}");
    assert_eq!(verdict("any-order").0, "pass", "{stderr}");
    assert_eq!(verdict("any-event").0, "pass", "{stderr}");
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
