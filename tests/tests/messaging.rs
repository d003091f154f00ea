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
    /// Panic this many times before succeeding.
    panics: HashMap<String, u32>,
    /// Hang (longer than the handler timeout) this many times before succeeding.
    hangs: HashMap<String, u32>,
    /// Hold every handler this long (to measure concurrency).
    hold: Option<Duration>,
    running: usize,
    max_running: usize,
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

struct Rig {
    /// Kept for its drop: it removes the test's schemas and queues.
    _env: TestEnv,
    db: PgPool,
    broker: Broker,
    script: Arc<Mutex<Script>>,
    metrics: EventMetrics,
    shutdown: CancellationToken,
}

static NO_MIGRATIONS: Migrator = Migrator::DEFAULT;

impl Rig {
    async fn new() -> Self {
        Self::with_broker(|b| b).await
    }

    /// With the broker handle adjusted first (e.g. its publishing connection sent
    /// through a proxy).
    async fn with_broker(adjust: impl FnOnce(Broker) -> Broker) -> Self {
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

    fn relay(&self) -> Relay {
        Relay::new(self.db.clone(), self.broker.clone(), self.metrics.clone())
    }

    fn start_relay(&self) {
        tokio::spawn(self.relay().run(self.shutdown.clone()));
    }

    fn start_consumer(&self) {
        self.start_consumer_with(|_| {});
    }

    fn start_consumer_with(&self, tune: impl FnOnce(&mut Consumer)) {
        self.start_consumer_on(self.db.clone(), tune);
    }

    /// A consumer whose handlers use `db` (e.g. a pool through a proxy).
    fn start_consumer_on(&self, db: PgPool, tune: impl FnOnce(&mut Consumer)) {
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

    async fn dead_letters(&self) -> Vec<dlq::DeadLetter> {
        dlq::list(&self.broker, Service::Customer, 100)
            .await
            .unwrap()
    }

    /// Publishes raw bytes straight onto the exchange under `routing_key`.
    async fn publish_raw(&self, routing_key: &str, body: &[u8], message_id: &str) {
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

    /// Until every outbox row is marked sent. The relay marks a batch after the broker's
    /// confirm, which can come after the consumer handled it.
    async fn wait_outbox_drained(&self) {
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
    // A later event as a positive marker: the relay publishes in outbox order, so once
    // the marker is handled, anything written before it would have been too.
    rig.enqueue("marker").await;
    rig.wait_for_effect("marker").await;
    assert_eq!(rig.effects("rolled-back").await, 0);
    assert!(rig.deliveries("rolled-back").is_empty());
    rig.wait_outbox_drained().await;
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
    // A later event as a positive marker instead of a pause: once it is handled and
    // nothing is left unsent, both relays have gone past every bulk row.
    rig.enqueue("marker").await;
    rig.wait_for_effect("marker").await;
    rig.wait_outbox_drained().await;
    // The consumer counts an event after its transaction commits, so the marker's
    // effect can be visible a moment before its count: wait for the count.
    eventually(
        "the bulk and the marker counted",
        Duration::from_secs(20),
        || async { (rig.outcome("ok") > 300).then_some(()) },
    )
    .await;
    assert_eq!(rig.outcome("duplicate"), 0, "no row was published twice");
    assert_eq!(
        rig.outcome("ok"),
        300 + 1,
        "the bulk and the marker, once each"
    );
    // A relay counts a batch right after marking it sent: wait for the count too.
    eventually(
        "the published rows counted",
        Duration::from_secs(20),
        || async { (rig.metrics.outbox_published.get() > 300).then_some(()) },
    )
    .await;
    assert_eq!(rig.metrics.outbox_published.get(), 300 + 1);
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

#[tokio::test]
async fn a_handler_that_panics_or_hangs_is_retried_and_its_delivery_never_leaks() {
    let rig = Rig::new().await;
    {
        let mut script = rig.script.lock().unwrap();
        script.panics.insert("panicky".into(), 1);
        script.hangs.insert("stuck".into(), 1);
    }
    rig.start_relay();
    rig.start_consumer_with(|c| c.handler_timeout = Duration::from_millis(500));
    rig.enqueue("panicky").await;
    rig.enqueue("stuck").await;

    rig.wait_for_effect("panicky").await;
    rig.wait_for_effect("stuck").await;
    assert_eq!(
        rig.deliveries("panicky").len(),
        2,
        "a panic is retried once"
    );
    assert_eq!(
        rig.deliveries("stuck").len(),
        2,
        "a hang is cut off and retried"
    );
    // Retried, or (when PostgreSQL is too slow to answer the probe after a hang, as on a
    // loaded machine) put back as a dependency that is down: either way tried again.
    assert_eq!(rig.outcome("retried") + rig.outcome("unavailable"), 2);
    assert!(rig.dead_letters().await.is_empty());
}

#[tokio::test]
async fn handlers_never_take_more_connections_than_half_the_pool() {
    let rig = Rig::new().await;
    rig.script.lock().unwrap().hold = Some(Duration::from_millis(50));
    let mut tx = rig.db.begin().await.unwrap();
    for i in 0..40 {
        mp_events::enqueue(&mut tx, Service::Vendor, vendor_created(&format!("c-{i}")))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    rig.start_relay();
    rig.start_consumer();
    eventually("all 40 handled", Duration::from_secs(30), || async {
        let n: i64 = sqlx::query_scalar("select count(*) from effects")
            .fetch_one(&rig.db)
            .await
            .unwrap();
        (n == 40).then_some(())
    })
    .await;
    // The test pool has 5 connections: two handlers at most, the rest stays for HTTP.
    let max = rig.script.lock().unwrap().max_running;
    assert!((1..=2).contains(&max), "{max} handlers ran at once");
}

#[tokio::test]
async fn an_event_from_a_service_that_does_not_publish_its_type_is_dead_lettered_as_not_authentic()
{
    let rig = Rig::new().await;
    rig.start_consumer();
    let mut forged = Envelope::new(Service::Cart, vendor_created("forged"));
    forged.id = Uuid::now_v7();
    rig.publish_raw(
        "vendor.created",
        &serde_json::to_vec(&forged).unwrap(),
        &forged.id.to_string(),
    )
    .await;
    let letters = eventually(
        "the forged event dead-lettered",
        Duration::from_secs(10),
        || async {
            let letters = rig.dead_letters().await;
            (!letters.is_empty()).then_some(letters)
        },
    )
    .await;
    let reason = letters[0].reason.clone().unwrap();
    assert!(reason.contains("not authentic"), "{reason}");
    assert!(reason.contains("vendor service"), "{reason}");
    assert_eq!(rig.effects("forged").await, 0);
}

#[tokio::test]
async fn a_message_that_keeps_coming_back_unacked_reaches_the_dead_letter_queue_by_the_delivery_limit()
 {
    let rig = Rig::new().await;
    let id = rig.enqueue("crasher").await;
    rig.start_relay();
    // A consumer that crashes on the message: it never acks, the broker requeues it.
    let queue = rig.broker.topology().queue(Service::Customer);
    let limit = rig.broker.topology().delivery_limit;
    let channel = rig.broker.channel().await.unwrap();
    let returned = std::sync::atomic::AtomicU32::new(0);
    let (channel, queue, counter, rig_ref) = (&channel, &queue, &returned, &rig);
    eventually(
        "the message to be dead-lettered",
        Duration::from_secs(30),
        || async move {
            if let Some(msg) = channel
                .basic_get(queue, lapin::options::BasicGetOptions { no_ack: false })
                .await
                .unwrap()
            {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                msg.delivery
                    .nack(lapin::options::BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            let letters = rig_ref.dead_letters().await;
            letters
                .into_iter()
                .find(|l| l.message_id.as_deref() == Some(id.to_string().as_str()))
        },
    )
    .await;
    let returned = returned.load(std::sync::atomic::Ordering::SeqCst);
    assert!(returned >= limit, "{returned} deliveries, limit {limit}");
    let letter = rig
        .dead_letters()
        .await
        .into_iter()
        .find(|l| l.message_id.as_deref() == Some(id.to_string().as_str()))
        .unwrap();
    let reason = letter.reason.unwrap();
    assert!(reason.contains("RabbitMQ"), "{reason}");
}

#[tokio::test]
async fn redrive_all_moves_only_what_was_there_and_refuses_events_older_than_the_inbox_remembers() {
    let rig = Rig::new().await;
    rig.script
        .lock()
        .unwrap()
        .permanent
        .push("always-bad".into());
    rig.start_relay();
    rig.start_consumer();
    rig.enqueue("always-bad").await;
    eventually(
        "the poison dead-lettered",
        Duration::from_secs(10),
        || async { (rig.dead_letters().await.len() == 1).then_some(()) },
    )
    .await;

    // It fails again at once and comes back; a redrive must not chase it in a loop.
    let report = dlq::redrive(
        &rig.broker,
        Service::Customer,
        &Selection::All,
        Duration::from_secs(3600),
        false,
    )
    .await
    .unwrap();
    assert_eq!(report.redriven, 1);
    eventually(
        "the poison back in the DLQ",
        Duration::from_secs(10),
        || async {
            (rig.dead_letters().await.len() == 1 && rig.deliveries("always-bad").len() == 2)
                .then_some(())
        },
    )
    .await;

    // An event older than the inbox retention is refused unless forced.
    rig.script.lock().unwrap().permanent.clear();
    let report = dlq::redrive(
        &rig.broker,
        Service::Customer,
        &Selection::All,
        Duration::from_millis(1),
        false,
    )
    .await
    .unwrap();
    assert_eq!(report.redriven, 0);
    assert!(
        report.refused[0].1.contains("inbox retention"),
        "{:?}",
        report.refused
    );
    assert_eq!(rig.dead_letters().await.len(), 1, "a refused letter stays");
    let report = dlq::redrive(
        &rig.broker,
        Service::Customer,
        &Selection::All,
        Duration::from_millis(1),
        true,
    )
    .await
    .unwrap();
    assert_eq!(report.redriven, 1);
    rig.wait_for_effect("always-bad").await;
}

#[tokio::test]
async fn published_outbox_rows_are_pruned_after_the_retention_and_unsent_ones_are_kept() {
    let rig = Rig::new().await;
    rig.start_consumer();
    rig.enqueue("sent").await;
    rig.start_relay();
    rig.wait_for_effect("sent").await;
    // Not yet published: nobody relays it (the relay is stopped first).
    rig.shutdown.cancel();
    let mut tx = rig.db.begin().await.unwrap();
    mp_events::enqueue(&mut tx, Service::Vendor, vendor_created("unsent"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let housekeeping = mp_events::outbox::Housekeeping {
        pool: rig.db.clone(),
        metrics: rig.metrics.clone(),
        settings: mp_events::outbox::RelaySettings {
            outbox_retention: Duration::ZERO,
            ..Default::default()
        },
    };
    housekeeping.once().await.unwrap();
    let left: Vec<String> = sqlx::query_scalar("select envelope->'payload'->>'name' from outbox")
        .fetch_all(&rig.db)
        .await
        .unwrap();
    assert_eq!(left, vec!["unsent".to_owned()]);
    assert_eq!(rig.metrics.outbox_pending.get(), 1);
}

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_service_user_publishes_only_its_own_event_types_and_writes_to_no_other_queue() {
    let env = TestEnv::new();
    let config = env.config(Service::Cart);
    let topology = config.topology();
    // The other services' queues exist, declared by an administrator's connection.
    Broker::new(config.amqp_url.clone(), topology.clone(), None)
        .connection()
        .await
        .unwrap();
    let user = format!("{}_cart", topology.prefix);
    let p = topology.permissions(Service::Cart);
    let exchange = topology.exchange();
    let setup = {
        let user = user.clone();
        tokio::task::spawn_blocking(move || {
            rabbitmqctl(&["add_user", &user, "cart-secret"]);
            rabbitmqctl(&["set_permissions", &user, &p.configure, &p.write, &p.read]);
            rabbitmqctl(&[
                "set_topic_permissions",
                &user,
                &exchange,
                &p.topic_write,
                &p.topic_read,
            ]);
        })
    };
    setup.await.unwrap();
    let url = config
        .amqp_url
        .replacen("guest:guest", &format!("{user}:cart-secret"), 1);
    let broker = Broker::new(url, topology.clone(), Some(Service::Cart));
    broker
        .connection()
        .await
        .expect("the cart user declares its own topology");

    let publish = |exchange: String, key: String| {
        let broker = broker.clone();
        async move {
            let channel = broker.confirm_channel().await.unwrap();
            let body =
                serde_json::to_vec(&Envelope::new(Service::Cart, vendor_created("x"))).unwrap();
            let sent = channel
                .basic_publish(
                    &exchange,
                    &key,
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default(),
                )
                .await;
            match sent {
                Ok(confirm) => confirm.await.map(drop),
                Err(e) => Err(e),
            }
        }
    };
    publish(topology.exchange(), "cart.created".into())
        .await
        .expect("its own event type");
    let forged = publish(topology.exchange(), "order.created".into()).await;
    assert!(
        forged
            .as_ref()
            .is_err_and(mp_events::topology::is_access_refused),
        "{forged:?}"
    );
    let sneaked = publish(String::new(), topology.queue(Service::Order)).await;
    assert!(
        sneaked.is_err(),
        "the default exchange is closed to it: {sneaked:?}"
    );

    broker.close().await;
    tokio::task::spawn_blocking(move || rabbitmqctl(&["delete_user", &user]))
        .await
        .unwrap();
}

/// PostgreSQL cannot be reached (every connection dropped, new ones refused) for much
/// longer than the retry ladder (50 + 100 + 200 ms here). That is not the messages'
/// fault: the consumer puts them back without spending their attempts and takes no more
/// until PostgreSQL answers; nothing is dead-lettered, and each is handled once when it
/// is back. (Counting the outage as failures used the ladder up in a third of a second
/// and dead-lettered them all.)
#[tokio::test]
async fn a_database_outage_longer_than_the_retry_ladder_dead_letters_nothing() {
    let rig = Rig::new().await;
    let options: sqlx::postgres::PgConnectOptions = mp_common::CommonConfig::from_env()
        .database_url
        .parse()
        .unwrap();
    let target: std::net::SocketAddr =
        tokio::net::lookup_host((options.get_host(), options.get_port()))
            .await
            .unwrap()
            .next()
            .unwrap();
    let proxy = mp_test_support::proxy::PausableProxy::start(target).await;
    let schema: String = sqlx::query_scalar("select current_schema()")
        .fetch_one(&rig.db)
        .await
        .unwrap();
    let through_proxy = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_millis(500))
        .connect_with(
            options
                .host("127.0.0.1")
                .port(proxy.addr.port())
                .options([("search_path", schema.as_str())]),
        )
        .await
        .unwrap();
    rig.start_consumer_on(through_proxy, |_| {});
    rig.start_relay();

    proxy.cut();
    let names: Vec<String> = (0..5).map(|i| format!("outage-{i}")).collect();
    for name in &names {
        rig.enqueue(name).await;
    }
    rig.wait_outbox_drained().await;
    // The outage itself (not a wait for something): ten times the whole ladder.
    tokio::time::sleep(Duration::from_millis(10 * (50 + 100 + 200))).await;
    assert!(
        rig.dead_letters().await.is_empty(),
        "nothing dead-lettered during the outage"
    );
    proxy.resume();

    for name in &names {
        rig.wait_for_effect(name).await;
    }
    assert!(rig.dead_letters().await.is_empty());
    for name in &names {
        assert_eq!(rig.effects(name).await, 1, "{name} handled once");
    }
    assert_eq!(rig.outcome("dead_lettered"), 0);
}

/// The broker's address, for a proxy in front of it.
async fn broker_addr() -> std::net::SocketAddr {
    let url = mp_common::CommonConfig::from_env().amqp_url;
    let host_port = url
        .split('@')
        .next_back()
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5672")
        .to_owned();
    tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap()
}

/// The broker stops answering the service's publishing connection (as RabbitMQ blocks
/// publishers during a memory or disk alarm). The consumer is on a connection of its
/// own: it keeps receiving, handling and acknowledging. (With one connection for both,
/// its deliveries and acks stalled behind the blocked publisher.)
#[tokio::test]
async fn a_consumer_keeps_receiving_and_acking_while_publishing_is_blocked() {
    let proxy = mp_test_support::proxy::PausableProxy::start(broker_addr().await).await;
    let through_proxy = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    let rig = Rig::with_broker(|b| b.with_publish_url(through_proxy)).await;
    rig.start_consumer();
    eventually(
        "the consumer's connection",
        Duration::from_secs(20),
        || async { rig.broker.channel().await.ok() },
    )
    .await;
    proxy.pause();

    // Another publisher, on the broker directly: what other services would send.
    let others = Broker::new(
        mp_common::CommonConfig::from_env().amqp_url,
        rig.broker.topology().clone(),
        None,
    );
    let names: Vec<String> = (0..5).map(|i| format!("blocked-{i}")).collect();
    for name in &names {
        mp_test_support::publish(&others, Service::Vendor, vendor_created(name)).await;
    }
    for name in &names {
        rig.wait_for_effect(name).await;
    }
    let channel = rig.broker.channel().await.unwrap();
    eventually("every delivery acked", Duration::from_secs(20), || async {
        let queue = channel
            .queue_declare(
                &rig.broker.topology().queue(Service::Customer),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .ok()?;
        (queue.message_count() == 0).then_some(())
    })
    .await;
    proxy.resume();
}

/// The consuming queue is gone (deleted by hand); an event bound for it is returned by
/// RabbitMQ, not confirmed and dropped: it stays in the outbox, counted, and goes out
/// once the queue is declared again. (Published without `mandatory`, it was confirmed
/// and lost.)
#[tokio::test]
async fn an_event_whose_queue_is_missing_stays_unsent_until_the_queue_is_back() {
    let rig = Rig::new().await;
    // Every queue bound to vendor.created: the customer's and the notification service's.
    let channel = rig.broker.channel().await.unwrap();
    for service in [Service::Customer, Service::Notification] {
        channel
            .queue_delete(
                &rig.broker.topology().queue(service),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await
            .unwrap();
    }
    rig.start_relay();
    let id = rig.enqueue("homeless").await;
    eventually("the event returned", Duration::from_secs(20), || async {
        (rig.metrics.outbox_unroutable.get() >= 1).then_some(())
    })
    .await;
    let unsent: bool = sqlx::query_scalar("select published_at is null from outbox where id = $1")
        .bind(id)
        .fetch_one(&rig.db)
        .await
        .unwrap();
    assert!(unsent, "a returned event stays in the outbox");

    let conn = rig.broker.connection().await.unwrap();
    rig.broker
        .topology()
        .declare(&conn, Some(Service::Customer))
        .await
        .unwrap();
    rig.start_consumer();
    rig.wait_for_effect("homeless").await;
    assert_eq!(rig.effects("homeless").await, 1);
}

/// One dead letter, inspected 25 times (`dlq list` takes it and puts it back each time):
/// it is still there, and the dead-letter queue is a classic queue, which counts no
/// deliveries. (A quorum DLQ counts each return, and RabbitMQ 4 drops a message after
/// its default limit of 20, without a word.)
#[tokio::test]
async fn a_dead_letter_inspected_25_times_is_still_there() {
    let rig = Rig::new().await;
    rig.script.lock().unwrap().permanent.push("poison".into());
    rig.start_relay();
    rig.start_consumer();
    rig.enqueue("poison").await;
    eventually("the dead letter", Duration::from_secs(20), || async {
        (rig.dead_letters().await.len() == 1).then_some(())
    })
    .await;
    for inspection in 1..=25 {
        let letters = rig.dead_letters().await;
        assert_eq!(letters.len(), 1, "inspection {inspection}");
        assert!(
            letters[0]
                .reason
                .as_deref()
                .unwrap_or_default()
                .contains("poison")
        );
    }
    let queue = rig.broker.topology().dead_letter_queue(Service::Customer);
    let listing = tokio::task::spawn_blocking(|| {
        std::process::Command::new("rabbitmqctl")
            .args(["list_queues", "name", "type", "-q", "--no-table-headers"])
            .output()
            .expect("rabbitmqctl runs")
    })
    .await
    .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let kind = listing
        .lines()
        .find_map(|l| {
            let mut fields = l.split_whitespace();
            (fields.next() == Some(queue.as_str())).then(|| fields.next().map(str::to_owned))
        })
        .flatten();
    assert_eq!(kind.as_deref(), Some("classic"), "{listing}");
}

/// The broker stops answering an open connection: opening a channel on it (what the
/// relay and the consumer do after an error) fails with a time-out instead of waiting
/// for ever, so their reconnect loops go on and readiness can say so.
#[tokio::test]
async fn a_broker_that_stops_answering_fails_a_channel_open_instead_of_hanging() {
    let proxy = mp_test_support::proxy::PausableProxy::start(broker_addr().await).await;
    let through_proxy = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    let rig = Rig::with_broker(|b| b.with_publish_url(through_proxy)).await;
    proxy.pause();
    let attempt = tokio::time::timeout(Duration::from_secs(60), rig.broker.confirm_channel()).await;
    let outcome = attempt.expect("the channel open gives up by itself");
    assert!(
        outcome.is_err(),
        "no channel from a broker that does not answer"
    );
    proxy.resume();
}
