//! One inventory service in its own environment, with tokens signed by the
//! environment's keys, a publisher for the events other services would send, and views
//! of the service's database, outbox and Redis keys.

use std::time::{Duration, Instant};

use inventory::{Config, Settings};
use mp_events::catalog::{LineItem, OrderCreated, OrderStatus, OrderUpdated, VendorProductCreated};
use mp_events::{Broker, Currency, Envelope, Event, Money, Service};
use mp_test_support::api::{Tokens, outbox_events};
use mp_test_support::client::Api;
use mp_test_support::clients::inventory::{
    Adjusted, Adjustment, InventoryApi, Reservation, Reserve, Stock,
};
use mp_test_support::clients::{ApiResult, Expect, Reply};
use mp_test_support::{TestEnv, TestService, eventually};
use sqlx::PgPool;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(20);

/// Settings for tests: the default TTL, and reconciliation only at start-up unless a
/// test asks for more.
pub fn settings() -> Settings {
    Settings {
        reservation_ttl_secs: 900,
        reconcile_interval_ms: 3_600_000,
    }
}

pub struct Harness {
    // The service first: it stops before the environment drops its schema and keys.
    pub svc: TestService,
    /// The service's API, typed.
    pub client: InventoryApi,
    pub db: PgPool,
    pub tokens: Tokens,
    broker: Broker,
    pub env: TestEnv,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(settings()).await
    }

    pub async fn start_with(settings: Settings) -> Self {
        let env = TestEnv::new();
        let svc = env
            .spawn(Service::Inventory, move |common, listener, shutdown| {
                inventory::run(Config { common, settings }, listener, shutdown)
            })
            .await;
        let config = env.config(Service::Inventory);
        let tokens = Tokens::new(&env);
        let broker = Broker::new(config.amqp_url.clone(), config.topology(), None);
        let db = env.db(Service::Inventory).await;
        Self {
            client: InventoryApi(svc.api()),
            svc,
            db,
            tokens,
            broker,
            env,
        }
    }

    /// Another inventory process in this environment: same schema, queues and Redis
    /// keys, so it shares the consumer's queue and the stock mirror with `svc`.
    pub async fn spawn_another(&self, settings: Settings) -> TestService {
        self.env
            .spawn(Service::Inventory, move |common, listener, shutdown| {
                inventory::run(Config { common, settings }, listener, shutdown)
            })
            .await
    }

    /// Sets a reservation through `svc` (this harness's process or another one).
    pub async fn reserve_on(
        &self,
        svc: &TestService,
        cart_id: Uuid,
        product_id: Uuid,
        quantity: i64,
    ) -> ApiResult<Reply<Reservation>> {
        let reserve = Reserve::new(cart_id, product_id, quantity);
        InventoryApi(svc.api())
            .reserve(&self.cart_token(), &reserve)
            .await
    }

    /// A token of the cart service, the one caller of the reservations.
    pub fn cart_token(&self) -> String {
        self.tokens.service(Service::Cart, Service::Inventory)
    }

    /// The service's Redis store, as a process of it would use it.
    pub async fn store(&self) -> inventory::store::Store {
        inventory::store::Store::new(
            self.env.redis().await,
            mp_common::redis::RedisKeys::new(&format!("t_{}", self.env.id)),
            Duration::from_secs(900),
        )
    }

    /// The service's operations on this environment's database and Redis keys, as a
    /// process of it holds them: for running event handlers in transactions that a test
    /// opens, holds and commits itself.
    pub async fn inventory(&self) -> inventory::Inventory {
        inventory::Inventory {
            db: self.db.clone(),
            reservations_db: self.db.clone(),
            store: self.store().await,
            metrics: inventory::metrics::InventoryMetrics::new(&prometheus::Registry::new())
                .expect("metrics"),
        }
    }

    /// The inventory service's HTTP API.
    pub fn api(&self) -> Api {
        self.svc.api()
    }

    /// Publishes an event on this environment's exchange, as its publisher would.
    pub async fn publish_envelope<E: Event>(&self, envelope: &Envelope<E>) {
        mp_test_support::publish_envelope(&self.broker, envelope).await;
    }

    pub async fn publish<E: Event>(&self, source: Service, payload: E) -> Envelope<E> {
        let envelope = Envelope::new(source, payload);
        self.publish_envelope(&envelope).await;
        envelope
    }

    /// Lists a product through `vendor.product.created` and waits for its stock item.
    pub async fn product(&self, vendor_id: Uuid, initial_stock: i64, threshold: i64) -> Uuid {
        let created = product_created(vendor_id, initial_stock, threshold);
        let product_id = created.product_id;
        self.publish(Service::Vendor, created).await;
        self.wait_for_item(product_id).await;
        product_id
    }

    /// Waits until the stock item exists with its initial stock recorded.
    pub async fn wait_for_item(&self, product_id: Uuid) -> Duration {
        let started = Instant::now();
        eventually("the stock item", WAIT, || async {
            sqlx::query_scalar::<_, bool>(
                "select initial_stock_recorded from stock_items where product_id = $1",
            )
            .bind(product_id)
            .fetch_optional(&self.db)
            .await
            .unwrap()
            .filter(|recorded| *recorded)
        })
        .await;
        started.elapsed()
    }

    /// The stock as an admin reads it.
    pub async fn stock(&self, product_id: Uuid) -> Stock {
        self.client
            .stock(&self.tokens.admin(), product_id)
            .await
            .expect_ok()
    }

    pub async fn on_hand(&self, product_id: Uuid) -> i64 {
        sqlx::query_scalar("select on_hand from stock_items where product_id = $1")
            .bind(product_id)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Sets the cart's reservation of the product to `quantity`, as the cart does.
    pub async fn reserve(
        &self,
        cart_id: Uuid,
        product_id: Uuid,
        quantity: i64,
    ) -> ApiResult<Reply<Reservation>> {
        self.reserve_on(&self.svc, cart_id, product_id, quantity)
            .await
    }

    pub async fn release(&self, cart_id: Uuid, product_id: Uuid) -> ApiResult<()> {
        self.client
            .release(&self.cart_token(), cart_id, product_id)
            .await
    }

    /// Adjusts the on-hand stock by `delta` as the holder of `token`.
    pub async fn adjust(&self, token: &str, product_id: Uuid, delta: i64) -> ApiResult<Adjusted> {
        let adjustment = Adjustment {
            delta,
            reason: "stock count".into(),
        };
        self.client.adjust(token, product_id, &adjustment).await
    }

    /// The service's `E` events, oldest first.
    pub async fn events<E: Event>(&self) -> Vec<E> {
        outbox_events(&self.db).await
    }

    /// Waits until the outbox holds at least `n` `E` events.
    pub async fn wait_events<E: Event>(&self, n: usize) -> Vec<E> {
        eventually(&format!("{n} {} event(s)", E::TYPE), WAIT, || async {
            let events = self.events::<E>().await;
            (events.len() >= n).then_some(events)
        })
        .await
    }

    /// Every item's on_hand equals the sum of its ledger, and each movement's
    /// on_hand_after is the running sum.
    pub async fn assert_ledger_matches(&self) {
        let mismatched: Vec<(Uuid, i64, i64)> = sqlx::query_as(
            "select i.product_id, i.on_hand, coalesce(sum(m.delta), 0)::bigint
             from stock_items i left join stock_movements m using (product_id)
             group by i.product_id, i.on_hand
             having i.on_hand <> coalesce(sum(m.delta), 0)",
        )
        .fetch_all(&self.db)
        .await
        .unwrap();
        assert!(
            mismatched.is_empty(),
            "on_hand differs from the ledger: {mismatched:?}"
        );
        let broken_runs: i64 = sqlx::query_scalar(
            "select count(*) from (
                 select on_hand_after,
                        sum(delta) over (partition by product_id order by seq) as running
                 from stock_movements) m
             where on_hand_after <> running",
        )
        .fetch_one(&self.db)
        .await
        .unwrap();
        assert_eq!(broken_runs, 0, "on_hand_after is not the running sum");
    }

    /// What FLUSHALL would do to this service, limited to this environment's keys so
    /// that tests running in parallel keep theirs.
    pub async fn flush_redis(&self) {
        let mut redis = self.env.redis().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("t_{}:*", self.env.id))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(!keys.is_empty(), "this environment had keys to lose");
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
}

pub fn product_created(
    vendor_id: Uuid,
    initial_stock: i64,
    threshold: i64,
) -> VendorProductCreated {
    let product_id = Uuid::now_v7();
    VendorProductCreated {
        product_id,
        vendor_id,
        sku: format!("SKU-{}", &product_id.simple().to_string()[..8]),
        name: "Teapot".into(),
        price: Money::new(1999, Currency::EUR),
        active: true,
        initial_stock,
        low_stock_threshold: threshold,
        revision: 1,
    }
}

pub fn line(product_id: Uuid, quantity: i64) -> LineItem {
    LineItem {
        product_id,
        vendor_id: Uuid::nil(),
        name: "Teapot".into(),
        quantity,
        unit_price: Money::new(1999, Currency::EUR),
    }
}

pub fn order_created(cart_id: Uuid, items: Vec<LineItem>) -> OrderCreated {
    OrderCreated {
        order_id: Uuid::now_v7(),
        customer_id: Uuid::now_v7(),
        cart_id,
        items,
        total: Money::new(1999, Currency::EUR),
    }
}

pub fn order_updated(order: &OrderCreated, status: OrderStatus) -> OrderUpdated {
    OrderUpdated {
        order_id: order.order_id,
        customer_id: order.customer_id,
        cart_id: order.cart_id,
        status,
        previous_status: Some(OrderStatus::Paid),
        reason: None,
        stock_committed: true,
        items: order.items.clone(),
        total: order.total,
    }
}
