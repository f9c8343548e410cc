//! App image parsing (bootloader and OTA validation input).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = esp_formats::image::parse(data);
    let mut copy = data.to_vec();
    let _ = esp_formats::image::reseal(&mut copy);
});
