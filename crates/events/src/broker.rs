//! A RabbitMQ connection that heals itself.
//!
//! lapin does not reconnect; [`Broker`] keeps one connection per process, opens a new one
//! (and declares the topology on it) whenever the old one is gone, and tells readiness
//! whether it is connected. Publishers and consumers ask it for channels and simply ask
//! again after an error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::{Channel, Connection, ConnectionProperties};

use crate::catalog::Service;
use crate::topology::Topology;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    name: String,
    topology: Topology,
    own: Option<Service>,
    connection: Mutex<Option<Arc<Connection>>>,
    connecting: tokio::sync::Mutex<()>,
    /// Why publishing fails right now (set by the relay), for readiness.
    publish_problem: Mutex<Option<String>>,
}

impl Broker {
    /// A broker handle; nothing connects until a channel is asked for.
    pub fn new(url: impl Into<String>, topology: Topology, own: Option<Service>) -> Self {
        // Named after prefix and service, so an operator (or a test) can find it.
        let name = format!(
            "{}.{}",
            topology.prefix,
            own.map_or("tool", Service::as_str)
        );
        Self {
            inner: Arc::new(Inner {
                url: url.into(),
                name,
                topology,
                own,
                connection: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                publish_problem: Mutex::new(None),
            }),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    fn current(&self) -> Option<Arc<Connection>> {
        let guard = self
            .inner
            .connection
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        guard.as_ref().filter(|c| c.status().connected()).cloned()
    }

    /// Whether the connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    /// Records why publishing fails now (`None` once it works again).
    pub fn set_publish_problem(&self, problem: Option<String>) {
        *self
            .inner
            .publish_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = problem;
    }

    /// What keeps events from being published, if anything: the broker blocking this
    /// connection (a memory or disk alarm), or the relay's last failure.
    pub fn publish_problem(&self) -> Option<String> {
        if self.current().is_some_and(|c| c.status().blocked()) {
            return Some("the broker blocks publishers (resource alarm)".into());
        }
        self.inner
            .publish_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The live connection, connecting (and declaring the topology) if there is none.
    pub async fn connection(&self) -> Result<Arc<Connection>, lapin::Error> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let _one_at_a_time = self.inner.connecting.lock().await;
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let props = ConnectionProperties::default()
            .with_connection_name(self.inner.name.clone().into())
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let conn =
            tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&self.inner.url, props))
                .await
                .map_err(|_| {
                    lapin::Error::IOError(Arc::new(std::io::ErrorKind::TimedOut.into()))
                })??;
        self.inner.topology.declare(&conn, self.inner.own).await?;
        let conn = Arc::new(conn);
        *self
            .inner
            .connection
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        tracing::info!(broker = %redact(&self.inner.url), "connected to RabbitMQ");
        Ok(conn)
    }

    /// A new channel on the live connection.
    pub async fn channel(&self) -> Result<Channel, lapin::Error> {
        self.connection().await?.create_channel().await
    }

    /// A new channel in publisher-confirm mode.
    pub async fn confirm_channel(&self) -> Result<Channel, lapin::Error> {
        let channel = self.channel().await?;
        channel.confirm_select(Default::default()).await?;
        Ok(channel)
    }

    /// Closes the connection (at shutdown).
    pub async fn close(&self) {
        let conn = self
            .inner
            .connection
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(conn) = conn {
            let _ = conn.close(200, "shutting down").await;
        }
    }
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}
