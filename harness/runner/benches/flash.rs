//! Prints how fast a 1 MiB app image is flashed into the virtual board through espflash
//! (stub, compressed, verified), and how fast the board's own loader consumes the same
//! data in process: the board must never be the bottleneck of a flash.

use std::time::Instant;

use esp_formats::Chip;
use esp_formats::image::{self, AppSpec};
use esp_formats::loader::{self, Opcode, Request};
use espflash::connection::ResetBeforeOperation;
use sparring_runner::flash::{FlashOptions, LoaderLink, Region, flash};
use sparring_vboard::board::{Board, BoardConfig, Control};
use sparring_vboard::flash::Flash;
use sparring_vboard::rom::RomLoader;

fn main() {
    let chip = Chip::Esp32C3;
    let app = image::build_app(&AppSpec {
        code_len: 1 << 20,
        ..AppSpec::new(chip, "bench", "v1")
    })
    .expect("image");
    let mib = app.len() as f64 / f64::from(1 << 20);

    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = BoardConfig::new(chip, dir.path().join("flash.bin"), dir.path().to_path_buf());
    config.download = true;
    let board = Board::start(config).expect("board");
    let regions = [Region {
        offset: 0x60000,
        data: app.clone(),
        name: "app.bin".into(),
    }];
    let options = FlashOptions::default();
    let start = Instant::now();
    let report = flash(
        &LoaderLink::plain(board.info.uart0.clone(), ResetBeforeOperation::NoReset),
        chip,
        &regions,
        &options,
    )
    .expect("flash");
    let through_espflash = start.elapsed();
    assert_eq!(report.written.len(), 1);
    board.control(Control::PowerOff);
    println!(
        "espflash → virtual board: {:.2} MiB app (stub, compressed, verified) in {:.0} ms = {:.1} MiB/s",
        mib,
        through_espflash.as_secs_f64() * 1e3,
        mib / through_espflash.as_secs_f64()
    );

    // The board alone: the same zlib stream as FLASH_DEFL_DATA frames straight into the loader.
    let compressed = {
        use std::io::Write;
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&app).expect("compress");
        encoder.finish().expect("compress")
    };
    let mut flash_file = Flash::open(&dir.path().join("bench-flash.bin"), 4 << 20).expect("flash");
    let mut rom = RomLoader::new(chip, [0; 6], 4 << 20);
    let start = Instant::now();
    let words = |w: [u32; 4]| w.map(u32::to_le_bytes).concat();
    let blocks = compressed.chunks(0x4000).count() as u32;
    rom.handle(
        &Request::encode(
            Opcode::FlashDeflBegin,
            &words([app.len() as u32, blocks, 0x4000, 0x60000]),
            0,
        ),
        &mut flash_file,
    );
    for (seq, block) in compressed.chunks(0x4000).enumerate() {
        let mut data = words([block.len() as u32, seq as u32, 0, 0]);
        data.extend_from_slice(block);
        let (replies, _) = rom.handle(
            &Request::encode(Opcode::FlashDeflData, &data, loader::checksum(block)),
            &mut flash_file,
        );
        assert_eq!(replies[0][8..], [0, 0, 0, 0], "block {seq} refused");
    }
    let board_alone = start.elapsed();
    assert_eq!(flash_file.read(0x60000, app.len()).expect("read"), &app[..]);
    println!(
        "board loader alone: {:.2} MiB inflated and written in {:.1} ms = {:.1} MiB/s ({:.0}x the end-to-end rate)",
        mib,
        board_alone.as_secs_f64() * 1e3,
        mib / board_alone.as_secs_f64(),
        through_espflash.as_secs_f64() / board_alone.as_secs_f64()
    );
}
