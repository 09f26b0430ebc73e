//! A TCP relay in front of a real Redis that can black-hole its connections.
//!
//! Killing Redis closes its sockets, which clients notice at once. The nastier
//! failure is a connection that just goes silent: the server host died, a NAT
//! or load balancer forgot the flow, Redis failed over behind a virtual IP.
//! The client's socket stays open and nothing ever answers. [`Blackhole::cut`]
//! does exactly that to every connection open at that moment (no FIN, no RST,
//! no bytes), while new connections go through normally, as they would to the
//! new server after a failover.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A relay from a local port to `upstream`; see the module docs.
#[derive(Debug)]
pub struct Blackhole {
    addr: SocketAddr,
    /// Connections numbered below this are cut.
    cut_below: watch::Sender<u64>,
    next: Arc<AtomicU64>,
    accept: JoinHandle<()>,
    /// Cut connections, kept open so their peers see silence, not a close.
    graveyard: Arc<Mutex<Vec<(TcpStream, TcpStream)>>>,
}

impl Blackhole {
    /// Start relaying 127.0.0.1:<some port> to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut_below, cut_rx) = watch::channel(0u64);
        let next = Arc::new(AtomicU64::new(0));
        let graveyard = Arc::new(Mutex::new(Vec::new()));
        let (n, g) = (next.clone(), graveyard.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let number = n.fetch_add(1, Ordering::SeqCst);
                let (mut cut, graveyard) = (cut_rx.clone(), g.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return; // upstream down: dropping the client closes it, like a refused connect
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut client, mut server) = (client, server);
                    let is_cut = |below: u64| number < below;
                    if is_cut(*cut.borrow()) {
                        graveyard.lock().expect("graveyard").push((client, server));
                        return;
                    }
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|below| is_cut(*below)) => {
                            graveyard.lock().expect("graveyard").push((client, server));
                        }
                    }
                });
            }
        });
        Ok(Self { addr, cut_below, next, accept, graveyard })
    }

    /// The relay's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://` URL of the relay.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Silence every connection open now, for good; later ones go through.
    /// Returns how many connections had been opened so far.
    pub fn cut(&self) -> u64 {
        let below = self.next.load(Ordering::SeqCst);
        self.cut_below.send_replace(below);
        below
    }

    /// Connections opened through the relay so far.
    pub fn connections(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    /// Connections cut and held open.
    pub fn silenced(&self) -> usize {
        self.graveyard.lock().expect("graveyard").len()
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
