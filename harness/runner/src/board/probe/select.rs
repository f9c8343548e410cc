//! Naming a debug probe: probe-rs's selector and target registry, with errors that list what
//! was found or what is close.

use probe_rs::config::{Registry, RegistryError};
use probe_rs::probe::{DebugProbeInfo, DebugProbeSelector, Probe, list::Lister};
use std::sync::Once;

use super::ProbeError;

/// probe-rs 0.32 keeps Espressif targets, the ESP USB-JTAG probe driver and the ESP-IDF image
/// format in a plugin; it must be registered (once) before targets are looked up or probes
/// listed.
fn register_espressif() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(probe_rs_espressif::register_plugin);
}

/// probe-rs's target registry, Espressif targets included.
pub fn registry() -> Registry {
    register_espressif();
    Registry::from_builtin_families()
}

/// probe-rs's own `VID:PID[:SERIAL]` parsing, with an error that says what was expected.
pub fn parse_selector(text: &str) -> Result<DebugProbeSelector, String> {
    text.parse().map_err(|e| {
        format!(
            "probe {text:?}: {e}; expected probe-rs's VID:PID:SERIAL in hex, like \"303a:1001:F4:12:FA:01:02:03\" or \"1366:1051:000683112345\""
        )
    })
}

/// The registry's spelling of a target name; unknown or ambiguous names list close ones.
pub fn known_target(name: &str) -> Result<String, String> {
    let registry = registry();
    match registry.get_target_by_name(name) {
        Ok(target) => Ok(target.name),
        Err(RegistryError::ChipNotUnique(_, matches)) => Err(format!(
            "target {name:?} names several probe-rs targets: {matches}"
        )),
        Err(_) => {
            let close = close_target_names(&registry, name);
            Err(if close.is_empty() {
                format!("target {name:?}: not a probe-rs target (see `probe-rs chip list`)")
            } else {
                format!(
                    "target {name:?}: not a probe-rs target; close names: {}",
                    close.join(", ")
                )
            })
        }
    }
}

/// Target names sharing the longest case-insensitive prefix (three characters at least) with
/// `name`: `esp32c7` → `esp32c2, esp32c3, ...`; `nRF52840` typos → the nRF52840 variants.
fn close_target_names(registry: &Registry, name: &str) -> Vec<String> {
    const SHOWN: usize = 12;
    let wanted = name.to_ascii_lowercase();
    let common = |candidate: &str| {
        candidate
            .to_ascii_lowercase()
            .bytes()
            .zip(wanted.bytes())
            .take_while(|(a, b)| a == b)
            .count()
    };
    let names: Vec<String> = registry
        .families()
        .iter()
        .flat_map(|family| family.variants.iter().map(|chip| chip.name.clone()))
        .collect();
    let best = names.iter().map(|n| common(n)).max().unwrap_or(0);
    if best < 3 {
        return Vec::new();
    }
    let mut close: Vec<String> = names.into_iter().filter(|n| common(n) == best).collect();
    close.sort();
    close.dedup();
    close.truncate(SHOWN);
    close
}

/// The debug probes `lister` finds, for `sparring boards`.
pub fn list_probes(lister: &Lister) -> Vec<DebugProbeInfo> {
    register_espressif();
    lister.list_all()
}

/// `VID:PID:SERIAL`, the selector that names this probe and no other with another serial.
pub fn selector_text(info: &DebugProbeInfo) -> String {
    format!(
        "{:04x}:{:04x}:{}",
        info.vendor_id,
        info.product_id,
        info.serial_number.as_deref().unwrap_or("")
    )
}

/// The one probe among `lister`'s that `selector` matches; none or several is an error naming
/// what was found.
pub fn find_probe(
    lister: &Lister,
    selector: &DebugProbeSelector,
) -> Result<DebugProbeInfo, ProbeError> {
    register_espressif();
    let describe = |probes: &[DebugProbeInfo]| {
        if probes.is_empty() {
            return "no debug probes".to_owned();
        }
        probes
            .iter()
            .map(|p| format!("{} {}", p.identifier, selector_text(p)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut matching = lister.list(Some(selector));
    match matching.len() {
        0 => Err(ProbeError::NoProbe {
            selector: selector.to_string(),
            found: describe(&lister.list_all()),
        }),
        1 => Ok(matching.remove(0)),
        count => Err(ProbeError::Ambiguous {
            selector: selector.to_string(),
            count,
            found: describe(&matching),
        }),
    }
}

/// Opens the one probe `selector` matches (see [`find_probe`]).
pub fn open_probe(lister: &Lister, selector: &DebugProbeSelector) -> Result<Probe, ProbeError> {
    find_probe(lister, selector)?;
    lister
        .open(selector.clone())
        .map_err(|source| ProbeError::Open {
            selector: selector.to_string(),
            source,
        })
}
