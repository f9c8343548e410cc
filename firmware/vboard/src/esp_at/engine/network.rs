//! The network commands of the AT engine: MQTT (`AT+MQTT*`) and OTA (`AT+USEROTA`). The engine
//! keeps what the host configured and answers queries; the [`Module`] does the networking.

use super::{AtEngine, Module, PendingData, int_in, optional_int, text, text_or_empty};
use crate::esp_at::parse::{AtError, CommandKind, Param};

/// MQTT error extensions (`ERR CODE:0x010A60xx` with `AT+SYSLOG=1`; esp-facts §4.6).
pub mod mqtt_error {
    pub const NO_CONFIGURED: u16 = 0x6001;
    pub const ALREADY_CONNECTED: u16 = 0x6004;
    pub const MALLOC_FAILED: u16 = 0x6005;
    pub const TLS_CONFIG_ERROR: u16 = 0x6009;
    pub const CLIENT_START_FAILED: u16 = 0x600B;
    pub const CLIENT_PUBLISH_FAILED: u16 = 0x600C;
    pub const CLIENT_SUBSCRIBE_FAILED: u16 = 0x600D;
    pub const SCHEME_VALUE_IS_WRONG: u16 = 0x6013;
    pub const IN_DISCONNECTED_STATE: u16 = 0x6051;
}

/// Most topics ESP-AT keeps subscribed at once.
const MAX_SUBSCRIPTIONS: usize = 10;
/// `AT+MQTTLONG*` and `AT+MQTTPUBRAW` lengths ESP-AT accepts.
const MAX_LONG_LEN: i64 = 1024;
const MAX_RAW_PUBLISH: i64 = 8192;

/// `AT+MQTTUSERCFG`: how to connect and who to be.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MqttUserConfig {
    /// 1 TCP, 2 TLS without verification, 3 verify server, 4 client cert, 5 mutual TLS.
    pub scheme: u8,
    pub client_id: String,
    pub username: String,
    pub password: String,
    pub path: String,
}

impl MqttUserConfig {
    pub fn uses_tls(&self) -> bool {
        (2..=5).contains(&self.scheme)
    }
    pub fn verifies_server(&self) -> bool {
        self.scheme == 3 || self.scheme == 5
    }
    pub fn presents_client_cert(&self) -> bool {
        self.scheme == 4 || self.scheme == 5
    }
}

/// A last will (`AT+MQTTCONNCFG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    pub topic: String,
    pub message: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

/// Everything `AT+MQTTCONN` hands to the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConnect {
    pub user: MqttUserConfig,
    /// Seconds; 0 means ESP-AT's default of 120.
    pub keepalive: u16,
    pub clean_session: bool,
    pub last_will: Option<LastWill>,
    pub sni: Option<String>,
    pub alpn: Vec<String>,
    pub host: String,
    pub port: u16,
    pub reconnect: bool,
    pub timeout_ms: u32,
}

impl MqttConnect {
    /// `+MQTTCONNECTED:0,<scheme>,"<host>","<port>","<path>",<reconnect>` (the port quoted,
    /// as libat's format string prints it).
    pub fn connected_line(&self) -> String {
        format!(
            "+MQTTCONNECTED:0,{},\"{}\",\"{}\",\"{}\",{}\r\n",
            self.user.scheme,
            self.host,
            self.port,
            self.user.path,
            u8::from(self.reconnect)
        )
    }
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

/// What the host configured for MQTT link 0.
#[derive(Debug, Clone, Default)]
pub(super) struct MqttLink {
    user: Option<MqttUserConfig>,
    conn_configured: bool,
    keepalive: u16,
    clean_session: bool,
    last_will: Option<LastWill>,
    sni: Option<String>,
    alpn: Vec<String>,
    /// The last `AT+MQTTCONN` target, for `AT+MQTTCONN?`.
    target: Option<MqttConnect>,
    subscriptions: Vec<(String, u8)>,
}

/// Which of the long `AT+MQTTLONG*` values a data prompt fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LongField {
    ClientId,
    Username,
    Password,
}

/// Only link 0 exists.
fn link_zero(params: &[Param]) -> Result<(), AtError> {
    int_in(params, 0, 0, 0).map(|_| ())
}

fn topic(params: &[Param], index: u16) -> Result<String, AtError> {
    let topic = text(params, index)?;
    if topic.is_empty() || topic.len() > 128 {
        return Err(AtError::ParamLength(index));
    }
    Ok(topic)
}

impl AtEngine {
    /// Runs an `AT+MQTT*` / `AT+USEROTA` command; `None` when `name` is not one of them.
    pub(super) fn network_command(
        &mut self,
        name: &str,
        kind: &CommandKind,
        module: &mut dyn Module,
        out: &mut Vec<u8>,
    ) -> Option<Result<(), AtError>> {
        let result = match (name, kind) {
            ("+MQTTUSERCFG", CommandKind::Set(p)) => self.mqtt_user_config(p),
            ("+MQTTLONGCLIENTID", CommandKind::Set(p)) => {
                self.long_field(p, LongField::ClientId, out)
            }
            ("+MQTTLONGUSERNAME", CommandKind::Set(p)) => {
                self.long_field(p, LongField::Username, out)
            }
            ("+MQTTLONGPASSWORD", CommandKind::Set(p)) => {
                self.long_field(p, LongField::Password, out)
            }
            ("+MQTTCONNCFG", CommandKind::Set(p)) => self.mqtt_conn_config(p),
            ("+MQTTSNI", CommandKind::Set(p)) => link_zero(p).and_then(|()| {
                self.mqtt.sni = Some(text(p, 1)?);
                Ok(())
            }),
            ("+MQTTALPN", CommandKind::Set(p)) => link_zero(p).and_then(|()| {
                let count = int_in(p, 1, 0, 5)?;
                self.mqtt.alpn = (0..count)
                    .map(|i| text(p, u16::try_from(i + 2).unwrap_or(u16::MAX)))
                    .collect::<Result<_, _>>()?;
                Ok(())
            }),
            ("+MQTTCONN", CommandKind::Set(p)) => self.mqtt_connect(p, module, out),
            ("+MQTTCONN", CommandKind::Query) => {
                out.extend_from_slice(self.mqtt_state_line(module).as_bytes());
                Ok(())
            }
            ("+MQTTSUB", CommandKind::Set(p)) => self.mqtt_subscribe(p, module, out),
            ("+MQTTSUB", CommandKind::Query) => {
                let state = self.mqtt_state(module);
                for (topic, qos) in &self.mqtt.subscriptions {
                    let line = format!("+MQTTSUB:0,{state},\"{topic}\",{qos}\r\n");
                    out.extend_from_slice(line.as_bytes());
                }
                Ok(())
            }
            ("+MQTTUNSUB", CommandKind::Set(p)) => self.mqtt_unsubscribe(p, module, out),
            ("+MQTTPUB", CommandKind::Set(p)) => self.mqtt_publish(p, module),
            ("+MQTTPUBRAW", CommandKind::Set(p)) => self.mqtt_publish_raw(p, module, out),
            ("+MQTTCLEAN", CommandKind::Set(p)) => link_zero(p).map(|()| {
                module.mqtt_clean();
                self.mqtt = MqttLink::default();
            }),
            ("+USEROTA", CommandKind::Set(p)) => int_in(p, 0, 1, 1024).map(|len| {
                self.prompt(len as usize, PendingData::UserOta, out);
            }),
            (
                "+MQTTUSERCFG" | "+MQTTLONGCLIENTID" | "+MQTTLONGUSERNAME" | "+MQTTLONGPASSWORD"
                | "+MQTTCONNCFG" | "+MQTTSNI" | "+MQTTALPN" | "+MQTTCONN" | "+MQTTSUB"
                | "+MQTTUNSUB" | "+MQTTPUB" | "+MQTTPUBRAW" | "+MQTTCLEAN" | "+USEROTA",
                _,
            ) => Err(AtError::WrongOperation),
            _ => return None,
        };
        Some(result)
    }

    /// `OK`, a blank line and `>`: the generic "OK and input prompt" result (esp-facts §4.4).
    pub(super) fn prompt(&mut self, len: usize, pending: PendingData, out: &mut Vec<u8>) {
        self.framer.expect_data(len);
        self.pending_data = Some(pending);
        out.extend_from_slice(b"\r\nOK\r\n\r\n>");
    }

    fn mqtt_user_config(&mut self, p: &[Param]) -> Result<(), AtError> {
        link_zero(p)?;
        let scheme = int_in(p, 1, 1, 10)?;
        if scheme > 5 {
            // WebSocket schemes: not in the virtual module.
            return Err(AtError::ExecFailed(mqtt_error::SCHEME_VALUE_IS_WRONG));
        }
        let config = MqttUserConfig {
            scheme: scheme as u8,
            client_id: text(p, 2)?,
            username: text_or_empty(p, 3)?,
            password: text_or_empty(p, 4)?,
            path: text_or_empty(p, 7)?,
        };
        if config.client_id.len() > 256 {
            return Err(AtError::ParamLength(2));
        }
        if config.username.len() > 64 || config.password.len() > 64 {
            return Err(AtError::ParamLength(3));
        }
        optional_int(p, 5, 0, 0)?;
        optional_int(p, 6, 0, 0)?;
        self.mqtt.user = Some(config);
        Ok(())
    }

    fn long_field(
        &mut self,
        p: &[Param],
        field: LongField,
        out: &mut Vec<u8>,
    ) -> Result<(), AtError> {
        link_zero(p)?;
        if self.mqtt.user.is_none() {
            return Err(AtError::ExecFailed(mqtt_error::NO_CONFIGURED));
        }
        let len = int_in(p, 1, 1, MAX_LONG_LEN)?;
        self.prompt(len as usize, PendingData::MqttLong(field), out);
        Ok(())
    }

    pub(super) fn complete_long_field(
        &mut self,
        field: LongField,
        data: &[u8],
    ) -> Result<(), AtError> {
        let value = String::from_utf8_lossy(data).into_owned();
        let user = self
            .mqtt
            .user
            .as_mut()
            .ok_or(AtError::ExecFailed(mqtt_error::NO_CONFIGURED))?;
        match field {
            LongField::ClientId => user.client_id = value,
            LongField::Username => user.username = value,
            LongField::Password => user.password = value,
        }
        Ok(())
    }

    fn mqtt_conn_config(&mut self, p: &[Param]) -> Result<(), AtError> {
        link_zero(p)?;
        let keepalive = int_in(p, 1, 0, 7200)?;
        let disable_clean = int_in(p, 2, 0, 1)?;
        let will_topic = text_or_empty(p, 3)?;
        let will_message = text_or_empty(p, 4)?;
        let will_qos = optional_int(p, 5, 0, 2)?.unwrap_or(0);
        let will_retain = optional_int(p, 6, 0, 1)?.unwrap_or(0);
        self.mqtt.keepalive = keepalive as u16;
        self.mqtt.clean_session = disable_clean == 0;
        self.mqtt.last_will = (!will_topic.is_empty()).then(|| LastWill {
            topic: will_topic,
            message: will_message.into_bytes(),
            qos: will_qos as u8,
            retain: will_retain == 1,
        });
        self.mqtt.conn_configured = true;
        Ok(())
    }

    fn mqtt_connect(
        &mut self,
        p: &[Param],
        module: &mut dyn Module,
        out: &mut Vec<u8>,
    ) -> Result<(), AtError> {
        link_zero(p)?;
        let host = text(p, 1)?;
        let port = int_in(p, 2, 0, 65535)? as u16;
        let reconnect = int_in(p, 3, 0, 1)? == 1;
        let timeout_ms = optional_int(p, 4, 3000, 60000)?.unwrap_or(15_000) as u32;
        let user = self
            .mqtt
            .user
            .clone()
            .ok_or(AtError::ExecFailed(mqtt_error::NO_CONFIGURED))?;
        if module.mqtt_connected() {
            return Err(AtError::ExecFailed(mqtt_error::ALREADY_CONNECTED));
        }
        if self.joined.is_none() {
            // No IP yet: esp-mqtt cannot even open the socket.
            return Err(AtError::ExecFailed(mqtt_error::CLIENT_START_FAILED));
        }
        let request = MqttConnect {
            user,
            keepalive: self.mqtt.keepalive,
            clean_session: !self.mqtt.conn_configured || self.mqtt.clean_session,
            last_will: self.mqtt.last_will.clone(),
            sni: self.mqtt.sni.clone(),
            alpn: self.mqtt.alpn.clone(),
            host,
            port,
            reconnect,
            timeout_ms,
        };
        self.mqtt.target = Some(request.clone());
        self.mqtt.subscriptions.clear();
        module.mqtt_connect(&request, out)
    }

    /// 0 uninitialised, 1 user config set, 2 connection config set, 3 disconnected,
    /// 4 connected, 5 connected without subscriptions, 6 connected and subscribed.
    fn mqtt_state(&self, module: &dyn Module) -> u8 {
        match (&self.mqtt.user, &self.mqtt.target) {
            (None, _) => 0,
            (Some(_), Some(_)) if module.mqtt_connected() => {
                if self.mqtt.subscriptions.is_empty() {
                    5
                } else {
                    6
                }
            }
            (Some(_), Some(_)) => 3,
            (Some(_), None) if self.mqtt.conn_configured => 2,
            (Some(_), None) => 1,
        }
    }

    fn mqtt_state_line(&self, module: &dyn Module) -> String {
        let state = self.mqtt_state(module);
        match (&self.mqtt.user, &self.mqtt.target) {
            (Some(user), Some(t)) => format!(
                "+MQTTCONN:0,{state},{},\"{}\",\"{}\",\"{}\",{}\r\n",
                user.scheme,
                t.host,
                t.port,
                user.path,
                u8::from(t.reconnect)
            ),
            (user, _) => format!(
                "+MQTTCONN:0,{state},{},\"\",\"\",\"\",0\r\n",
                user.as_ref().map_or(0, |u| u.scheme)
            ),
        }
    }

    fn mqtt_subscribe(
        &mut self,
        p: &[Param],
        module: &mut dyn Module,
        out: &mut Vec<u8>,
    ) -> Result<(), AtError> {
        link_zero(p)?;
        let topic = topic(p, 1)?;
        let qos = int_in(p, 2, 0, 2)? as u8;
        if self.mqtt.subscriptions.iter().any(|(t, _)| *t == topic) {
            out.extend_from_slice(b"ALREADY SUBSCRIBE\r\n");
            return Ok(());
        }
        if self.mqtt.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return Err(AtError::ExecFailed(mqtt_error::CLIENT_SUBSCRIBE_FAILED));
        }
        module.mqtt_subscribe(&topic, qos)?;
        self.mqtt.subscriptions.push((topic, qos));
        Ok(())
    }

    fn mqtt_unsubscribe(
        &mut self,
        p: &[Param],
        module: &mut dyn Module,
        out: &mut Vec<u8>,
    ) -> Result<(), AtError> {
        link_zero(p)?;
        let topic = topic(p, 1)?;
        let Some(index) = self
            .mqtt
            .subscriptions
            .iter()
            .position(|(t, _)| *t == topic)
        else {
            out.extend_from_slice(b"NO UNSUBSCRIBE\r\n");
            return Ok(());
        };
        module.mqtt_unsubscribe(&topic)?;
        self.mqtt.subscriptions.remove(index);
        Ok(())
    }

    fn mqtt_publish(&mut self, p: &[Param], module: &mut dyn Module) -> Result<(), AtError> {
        link_zero(p)?;
        let message = MqttMessage {
            topic: topic(p, 1)?,
            payload: text(p, 2)?.into_bytes(),
            qos: int_in(p, 3, 0, 2)? as u8,
            retain: int_in(p, 4, 0, 1)? == 1,
        };
        module.mqtt_publish(&message)
    }

    fn mqtt_publish_raw(
        &mut self,
        p: &[Param],
        module: &mut dyn Module,
        out: &mut Vec<u8>,
    ) -> Result<(), AtError> {
        link_zero(p)?;
        let topic = topic(p, 1)?;
        let len = int_in(p, 2, 1, MAX_RAW_PUBLISH)?;
        let qos = int_in(p, 3, 0, 2)? as u8;
        let retain = int_in(p, 4, 0, 1)? == 1;
        if !module.mqtt_connected() {
            return Err(AtError::ExecFailed(mqtt_error::IN_DISCONNECTED_STATE));
        }
        let message = MqttMessage {
            topic,
            payload: Vec::new(),
            qos,
            retain,
        };
        self.prompt(len as usize, PendingData::MqttPublishRaw(message), out);
        Ok(())
    }
}
