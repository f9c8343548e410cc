//! The board pool: many boards at once, cells, shards.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use common::text;
use common::vboard::{Lab, lock_dir, start_vboard};
use serde_json::Value;

/// The two whole-catalog runs (six boards between them) take one at a time: side by side on a
/// 2-core CI machine they starve each other's boards past scenario deadlines.
static WHOLE_CATALOG: Mutex<()> = Mutex::new(());

fn whole_catalog() -> MutexGuard<'static, ()> {
    WHOLE_CATALOG.lock().unwrap_or_else(|p| p.into_inner())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sparring_in(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sparring"));
    command
        .current_dir(workspace())
        .env("SPARRING_LOCK_DIR", lock_dir(dir))
        .env(
            "SPARRING_KEY_CACHE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("key-cache"),
        );
    command
}

fn report(dir: &Path) -> Value {
    let bytes = std::fs::read(dir.join("report.json")).expect("report.json");
    serde_json::from_slice(&bytes).expect("JSON report")
}

/// `--list --format json` of `scenarios` with extra arguments: the cell ids.
fn cell_ids(scenarios: &Path, extra: &[&str]) -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_sparring"))
        .current_dir(workspace())
        .arg("run")
        .arg(scenarios)
        .args(["--list", "--format", "json"])
        .args(["--board", "virtual:esp32c3*2", "--board", "virtual:esp32"])
        .args(extra)
        .output()
        .expect("sparring run --list");
    assert!(output.status.success(), "{}", text(&output));
    let cells: Value = serde_json::from_slice(&output.stdout).expect("JSON cells");
    cells
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_catalog_runs_on_four_virtual_boards_each_with_its_own_ports_and_files() {
    let _one_at_a_time = whole_catalog();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("report");
    let output = sparring_in(dir.path())
        .args(["run", "--board", "virtual:esp32c3*4", "--report"])
        .arg(&out)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let report = report(&out);
    let results = report["run"]["results"].as_array().expect("results");
    let boards = report["run"]["boards"].as_array().expect("boards");
    assert_eq!(boards.len(), 4);
    let macs: BTreeSet<&str> = boards.iter().filter_map(|b| b["mac"].as_str()).collect();
    assert_eq!(macs.len(), 4, "every board has its own flash file and MAC");
    let scenarios = std::fs::read_dir(workspace().join("scenarios"))
        .expect("scenarios/")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .count();
    assert_eq!(results.len(), scenarios * 4);
    let mut ran: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in results {
        let verdict = r["verdict"].as_str().unwrap_or_default();
        assert!(
            verdict == "pass" || verdict == "pass-with-warnings",
            "{} on {}: {verdict} {}",
            r["id"],
            r["board"],
            r["reason"]
        );
        let board = r["board"].as_str().unwrap_or_default().to_owned();
        let id = r["id"].as_str().unwrap_or_default().to_owned();
        assert_eq!(r["cell"], format!("{id}@{board}").as_str());
        ran.entry(board).or_default().insert(id);
    }
    // Each board's log directory holds the logs of its own cells and nothing else.
    for (board, ids) in &ran {
        let logs = out.join("logs").join(board.replace([':', '/', '#'], "_"));
        let logged: BTreeSet<String> = std::fs::read_dir(&logs)
            .expect("the board's log directory")
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".events.jsonl").map(str::to_owned)
            })
            .collect();
        assert_eq!(&logged, ids, "{board}");
    }
    // Every board flashed its own file.
    for index in 0..4 {
        assert!(out.join(format!("boards/{index}/flash.bin")).exists());
    }
}

#[test]
fn shards_cover_every_cell_once_and_keep_their_cells_when_a_scenario_is_added() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scenarios = dir.path().join("scenarios");
    std::fs::create_dir(&scenarios).expect("scenarios dir");
    for entry in std::fs::read_dir(workspace().join("scenarios")).expect("scenarios/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&path, scenarios.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let all = cell_ids(&scenarios, &[]);
    let shards: Vec<Vec<String>> = (1..=3)
        .map(|k| cell_ids(&scenarios, &["--shard", &format!("{k}/3")]))
        .collect();
    let mut union: Vec<String> = shards.iter().flatten().cloned().collect();
    union.sort();
    let mut expected = all.clone();
    expected.sort();
    assert_eq!(
        union, expected,
        "the shards together are the run, each cell once"
    );
    assert!(shards.iter().all(|s| !s.is_empty()));

    // An unrelated scenario joins the catalog: every existing cell stays in its shard.
    let extra = std::fs::read_to_string(scenarios.join("tls-valid.toml"))
        .expect("tls-valid")
        .replace("id = \"tls-valid\"", "id = \"zz-new-scenario\"");
    std::fs::write(scenarios.join("zz-new-scenario.toml"), extra).expect("new scenario");
    for (k, before) in shards.iter().enumerate() {
        let after = cell_ids(&scenarios, &["--shard", &format!("{}/3", k + 1)]);
        let kept: Vec<&String> = after
            .iter()
            .filter(|id| !id.starts_with("zz-new-scenario@"))
            .collect();
        assert_eq!(
            kept,
            before.iter().collect::<Vec<_>>(),
            "shard {}/3 changed",
            k + 1
        );
    }
}

#[test]
fn a_board_that_breaks_gets_no_more_cells_and_the_others_run_them() {
    let _one_at_a_time = whole_catalog();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut board = start_vboard(&dir.path().join("flash.bin"));
    let mut lab = Lab::new();
    // Lost at once: other tests' boards reuse a dead pty's number, and reopening the path
    // within the deadline could land on one of them.
    lab.reopen_ms = 0;
    lab.install(&board);
    // Its firmware under test: the ESP-AT flash set the scenarios expect.
    common::flash_set(&dir.path().join("esp-at"), "esp32c3", "esp-at", "2.4.0.0");
    std::fs::write(
        dir.path().join("boards.toml"),
        format!(
            "{}firmware_files = \"esp-at\"\n",
            lab.inventory("breaking", &board)
        ),
    )
    .expect("inventory");
    let out = dir.path().join("report");
    let mut child = sparring_in(dir.path())
        .arg("run")
        .arg("--boards")
        .arg(dir.path().join("boards.toml"))
        .args(["--board", "breaking", "--board", "virtual:esp32c3", "--any"])
        // The whole catalog: enough cells that the virtual board is still busy when the
        // external one dies after its first (a short filter let it finish them all first).
        .arg("--report")
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .expect("run starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut killed = false;
    let mut seen = Vec::new();
    for line in BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .take(500)
    {
        // The external board's first verdict, then its process dies under the run.
        if !killed && line.ends_with("[breaking]") {
            board.child.kill().expect("kill the board");
            killed = true;
        }
        seen.push(line);
    }
    let status = child.wait().expect("run ends");
    assert!(killed, "{}", seen.join("\n"));
    assert_eq!(status.code(), Some(1), "{}", seen.join("\n"));
    let report = report(&out);
    let results = report["run"]["results"].as_array().expect("results");
    let on =
        |board: &str| -> Vec<&Value> { results.iter().filter(|r| r["board"] == board).collect() };
    let broken = on("breaking");
    let errors: Vec<&&Value> = broken.iter().filter(|r| r["verdict"] == "error").collect();
    assert_eq!(errors.len(), 1, "{broken:#?}");
    // Nothing after the error was given to the broken board; the rest ran on the other one.
    let errored_at = results
        .iter()
        .position(|r| r["verdict"] == "error")
        .expect("the error");
    assert!(
        results[errored_at + 1..]
            .iter()
            .all(|r| r["board"] == "virtual:esp32c3"),
        "{results:#?}"
    );
    for r in on("virtual:esp32c3") {
        let verdict = r["verdict"].as_str().unwrap_or_default();
        assert!(
            verdict == "pass" || verdict == "pass-with-warnings" || verdict == "skipped",
            "{r:#?}"
        );
    }
    let cells: BTreeSet<&str> = results.iter().filter_map(|r| r["cell"].as_str()).collect();
    assert_eq!(cells.len(), results.len(), "each cell once");
    assert!(out.join("junit.xml").exists() && out.join("report.html").exists());
}

#[test]
fn matrix_values_expand_into_cells_that_run_with_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scenarios = dir.path().join("scenarios");
    std::fs::create_dir(&scenarios).expect("scenarios dir");
    let valid = std::fs::read_to_string(workspace().join("scenarios/tls-valid.toml"))
        .expect("tls-valid")
        .replace("id = \"tls-valid\"", "id = \"tls-keys\"")
        .replace(
            "server_profile = \"valid\"",
            "server_profile = \"${matrix.profile}\"",
        )
        .replace(
            "[setup]",
            "[matrix]\nprofile = [\"valid\", \"rsa-4096\"]\n\n[setup]",
        )
        .replace(
            "[[steps]]\nsnapshot = { port = \"at\", name = \"at\" }\n",
            "",
        );
    std::fs::write(scenarios.join("tls-keys.toml"), valid).expect("matrix scenario");
    let ids = cell_ids(&scenarios, &[]);
    assert_eq!(
        ids.iter()
            .filter(|id| id.starts_with("tls-keys[profile=rsa-4096]@"))
            .count(),
        3,
        "{ids:?}"
    );
    let out = dir.path().join("report");
    let output = sparring_in(dir.path())
        .arg("run")
        .arg(&scenarios)
        .args(["--report"])
        .arg(&out)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let report = report(&out);
    let results = report["run"]["results"].as_array().expect("results");
    let ids: BTreeSet<&str> = results.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(
        ids,
        BTreeSet::from(["tls-keys[profile=rsa-4096]", "tls-keys[profile=valid]"])
    );

    // A placeholder naming no matrix value is refused where it stands.
    let broken = std::fs::read_to_string(scenarios.join("tls-keys.toml"))
        .expect("matrix scenario")
        .replace("${matrix.profile}", "${matrix.profil}");
    std::fs::write(scenarios.join("tls-keys.toml"), broken).expect("broken scenario");
    let output = Command::new(env!("CARGO_BIN_EXE_sparring"))
        .args(["run", "--list"])
        .arg(&scenarios)
        .output()
        .expect("run --list");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output).contains(
            "tls-keys.toml:16:19: ${matrix.profil}: no such matrix value (known: profile)"
        ),
        "{}",
        text(&output)
    );
}
