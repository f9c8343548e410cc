//! The module's single TCP or SSL connection (`AT+CIPSTART`): connected synchronously, then
//! served by a thread that prints what arrives as `+IPD,<len>:<data>` and the peer's close as
//! `CLOSED` on the AT port, and writes what `AT+CIPSEND` hands it.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::console::Console;
use super::costs;
use super::engine::SocketOpen;
use super::tls::{self, ConnectFailed, Credentials, Transport};
use crate::personality::{LogLevel, Shared};

/// esp-tls's default connect timeout, used by `AT+CIPSTART`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the serving thread waits for data before looking at its queue again.
const POLL: Duration = Duration::from_millis(20);
/// How long `AT+CIPSEND` waits for its data to be written.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What the connection needs from the board.
pub struct SocketEnv {
    pub shared: Arc<Shared>,
    pub console: Console,
    pub credentials: Credentials,
}

/// Data to write, and where to say whether it was written.
type Outgoing = (Vec<u8>, Sender<bool>);

/// An open connection and its serving thread; dropping it closes the connection.
pub struct SocketClient {
    outgoing: Sender<Outgoing>,
    open: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SocketClient {
    /// Resolves, allocates, connects and (for SSL) handshakes; every failure is logged as
    /// the firmware logs it.
    pub fn open(request: &SocketOpen, env: SocketEnv) -> Result<SocketClient, ConnectFailed> {
        let console = env.console.clone();
        let log = |level, tag: &str, message: &str| console.log_letter(level, tag, message);
        let Some(addr) = env.shared.network().resolve(&request.host, request.port) else {
            log(
                'E',
                "esp-tls",
                &format!(
                    "couldn't get hostname for :{}: getaddrinfo() returns 202, addrinfo=0x0",
                    request.host
                ),
            );
            return Err(ConnectFailed);
        };
        let cost = if request.tls { costs::TLS_SESSION } else { 0 };
        if let Err(e) = env.shared.alloc(cost) {
            log(
                'E',
                "at",
                &format!(
                    "alloc failed, size:{}, caps:0x{:x}",
                    e.wanted,
                    costs::DEFAULT_CAPS
                ),
            );
            log('E', "esp-tls-mbedtls", "mbedtls_ssl_setup returned -0x7F00");
            return Err(ConnectFailed);
        }
        let transport = connect(request, &env, addr, &log);
        let transport = match transport {
            Ok(transport) => transport,
            Err(e) => {
                env.shared.free(cost);
                return Err(e);
            }
        };
        let (outgoing, queue) = mpsc::channel();
        let open = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let serving = Serving {
            open: open.clone(),
            stop: stop.clone(),
            queue,
            console: env.console.clone(),
        };
        let shared = env.shared.clone();
        let thread = std::thread::Builder::new()
            .name("at-socket".into())
            .spawn(move || {
                serving.run(transport);
                shared.free(cost);
            })
            .map_err(|_| ConnectFailed)?;
        Ok(SocketClient {
            outgoing,
            open,
            stop,
            thread: Some(thread),
        })
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// Writes `data`; false when the connection is gone or the write failed.
    pub fn send(&self, data: &[u8]) -> bool {
        let (reply, written) = mpsc::channel();
        self.is_open()
            && self.outgoing.send((data.to_vec(), reply)).is_ok()
            && written.recv_timeout(SEND_TIMEOUT) == Ok(true)
    }
}

impl Drop for SocketClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn connect(
    request: &SocketOpen,
    env: &SocketEnv,
    addr: std::net::SocketAddr,
    log: &dyn Fn(char, &str, &str),
) -> Result<Transport, ConnectFailed> {
    let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| {
        log(
            'E',
            "esp-tls",
            &format!("[sock=54] delayed connect error: {e}"),
        );
        log('E', "esp-tls", "Failed to open new connection");
        ConnectFailed
    })?;
    let _ = tcp.set_nodelay(true);
    if !request.tls {
        return Ok(Transport::Plain(tcp));
    }
    // The name checked: what AT+CIPSSLCSNI set, else the host as given.
    let name = request.sni.as_deref().unwrap_or(&request.host);
    let setup = tls::ClientSetup {
        credentials: &env.credentials,
        verify_server: request.verifies_server(),
        alpn: &[],
        name,
    };
    tls::connect(&env.shared, tcp, &setup, CONNECT_TIMEOUT, log)
}

/// The serving thread's side.
struct Serving {
    open: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    queue: Receiver<Outgoing>,
    console: Console,
}

impl Serving {
    /// Until the peer closes, an error, or `AT+CIPCLOSE` / a restart (the stop flag).
    fn run(&self, mut transport: Transport) {
        let _ = transport.tcp().set_read_timeout(Some(POLL));
        let mut buf = [0u8; 2048];
        let peer_closed = loop {
            if self.stop.load(Ordering::SeqCst) {
                transport.close();
                break false;
            }
            while let Ok((data, reply)) = self.queue.try_recv() {
                let written = transport.write_all(&data).and_then(|()| transport.flush());
                let _ = reply.send(written.is_ok());
            }
            match transport.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    let mut line = format!("\r\n+IPD,{n}:").into_bytes();
                    line.extend_from_slice(&buf[..n]);
                    self.console.at(line);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => {
                    self.console
                        .log(LogLevel::Error, "esp-tls", &format!("read error :{e}"));
                    break true;
                }
            }
        };
        self.open.store(false, Ordering::SeqCst);
        if peer_closed {
            self.console.at(b"CLOSED\r\n".to_vec());
        }
    }
}
