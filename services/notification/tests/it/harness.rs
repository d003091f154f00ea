//! One notification service in its own environment, with a real SMTP server
//! ([`SmtpSink`]), a fake SMS provider shaped like Twilio's Messages API, a publisher
//! for the events other services would send, and a view of the service's database.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use axum::{Form, Json, Router};
use base64::Engine;
use mp_events::catalog::{CustomerCreated, LineItem, OrderStatus, OrderUpdated, VendorCreated};
use mp_events::{Broker, Currency, Envelope, Event, Money, Service};
use mp_test_support::api::Tokens;
use mp_test_support::client::Api;
use mp_test_support::clients::notification::NotificationApi;
use mp_test_support::smtp::SmtpSink;
use mp_test_support::{TestEnv, TestService, eventually};
use notification::config::{SmsProvider, SmtpTls};
use notification::{Config, Settings};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(20);
pub const SMS_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const SMS_TOKEN: &str = "test-auth-token-not-for-logs";
pub const SMS_FROM: &str = "+15005550006";

/// Settings for tests: the given SMTP port and SMS provider URL, quick retries.
pub fn settings(smtp_port: u16, sms_url: &str) -> Settings {
    Settings {
        smtp_host: "127.0.0.1".into(),
        smtp_port,
        smtp_tls: SmtpTls::None,
        smtp_username: None,
        smtp_password: None,
        mail_from: "Marketplace <no-reply@marketplace.test>".into(),
        sms_provider: SmsProvider::Twilio,
        sms_file: "unused.log".into(),
        sms_api_url: sms_url.to_owned(),
        sms_account_sid: SMS_SID.into(),
        sms_auth_token: Some(SMS_TOKEN.to_owned().into()),
        sms_from: SMS_FROM.into(),
        send_timeout_ms: 3_000,
        send_max_attempts: 3,
        send_retry_min_ms: 50,
        send_retry_max_ms: 300,
        send_lease_ms: 10_000,
        send_poll_ms: 50,
        send_batch: 16,
    }
}

/// An SMS as the fake provider received it.
#[derive(Debug, Clone)]
pub struct Sms {
    pub to: String,
    pub from: String,
    pub body: String,
}

/// A local HTTP server shaped like Twilio's Messages API: it checks the path and basic
/// auth, and records the form of every accepted message.
pub struct SmsProviderFake {
    pub url: String,
    received: Arc<Mutex<Vec<Sms>>>,
    stop: CancellationToken,
}

#[derive(Clone)]
struct FakeState {
    received: Arc<Mutex<Vec<Sms>>>,
}

async fn create_message(
    State(state): State<FakeState>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> (AxumStatus, Json<Value>) {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{SMS_SID}:{SMS_TOKEN}"))
    );
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if sid != SMS_SID || auth != expected {
        return (
            AxumStatus::UNAUTHORIZED,
            Json(json!({"code": 20003, "message": "Authenticate", "status": 401})),
        );
    }
    let (Some(to), Some(from), Some(body)) = (form.get("To"), form.get("From"), form.get("Body"))
    else {
        return (
            AxumStatus::BAD_REQUEST,
            Json(
                json!({"code": 21604, "message": "A 'To' phone number is required.", "status": 400}),
            ),
        );
    };
    if !to.starts_with('+') {
        return (
            AxumStatus::BAD_REQUEST,
            Json(
                json!({"code": 21211, "message": format!("The 'To' number {to} is not a valid phone number."), "status": 400}),
            ),
        );
    }
    state.received.lock().unwrap().push(Sms {
        to: to.clone(),
        from: from.clone(),
        body: body.clone(),
    });
    (
        AxumStatus::CREATED,
        Json(
            json!({"sid": format!("SM{}", Uuid::new_v4().simple()), "status": "queued", "to": to, "body": body}),
        ),
    )
}

impl SmsProviderFake {
    pub async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                post(create_message),
            )
            .with_state(FakeState {
                received: received.clone(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .unwrap();
        });
        Self {
            url,
            received,
            stop,
        }
    }

    pub fn messages(&self) -> Vec<Sms> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for SmsProviderFake {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A notification row as the tests look at it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub id: Uuid,
    pub event_id: Uuid,
    pub channel: String,
    pub recipient: Option<String>,
    pub template: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub order_id: Option<Uuid>,
}

pub struct Harness {
    // The service first: it stops before the environment drops its schema.
    pub svc: TestService,
    pub smtp: Option<SmtpSink>,
    pub smtp_port: u16,
    pub sms: SmsProviderFake,
    pub db: PgPool,
    pub tokens: Tokens,
    broker: Broker,
    /// Kept for its drop, which removes the test's schema and keys.
    _env: TestEnv,
}

impl Harness {
    /// A second instance of the service on the same schema and queue, as a replica
    /// would run, sending to the same SMTP server and SMS provider.
    pub async fn spawn_replica(&self) -> TestService {
        let settings = settings(self.smtp_port, &self.sms.url);
        self._env
            .spawn(Service::Notification, move |common, listener, shutdown| {
                notification::run(Config { common, settings }, listener, shutdown)
            })
            .await
    }

    pub async fn start() -> Self {
        let smtp = SmtpSink::start().await;
        let sms = SmsProviderFake::start().await;
        let env = TestEnv::new();
        let settings = settings(smtp.port(), &sms.url);
        let svc = env
            .spawn(Service::Notification, move |common, listener, shutdown| {
                notification::run(Config { common, settings }, listener, shutdown)
            })
            .await;
        let config = env.config(Service::Notification);
        let tokens = Tokens::new(&env);
        let broker = Broker::new(config.amqp_url.clone(), config.topology(), None);
        let db = env.db(Service::Notification).await;
        Self {
            svc,
            smtp_port: smtp.port(),
            smtp: Some(smtp),
            sms,
            db,
            tokens,
            broker,
            _env: env,
        }
    }

    /// Emails the SMTP server received.
    pub fn emails(&self) -> Vec<mp_test_support::smtp::ReceivedMail> {
        self.smtp
            .as_ref()
            .map(SmtpSink::messages)
            .unwrap_or_default()
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

    /// A registered customer the service knows (customer.created handled).
    pub async fn customer(&self, name: &str, phone: Option<&str>) -> CustomerCreated {
        let customer_id = Uuid::now_v7();
        let created = CustomerCreated {
            customer_id,
            email: format!(
                "{}.{}@example.test",
                name.to_lowercase(),
                &customer_id.simple().to_string()[24..]
            ),
            name: name.to_owned(),
            phone: phone.map(str::to_owned),
            revision: 1,
        };
        self.publish(Service::Customer, created.clone()).await;
        self.wait_contact("customer", customer_id).await;
        created
    }

    /// A vendor the service knows (vendor.created handled).
    pub async fn vendor(&self, name: &str, email: &str) -> VendorCreated {
        let created = VendorCreated {
            vendor_id: Uuid::now_v7(),
            owner_id: Uuid::now_v7(),
            name: name.to_owned(),
            email: email.to_owned(),
            phone: None,
        };
        self.publish(Service::Vendor, created.clone()).await;
        self.wait_contact("vendor", created.vendor_id).await;
        created
    }

    pub async fn wait_contact(&self, kind: &str, id: Uuid) {
        eventually(&format!("the {kind} contact"), WAIT, || async {
            sqlx::query_scalar::<_, bool>("select true from contacts where kind = $1 and id = $2")
                .bind(kind)
                .bind(id)
                .fetch_optional(&self.db)
                .await
                .unwrap()
        })
        .await;
    }

    /// The email address the contact model holds for `(kind, id)`.
    pub async fn contact_email(&self, kind: &str, id: Uuid) -> Option<String> {
        sqlx::query_scalar("select email from contacts where kind = $1 and id = $2")
            .bind(kind)
            .bind(id)
            .fetch_optional(&self.db)
            .await
            .unwrap()
    }

    /// Every notification, oldest first.
    pub async fn rows(&self) -> Vec<Row> {
        sqlx::query_as(
            "select id, event_id, channel, recipient, template, status, attempts,
                    last_error, order_id
             from notifications order by id",
        )
        .fetch_all(&self.db)
        .await
        .unwrap()
    }

    /// Waits until the notifications of `event_id` are `n` and none is pending.
    pub async fn settled(&self, event_id: Uuid, n: usize) -> Vec<Row> {
        eventually(
            &format!("{n} settled notification(s) of {event_id}"),
            WAIT,
            || async {
                let rows: Vec<Row> = self
                    .rows()
                    .await
                    .into_iter()
                    .filter(|r| r.event_id == event_id)
                    .collect();
                (rows.len() == n && rows.iter().all(|r| r.status != "pending")).then_some(rows)
            },
        )
        .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.svc.call(Method::GET, path, token, None).await
    }

    /// The notification service's HTTP API.
    pub fn api(&self) -> Api {
        self.svc.api()
    }

    /// The notification service's API, typed.
    pub fn client(&self) -> NotificationApi {
        NotificationApi(self.svc.api())
    }
}

pub fn line(name: &str, quantity: i64, unit_price: Money) -> LineItem {
    LineItem {
        product_id: Uuid::now_v7(),
        vendor_id: Uuid::now_v7(),
        name: name.to_owned(),
        quantity,
        unit_price,
    }
}

/// An order of `customer_id` that reached `status`: two lines in USD, 33.99 in all.
pub fn order_updated(customer_id: Uuid, status: OrderStatus) -> OrderUpdated {
    OrderUpdated {
        order_id: Uuid::now_v7(),
        customer_id,
        cart_id: Uuid::now_v7(),
        status,
        previous_status: Some(OrderStatus::Paid),
        reason: None,
        stock_committed: status == OrderStatus::Confirmed,
        items: vec![
            line("Earl Grey tea", 2, Money::new(1250, Currency::USD)),
            line("Blue mug", 1, Money::new(899, Currency::USD)),
        ],
        total: Money::new(3399, Currency::USD),
    }
}
