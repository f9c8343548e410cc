//! A running virtual board: its UARTs as pseudo-terminals, its flash file, and the control
//! channel (a Unix socket, one JSON request per line) that replaces the EN and BOOT buttons
//! and the power switch.
//!
//! The serial pumps run on plain threads rather than tokio tasks: `serialport` offers only
//! blocking I/O on the pty master, and one thread per UART is what a blocking port needs.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use esp_formats::{Chip, slip};
use serde::{Deserialize, Serialize};
use serialport::{SerialPort, TTYPort};

use crate::boot::{self, ResetCause};
use crate::flash::{Flash, FlashError};
use crate::personality::{self, AppContext, Defect, NetworkConfig, Shared};
use crate::rom::{After, RomLoader};

/// How long a UART read waits before the board's threads look at their control flags again:
/// a control request (reset, download, a lab setting) or an app stop takes effect within
/// this, as a button press on a real board does at once.
const POLL: Duration = Duration::from_millis(5);

/// How to build a board.
#[derive(Debug, Clone)]
pub struct BoardConfig {
    pub chip: Chip,
    pub flash_path: PathBuf,
    pub flash_size: usize,
    pub mac: [u8; 6],
    /// Start in download mode (BOOT held at power-on) instead of booting from flash.
    pub download: bool,
    /// Directory for the control socket.
    pub run_dir: PathBuf,
}

impl BoardConfig {
    /// A board with a MAC derived from the flash path, so each flash file is its own board.
    pub fn new(chip: Chip, flash_path: PathBuf, run_dir: PathBuf) -> BoardConfig {
        let seed = flash_path
            .to_string_lossy()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        let s = seed.to_le_bytes();
        // Espressif's OUI keeps the MAC plausible to tools that print the vendor.
        let mac = [0x34, 0x85, 0x18, s[0], s[1], s[2]];
        BoardConfig {
            chip,
            flash_path,
            flash_size: 4 << 20,
            mac,
            download: false,
            run_dir,
        }
    }
}

/// What `sparring vboard` prints when the board is ready.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BoardInfo {
    pub chip: String,
    pub uart0: PathBuf,
    pub uart1: PathBuf,
    pub control: PathBuf,
    pub mac: String,
}

/// Requests on the control channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Control {
    /// Press EN: boot from flash.
    Reset,
    /// Hold BOOT and press EN: restart into the ROM loader.
    Download,
    PowerOff,
    State,
    /// Take `bytes` of heap away from the app (0 gives them back): low-heap conditions.
    ReserveHeap {
        bytes: u32,
    },
    /// Replace the set of defect switches (survives resets, like a firmware build option).
    SetDefects {
        defects: Vec<Defect>,
    },
    /// Replace the access points and hosts table the board's network offers.
    SetNetwork {
        network: NetworkConfig,
    },
    /// Run the firmware's waits (MQTT reconnect, keep-alive, retransmit, network timeouts)
    /// `scale` times faster (1 = real time; survives resets). Facts measured outside the board
    /// (`backoff-ms` at the broker) are then wall time: a scenario asserting timing divides
    /// the hardware figure by the scale.
    SetTimeScale {
        scale: u32,
    },
}

/// The board's state as `state` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BoardState {
    pub mode: Mode,
    /// Project and version of the running app.
    pub app: Option<String>,
    pub uptime_ms: u64,
    pub free_heap: u32,
    pub min_free_heap: u32,
    /// Network connection attempts by the firmware since the last reset.
    #[serde(default)]
    pub connect_attempts: u32,
    /// Milliseconds between the starts of the last two connection attempts.
    #[serde(default)]
    pub last_backoff_ms: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Download,
    Running,
    /// Boot failed (no bootable app); the board waits for a reset.
    Halted,
    Off,
}

/// Why a board could not start.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error(transparent)]
    Flash(#[from] FlashError),
    #[error("creating a pseudo-terminal: {0}")]
    Pty(serialport::Error),
    #[error("control socket {path}: {source}")]
    Control {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A started board. Dropping it does not stop it; send `power_off` or call [`Board::power_off`].
pub struct Board {
    pub info: BoardInfo,
    commands: mpsc::Sender<Input>,
    pump: Option<JoinHandle<()>>,
}

/// What the board's core reacts to, on one channel so it wakes at once for either: a control
/// request (a button, a lab setting) with where to send the state after it, or bytes the host
/// sent on UART0.
enum Input {
    Control(Control, mpsc::Sender<BoardState>),
    Uart0(Vec<u8>),
}

impl Board {
    pub fn start(config: BoardConfig) -> Result<Board, BoardError> {
        let flash = Flash::open(&config.flash_path, config.flash_size)?;
        let (uart0, uart0_slave) = pty()?;
        let (uart1, uart1_slave) = pty()?;
        let control_path = config.run_dir.join("control.sock");
        let _ = std::fs::remove_file(&control_path);
        let listener = UnixListener::bind(&control_path).map_err(|source| BoardError::Control {
            path: control_path.clone(),
            source,
        })?;
        let info = BoardInfo {
            chip: config.chip.name().to_owned(),
            uart0: slave_path(&uart0_slave),
            uart1: slave_path(&uart1_slave),
            control: control_path,
            mac: config
                .mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
        };
        let (commands, inbox) = mpsc::channel();
        let control_commands = commands.clone();
        std::thread::spawn(move || serve_control(listener, control_commands));
        let uart0_reader = uart0.try_clone_native().map_err(BoardError::Pty)?;
        let reading = Arc::new(AtomicBool::new(true));
        {
            let (inputs, reading) = (commands.clone(), reading.clone());
            std::thread::spawn(move || read_uart0(uart0_reader, &inputs, &reading));
        }
        let core = Core {
            chip: config.chip,
            mac: config.mac,
            flash: Arc::new(Mutex::new(flash)),
            uart0,
            // Held open so that reads on the masters never see "all clients closed".
            _slaves: [uart0_slave, uart1_slave],
            uart1,
            started: Instant::now(),
            mode: Mode::Off,
            app: None,
            loader: None,
            shared: Arc::new(Shared::new(config.chip)),
            running: None,
            reading,
        };
        let download = config.download;
        let pump = std::thread::spawn(move || core.run(download, inbox));
        Ok(Board {
            info,
            commands,
            pump: Some(pump),
        })
    }

    /// Sends a control request, as the control socket does.
    pub fn control(&self, request: Control) -> Option<BoardState> {
        let (reply, answer) = mpsc::channel();
        self.commands.send(Input::Control(request, reply)).ok()?;
        answer.recv_timeout(Duration::from_secs(10)).ok()
    }

    /// Blocks until the board is powered off (through the control channel).
    pub fn wait_for_power_off(mut self) {
        if let Some(pump) = self.pump.take() {
            let _ = pump.join();
        }
    }

    pub fn power_off(mut self) {
        self.control(Control::PowerOff);
        if let Some(pump) = self.pump.take() {
            let _ = pump.join();
        }
    }
}

fn pty() -> Result<(TTYPort, TTYPort), BoardError> {
    let (mut master, mut slave) = TTYPort::pair().map_err(BoardError::Pty)?;
    // A fresh pty runs at 38400 baud; tools expect the ROM's 115200.
    slave.set_baud_rate(115_200).map_err(BoardError::Pty)?;
    master.set_timeout(POLL).map_err(BoardError::Pty)?;
    Ok((master, slave))
}

fn slave_path(slave: &TTYPort) -> PathBuf {
    slave.name().map(PathBuf::from).unwrap_or_default()
}

/// One connection at a time is enough for a board: the harness is its only user.
fn serve_control(listener: UnixListener, commands: mpsc::Sender<Input>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let Ok(mut writer) = stream.try_clone() else {
            continue;
        };
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let reply = match serde_json::from_str::<Control>(&line) {
                Ok(request) => {
                    let stop = request == Control::PowerOff;
                    let (reply, answer) = mpsc::channel();
                    if commands.send(Input::Control(request, reply)).is_err() {
                        return;
                    }
                    let state = answer.recv_timeout(Duration::from_secs(10));
                    let text = match state {
                        Ok(state) => serde_json::json!({"ok": true, "state": state}).to_string(),
                        Err(_) => serde_json::json!({"ok": false, "error": "board did not answer"}).to_string(),
                    };
                    if stop {
                        let _ = writeln!(writer, "{text}");
                        return;
                    }
                    text
                }
                Err(e) => serde_json::json!({"ok": false, "error": format!("bad request {line:?}: {e}; expected e.g. {{\"cmd\":\"reset\"}}")}).to_string(),
            };
            if writeln!(writer, "{reply}").is_err() {
                break;
            }
        }
    }
}

/// Sends one request to a board's control socket (for harness code and tests in other processes).
pub fn send_control(socket: &Path, request: &Control) -> std::io::Result<serde_json::Value> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    writeln!(
        stream,
        "{}",
        serde_json::to_string(request).map_err(std::io::Error::other)?
    )?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}

struct Core {
    chip: Chip,
    mac: [u8; 6],
    flash: Arc<Mutex<Flash>>,
    uart0: TTYPort,
    uart1: TTYPort,
    _slaves: [TTYPort; 2],
    started: Instant,
    mode: Mode,
    app: Option<String>,
    loader: Option<RomLoader>,
    shared: Arc<Shared>,
    running: Option<RunningApp>,
    /// Cleared when the core stops, so the UART0 reader does too.
    reading: Arc<AtomicBool>,
}

/// Forwards what the host sends on UART0 to the core until the core stops.
fn read_uart0(mut uart0: TTYPort, inputs: &mpsc::Sender<Input>, reading: &AtomicBool) {
    let mut buf = [0u8; 4096];
    while reading.load(Ordering::SeqCst) {
        match uart0.read(&mut buf) {
            Ok(n) => {
                if n > 0 && inputs.send(Input::Uart0(buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The personality thread of the booted app and the flags it shares with the board.
struct RunningApp {
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
    restart: Arc<AtomicBool>,
}

impl Core {
    fn run(mut self, download: bool, inbox: mpsc::Receiver<Input>) {
        if download {
            self.enter_download(ResetCause::PowerOn);
        } else {
            self.boot(ResetCause::PowerOn);
        }
        let mut decoder = slip::Decoder::new(0x1_0000);
        loop {
            if self
                .running
                .as_ref()
                .is_some_and(|app| app.restart.load(Ordering::SeqCst))
            {
                self.boot(ResetCause::Software);
            }
            // The timeout only bounds how late an app's restart request is noticed.
            let bytes = match inbox.recv_timeout(POLL) {
                Ok(Input::Control(request, reply)) => {
                    self.control(request);
                    let _ = reply.send(self.state());
                    if self.mode == Mode::Off {
                        self.reading.store(false, Ordering::SeqCst);
                        return;
                    }
                    continue;
                }
                Ok(Input::Uart0(bytes)) => bytes,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            if self.mode != Mode::Download {
                continue; // the generic app reads nothing from UART0
            }
            for byte in bytes {
                let Some(Ok(frame)) = decoder.push(byte) else {
                    continue;
                };
                let Some(loader) = self.loader.as_mut() else {
                    continue;
                };
                let (replies, after) = {
                    let mut flash = self.flash.lock().unwrap_or_else(|p| p.into_inner());
                    loader.handle(&frame, &mut flash)
                };
                for reply in replies {
                    let _ = self.uart0.write_all(&slip::encode(&reply));
                }
                if after == After::RunUserCode {
                    self.boot(ResetCause::Software);
                }
            }
        }
    }

    fn control(&mut self, request: Control) {
        match request {
            Control::Reset => self.boot(ResetCause::PowerOn),
            Control::Download => self.enter_download(ResetCause::PowerOn),
            Control::PowerOff => {
                self.stop_app();
                self.mode = Mode::Off;
            }
            Control::State => {}
            Control::ReserveHeap { bytes } => self.shared.reserve_heap(bytes),
            Control::SetDefects { defects } => self.shared.set_defects(defects),
            Control::SetNetwork { network } => self.shared.set_network(network),
            Control::SetTimeScale { scale } => self.shared.set_time_scale(scale),
        }
    }

    /// Hands the board over to the app's personality on its own thread.
    fn start_app(&mut self, app: boot::BootedApp) {
        let ports = self
            .uart0
            .try_clone_native()
            .and_then(|uart0| Ok((uart0, self.uart1.try_clone_native()?)));
        let (uart0, mut uart1) = match ports {
            Ok(ports) => ports,
            Err(e) => {
                self.print(&[format!(
                    "E (0) sparring: cannot hand the UARTs to the app: {e}"
                )]);
                self.mode = Mode::Halted;
                return;
            }
        };
        // Short reads let the personality notice a stop request promptly.
        let _ = uart1.set_timeout(POLL);
        let stop = Arc::new(AtomicBool::new(false));
        let restart = Arc::new(AtomicBool::new(false));
        let personality = personality::for_project(&app.descriptor.project_name);
        let ctx = AppContext {
            chip: self.chip,
            mac: self.mac,
            descriptor: app.descriptor,
            partition: app.partition,
            table: app.table,
            shared: Arc::clone(&self.shared),
            flash: Arc::clone(&self.flash),
            uart0: Mutex::new(uart0),
            uart1,
            booted: self.started,
            stop: Arc::clone(&stop),
            restart: Arc::clone(&restart),
        };
        let thread = std::thread::spawn(move || personality.run(ctx));
        self.running = Some(RunningApp {
            thread,
            stop,
            restart,
        });
    }

    fn state(&self) -> BoardState {
        BoardState {
            mode: self.mode,
            app: self.app.clone(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            free_heap: self.shared.heap().free,
            min_free_heap: self.shared.heap().min_free,
            connect_attempts: self
                .shared
                .net_stats
                .connect_attempts
                .load(Ordering::SeqCst),
            last_backoff_ms: self.shared.net_stats.last_backoff_ms.load(Ordering::SeqCst),
        }
    }

    fn print(&mut self, lines: &[String]) {
        for line in lines {
            let _ = self.uart0.write_all(format!("{line}\r\n").as_bytes());
        }
    }

    /// Stops the running app's personality (reset, download or power off) and waits for it.
    fn stop_app(&mut self) {
        if let Some(app) = self.running.take() {
            app.stop.store(true, Ordering::SeqCst);
            let _ = app.thread.join();
        }
    }

    fn enter_download(&mut self, cause: ResetCause) {
        self.stop_app();
        self.shared.reset();
        self.started = Instant::now();
        self.app = None;
        let banner = boot::rom_banner(self.chip, cause, true);
        self.print(&banner);
        let flash_size = self.flash.lock().unwrap_or_else(|p| p.into_inner()).size();
        self.loader = Some(RomLoader::new(self.chip, self.mac, flash_size));
        self.mode = Mode::Download;
    }

    fn boot(&mut self, cause: ResetCause) {
        self.stop_app();
        self.shared.reset();
        self.started = Instant::now();
        self.loader = None;
        let started = self.started;
        let result = {
            let mut flash = self.flash.lock().unwrap_or_else(|p| p.into_inner());
            boot::boot(self.chip, cause, &mut flash, || {
                started.elapsed().as_millis() as u64
            })
        };
        self.print(&result.lines);
        match result.app {
            Some(app) => {
                let d = &app.descriptor;
                self.app = Some(format!("{} {}", d.project_name, d.version));
                let ms = started.elapsed().as_millis();
                let lines = vec![
                    format!("I ({ms}) main_task: Started on CPU0"),
                    format!("I ({ms}) main_task: Calling app_main()"),
                ];
                self.print(&lines);
                self.mode = Mode::Running;
                self.start_app(app);
            }
            None => {
                self.app = None;
                self.mode = Mode::Halted;
            }
        }
    }
}
