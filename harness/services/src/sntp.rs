//! An SNTP server (RFC 4330) answering with the host clock plus a configured skew — a clock
//! two years ahead, a day behind — or not answering at all, as a dead time server.
//!
//! Written by hand: a server is 48 bytes in, 48 bytes out, and the few SNTP crates are
//! clients; what matters here is lying about the time on purpose.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;

use crate::events::{EventBus, EventKind};

/// Seconds from the NTP era (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: i64 = 2_208_988_800;
const PACKET_LEN: usize = 48;

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SntpConfig {
    /// Added to the host clock, in seconds (negative: behind).
    pub skew_seconds: i64,
    /// Never answer (requests are still recorded).
    pub silent: bool,
}

// The record type lives with the other events; services depend on events, not the reverse.
pub use crate::events::SntpRecord;

/// A running SNTP server.
pub struct SntpServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SntpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SntpServer {
    /// Stops the server and waits until its socket is closed, so the port can be bound again
    /// at once (a lab's fixed SNTP port, scenario after scenario).
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    pub async fn start(
        bind: SocketAddr,
        config: SntpConfig,
        events: EventBus,
    ) -> std::io::Result<SntpServer> {
        let socket = UdpSocket::bind(bind).await?;
        let addr = socket.local_addr()?;
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Some(reply) = answer(&buf[..len], config) else {
                    continue;
                };
                let answered = !config.silent;
                if answered {
                    let _ = socket.send_to(&reply, peer).await;
                }
                events.emit(
                    "sntp",
                    peer,
                    EventKind::Sntp(SntpRecord {
                        answered,
                        skew_seconds: config.skew_seconds,
                    }),
                );
            }
        });
        Ok(SntpServer { addr, task })
    }
}

/// The reply to a client request (mode 3), or `None` for anything else.
fn answer(request: &[u8], config: SntpConfig) -> Option<[u8; PACKET_LEN]> {
    if request.len() < PACKET_LEN || request[0] & 0x07 != 3 {
        return None;
    }
    let version = (request[0] >> 3) & 0x07;
    let now = time::OffsetDateTime::now_utc();
    let seconds = now.unix_timestamp() + NTP_UNIX_OFFSET + config.skew_seconds;
    let fraction = ((u64::from(now.nanosecond()) << 32) / 1_000_000_000) as u32;
    let timestamp = ((seconds as u32 as u64) << 32) | u64::from(fraction);
    let mut reply = [0u8; PACKET_LEN];
    reply[0] = (version << 3) | 4; // no leap warning, client's version, mode 4 (server)
    reply[1] = 1; // stratum 1: a primary reference
    reply[2] = request[2]; // poll interval, echoed
    reply[3] = 0xEC; // precision ~ 2^-20 s
    reply[12..16].copy_from_slice(b"SPAR"); // reference id
    reply[16..24].copy_from_slice(&timestamp.to_be_bytes()); // reference
    reply[24..32].copy_from_slice(&request[40..48]); // originate = client's transmit
    reply[32..40].copy_from_slice(&timestamp.to_be_bytes()); // receive
    reply[40..48].copy_from_slice(&timestamp.to_be_bytes()); // transmit
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_client_requests_only_with_the_skewed_time() {
        let mut request = [0u8; PACKET_LEN];
        request[0] = (4 << 3) | 3;
        request[40..48].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let skew = 2 * 365 * 86_400;
        let reply = answer(
            &request,
            SntpConfig {
                skew_seconds: skew,
                silent: false,
            },
        )
        .unwrap();
        assert_eq!(reply[0] & 0x07, 4);
        assert_eq!(&reply[24..32], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let seconds = i64::from(u32::from_be_bytes([
            reply[40], reply[41], reply[42], reply[43],
        ]));
        let expected = time::OffsetDateTime::now_utc().unix_timestamp() + NTP_UNIX_OFFSET + skew;
        assert!(
            (seconds - (expected as u32 as i64)).abs() <= 2,
            "{seconds} vs {expected}"
        );
        request[0] = (4 << 3) | 4; // a server packet is not a request
        assert!(
            answer(
                &request,
                SntpConfig {
                    skew_seconds: 0,
                    silent: false
                }
            )
            .is_none()
        );
        assert!(
            answer(
                &request[..10],
                SntpConfig {
                    skew_seconds: 0,
                    silent: false
                }
            )
            .is_none()
        );
    }
}
