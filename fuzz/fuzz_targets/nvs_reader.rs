//! NVS partitions (mfg_nvs) read from flash. The input is padded with erased bytes (0xFF) to
//! whole pages: the reader refuses any other size up front, so raw inputs would almost never
//! get past that check.
#![no_main]

use esp_formats::nvs::{PAGE_SIZE, read};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pages = data.len().div_ceil(PAGE_SIZE).max(1);
    let mut partition = data.to_vec();
    partition.resize(pages * PAGE_SIZE, 0xFF);
    let _ = read(&partition);
});
