//! `AT+SYSMFG` (ESP-AT v3.1+): namespaces, keys and values of the manufacturing NVS partition
//! (`mfg_nvs`), in the real ESP-IDF NVS format (`esp_formats::nvs`).
//!
//! Every write rewrites the whole partition from its items instead of appending entries as
//! ESP-IDF's NVS library does: what a later read (by the firmware, or by a host dumping the
//! flash) finds is the same, and the shared writer stays the one byte-exact with Espressif's
//! generator.

use esp_formats::nvs::{self, Item, Value};
use esp_formats::partition::{MFG_NVS, Partition};

use super::{AtEngine, Module, PendingData, count, int_in, optional_int, text};
use crate::esp_at::parse::{AtError, Param};

/// The namespaces ESP-AT's `AT+SYSMFG?` lists (sysmfg_at_examples.rst), before any custom ones.
const KNOWN_NAMESPACES: &[&str] = &[
    "factory_param",
    "client_cert",
    "client_key",
    "client_ca",
    "server_cert",
    "server_key",
    "server_ca",
    "mqtt_cert",
    "mqtt_key",
    "mqtt_ca",
    "https_cert",
    "https_key",
    "https_ca",
    "wss_cert",
    "wss_key",
    "wss_ca",
    "wpa2_cert",
    "wpa2_key",
    "wpa2_ca",
    "ble_data",
];

/// Largest string or binary value one write takes (the data prompt's limit).
const MAX_VALUE_LEN: i64 = 8192;
/// NVS keys and namespace names are at most 15 bytes.
const MAX_NAME_LEN: usize = 15;

/// A string or binary value waiting for its data prompt.
#[derive(Debug)]
pub(in crate::esp_at) struct PendingValue {
    namespace: String,
    key: String,
    string: bool,
}

/// `AT+SYSMFG`'s data types: 1 u8, 2 i8, 3 u16, 4 i16, 5 u32, 6 i32, 7 string, 8 binary.
fn type_of(value: &Value) -> Option<u8> {
    Some(match value {
        Value::U8(_) => 1,
        Value::I8(_) => 2,
        Value::U16(_) => 3,
        Value::I16(_) => 4,
        Value::U32(_) => 5,
        Value::I32(_) => 6,
        Value::Str(_) => 7,
        Value::Blob(_) => 8,
        // 64-bit integers exist in NVS but not in AT+SYSMFG.
        Value::U64(_) | Value::I64(_) => return None,
    })
}

/// The value as `AT+SYSMFG` prints it: integers in decimal, strings and blobs as bytes.
fn printed(value: &Value) -> Vec<u8> {
    match value {
        Value::U8(v) => v.to_string().into_bytes(),
        Value::I8(v) => v.to_string().into_bytes(),
        Value::U16(v) => v.to_string().into_bytes(),
        Value::I16(v) => v.to_string().into_bytes(),
        Value::U32(v) => v.to_string().into_bytes(),
        Value::I32(v) => v.to_string().into_bytes(),
        Value::U64(v) => v.to_string().into_bytes(),
        Value::I64(v) => v.to_string().into_bytes(),
        Value::Str(s) => s.clone().into_bytes(),
        Value::Blob(b) => b.clone(),
    }
}

fn integer(kind: i64, v: i64, index: u16) -> Result<Value, AtError> {
    let out_of_range = AtError::ParamInvalid(index);
    Ok(match kind {
        1 => Value::U8(u8::try_from(v).map_err(|_| out_of_range)?),
        2 => Value::I8(i8::try_from(v).map_err(|_| out_of_range)?),
        3 => Value::U16(u16::try_from(v).map_err(|_| out_of_range)?),
        4 => Value::I16(i16::try_from(v).map_err(|_| out_of_range)?),
        5 => Value::U32(u32::try_from(v).map_err(|_| out_of_range)?),
        _ => Value::I32(i32::try_from(v).map_err(|_| out_of_range)?),
    })
}

fn name(params: &[Param], index: u16) -> Result<String, AtError> {
    let name = text(params, index)?;
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(AtError::ParamLength(index));
    }
    Ok(name)
}

/// The `mfg_nvs` partition and its items; an erased partition holds none.
fn load(module: &mut dyn Module) -> Result<(Partition, Vec<Item>), AtError> {
    let partition = module
        .user_partitions()
        .into_iter()
        .find(|p| p.label == MFG_NVS)
        .ok_or(AtError::ExecFailed(0))?;
    let bytes = module
        .read(&partition, 0, partition.size)
        .ok_or(AtError::ExecFailed(0))?;
    let items = nvs::read(&bytes).map_err(|_| AtError::ExecFailed(0))?;
    Ok((partition, items))
}

fn store(module: &mut dyn Module, partition: &Partition, items: &[Item]) -> Result<(), AtError> {
    let bytes = nvs::write(items, partition.size as usize).map_err(|_| AtError::ExecFailed(0))?;
    (module.erase(partition, 0, partition.size) && module.write(partition, 0, &bytes))
        .then_some(())
        .ok_or(AtError::ExecFailed(0))
}

impl AtEngine {
    /// `AT+SYSMFG?`: the namespaces.
    pub(super) fn sysmfg_namespaces(
        &mut self,
        module: &mut dyn Module,
        out: &mut Vec<u8>,
    ) -> Result<(), AtError> {
        let (_, items) = load(module)?;
        let mut names: Vec<&str> = KNOWN_NAMESPACES.to_vec();
        for item in &items {
            if !names.contains(&item.namespace.as_str()) {
                names.push(&item.namespace);
            }
        }
        for name in names {
            out.extend_from_slice(format!("+SYSMFG:\"{name}\"\r\n").as_bytes());
        }
        Ok(())
    }

    /// `AT+SYSMFG=<op>,"<namespace>"[,"<key>",...]`: 0 erase, 1 read, 2 write.
    pub(super) fn sysmfg(
        &mut self,
        p: &[Param],
        module: &mut dyn Module,
        out: &mut Vec<u8>,
    ) -> Result<(), AtError> {
        let operation = int_in(p, 0, 0, 2)?;
        let namespace = name(p, 1)?;
        let key = match p.get(2) {
            None | Some(Param::Omitted) => None,
            Some(_) => Some(name(p, 2)?),
        };
        let (partition, mut items) = load(module)?;
        match (operation, key) {
            (0, key) => {
                let before = items.len();
                items.retain(|i| {
                    i.namespace != namespace || key.as_ref().is_some_and(|k| *k != i.key)
                });
                if items.len() == before {
                    return Err(AtError::ExecFailed(0));
                }
                store(module, &partition, &items)
            }
            (1, None) => {
                let listed: Vec<_> = items.iter().filter(|i| i.namespace == namespace).collect();
                if listed.is_empty() {
                    return Err(AtError::ExecFailed(0));
                }
                for item in listed {
                    let kind = type_of(&item.value).unwrap_or(0);
                    let line = format!("+SYSMFG:\"{namespace}\",\"{}\",{kind}\r\n", item.key);
                    out.extend_from_slice(line.as_bytes());
                }
                Ok(())
            }
            (1, Some(key)) => {
                let item = items
                    .iter()
                    .find(|i| i.namespace == namespace && i.key == key)
                    .ok_or(AtError::ExecFailed(0))?;
                let kind = type_of(&item.value).ok_or(AtError::ExecFailed(0))?;
                let value = printed(&item.value);
                let size = i64::try_from(value.len()).unwrap_or(i64::MAX);
                let offset = optional_int(p, 3, 0, size)?.unwrap_or(0);
                let len = optional_int(p, 4, 0, size - offset)?.unwrap_or(size - offset);
                // Both within the value's length, checked just above.
                let shown = &value[offset as usize..(offset + len) as usize];
                out.extend_from_slice(
                    format!("+SYSMFG:\"{namespace}\",\"{key}\",{kind},{len},").as_bytes(),
                );
                out.extend_from_slice(shown);
                out.extend_from_slice(b"\r\n");
                Ok(())
            }
            (_, None) => Err(AtError::ParamCount {
                need: 5,
                given: count(p),
            }),
            (_, Some(key)) => {
                let kind = int_in(p, 3, 1, 8)?;
                if kind >= 7 {
                    let len = int_in(p, 4, 1, MAX_VALUE_LEN)?;
                    let pending = PendingValue {
                        namespace,
                        key,
                        string: kind == 7,
                    };
                    self.prompt(len as usize, PendingData::Sysmfg(pending), out);
                    return Ok(());
                }
                let value = integer(
                    kind,
                    int_in(p, 4, i64::from(i32::MIN), i64::from(u32::MAX))?,
                    4,
                )?;
                put(&mut items, &namespace, &key, value);
                store(module, &partition, &items)
            }
        }
    }

    /// The data of a string or binary write arrived.
    pub(super) fn complete_sysmfg(
        &mut self,
        pending: PendingValue,
        data: &[u8],
        module: &mut dyn Module,
    ) -> Result<(), AtError> {
        let (partition, mut items) = load(module)?;
        let value = if pending.string {
            Value::Str(String::from_utf8(data.to_vec()).map_err(|_| AtError::ParamInvalid(4))?)
        } else {
            Value::Blob(data.to_vec())
        };
        put(&mut items, &pending.namespace, &pending.key, value);
        store(module, &partition, &items)
    }
}

/// Sets `namespace`/`key`, replacing an existing value in place.
fn put(items: &mut Vec<Item>, namespace: &str, key: &str, value: Value) {
    match items
        .iter_mut()
        .find(|i| i.namespace == namespace && i.key == key)
    {
        Some(item) => item.value = value,
        None => items.push(Item {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            value,
        }),
    }
}
