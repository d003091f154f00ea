//! Helpers for API tests: tokens signed with an environment's keys (no customer service
//! needed), problem+json assertions on raw answers, and a view of a service's outbox.

use mp_common::TokenKeys;
use mp_events::Service;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::TestEnv;
use crate::client::Problem;

/// Signs user and service tokens the services of a [`TestEnv`] accept.
pub struct Tokens(TokenKeys);

impl Tokens {
    pub fn new(env: &TestEnv) -> Self {
        Self(TokenKeys::from_config(&env.config(Service::Customer)).expect("token keys"))
    }

    /// A user token for `user_id` with `roles` and vendor memberships.
    pub fn user(&self, user_id: Uuid, roles: &[&str], vendors: Vec<Uuid>) -> String {
        let roles = roles.iter().map(|r| (*r).to_owned()).collect();
        self.0.user_token(user_id, Uuid::new_v4(), roles, vendors).0
    }

    pub fn customer(&self, user_id: Uuid) -> String {
        self.user(user_id, &["customer"], vec![])
    }

    pub fn admin(&self) -> String {
        self.user(Uuid::now_v7(), &["customer", "admin"], vec![])
    }

    pub fn member(&self, user_id: Uuid, vendor_id: Uuid) -> String {
        self.user(user_id, &["customer", "vendor"], vec![vendor_id])
    }

    /// A token of a new user who is a member of `vendor_id`.
    pub fn member_of(&self, vendor_id: Uuid) -> String {
        self.member(Uuid::now_v7(), vendor_id)
    }

    /// A token of `service` for calling `target`.
    pub fn service(&self, service: Service, target: Service) -> String {
        self.0.service_token(service, target).0
    }
}

/// Asserts a problem+json body with `expected` status, naming `field` when given (see
/// [`Problem::assert`], which typed calls use).
#[track_caller]
pub fn assert_problem(status: StatusCode, body: &Value, expected: StatusCode, field: Option<&str>) {
    Problem::from_parts(status, "", body.clone()).assert(expected, field);
}

/// The payloads of the `E` events in the outbox of the schema `pool` works in, oldest
/// first, read as the catalog's type (a payload that is not one fails the test).
pub async fn outbox_events<E: mp_events::Event>(pool: &sqlx::PgPool) -> Vec<E> {
    let payloads: Vec<Value> = sqlx::query_scalar(
        "select envelope -> 'payload' from outbox where event_type = $1 order by seq",
    )
    .bind(E::TYPE)
    .fetch_all(pool)
    .await
    .expect("outbox readable");
    payloads
        .into_iter()
        .map(|p| {
            serde_json::from_value(p.clone())
                .unwrap_or_else(|e| panic!("a {} payload: {e}: {p}", E::TYPE))
        })
        .collect()
}

/// Every outbox row of the schema `pool` works in, oldest first: (type, envelope).
pub async fn outbox(pool: &sqlx::PgPool) -> Vec<(String, Value)> {
    sqlx::query_as("select event_type, envelope from outbox order by seq")
        .fetch_all(pool)
        .await
        .expect("outbox readable")
}
