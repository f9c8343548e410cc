//! Address → source frames, from an app ELF's DWARF and symbol table.

use std::borrow::Cow;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use gimli::{EndianArcSlice, RunTimeEndian};
use object::{Object, ObjectSection, ObjectSymbol, SectionFlags, SymbolKind};

type Reader = EndianArcSlice<RunTimeEndian>;

/// Why an ELF file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot be read ({0})")]
    Read(#[source] std::io::Error),
    #[error("not an ELF file ({0})")]
    NotElf(String),
    #[error("unreadable DWARF debug information ({0})")]
    Dwarf(#[from] gimli::Error),
}

/// One source frame of an address; the first of a list is the innermost (inlined) one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Demangled function name; `None` when neither DWARF nor the symbol table names one.
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// A function symbol from the ELF symbol table, for addresses no DWARF covers
/// (assembly, libraries built without `-g`).
#[derive(Debug)]
struct FunctionSymbol {
    address: u64,
    size: u64,
    name: String,
}

/// Resolves addresses of one app ELF, like `addr2line -pfiaC -e app.elf`.
pub struct Symbolizer {
    dwarf: addr2line::Context<Reader>,
    /// Sections with SHF_EXECINSTR: where a word can be a code address.
    executable: Vec<Range<u64>>,
    /// Sorted by start address.
    symbols: Vec<FunctionSymbol>,
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("executable", &self.executable)
            .field("symbols", &self.symbols.len())
            .finish_non_exhaustive()
    }
}

impl Symbolizer {
    pub fn from_path(path: &Path) -> Result<Self, ElfError> {
        let bytes = std::fs::read(path).map_err(ElfError::Read)?;
        Self::from_elf_bytes(&bytes)
    }

    pub fn from_elf_bytes(bytes: &[u8]) -> Result<Self, ElfError> {
        let file = object::File::parse(bytes).map_err(|e| ElfError::NotElf(e.to_string()))?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(ElfError::NotElf(format!("{:?} format", file.format())));
        }
        let endian = if file.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let load_section = |id: gimli::SectionId| -> Result<Reader, gimli::Error> {
            // A missing or compressed-and-undecodable section reads as empty: the symbol
            // table still names functions, as binutils does.
            let data = file
                .section_by_name(id.name())
                .and_then(|section| section.uncompressed_data().ok())
                .unwrap_or(Cow::Borrowed(&[]));
            Ok(EndianArcSlice::new(Arc::from(&*data), endian))
        };
        let dwarf = gimli::Dwarf::load(load_section)?;
        let dwarf = addr2line::Context::from_dwarf(dwarf)?;

        let executable = file
            .sections()
            .filter(|section| match section.flags() {
                SectionFlags::Elf { sh_flags, .. } => {
                    sh_flags.0 & object::elf::SHF_EXECINSTR.0 != 0
                }
                _ => false,
            })
            .map(|section| section.address()..section.address() + section.size())
            .collect();

        let mut symbols: Vec<FunctionSymbol> = file
            .symbols()
            .filter(|symbol| symbol.kind() == SymbolKind::Text)
            .filter_map(|symbol| {
                let name = symbol.name().ok().filter(|name| !name.is_empty())?;
                Some(FunctionSymbol {
                    address: symbol.address(),
                    size: symbol.size(),
                    name: addr2line::demangle_auto(Cow::Borrowed(name), None).into_owned(),
                })
            })
            .collect();
        // At one address the larger symbol wins, as in binutils.
        symbols.sort_by_key(|symbol| (symbol.address, symbol.size));

        Ok(Symbolizer {
            dwarf,
            executable,
            symbols,
        })
    }

    /// Whether `address` lies in an executable section, the test idf.py monitor applies
    /// before it decodes a number it found in a line.
    pub fn is_executable(&self, address: u64) -> bool {
        self.executable
            .iter()
            .any(|section| section.contains(&address))
    }

    /// The frames at `address`, innermost first; empty when nothing in the ELF covers it.
    /// Unreadable DWARF for one address yields what the symbol table knows, never an error:
    /// a decoder must go on to the next address.
    pub fn resolve(&self, address: u64) -> Vec<Frame> {
        let mut frames = self.dwarf_frames(address).unwrap_or_default();
        let first_named = frames.first().is_some_and(|f| f.function.is_some());
        if !first_named && let Some(symbol) = self.symbol_at(address) {
            match frames.first_mut() {
                Some(first) => first.function = Some(symbol.name.clone()),
                None => frames.push(Frame {
                    function: Some(symbol.name.clone()),
                    file: None,
                    line: None,
                }),
            }
        }
        frames
    }

    fn dwarf_frames(&self, address: u64) -> Result<Vec<Frame>, gimli::Error> {
        let mut iter = self.dwarf.find_frames(address).skip_all_loads()?;
        let mut frames = Vec::new();
        while let Some(frame) = iter.next()? {
            let function = match frame.function {
                Some(name) => Some(name.demangle()?.into_owned()),
                None => None,
            };
            let (file, line) = match frame.location {
                Some(location) => (location.file.map(str::to_owned), location.line),
                None => (None, None),
            };
            frames.push(Frame {
                function,
                file,
                line,
            });
        }
        Ok(frames)
    }

    /// The nearest function symbol at or before `address` in its executable section, sizes
    /// ignored: what binutils' `addr2line` answers, and so what idf.py monitor prints.
    fn symbol_at(&self, address: u64) -> Option<&FunctionSymbol> {
        let section = self
            .executable
            .iter()
            .find(|section| section.contains(&address))?;
        let after = self
            .symbols
            .partition_point(|symbol| symbol.address <= address);
        let symbol = self.symbols[..after].last()?;
        (symbol.address >= section.start).then_some(symbol)
    }
}
