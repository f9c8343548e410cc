//! The firmware a booted app "is": the bootloader hands over to a [`Personality`] chosen by
//! the app descriptor's project name. A personality runs on its own thread with an
//! [`AppContext`] — everything firmware can touch on a real module: the log UART, the AT UART,
//! flash, the running image, chip and MAC, a clock, a heap, defect switches and the network.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use esp_formats::Chip;
use esp_formats::image::AppDescriptor;
use esp_formats::partition::{Partition, PartitionTable};
use serde::{Deserialize, Serialize};
use serialport::TTYPort;

use crate::flash::{Flash, FlashError};

/// Firmware behaviour of a booted app.
pub trait Personality: Send {
    /// Runs the app until [`AppContext::stopping`] turns true (reset, download, power off) or
    /// the app asks for a restart with [`AppContext::restart`]. Must poll `stopping()` at
    /// least every ~100 ms (the AT port reader times out for that purpose).
    fn run(self: Box<Self>, ctx: AppContext);
}

/// See [`Shared::scaled_network`].
const SHORTEST_NETWORK_WAIT: Duration = Duration::from_millis(200);

/// Personalities by the app descriptor's project name; part 2 adds
/// `("esp-at", || Box::new(crate::esp_at::EspAt::new()))`.
const REGISTRY: &[(&str, MakePersonality)] =
    &[("esp-at", || Box::new(crate::esp_at::EspAt::new()))];

type MakePersonality = fn() -> Box<dyn Personality>;

/// The personality for an app's project name; unregistered names get [`Generic`].
pub fn for_project(project_name: &str) -> Box<dyn Personality> {
    REGISTRY
        .iter()
        .find(|(name, _)| *name == project_name)
        .map_or_else(
            || Box::new(Generic) as Box<dyn Personality>,
            |(_, make)| make(),
        )
}

/// Prints its banner and app info, then idles until stopped.
pub struct Generic;

impl Personality for Generic {
    fn run(self: Box<Self>, ctx: AppContext) {
        let d = &ctx.descriptor;
        ctx.log(
            LogLevel::Info,
            "generic",
            &format!(
                "{} {} running (sparring virtual board, generic personality)",
                d.project_name, d.version
            ),
        );
        while !ctx.stopping() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// ESP-IDF log levels, printed as their letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl LogLevel {
    /// `E`, `W`, `D`; anything else is `I`.
    pub fn from_letter(letter: char) -> LogLevel {
        match letter {
            'E' => LogLevel::Error,
            'W' => LogLevel::Warn,
            'D' => LogLevel::Debug,
            _ => LogLevel::Info,
        }
    }

    pub(crate) fn letter(self) -> char {
        match self {
            LogLevel::Error => 'E',
            LogLevel::Warn => 'W',
            LogLevel::Info => 'I',
            LogLevel::Debug => 'D',
        }
    }
}

/// A switch that makes the virtual firmware misbehave on purpose (part 2 gives each its effect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "defect", rename_all = "kebab-case")]
pub enum Defect {
    SkipServerVerify,
    SkipCnCheck,
    IgnoreExpiry,
    NoSntpWait,
    LeakPerConnect { bytes: u32 },
    CrashOnLargeRecord,
    AcceptAnyOtaImage,
    NoRollback,
    NoBackoff,
    NoRetransmit,
    IgnoreKeepalive,
    CrashBeforeConfirm,
    AcceptWeakCrypto,
}

impl Defect {
    /// Every switch, with the effect it has (for `--help` and error messages).
    pub const ALL: &[(&'static str, &'static str)] = &[
        ("skip-server-verify", "accepts any server certificate"),
        (
            "skip-cn-check",
            "accepts a server certificate issued for another host",
        ),
        (
            "ignore-expiry",
            "accepts expired and not-yet-valid server certificates",
        ),
        (
            "no-sntp-wait",
            "reports +TIME_UPDATED without an SNTP answer",
        ),
        (
            "leak-per-connect=BYTES",
            "never frees BYTES of heap per MQTT connection",
        ),
        (
            "crash-on-large-record",
            "panics (Guru Meditation) on an incoming message over 4 KiB",
        ),
        (
            "accept-any-ota-image",
            "installs OTA images without validating them",
        ),
        (
            "no-rollback",
            "marks an OTA image valid at once: rollback is never armed",
        ),
        (
            "no-backoff",
            "reconnects to the broker at once instead of after esp-mqtt's 10 s",
        ),
        (
            "no-retransmit",
            "never sends an unacknowledged publish or subscribe again (no DUP)",
        ),
        (
            "ignore-keepalive",
            "sends no PINGREQ and never notices a silent broker",
        ),
        (
            "crash-before-confirm",
            "an updated app panics at its first boot, before confirming itself",
        ),
        (
            "accept-weak-crypto",
            "skips mbedTLS's certificate profile (SHA-1 signatures, RSA keys under 2048 bits)",
        ),
    ];
}

/// A defect switch name that is not one of [`Defect::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown defect switch {0:?}; expected one of: skip-server-verify, skip-cn-check, ignore-expiry, no-sntp-wait, leak-per-connect=BYTES, crash-on-large-record, accept-any-ota-image, no-rollback, no-backoff, no-retransmit, ignore-keepalive, crash-before-confirm, accept-weak-crypto"
)]
pub struct UnknownDefect(pub String);

impl std::str::FromStr for Defect {
    type Err = UnknownDefect;

    fn from_str(s: &str) -> Result<Defect, UnknownDefect> {
        let unknown = || UnknownDefect(s.to_owned());
        Ok(match s {
            "skip-server-verify" => Defect::SkipServerVerify,
            "skip-cn-check" => Defect::SkipCnCheck,
            "ignore-expiry" => Defect::IgnoreExpiry,
            "no-sntp-wait" => Defect::NoSntpWait,
            "crash-on-large-record" => Defect::CrashOnLargeRecord,
            "accept-any-ota-image" => Defect::AcceptAnyOtaImage,
            "no-rollback" => Defect::NoRollback,
            "no-backoff" => Defect::NoBackoff,
            "no-retransmit" => Defect::NoRetransmit,
            "ignore-keepalive" => Defect::IgnoreKeepalive,
            "crash-before-confirm" => Defect::CrashBeforeConfirm,
            "accept-weak-crypto" => Defect::AcceptWeakCrypto,
            other => {
                let bytes = other
                    .strip_prefix("leak-per-connect=")
                    .ok_or_else(unknown)?;
                Defect::LeakPerConnect {
                    bytes: bytes.parse().map_err(|_| unknown())?,
                }
            }
        })
    }
}

impl std::fmt::Display for Defect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Defect::SkipServerVerify => f.write_str("skip-server-verify"),
            Defect::SkipCnCheck => f.write_str("skip-cn-check"),
            Defect::IgnoreExpiry => f.write_str("ignore-expiry"),
            Defect::NoSntpWait => f.write_str("no-sntp-wait"),
            Defect::LeakPerConnect { bytes } => write!(f, "leak-per-connect={bytes}"),
            Defect::CrashOnLargeRecord => f.write_str("crash-on-large-record"),
            Defect::AcceptAnyOtaImage => f.write_str("accept-any-ota-image"),
            Defect::NoRollback => f.write_str("no-rollback"),
            Defect::NoBackoff => f.write_str("no-backoff"),
            Defect::NoRetransmit => f.write_str("no-retransmit"),
            Defect::IgnoreKeepalive => f.write_str("ignore-keepalive"),
            Defect::CrashBeforeConfirm => f.write_str("crash-before-confirm"),
            Defect::AcceptWeakCrypto => f.write_str("accept-weak-crypto"),
        }
    }
}

/// An access point the board can join with `AT+CWJAP`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessPoint {
    pub ssid: String,
    pub password: String,
    /// RSSI reported by scans and `AT+CWJAP?`.
    #[serde(default = "default_rssi")]
    pub rssi: i8,
    /// How joining it fails even with the right password, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<ApFault>,
}

/// An access point that is in range but will not let the board join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApFault {
    /// It never answers the association: `+CWJAP:1` (timeout).
    NoAnswer,
    /// It answers and refuses: `+CWJAP:4` (connect failed).
    Refuses,
}

fn default_rssi() -> i8 {
    -45
}

/// What the board's network looks like: access points and a hosts table (name → address),
/// so TLS name checks run against real names that resolve to loopback.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    pub access_points: Vec<AccessPoint>,
    #[serde(default)]
    pub hosts: BTreeMap<String, IpAddr>,
    /// Destination ports the board's network redirects (well-known port → where sparring's
    /// service listens), e.g. SNTP's 123, which tests cannot bind.
    #[serde(default, deserialize_with = "port_map")]
    pub ports: BTreeMap<u16, u16>,
}

/// JSON object keys are strings (`{"123":1123}`), and the control request's internally tagged
/// enum buffers them, which loses serde_json's own string-to-integer key parsing: parse here.
fn port_map<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<u16, u16>, D::Error> {
    let text_keys = BTreeMap::<String, u16>::deserialize(deserializer)?;
    text_keys
        .into_iter()
        .map(|(from, to)| {
            from.parse::<u16>().map(|from| (from, to)).map_err(|_| {
                serde::de::Error::custom(format!(
                    "port {from:?}: expected a port number 1-65535 as the key"
                ))
            })
        })
        .collect()
}

impl NetworkConfig {
    /// Where a connection to `host:port` lands: the hosts table, else a literal address;
    /// `None` is a failed DNS lookup.
    pub fn resolve(&self, host: &str, port: u16) -> Option<std::net::SocketAddr> {
        let ip = match self.hosts.get(host) {
            Some(ip) => *ip,
            None => host.parse().ok()?,
        };
        let port = self.ports.get(&port).copied().unwrap_or(port);
        Some(std::net::SocketAddr::new(ip, port))
    }
}

/// Free heap of a module running ESP-AT once it printed `ready`: the ESP-AT documentation's
/// `AT+SYSRAM?` example on an ESP32 (`+SYSRAM:148408,84044`). No published figure exists for
/// the other chips in our sources, so they use the same; the costs of TLS, MQTT and OTA
/// buffers come off it (`esp_at::costs`).
pub fn boot_free_heap(_chip: Chip) -> u32 {
    148_408
}

/// Heap as firmware sees it: free and minimum-ever-free bytes. The control channel can
/// reserve bytes to create a low-heap condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeapStatus {
    pub free: u32,
    pub min_free: u32,
    pub reserved: u32,
}

/// An allocation that did not fit (ESP-IDF: malloc returned NULL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("out of heap: wanted {wanted} bytes, {free} free")]
pub struct OutOfHeap {
    pub wanted: u32,
    pub free: u32,
}

#[derive(Debug)]
struct HeapModel {
    total: u32,
    used: u32,
    reserved: u32,
    min_free: u32,
}

impl HeapModel {
    fn free(&self) -> u32 {
        self.total.saturating_sub(self.used + self.reserved)
    }

    fn note_min(&mut self) {
        self.min_free = self.min_free.min(self.free());
    }
}

/// Board-wide state shared between the board, its control channel and the running app; it
/// survives resets (like the control hooks), except the heap usage which a reset clears.
#[derive(Debug)]
pub struct Shared {
    heap: Mutex<HeapModel>,
    defects: Mutex<Vec<Defect>>,
    network: Mutex<NetworkConfig>,
    /// Board clock offset: UNIX time = clock_base + time since `clock_set_at`.
    clock: Mutex<(Duration, Instant)>,
    /// The firmware's waits (reconnect, keep-alive, retransmit, timeouts) run this many times
    /// faster than on hardware; 1 = real time. Lab equipment, never a fact.
    time_scale: AtomicU32,
    /// What the firmware's network clients did since the last reset.
    pub net_stats: NetStats,
}

/// Connection counters the harness reads as observed facts (reconnects, backoff).
#[derive(Debug, Default)]
pub struct NetStats {
    pub connect_attempts: AtomicU32,
    pub connects: AtomicU32,
    /// Milliseconds between the start of the last two connection attempts.
    pub last_backoff_ms: AtomicU32,
}

impl NetStats {
    fn clear(&self) {
        self.connect_attempts.store(0, Ordering::SeqCst);
        self.connects.store(0, Ordering::SeqCst);
        self.last_backoff_ms.store(0, Ordering::SeqCst);
    }
}

impl Shared {
    pub fn new(chip: Chip) -> Shared {
        let total = boot_free_heap(chip);
        Shared {
            heap: Mutex::new(HeapModel {
                total,
                used: 0,
                reserved: 0,
                min_free: total,
            }),
            defects: Mutex::new(Vec::new()),
            network: Mutex::new(NetworkConfig::default()),
            clock: Mutex::new((Duration::ZERO, Instant::now())),
            time_scale: AtomicU32::new(1),
            net_stats: NetStats::default(),
        }
    }

    /// A reset: the app's allocations are gone, the clock restarts at 1970.
    pub fn reset(&self) {
        let mut heap = lock(&self.heap);
        heap.used = 0;
        heap.min_free = heap.free();
        *lock(&self.clock) = (Duration::ZERO, Instant::now());
        self.net_stats.clear();
    }

    pub fn heap(&self) -> HeapStatus {
        let heap = lock(&self.heap);
        HeapStatus {
            free: heap.free(),
            min_free: heap.min_free,
            reserved: heap.reserved,
        }
    }

    /// Takes `bytes` away from the app (control channel `reserve_heap`); 0 gives them back.
    pub fn reserve_heap(&self, bytes: u32) {
        let mut heap = lock(&self.heap);
        heap.reserved = bytes.min(heap.total);
        heap.note_min();
    }

    pub fn alloc(&self, bytes: u32) -> Result<(), OutOfHeap> {
        let mut heap = lock(&self.heap);
        let free = heap.free();
        if bytes > free {
            return Err(OutOfHeap {
                wanted: bytes,
                free,
            });
        }
        heap.used += bytes;
        heap.note_min();
        Ok(())
    }

    pub fn free(&self, bytes: u32) {
        let mut heap = lock(&self.heap);
        heap.used = heap.used.saturating_sub(bytes);
    }

    pub fn defects(&self) -> Vec<Defect> {
        lock(&self.defects).clone()
    }

    pub fn set_defects(&self, defects: Vec<Defect>) {
        *lock(&self.defects) = defects;
    }

    pub fn has_defect(&self, wanted: impl Fn(&Defect) -> bool) -> Option<Defect> {
        lock(&self.defects).iter().copied().find(|d| wanted(d))
    }

    pub fn network(&self) -> NetworkConfig {
        lock(&self.network).clone()
    }

    pub fn set_network(&self, network: NetworkConfig) {
        *lock(&self.network) = network;
    }

    /// Sets the board time scale (control channel `set_time_scale`); 0 counts as 1. It
    /// survives resets, like a firmware build option.
    pub fn set_time_scale(&self, scale: u32) {
        self.time_scale.store(scale.max(1), Ordering::SeqCst);
    }

    pub fn time_scale(&self) -> u32 {
        self.time_scale.load(Ordering::SeqCst).max(1)
    }

    /// A firmware wait as the board runs it: the hardware duration divided by the time scale.
    /// Only waits shrink; the board clock and the values the firmware sends on the wire
    /// (the CONNECT's keep-alive) stay as configured.
    pub fn scaled(&self, wait: Duration) -> Duration {
        wait / self.time_scale()
    }

    /// A wait for an answer from the network (an SNTP reply, an HTTP read): scaled, but never
    /// below [`SHORTEST_NETWORK_WAIT`] — loopback I/O runs at real speed, and a loaded test
    /// machine answers late; a wait configured shorter stays as it is.
    pub fn scaled_network(&self, wait: Duration) -> Duration {
        self.scaled(wait).max(wait.min(SHORTEST_NETWORK_WAIT))
    }

    /// The board clock as UNIX time (starts at 0 = 1970 after every reset).
    pub fn clock(&self) -> SystemTime {
        let (base, set_at) = *lock(&self.clock);
        SystemTime::UNIX_EPOCH + base + set_at.elapsed()
    }

    /// Sets the board clock (SNTP answer).
    pub fn set_clock(&self, now: SystemTime) {
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        *lock(&self.clock) = (since_epoch, Instant::now());
    }
}

/// A poisoned lock only means another board thread panicked; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Everything a running app can touch.
pub struct AppContext {
    pub chip: Chip,
    pub mac: [u8; 6],
    pub descriptor: AppDescriptor,
    /// The partition the app was booted from.
    pub partition: Partition,
    /// The partition table the bootloader read.
    pub table: PartitionTable,
    pub shared: Arc<Shared>,
    pub(crate) flash: Arc<Mutex<Flash>>,
    pub(crate) uart0: Mutex<TTYPort>,
    pub(crate) uart1: TTYPort,
    pub(crate) booted: Instant,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) restart: Arc<AtomicBool>,
}

impl AppContext {
    /// Milliseconds since reset, as ESP-IDF log lines print them.
    pub fn uptime_ms(&self) -> u64 {
        self.booted.elapsed().as_millis() as u64
    }

    /// Prints `I (123) tag: message` on UART0.
    pub fn log(&self, level: LogLevel, tag: &str, message: &str) {
        let line = format!(
            "{} ({}) {tag}: {message}\r\n",
            level.letter(),
            self.uptime_ms()
        );
        self.log_raw(line.as_bytes());
    }

    /// Raw bytes on UART0 (panic dumps, banners).
    pub fn log_raw(&self, bytes: &[u8]) {
        let _ = lock(&self.uart0).write_all(bytes);
    }

    /// Reads from the AT port (UART1); returns Ok(0) after a short timeout with no data, so
    /// the caller can check [`AppContext::stopping`].
    pub fn at_read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.uart1.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(0),
            other => other,
        }
    }

    /// What the host has already sent on the AT port and the app has not read yet, without
    /// waiting for more.
    pub fn at_pending(&mut self) -> std::io::Result<Vec<u8>> {
        use serialport::SerialPort;
        let mut pending = vec![0u8; self.uart1.bytes_to_read()? as usize];
        self.uart1.read_exact(&mut pending)?;
        Ok(pending)
    }

    /// Writes to the AT port (UART1).
    pub fn at_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.uart1.write_all(bytes)
    }

    pub fn flash_read(&self, offset: u64, len: usize) -> Result<Vec<u8>, FlashError> {
        lock(&self.flash).read(offset, len).map(<[u8]>::to_vec)
    }

    pub fn flash_write(&self, offset: u64, bytes: &[u8]) -> Result<(), FlashError> {
        lock(&self.flash).write(offset, bytes)
    }

    pub fn flash_erase(&self, offset: u64, len: usize) -> Result<(), FlashError> {
        lock(&self.flash).erase(offset, len)
    }

    /// A partition of the booted table by label (`mqtt_ca`, `otadata`, ...).
    pub fn partition(&self, label: &str) -> Option<&Partition> {
        self.table.find(label)
    }

    /// True once the board wants the app to return (reset, download, power off).
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// `esp_restart()`: the board reboots with a software-reset banner once `run` returns.
    pub fn restart(&self) {
        self.restart.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
    }
}
