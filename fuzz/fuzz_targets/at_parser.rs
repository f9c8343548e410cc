//! Arbitrary bytes on the AT port of the ESP-AT personality: the engine must never panic,
//! whatever it is fed (including data-prompt writes into a user partition and AT+SYSMFG on an
//! NVS partition).
#![no_main]

use esp_formats::partition::Partition;
use libfuzzer_sys::fuzz_target;
use sparring_vboard::esp_at::{AtEngine, FirmwareInfo, MemoryFlash, parse_line};

fuzz_target!(|data: &[u8]| {
    let _ = parse_line(data);
    let info = FirmwareInfo {
        at_version: "3.2.0.0".into(),
        idf_version: "v5.0".into(),
        compile_time: "fuzz".into(),
        chip_name: "ESP32".into(),
    };
    let mut flash = MemoryFlash::new(vec![
        Partition::new("mqtt_ca", 0x40, 14, 0x3C000, 0x2000),
        Partition::new("mfg_nvs", 0x01, 0x02, 0x1F000, 0x3000),
    ]);
    let mut engine = AtEngine::new(info, 100_000);
    for chunk in data.chunks(17) {
        let mut reply = engine.feed(chunk, &mut flash);
        // What the board does with bytes that came while a command ran.
        if engine.ran_command() {
            engine.refuse_busy(&mut reply, chunk);
        }
    }
});
