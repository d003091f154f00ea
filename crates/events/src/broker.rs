//! RabbitMQ connections that heal themselves.
//!
//! lapin does not reconnect; [`Broker`] keeps two connections per process, one for
//! publishing (the relay, the consumer's retries and dead letters) and one for
//! consuming, as RabbitMQ advises: under a memory or disk alarm the broker blocks
//! connections that publish, and a consumer on its own connection keeps receiving and
//! acknowledging meanwhile. Each is opened again (with the topology declared on it)
//! whenever it is gone, every wait bounded, and readiness is told whether they are up.
//! Publishers and consumers ask for channels and simply ask again after an error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::{Channel, Connection, ConnectionProperties};

use crate::catalog::Service;
use crate::topology::Topology;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Declaring every queue and binding of the topology on a fresh connection.
const DECLARE_TIMEOUT: Duration = Duration::from_secs(30);
/// Opening a channel (and putting it in confirm mode).
const CHANNEL_TIMEOUT: Duration = Duration::from_secs(5);

/// Which of the two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publish,
    Consume,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Publish => "publish",
            Role::Consume => "consume",
        }
    }
}

#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Slot {
    connection: Mutex<Option<Arc<Connection>>>,
    connecting: tokio::sync::Mutex<()>,
}

struct Inner {
    url: String,
    /// Where the publishing connection goes, when not to `url` (tests put a proxy there).
    publish_url: Option<String>,
    /// CA certificates (PEM) that `amqps://` trusts instead of the system's.
    tls_ca: Option<String>,
    name: String,
    topology: Topology,
    own: Option<Service>,
    publish: Slot,
    consume: Slot,
    /// Why publishing fails right now (set by the relay), for readiness.
    publish_problem: Mutex<Option<String>>,
}

fn timed_out(what: &str) -> lapin::Error {
    lapin::Error::IOError(Arc::new(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} timed out"),
    )))
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
                publish_url: None,
                tls_ca: None,
                name,
                topology,
                own,
                publish: Slot::default(),
                consume: Slot::default(),
                publish_problem: Mutex::new(None),
            }),
        }
    }

    /// Sends the publishing connection to `url` instead (a test's proxy). Call before
    /// anything connects.
    pub fn with_publish_url(self, url: impl Into<String>) -> Self {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| {
            panic!("with_publish_url on a broker handle that is shared already")
        });
        Self {
            inner: Arc::new(Inner {
                publish_url: Some(url.into()),
                ..inner
            }),
        }
    }

    /// Trusts `ca` (PEM) for `amqps://` (see `mp_common::tls`). Call before anything
    /// connects.
    pub fn with_tls_ca(self, ca: Option<String>) -> Self {
        let inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_tls_ca on a broker handle that is shared already"));
        Self {
            inner: Arc::new(Inner {
                tls_ca: ca,
                ..inner
            }),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    fn slot(&self, role: Role) -> &Slot {
        match role {
            Role::Publish => &self.inner.publish,
            Role::Consume => &self.inner.consume,
        }
    }

    fn current(&self, role: Role) -> Option<Arc<Connection>> {
        let guard = self
            .slot(role)
            .connection
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        guard.as_ref().filter(|c| c.status().connected()).cloned()
    }

    /// Records why publishing fails now (`None` once it works again).
    pub fn set_publish_problem(&self, problem: Option<String>) {
        *self
            .inner
            .publish_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = problem;
    }

    /// What keeps events from being published, if anything: the broker blocking the
    /// publishing connection (a memory or disk alarm), or the relay's last failure.
    pub fn publish_problem(&self) -> Option<String> {
        if self
            .current(Role::Publish)
            .is_some_and(|c| c.status().blocked())
        {
            return Some("the broker blocks publishers (resource alarm)".into());
        }
        self.inner
            .publish_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The live publishing connection, connecting (and declaring the topology) if
    /// there is none.
    pub async fn connection(&self) -> Result<Arc<Connection>, lapin::Error> {
        self.connection_for(Role::Publish).await
    }

    /// The live connection of `role`, connecting (and declaring the topology) if there
    /// is none. Every wait is bounded.
    pub async fn connection_for(&self, role: Role) -> Result<Arc<Connection>, lapin::Error> {
        if let Some(conn) = self.current(role) {
            return Ok(conn);
        }
        let slot = self.slot(role);
        let _one_at_a_time = slot.connecting.lock().await;
        if let Some(conn) = self.current(role) {
            return Ok(conn);
        }
        let url = match role {
            Role::Publish => self.inner.publish_url.as_ref().unwrap_or(&self.inner.url),
            Role::Consume => &self.inner.url,
        };
        let props = ConnectionProperties::default()
            .with_connection_name(format!("{}.{}", self.inner.name, role.as_str()).into())
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let connect = async {
            match &self.inner.tls_ca {
                Some(ca) if url.starts_with("amqps://") => {
                    let tls = lapin::tcp::OwnedTLSConfig {
                        identity: None,
                        cert_chain: Some(ca.clone()),
                    };
                    Connection::connect_with_config(url, props, tls).await
                }
                _ => Connection::connect(url, props).await,
            }
        };
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| timed_out("connecting to RabbitMQ"))??;
        tokio::time::timeout(
            DECLARE_TIMEOUT,
            self.inner.topology.declare(&conn, self.inner.own),
        )
        .await
        .map_err(|_| timed_out("declaring the topology"))??;
        let conn = Arc::new(conn);
        *slot.connection.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        tracing::info!(broker = %redact(url), role = role.as_str(), "connected to RabbitMQ");
        Ok(conn)
    }

    /// A new channel on the connection of `role`.
    pub async fn channel_for(&self, role: Role) -> Result<Channel, lapin::Error> {
        let conn = self.connection_for(role).await?;
        tokio::time::timeout(CHANNEL_TIMEOUT, conn.create_channel())
            .await
            .map_err(|_| timed_out("opening a channel"))?
    }

    /// A new channel on the consuming connection (consumers, passive declares, reads).
    pub async fn channel(&self) -> Result<Channel, lapin::Error> {
        self.channel_for(Role::Consume).await
    }

    /// A new channel in publisher-confirm mode on the publishing connection.
    pub async fn confirm_channel(&self) -> Result<Channel, lapin::Error> {
        let channel = self.channel_for(Role::Publish).await?;
        tokio::time::timeout(CHANNEL_TIMEOUT, channel.confirm_select(Default::default()))
            .await
            .map_err(|_| timed_out("confirm mode"))??;
        Ok(channel)
    }

    /// Closes both connections (at shutdown).
    pub async fn close(&self) {
        for role in [Role::Publish, Role::Consume] {
            let conn = self
                .slot(role)
                .connection
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(conn) = conn {
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), conn.close(200, "shutting down"))
                        .await;
            }
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
