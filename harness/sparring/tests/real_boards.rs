//! The serial-board path proven without hardware: `sparring vboard` runs as a separate process
//! and is declared in a `boards.toml` as a serial board — its two ptys as ports, resets by
//! `sparring vboard ctl` commands, its lab (access point, SNTP's 123 redirected) set up as a
//! physical lab would be. Nothing reaches the board but its ports and those commands.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::vboard::{Lab, VboardProcess, lock_dir, start_vboard};
use common::{sparring, text};
use esp_formats::{Chip, image, otadata, partition};
use serde_json::Value;

/// `sparring run` against the inventory in `dir`, with the test's own lock directory.
fn run_on(dir: &Path, board: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sparring"));
    command
        .arg("run")
        .args(extra)
        .arg("--boards")
        .arg(dir.join("boards.toml"))
        .args(["--board", board, "--report"])
        .arg(dir.join("report"))
        .env("SPARRING_LOCK_DIR", lock_dir(dir))
        .env(
            "SPARRING_KEY_CACHE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("key-cache"),
        )
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    command
}

/// A `sparring vboard` declared as board `id` in `dir/boards.toml` of `lab`, with `keys` added
/// to its entry.
fn bench(dir: &Path, id: &str, keys: &str, lab: Lab) -> VboardProcess {
    let board = start_vboard(&dir.join("flash.bin"));
    lab.install(&board);
    let inventory = format!("{}{keys}", lab.inventory(id, &board));
    std::fs::write(dir.join("boards.toml"), inventory).expect("inventory written");
    board
}

/// A bench whose firmware under test is the ESP-AT flash set at the version the scenarios
/// expect (`${firmware.version}`), named in its entry's `firmware_files`.
fn esp_at_bench(dir: &Path, id: &str, lab: Lab) -> VboardProcess {
    common::flash_set(&dir.join("esp-at"), "esp32c3", "esp-at", "2.4.0.0");
    bench(dir, id, "firmware_files = \"esp-at\"\n", lab)
}

/// A scenario of the step library's `esp-at/boot.toml` alone: a flash step, then `ready` and
/// `AT`/`OK` on the AT port. Nothing in it writes flash but the flash step.
fn boot_scenario(dir: &Path) -> String {
    let path = dir.join("boot-only.toml");
    std::fs::write(
        &path,
        "id = \"boot-only\"\ntitle = \"flash, then the AT port answers\"\n\n[board]\npersonality = \"esp-at\"\n\n[[steps]]\ninclude = { file = \"esp-at/boot.toml\" }\n",
    )
    .expect("scenario written");
    path.display().to_string()
}

/// The single result of a run.
fn only_result(dir: &Path, output: &Output) -> Value {
    let report = report(dir);
    let results = report["run"]["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{}", text(output));
    results[0].clone()
}

fn report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("report/report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report.json is JSON")
}

/// The app the board boots, read from its flash file as otadata selects it.
fn booted_app(flash: &Path) -> image::AppDescriptor {
    let bytes = std::fs::read(flash).expect("flash file");
    let layout = partition::esp_at_layout(Chip::Esp32C3, Default::default()).main;
    let part = |label: &str| layout.find(label).expect("partition in the layout");
    let ota = part("otadata");
    let entries = otadata::read(&bytes[ota.offset as usize..(ota.offset + ota.size) as usize]);
    let slot = otadata::active(&entries).map_or(0, |(slot, _)| slot);
    let app = part(if slot == 0 { "ota_0" } else { "ota_1" });
    image::parse(&bytes[app.offset as usize..(app.offset + app.size) as usize])
        .expect("an app image in the booted slot")
        .descriptor
        .expect("an app descriptor")
}

#[test]
fn the_catalog_runs_on_an_external_board_through_the_serial_backend() {
    let dir = tempfile::tempdir().expect("temp dir");
    let board = esp_at_bench(dir.path(), "bench-c3", Lab::new());
    let output = run_on(dir.path(), "bench-c3", &[]).output().expect("run");
    let report = report(dir.path());
    let results = report["run"]["results"].as_array().expect("results");
    assert!(results.len() >= 29, "{}", text(&output));
    let mut skipped = Vec::new();
    for r in results {
        let (id, verdict, reason) = (&r["id"], r["verdict"].as_str(), &r["reason"]);
        match verdict {
            Some("pass" | "pass-with-warnings") => {}
            Some("skipped") => {
                let reason = reason.as_str().unwrap_or_default();
                assert!(
                    ["heap-control", "defects", "lab-network", "at_storage"]
                        .iter()
                        .any(|c| reason.contains(c)),
                    "{id} skipped without naming a capability or the storage: {reason}"
                );
                skipped.push(id.as_str().unwrap_or_default().to_owned());
            }
            other => panic!("{id}: {other:?}: {reason}\n{}", text(&output)),
        }
    }
    skipped.sort();
    assert_eq!(
        skipped,
        [
            "crash-large-record",
            "heap-low-tls",
            "ota-rollback-crash",
            "provision-mfg-nvs",
            "tls-cn-only",
            "tls-wrong-host"
        ]
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    // Identity: what the ROM loader and the boot log say, equal to what the board holds.
    let identity = &report["run"]["boards"][0];
    assert_eq!(identity["name"], "bench-c3");
    assert_eq!(identity["chip"], "esp32c3");
    assert_eq!(identity["mac"], board.info.mac.as_str());
    assert_eq!(identity["flash_size"], "4MB");
    let held = booted_app(&dir.path().join("flash.bin"));
    let firmware = &identity["firmware"];
    assert_eq!(firmware["project"], held.project_name.as_str());
    assert_eq!(firmware["version"], held.version.as_str());
    assert_eq!(
        firmware["elf_sha256"],
        hex::encode(held.app_elf_sha256).as_str()
    );
}

#[test]
fn the_flash_step_writes_the_firmware_files_the_inventory_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A version nothing else flashes: the boot log can only show it if these files were written.
    common::flash_set(&dir.path().join("fw"), "esp32c3", "esp-at", "7.7.7-bench");
    let _board = bench(
        dir.path(),
        "files-c3",
        "firmware_files = \"fw\"\n",
        Lab::new(),
    );
    let scenario = boot_scenario(dir.path());
    let output = run_on(dir.path(), "files-c3", &[&scenario])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let result = only_result(dir.path(), &output);
    assert_eq!(result["verdict"], "pass", "{result:#}");
    let firmware = &result["facts"]["firmware"];
    assert_eq!(firmware["project"], "esp-at", "{result:#}");
    assert_eq!(firmware["version"], "7.7.7-bench", "{result:#}");
    let log = result["logs"]["log"].as_str().expect("a log file");
    // Every byte the port carried, the loader's binary replies included.
    let log = String::from_utf8_lossy(&std::fs::read(log).expect("the log file")).into_owned();
    assert!(log.contains("App version:      7.7.7-bench"), "{log}");
    assert_eq!(
        booted_app(&dir.path().join("flash.bin")).version,
        "7.7.7-bench"
    );
}

#[test]
fn a_board_without_firmware_files_keeps_its_firmware_through_the_flash_step() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _board = bench(dir.path(), "kept-c3", "", Lab::new());
    // The module's own firmware, put there as a user would.
    let set = dir.path().join("own");
    common::flash_set(&set, "esp32c3", "esp-at", "6.6.6-own");
    let flashed = Command::new(env!("CARGO_BIN_EXE_sparring"))
        .arg("flash")
        .arg("--boards")
        .arg(dir.path().join("boards.toml"))
        .args(["--board", "kept-c3"])
        .arg(&set)
        .env("SPARRING_LOCK_DIR", lock_dir(dir.path()))
        .output()
        .expect("sparring flash");
    assert!(flashed.status.success(), "{}", text(&flashed));
    let flash = dir.path().join("flash.bin");
    let before = std::fs::read(&flash).expect("flash file");

    let scenario = boot_scenario(dir.path());
    let output = run_on(dir.path(), "kept-c3", &[&scenario])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let result = only_result(dir.path(), &output);
    assert_eq!(result["verdict"], "pass-with-warnings", "{result:#}");
    let warnings = result["warnings"].to_string();
    assert!(
        warnings.contains("kept the firmware board kept-c3 holds")
            && warnings.contains("no firmware_files"),
        "{warnings}"
    );
    assert_eq!(result["facts"]["firmware"]["version"], "6.6.6-own");
    assert!(
        std::fs::read(&flash).expect("flash file") == before,
        "the flash step wrote to a board without firmware_files"
    );
}

#[test]
fn firmware_files_for_another_chip_error_the_flash_step_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    common::flash_set(&dir.path().join("fw-esp32"), "esp32", "esp-at", "1.0.0");
    let _board = bench(
        dir.path(),
        "wrong-c3",
        "firmware_files = \"fw-esp32\"\n",
        Lab::new(),
    );
    let flash = dir.path().join("flash.bin");
    let before = std::fs::read(&flash).expect("flash file");
    let scenario = boot_scenario(dir.path());
    let output = run_on(dir.path(), "wrong-c3", &[&scenario])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let result = only_result(dir.path(), &output);
    assert_eq!(result["verdict"], "error", "{result:#}");
    let reason = result["reason"].as_str().unwrap_or_default();
    let inventory = dir.path().join("boards.toml");
    assert!(
        reason.contains(&format!(
            "board wrong-c3: firmware_files ({}:",
            inventory.display()
        )) && reason.contains("fw-esp32/flash-set.json: built for esp32, but the board is esp32c3"),
        "{reason}"
    );
    assert!(
        std::fs::read(&flash).expect("flash file") == before,
        "the flash file changed"
    );
}

#[test]
fn a_board_that_dies_mid_run_errors_its_scenario_and_the_reports_are_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Lost at once: the other tests' boards reuse a dead pty's number, and reopening the path
    // would take one of their ports.
    let mut lab = Lab::new();
    lab.reopen_ms = 0;
    let mut board = esp_at_bench(dir.path(), "dying-c3", lab);
    let mut child = run_on(dir.path(), "dying-c3", &["--filter", "tls-*"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("run starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut seen = Vec::new();
    // The first verdict line, then the board's process is killed under the run.
    let mut killed = false;
    for line in BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .take(500)
    {
        if !killed && (line.starts_with(" PASS") || line.starts_with(" WARN")) {
            board.child.kill().expect("kill the board");
            killed = true;
        }
        seen.push(line);
    }
    assert!(killed, "{}", seen.join("\n"));
    let status = child.wait().expect("run ends");
    assert_eq!(status.code(), Some(1), "{}", seen.join("\n"));
    let report = report(dir.path());
    let results = report["run"]["results"].as_array().expect("results");
    let verdicts: Vec<(&str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["verdict"].as_str().unwrap_or_default(),
                r["reason"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let errors: Vec<&(&str, &str)> = verdicts.iter().filter(|(v, _)| *v == "error").collect();
    assert_eq!(errors.len(), 1, "{verdicts:#?}");
    assert!(errors[0].1.contains("port"), "{verdicts:#?}");
    let after_error = verdicts.iter().skip_while(|(v, _)| *v != "error").skip(1);
    for (verdict, reason) in after_error {
        assert_eq!(*verdict, "skipped", "{verdicts:#?}");
        // Lost, or never eligible (tls-wrong-host needs the lab's names).
        assert!(
            reason.contains("board lost") || reason.contains("needs lab-network"),
            "{reason}"
        );
    }
    // Every scenario of the filter is accounted for, and the logs of what ran are there.
    let catalog = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let tls_scenarios = std::fs::read_dir(catalog)
        .expect("scenarios/")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("tls-"))
        .count();
    assert_eq!(results.len(), tls_scenarios, "{verdicts:#?}");
    assert!(dir.path().join("report/junit.xml").exists());
    assert!(dir.path().join("report/report.html").exists());
    let first = results[0]["id"].as_str().expect("the first cell's id");
    assert!(
        dir.path()
            .join(format!("report/logs/dying-c3/{first}.log.log"))
            .exists(),
        "{first}: {verdicts:#?}"
    );
}

#[test]
fn a_second_run_is_refused_the_board_another_run_holds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _board = esp_at_bench(dir.path(), "held-c3", Lab::new());
    let mut first = run_on(dir.path(), "held-c3", &["--filter", "time-no-sntp"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("first run starts");
    let mut stderr = BufReader::new(first.stderr.take().expect("stderr is piped"));
    // The first run holds the board once it printed the board's identity.
    let mut line = String::new();
    for _ in 0..50 {
        line.clear();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 || line.starts_with("board held-c3") {
            break;
        }
    }
    assert!(line.starts_with("board held-c3"), "{line}");
    let second: Output = run_on(dir.path(), "held-c3", &["--filter", "time-no-sntp"])
        .output()
        .expect("second run");
    let said = text(&second);
    assert_eq!(second.status.code(), Some(2), "{said}");
    assert!(
        said.contains("board held-c3 is in use by another sparring run")
            && said.contains(&format!("pid {}", first.id())),
        "{said}"
    );
    let first = first.wait_with_output().expect("first run ends");
    assert_eq!(first.status.code(), Some(0));
}

#[test]
fn boards_lists_and_probes_the_external_board_and_checks_the_inventory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let board = bench(dir.path(), "listed-c3", "", Lab::new());
    let inventory = dir.path().join("boards.toml");
    let inventory = inventory.to_str().expect("utf-8 path");
    let uart0 = board.info.uart0.display().to_string();

    let listed = sparring(&["boards", "--boards", inventory]);
    let said = text(&listed);
    assert!(listed.status.success(), "{said}");
    assert!(
        said.lines()
            .any(|l| l.starts_with(&uart0) && l.contains("= listed-c3 log port")),
        "{said}"
    );

    let probed = Command::new(env!("CARGO_BIN_EXE_sparring"))
        .args(["boards", "--probe", "--boards", inventory])
        .env("SPARRING_LOCK_DIR", lock_dir(dir.path()))
        .output()
        .expect("boards --probe");
    let said = text(&probed);
    assert!(probed.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "listed-c3: chip esp32c3, MAC {}, flash 4MB",
            board.info.mac
        )),
        "{said}"
    );

    let checked = sparring(&["boards", "check", inventory]);
    let said = text(&checked);
    assert!(checked.status.success(), "{said}");
    assert!(said.contains("present  listed-c3"), "{said}");

    // The same inventory once the board is gone: the entry is absent, exit 1.
    drop(board);
    let checked = sparring(&["boards", "check", inventory]);
    let said = text(&checked);
    assert_eq!(checked.status.code(), Some(1), "{said}");
    assert!(said.contains("ABSENT   listed-c3"), "{said}");
}

#[test]
fn inventory_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "[[board]]\nid = \"a\"\nchip = \"esp33\"\nlog_port = \"/dev/null\"\n",
            ":3:8: chip \"esp33\": expected esp32,",
        ),
        (
            "[lab]\nbind = \"lab-pc\"\n",
            ":2:8: bind \"lab-pc\": expected an IP address",
        ),
        (
            "[[board]]\nid = \"a\"\nchip = \"esp32\"\n",
            ":1:1: board a: expected exactly one of log_port, usb or mac",
        ),
        (
            "[[board]]\nid = \"a\"\nchip = \"esp32\"\nlog_port = \"/dev/null\"\nreset = \"relay\"\n",
            ":5:9: reset \"relay\": expected \"dtr-rts\", \"none\" or",
        ),
        (
            "[[board]]\nid = \"a\"\nchip = \"esp32\"\nusb = { vid_pid = \"10c4\" }\n",
            ":1:1: usb.vid_pid \"10c4\": expected two 4-digit hex numbers",
        ),
        (
            "[[board]]\nid = \"a\"\nchip = \"esp32\"\nlog_port = \"/dev/null\"\nbaud = 9600\n",
            ":5:1: unknown field `baud`",
        ),
        (
            "[[board]]\nid = \"a\"\nprobe = \"303a:1001\"\ntarget = \"esp32c9\"\nlog = \"rtt\"\nelf = \"a.elf\"\n",
            ":4:10: target \"esp32c9\": not a probe-rs target; close names: esp32c2, esp32c3,",
        ),
    ];
    for (index, (inventory, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("boards-{index}.toml"));
        std::fs::write(&path, inventory).expect("inventory written");
        let checked = sparring(&["boards", "check", path.to_str().expect("utf-8 path")]);
        let said = text(&checked);
        assert_eq!(checked.status.code(), Some(2), "{said}");
        assert!(
            said.contains(&format!("{}{expected}", path.display())),
            "case {index}: expected {expected:?} in\n{said}"
        );
    }
}

#[test]
fn a_board_missing_from_the_inventory_is_named_with_what_was_looked_for() {
    let dir = tempfile::tempdir().expect("temp dir");
    let inventory = dir.path().join("boards.toml");
    std::fs::write(
        &inventory,
        "[[board]]\nid = \"desk\"\nchip = \"esp32c3\"\nusb = { serial = \"no-such-serial\" }\n",
    )
    .expect("inventory written");
    let output = run_on(dir.path(), "desk", &["--filter", "tls-valid"])
        .output()
        .expect("run");
    let said = text(&output);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(
        said.contains("board desk: log port: no serial port with serial number no-such-serial"),
        "{said}"
    );
}
