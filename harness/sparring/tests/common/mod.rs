//! Running the `sparring` binary as a user does, shared by the CLI test files.

// Each test binary uses part of these helpers.
#![allow(dead_code)]

pub mod vboard;

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs `sparring ARGS`, with RSA keys cached under the test target directory.
pub fn sparring(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparring"))
        .args(args)
        .env(
            "SPARRING_KEY_CACHE",
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("key-cache"),
        )
        .output()
        .expect("sparring runs")
}

/// `sparring image flash-set` for `chip` with the app `project` `version`, into `out`.
pub fn flash_set(out: &std::path::Path, chip: &str, project: &str, version: &str) {
    let output = sparring(&[
        "image",
        "flash-set",
        "--chip",
        chip,
        "--project",
        project,
        "--version",
        version,
        "-o",
        out.to_str().expect("utf-8 path"),
    ]);
    assert!(output.status.success(), "{}", text(&output));
}

/// Stdout and stderr together, for assertions and failure messages.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
