//! A customer and a vendor service in one isolated test environment, with a typed way to
//! get real users and tokens, vendors and products.

use std::time::Duration;

use lapin::options::BasicGetOptions;
use mp_events::{Broker, Envelope, Event, Service};
use mp_test_support::clients::Expect;
use mp_test_support::clients::customer::{CustomerApi, Register};
use mp_test_support::clients::vendor::{CreateProduct, CreateVendor, Product, VendorApi};
use mp_test_support::{TestEnv, TestService, eventually};
use serde_json::Value;
use uuid::Uuid;

pub const ADMIN_EMAIL: &str = "root@marketplace.test";
pub const ADMIN_PASSWORD: &str = "keys to the kingdom 42";
pub const PASSWORD: &str = "correct horse battery";

/// A logged-in customer.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub token: String,
    pub refresh_token: String,
}

pub struct Harness {
    // Services first: they stop before the environment drops their schemas.
    pub customer: TestService,
    pub vendor: TestService,
    pub env: TestEnv,
}

impl Harness {
    pub async fn start() -> Self {
        let env = TestEnv::new();
        let customer = env
            .spawn(Service::Customer, |common, listener, shutdown| {
                let mut config = customer::Config::with_common(common);
                config.settings.admin_email = Some(ADMIN_EMAIL.into());
                config.settings.admin_password = Some(ADMIN_PASSWORD.into());
                customer::run(config, listener, shutdown)
            })
            .await;
        let vendor = env
            .spawn(Service::Vendor, |common, listener, shutdown| {
                vendor::run(vendor::Config::with_common(common), listener, shutdown)
            })
            .await;
        Self {
            customer,
            vendor,
            env,
        }
    }

    /// The customer service's API, typed.
    pub fn customers(&self) -> CustomerApi {
        CustomerApi(self.customer.api())
    }

    /// The vendor service's API, typed.
    pub fn client(&self) -> VendorApi {
        VendorApi(self.vendor.api())
    }

    /// Registers a customer and logs them in.
    pub async fn customer(&self, name: &str) -> User {
        let email = format!(
            "{}-{}@shop.test",
            name.to_lowercase(),
            Uuid::new_v4().simple()
        );
        let register = Register {
            email: email.clone(),
            password: PASSWORD.into(),
            name: name.into(),
            phone: None,
        };
        self.customers().register(&register).await.expect_ok();
        self.login(&email, PASSWORD).await
    }

    pub async fn login(&self, email: &str, password: &str) -> User {
        let tokens = self.customers().login(email, password).await.expect_ok();
        let me = self.customers().me(&tokens.access_token).await.expect_ok();
        User {
            id: me.id,
            email: email.to_owned(),
            token: tokens.access_token,
            refresh_token: tokens.refresh_token,
        }
    }

    pub async fn admin(&self) -> User {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Creates a vendor owned by `owner`; returns its id.
    pub async fn vendor_of(&self, owner: &User, name: &str) -> Uuid {
        let vendor = CreateVendor {
            name: name.into(),
            email: "orders@shop.test".into(),
            phone: Some("+4930123456".into()),
        };
        self.client()
            .create_vendor(Some(&owner.token), &vendor)
            .await
            .expect_ok()
            .id
    }

    /// A new customer owning a new vendor. Their token does not carry the vendor yet.
    pub async fn vendor_owner(&self, name: &str) -> (User, Uuid) {
        let owner = self.customer(name).await;
        let vendor_id = self.vendor_of(&owner, &format!("{name}'s shop")).await;
        (owner, vendor_id)
    }

    /// Lists a product (see [`product_body`]) and returns it.
    pub async fn product(&self, user: &User, vendor_id: Uuid, product: &CreateProduct) -> Product {
        self.client()
            .create_product(&user.token, vendor_id, product)
            .await
            .expect_ok()
    }

    pub async fn vendor_db(&self) -> sqlx::PgPool {
        self.env.db(Service::Vendor).await
    }

    /// Event types in the vendor's outbox, oldest first.
    pub async fn outbox(&self) -> Vec<(String, Value)> {
        mp_test_support::api::outbox(&self.vendor_db().await).await
    }

    /// The vendor's `E` events, oldest first.
    pub async fn events<E: Event>(&self) -> Vec<E> {
        mp_test_support::api::outbox_events(&self.vendor_db().await).await
    }

    /// Publishes an event on this environment's exchange, as its publisher would.
    pub async fn publish<E: Event>(&self, envelope: &Envelope<E>) {
        let config = self.env.config(Service::Inventory);
        let broker = Broker::new(config.amqp_url.clone(), config.topology(), None);
        mp_test_support::publish_envelope(&broker, envelope).await;
        broker.close().await;
    }

    /// Waits for a message of `event_type` in `service`'s queue and returns its envelope.
    pub async fn next_message(&self, service: Service, event_type: &str) -> Envelope {
        let config = self.env.config(service);
        let broker = Broker::new(config.amqp_url.clone(), config.topology(), None);
        // A busy broker can take longer than one connection attempt allows.
        let channel = eventually("a RabbitMQ channel", Duration::from_secs(30), || async {
            broker.channel().await.ok()
        })
        .await;
        let queue = broker.topology().queue(service);
        let (channel, queue_ref) = (&channel, &queue);
        let envelope = eventually(
            &format!("{event_type} in {queue}"),
            Duration::from_secs(10),
            move || async move {
                let got = channel
                    .basic_get(queue_ref, BasicGetOptions { no_ack: true })
                    .await
                    .unwrap()?;
                let envelope: Envelope = serde_json::from_slice(&got.delivery.data).unwrap();
                (envelope.event_type == event_type).then_some(envelope)
            },
        )
        .await;
        broker.close().await;
        envelope
    }
}

/// A valid product with this SKU: 12.99 EUR, 25 in stock, alerted at 5.
pub fn product_body(sku: &str) -> CreateProduct {
    CreateProduct {
        low_stock_threshold: 5,
        ..CreateProduct::mug(sku, 1299, 25)
    }
}
