//! `--help` of every subcommand shows its long description (how to use it, what it writes,
//! exit codes), not only the one-line summary of the command list.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::{sparring, text};

#[test]
fn every_subcommand_explains_itself() {
    for (subcommand, says) in [
        ("run", "130 interrupted by Ctrl-C"),
        ("certs", "manifest.json"),
        ("image", "flash-set"),
        ("vboard", "vboard ctl SOCKET"),
        ("serve", "--bind 192.168.1.20"),
        ("check", "file:line:column"),
        ("new", "busy p..."),
        ("monitor", "Stack memory:"),
        ("boards", "USB-JTAG-serial"),
        ("flash", "OFFSET=FILE"),
    ] {
        let output = sparring(&[subcommand, "--help"]);
        assert!(output.status.success(), "{subcommand} --help failed");
        let help = text(&output);
        assert!(
            help.contains(says),
            "`{subcommand} --help` lacks {says:?}:\n{help}"
        );
    }
}
