//! A TCP proxy between clawbox and the fake WhatsApp server, for the link-failure figures: `Up`
//! forwards bytes both ways, `Down` cuts every live connection and closes new ones at once (a link
//! that is down and refuses), and it records when the client side of a connection closed (the
//! moment clawbox gave a link up). Owns only byte copying; never parses what it forwards.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// Bytes read per copy step: WhatsApp frames are small; this bounds the proxy's memory per link.
const COPY_BUFFER: usize = 16 * 1024;
/// Client-close timestamps kept; a bench run has a few dozen connections.
const MAX_CLOSES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Up,
    Down,
}

pub struct Proxy {
    addr: SocketAddr,
    link: watch::Sender<Link>,
    closes: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (link, _) = watch::channel(Link::Up);
        let closes: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let (l, c) = (link.clone(), closes.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let mut rx = l.subscribe();
                if *rx.borrow_and_update() == Link::Down {
                    drop(client);
                    continue;
                }
                let c = c.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async {
                        let mut buf = vec![0u8; COPY_BUFFER];
                        loop {
                            match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => {
                                    let mut v = c.lock().unwrap_or_else(|e| e.into_inner());
                                    if v.len() < MAX_CLOSES {
                                        v.push(Instant::now());
                                    }
                                    return;
                                }
                                Ok(n) => {
                                    if sw.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    };
                    let down = async {
                        let mut buf = vec![0u8; COPY_BUFFER];
                        loop {
                            match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if cw.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    };
                    let cut = async {
                        let _ = rx.wait_for(|l| *l == Link::Down).await;
                    };
                    // Whichever ends first ends the link: both halves are dropped together.
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                        _ = cut => {}
                    }
                });
            }
        });
        Ok(Proxy {
            addr,
            link,
            closes,
            task,
        })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/chat", self.addr)
    }

    pub fn set(&self, l: Link) {
        self.link.send_replace(l);
    }

    /// The first time after `t` the client side of a connection closed.
    pub fn client_closed_after(&self, t: Instant) -> Option<Instant> {
        let v = self.closes.lock().unwrap_or_else(|e| e.into_inner());
        v.iter().copied().find(|c| *c > t)
    }
}
