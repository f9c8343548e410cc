//! Where the module finds its certificates when it connects, exactly as the firmware does:
//! ESP-AT v2.x–v3.0 reads AtPKI bins from one user partition per kind (`mqtt_ca`,
//! `client_cert`, ...); v3.1 and later read blobs from the `mfg_nvs` partition, one namespace
//! per kind (esp-facts §4.2, §4.3).

use esp_formats::atpki::{self, ItemType};
use esp_formats::nvs;
use esp_formats::partition::{MFG_NVS, Partition};

use super::tls::PkiItems;

/// Which client's certificates: MQTT (`mqtt_*`) or SSL sockets (`client_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertSet {
    Mqtt,
    Client,
}

impl CertSet {
    fn prefix(self) -> &'static str {
        match self {
            CertSet::Mqtt => "mqtt",
            CertSet::Client => "client",
        }
    }
}

fn suffix(kind: ItemType) -> &'static str {
    match kind {
        ItemType::Ca => "ca",
        ItemType::Cert => "cert",
        ItemType::Key => "key",
    }
}

/// The NVS key of item `id` in namespace `namespace`: the MQTT namespaces hold one item keyed
/// like the namespace, the others `<namespace>.<id>` (`client_cert.0`, ...).
pub fn nvs_key(set: CertSet, namespace: &str, id: u8) -> String {
    match set {
        CertSet::Mqtt => namespace.to_owned(),
        CertSet::Client => format!("{namespace}.{id}"),
    }
}

/// The CA (item `ca_id`), certificate and key (item `cert_id`) of `set`, read through `read`
/// from the module's user partitions.
pub fn items(
    partitions: &[Partition],
    read: impl Fn(&Partition) -> Option<Vec<u8>>,
    set: CertSet,
    cert_id: u8,
    ca_id: u8,
) -> PkiItems {
    let name = |kind| format!("{}_{}", set.prefix(), suffix(kind));
    if let Some(mfg) = partitions.iter().find(|p| p.label == MFG_NVS) {
        let stored = read(mfg)
            .and_then(|bytes| nvs::read(&bytes).ok())
            .unwrap_or_default();
        let blob = |kind, id| {
            let namespace = name(kind);
            let key = nvs_key(set, &namespace, id);
            stored
                .iter()
                .find(|i| i.namespace == namespace && i.key == key)
                .and_then(|i| match &i.value {
                    nvs::Value::Blob(bytes) => Some(bytes.clone()),
                    nvs::Value::Str(text) => Some(text.clone().into_bytes()),
                    _ => None,
                })
        };
        return PkiItems {
            ca: blob(ItemType::Ca, ca_id),
            cert: blob(ItemType::Cert, cert_id),
            key: blob(ItemType::Key, cert_id),
        };
    }
    let bin_item = |kind, id| {
        let partition = partitions.iter().find(|p| p.label == name(kind))?;
        atpki::parse(&read(partition)?)
            .ok()?
            .into_iter()
            .find(|i| i.item_type == kind && i.id == id)
            .map(|i| i.content)
    };
    PkiItems {
        ca: bin_item(ItemType::Ca, ca_id),
        cert: bin_item(ItemType::Cert, cert_id),
        key: bin_item(ItemType::Key, cert_id),
    }
}
