//! Least privilege between services: each runs as a PostgreSQL role of its own that
//! owns its schema and nothing else, and a Redis user restricted to its own keys, and
//! every flow still works that way.

use mp_events::Service;
use mp_integration_tests::{Fleet, WAIT};

/// The whole shop, every service on its own credentials: a checkout is confirmed and
/// the customer told, a login session refreshes and logs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_works_on_its_own_role_and_redis_user() {
    let f = Fleet::with_own_credentials().await;
    let owner = f.register("Tea Owner").await;
    let (vendor_id, owner) = f.open_vendor(&owner, "Tea House").await;
    let product = f.product(&owner, vendor_id, 10, 850).await;
    let customer = f.register("Ada Lovelace").await;
    let order_id = f.shop(&customer, &[(product, 2)], "tok_visa").await;
    f.wait_order(&customer, order_id, "confirmed").await;
    let notification_db = f.db(Service::Notification).await;
    mp_test_support::eventually("the confirmation email and SMS", WAIT, || async {
        let n: i64 = sqlx::query_scalar("select count(*) from notifications where order_id = $1")
            .bind(order_id)
            .fetch_one(&notification_db)
            .await
            .unwrap();
        (n >= 2).then_some(())
    })
    .await;
}

/// The order service's role may not read or write the customer service's tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_role_cannot_touch_another_services_tables() {
    let f = Fleet::with_own_credentials().await;
    f.register("Ada Lovelace").await;
    let as_order = sqlx::PgPool::connect(&f.env.config(Service::Order).database_url)
        .await
        .unwrap();
    let customers = format!("{}.customers", f.env.schema(Service::Customer));
    for statement in [
        format!("select count(*) from {customers}"),
        format!("delete from {customers}"),
        format!("update {customers} set name = 'mallory'"),
    ] {
        let err = sqlx::query(&statement)
            .execute(&as_order)
            .await
            .expect_err(&statement);
        let code = err
            .as_database_error()
            .and_then(|d| d.code())
            .unwrap_or_default();
        assert_eq!(code, "42501", "{statement}: permission denied, got {err}");
    }
    // Its own schema it owns.
    let own = format!(
        "select count(*) from {}.orders",
        f.env.schema(Service::Order)
    );
    sqlx::query(&own).execute(&as_order).await.unwrap();
}

/// The order service's Redis user reads sessions and revocation markers (to verify
/// tokens) but can neither write a session nor delete a revocation marker, and sees
/// no other service's keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_redis_user_cannot_forge_a_session_or_lift_a_revocation() {
    let f = Fleet::with_own_credentials().await;
    let user = f.register("Ada Lovelace").await;
    let prefix = format!("t_{}", f.env.id);
    let mut as_order = mp_common::redis::connect(&f.env.config(Service::Order).redis_url)
        .await
        .unwrap();
    let refused = |r: redis::RedisResult<()>| {
        let e = r.expect_err("refused");
        assert!(e.to_string().contains("NOPERM"), "{e}");
    };
    refused(
        redis::cmd("SET")
            .arg(format!("{prefix}:auth:session:forged"))
            .arg("{}")
            .query_async(&mut as_order)
            .await,
    );
    refused(
        redis::cmd("DEL")
            .arg(format!("{prefix}:auth:revoked:any"))
            .query_async(&mut as_order)
            .await,
    );
    refused(
        redis::cmd("GET")
            .arg(format!("{prefix}:inv:{{x}}:stock"))
            .query_async(&mut as_order)
            .await,
    );
    refused(redis::cmd("FLUSHALL").query_async(&mut as_order).await);
    let _: Option<String> = redis::cmd("GET")
        .arg(format!("{prefix}:auth:revoked:any"))
        .query_async(&mut as_order)
        .await
        .expect("reading a revocation marker is allowed");
    // And the customer service's own user does its work: the session refreshes.
    let (status, body) = f
        .customer
        .call(
            reqwest::Method::POST,
            "/api/auth/refresh",
            None,
            Some(serde_json::json!({"refresh_token": user.refresh_token})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
}
