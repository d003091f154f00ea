//! A TCP proxy that a test can pause or cut, without touching the real server that
//! other tests share:
//!
//! * paused, it accepts connections and reads nothing, forwards nothing, so the peer sees
//!   a server that stopped answering (as RabbitMQ does to publishers during a resource
//!   alarm);
//! * cut, it drops every connection it carries and refuses new ones at once, so the peer
//!   sees a server that is down (PostgreSQL restarted, a network partition).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Paused,
    Cut,
}

pub struct PausableProxy {
    pub addr: SocketAddr,
    state: watch::Sender<State>,
    task: tokio::task::JoinHandle<()>,
}

impl PausableProxy {
    /// Listens on a free local port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (state, watch) = watch::channel(State::Open);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *watch.borrow() == State::Cut {
                    drop(client);
                    continue;
                }
                let watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, watch.clone()), pipe(sr, cw, watch),);
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn pause(&self) {
        self.state.send_replace(State::Paused);
    }

    /// Drops every connection and refuses new ones until [`resume`](Self::resume).
    pub fn cut(&self) {
        self.state.send_replace(State::Cut);
    }

    pub fn resume(&self) {
        self.state.send_replace(State::Open);
    }
}

impl Drop for PausableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<State>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Waits out a pause; a cut ends the connection.
        let open = |s: &State| *s != State::Paused;
        match state.wait_for(open).await {
            Ok(s) if *s == State::Cut => return,
            Ok(_) => {}
            Err(_) => return,
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = state.wait_for(|s| *s == State::Cut) => return,
        };
        // Bytes read just before a pause are held until it ends.
        match state.wait_for(open).await {
            Ok(s) if *s == State::Cut => return,
            Ok(_) => {}
            Err(_) => return,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
