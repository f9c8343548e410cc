//! One run per board: an advisory lock file per board id (std's `File::try_lock`, released by
//! the OS when the holder exits, however it exits) holding the holder's pid, beside serialport's
//! exclusive open of the ports themselves.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

/// Environment variable naming the lock directory (default: `$XDG_RUNTIME_DIR/sparring/locks`,
/// else the user's cache directory).
pub const ENV_VAR: &str = "SPARRING_LOCK_DIR";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "board {board} is in use by another sparring run (pid {holder}); wait for it, or pass --wait-for-boards"
    )]
    Busy { board: String, holder: String },
    #[error("board {board}: lock file {path}: {source}")]
    Io {
        board: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held while the run uses the board; dropping it releases the board.
#[derive(Debug)]
pub struct BoardLock {
    _file: File,
}

fn lock_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(ENV_VAR) {
        return PathBuf::from(dir);
    }
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(runtime).join("sparring").join("locks");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("sparring").join("locks")
}

/// Takes the board, or fails at once naming the holder; with `wait`, blocks until it is free
/// (calling `waiting` once with the holder's pid first).
pub fn acquire(
    board: &str,
    wait: bool,
    waiting: &mut dyn FnMut(&str),
) -> Result<BoardLock, LockError> {
    let dir = lock_dir();
    let path = dir.join(format!("{board}.lock"));
    let io = |source| LockError::Io {
        board: board.to_owned(),
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim().to_owned();
            if !wait {
                return Err(LockError::Busy {
                    board: board.to_owned(),
                    holder,
                });
            }
            waiting(&holder);
            file.lock().map_err(io)?;
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(BoardLock { _file: file })
}
