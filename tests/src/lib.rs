//! A fleet harness for cross-service tests: the services started in this process on
//! port 0 in one isolated [`TestEnv`], tokens signed by the environment's keys, a
//! publisher for events of services not started, and readers of each service's schema.
//!
//! Tests call the services through [`Fleet::api`], their typed clients
//! (`mp_test_support::clients`); [`Fleet::shop`] fills a cart and checks it out as a
//! customer would.

use std::time::Duration;

use mp_common::TokenKeys;
use mp_common::auth::USER_AUDIENCE;
use mp_events::{Broker, Envelope, Event, Service};
use mp_test_support::clients::cart::{AddItem, CartApi, Checkout, CheckoutAccepted};
use mp_test_support::clients::customer::{CustomerApi, Register, Tokens};
use mp_test_support::clients::inventory::InventoryApi;
use mp_test_support::clients::notification::NotificationApi;
use mp_test_support::clients::order::{Order, OrderApi};
use mp_test_support::clients::vendor::{CreateProduct, CreateVendor, VendorApi};
use mp_test_support::clients::{ApiResult, Expect, Reply};
use mp_test_support::{TestEnv, TestService, eventually};
use sqlx::PgPool;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(30);
pub const PASSWORD: &str = "correct horse battery";

/// Logs `email` in (with [`PASSWORD`]) at a customer service; the session's tokens.
pub async fn login(customer: &TestService, email: &str) -> Tokens {
    CustomerApi(customer.api())
        .login(email, PASSWORD)
        .await
        .expect_ok()
}

/// The typed clients of the six services.
#[derive(Debug, Clone)]
pub struct Clients {
    pub customer: CustomerApi,
    pub vendor: VendorApi,
    pub inventory: InventoryApi,
    pub order: OrderApi,
    pub notification: NotificationApi,
    pub cart: CartApi,
}

pub struct Fleet {
    pub api: Clients,
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
        let api = Clients {
            customer: CustomerApi(customer.api()),
            vendor: VendorApi(vendor.api()),
            inventory: InventoryApi(inventory.api()),
            order: OrderApi(order.api()),
            notification: NotificationApi(notification.api()),
            cart: CartApi(cart.api()),
        };
        Self {
            api,
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
        let customer = self
            .api
            .customer
            .register(&Register {
                email: email.clone(),
                password: PASSWORD.into(),
                name: name.into(),
                phone: Some("+4915112345678".into()),
            })
            .await
            .expect_ok();
        self.login(customer.id, &email).await
    }

    /// Logs in again (a new token carries memberships granted since).
    pub async fn login(&self, id: Uuid, email: &str) -> User {
        let tokens = self.api.customer.login(email, PASSWORD).await.expect_ok();
        User {
            id,
            email: email.to_owned(),
            token: tokens.access_token,
            refresh_token: tokens.refresh_token,
        }
    }

    /// `owner` opens a vendor; returns its id and the owner with a token carrying it.
    pub async fn open_vendor(&self, owner: &User, name: &str) -> (Uuid, User) {
        let vendor = self
            .api
            .vendor
            .create_vendor(
                Some(&owner.token),
                &CreateVendor {
                    name: name.into(),
                    email: owner.email.clone(),
                    phone: Some("+4930123456".into()),
                },
            )
            .await
            .expect_ok();
        let member = eventually("the membership in a new token", WAIT, || async {
            let user = self.login(owner.id, &owner.email).await;
            let claims = self
                .keys
                .verify(&user.token, USER_AUDIENCE)
                .expect("a valid access token");
            let has = claims.vendors.contains(&vendor.id);
            has.then_some(user)
        })
        .await;
        (vendor.id, member)
    }

    /// A product of `vendor_id` listed by `member` with `stock` units at `price` cents;
    /// waits until inventory holds its stock.
    pub async fn product(&self, member: &User, vendor_id: Uuid, stock: i64, price: i64) -> Uuid {
        let sku = format!("SKU-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let product = CreateProduct {
            name: "Sencha".into(),
            description: "Green tea".into(),
            ..CreateProduct::mug(&sku, price, stock)
        };
        let product = self
            .api
            .vendor
            .create_product(&member.token, vendor_id, &product)
            .await
            .expect_ok();
        let admin = self.admin_token();
        eventually("the stock item", WAIT, || async {
            self.api.inventory.stock(&admin, product.id).await.ok()
        })
        .await;
        product.id
    }

    /// Fills a cart with `lines` (product, quantity) and checks it out with
    /// `payment_token`; returns the 202's order id.
    pub async fn shop(&self, customer: &User, lines: &[(Uuid, i64)], payment_token: &str) -> Uuid {
        let cart_id = self.fill_cart(&customer.token, lines).await;
        self.checkout(
            customer,
            cart_id,
            &Uuid::new_v4().to_string(),
            payment_token,
        )
        .await
        .expect_ok()
        .body
        .order_id
    }

    /// Opens the caller's cart and adds `lines` (product, quantity); the cart's id.
    pub async fn fill_cart(&self, token: &str, lines: &[(Uuid, i64)]) -> Uuid {
        let cart = self.api.cart.open(token).await.expect_ok().body;
        for &(product_id, quantity) in lines {
            self.api
                .cart
                .add_item(
                    token,
                    cart.id,
                    &AddItem {
                        product_id,
                        quantity,
                    },
                )
                .await
                .expect_ok();
        }
        cart.id
    }

    /// `POST /api/carts/{cart_id}/checkout` with `key` as the Idempotency-Key.
    pub async fn checkout(
        &self,
        customer: &User,
        cart_id: Uuid,
        key: &str,
        payment_token: &str,
    ) -> ApiResult<Reply<CheckoutAccepted>> {
        self.api
            .cart
            .checkout(
                &customer.token,
                cart_id,
                Some(key),
                &Checkout::paying_with(payment_token),
            )
            .await
    }

    /// Waits until the order has `status`, then returns it as `user` reads it.
    pub async fn wait_order(&self, user: &User, order_id: Uuid, status: &str) -> Order {
        eventually(
            &format!("order {order_id} to be {status}"),
            WAIT,
            || async {
                let order = self.api.order.get(&user.token, order_id).await.ok()?;
                (order.status == status).then_some(order)
            },
        )
        .await
    }

    /// Publishes an event on this environment's exchange, as its publisher would.
    pub async fn publish<E: Event>(&self, source: Service, payload: E) -> Envelope<E> {
        mp_test_support::publish(&self.broker, source, payload).await
    }
}
