//! The module's SNTP client: after `AT+CIPSNTPCFG=1,...` and a Wi-Fi connection it asks the
//! configured servers (through the board's network: hosts table, port redirects) until one
//! answers, sets the board clock and prints `+TIME_UPDATED`.
//!
//! The request and answer are written by hand: an SNTP client request is one 48-byte packet
//! and the answer's transmit timestamp one field (RFC 4330 §4), less code than adapting an
//! async SNTP crate to this blocking thread.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::console::Console;
use crate::personality::{Defect, LogLevel, Shared};

const NTP_PORT: u16 = 123;
/// Seconds from 1900 (NTP era 0) to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
const ATTEMPTS: u32 = 30;
const ANSWER_TIMEOUT: Duration = Duration::from_millis(500);
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// A running SNTP client; dropping it stops the thread.
pub struct SntpClient {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SntpClient {
    pub fn start(servers: Vec<String>, shared: Arc<Shared>, console: Console) -> SntpClient {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || sync(&servers, &shared, &console, &stop))
        };
        SntpClient {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SntpClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sync(servers: &[String], shared: &Shared, console: &Console, stop: &AtomicBool) {
    if shared.has_defect(|d| *d == Defect::NoSntpWait).is_some() {
        // The defect: report the time as synced without waiting for an answer.
        console.at(b"+TIME_UPDATED\r\n".to_vec());
        return;
    }
    for _ in 0..ATTEMPTS {
        for server in servers {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            if let Some(now) = ask(server, shared) {
                shared.set_clock(now);
                console.log(
                    LogLevel::Info,
                    "sntp",
                    "Time is synchronized from SNTP server",
                );
                console.at(b"+TIME_UPDATED\r\n".to_vec());
                return;
            }
        }
        let deadline = std::time::Instant::now() + shared.scaled(RETRY_EVERY);
        while std::time::Instant::now() < deadline {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One request/answer exchange; `None` on no or a malformed answer.
fn ask(server: &str, shared: &Shared) -> Option<SystemTime> {
    let addr = shared.network().resolve(server, NTP_PORT)?;
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket
        .set_read_timeout(Some(shared.scaled_network(ANSWER_TIMEOUT)))
        .ok()?;
    let mut request = [0u8; 48];
    request[0] = 0x23; // LI 0, version 4, mode 3 (client)
    socket.send_to(&request, addr).ok()?;
    let mut answer = [0u8; 48];
    let (n, from) = socket.recv_from(&mut answer).ok()?;
    // Mode 4 (server), from whom we asked, with a transmit timestamp.
    if n < 48 || from != addr || answer[0] & 0x07 != 4 {
        return None;
    }
    let seconds = u64::from(u32::from_be_bytes([
        answer[40], answer[41], answer[42], answer[43],
    ]));
    let fraction = u64::from(u32::from_be_bytes([
        answer[44], answer[45], answer[46], answer[47],
    ]));
    let unix = seconds.checked_sub(NTP_UNIX_OFFSET)?;
    let nanos = (fraction * 1_000_000_000) >> 32;
    Some(UNIX_EPOCH + Duration::from_secs(unix) + Duration::from_nanos(nanos))
}
