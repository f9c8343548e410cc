//! `sparring vboard`: run a virtual ESP32 board on pseudo-terminals.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use esp_formats::Chip;
use sparring_vboard::board::{Board, BoardConfig, Control, send_control};

/// Run a virtual ESP32 / ESP32-C3 board until it is powered off or killed.
///
/// Its UART0 (ROM download protocol and log port) and UART1 (AT command port) are
/// pseudo-terminals any tool can open; its flash is a file that persists across resets and
/// restarts. Prints one JSON line when ready:
/// `{"chip":"esp32c3","uart0":"/dev/pts/5","uart1":"/dev/pts/6","control":"…/control.sock","mac":"…"}`.
/// The control socket takes one JSON request per line instead of the EN and BOOT buttons:
/// `{"cmd":"reset"}` (boot from flash), `{"cmd":"download"}` (restart into the ROM loader),
/// `{"cmd":"state"}`, `{"cmd":"power_off"}`, and the firmware hooks
/// `{"cmd":"reserve_heap","bytes":N}`, `{"cmd":"set_defects","defects":[{"defect":"skip-cn-check"}]}`,
/// `{"cmd":"set_network","network":{"access_points":[{"ssid":"lab","password":"pw"}],"hosts":{"broker.sparring.test":"127.0.0.1"},"ports":{"123":1123}}}`
/// (an access point may add `"fault":"no-answer"` or `"fault":"refuses"`: `+CWJAP:1` / `:4`;
/// `ports` redirects a destination port the firmware dials, e.g. SNTP's 123, to where the
/// lab's service really listens, as a lab router's NAT rule would), and
/// `{"cmd":"set_time_scale","scale":20}`: the firmware's waits (MQTT reconnect, keep-alive,
/// retransmit, network timeouts) run 20 times faster; times measured outside the board (the
/// broker's `backoff-ms`) are then wall time, so a scenario asserting timing divides the
/// hardware figure by the scale.
///
/// `sparring vboard ctl SOCKET REQUEST` sends one request from a shell (what a `boards.toml`
/// reset command runs): `reset`, `download`, `state`, `power_off`, or a JSON request.
///
/// Flash it with espflash (library, ResetBeforeOperation::NoReset) or esptool
/// (`--before no-reset --after no-reset`): ptys have no DTR/RTS lines to reset the chip.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    #[arg(long, default_value = "esp32c3", value_parser = ["esp32", "esp32c3"])]
    chip: String,
    /// Flash image file; created erased (all 0xFF) when missing.
    #[arg(long, default_value = "target/sparring/vboard-flash.bin")]
    flash: PathBuf,
    /// Flash size: 2MB, 4MB, 8MB or 16MB.
    #[arg(long, default_value = "4MB")]
    flash_size: String,
    /// MAC address (aa:bb:cc:dd:ee:ff); default: derived from the flash file's path.
    #[arg(long)]
    mac: Option<String>,
    /// Start in download mode, as with BOOT held at power-on.
    #[arg(long)]
    download: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Send one control request to a running board and print its answer (JSON).
    ///
    /// REQUEST is `reset` (press EN: boot from flash), `download` (hold BOOT, press EN: the
    /// ROM loader), `state`, `power_off`, or a whole JSON request such as
    /// `{"cmd":"reserve_heap","bytes":1000}`. Exit code 1 when the board refuses it.
    Ctl {
        /// The board's control socket (`control` in its ready line).
        socket: PathBuf,
        request: String,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(Action::Ctl { socket, request }) = &args.action {
        return control(socket, request);
    }
    let chip =
        Chip::from_name(&args.chip).with_context(|| format!("unknown chip {}", args.chip))?;
    let flash_size = match args.flash_size.to_ascii_uppercase().as_str() {
        "2MB" => 2 << 20,
        "4MB" => 4 << 20,
        "8MB" => 8 << 20,
        "16MB" => 16 << 20,
        other => bail!("--flash-size {other}: expected 2MB, 4MB, 8MB or 16MB"),
    };
    if let Some(parent) = args.flash.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let run_dir = tempfile::Builder::new()
        .prefix("sparring-vboard-")
        .tempdir()
        .context("creating the control socket directory")?;
    let mut config = BoardConfig::new(chip, args.flash.clone(), run_dir.path().to_path_buf());
    config.flash_size = flash_size;
    config.download = args.download;
    if let Some(mac) = &args.mac {
        config.mac = parse_mac(mac).with_context(|| {
            format!("--mac {mac}: expected six hex bytes like 34:85:18:01:02:03")
        })?;
    }
    let board = Board::start(config)
        .with_context(|| format!("starting the board with flash {}", args.flash.display()))?;
    println!("{}", serde_json::to_string(&board.info)?);
    board.wait_for_power_off();
    drop(run_dir);
    Ok(ExitCode::SUCCESS)
}

fn control(socket: &std::path::Path, request: &str) -> anyhow::Result<ExitCode> {
    let request: Control = match request {
        "reset" => Control::Reset,
        "download" => Control::Download,
        "state" => Control::State,
        "power_off" => Control::PowerOff,
        json => serde_json::from_str(json).with_context(|| {
            format!("request {json:?}: expected reset, download, state, power_off or a JSON request like {{\"cmd\":\"reset\"}}")
        })?,
    };
    let answer = send_control(socket, &request)
        .with_context(|| format!("control socket {}", socket.display()))?;
    println!("{answer}");
    let accepted = answer.get("ok").and_then(serde_json::Value::as_bool) == Some(true);
    Ok(if accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}
