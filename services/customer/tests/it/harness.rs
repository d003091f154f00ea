//! The customer service of one isolated environment, and the calls most tests make:
//! register, log in, count the customers.

use mp_events::Service;
use mp_test_support::clients::customer::{Customer, CustomerApi, Register, Tokens};
use mp_test_support::clients::{ApiResult, Expect};
use mp_test_support::{TestEnv, TestService};

pub const ADMIN_EMAIL: &str = "root@marketplace.test";
pub const ADMIN_PASSWORD: &str = "admin password for tests";
pub const PASSWORD: &str = "correct horse battery";

pub async fn spawn(env: &TestEnv) -> TestService {
    env.spawn(Service::Customer, |common, listener, shutdown| {
        let mut config = customer::Config::with_common(common);
        config.settings.admin_email = Some(ADMIN_EMAIL.into());
        config.settings.admin_password = Some(ADMIN_PASSWORD.into());
        config.settings.login_max_failures = 3;
        customer::run(config, listener, shutdown)
    })
    .await
}

/// The customer service's API, typed.
pub fn client(svc: &TestService) -> CustomerApi {
    CustomerApi(svc.api())
}

/// Registers Ada Lovelace's profile under `email` with [`PASSWORD`].
pub async fn register(svc: &TestService, email: &str) -> Customer {
    let register = Register {
        email: email.into(),
        password: PASSWORD.into(),
        name: "Ada Lovelace".into(),
        phone: Some("+44 20 7946 0958".into()),
    };
    client(svc).register(&register).await.expect_ok()
}

pub async fn login(svc: &TestService, email: &str, password: &str) -> ApiResult<Tokens> {
    client(svc).login(email, password).await
}

/// A session's (access, refresh) tokens.
pub async fn tokens(svc: &TestService, email: &str, password: &str) -> (String, String) {
    let tokens = login(svc, email, password).await.expect_ok();
    (tokens.access_token, tokens.refresh_token)
}

pub async fn customer_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("select count(*) from customers")
        .fetch_one(&env.db(Service::Customer).await)
        .await
        .unwrap()
}
