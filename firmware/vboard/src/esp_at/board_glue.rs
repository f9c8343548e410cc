//! The ESP-AT personality on the virtual board: the [`AtEngine`] wired to the AT UART, the
//! board's flash (through ESP-AT's secondary `at_customize` table), its network (MQTT, SNTP,
//! OTA over real sockets), its heap model and its restart line.

use std::sync::mpsc::Receiver;
use std::time::Duration;

use esp_formats::image::AppDescriptor;
use esp_formats::otadata::{self, OtaState};
use esp_formats::partition::{Partition, PartitionTable, TYPE_AT_CUSTOM};

use super::console::{Console, Output};
use super::engine::{
    AtEngine, BoardAction, FirmwareInfo, Module, MqttConnect, MqttMessage, mqtt_error,
};
use super::mqtt_client::{MqttClient, SessionEnv};
use super::parse::AtError;
use super::sntp_client::SntpClient;
use super::tls::{self, CredentialError};
use crate::personality::{AppContext, LogLevel, Personality};

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
/// `at_customize` partition (v2.x); a layout without one falls back to the main table's
/// custom partitions.
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
    let table = secondary.as_ref().unwrap_or(&ctx.table);
    table
        .partitions
        .iter()
        .filter(|p| p.kind >= FIRST_USER_PARTITION_TYPE && p.label != "at_customize")
        .cloned()
        .collect()
}

/// The network side of the module: clients that outlive one AT command.
struct Network {
    console: Console,
    mqtt: Option<MqttClient>,
    sntp: Option<(Vec<String>, SntpClient)>,
}

/// [`Module`] on the board: flash, network and heap.
struct BoardModule<'a> {
    ctx: &'a AppContext,
    net: &'a mut Network,
}

impl BoardModule<'_> {
    fn partition_bytes(&self, label: &str) -> Option<Vec<u8>> {
        let p = user_partitions(self.ctx)
            .into_iter()
            .find(|p| p.label == label)?;
        self.ctx
            .flash_read(u64::from(p.offset), p.size as usize)
            .ok()
    }

    /// Reads the MQTT credentials the scheme needs, exactly when connecting (as the firmware).
    fn mqtt_credentials(
        &self,
        request: &MqttConnect,
        out: &mut Vec<u8>,
    ) -> Result<tls::Credentials, AtError> {
        let user = &request.user;
        let ca = user
            .verifies_server()
            .then(|| self.partition_bytes("mqtt_ca").unwrap_or_default());
        let cert = self.partition_bytes("mqtt_cert").unwrap_or_default();
        let key = self.partition_bytes("mqtt_key").unwrap_or_default();
        let client = user
            .presents_client_cert()
            .then_some((cert.as_slice(), key.as_slice()));
        tls::credentials(ca.as_deref(), client).map_err(|e| {
            match &e {
                CredentialError::Missing { at_line } => {
                    out.extend_from_slice(format!("{at_line}\r\n").as_bytes());
                }
                CredentialError::Unparsable { .. } => {
                    self.ctx
                        .log(LogLevel::Error, "esp-tls-mbedtls", &e.to_string());
                }
            }
            AtError::ExecFailed(mqtt_error::TLS_CONFIG_ERROR)
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
            self.mqtt_credentials(request, out)?
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

    fn user_ota(&mut self, url: &str, _out: &mut Vec<u8>) -> Result<(), AtError> {
        // The MQTT session's heap stays allocated during the download, as on hardware.
        super::ota::user_ota(self.ctx, url).map_err(|_| AtError::ExecFailed(0))
    }
}

/// `esp_ota_mark_app_valid_cancel_rollback()` after a successful start: an updated app that
/// came up is confirmed, so the bootloader will not roll it back.
fn confirm_running_app(ctx: &AppContext) {
    let Some(ota) = otadata::partition(&ctx.table).cloned() else {
        return;
    };
    let Ok(bytes) = ctx.flash_read(u64::from(ota.offset), 2 * otadata::SECTOR) else {
        return;
    };
    let entries = otadata::read(&bytes);
    if let Some((index, mut entry)) = otadata::active(&entries)
        && entry.state == OtaState::PendingVerify
    {
        entry.state = OtaState::Valid;
        let at = u64::from(ota.offset) + (index * otadata::SECTOR) as u64;
        if ctx.flash_write(at, &entry.to_bytes()).is_ok() {
            ctx.log(
                LogLevel::Info,
                "at",
                "OTA image confirmed: rollback cancelled",
            );
        }
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
            sntp: None,
        };
        ctx.log(LogLevel::Info, "at", "AT firmware ready");
        if ctx.at_write(AtEngine::ready_banner()).is_err() {
            return;
        }
        confirm_running_app(&ctx);
        let mut buf = [0u8; 512];
        while !ctx.stopping() {
            if !drain(&mut ctx, &output) {
                return;
            }
            let received = match ctx.at_read(&mut buf) {
                Ok(0) => continue,
                Ok(n) => &buf[..n],
                // The AT pty closed (board powering off): nothing left to serve.
                Err(_) => return,
            };
            let heap = ctx.shared.heap();
            engine.set_heap(heap.free, heap.min_free);
            engine.set_clock(ctx.shared.clock());
            let access_points = ctx.shared.network().access_points;
            engine.set_access_points(
                access_points
                    .into_iter()
                    .map(|ap| (ap.ssid, ap.password))
                    .collect(),
            );
            let reply = engine.feed(
                received,
                &mut BoardModule {
                    ctx: &ctx,
                    net: &mut net,
                },
            );
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
