//! A fleet harness for cross-service tests: the services started in this process on
//! port 0 in one isolated [`TestEnv`], tokens signed by the environment's keys, a
//! publisher for events of services not started, and readers of each service's schema.
//!
//! [`Fleet::shop`] fills a cart and checks it out as a customer would.

use std::time::Duration;

use mp_common::TokenKeys;
use mp_common::auth::USER_AUDIENCE;
use mp_events::{Broker, Envelope, Event, Service};
use mp_test_support::{TestEnv, TestService, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(30);
pub const PASSWORD: &str = "correct horse battery";

/// Logs `email` in (with [`PASSWORD`]) at a customer service; the token response.
pub async fn login(customer: &TestService, email: &str) -> Value {
    let (status, body) = customer
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": email, "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

pub struct Fleet {
    // The services first: they stop before the environment drops its schemas.
    pub customer: TestService,
    pub vendor: TestService,
    pub inventory: TestService,
    pub order: TestService,
    pub notification: TestService,
    pub cart: TestService,
    pub keys: TokenKeys,
    broker: Broker,
    _sms_dir: TempDir,
    pub env: TestEnv,
}

/// A registered, logged-in customer.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub token: String,
    pub refresh_token: String,
}

/// A directory removed when dropped (the SMS sink of the notification service).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Fleet {
    /// All six: customer, vendor, inventory, order (test payment gateway),
    /// notification (SMS to a file, email to no server: recorded and retried) and cart.
    pub async fn start() -> Self {
        Self::start_in(TestEnv::new()).await
    }

    /// As production runs them: every service as a PostgreSQL role and a Redis user of
    /// its own ([`TestEnv::with_own_credentials`]).
    pub async fn with_own_credentials() -> Self {
        Self::start_in(TestEnv::new().with_own_credentials().await).await
    }

    /// In `env`, as it is configured.
    pub async fn start_in(env: TestEnv) -> Self {
        let customer = env
            .spawn(Service::Customer, |common, listener, shutdown| {
                customer::run(customer::Config::with_common(common), listener, shutdown)
            })
            .await;
        let vendor = env
            .spawn(Service::Vendor, |common, listener, shutdown| {
                vendor::run(vendor::Config::with_common(common), listener, shutdown)
            })
            .await;
        let inventory = env
            .spawn(Service::Inventory, |common, listener, shutdown| {
                inventory::run(inventory::Config::with_common(common), listener, shutdown)
            })
            .await;
        let order = env
            .spawn(Service::Order, |common, listener, shutdown| {
                let mut config = order::Config::with_common(common);
                config.settings.payment_gateway = order::GatewayKind::Test;
                config.settings.payment_retry_min_ms = 10;
                config.settings.saga_poll_ms = 100;
                order::run(config, listener, shutdown)
            })
            .await;
        let sms_dir = TempDir(std::env::temp_dir().join(format!("mp-fleet-{}", env.id)));
        std::fs::create_dir_all(&sms_dir.0).expect("a temporary directory");
        let sms_file = sms_dir.0.join("sms.log");
        let notification = env
            .spawn(Service::Notification, move |common, listener, shutdown| {
                let mut config = notification::Config::with_common(common);
                config.settings.sms_provider = notification::config::SmsProvider::File;
                config.settings.sms_file = sms_file;
                // No mail server: emails are recorded and retried, which is all these
                // tests look at.
                config.settings.smtp_port = 9;
                notification::run(config, listener, shutdown)
            })
            .await;
        let urls = (
            inventory.base_url.clone(),
            vendor.base_url.clone(),
            order.base_url.clone(),
        );
        let cart = env
            .spawn(Service::Cart, move |common, listener, shutdown| {
                let mut config = cart::Config::with_common(common);
                (
                    config.settings.inventory_url,
                    config.settings.vendor_url,
                    config.settings.order_url,
                ) = urls;
                cart::run(config, listener, shutdown)
            })
            .await;
        let config = env.config(Service::Order);
        let keys = TokenKeys::from_config(&config).expect("token keys");
        let broker = Broker::new(config.amqp_url.clone(), config.topology(), None);
        Self {
            customer,
            vendor,
            inventory,
            order,
            notification,
            cart,
            keys,
            broker,
            _sms_dir: sms_dir,
            env,
        }
    }

    /// A token of `caller` for calling `target`.
    pub fn service_token(&self, caller: Service, target: Service) -> String {
        self.keys.service_token(caller, target).0
    }

    pub fn admin_token(&self) -> String {
        self.keys
            .user_token(
                Uuid::now_v7(),
                Uuid::new_v4(),
                vec!["customer".into(), "admin".into()],
                vec![],
            )
            .0
    }

    pub async fn db(&self, service: Service) -> PgPool {
        self.env.db(service).await
    }

    /// Registers a customer (with a phone, for SMS) and logs them in.
    pub async fn register(&self, name: &str) -> User {
        let email = format!(
            "{}-{}@shop.test",
            name.to_lowercase().replace(' ', "."),
            &Uuid::new_v4().simple().to_string()[..6]
        );
        let (status, body) = self
            .customer
            .call(
                Method::POST,
                "/api/customers",
                None,
                Some(json!({"email": email, "password": PASSWORD, "name": name,
                            "phone": "+4915112345678"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().unwrap().parse().unwrap();
        self.login(id, &email).await
    }

    /// Logs in again (a new token carries memberships granted since).
    pub async fn login(&self, id: Uuid, email: &str) -> User {
        let body = login(&self.customer, email).await;
        User {
            id,
            email: email.to_owned(),
            token: body["access_token"].as_str().unwrap().to_owned(),
            refresh_token: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// `owner` opens a vendor; returns its id and the owner with a token carrying it.
    pub async fn open_vendor(&self, owner: &User, name: &str) -> (Uuid, User) {
        let (status, body) = self
            .vendor
            .call(
                Method::POST,
                "/api/vendors",
                Some(&owner.token),
                Some(json!({"name": name, "email": owner.email, "phone": "+4930123456"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let vendor_id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
        let member = eventually("the membership in a new token", WAIT, || async {
            let user = self.login(owner.id, &owner.email).await;
            let claims = self
                .keys
                .verify(&user.token, USER_AUDIENCE)
                .expect("a valid access token");
            let has = claims.vendors.contains(&vendor_id);
            has.then_some(user)
        })
        .await;
        (vendor_id, member)
    }

    /// A product of `vendor_id` listed by `member` with `stock` units at `price` cents;
    /// waits until inventory holds its stock.
    pub async fn product(&self, member: &User, vendor_id: Uuid, stock: i64, price: i64) -> Uuid {
        let sku = format!("SKU-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let (status, body) = self
            .vendor
            .call(
                Method::POST,
                &format!("/api/vendors/{vendor_id}/products"),
                Some(&member.token),
                Some(
                    json!({"sku": sku, "name": "Sencha", "description": "Green tea",
                            "price": {"amount": price, "currency": "EUR"},
                            "initial_stock": stock, "low_stock_threshold": 0}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let product_id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
        let admin = self.admin_token();
        eventually("the stock item", WAIT, || async {
            let (status, _) = self
                .inventory
                .call(
                    Method::GET,
                    &format!("/api/inventory/{product_id}"),
                    Some(&admin),
                    None,
                )
                .await;
            (status == StatusCode::OK).then_some(())
        })
        .await;
        product_id
    }

    /// Fills a cart with `lines` (product, quantity) and checks it out with
    /// `payment_token`; returns the 202's order id.
    pub async fn shop(&self, customer: &User, lines: &[(Uuid, i64)], payment_token: &str) -> Uuid {
        let (status, cart) = self
            .cart
            .call(Method::POST, "/api/carts", Some(&customer.token), None)
            .await;
        assert!(status.is_success(), "{status} {cart}");
        let cart_id = cart["id"].as_str().unwrap().to_owned();
        for &(product_id, quantity) in lines {
            let (status, body) = self
                .cart
                .call(
                    Method::POST,
                    &format!("/api/carts/{cart_id}/items"),
                    Some(&customer.token),
                    Some(json!({"product_id": product_id, "quantity": quantity})),
                )
                .await;
            assert!(status.is_success(), "{status} {body}");
        }
        let (status, body) = self
            .checkout(
                customer,
                &cart_id,
                &Uuid::new_v4().to_string(),
                payment_token,
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["order_id"].as_str().unwrap().parse().unwrap()
    }

    /// `POST /api/carts/{cart_id}/checkout` with `key` as the Idempotency-Key.
    pub async fn checkout(
        &self,
        customer: &User,
        cart_id: &str,
        key: &str,
        payment_token: &str,
    ) -> (StatusCode, Value) {
        let resp = self
            .cart
            .http()
            .post(self.cart.url(&format!("/api/carts/{cart_id}/checkout")))
            .bearer_auth(&customer.token)
            .header("Idempotency-Key", key)
            .json(&json!({
                "payment_token": payment_token,
                "shipping_address": {"name": "Ada Lovelace", "line1": "1 Analytical Way",
                                     "city": "London", "postal_code": "N1 1AA", "country": "GB"}
            }))
            .send()
            .await
            .expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("body read");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Waits until the order has `status`, then returns it as `user` reads it.
    pub async fn wait_order(&self, user: &User, order_id: Uuid, status: &str) -> Value {
        eventually(
            &format!("order {order_id} to be {status}"),
            WAIT,
            || async {
                let (code, body) = self
                    .order
                    .call(
                        Method::GET,
                        &format!("/api/orders/{order_id}"),
                        Some(&user.token),
                        None,
                    )
                    .await;
                (code == StatusCode::OK && body["status"] == status).then_some(body)
            },
        )
        .await
    }

    /// Publishes an event on this environment's exchange, as its publisher would.
    pub async fn publish<E: Event>(&self, source: Service, payload: E) -> Envelope<E> {
        mp_test_support::publish(&self.broker, source, payload).await
    }
}
