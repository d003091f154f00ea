//! One isolated environment with the vendor, inventory and cart services (and the order
//! service for checkouts), tokens signed by the environment's keys, products listed
//! through the vendor's API, and views of inventory's stock and the cart's outbox.

use std::time::Duration;

use mp_events::{Currency, Event, Service};
use mp_test_support::api::{Tokens, outbox, outbox_events};
use mp_test_support::clients::cart::{AddItem, Cart, CartApi, Checkout, CheckoutAccepted};
use mp_test_support::clients::{ApiResult, Expect, Reply};
use mp_test_support::{TestEnv, TestService, eventually};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Options {
    pub with_order: bool,
    pub idle_secs: u64,
    /// Inventory's reservation TTL.
    pub reservation_ttl_secs: u64,
    /// Point the cart at an inventory that does not answer.
    pub inventory_unreachable: bool,
    /// Point the cart at this order service instead.
    pub order_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            with_order: false,
            idle_secs: 900,
            reservation_ttl_secs: 900,
            inventory_unreachable: false,
            order_url: None,
        }
    }
}

pub struct Harness {
    // The services first: they stop before the environment drops their schemas.
    #[expect(dead_code, reason = "held for its drop, which stops the service")]
    cart: TestService,
    pub order: Option<TestService>,
    pub inventory: TestService,
    pub vendor: TestService,
    /// The cart service's API, typed.
    pub client: CartApi,
    pub db: PgPool,
    pub tokens: Tokens,
    #[expect(
        dead_code,
        reason = "held for its drop, which removes the schemas and keys"
    )]
    env: TestEnv,
}

/// A listed product with its vendor and the vendor's owner token.
pub struct Product {
    pub id: Uuid,
    pub vendor_id: Uuid,
    pub owner: String,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn with_order() -> Self {
        Self::start_with(Options {
            with_order: true,
            ..Options::default()
        })
        .await
    }

    pub async fn start_with(options: Options) -> Self {
        let env = TestEnv::new();
        let vendor = env
            .spawn(Service::Vendor, |common, listener, shutdown| {
                vendor::run(vendor::Config::with_common(common), listener, shutdown)
            })
            .await;
        let ttl = options.reservation_ttl_secs;
        let inventory = env
            .spawn(Service::Inventory, move |common, listener, shutdown| {
                let mut config = inventory::Config::with_common(common);
                config.settings.reservation_ttl_secs = ttl;
                inventory::run(config, listener, shutdown)
            })
            .await;
        let order = if options.with_order {
            Some(
                env.spawn(Service::Order, |common, listener, shutdown| {
                    let mut config = order::Config::with_common(common);
                    config.settings.payment_gateway = order::GatewayKind::Test;
                    order::run(config, listener, shutdown)
                })
                .await,
            )
        } else {
            None
        };
        let settings = cart::Settings {
            inventory_url: if options.inventory_unreachable {
                "http://127.0.0.1:9".into()
            } else {
                inventory.base_url.clone()
            },
            vendor_url: vendor.base_url.clone(),
            // Nothing listens on port 9: without an order service a checkout gets 503.
            order_url: options.order_url.clone().unwrap_or_else(|| {
                order
                    .as_ref()
                    .map_or("http://127.0.0.1:9".into(), |o| o.base_url.clone())
            }),
            call_timeout_ms: 5_000,
            tax_rate_bps: 2000,
            currency: Currency::EUR,
            idle_secs: options.idle_secs,
            idle_check_ms: 100,
            checkout_lease_secs: 30,
            checkout_key_retention_hours: 24,
        };
        let cart = env
            .spawn(Service::Cart, move |common, listener, shutdown| {
                cart::run(cart::Config { common, settings }, listener, shutdown)
            })
            .await;
        let db = env.db(Service::Cart).await;
        let tokens = Tokens::new(&env);
        Self {
            client: CartApi(cart.api()),
            cart,
            order,
            inventory,
            vendor,
            db,
            tokens,
            env,
        }
    }

    /// A new customer: their id and token.
    pub fn customer(&self) -> (Uuid, String) {
        let id = Uuid::now_v7();
        (id, self.tokens.customer(id))
    }

    /// Lists a product priced `price` cents with `stock` units, through the vendor's API,
    /// and waits until inventory holds its stock.
    pub async fn product(&self, price: i64, stock: i64) -> Product {
        let owner_id = Uuid::now_v7();
        let owner = self.tokens.customer(owner_id);
        let (status, vendor) = self
            .vendor
            .call(
                Method::POST,
                "/api/vendors",
                Some(&owner),
                Some(json!({"name": format!("Shop {owner_id}"), "email": "shop@shop.test", "phone": "+4930123456"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{vendor}");
        let vendor_id: Uuid = vendor["id"].as_str().unwrap().parse().unwrap();
        let owner = self.tokens.member(owner_id, vendor_id);
        let sku = format!("MUG-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let (status, product) = self
            .vendor
            .call(
                Method::POST,
                &format!("/api/vendors/{vendor_id}/products"),
                Some(&owner),
                Some(json!({
                    "sku": sku,
                    "name": format!("Mug {sku}"),
                    "description": "Stoneware, 350 ml.",
                    "price": {"amount": price, "currency": "EUR"},
                    "initial_stock": stock,
                    "low_stock_threshold": 0,
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{product}");
        let id: Uuid = product["id"].as_str().unwrap().parse().unwrap();
        eventually("the product's stock at inventory", WAIT, || async {
            (self.stock(id).await["on_hand"] == stock).then_some(())
        })
        .await;
        Product {
            id,
            vendor_id,
            owner,
        }
    }

    /// Changes a product as its vendor's owner (`PATCH /api/products/{id}`); asserts 200.
    pub async fn change_product(&self, product: &Product, change: Value) {
        let (status, body) = self
            .vendor
            .call(
                Method::PATCH,
                &format!("/api/products/{}", product.id),
                Some(&product.owner),
                Some(change),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// Inventory's figures for a product (`on_hand`, `reserved`, `available`, `active`).
    pub async fn stock(&self, product_id: Uuid) -> Value {
        let (status, body) = self
            .inventory
            .call(
                Method::GET,
                &format!("/api/inventory/{product_id}"),
                Some(&self.tokens.admin()),
                None,
            )
            .await;
        if status == StatusCode::OK {
            body
        } else {
            Value::Null
        }
    }

    pub async fn reserved(&self, product_id: Uuid) -> i64 {
        self.stock(product_id).await["reserved"]
            .as_i64()
            .expect("stock figures")
    }

    /// Opens (or returns) the customer's cart; returns its id.
    pub async fn open_cart(&self, token: &str) -> Uuid {
        self.client.open(token).await.expect_ok().body.id
    }

    /// Adds `quantity` of `product_id` to the cart.
    pub async fn add(
        &self,
        token: &str,
        cart_id: Uuid,
        product_id: Uuid,
        quantity: i64,
    ) -> ApiResult<Cart> {
        let item = AddItem {
            product_id,
            quantity,
        };
        self.client.add_item(token, cart_id, &item).await
    }

    /// The cart as its owner (or an admin) reads it; fails the test on an error.
    pub async fn cart(&self, token: &str, cart_id: Uuid) -> Cart {
        self.client.get(Some(token), cart_id).await.expect_ok()
    }

    /// Checks out under `key` with `body` (a [`Checkout`], or any JSON).
    pub async fn checkout(
        &self,
        token: &str,
        cart_id: Uuid,
        key: Option<&str>,
        body: &(impl Serialize + ?Sized),
    ) -> ApiResult<Reply<CheckoutAccepted>> {
        self.client.checkout(token, cart_id, key, body).await
    }

    /// A customer whose new cart holds two mugs of a new product (10 in stock):
    /// (customer id, token, cart id, product id).
    pub async fn filled_cart(&self) -> (Uuid, String, Uuid, Uuid) {
        let (customer_id, token) = self.customer();
        let cart_id = self.open_cart(&token).await;
        let mug = self.product(1299, 10).await;
        self.add(&token, cart_id, mug.id, 2).await.expect_ok();
        (customer_id, token, cart_id, mug.id)
    }

    /// The cart's outbox: (type, envelope), oldest first.
    pub async fn outbox(&self) -> Vec<(String, Value)> {
        outbox(&self.db).await
    }

    /// The cart's `E` events, oldest first.
    pub async fn events<E: Event>(&self) -> Vec<E> {
        outbox_events(&self.db).await
    }
}

/// A valid checkout paying with `payment_token`.
pub fn checkout_body(payment_token: &str) -> Checkout {
    Checkout::paying_with(payment_token)
}
