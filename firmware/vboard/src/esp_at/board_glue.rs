//! The ESP-AT personality on the virtual board: the [`AtEngine`] wired to the AT UART, the
//! board's heap model and its restart line.

use esp_formats::image::AppDescriptor;
use esp_formats::partition::Partition;

use super::engine::{AtEngine, BoardAction, FirmwareInfo, UserFlash};
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

/// ESP-AT's user partitions are the custom data types (0x40 and up) of the booted table.
const FIRST_USER_PARTITION_TYPE: u8 = 0x40;

/// [`UserFlash`] on the board's flash chip.
struct BoardFlash<'a>(&'a AppContext);

impl UserFlash for BoardFlash<'_> {
    fn user_partitions(&self) -> Vec<Partition> {
        let table = &self.0.table.partitions;
        table
            .iter()
            .filter(|p| p.kind >= FIRST_USER_PARTITION_TYPE)
            .cloned()
            .collect()
    }

    fn erase(&mut self, partition: &Partition, offset: u32, len: u32) -> bool {
        let start = u64::from(partition.offset) + u64::from(offset);
        self.0.flash_erase(start, len as usize).is_ok()
    }

    fn write(&mut self, partition: &Partition, offset: u32, bytes: &[u8]) -> bool {
        let start = u64::from(partition.offset) + u64::from(offset);
        self.0.flash_write(start, bytes).is_ok()
    }

    fn read(&mut self, partition: &Partition, offset: u32, len: u32) -> Option<Vec<u8>> {
        let start = u64::from(partition.offset) + u64::from(offset);
        self.0.flash_read(start, len as usize).ok()
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
            engine.set_clock(ctx.shared.clock());
            let access_points = ctx.shared.network().access_points;
            engine.set_access_points(
                access_points
                    .into_iter()
                    .map(|ap| (ap.ssid, ap.password))
                    .collect(),
            );
            let reply = engine.feed(received, &mut BoardFlash(&ctx));
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
