//! The AT dispatcher: turns bytes from the AT UART into the bytes a module answers with.
//! Pure (no I/O, no clock) so it can be driven by tests, a fuzzer and the board alike.

use esp_formats::partition::Partition;

use crate::personality::{AccessPoint, ApFault};

mod network;
mod socket;
mod sysmfg;

pub use network::{LastWill, MqttConnect, MqttMessage, MqttUserConfig, mqtt_error};
pub use socket::SocketOpen;

use super::framing::{FrameEvent, LineFramer};
use super::parse::{AtCommand, AtError, CommandKind, Param, parse_line};

/// What `AT+GMR` reports about the running image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareInfo {
    /// The app descriptor's version, e.g. `2.2.0.0`.
    pub at_version: String,
    pub idf_version: String,
    pub compile_time: String,
    pub chip_name: String,
}

/// Side effects the board must carry out after a command's response has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoardAction {
    Restart,
    FactoryRestore,
}

/// What the engine needs of the module around it: the user partitions (`mqtt_ca`,
/// `client_cert`, ...) as `AT+SYSFLASH` sees them, and the network commands, which block until
/// the network answers. Flash offsets are relative to the partition start; the engine checks
/// bounds before calling. A module without a network (tests, the fuzzer) keeps the defaults.
pub trait Module {
    fn user_partitions(&self) -> Vec<Partition>;
    fn erase(&mut self, partition: &Partition, offset: u32, len: u32) -> bool;
    fn write(&mut self, partition: &Partition, offset: u32, bytes: &[u8]) -> bool;
    fn read(&mut self, partition: &Partition, offset: u32, len: u32) -> Option<Vec<u8>>;

    /// `AT+MQTTCONN`: connects (first attempt synchronously), writing `+MQTTCONNECTED` or
    /// `+MQTTDISCONNECTED` lines into `out`.
    fn mqtt_connect(&mut self, _request: &MqttConnect, _out: &mut Vec<u8>) -> Result<(), AtError> {
        Err(AtError::ExecFailed(mqtt_error::CLIENT_START_FAILED))
    }
    fn mqtt_connected(&self) -> bool {
        false
    }
    fn mqtt_subscribe(&mut self, _topic: &str, _qos: u8) -> Result<(), AtError> {
        Err(AtError::ExecFailed(mqtt_error::IN_DISCONNECTED_STATE))
    }
    fn mqtt_unsubscribe(&mut self, _topic: &str) -> Result<(), AtError> {
        Err(AtError::ExecFailed(mqtt_error::IN_DISCONNECTED_STATE))
    }
    fn mqtt_publish(&mut self, _message: &MqttMessage) -> Result<(), AtError> {
        Err(AtError::ExecFailed(mqtt_error::IN_DISCONNECTED_STATE))
    }
    /// `AT+MQTTCLEAN`: closes the connection and stops reconnecting.
    fn mqtt_clean(&mut self) {}
    /// `AT+USEROTA`: downloads `url` into the passive slot; `Ok` means "restart into it".
    fn user_ota(&mut self, _url: &str, _out: &mut Vec<u8>) -> Result<(), AtError> {
        Err(AtError::ExecFailed(0))
    }

    /// `AT+CIPSTART`: opens the single TCP/SSL connection (blocking until connected or
    /// failed); received data and the peer's close arrive later as `+IPD` and `CLOSED`.
    fn socket_open(&mut self, _request: &SocketOpen, _out: &mut Vec<u8>) -> Result<(), AtError> {
        Err(AtError::ExecFailed(0))
    }
    fn socket_connected(&self) -> bool {
        false
    }
    /// `AT+CIPSEND`'s data; true once written to the connection.
    fn socket_send(&mut self, _data: &[u8]) -> bool {
        false
    }
    /// `AT+CIPCLOSE`; false when no connection was open.
    fn socket_close(&mut self) -> bool {
        false
    }
}

/// A command waiting for the raw bytes announced by its `>` prompt.
#[derive(Debug)]
enum PendingData {
    SysflashWrite {
        partition: Partition,
        offset: u32,
    },
    MqttLong(network::LongField),
    MqttPublishRaw(MqttMessage),
    /// `AT+USEROTA`: the data is the URL.
    UserOta,
    /// `AT+SYSMFG=2,...` of a string or binary value.
    Sysmfg(sysmfg::PendingValue),
    /// `AT+CIPSEND`: the data goes out on the socket.
    SocketSend,
}

/// AT command state of one module.
#[derive(Debug)]
pub struct AtEngine {
    framer: LineFramer,
    info: FirmwareInfo,
    echo: bool,
    syslog: bool,
    sysmsg: i64,
    wifi_mode: i64,
    free_heap: u32,
    min_free_heap: u32,
    pending_action: Option<BoardAction>,
    pending_data: Option<PendingData>,
    /// The access points in range (board configuration).
    access_points: Vec<AccessPoint>,
    /// Where, in the output of the last [`AtEngine::feed`], the final result of the last
    /// command it ran to its end begins (`None`: it ran none).
    last_result_at: Option<usize>,
    joined: Option<String>,
    /// `AT+CIPSNTPCFG`: enabled, timezone (hours), servers.
    sntp: Option<SntpConfig>,
    clock: std::time::SystemTime,
    mqtt: network::MqttLink,
    ssl: socket::SslConfig,
}

/// What `AT+CIPSNTPCFG=1,<tz>,"srv"...` configured; the board's SNTP client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SntpConfig {
    pub timezone_hours: i64,
    pub servers: Vec<String>,
}

const OK: &[u8] = b"\r\nOK\r\n";
const ERROR: &[u8] = b"\r\nERROR\r\n";
const BUSY: &[u8] = b"\r\nbusy p...\r\n";

impl AtEngine {
    /// A freshly booted module (echo on, SYSLOG off, station mode) with `free_heap` bytes free.
    pub fn new(info: FirmwareInfo, free_heap: u32) -> Self {
        Self {
            framer: LineFramer::new(),
            info,
            echo: true,
            syslog: false,
            sysmsg: 0,
            wifi_mode: 1,
            free_heap,
            min_free_heap: free_heap,
            pending_action: None,
            last_result_at: None,
            pending_data: None,
            access_points: Vec::new(),
            joined: None,
            sntp: None,
            clock: std::time::UNIX_EPOCH,
            mqtt: network::MqttLink::default(),
            ssl: socket::SslConfig::default(),
        }
    }

    /// What the module prints on the AT port once booted.
    pub fn ready_banner() -> &'static [u8] {
        b"\r\nready\r\n"
    }

    /// Updates what `AT+SYSRAM?` reports (the board's heap model owns the figures).
    pub fn set_heap(&mut self, free: u32, min_free: u32) {
        self.free_heap = free;
        self.min_free_heap = min_free;
    }

    /// Updates the access points in range.
    pub fn set_access_points(&mut self, access_points: Vec<AccessPoint>) {
        self.access_points = access_points;
    }

    /// Updates the board clock `AT+CIPSNTPTIME?` reports (starts at 1970 until SNTP sets it).
    pub fn set_clock(&mut self, now: std::time::SystemTime) {
        self.clock = now;
    }

    /// The SNTP configuration, when enabled with `AT+CIPSNTPCFG=1,...`.
    pub fn sntp_config(&self) -> Option<&SntpConfig> {
        self.sntp.as_ref()
    }

    /// `AT+CIPSNTPCFG=<enable>[,<tz>][,"srv1"[,"srv2"[,"srv3"]]]`.
    fn configure_sntp(&mut self, params: &[Param]) -> Result<(), AtError> {
        if int_in(params, 0, 0, 1)? == 0 {
            self.sntp = None;
            return Ok(());
        }
        let timezone_hours = match params.get(1) {
            None | Some(Param::Omitted) => 0,
            // `[+-]hhmm` form: keep the hours.
            Some(Param::Int(v)) if (-1200..=1400).contains(v) && !(-12..=14).contains(v) => v / 100,
            Some(_) => int_in(params, 1, -12, 14)?,
        };
        let mut servers = Vec::new();
        for (index, param) in params.iter().enumerate().skip(2) {
            match param {
                Param::Str(name) if index <= 4 => {
                    servers.push(String::from_utf8_lossy(name).into_owned())
                }
                _ => {
                    return Err(AtError::ParamInvalid(
                        u16::try_from(index).unwrap_or(u16::MAX),
                    ));
                }
            }
        }
        self.sntp = Some(SntpConfig {
            timezone_hours,
            servers,
        });
        Ok(())
    }

    /// The SSID joined with `AT+CWJAP`, if any.
    pub fn joined_ssid(&self) -> Option<&str> {
        self.joined.as_deref()
    }

    /// `AT+CWJAP="<ssid>","<pwd>"[,...]`: `+CWJAP:1` timeout, `+CWJAP:2` wrong password,
    /// `+CWJAP:3` AP not found, `+CWJAP:4` connect failed. A timeout is reported at once: the
    /// module's 15 s wait would only slow the host's test down.
    fn join(&mut self, params: &[Param], out: &mut Vec<u8>) -> Result<(), AtError> {
        let Some(Param::Str(ssid)) = params.first() else {
            return Err(AtError::ParamType(0));
        };
        let Some(Param::Str(password)) = params.get(1) else {
            return Err(AtError::ParamType(1));
        };
        if self.wifi_mode != 1 && self.wifi_mode != 3 {
            return Err(AtError::ExecFailed(0));
        }
        let ap = self
            .access_points
            .iter()
            .find(|ap| ap.ssid.as_bytes() == ssid.as_slice());
        let failure = match ap {
            None => 3,
            Some(ap) if ap.fault == Some(ApFault::NoAnswer) => 1,
            Some(ap) if ap.password.as_bytes() != password.as_slice() => 2,
            Some(ap) if ap.fault == Some(ApFault::Refuses) => 4,
            Some(ap) => {
                self.joined = Some(ap.ssid.clone());
                out.extend_from_slice(b"WIFI CONNECTED\r\nWIFI GOT IP\r\n");
                return Ok(());
            }
        };
        self.joined = None;
        out.extend_from_slice(format!("+CWJAP:{failure}\r\n").as_bytes());
        Err(AtError::ExecFailed(failure))
    }

    /// A restart or restore requested by the last command, taken once.
    pub fn take_action(&mut self) -> Option<BoardAction> {
        self.pending_action.take()
    }

    /// Feeds bytes received on the AT UART; returns the bytes to send back. Never panics.
    pub fn feed(&mut self, input: &[u8], module: &mut dyn Module) -> Vec<u8> {
        let mut out = Vec::new();
        self.last_result_at = None;
        for &byte in input {
            if self.echo && !self.framer.in_data_mode() {
                out.push(byte);
            }
            match self.framer.push(byte) {
                None => {}
                Some(FrameEvent::Data(data)) => {
                    if let Some(result) = self.complete_data(&data, module, &mut out) {
                        self.last_result_at = Some(out.len());
                        self.finish(result, &mut out);
                    }
                }
                Some(FrameEvent::Line(line)) if line.is_empty() => {}
                Some(FrameEvent::Line(line)) => {
                    let result =
                        parse_line(&line).and_then(|cmd| self.execute(&cmd, module, &mut out));
                    // A command that prompted for data answers once the data is in.
                    if result.is_err() || self.pending_data.is_none() {
                        self.last_result_at = Some(out.len());
                        self.finish(result, &mut out);
                    }
                }
                Some(FrameEvent::MissingCarriageReturn) => {
                    self.finish(Err(AtError::NoTerminator), &mut out)
                }
                Some(FrameEvent::Overlong) => self.finish(Err(AtError::ParamLength(0)), &mut out),
            }
        }
        out
    }

    /// Whether the last [`AtEngine::feed`] ran a command to its end (and so was busy while it
    /// ran), rather than only taking part of a line or prompted data.
    pub fn ran_command(&self) -> bool {
        self.last_result_at.is_some()
    }

    /// Answers bytes that arrived while the last command of the last feed was still running:
    /// ESP-AT does not queue them but drops them with `busy p...` (esp-facts §4.4), once per
    /// line, printed in `reply` (that feed's output) before the command's final result.
    pub fn refuse_busy(&self, reply: &mut Vec<u8>, late: &[u8]) {
        let Some(at) = self.last_result_at.filter(|&at| at <= reply.len()) else {
            return;
        };
        let mut busy = Vec::new();
        for _ in 0..late.iter().filter(|&&b| b == b'\n').count().max(1) {
            self.error_code(&AtError::Busy, &mut busy);
            busy.extend_from_slice(BUSY);
        }
        reply.splice(at..at, busy);
    }

    fn finish(&self, result: Result<(), AtError>, out: &mut Vec<u8>) {
        match result {
            Ok(()) => out.extend_from_slice(OK),
            Err(error) => {
                self.error_code(&error, out);
                out.extend_from_slice(ERROR);
            }
        }
    }

    /// `ERR CODE:0x........`, printed only after `AT+SYSLOG=1`.
    fn error_code(&self, error: &AtError, out: &mut Vec<u8>) {
        if self.syslog {
            out.extend_from_slice(format!("ERR CODE:0x{:08x}\r\n", error.code()).as_bytes());
        }
    }

    /// The data announced by a prompt arrived; `None` when the command answered by itself.
    fn complete_data(
        &mut self,
        data: &[u8],
        module: &mut dyn Module,
        out: &mut Vec<u8>,
    ) -> Option<Result<(), AtError>> {
        let result = match self.pending_data.take()? {
            PendingData::SysflashWrite { partition, offset } => module
                .write(&partition, offset, data)
                .then_some(())
                .ok_or(AtError::ExecFailed(0)),
            PendingData::MqttLong(field) => self.complete_long_field(field, data),
            PendingData::Sysmfg(pending) => self.complete_sysmfg(pending, data, module),
            PendingData::SocketSend => {
                self.complete_socket_send(data, module, out);
                return None;
            }
            PendingData::MqttPublishRaw(mut message) => {
                message.payload = data.to_vec();
                let line: &[u8] = match module.mqtt_publish(&message) {
                    Ok(()) => b"\r\n+MQTTPUB:OK\r\n",
                    Err(_) => b"\r\n+MQTTPUB:FAIL\r\n",
                };
                out.extend_from_slice(line);
                return None;
            }
            PendingData::UserOta => {
                out.extend_from_slice(format!("\r\nRecv {} bytes\r\n", data.len()).as_bytes());
                let url = String::from_utf8_lossy(data).into_owned();
                let result = module.user_ota(url.trim(), out);
                if result.is_ok() {
                    self.pending_action = Some(BoardAction::Restart);
                }
                result
            }
        };
        Some(result)
    }

    /// `AT+SYSFLASH=<op>,"<partition>"[,<offset>,<length>]`: 0 erase, 1 write (prompt), 2 read.
    fn sysflash(
        &mut self,
        params: &[Param],
        module: &mut dyn Module,
        out: &mut Vec<u8>,
    ) -> Result<(), AtError> {
        let operation = int_in(params, 0, 0, 2)?;
        let name = match params.get(1) {
            Some(Param::Str(name)) => name,
            Some(Param::Int(_)) => return Err(AtError::ParamType(1)),
            _ => {
                return Err(AtError::ParamCount {
                    need: 2,
                    given: count(params),
                });
            }
        };
        let partition = module
            .user_partitions()
            .into_iter()
            .find(|p| p.label.as_bytes() == name.as_slice())
            .ok_or(AtError::ParamInvalid(1))?;
        let size = i64::from(partition.size);
        let (offset, len) = match (params.get(2), params.get(3)) {
            (None, None) if operation == 0 => (0, partition.size),
            _ => {
                let offset = int_in(params, 2, 0, size - 1)?;
                let len = int_in(params, 3, 1, size - offset)?;
                // In range of a u32 partition size, checked just above.
                (offset as u32, len as u32)
            }
        };
        match operation {
            0 => {
                if offset % 4096 != 0 || (len % 4096 != 0 && offset + len != partition.size) {
                    return Err(AtError::ParamInvalid(2));
                }
                module
                    .erase(&partition, offset, len)
                    .then_some(())
                    .ok_or(AtError::ExecFailed(0))
            }
            1 => {
                self.framer.expect_data(len as usize);
                self.pending_data = Some(PendingData::SysflashWrite { partition, offset });
                out.extend_from_slice(b"\r\n>");
                Ok(())
            }
            _ => {
                let data = module
                    .read(&partition, offset, len)
                    .ok_or(AtError::ExecFailed(0))?;
                out.extend_from_slice(format!("+SYSFLASH:{len},").as_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
                Ok(())
            }
        }
    }

    /// Runs one command, writing its information lines; `Ok` is followed by `OK`.
    fn execute(
        &mut self,
        cmd: &AtCommand,
        module: &mut dyn Module,
        out: &mut Vec<u8>,
    ) -> Result<(), AtError> {
        if let Some(result) = self.network_command(&cmd.name, &cmd.kind, module, out) {
            return result;
        }
        if let Some(result) = self.socket_command(&cmd.name, &cmd.kind, module, out) {
            return result;
        }
        match (cmd.name.as_str(), &cmd.kind) {
            ("", CommandKind::Execute) => Ok(()),
            ("E", CommandKind::Set(p)) => {
                self.echo = int_in(p, 0, 0, 1)? == 1;
                Ok(())
            }
            ("+GMR", CommandKind::Execute) => {
                let i = &self.info;
                let text = format!(
                    "AT version:{}({})\r\nSDK version:{}\r\ncompile time:{}\r\nBin version:{}({})\r\n",
                    i.at_version,
                    i.chip_name,
                    i.idf_version,
                    i.compile_time,
                    i.at_version,
                    i.chip_name
                );
                out.extend_from_slice(text.as_bytes());
                Ok(())
            }
            ("+RST", CommandKind::Execute) => {
                self.pending_action = Some(BoardAction::Restart);
                Ok(())
            }
            ("+RESTORE", CommandKind::Execute) => {
                self.pending_action = Some(BoardAction::FactoryRestore);
                Ok(())
            }
            ("+SYSRAM", CommandKind::Query) => {
                let line = format!("+SYSRAM:{},{}\r\n", self.free_heap, self.min_free_heap);
                out.extend_from_slice(line.as_bytes());
                Ok(())
            }
            ("+SYSLOG", CommandKind::Query) => {
                out.extend_from_slice(format!("+SYSLOG:{}\r\n", u8::from(self.syslog)).as_bytes());
                Ok(())
            }
            ("+SYSLOG", CommandKind::Set(p)) => {
                self.syslog = int_in(p, 0, 0, 1)? == 1;
                Ok(())
            }
            ("+SYSMSG", CommandKind::Query) => {
                out.extend_from_slice(format!("+SYSMSG:{}\r\n", self.sysmsg).as_bytes());
                Ok(())
            }
            ("+SYSMSG", CommandKind::Set(p)) => {
                self.sysmsg = int_in(p, 0, 0, 7)?;
                Ok(())
            }
            ("+SYSFLASH", CommandKind::Query) => {
                for p in module.user_partitions() {
                    let line = format!(
                        "+SYSFLASH:\"{}\",{},{},0x{:x},0x{:x}\r\n",
                        p.label, p.kind, p.subtype, p.offset, p.size
                    );
                    out.extend_from_slice(line.as_bytes());
                }
                Ok(())
            }
            ("+SYSFLASH", CommandKind::Set(p)) => self.sysflash(p, module, out),
            ("+SYSMFG", CommandKind::Query) => self.sysmfg_namespaces(module, out),
            ("+SYSMFG", CommandKind::Set(p)) => self.sysmfg(p, module, out),
            ("+CWJAP", CommandKind::Set(p)) => self.join(p, out),
            ("+CWQAP", CommandKind::Execute) => {
                if self.joined.take().is_some() {
                    out.extend_from_slice(b"WIFI DISCONNECT\r\n");
                }
                Ok(())
            }
            ("+CIPSNTPCFG", CommandKind::Set(p)) => self.configure_sntp(p),
            ("+CIPSNTPTIME", CommandKind::Query) => {
                let tz = self.sntp.as_ref().map_or(0, |c| c.timezone_hours);
                let line = format!("+CIPSNTPTIME:{}\r\n", super::clock::asctime(self.clock, tz));
                out.extend_from_slice(line.as_bytes());
                Ok(())
            }
            ("+CWMODE", CommandKind::Query) => {
                out.extend_from_slice(format!("+CWMODE:{}\r\n", self.wifi_mode).as_bytes());
                Ok(())
            }
            ("+CWMODE", CommandKind::Set(p)) => {
                if p.len() > 2 {
                    return Err(AtError::ParamCount {
                        need: 2,
                        given: count(p),
                    });
                }
                self.wifi_mode = int_in(p, 0, 0, 3)?;
                Ok(())
            }
            (
                "" | "E" | "+GMR" | "+RST" | "+RESTORE" | "+SYSRAM" | "+SYSLOG" | "+SYSMSG"
                | "+SYSFLASH" | "+SYSMFG" | "+CWMODE" | "+CWJAP" | "+CWQAP" | "+CIPSNTPCFG"
                | "+CIPSNTPTIME",
                _,
            ) => Err(AtError::WrongOperation),
            _ => Err(AtError::Unsupported),
        }
    }
}

fn count(params: &[Param]) -> u8 {
    u8::try_from(params.len()).unwrap_or(u8::MAX)
}

/// The integer parameter at `index`, required and within `min..=max`.
fn int_in(params: &[Param], index: u16, min: i64, max: i64) -> Result<i64, AtError> {
    match params.get(usize::from(index)) {
        Some(Param::Int(v)) if (min..=max).contains(v) => Ok(*v),
        Some(Param::Int(_)) => Err(AtError::ParamInvalid(index)),
        Some(Param::Str(_)) => Err(AtError::ParamType(index)),
        Some(Param::Omitted) | None => Err(AtError::ParamCount {
            need: u8::try_from(index + 1).unwrap_or(u8::MAX),
            given: count(params),
        }),
    }
}

/// The string parameter at `index`, required.
fn text(params: &[Param], index: u16) -> Result<String, AtError> {
    match params.get(usize::from(index)) {
        Some(Param::Str(bytes)) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Some(Param::Int(_)) => Err(AtError::ParamType(index)),
        _ => Err(AtError::ParamCount {
            need: u8::try_from(index + 1).unwrap_or(u8::MAX),
            given: u8::try_from(params.len()).unwrap_or(u8::MAX),
        }),
    }
}

/// The string parameter at `index`; empty when omitted.
fn text_or_empty(params: &[Param], index: u16) -> Result<String, AtError> {
    match params.get(usize::from(index)) {
        None | Some(Param::Omitted) => Ok(String::new()),
        _ => text(params, index),
    }
}

/// The integer parameter at `index` within `min..=max`, if given.
fn optional_int(params: &[Param], index: u16, min: i64, max: i64) -> Result<Option<i64>, AtError> {
    match params.get(usize::from(index)) {
        None | Some(Param::Omitted) => Ok(None),
        _ => int_in(params, index, min, max).map(Some),
    }
}

/// User partitions held in memory (erased to 0xFF): for tests and the AT fuzz target, where
/// no board flash exists. Partition offsets are absolute, as in a partition table.
#[derive(Debug, Clone)]
pub struct MemoryFlash {
    partitions: Vec<Partition>,
    bytes: std::collections::BTreeMap<String, Vec<u8>>,
}

impl MemoryFlash {
    pub fn new(partitions: Vec<Partition>) -> Self {
        let bytes = partitions
            .iter()
            .map(|p| (p.label.clone(), vec![0xFF; p.size as usize]))
            .collect();
        Self { partitions, bytes }
    }

    /// The whole content of a partition, if it exists.
    pub fn contents(&self, label: &str) -> Option<&[u8]> {
        self.bytes.get(label).map(Vec::as_slice)
    }

    fn region(&mut self, partition: &Partition, offset: u32, len: usize) -> Option<&mut [u8]> {
        let start = offset as usize;
        self.bytes
            .get_mut(&partition.label)?
            .get_mut(start..start.checked_add(len)?)
    }
}

impl Module for MemoryFlash {
    fn user_partitions(&self) -> Vec<Partition> {
        self.partitions.clone()
    }

    fn erase(&mut self, partition: &Partition, offset: u32, len: u32) -> bool {
        self.region(partition, offset, len as usize)
            .map(|region| region.fill(0xFF))
            .is_some()
    }

    fn write(&mut self, partition: &Partition, offset: u32, data: &[u8]) -> bool {
        self.region(partition, offset, data.len())
            .map(|region| region.copy_from_slice(data))
            .is_some()
    }

    fn read(&mut self, partition: &Partition, offset: u32, len: u32) -> Option<Vec<u8>> {
        self.region(partition, offset, len as usize)
            .map(|region| region.to_vec())
    }
}
