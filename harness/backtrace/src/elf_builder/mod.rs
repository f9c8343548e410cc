//! Small ESP32 app ELF files built in memory (feature `elf-builder`), so tests know exactly
//! which function, file and line each address must decode to, and the virtual board's
//! firmware has an ELF that decodes the panics it prints.
//!
//! Each function becomes one DWARF compilation unit (DWARF 4, 32-bit addresses) with a
//! `DW_TAG_subprogram` and a line program, plus an `STT_FUNC` symbol. Mangled names (`_Z…`,
//! Rust's legacy `_ZN…17h…E`) are written as `DW_AT_linkage_name` in a C++ or Rust unit.
//! Panics on misuse (a function outside every code section): callers build from fixed tables.

#[cfg(feature = "test-support")]
pub mod fixtures;

use std::ops::Range;

use gimli::write::{
    Address, AttributeValue, Dwarf, EndianVec, FileId, LineProgram, LineString, Sections, Unit,
};
use gimli::{Encoding, Format, LineEncoding, LittleEndian};
use object::build::elf::{Builder, SectionData};
use object::{Endianness, elf};

/// The two ESP32 core families, for [`TestElf::new`].
pub use object::Architecture;

/// Where a range of code comes from: an absolute path and a line.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub file: &'a str,
    pub line: u64,
}

/// Shorthand for [`Source`].
pub fn at(file: &str, line: u64) -> Source<'_> {
    Source { file, line }
}

#[derive(Debug, Clone)]
struct Inlined<'a> {
    name: &'a str,
    addresses: Range<u64>,
    body: Source<'a>,
    call_site: Source<'a>,
}

#[derive(Debug, Clone)]
struct Function<'a> {
    name: &'a str,
    addresses: Range<u64>,
    source: Source<'a>,
    inlined: Option<Inlined<'a>>,
}

/// An app ELF under construction.
#[derive(Debug, Clone)]
pub struct TestElf<'a> {
    machine: elf::Machine,
    code_sections: Vec<(&'a str, Range<u64>)>,
    data_sections: Vec<(&'a str, u64, &'a [u8])>,
    functions: Vec<Function<'a>>,
    bare_symbols: Vec<(&'a str, Range<u64>)>,
}

impl<'a> TestElf<'a> {
    /// `Architecture::Xtensa` (ESP32, -S2, -S3) or `Architecture::Riscv32` (ESP32-C3, -C6…).
    pub fn new(architecture: Architecture) -> Self {
        let machine = match architecture {
            Architecture::Xtensa => elf::EM_XTENSA,
            Architecture::Riscv32 => elf::EM_RISCV,
            other => panic!("no ESP32 has a {other:?} core"),
        };
        TestElf {
            machine,
            code_sections: Vec::new(),
            data_sections: Vec::new(),
            functions: Vec::new(),
            bare_symbols: Vec::new(),
        }
    }

    /// An executable (SHF_EXECINSTR) section such as `.flash.text` or `.iram0.text`.
    pub fn code_section(mut self, name: &'a str, addresses: Range<u64>) -> Self {
        self.code_sections.push((name, addresses));
        self
    }

    /// A loaded data section with these bytes, such as `.flash.appdesc` (the app descriptor
    /// espflash and the bootloader read).
    pub fn data_section(mut self, name: &'a str, address: u64, bytes: &'a [u8]) -> Self {
        self.data_sections.push((name, address, bytes));
        self
    }

    /// A function with debug information: every address in it maps to `source`.
    pub fn function(mut self, name: &'a str, addresses: Range<u64>, source: Source<'a>) -> Self {
        self.functions.push(Function {
            name,
            addresses,
            source,
            inlined: None,
        });
        self
    }

    /// Inlines `name` into the function added last: `addresses` map to `body`, the rest of
    /// the caller after them to `call_site`, which is also the `(inlined by)` frame.
    pub fn inlined(
        mut self,
        name: &'a str,
        addresses: Range<u64>,
        body: Source<'a>,
        call_site: Source<'a>,
    ) -> Self {
        let caller = self
            .functions
            .last_mut()
            .expect("inlined() follows the function() it is inlined into");
        assert!(
            caller.addresses.start <= addresses.start && addresses.end <= caller.addresses.end,
            "inlined code lies inside its caller"
        );
        caller.inlined = Some(Inlined {
            name,
            addresses,
            body,
            call_site,
        });
        self
    }

    /// A function known only to the symbol table (assembly, code built without `-g`).
    pub fn symbol(mut self, name: &'a str, addresses: Range<u64>) -> Self {
        self.bare_symbols.push((name, addresses));
        self
    }

    /// The ELF file's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut builder = Builder::new(Endianness::Little, false);
        builder.header.e_type = elf::ET_EXEC;
        builder.header.e_machine = self.machine;
        builder.header.e_entry = self.code_sections.first().map_or(0, |(_, r)| r.start);

        let mut code_section_ids = Vec::new();
        for (name, addresses) in &self.code_sections {
            let section = builder.sections.add();
            section.name = name.as_bytes().into();
            section.sh_type = elf::SHT_PROGBITS;
            section.sh_flags = elf::SHF_ALLOC | elf::SHF_EXECINSTR;
            section.sh_addr = addresses.start;
            section.sh_addralign = 4;
            let size = usize::try_from(addresses.end - addresses.start).expect("section size");
            section.data = SectionData::Data(vec![0; size].into());
            code_section_ids.push((section.id(), addresses.clone()));
        }

        for (name, address, bytes) in &self.data_sections {
            let section = builder.sections.add();
            section.name = name.as_bytes().into();
            section.sh_type = elf::SHT_PROGBITS;
            section.sh_flags = elf::SHF_ALLOC;
            section.sh_addr = *address;
            section.sh_addralign = 16;
            section.data = SectionData::Data(bytes.to_vec().into());
        }

        let debug_sections = self.dwarf();
        debug_sections
            .for_each(|id, data| {
                if !data.slice().is_empty() {
                    let section = builder.sections.add();
                    section.name = id.name().as_bytes().into();
                    section.sh_type = elf::SHT_PROGBITS;
                    section.sh_addralign = 1;
                    section.data = SectionData::Data(data.slice().to_vec().into());
                }
                Ok::<(), gimli::write::Error>(())
            })
            .expect("collecting DWARF sections");

        let named_ranges = self
            .functions
            .iter()
            .map(|f| (f.name, &f.addresses))
            .chain(self.bare_symbols.iter().map(|(name, r)| (*name, r)));
        for (name, addresses) in named_ranges {
            let section = code_section_ids
                .iter()
                .find(|(_, section)| section.contains(&addresses.start))
                .map(|(id, _)| *id)
                .expect("every function lies in a code section");
            let symbol = builder.symbols.add();
            symbol.name = name.as_bytes().into();
            symbol.set_st_info(elf::STB_GLOBAL, elf::STT_FUNC);
            symbol.section = Some(section);
            symbol.st_value = addresses.start;
            symbol.st_size = addresses.end - addresses.start;
        }

        for (name, data) in [
            (".symtab", SectionData::Symbol),
            (".strtab", SectionData::String),
            (".shstrtab", SectionData::SectionString),
        ] {
            let section = builder.sections.add();
            section.name = name.as_bytes().into();
            section.sh_type = match data {
                SectionData::Symbol => elf::SHT_SYMTAB,
                _ => elf::SHT_STRTAB,
            };
            section.data = data;
        }

        let mut bytes = Vec::new();
        builder.write(&mut bytes).expect("writing the ELF file");
        bytes
    }

    fn dwarf(&self) -> Sections<EndianVec<LittleEndian>> {
        let encoding = Encoding {
            address_size: 4,
            format: Format::Dwarf32,
            version: 4,
        };
        let mut dwarf = Dwarf::new();
        for function in &self.functions {
            dwarf.units.add(compilation_unit(encoding, function));
        }
        let mut sections = Sections::new(EndianVec::new(LittleEndian));
        dwarf.write(&mut sections).expect("writing DWARF");
        sections
    }
}

/// One compilation unit holding `function`, its line program and its inlined call.
fn compilation_unit(encoding: Encoding, function: &Function<'_>) -> Unit {
    const COMP_DIR: &[u8] = b"/build";
    let mut program = LineProgram::new(
        encoding,
        LineEncoding::default(),
        LineString::String(COMP_DIR.to_vec()),
        None,
        LineString::String(function.source.file.as_bytes().to_vec()),
        None,
    );
    let low = function.addresses.start;
    let mut rows = vec![(low, function.source)];
    let mut call_file = None;
    if let Some(inlined) = &function.inlined {
        rows.push((inlined.addresses.start, inlined.body));
        if inlined.addresses.end < function.addresses.end {
            rows.push((inlined.addresses.end, inlined.call_site));
        }
        call_file = Some(add_file(&mut program, inlined.call_site.file));
    }
    program.begin_sequence(Some(Address::Constant(low)));
    for (address, source) in rows {
        let file = add_file(&mut program, source.file);
        let row = program.row();
        row.address_offset = address - low;
        row.file = file;
        row.line = source.line;
        program.generate_row();
    }
    program.end_sequence(function.addresses.end - low);

    let mut unit = Unit::new(encoding, program);
    let root = unit.root();
    let (language, name_attribute) = language_of(function.name);
    let unit_entry = unit.get_mut(root);
    unit_entry.set(
        gimli::DW_AT_name,
        AttributeValue::String(function.source.file.as_bytes().to_vec()),
    );
    unit_entry.set(
        gimli::DW_AT_comp_dir,
        AttributeValue::String(COMP_DIR.to_vec()),
    );
    unit_entry.set(gimli::DW_AT_language, AttributeValue::Language(language));
    set_code_range(unit_entry, &function.addresses);

    let subprogram = unit.add(root, gimli::DW_TAG_subprogram);
    let entry = unit.get_mut(subprogram);
    entry.set(
        name_attribute,
        AttributeValue::String(function.name.as_bytes().to_vec()),
    );
    set_code_range(entry, &function.addresses);

    if let (Some(inlined), Some(call_file)) = (&function.inlined, call_file) {
        let origin = unit.add(root, gimli::DW_TAG_subprogram);
        let entry = unit.get_mut(origin);
        entry.set(
            gimli::DW_AT_name,
            AttributeValue::String(inlined.name.as_bytes().to_vec()),
        );
        entry.set(
            gimli::DW_AT_inline,
            AttributeValue::Inline(gimli::DW_INL_declared_inlined),
        );
        let call = unit.add(subprogram, gimli::DW_TAG_inlined_subroutine);
        let entry = unit.get_mut(call);
        entry.set(
            gimli::DW_AT_abstract_origin,
            AttributeValue::UnitRef(origin),
        );
        set_code_range(entry, &inlined.addresses);
        entry.set(
            gimli::DW_AT_call_file,
            AttributeValue::FileIndex(Some(call_file)),
        );
        entry.set(
            gimli::DW_AT_call_line,
            AttributeValue::Udata(inlined.call_site.line),
        );
    }
    unit
}

fn add_file(program: &mut LineProgram, path: &str) -> FileId {
    let (directory, name) = path
        .rsplit_once('/')
        .filter(|(directory, _)| directory.starts_with('/'))
        .expect("source paths are absolute");
    let directory = program.add_directory(LineString::String(directory.as_bytes().to_vec()));
    program.add_file(
        LineString::String(name.as_bytes().to_vec()),
        directory,
        None,
    )
}

fn set_code_range(entry: &mut gimli::write::DebuggingInformationEntry, addresses: &Range<u64>) {
    entry.set(
        gimli::DW_AT_low_pc,
        AttributeValue::Address(Address::Constant(addresses.start)),
    );
    entry.set(
        gimli::DW_AT_high_pc,
        AttributeValue::Udata(addresses.end - addresses.start),
    );
}

/// The unit language for a function name, and the attribute its name goes in: mangled names
/// are linkage names, which decoders demangle by the unit's language.
fn language_of(name: &str) -> (gimli::DwLang, gimli::DwAt) {
    if addr2line::demangle(name, gimli::DW_LANG_Rust).is_some() {
        (gimli::DW_LANG_Rust, gimli::DW_AT_linkage_name)
    } else if name.starts_with("_Z") {
        (gimli::DW_LANG_C_plus_plus, gimli::DW_AT_linkage_name)
    } else {
        (gimli::DW_LANG_C99, gimli::DW_AT_name)
    }
}
