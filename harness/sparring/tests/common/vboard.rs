//! `sparring vboard` as a separate process, driven only as a real board is: its ptys as serial
//! ports, its control socket as the lab's relay and access point.

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sparring_vboard::board::{BoardInfo, Control, send_control};

pub struct VboardProcess {
    pub child: Child,
    pub info: BoardInfo,
}

impl Drop for VboardProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a board in download mode with its flash in `flash`.
pub fn start_vboard(flash: &Path) -> VboardProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparring"))
        .args(["vboard", "--chip", "esp32c3", "--download", "--flash"])
        .arg(flash)
        .stdout(Stdio::piped())
        .spawn()
        .expect("sparring vboard starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("the ready line");
    let info: BoardInfo =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
    VboardProcess { child, info }
}

/// A lab around an external board: its access point, and SNTP's 123 redirected to the port
/// the run's SNTP server binds (as a lab router's NAT rule would).
pub struct Lab {
    pub ssid: String,
    pub password: String,
    pub sntp_port: u16,
    /// How long the run waits for a vanished port. Short: pty numbers are reused, and a
    /// parallel test's new board must not be taken for this one coming back.
    pub reopen_ms: u64,
}

impl Lab {
    pub fn new() -> Lab {
        let sntp_port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free UDP port")
            .port();
        Lab {
            ssid: "bench-ap".into(),
            password: "bench password".into(),
            sntp_port,
            reopen_ms: 200,
        }
    }

    /// Sets the board's surroundings up through `sparring vboard ctl`, as a shell would.
    pub fn install(&self, board: &VboardProcess) {
        let request = serde_json::json!({
            "cmd": "set_network",
            "network": {
                "access_points": [{"ssid": self.ssid, "password": self.password}],
                "ports": {"123": self.sntp_port},
            }
        });
        let output = Command::new(env!("CARGO_BIN_EXE_sparring"))
            .args(["vboard", "ctl"])
            .arg(&board.info.control)
            .arg(request.to_string())
            .output()
            .expect("sparring vboard ctl runs");
        assert!(
            output.status.success(),
            "vboard ctl set_network: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A `boards.toml` declaring the board as a serial board: its two ptys, resets by
    /// `sparring vboard ctl` commands.
    pub fn inventory(&self, id: &str, board: &VboardProcess) -> String {
        let ctl = |what: &str| {
            format!(
                "[{:?}, \"vboard\", \"ctl\", {:?}, {what:?}]",
                env!("CARGO_BIN_EXE_sparring"),
                board.info.control.display().to_string()
            )
        };
        format!(
            "[lab]\nbind = \"127.0.0.1\"\nwifi = {{ ssid = {:?}, password = {:?} }}\nsntp_port = {}\nreopen_ms = {}\n\n\
             [[board]]\nid = {id:?}\nchip = \"esp32c3\"\nlog_port = {:?}\nat_port = {:?}\n\
             reset = {{ run = {}, download = {} }}\nfirmware = \"esp-at\"\n",
            self.ssid,
            self.password,
            self.sntp_port,
            self.reopen_ms,
            board.info.uart0.display().to_string(),
            board.info.uart1.display().to_string(),
            ctl("reset"),
            ctl("download"),
        )
    }
}

/// Powers the board off through its control socket.
pub fn power_off(board: &VboardProcess) -> serde_json::Value {
    send_control(&board.info.control, &Control::PowerOff).expect("control socket answers")
}

/// A lock directory of the test's own, so parallel tests never share board locks.
pub fn lock_dir(dir: &Path) -> PathBuf {
    dir.join("locks")
}

/// Resets the board with `sparring vboard ctl SOCKET reset`, as a lab's reset command does,
/// and returns its log port's output up to the app's `App version:` line (10 s at most).
pub fn boot_log(board: &VboardProcess) -> String {
    let mut port = serialport::new(board.info.uart0.to_string_lossy(), 115_200)
        .timeout(std::time::Duration::from_millis(100))
        .open_native()
        .expect("the log port opens");
    let reset = Command::new(env!("CARGO_BIN_EXE_sparring"))
        .args(["vboard", "ctl"])
        .arg(&board.info.control)
        .arg("reset")
        .output()
        .expect("sparring vboard ctl runs");
    assert!(reset.status.success(), "vboard ctl reset: {reset:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut log = Vec::new();
    let mut buf = [0u8; 1024];
    let complete = |log: &[u8]| {
        let text = String::from_utf8_lossy(log);
        text.split_once("App version:")
            .is_some_and(|(_, rest)| rest.contains('\n'))
    };
    while std::time::Instant::now() < deadline && !complete(&log) {
        if let Ok(n) = std::io::Read::read(&mut port, &mut buf) {
            log.extend_from_slice(&buf[..n]);
        }
    }
    String::from_utf8_lossy(&log).into_owned()
}
