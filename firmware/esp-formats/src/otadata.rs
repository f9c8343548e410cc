//! The otadata partition: two 32-byte entries (one per 4 KiB sector) that tell the
//! bootloader which OTA slot to boot, with rollback states.

use crate::partition::{Partition, PartitionTable};

pub const SECTOR: usize = 0x1000;
const ENTRY_LEN: usize = 32;

/// `esp_ota_img_states_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtaState {
    New,
    PendingVerify,
    Valid,
    Invalid,
    Aborted,
    Undefined,
}

impl OtaState {
    pub fn to_u32(self) -> u32 {
        match self {
            OtaState::New => 0,
            OtaState::PendingVerify => 1,
            OtaState::Valid => 2,
            OtaState::Invalid => 3,
            OtaState::Aborted => 4,
            OtaState::Undefined => 0xFFFF_FFFF,
        }
    }

    pub fn from_u32(v: u32) -> OtaState {
        match v {
            0 => OtaState::New,
            1 => OtaState::PendingVerify,
            2 => OtaState::Valid,
            3 => OtaState::Invalid,
            4 => OtaState::Aborted,
            _ => OtaState::Undefined,
        }
    }
}

/// One otadata entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtaEntry {
    pub seq: u32,
    pub state: OtaState,
    pub crc: u32,
}

impl OtaEntry {
    pub fn new(seq: u32, state: OtaState) -> OtaEntry {
        OtaEntry {
            seq,
            state,
            crc: seq_crc(seq),
        }
    }

    pub fn parse(bytes: &[u8]) -> Option<OtaEntry> {
        let b = bytes.get(..ENTRY_LEN)?;
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        Some(OtaEntry {
            seq: u32_at(0),
            state: OtaState::from_u32(u32_at(24)),
            crc: u32_at(28),
        })
    }

    pub fn to_bytes(self) -> [u8; ENTRY_LEN] {
        let mut out = [0xFF; ENTRY_LEN];
        out[0..4].copy_from_slice(&self.seq.to_le_bytes());
        out[24..28].copy_from_slice(&self.state.to_u32().to_le_bytes());
        out[28..32].copy_from_slice(&self.crc.to_le_bytes());
        out
    }

    /// Valid as the bootloader sees it: written, CRC correct, not INVALID/ABORTED.
    pub fn is_valid(&self) -> bool {
        self.seq != 0xFFFF_FFFF
            && self.crc == seq_crc(self.seq)
            && !matches!(self.state, OtaState::Invalid | OtaState::Aborted)
    }

    /// The slot this entry selects among `slot_count` OTA partitions.
    pub fn slot(&self, slot_count: usize) -> usize {
        (self.seq.wrapping_sub(1) as usize) % slot_count.max(1)
    }
}

/// `esp_rom_crc32_le(0xFFFFFFFF, seq, 4)`.
pub fn seq_crc(seq: u32) -> u32 {
    // Like zlib's crc32(crc, ...), crc32fast takes the previous *finalised* value, which it
    // inverts before use: 0xFFFFFFFF gives the ROM's register of 0, then the final inversion.
    let mut hasher = crc32fast::Hasher::new_with_initial(0xFFFF_FFFF);
    hasher.update(&seq.to_le_bytes());
    hasher.finalize()
}

/// Both entries of an otadata partition (`None` = erased or unreadable).
pub fn read(partition_bytes: &[u8]) -> [Option<OtaEntry>; 2] {
    let entry = |i: usize| {
        partition_bytes
            .get(i * SECTOR..)
            .and_then(OtaEntry::parse)
            .filter(|e| e.seq != 0xFFFF_FFFF)
    };
    [entry(0), entry(1)]
}

/// The valid entry with the highest sequence number, and its index (0 or 1).
pub fn active(entries: &[Option<OtaEntry>; 2]) -> Option<(usize, OtaEntry)> {
    entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.filter(OtaEntry::is_valid).map(|e| (i, e)))
        .max_by_key(|(_, e)| e.seq)
}

/// The entry `esp_ota_set_boot_partition` writes to boot `slot`: the next sequence number
/// that maps to it, for the sector not holding the active entry.
pub fn next_entry(
    entries: &[Option<OtaEntry>; 2],
    slot: usize,
    slot_count: usize,
    state: OtaState,
) -> (usize, OtaEntry) {
    let (active_index, active_seq) = active(entries).map(|(i, e)| (i, e.seq)).unwrap_or((1, 0));
    let count = slot_count.max(1) as u32;
    let mut seq = active_seq + 1;
    while (seq - 1) % count != slot as u32 {
        seq += 1;
    }
    (1 - active_index, OtaEntry::new(seq, state))
}

/// Locates the otadata partition of a table.
pub fn partition(table: &PartitionTable) -> Option<&Partition> {
    table.by_type(
        crate::partition::TYPE_DATA,
        crate::partition::SUBTYPE_DATA_OTA,
    )
}

/// An erased otadata partition image (what `ota_data_initial.bin` holds).
pub fn initial(size: usize) -> Vec<u8> {
    vec![0xFF; size]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_bootloader_values() {
        assert_eq!(seq_crc(1), 0x4743_989A);
        assert_eq!(seq_crc(2), 0x55F6_3774);
        assert_eq!(seq_crc(3), 0xED4A_5011);
    }

    #[test]
    fn selects_the_highest_valid_sequence() {
        let entries = [
            Some(OtaEntry::new(1, OtaState::Valid)),
            Some(OtaEntry::new(2, OtaState::New)),
        ];
        assert_eq!(active(&entries).map(|(i, e)| (i, e.slot(2))), Some((1, 1)));
        let aborted = [
            Some(OtaEntry::new(1, OtaState::Valid)),
            Some(OtaEntry::new(2, OtaState::Aborted)),
        ];
        assert_eq!(active(&aborted).map(|(_, e)| e.slot(2)), Some(0));
        let bad_crc = [
            Some(OtaEntry {
                crc: 0,
                ..OtaEntry::new(5, OtaState::Valid)
            }),
            None,
        ];
        assert_eq!(active(&bad_crc), None);
    }

    #[test]
    fn next_entry_targets_the_requested_slot_in_the_other_sector() {
        let entries = [Some(OtaEntry::new(1, OtaState::Valid)), None];
        let (sector, entry) = next_entry(&entries, 1, 2, OtaState::New);
        assert_eq!((sector, entry.seq, entry.slot(2)), (1, 2, 1));
        let bytes = entry.to_bytes();
        assert_eq!(OtaEntry::parse(&bytes), Some(entry));
    }
}
