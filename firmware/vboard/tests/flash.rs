//! Flash accesses outside the chip end as errors, never as a panic.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use sparring_vboard::flash::{Flash, FlashError};

#[test]
fn out_of_range_accesses_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut flash = Flash::open(&dir.path().join("flash.bin"), 1 << 20).unwrap();
    for (offset, len) in [(u64::MAX - 1, 16), (0xF_F000, 0x2000), (0, usize::MAX)] {
        assert!(matches!(
            flash.erase(offset, len),
            Err(FlashError::OutOfRange { .. })
        ));
        assert!(matches!(
            flash.read(offset, len),
            Err(FlashError::OutOfRange { .. })
        ));
    }
    assert!(matches!(
        flash.write(0xF_FFFF, &[0, 0]),
        Err(FlashError::OutOfRange { .. })
    ));
    flash.erase(0xF_F000, 0x1000).unwrap();
}
