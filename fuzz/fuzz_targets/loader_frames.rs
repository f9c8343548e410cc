//! Bytes on UART0 in download mode: SLIP decoding, then the ROM loader / stub state machine.
#![no_main]

use std::sync::{Mutex, OnceLock};

use esp_formats::{Chip, slip};
use libfuzzer_sys::fuzz_target;
use sparring_vboard::flash::Flash;
use sparring_vboard::rom::RomLoader;

fn flash() -> &'static Mutex<(tempfile::TempDir, Flash)> {
    static FLASH: OnceLock<Mutex<(tempfile::TempDir, Flash)>> = OnceLock::new();
    FLASH.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let flash = Flash::open(&dir.path().join("flash.bin"), 0x10000).expect("flash");
        Mutex::new((dir, flash))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut guard = flash().lock().expect("lock");
    let mut rom = RomLoader::new(Chip::Esp32C3, [0; 6], 0x10000);
    let mut decoder = slip::Decoder::new(0x1_0000);
    for &byte in data {
        if let Some(Ok(frame)) = decoder.push(byte) {
            let _ = rom.handle(&frame, &mut guard.1);
        }
    }
});
