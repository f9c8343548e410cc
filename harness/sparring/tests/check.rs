//! `sparring check`: exit codes and file:line:column errors from the real binary.

use std::process::{Command, Output};

fn check(path: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparring"))
        .arg("check")
        .arg(path)
        .output()
        .expect("sparring runs")
}

const VALID: &str = r#"id = "at-answers"
title = "The AT port answers"
board = { personality = "esp-at" }

[[steps]]
send = { port = "at", line = "AT" }

[[steps]]
expect = { port = "at", regex = "^OK$", within_ms = 2000 }
"#;

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
    let including = VALID.replace(
        "[[steps]]\nsend = { port = \"at\", line = \"AT\" }",
        "[[steps]]\ninclude = { file = \"esp-at/hello.toml\" }",
    );
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
