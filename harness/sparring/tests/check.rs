//! `sparring check`: exit codes and file:line:column errors from the real binary.

use std::process::{Command, Output};

/// `sparring check PATH`, with no library directories from the caller's environment.
fn check_command(path: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sparring"));
    command.arg("check").arg(path).env_remove("SPARRING_LIB");
    command
}

fn check(path: &std::path::Path) -> Output {
    check_command(path).output().expect("sparring runs")
}

const VALID: &str = r#"id = "at-answers"
title = "The AT port answers"
board = { personality = "esp-at" }

[[steps]]
send = { port = "at", line = "AT" }

[[steps]]
expect = { port = "at", regex = "^OK$", within_ms = 2000 }
"#;

/// VALID with its first step (line 6, under the `[[steps]]` header at line 5) replaced.
fn with_first_step(step: &str) -> String {
    VALID.replace("send = { port = \"at\", line = \"AT\" }", step)
}

#[test]
fn valid_files_pass_and_a_broken_one_is_located() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("good.toml"), VALID).expect("write");
    let output = check(dir.path());
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 scenario(s) valid, 0 invalid"));

    let broken = VALID.replace("regex = \"^OK$\"", "regex = \"^OK[$\"");
    std::fs::write(dir.path().join("broken.toml"), broken).expect("write");
    let output = check(dir.path());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "{}:9:33: expected a valid regular expression",
        dir.path().join("broken.toml").display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn a_missing_path_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = check(&dir.path().join("nope.toml"));
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("nope.toml: cannot read"));
}

#[test]
fn a_broken_library_file_is_located_in_the_library_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("lib/esp-at")).expect("mkdir");
    std::fs::write(
        dir.path().join("lib/esp-at/hello.toml"),
        "[[steps]]\nsend = { port = \"at\", line = \"AT\" }\n\n[[steps]]\nexpect = { port = \"uart7\", regex = \"^OK$\", within_ms = 2000 }\n",
    )
    .expect("write");
    let including = with_first_step("include = { file = \"esp-at/hello.toml\" }");
    std::fs::write(dir.path().join("uses-lib.toml"), including).expect("write");
    let output = check(dir.path());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let library = dir.path().join("lib/esp-at/hello.toml");
    assert!(
        stderr.contains(&format!("{}:5:", library.display())),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("0 scenario(s) valid, 1 invalid"),
        "{output:?}"
    );
}

#[test]
fn includes_are_found_in_sparring_lib_after_the_scenarios_own_lib() {
    let scenarios = tempfile::tempdir().expect("temp dir");
    let team_lib = tempfile::tempdir().expect("temp dir");
    let including = with_first_step("include = { file = \"team/hello.toml\" }");
    std::fs::write(scenarios.path().join("uses-team-lib.toml"), including).expect("write");

    let output = check(scenarios.path());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let looked_in = format!(
        "cannot find included team/hello.toml; looked in {}, <built-in>/team/hello.toml",
        scenarios.path().join("lib/team/hello.toml").display()
    );
    assert!(stderr.contains(&looked_in), "{stderr}");

    std::fs::create_dir_all(team_lib.path().join("team")).expect("mkdir");
    std::fs::write(
        team_lib.path().join("team/hello.toml"),
        "[[steps]]\nsend = { port = \"at\", line = \"AT\" }\n",
    )
    .expect("write");
    let missing = scenarios.path().join("no-such-dir");
    let search_path = std::env::join_paths([missing.as_path(), team_lib.path()]).expect("paths");
    let output = check_command(scenarios.path())
        .env("SPARRING_LIB", search_path)
        .output()
        .expect("sparring runs");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[test]
fn check_and_run_refuse_a_step_that_cannot_fail_alike_also_in_a_library_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("lib/team")).expect("mkdir");
    std::fs::write(
        dir.path().join("lib/team/heap.toml"),
        "[[steps]]\nassert = { fact = \"free-heap\" }\n",
    )
    .expect("write");
    let bad_library = format!(
        "{}:1:1: expected `at_least` or `at_most`",
        dir.path().join("lib/team/heap.toml").display()
    );
    let bad_scenario = format!(
        "{}:5:1: expected a `matching` regex",
        dir.path().join("b.toml").display()
    );
    std::fs::write(
        dir.path().join("a.toml"),
        with_first_step("include = { file = \"team/heap.toml\" }"),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("b.toml"),
        with_first_step("wait-event = { event = \"mqtt\", within_ms = 1000 }"),
    )
    .expect("write");

    let output = check(dir.path());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let check_errors = String::from_utf8_lossy(&output.stderr);
    // Nothing runs: the run stops at load with the same errors.
    let output = Command::new(env!("CARGO_BIN_EXE_sparring"))
        .arg("run")
        .arg(dir.path())
        .arg("--report")
        .arg(dir.path().join("report"))
        .env_remove("SPARRING_LIB")
        .output()
        .expect("sparring runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let run_errors = String::from_utf8_lossy(&output.stderr);
    for errors in [&check_errors, &run_errors] {
        assert!(errors.contains(&bad_library), "{errors}");
        assert!(errors.contains(&bad_scenario), "{errors}");
    }
    assert!(!dir.path().join("report").exists());
}
