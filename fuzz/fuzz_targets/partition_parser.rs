//! Partition tables, otadata and AtPKI bins read from flash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = esp_formats::partition::PartitionTable::parse(data);
    let _ = esp_formats::otadata::read(data);
    let _ = esp_formats::atpki::parse(data);
});
