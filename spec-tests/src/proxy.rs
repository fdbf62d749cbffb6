//! A loopback TCP forwarder that counts the bytes clients send through it: what the server
//! behind it received, whatever the client reports. A push through it shows how much really
//! went up the wire. It can also cut the server's answers short, as a broken network would.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

/// A running forwarder on `127.0.0.1:<port>`. Stops accepting when dropped; connections still
/// open end when their client or server closes them.
pub struct CountingProxy {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    cut: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl CountingProxy {
    /// Forwards every connection made to a new loopback port to `target`.
    pub fn start(target: SocketAddr) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let received = Arc::new(AtomicU64::new(0));
        let cut = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (received, cut, stop) = (received.clone(), cut.clone(), stop.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let (Ok(client), Ok(server)) = (client, TcpStream::connect(target)) else {
                        continue;
                    };
                    forward(client, server, received.clone(), cut.load(Ordering::SeqCst));
                }
            })
        };
        CountingProxy {
            addr,
            received,
            cut,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:<port>`, the registry host for image references that go through the proxy.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The bytes clients have sent through the proxy since the last call; starts counting
    /// afresh.
    pub fn take_received(&self) -> u64 {
        self.received.swap(0, Ordering::SeqCst)
    }

    /// Connections made from now on carry at most `bytes` from the server (then both ends are
    /// closed mid-answer); `None` forwards everything again.
    pub fn cut_answers_after(&self, bytes: Option<u64>) {
        self.cut.store(bytes.unwrap_or(0), Ordering::SeqCst);
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocked accept so the thread sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Copies both ways between `client` and `server` on two threads, counting what the client
/// sends; with `cut` above 0, the server's bytes stop after that many and both ends close.
fn forward(client: TcpStream, server: TcpStream, received: Arc<AtomicU64>, cut: u64) {
    let pipe = |mut from: TcpStream, mut to: TcpStream, counter: Option<Arc<AtomicU64>>, limit: u64| {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            let mut left = if limit == 0 { u64::MAX } else { limit };
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Some(counter) = &counter {
                            counter.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        let n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
                        left -= n as u64;
                        if to.write_all(&buf[..n]).is_err() || left == 0 {
                            break;
                        }
                    }
                }
            }
            if left == 0 {
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
            } else {
                let _ = to.shutdown(Shutdown::Write);
            }
        });
    };
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    pipe(client, server, Some(received), 0);
    pipe(server2, client2, None, cut);
}
