//! The step library: built into the binary, so scenarios outside the repository can include
//! it; a scenario's own `lib/` comes first; library files are checked like scenarios.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sparring_runner::library::BUILT_IN;
use sparring_runner::plan::{self, PlannedStep};
use sparring_runner::scenario::{LoadError, Step, load_file};

fn repo_scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

/// Every file under `dir`, as `/`-separated paths relative to `dir`.
fn files_under(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = format!("{prefix}{}", path.file_name().unwrap().to_string_lossy());
        if path.is_dir() {
            files_under(&path, &format!("{name}/"), out);
        } else {
            out.insert(name);
        }
    }
}

/// Loads (which checks the includes) and expands a scenario file.
fn expand_file(path: &Path) -> Result<Vec<PlannedStep>, LoadError> {
    plan::expand(&load_file(path)?)
}

/// A scenario that includes `include` (a TOML inline table), written to `dir/uses-lib.toml`.
fn write_scenario(dir: &Path, include: &str) -> PathBuf {
    let path = dir.join("uses-lib.toml");
    let text = format!(
        "id = \"uses-lib\"\ntitle = \"t\"\nboard = {{ personality = \"esp-at\" }}\n\n[[steps]]\ninclude = {include}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn write_lib_file(dir: &Path, name: &str, text: &str) {
    let path = dir.join("lib").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn error_text(result: Result<Vec<PlannedStep>, LoadError>) -> String {
    match result {
        Err(error) => error.to_string(),
        Ok(steps) => panic!("expected an error, got {steps:?}"),
    }
}

#[test]
fn the_built_in_library_is_every_file_in_scenarios_lib() {
    let mut on_disk = BTreeSet::new();
    files_under(&repo_scenarios().join("lib"), "", &mut on_disk);
    let built_in: BTreeSet<String> = BUILT_IN.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(
        built_in, on_disk,
        "library::BUILT_IN lists other files than scenarios/lib/"
    );
}

#[test]
fn a_scenario_outside_the_repository_includes_the_built_in_library() {
    let in_repo = repo_scenarios().join("tls-valid.toml");
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("tls-valid.toml");
    std::fs::copy(&in_repo, &copy).unwrap();

    let from_repo = expand_file(&in_repo).unwrap();
    let from_binary = expand_file(&copy).unwrap();
    let steps = |planned: &[PlannedStep]| -> Vec<String> {
        planned
            .iter()
            .map(|p| format!("{:?} {:?}", p.step, p.vars))
            .collect()
    };
    assert_eq!(steps(&from_binary), steps(&from_repo));
    assert!(from_repo.len() > 10, "{from_repo:?}");
    assert_eq!(from_binary[0].origin, "<built-in>/esp-at/boot.toml:2");
    assert!(
        from_repo[0]
            .origin
            .ends_with("scenarios/lib/esp-at/boot.toml:2"),
        "{}",
        from_repo[0].origin
    );
}

#[test]
fn a_local_library_file_overrides_the_built_in_one_even_when_included_from_it() {
    let dir = tempfile::tempdir().unwrap();
    write_lib_file(
        dir.path(),
        "esp-at/boot.toml",
        "# The board is already flashed.\n[[steps]]\nsend = { port = \"at\", line = \"AT+GMR\" }\n",
    );
    let scenario = write_scenario(dir.path(), "{ file = \"esp-at/prepare.toml\" }");
    let planned = expand_file(&scenario).unwrap();

    let local_boot = dir.path().join("lib/esp-at/boot.toml");
    assert_eq!(planned[0].origin, format!("{}:2", local_boot.display()));
    assert!(
        matches!(&planned[0].step, Step::Send(s) if s.line.as_deref() == Some("AT+GMR")),
        "{:?}",
        planned[0].step
    );
    // The rest of prepare.toml still comes from the binary.
    assert_eq!(planned[1].origin, "<built-in>/esp-at/provision.toml:3");
    assert!(
        !planned.iter().any(|p| matches!(p.step, Step::Flash(_))),
        "the built-in boot.toml's flash step is still there: {planned:?}"
    );
}

#[test]
fn an_include_found_nowhere_names_every_place_looked_in() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "{ file = \"esp-at/nope.toml\" }");
    let error = error_text(expand_file(&scenario));
    let expected = format!(
        "{}:5:1: cannot find included esp-at/nope.toml; looked in {}, ",
        scenario.display(),
        dir.path().join("lib/esp-at/nope.toml").display()
    );
    assert!(error.starts_with(&expected), "{error}");
    assert!(error.ends_with(", <built-in>/esp-at/nope.toml"), "{error}");
}

#[test]
fn steps_in_a_library_file_are_checked_like_a_scenarios() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "{ file = \"team/heap.toml\" }");
    let library_file = dir.path().join("lib/team/heap.toml");

    for (library_text, at, expected) in [
        (
            "# Heap left after connecting.\n[[steps]]\nassert = { fact = \"free-heap\" }\n",
            "2:1",
            "expected `at_least` or `at_most`",
        ),
        (
            "# Nothing yet.\nsteps = []\n",
            "2:9",
            "expected at least one step",
        ),
    ] {
        write_lib_file(dir.path(), "team/heap.toml", library_text);
        let error = error_text(expand_file(&scenario));
        let located = format!("{}:{at}: {expected}", library_file.display());
        assert!(error.starts_with(&located), "{error}");
    }
}
