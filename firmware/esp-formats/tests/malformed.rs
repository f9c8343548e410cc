//! Every parser survives malformed input: valid artefacts with random bytes changed, cut or
//! appended (a deterministic xorshift, so a failure reproduces), and plain garbage.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use esp_formats::atpki::{self, ItemType};
use esp_formats::image::{self, AppSpec};
use esp_formats::partition::{PartitionTable, esp_at_layout};
use esp_formats::{Chip, loader, nvs, otadata, slip};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A copy of `valid` with a few bytes changed, then cut or extended.
    fn mutate(&mut self, valid: &[u8]) -> Vec<u8> {
        let mut bytes = valid.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(bytes.len());
            if let Some(b) = bytes.get_mut(at) {
                *b = self.next() as u8;
            }
        }
        match self.below(3) {
            0 => bytes.truncate(self.below(bytes.len() + 1)),
            1 => bytes.extend((0..self.below(64)).map(|_| self.next() as u8)),
            _ => {}
        }
        bytes
    }
}

#[test]
fn parsers_never_panic_on_mutated_input() {
    let app = image::build_app(&AppSpec::new(Chip::Esp32C3, "esp-at", "v1")).unwrap();
    let table = esp_at_layout(Chip::Esp32, Default::default())
        .main
        .to_bytes()
        .unwrap();
    let pki = atpki::build(&[
        (ItemType::Cert, vec![0x30; 100]),
        (ItemType::Key, vec![0x31; 33]),
    ])
    .unwrap();
    let mut otadata_bytes = vec![0xFF; 2 * otadata::SECTOR];
    otadata_bytes[..32]
        .copy_from_slice(&otadata::OtaEntry::new(1, otadata::OtaState::Valid).to_bytes());
    let request = loader::Request::encode(loader::Opcode::FlashData, &[0u8; 40], 0);
    let nvs_items = [
        nvs::Item {
            namespace: "client_cert".into(),
            key: "client_cert.0".into(),
            value: nvs::Value::Blob(vec![0x42; 5000]),
        },
        nvs::Item {
            namespace: "client_cert".into(),
            key: "name".into(),
            value: nvs::Value::Str("board".into()),
        },
    ];
    let nvs_bytes = nvs::write(&nvs_items, 0x4000).unwrap();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..5_000 {
        let _ = nvs::read(&rng.mutate(&nvs_bytes));
        let mut same_length = nvs_bytes.clone();
        let at = rng.below(same_length.len());
        same_length[at] = rng.next() as u8;
        let _ = nvs::read(&same_length);
        let _ = image::parse(&rng.mutate(&app));
        let mut resealed = rng.mutate(&app);
        let _ = image::reseal(&mut resealed);
        let _ = PartitionTable::parse(&rng.mutate(&table));
        let _ = atpki::parse(&rng.mutate(&pki));
        let _ = otadata::read(&rng.mutate(&otadata_bytes));
        let _ = loader::Request::parse(&rng.mutate(&request));
        let mut decoder = slip::Decoder::new(256);
        for byte in rng.mutate(&slip::encode(&request)) {
            let _ = decoder.push(byte);
        }
    }
}

#[test]
fn one_changed_byte_anywhere_in_an_image_is_detected() {
    let app = image::build_app(&AppSpec::new(Chip::Esp32C3, "esp-at", "v1")).unwrap();
    let mut rng = XorShift(42);
    for _ in 0..2_000 {
        let at = rng.below(app.len());
        let mut bytes = app.clone();
        bytes[at] ^= 1 + (rng.next() as u8 % 255);
        // The SHA-256 covers every byte before it, and the hash itself is compared, so one
        // changed byte anywhere must be detected.
        assert!(
            image::parse(&bytes).is_err(),
            "change at 0x{at:x} went unnoticed"
        );
    }
}
