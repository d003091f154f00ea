//! The order service with the inventory service in one isolated environment, tokens
//! signed by the environment's keys, and a publisher for what the vendor and cart
//! services would send: the cart's part of a checkout is played by [`Harness::checkout`]
//! (reservations, the payment-method hand-off, then `cart.checkout`).

use std::time::Duration;

use mp_events::catalog::{
    CartCheckout, LineItem, OrderCreated, OrderShipped, OrderUpdated, ShippingAddress,
    VendorProductCreated,
};
use mp_events::{Broker, Currency, Envelope, Event, Money, Service};
use mp_test_support::api::{Tokens, outbox_events};
use mp_test_support::client::Api;
use mp_test_support::clients::inventory::{InventoryApi, Reservation, Reserve};
use mp_test_support::clients::order::{Order, OrderApi, PaymentMethod};
use mp_test_support::clients::{ApiResult, Expect, Reply};
use mp_test_support::{TestEnv, TestService, eventually};
use order::{Config, GatewayKind, Settings};
use sqlx::PgPool;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(30);

/// Settings for tests: the test gateway, quick retries, default timeouts.
pub fn settings() -> Settings {
    Settings {
        payment_gateway: GatewayKind::Test,
        stripe_api_url: "http://127.0.0.1:9".into(),
        stripe_secret_key: None,
        payment_timeout_ms: 5_000,
        payment_retries: 2,
        payment_retry_min_ms: 10,
        saga_poll_ms: 100,
        saga_lease_secs: 30,
        saga_soft_timeout_secs: 60,
        saga_hard_timeout_secs: 900,
        saga_concurrency: 8,
        saga_max_in_flight: 100,
        payment_method_ttl_hours: 24,
    }
}

/// An event about one order.
pub trait OfOrder {
    fn order_id(&self) -> Uuid;
}

macro_rules! of_order {
    ($($event:ty),+) => {$(
        impl OfOrder for $event {
            fn order_id(&self) -> Uuid {
                self.order_id
            }
        }
    )+};
}
of_order!(OrderCreated, OrderUpdated, OrderShipped);

pub struct Harness {
    // The services first: they stop before the environment drops its schemas.
    /// The order service in this process (`None` when it runs as a process of its own).
    pub order: Option<TestService>,
    pub order_url: String,
    pub inventory: Option<TestService>,
    pub http: reqwest::Client,
    pub db: PgPool,
    pub inventory_db: PgPool,
    pub tokens: Tokens,
    broker: Broker,
    pub env: TestEnv,
}

/// A checkout as the cart would make it.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub order_id: Uuid,
    pub cart_id: Uuid,
    pub customer_id: Uuid,
    pub event: CartCheckout,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(settings(), true).await
    }

    /// With `inventory` false, nothing answers `order.created`: orders wait on stock.
    pub async fn start_with(settings: Settings, inventory: bool) -> Self {
        let mut h = Self::bare(inventory).await;
        let order = h
            .env
            .spawn(Service::Order, move |common, listener, shutdown| {
                order::run(Config { common, settings }, listener, shutdown)
            })
            .await;
        h.order_url = order.base_url.clone();
        h.order = Some(order);
        h
    }

    /// The environment, with inventory if asked, but no order service yet: set
    /// `order_url` to one started otherwise.
    pub async fn bare(inventory: bool) -> Self {
        let env = TestEnv::new();
        let inventory = if inventory {
            Some(start_inventory(&env).await)
        } else {
            None
        };
        let config = env.config(Service::Order);
        let tokens = Tokens::new(&env);
        let broker = Broker::new(config.amqp_url.clone(), config.topology(), None);
        let db = env.db(Service::Order).await;
        let inventory_db = env.db(Service::Inventory).await;
        Self {
            order: None,
            order_url: String::new(),
            inventory,
            http: reqwest::Client::new(),
            db,
            inventory_db,
            tokens,
            broker,
            env,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.order_url)
    }

    /// The order service's HTTP API.
    pub fn api(&self) -> Api {
        Api::with_client(self.order_url.clone(), self.http.clone())
    }

    /// The order service's API, typed.
    pub fn client(&self) -> OrderApi {
        OrderApi(self.api())
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

    /// Lists a product of `vendor_id` with `stock` units and waits for its stock item.
    pub async fn product(&self, vendor_id: Uuid, stock: i64) -> Uuid {
        let product_id = Uuid::now_v7();
        self.publish(
            Service::Vendor,
            VendorProductCreated {
                product_id,
                vendor_id,
                sku: format!("SKU-{}", &product_id.simple().to_string()[..8]),
                name: "Teapot".into(),
                price: Money::new(1999, Currency::EUR),
                active: true,
                initial_stock: stock,
                low_stock_threshold: 0,
                revision: 1,
            },
        )
        .await;
        eventually("the stock item", WAIT, || async {
            sqlx::query_scalar::<_, bool>(
                "select initial_stock_recorded from stock_items where product_id = $1",
            )
            .bind(product_id)
            .fetch_optional(&self.inventory_db)
            .await
            .unwrap()
            .filter(|recorded| *recorded)
        })
        .await;
        product_id
    }

    /// Reserves `lines` (product, vendor, quantity) for a new cart, hands over
    /// `payment_token` and publishes `cart.checkout`, as the cart service does.
    pub async fn checkout(&self, lines: &[(Uuid, Uuid, i64)], payment_token: &str) -> Checkout {
        let checkout = self.checkout_event(lines);
        if self.inventory.is_some() {
            for &(product_id, _, quantity) in lines {
                self.reserve(checkout.cart_id, product_id, quantity)
                    .await
                    .expect_ok();
            }
        }
        self.put_payment_method(&checkout, payment_token)
            .await
            .expect_ok();
        self.publish(Service::Cart, checkout.event.clone()).await;
        checkout
    }

    pub fn checkout_event(&self, lines: &[(Uuid, Uuid, i64)]) -> Checkout {
        let (order_id, cart_id, customer_id) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let items: Vec<LineItem> = lines
            .iter()
            .map(|&(product_id, vendor_id, quantity)| LineItem {
                product_id,
                vendor_id,
                name: "Teapot".into(),
                quantity,
                unit_price: Money::new(1999, Currency::EUR),
            })
            .collect();
        let subtotal: i64 = items.iter().map(|i| i.quantity * 1999).sum();
        let tax = subtotal / 5;
        Checkout {
            order_id,
            cart_id,
            customer_id,
            event: CartCheckout {
                cart_id,
                customer_id,
                order_id,
                items,
                subtotal: Money::new(subtotal, Currency::EUR),
                tax: Money::new(tax, Currency::EUR),
                total: Money::new(subtotal + tax, Currency::EUR),
                shipping_address: ShippingAddress {
                    name: "Ada Lovelace".into(),
                    line1: "1 Analytical Way".into(),
                    line2: None,
                    city: "London".into(),
                    postal_code: "N1 1AA".into(),
                    country: "GB".into(),
                },
            },
        }
    }

    pub async fn reserve(
        &self,
        cart_id: Uuid,
        product_id: Uuid,
        quantity: i64,
    ) -> ApiResult<Reply<Reservation>> {
        let inventory = self.inventory.as_ref().expect("inventory runs");
        let reserve = Reserve::new(cart_id, product_id, quantity);
        InventoryApi(inventory.api())
            .reserve(
                &self.tokens.service(Service::Cart, Service::Inventory),
                &reserve,
            )
            .await
    }

    /// The cart's hand-off of the payment token for the checkout.
    pub async fn put_payment_method(&self, c: &Checkout, token: &str) -> ApiResult<()> {
        let method = PaymentMethod {
            customer_id: c.customer_id,
            cart_id: c.cart_id,
            payment_token: token.to_owned(),
        };
        self.client()
            .put_payment_method(
                &self.tokens.service(Service::Cart, Service::Order),
                c.order_id,
                &method,
            )
            .await
    }

    /// Waits until the order has `status`, then returns it as its customer reads it.
    pub async fn wait_status(&self, c: &Checkout, status: &str) -> Order {
        eventually(
            &format!("order {} to be {status}", c.order_id),
            WAIT,
            || async {
                let current: Option<String> =
                    sqlx::query_scalar("select status from orders where id = $1")
                        .bind(c.order_id)
                        .fetch_optional(&self.db)
                        .await
                        .unwrap();
                (current.as_deref() == Some(status)).then_some(())
            },
        )
        .await;
        self.read(c).await
    }

    /// Waits until the order no longer waits on a saga step (refunds included).
    pub async fn wait_settled(&self, c: &Checkout) -> Order {
        eventually(&format!("order {} to settle", c.order_id), WAIT, || async {
            let step: Option<Option<String>> =
                sqlx::query_scalar("select saga_step from orders where id = $1")
                    .bind(c.order_id)
                    .fetch_optional(&self.db)
                    .await
                    .unwrap();
            matches!(step, Some(None)).then_some(())
        })
        .await;
        self.read(c).await
    }

    /// The customer cancels the order.
    pub async fn cancel(&self, c: &Checkout) -> ApiResult<Order> {
        self.client()
            .cancel(&self.tokens.customer(c.customer_id), c.order_id)
            .await
    }

    /// The order as its customer reads it.
    pub async fn read(&self, c: &Checkout) -> Order {
        self.client()
            .get(&self.tokens.customer(c.customer_id), c.order_id)
            .await
            .expect_ok()
    }

    /// Payment attempts of the order: `(kind, status)`.
    pub async fn payments(&self, order_id: Uuid) -> Vec<(String, String)> {
        sqlx::query_as("select kind, status from payments where order_id = $1 order by created_at")
            .bind(order_id)
            .fetch_all(&self.db)
            .await
            .unwrap()
    }

    pub async fn successful(&self, order_id: Uuid, kind: &str) -> usize {
        self.payments(order_id)
            .await
            .iter()
            .filter(|(k, s)| k == kind && s == "succeeded")
            .count()
    }

    /// The order service's `E` events of the order, oldest first.
    pub async fn events<E: Event + OfOrder>(&self, order_id: Uuid) -> Vec<E> {
        outbox_events::<E>(&self.db)
            .await
            .into_iter()
            .filter(|e| e.order_id() == order_id)
            .collect()
    }

    pub async fn on_hand(&self, product_id: Uuid) -> i64 {
        sqlx::query_scalar("select on_hand from stock_items where product_id = $1")
            .bind(product_id)
            .fetch_one(&self.inventory_db)
            .await
            .unwrap()
    }

    /// Ledger movements of the order: `(kind, delta)`.
    pub async fn movements(&self, order_id: Uuid) -> Vec<(String, i64)> {
        sqlx::query_as("select kind, delta from stock_movements where reference = $1 order by seq")
            .bind(order_id.to_string())
            .fetch_all(&self.inventory_db)
            .await
            .unwrap()
    }

    pub async fn reservations(&self, cart_id: Uuid) -> i64 {
        sqlx::query_scalar("select count(*) from reservations where cart_id = $1 and quantity > 0")
            .bind(cart_id)
            .fetch_one(&self.inventory_db)
            .await
            .unwrap()
    }
}

/// The inventory service of `env`, in this process.
pub async fn start_inventory(env: &TestEnv) -> TestService {
    env.spawn(Service::Inventory, |common, listener, shutdown| {
        inventory::run(
            inventory::Config {
                common,
                settings: inventory::Settings {
                    reservation_ttl_secs: 900,
                    reconcile_interval_ms: 3_600_000,
                },
            },
            listener,
            shutdown,
        )
    })
    .await
}
