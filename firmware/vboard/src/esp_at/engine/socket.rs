//! The TCP/SSL socket commands of the AT engine, single-connection mode (`AT+CIPMUX=0`):
//! `AT+CIPSSLCCONF`, `AT+CIPSSLCSNI`, `AT+CIPSTART`, `AT+CIPSEND`, `AT+CIPCLOSE`. The engine
//! keeps the configuration; the [`Module`] owns the connection and prints `+IPD` and `CLOSED`.

use super::{AtEngine, Module, PendingData, int_in, optional_int, text};
use crate::esp_at::parse::{AtError, CommandKind, Param};

/// `AT+CIPSEND` takes at most this many bytes at once (ESP-AT's limit in normal mode).
const MAX_SEND: i64 = 8192;

/// `AT+CIPSSLCCONF` / `AT+CIPSSLCSNI` state.
#[derive(Debug, Clone, Default)]
pub(super) struct SslConfig {
    auth_mode: u8,
    pki_number: u8,
    ca_number: u8,
    sni: Option<String>,
}

/// Everything `AT+CIPSTART` hands to the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOpen {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// 0 none, 1 present the client certificate, 2 verify the server, 3 both.
    pub auth_mode: u8,
    /// Which `client_cert`/`client_key` item (AtPKI ID, or `.N` key in mfg_nvs).
    pub pki_number: u8,
    /// Which `client_ca` item.
    pub ca_number: u8,
    pub sni: Option<String>,
}

impl SocketOpen {
    pub fn presents_client_cert(&self) -> bool {
        self.auth_mode & 1 != 0
    }
    pub fn verifies_server(&self) -> bool {
        self.auth_mode & 2 != 0
    }
}

impl AtEngine {
    /// Runs an `AT+CIP*` socket command; `None` when `name` is not one of them.
    pub(super) fn socket_command(
        &mut self,
        name: &str,
        kind: &CommandKind,
        module: &mut dyn Module,
        out: &mut Vec<u8>,
    ) -> Option<Result<(), AtError>> {
        let result = match (name, kind) {
            ("+CIPSSLCCONF", CommandKind::Query) => {
                let c = &self.ssl;
                let line = format!(
                    "+CIPSSLCCONF:{},{},{}\r\n",
                    c.auth_mode, c.pki_number, c.ca_number
                );
                out.extend_from_slice(line.as_bytes());
                Ok(())
            }
            ("+CIPSSLCCONF", CommandKind::Set(p)) => self.ssl_config(p),
            ("+CIPSSLCSNI", CommandKind::Query) => {
                let sni = self.ssl.sni.as_deref().unwrap_or("");
                out.extend_from_slice(format!("+CIPSSLCSNI:\"{sni}\"\r\n").as_bytes());
                Ok(())
            }
            ("+CIPSSLCSNI", CommandKind::Set(p)) => text(p, 0).and_then(|sni| {
                if sni.is_empty() || sni.len() > 64 {
                    return Err(AtError::ParamLength(0));
                }
                self.ssl.sni = Some(sni);
                Ok(())
            }),
            ("+CIPSTART", CommandKind::Set(p)) => self.socket_open(p, module, out),
            ("+CIPSEND", CommandKind::Set(p)) => int_in(p, 0, 1, MAX_SEND).and_then(|len| {
                if !module.socket_connected() {
                    return Err(AtError::ExecFailed(0));
                }
                self.prompt(len as usize, PendingData::SocketSend, out);
                Ok(())
            }),
            ("+CIPCLOSE", CommandKind::Execute) => {
                if module.socket_close() {
                    out.extend_from_slice(b"CLOSED\r\n");
                    Ok(())
                } else {
                    Err(AtError::ExecFailed(0))
                }
            }
            ("+CIPSSLCCONF" | "+CIPSSLCSNI" | "+CIPSTART" | "+CIPSEND" | "+CIPCLOSE", _) => {
                Err(AtError::WrongOperation)
            }
            _ => return None,
        };
        Some(result)
    }

    /// `AT+CIPSSLCCONF=<auth_mode>[,<pki_number>][,<ca_number>]`.
    fn ssl_config(&mut self, p: &[Param]) -> Result<(), AtError> {
        let auth_mode = int_in(p, 0, 0, 3)? as u8;
        let pki_number = optional_int(p, 1, 0, 255)?.unwrap_or(0) as u8;
        let ca_number = optional_int(p, 2, 0, 255)?.unwrap_or(0) as u8;
        self.ssl.auth_mode = auth_mode;
        self.ssl.pki_number = pki_number;
        self.ssl.ca_number = ca_number;
        Ok(())
    }

    /// `AT+CIPSTART="TCP"|"SSL","<host>",<port>[,<keep_alive>]`: `CONNECT` then `OK`.
    fn socket_open(
        &mut self,
        p: &[Param],
        module: &mut dyn Module,
        out: &mut Vec<u8>,
    ) -> Result<(), AtError> {
        let tls = match text(p, 0)?.as_str() {
            "SSL" => true,
            "TCP" => false,
            _ => return Err(AtError::ParamInvalid(0)),
        };
        let host = text(p, 1)?;
        if host.is_empty() || host.len() > 64 {
            return Err(AtError::ParamLength(1));
        }
        let port = int_in(p, 2, 1, 65535)? as u16;
        optional_int(p, 3, 0, 7200)?;
        if module.socket_connected() {
            out.extend_from_slice(b"ALREADY CONNECTED\r\n");
            return Err(AtError::ExecFailed(0));
        }
        if self.joined.is_none() {
            return Err(AtError::ExecFailed(0));
        }
        let request = SocketOpen {
            tls,
            host,
            port,
            auth_mode: if tls { self.ssl.auth_mode } else { 0 },
            pki_number: self.ssl.pki_number,
            ca_number: self.ssl.ca_number,
            sni: self.ssl.sni.clone(),
        };
        module.socket_open(&request, out)?;
        out.extend_from_slice(b"CONNECT\r\n");
        Ok(())
    }

    /// The data announced by `AT+CIPSEND` arrived: `Recv <n> bytes`, then `SEND OK` or
    /// `SEND FAIL` (instead of `OK`).
    pub(super) fn complete_socket_send(
        &mut self,
        data: &[u8],
        module: &mut dyn Module,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(format!("\r\nRecv {} bytes\r\n", data.len()).as_bytes());
        let line: &[u8] = if module.socket_send(data) {
            b"\r\nSEND OK\r\n"
        } else {
            b"\r\nSEND FAIL\r\n"
        };
        out.extend_from_slice(line);
    }
}
