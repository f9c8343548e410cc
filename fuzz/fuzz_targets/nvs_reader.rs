//! NVS partitions (mfg_nvs) read from flash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = esp_formats::nvs::read(data);
});
