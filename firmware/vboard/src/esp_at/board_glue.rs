//! The ESP-AT personality on the virtual board: the [`AtEngine`] wired to the AT UART, the
//! board's flash (through ESP-AT's secondary `at_customize` table), its network (MQTT, SNTP,
//! OTA over real sockets), its heap model and its restart line.

use std::sync::mpsc::Receiver;
use std::time::Duration;

use esp_formats::image::AppDescriptor;
use esp_formats::nvs;
use esp_formats::otadata::{self, OtaEntry, OtaState};
use esp_formats::partition::{MFG_NVS, Partition, PartitionTable, TYPE_AT_CUSTOM};

use super::cert_store::{self, CertSet};
use super::console::{Console, Output};
use super::engine::{
    AtEngine, BoardAction, FirmwareInfo, Module, MqttConnect, MqttMessage, SocketOpen, mqtt_error,
};
use super::mqtt_client::{MqttClient, SessionEnv};
use super::parse::AtError;
use super::sntp_client::SntpClient;
use super::socket_client::{SocketClient, SocketEnv};
use super::tls::{self, CredentialError};
use crate::personality::{AppContext, Defect, LogLevel, Personality};

/// The app whose descriptor names the project `esp-at`.
#[derive(Debug, Default)]
pub struct EspAt;

impl EspAt {
    pub fn new() -> Self {
        Self
    }
}

fn firmware_info(descriptor: &AppDescriptor, chip_name: &str) -> FirmwareInfo {
    FirmwareInfo {
        at_version: descriptor.version.clone(),
        idf_version: descriptor.idf_ver.clone(),
        compile_time: format!("{} {}", descriptor.date, descriptor.time),
        chip_name: chip_name.to_owned(),
    }
}

/// Custom data partitions (type 0x40 and up) are ESP-AT's.
const FIRST_USER_PARTITION_TYPE: u8 = 0x40;
/// The secondary table occupies the start of `at_customize` (esp-facts §4.2).
const SECONDARY_TABLE_LEN: usize = 0xC00;

/// ESP-AT's user partitions: those listed by the secondary table at the start of the
/// `at_customize` partition (PKI partitions in v2.x, `mfg_nvs` in v3.1+, and the file
/// system); a layout without one falls back to the main table's custom partitions.
fn user_partitions(ctx: &AppContext) -> Vec<Partition> {
    let secondary = ctx
        .table
        .partitions
        .iter()
        .find(|p| p.kind == TYPE_AT_CUSTOM && p.label == "at_customize")
        .and_then(|p| {
            ctx.flash_read(u64::from(p.offset), SECONDARY_TABLE_LEN)
                .ok()
        })
        .and_then(|bytes| PartitionTable::parse(&bytes).ok());
    match secondary {
        Some(table) => table.partitions,
        None => ctx
            .table
            .partitions
            .iter()
            .filter(|p| p.kind >= FIRST_USER_PARTITION_TYPE && p.label != "at_customize")
            .cloned()
            .collect(),
    }
}

/// Where the factory parameters were found, as ESP-AT logs it at boot (`at_init.c`):
/// 1 in `mfg_nvs` (v3.1+), 2 in the legacy `factory_param` partition (magic 0xFCFC), 0 none.
fn param_mode(ctx: &AppContext, partitions: &[Partition]) -> u8 {
    let read = |label: &str| {
        let p = partitions.iter().find(|p| p.label == label)?;
        ctx.flash_read(u64::from(p.offset), p.size as usize).ok()
    };
    if let Some(bytes) = read(MFG_NVS) {
        let items = nvs::read(&bytes).unwrap_or_default();
        return if items.iter().any(|i| i.namespace == "factory_param") {
            1
        } else {
            0
        };
    }
    match read("factory_param") {
        Some(bytes) if bytes.starts_with(&[0xFC, 0xFC]) => 2,
        _ => 0,
    }
}

/// The network side of the module: clients that outlive one AT command.
struct Network {
    console: Console,
    mqtt: Option<MqttClient>,
    socket: Option<SocketClient>,
    sntp: Option<(Vec<String>, SntpClient)>,
}

/// [`Module`] on the board: flash, network and heap.
struct BoardModule<'a> {
    ctx: &'a AppContext,
    net: &'a mut Network,
}

impl BoardModule<'_> {
    /// Reads the credentials a TLS client needs, exactly when connecting (as the firmware).
    /// A missing item prints its `NO ... FOUND` line on the AT port, an unparsable one its
    /// mbedTLS error on the log port.
    fn credentials(
        &self,
        set: CertSet,
        (cert_id, ca_id): (u8, u8),
        (verify_server, present_cert): (bool, bool),
        out: &mut Vec<u8>,
    ) -> Result<tls::Credentials, CredentialError> {
        let read = |p: &Partition| {
            self.ctx
                .flash_read(u64::from(p.offset), p.size as usize)
                .ok()
        };
        let items = cert_store::items(&user_partitions(self.ctx), read, set, cert_id, ca_id);
        tls::credentials(items, verify_server, present_cert).inspect_err(|e| match e {
            CredentialError::Missing { at_line } => {
                out.extend_from_slice(format!("{at_line}\r\n").as_bytes());
            }
            CredentialError::Unparsable { .. } => {
                self.ctx
                    .log(LogLevel::Error, "esp-tls-mbedtls", &e.to_string());
            }
        })
    }
}

impl Module for BoardModule<'_> {
    fn user_partitions(&self) -> Vec<Partition> {
        user_partitions(self.ctx)
    }

    fn erase(&mut self, partition: &Partition, offset: u32, len: u32) -> bool {
        let start = u64::from(partition.offset) + u64::from(offset);
        self.ctx.flash_erase(start, len as usize).is_ok()
    }

    fn write(&mut self, partition: &Partition, offset: u32, bytes: &[u8]) -> bool {
        let start = u64::from(partition.offset) + u64::from(offset);
        self.ctx.flash_write(start, bytes).is_ok()
    }

    fn read(&mut self, partition: &Partition, offset: u32, len: u32) -> Option<Vec<u8>> {
        let start = u64::from(partition.offset) + u64::from(offset);
        self.ctx.flash_read(start, len as usize).ok()
    }

    fn mqtt_connect(&mut self, request: &MqttConnect, out: &mut Vec<u8>) -> Result<(), AtError> {
        let credentials = if request.user.uses_tls() {
            let user = &request.user;
            self.credentials(
                CertSet::Mqtt,
                (0, 0),
                (user.verifies_server(), user.presents_client_cert()),
                out,
            )
            .map_err(|_| AtError::ExecFailed(mqtt_error::TLS_CONFIG_ERROR))?
        } else {
            tls::Credentials {
                ca: Vec::new(),
                client: None,
            }
        };
        let env = SessionEnv {
            shared: self.ctx.shared.clone(),
            console: self.net.console.clone(),
            credentials,
        };
        // A previous client (reconnecting in the background) is replaced.
        self.net.mqtt = None;
        let (client, first) = MqttClient::start(request.clone(), env);
        // Connect timeout for TCP and TLS each, plus CONNACK: bounded by three timeouts.
        let wait = Duration::from_millis(u64::from(request.timeout_ms) * 3 + 1000);
        match first.recv_timeout(wait) {
            Ok(Ok(())) => {
                out.extend_from_slice(request.connected_line().as_bytes());
                self.net.mqtt = Some(client);
                Ok(())
            }
            _ => {
                out.extend_from_slice(b"+MQTTDISCONNECTED:0\r\n");
                if request.reconnect {
                    self.net.mqtt = Some(client);
                }
                Err(AtError::ExecFailed(mqtt_error::CLIENT_START_FAILED))
            }
        }
    }

    fn mqtt_connected(&self) -> bool {
        self.net.mqtt.as_ref().is_some_and(MqttClient::connected)
    }

    fn mqtt_subscribe(&mut self, topic: &str, qos: u8) -> Result<(), AtError> {
        match &self.net.mqtt {
            Some(c) if c.connected() => c
                .subscribe(topic.to_owned(), qos)
                .then_some(())
                .ok_or(AtError::ExecFailed(mqtt_error::CLIENT_SUBSCRIBE_FAILED)),
            _ => Err(AtError::ExecFailed(mqtt_error::IN_DISCONNECTED_STATE)),
        }
    }

    fn mqtt_unsubscribe(&mut self, topic: &str) -> Result<(), AtError> {
        match &self.net.mqtt {
            Some(c) if c.connected() => c
                .unsubscribe(topic.to_owned())
                .then_some(())
                .ok_or(AtError::ExecFailed(mqtt_error::CLIENT_SUBSCRIBE_FAILED)),
            _ => Err(AtError::ExecFailed(mqtt_error::IN_DISCONNECTED_STATE)),
        }
    }

    fn mqtt_publish(&mut self, message: &MqttMessage) -> Result<(), AtError> {
        match &self.net.mqtt {
            Some(c) if c.connected() => c
                .publish(message.clone())
                .then_some(())
                .ok_or(AtError::ExecFailed(mqtt_error::CLIENT_PUBLISH_FAILED)),
            _ => Err(AtError::ExecFailed(mqtt_error::IN_DISCONNECTED_STATE)),
        }
    }

    fn mqtt_clean(&mut self) {
        self.net.mqtt = None;
    }

    fn socket_open(&mut self, request: &SocketOpen, out: &mut Vec<u8>) -> Result<(), AtError> {
        let credentials = if request.tls {
            self.credentials(
                CertSet::Client,
                (request.pki_number, request.ca_number),
                (request.verifies_server(), request.presents_client_cert()),
                out,
            )
            .map_err(|_| AtError::ExecFailed(0))?
        } else {
            tls::Credentials {
                ca: Vec::new(),
                client: None,
            }
        };
        let env = SocketEnv {
            shared: self.ctx.shared.clone(),
            console: self.net.console.clone(),
            credentials,
        };
        let client = SocketClient::open(request, env).map_err(|_| AtError::ExecFailed(0))?;
        self.net.socket = Some(client);
        Ok(())
    }

    fn socket_connected(&self) -> bool {
        self.net.socket.as_ref().is_some_and(SocketClient::is_open)
    }

    fn socket_send(&mut self, data: &[u8]) -> bool {
        self.net.socket.as_ref().is_some_and(|s| s.send(data))
    }

    fn socket_close(&mut self) -> bool {
        let was_open = self.socket_connected();
        self.net.socket = None;
        was_open
    }

    fn user_ota(&mut self, url: &str, out: &mut Vec<u8>) -> Result<(), AtError> {
        // `Recv <n> bytes` reaches the host before the download starts, not after it: a
        // stalled server must not hold back the acknowledgement of the URL.
        if let Ok(mut port) = self.ctx.uart1.try_clone_native()
            && std::io::Write::write_all(&mut port, out).is_ok()
        {
            out.clear();
        }
        // The MQTT session's heap stays allocated during the download, as on hardware.
        super::ota::user_ota(self.ctx, url).map_err(|_| AtError::ExecFailed(0))
    }
}

/// The running app's otadata entry and where it is stored, when the bootloader booted it on
/// trial (PENDING_VERIFY: the first boot after an update, with rollback armed).
fn on_trial(ctx: &AppContext) -> Option<(u64, OtaEntry)> {
    let ota = otadata::partition(&ctx.table)?.clone();
    let bytes = ctx
        .flash_read(u64::from(ota.offset), 2 * otadata::SECTOR)
        .ok()?;
    let entries = otadata::read(&bytes);
    let (index, entry) = otadata::active(&entries)?;
    (entry.state == OtaState::PendingVerify).then(|| {
        (
            u64::from(ota.offset) + (index * otadata::SECTOR) as u64,
            entry,
        )
    })
}

/// `esp_ota_mark_app_valid_cancel_rollback()` after a successful start: an updated app that
/// came up is confirmed, so the bootloader will not roll it back.
fn confirm_running_app(ctx: &AppContext, (at, mut entry): (u64, OtaEntry)) {
    entry.state = OtaState::Valid;
    if ctx.flash_write(at, &entry.to_bytes()).is_ok() {
        ctx.log(
            LogLevel::Info,
            "at",
            "OTA image confirmed: rollback cancelled",
        );
    }
}

impl Personality for EspAt {
    fn run(self: Box<Self>, mut ctx: AppContext) {
        let heap = ctx.shared.heap();
        let mut engine = AtEngine::new(firmware_info(&ctx.descriptor, ctx.chip.name()), heap.free);
        let (console, output) = Console::new(ctx.booted);
        let mut net = Network {
            console,
            mqtt: None,
            socket: None,
            sntp: None,
        };
        let mode = param_mode(&ctx, &user_partitions(&ctx));
        ctx.log(LogLevel::Info, "at", &format!("at param mode: {mode}"));
        ctx.log(LogLevel::Info, "at", "AT firmware ready");
        if ctx.at_write(AtEngine::ready_banner()).is_err() {
            return;
        }
        if let Some(trial) = on_trial(&ctx) {
            // The defect: the updated app dies before it confirms itself; the bootloader
            // (CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE) finds it still PENDING_VERIFY on the
            // next boot and rolls back (ESP-IDF `bootloader_support/src/bootloader_utility.c`).
            if ctx
                .shared
                .has_defect(|d| *d == Defect::CrashBeforeConfirm)
                .is_some()
            {
                ctx.log_raw(super::mqtt_client::crash_dump().as_bytes());
                ctx.restart();
                return;
            }
            confirm_running_app(&ctx, trial);
        }
        let mut buf = [0u8; 512];
        while !ctx.stopping() {
            if !drain(&mut ctx, &output) {
                return;
            }
            let mut received = match ctx.at_read(&mut buf) {
                Ok(0) => continue,
                Ok(n) => buf[..n].to_vec(),
                // The AT pty closed (board powering off): nothing left to serve.
                Err(_) => return,
            };
            // Everything the host has sent so far, so that what arrives later is known to
            // have come while the engine was busy.
            let Ok(rest) = ctx.at_pending() else {
                return;
            };
            received.extend_from_slice(&rest);
            let heap = ctx.shared.heap();
            engine.set_heap(heap.free, heap.min_free);
            engine.set_clock(ctx.shared.clock());
            engine.set_access_points(ctx.shared.network().access_points);
            let mut reply = engine.feed(
                &received,
                &mut BoardModule {
                    ctx: &ctx,
                    net: &mut net,
                },
            );
            // What arrived meanwhile was sent while a command still ran (its answer is not
            // out yet): the module does not queue it. The rest of a line or of prompted data
            // is simply read next.
            if engine.ran_command() {
                let Ok(sent_while_busy) = ctx.at_pending() else {
                    return;
                };
                if !sent_while_busy.is_empty() {
                    engine.refuse_busy(&mut reply, &sent_while_busy);
                }
            }
            if ctx.at_write(&reply).is_err() {
                return;
            }
            update_sntp(&ctx, &engine, &mut net);
            match engine.take_action() {
                None => {}
                // RESTORE would also erase the NVS settings; there are none kept yet.
                Some(BoardAction::Restart | BoardAction::FactoryRestore) => {
                    ctx.restart();
                    return;
                }
            }
        }
    }
}

/// Starts, restarts or stops the SNTP client to match `AT+CIPSNTPCFG` and the Wi-Fi state.
fn update_sntp(ctx: &AppContext, engine: &AtEngine, net: &mut Network) {
    let wanted = engine
        .sntp_config()
        .filter(|_| engine.joined_ssid().is_some())
        .map(|c| c.servers.clone());
    let running = net.sntp.as_ref().map(|(servers, _)| servers.clone());
    if wanted == running {
        return;
    }
    net.sntp = wanted.map(|servers| {
        let client = SntpClient::start(servers.clone(), ctx.shared.clone(), net.console.clone());
        (servers, client)
    });
}

/// Writes what background tasks queued; false once the app must stop (a panic).
fn drain(ctx: &mut AppContext, output: &Receiver<Output>) -> bool {
    while let Ok(item) = output.try_recv() {
        match item {
            Output::Log(line) => ctx.log_raw(line.as_bytes()),
            Output::At(bytes) => {
                let _ = ctx.at_write(&bytes);
            }
            Output::Panic(dump) => {
                ctx.log_raw(dump.as_bytes());
                ctx.restart();
                return false;
            }
        }
    }
    true
}
