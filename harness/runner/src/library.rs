//! The step library: files of steps that scenarios `include` by name (`esp-at/prepare.toml`).
//!
//! The files of `scenarios/lib/` are compiled into the binary, so a scenario anywhere can
//! include them. A name is looked up in the scenario's own `lib/` directory first (a team can
//! override or add files), then in each directory of `$SPARRING_LIB`, then in the built-in
//! library.

use std::path::{Path, PathBuf};

/// Every file of `scenarios/lib/`, by its name under `lib/`.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "esp-at/boot.toml",
        include_str!("../../../scenarios/lib/esp-at/boot.toml"),
    ),
    (
        "esp-at/connect-mqtt.toml",
        include_str!("../../../scenarios/lib/esp-at/connect-mqtt.toml"),
    ),
    (
        "esp-at/join-wifi.toml",
        include_str!("../../../scenarios/lib/esp-at/join-wifi.toml"),
    ),
    (
        "esp-at/prepare.toml",
        include_str!("../../../scenarios/lib/esp-at/prepare.toml"),
    ),
    (
        "esp-at/provision.toml",
        include_str!("../../../scenarios/lib/esp-at/provision.toml"),
    ),
    (
        "esp-at/sync-time.toml",
        include_str!("../../../scenarios/lib/esp-at/sync-time.toml"),
    ),
];

/// How built-in files are named in errors and step origins.
const BUILT_IN_ORIGIN: &str = "<built-in>";

/// Environment variable with more library directories, separated like `PATH`.
const LIB_PATH_VARIABLE: &str = "SPARRING_LIB";

/// A library file found by name.
#[derive(Debug)]
pub struct LibraryFile {
    /// Where it was found: a file path, or `<built-in>/NAME`.
    pub origin: PathBuf,
    pub text: String,
}

/// Where includes are looked up, in order; the built-in library comes after `dirs`.
#[derive(Debug)]
pub struct Library {
    dirs: Vec<PathBuf>,
}

impl Library {
    /// For a scenario file: its directory's `lib/`, then `$SPARRING_LIB`.
    pub fn for_scenario(scenario: &Path) -> Library {
        let own = scenario.parent().unwrap_or(Path::new(".")).join("lib");
        let extra = std::env::var_os(LIB_PATH_VARIABLE);
        let mut dirs = vec![own];
        // An empty entry (`SPARRING_LIB=`, `a::b`) would mean the current directory.
        dirs.extend(
            extra
                .iter()
                .flat_map(std::env::split_paths)
                .filter(|dir| !dir.as_os_str().is_empty()),
        );
        Library { dirs }
    }

    /// The first file called `name`; the error names every place looked in.
    pub fn find(&self, name: &str) -> Result<LibraryFile, String> {
        let mut looked_in = Vec::new();
        for dir in &self.dirs {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => return Ok(LibraryFile { origin: path, text }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    looked_in.push(path.display().to_string());
                }
                // A file that is there but unreadable is not silently skipped.
                Err(e) => return Err(format!("cannot read included {}: {e}", path.display())),
            }
        }
        let built_in = Path::new(BUILT_IN_ORIGIN).join(name);
        match BUILT_IN.iter().find(|(known, _)| *known == name) {
            Some((_, text)) => Ok(LibraryFile {
                origin: built_in,
                text: (*text).to_owned(),
            }),
            None => {
                looked_in.push(built_in.display().to_string());
                Err(format!(
                    "cannot find included {name}; looked in {}",
                    looked_in.join(", ")
                ))
            }
        }
    }
}
