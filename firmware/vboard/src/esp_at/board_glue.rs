//! The ESP-AT personality on the virtual board: the [`AtEngine`] wired to the AT UART, the
//! board's heap model and its restart line.

use esp_formats::image::AppDescriptor;

use super::engine::{AtEngine, BoardAction, FirmwareInfo};
use crate::personality::{AppContext, LogLevel, Personality};

/// The app whose descriptor names the project `esp-at`.
#[derive(Debug, Default)]
pub struct EspAt;

impl EspAt {
    pub fn new() -> Self {
        Self
    }
}

fn firmware_info(descriptor: &AppDescriptor, chip_name: &str) -> FirmwareInfo {
    FirmwareInfo {
        at_version: descriptor.version.clone(),
        idf_version: descriptor.idf_ver.clone(),
        compile_time: format!("{} {}", descriptor.date, descriptor.time),
        chip_name: chip_name.to_owned(),
    }
}

impl Personality for EspAt {
    fn run(self: Box<Self>, mut ctx: AppContext) {
        let heap = ctx.shared.heap();
        let mut engine = AtEngine::new(firmware_info(&ctx.descriptor, ctx.chip.name()), heap.free);
        ctx.log(LogLevel::Info, "at", "AT firmware ready");
        if ctx.at_write(AtEngine::ready_banner()).is_err() {
            return;
        }
        let mut buf = [0u8; 512];
        while !ctx.stopping() {
            let received = match ctx.at_read(&mut buf) {
                Ok(0) => continue,
                Ok(n) => &buf[..n],
                // The AT pty closed (board powering off): nothing left to serve.
                Err(_) => return,
            };
            let heap = ctx.shared.heap();
            engine.set_heap(heap.free, heap.min_free);
            let reply = engine.feed(received);
            if ctx.at_write(&reply).is_err() {
                return;
            }
            match engine.take_action() {
                None => {}
                // RESTORE would also erase the NVS settings; there are none kept yet.
                Some(BoardAction::Restart | BoardAction::FactoryRestore) => {
                    ctx.restart();
                    return;
                }
            }
        }
    }
}
