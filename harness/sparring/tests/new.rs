//! `sparring new`: the starter scenario passes `sparring check` anywhere (its library comes
//! from the binary) and is not overwritten by accident.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::{sparring, text};

#[test]
fn the_starter_scenario_passes_check_outside_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let scenarios = dir.path().join("my-scenarios");
    let output = sparring(&["new", "first-publish", "--dir", scenarios.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    let written = std::fs::read_to_string(scenarios.join("first-publish.toml")).unwrap();
    assert!(written.contains("id = \"first-publish\"\n"), "{written}");
    // It waits for the connection before it publishes.
    let connected = written.find("MQTTCONNECTED").unwrap();
    assert!(connected < written.find("AT+MQTTPUB").unwrap(), "{written}");

    let output = sparring(&["check", scenarios.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("1 scenario(s) valid, 0 invalid"),
        "{}",
        text(&output)
    );
}

#[test]
fn an_existing_file_is_overwritten_only_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mine.toml");
    std::fs::write(&file, "# my work\n").unwrap();
    let dir_arg = dir.path().to_str().unwrap();

    let output = sparring(&["new", "mine", "--dir", dir_arg]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("--force"), "{}", text(&output));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# my work\n");

    let output = sparring(&["new", "mine", "--dir", dir_arg, "--force"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("id = \"mine\"")
    );
}

#[test]
fn a_name_that_is_not_an_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = sparring(&["new", "../escape", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("expected a name of letters"),
        "{}",
        text(&output)
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
