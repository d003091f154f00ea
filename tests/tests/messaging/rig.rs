//! The rig every messaging test runs on: a scripted handler (`Recorder`), a schema and
//! queue prefix of the test's own, the relay and the consumer, and readings of effects,
//! deliveries, outcomes and dead letters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use mp_common::runtime::connect_db;
use mp_events::catalog::VendorCreated;
use mp_events::dlq;
use mp_events::{
    Broker, Consumer, Envelope, EventHandler, EventMetrics, HandlerError, Relay, Service,
};
use mp_test_support::{TestEnv, eventually};
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What the test handler should do with an event, keyed by the vendor name in it.
#[derive(Default)]
pub(crate) struct Script {
    /// Fail transiently this many times before succeeding.
    pub(crate) transient_failures: HashMap<String, u32>,
    /// Fail permanently.
    pub(crate) permanent: Vec<String>,
    /// Panic this many times before succeeding.
    pub(crate) panics: HashMap<String, u32>,
    /// Hang (longer than the handler timeout) this many times before succeeding.
    pub(crate) hangs: HashMap<String, u32>,
    /// Hold every handler this long (to measure concurrency).
    pub(crate) hold: Option<Duration>,
    running: usize,
    pub(crate) max_running: usize,
    /// When each delivery of an event reached the handler.
    seen: HashMap<String, Vec<Instant>>,
}

#[derive(Clone)]
pub(crate) struct Recorder(Arc<Mutex<Script>>);

#[async_trait]
impl EventHandler for Recorder {
    type Event = VendorCreated;
    const NAME: &'static str = "customer.vendor_membership";

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<VendorCreated>,
    ) -> Result<(), HandlerError> {
        let name = event.payload.name.clone();
        let (hang, hold) = {
            let mut script = self.0.lock().unwrap();
            script
                .seen
                .entry(name.clone())
                .or_default()
                .push(Instant::now());
            if script.permanent.contains(&name) {
                return Err(HandlerError::permanent(format!("{name} is poison")));
            }
            if let Some(n) = script.transient_failures.get_mut(&name).filter(|n| **n > 0) {
                *n -= 1;
                return Err(HandlerError::transient("dependency down"));
            }
            if let Some(n) = script.panics.get_mut(&name).filter(|n| **n > 0) {
                *n -= 1;
                drop(script);
                panic!("handler bug on {name}");
            }
            let hang = script.hangs.get_mut(&name).filter(|n| **n > 0).map(|n| {
                *n -= 1;
            });
            script.running += 1;
            script.max_running = script.max_running.max(script.running);
            (hang.is_some(), script.hold)
        };
        if hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if let Some(hold) = hold {
            tokio::time::sleep(hold).await;
        }
        self.0.lock().unwrap().running -= 1;
        sqlx::query("insert into effects (event_id, name) values ($1, $2)")
            .bind(event.id)
            .bind(&name)
            .execute(conn)
            .await?;
        Ok(())
    }
}

pub(crate) struct Rig {
    /// Kept for its drop: it removes the test's schemas and queues.
    _env: TestEnv,
    pub(crate) db: PgPool,
    pub(crate) broker: Broker,
    pub(crate) script: Arc<Mutex<Script>>,
    pub(crate) metrics: EventMetrics,
    pub(crate) shutdown: CancellationToken,
}

static NO_MIGRATIONS: Migrator = Migrator::DEFAULT;

impl Rig {
    pub(crate) async fn new() -> Self {
        Self::with_broker(|b| b).await
    }

    /// With the broker handle adjusted first (e.g. its publishing connection sent
    /// through a proxy).
    pub(crate) async fn with_broker(adjust: impl FnOnce(Broker) -> Broker) -> Self {
        let env = TestEnv::new().with_quorum_queues();
        let config = env.config(Service::Customer);
        let db = connect_db(&config, &env.schema(Service::Customer), &NO_MIGRATIONS)
            .await
            .unwrap();
        sqlx::query("create table effects (event_id uuid primary key, name text not null)")
            .execute(&db)
            .await
            .unwrap();
        let broker = adjust(Broker::new(
            config.amqp_url.clone(),
            config.topology(),
            Some(Service::Customer),
        ));
        broker.connection().await.unwrap();
        Self {
            _env: env,
            db,
            broker,
            script: Arc::default(),
            metrics: EventMetrics::unregistered(),
            shutdown: CancellationToken::new(),
        }
    }

    pub(crate) fn relay(&self) -> Relay {
        Relay::new(self.db.clone(), self.broker.clone(), self.metrics.clone())
    }

    pub(crate) fn start_relay(&self) {
        tokio::spawn(self.relay().run(self.shutdown.clone()));
    }

    pub(crate) fn start_consumer(&self) {
        self.start_consumer_with(|_| {});
    }

    pub(crate) fn start_consumer_with(&self, tune: impl FnOnce(&mut Consumer)) {
        self.start_consumer_on(self.db.clone(), tune);
    }

    /// A consumer whose handlers use `db` (e.g. a pool through a proxy).
    pub(crate) fn start_consumer_on(&self, db: PgPool, tune: impl FnOnce(&mut Consumer)) {
        let mut consumer = Consumer::new(
            Service::Customer,
            self.broker.clone(),
            db,
            self.metrics.clone(),
        )
        .handle(Recorder(self.script.clone()));
        tune(&mut consumer);
        tokio::spawn(std::sync::Arc::new(consumer).run(self.shutdown.clone()));
    }

    pub(crate) async fn dead_letters(&self) -> Vec<dlq::DeadLetter> {
        dlq::list(&self.broker, Service::Customer, 100)
            .await
            .unwrap()
    }

    /// Publishes raw bytes straight onto the exchange under `routing_key`.
    pub(crate) async fn publish_raw(&self, routing_key: &str, body: &[u8], message_id: &str) {
        let channel = self.broker.confirm_channel().await.unwrap();
        channel
            .basic_publish(
                &self.broker.topology().exchange(),
                routing_key,
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_message_id(message_id.into()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        channel.close(200, "published").await.unwrap();
    }

    pub(crate) async fn enqueue(&self, name: &str) -> Uuid {
        let mut tx = self.db.begin().await.unwrap();
        let id = mp_events::enqueue(&mut tx, Service::Vendor, vendor_created(name))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        id
    }

    pub(crate) async fn effects(&self, name: &str) -> i64 {
        sqlx::query_scalar("select count(*) from effects where name = $1")
            .bind(name)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Until every outbox row is marked sent. The relay marks a batch after the broker's
    /// confirm, which can come after the consumer handled it.
    pub(crate) async fn wait_outbox_drained(&self) {
        eventually("the outbox drained", Duration::from_secs(20), || async {
            let unsent: i64 =
                sqlx::query_scalar("select count(*) from outbox where published_at is null")
                    .fetch_one(&self.db)
                    .await
                    .unwrap();
            (unsent == 0).then_some(())
        })
        .await;
    }

    pub(crate) async fn wait_for_effect(&self, name: &str) {
        eventually(
            &format!("the effect of {name}"),
            Duration::from_secs(10),
            || async { (self.effects(name).await > 0).then_some(()) },
        )
        .await;
    }

    pub(crate) fn deliveries(&self, name: &str) -> Vec<Instant> {
        self.script
            .lock()
            .unwrap()
            .seen
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn outcome(&self, outcome: &str) -> u64 {
        self.metrics
            .consumed
            .with_label_values(&["vendor.created", Recorder::NAME, outcome])
            .get()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub(crate) fn vendor_created(name: &str) -> VendorCreated {
    VendorCreated {
        vendor_id: Uuid::now_v7(),
        owner_id: Uuid::now_v7(),
        name: name.into(),
        email: "v@example.org".into(),
        phone: None,
    }
}
