//! The messaging backbone under failure: outbox atomicity, relay crashes, competing
//! relays, retries with backoff, poison messages and redrive. Real PostgreSQL and
//! RabbitMQ; each test has its own schema and queue prefix.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use mp_common::runtime::connect_db;
use mp_events::catalog::VendorCreated;
use mp_events::dlq::{self, Selection};
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
struct Script {
    /// Fail transiently this many times before succeeding.
    transient_failures: HashMap<String, u32>,
    /// Fail permanently.
    permanent: Vec<String>,
    /// When each delivery of an event reached the handler.
    seen: HashMap<String, Vec<Instant>>,
}

#[derive(Clone)]
struct Recorder(Arc<Mutex<Script>>);

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
        {
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
        }
        sqlx::query("insert into effects (event_id, name) values ($1, $2)")
            .bind(event.id)
            .bind(&name)
            .execute(conn)
            .await?;
        Ok(())
    }
}

struct Rig {
    env: TestEnv,
    db: PgPool,
    broker: Broker,
    script: Arc<Mutex<Script>>,
    metrics: EventMetrics,
    shutdown: CancellationToken,
}

static NO_MIGRATIONS: Migrator = Migrator::DEFAULT;

impl Rig {
    async fn new() -> Self {
        let env = TestEnv::new().with_quorum_queues();
        let config = env.config(Service::Customer);
        let db = connect_db(&config, &env.schema(Service::Customer), &NO_MIGRATIONS)
            .await
            .unwrap();
        sqlx::query("create table effects (event_id uuid primary key, name text not null)")
            .execute(&db)
            .await
            .unwrap();
        let broker = Broker::new(
            config.amqp_url.clone(),
            config.topology(),
            Some(Service::Customer),
        );
        broker.connection().await.unwrap();
        Self {
            env,
            db,
            broker,
            script: Arc::default(),
            metrics: EventMetrics::unregistered(),
            shutdown: CancellationToken::new(),
        }
    }

    fn relay(&self) -> Relay {
        Relay::new(
            self.db.clone(),
            self.broker.clone(),
            self.env.schema(Service::Customer),
            self.metrics.clone(),
        )
    }

    fn start_relay(&self) {
        tokio::spawn(self.relay().run(self.shutdown.clone()));
    }

    fn start_consumer(&self) {
        let consumer = Consumer::new(
            Service::Customer,
            self.broker.clone(),
            self.db.clone(),
            self.metrics.clone(),
        )
        .handle(Recorder(self.script.clone()));
        tokio::spawn(std::sync::Arc::new(consumer).run(self.shutdown.clone()));
    }

    async fn enqueue(&self, name: &str) -> Uuid {
        let mut tx = self.db.begin().await.unwrap();
        let id = mp_events::enqueue(&mut tx, Service::Vendor, vendor_created(name))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        id
    }

    async fn effects(&self, name: &str) -> i64 {
        sqlx::query_scalar("select count(*) from effects where name = $1")
            .bind(name)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    async fn wait_for_effect(&self, name: &str) {
        eventually(
            &format!("the effect of {name}"),
            Duration::from_secs(10),
            || async { (self.effects(name).await > 0).then_some(()) },
        )
        .await;
    }

    fn deliveries(&self, name: &str) -> Vec<Instant> {
        self.script
            .lock()
            .unwrap()
            .seen
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    fn outcome(&self, outcome: &str) -> u64 {
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

fn vendor_created(name: &str) -> VendorCreated {
    VendorCreated {
        vendor_id: Uuid::now_v7(),
        owner_id: Uuid::now_v7(),
        name: name.into(),
        email: "v@example.org".into(),
        phone: None,
    }
}

#[tokio::test]
async fn an_event_is_published_when_its_transaction_commits_and_never_when_it_rolls_back() {
    let rig = Rig::new().await;
    rig.start_relay();
    rig.start_consumer();

    let mut tx = rig.db.begin().await.unwrap();
    mp_events::enqueue(&mut tx, Service::Vendor, vendor_created("rolled-back"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    rig.enqueue("committed").await;

    rig.wait_for_effect("committed").await;
    // The committed event went out after the rolled-back one would have: give any stray
    // delivery the same time again, then check it never came.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rig.effects("rolled-back").await, 0);
    assert!(rig.deliveries("rolled-back").is_empty());
    let unsent: i64 = sqlx::query_scalar("select count(*) from outbox where published_at is null")
        .fetch_one(&rig.db)
        .await
        .unwrap();
    assert_eq!(unsent, 0);
}

#[tokio::test]
async fn a_relay_that_dies_after_publishing_causes_a_duplicate_that_the_inbox_absorbs() {
    let rig = Rig::new().await;
    rig.start_consumer();
    let id = rig.enqueue("crash").await;

    // A relay claims and publishes, then dies before marking the row sent.
    let relay = rig.relay();
    let channel = rig.broker.confirm_channel().await.unwrap();
    let rows = Relay::claim(&rig.db, 10, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    relay.publish(&channel, &rows).await.unwrap();
    // While its claim lasts, no other relay takes the row.
    assert!(
        Relay::claim(&rig.db, 10, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );

    // Once the lease is over, the next relay publishes the row again.
    rig.start_relay();
    eventually("the second delivery", Duration::from_secs(10), || async {
        (rig.outcome("duplicate") == 1).then_some(())
    })
    .await;
    assert_eq!(rig.deliveries("crash").len(), 1, "the handler ran once");
    assert_eq!(rig.effects("crash").await, 1);
    let inbox: i64 = sqlx::query_scalar("select count(*) from inbox where event_id = $1")
        .bind(id)
        .fetch_one(&rig.db)
        .await
        .unwrap();
    assert_eq!(inbox, 1);
}

#[tokio::test]
async fn two_relays_never_publish_the_same_row() {
    let rig = Rig::new().await;
    rig.start_consumer();
    let mut tx = rig.db.begin().await.unwrap();
    for i in 0..300 {
        mp_events::enqueue(
            &mut tx,
            Service::Vendor,
            vendor_created(&format!("bulk-{i}")),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    let (mut a, mut b) = (rig.relay(), rig.relay());
    a.settings.batch_size = 7;
    b.settings.batch_size = 7;
    tokio::spawn(a.run(rig.shutdown.clone()));
    tokio::spawn(b.run(rig.shutdown.clone()));

    eventually(
        "all 300 events handled",
        Duration::from_secs(20),
        || async {
            let n: i64 = sqlx::query_scalar("select count(*) from effects")
                .fetch_one(&rig.db)
                .await
                .unwrap();
            (n == 300).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rig.outcome("duplicate"), 0, "no row was published twice");
    assert_eq!(rig.outcome("ok"), 300);
    assert_eq!(rig.metrics.outbox_published.get(), 300);
}

#[tokio::test]
async fn a_transient_failure_is_retried_with_growing_backoff_and_then_succeeds() {
    let rig = Rig::new().await;
    rig.script
        .lock()
        .unwrap()
        .transient_failures
        .insert("flaky".into(), 2);
    rig.start_relay();
    rig.start_consumer();
    rig.enqueue("flaky").await;

    rig.wait_for_effect("flaky").await;
    let seen = rig.deliveries("flaky");
    assert_eq!(seen.len(), 3);
    // Retry delays in tests are 50 ms, then 100 ms.
    assert!(
        seen[1] - seen[0] >= Duration::from_millis(50),
        "{:?}",
        seen[1] - seen[0]
    );
    assert!(
        seen[2] - seen[1] >= Duration::from_millis(100),
        "{:?}",
        seen[2] - seen[1]
    );
    assert_eq!(rig.outcome("retried"), 2);
    assert_eq!(rig.effects("flaky").await, 1);
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_with_their_reason_without_blocking_the_queue_and_can_be_redriven()
 {
    let rig = Rig::new().await;
    rig.script.lock().unwrap().permanent.push("poison".into());
    rig.script
        .lock()
        .unwrap()
        .transient_failures
        .insert("hopeless".into(), 100);
    rig.start_relay();
    rig.start_consumer();

    // Garbage straight onto the exchange, then a failing event, then good ones.
    let channel = rig.broker.confirm_channel().await.unwrap();
    let topology = rig.broker.topology();
    channel
        .basic_publish(
            &topology.exchange(),
            "vendor.created",
            BasicPublishOptions::default(),
            b"this is not json",
            BasicProperties::default().with_message_id("garbage-1".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let poison = rig.enqueue("poison").await;
    rig.enqueue("hopeless").await;
    rig.enqueue("healthy").await;

    rig.wait_for_effect("healthy").await;
    let letters = eventually("three dead letters", Duration::from_secs(10), || async {
        let letters = dlq::list(&rig.broker, Service::Customer, 10).await.unwrap();
        (letters.len() == 3).then_some(letters)
    })
    .await;
    let by_id = |id: &str| {
        letters
            .iter()
            .find(|l| l.message_id.as_deref() == Some(id))
            .expect(id)
    };
    assert!(
        by_id("garbage-1")
            .reason
            .as_deref()
            .unwrap()
            .starts_with("malformed envelope")
    );
    let p = by_id(&poison.to_string());
    assert_eq!(p.reason.as_deref(), Some("poison is poison"));
    assert_eq!(p.handler.as_deref(), Some(Recorder::NAME));
    assert_eq!(p.event_type.as_deref(), Some("vendor.created"));
    let hopeless = letters
        .iter()
        .find(|l| l.body["payload"]["name"] == "hopeless")
        .unwrap();
    assert_eq!(hopeless.attempts, topology.max_attempts());
    assert!(
        hopeless
            .reason
            .as_deref()
            .unwrap()
            .contains("gave up after 4 attempts"),
        "{:?}",
        hopeless.reason
    );
    // Listing left them in place.
    assert_eq!(
        dlq::list(&rig.broker, Service::Customer, 10)
            .await
            .unwrap()
            .len(),
        3
    );

    // The cause is fixed; the operator redrives the poison event only.
    rig.script.lock().unwrap().permanent.clear();
    let report = dlq::redrive(
        &rig.broker,
        Service::Customer,
        &Selection::MessageId(poison.to_string()),
        Duration::from_secs(3600),
        false,
    )
    .await
    .unwrap();
    assert_eq!(report.redriven, 1);
    rig.wait_for_effect("poison").await;
    assert_eq!(
        dlq::list(&rig.broker, Service::Customer, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}
