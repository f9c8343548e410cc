//! The virtual ESP-AT module's own speed (release build), measured through the scenario
//! engine on a generated scenario: boot to `ready` (a reset step plus the wait for `ready`)
//! and a scheme-5 `AT+MQTTCONN` to `+MQTTCONNECTED` on loopback (mutual TLS 1.2 through the
//! lab's TLS gate to rumqttd: the send step plus the wait for the line).

use std::fmt::Write as _;
use std::path::Path;

use sparring_runner::events::RunEvent;
use sparring_runner::executor::{RunOptions, run};
use sparring_runner::plan;
use sparring_runner::scenario::{Step, load_path};

/// Boots and connections measured per scenario run, and scenario runs.
const REPEATS: usize = 10;
const RUNS: usize = 5;

/// Boot, provision, Wi-Fi and time from the repository's library, then `REPEATS` times: reset,
/// `ready`, Wi-Fi, mutual-TLS connect, clean.
fn scenario() -> String {
    let mut toml = String::from(
        "id = \"bench-esp-at\"\ntitle = \"ESP-AT timings\"\n\n[board]\npersonality = \"esp-at\"\n\n\
         [setup]\nserver_profile = \"valid\"\n\n",
    );
    for file in ["boot", "provision", "join-wifi", "sync-time"] {
        let _ = write!(
            toml,
            "[[steps]]\ninclude = {{ file = \"esp-at/{file}.toml\" }}\n\n"
        );
    }
    for _ in 0..REPEATS {
        toml.push_str(
            "[[steps]]\nreset = {}\n\n\
             [[steps]]\nexpect = { port = \"at\", regex = '^ready$', within_ms = 5000 }\n\n\
             [[steps]]\ninclude = { file = \"esp-at/join-wifi.toml\" }\n\n\
             [[steps]]\ninclude = { file = \"esp-at/sync-time.toml\" }\n\n\
             [[steps]]\nsend = { port = \"at\", line = 'AT+MQTTUSERCFG=0,5,\"${device.cn}\",\"\",\"\",0,0,\"\"' }\n\n\
             [[steps]]\nexpect = { port = \"at\", regex = '^OK$', within_ms = 2000 }\n\n\
             [[steps]]\nsend = { port = \"at\", line = 'AT+MQTTCONN=0,\"${broker.host}\",${broker.port},0' }\n\n\
             [[steps]]\nexpect = { port = \"at\", regex = '^\\+MQTTCONNECTED:0,5,', within_ms = 8000 }\n\n\
             [[steps]]\nsend = { port = \"at\", line = 'AT+MQTTCLEAN=0' }\n\n\
             [[steps]]\nexpect = { port = \"at\", regex = '^OK$', within_ms = 2000 }\n\n",
        );
    }
    toml
}

fn summary(name: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    let mean = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name}: n={} mean {mean:.2} ms, median {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        samples.len(),
        at(0.5),
        at(0.9),
        at(1.0)
    );
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(root.join("scenarios/lib"), dir.path().join("lib"))
        .expect("linking scenarios/lib");
    std::fs::write(dir.path().join("bench-esp-at.toml"), scenario()).expect("writing");
    let (scenarios, errors) = load_path(dir.path());
    assert!(errors.is_empty(), "{errors:?}");
    let planned = plan::expand(&scenarios[0]).expect("plan");
    // Which step indices start a measured interval, and which end it.
    let sends_line = |i: usize, prefix: &str| matches!(&planned[i].step, Step::Send(s) if s.line.as_deref().is_some_and(|l| l.starts_with(prefix)));
    let boot_starts: Vec<usize> = (0..planned.len())
        .filter(|&i| matches!(planned[i].step, Step::Reset(_)))
        .collect();
    let connect_starts: Vec<usize> = (0..planned.len())
        .filter(|&i| sends_line(i, "AT+MQTTCONN="))
        .collect();

    let report = tempfile::tempdir().expect("temp dir");
    let options = RunOptions::new(
        vec!["virtual:esp32c3".to_owned()],
        report.path().to_owned(),
        dir.path().join("snapshots"),
    );
    let mut boots = Vec::new();
    let mut connects = Vec::new();
    for _ in 0..RUNS {
        let mut step_us = vec![0u64; planned.len()];
        let results = run(&scenarios, &options, &mut |event| {
            if let RunEvent::StepFinished { index, step, .. } = event
                && let Some(slot) = step_us.get_mut(*index)
            {
                *slot = step.elapsed_us;
            }
        })
        .expect("run");
        assert!(
            results.iter().all(|r| r.verdict.passed()),
            "the bench scenario failed: {:?}",
            results
                .iter()
                .map(|r| (&r.reason, &r.evidence))
                .collect::<Vec<_>>()
        );
        // Each interval: the starting step and the expectation right after it.
        let interval = |i: usize| (step_us[i] + step_us[i + 1]) as f64 / 1000.0;
        boots.extend(boot_starts.iter().map(|&i| interval(i)));
        connects.extend(connect_starts.iter().map(|&i| interval(i)));
    }
    summary("boot to `ready` (reset step + wait)", boots);
    summary(
        "scheme-5 AT+MQTTCONN to +MQTTCONNECTED (mutual TLS 1.2, loopback)",
        connects,
    );
}
