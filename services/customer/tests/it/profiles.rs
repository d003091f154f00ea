//! Profiles and the admin: who may read whom, the admin ensured once, updates saved,
//! published and validated.

use mp_events::Service;
use mp_test_support::TestEnv;
use mp_test_support::clients::Expect;
use mp_test_support::clients::customer::{Customer, UpdateProfile};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::harness::*;

#[tokio::test]
async fn a_customer_cannot_read_another_customer_but_an_admin_can() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    let api = client(&svc);
    let erin = register(&svc, "erin@example.org").await;
    register(&svc, "frank@example.org").await;
    let (frank, _) = tokens(&svc, "frank@example.org", PASSWORD).await;

    api.customer(&frank, erin.id)
        .await
        .expect_problem(StatusCode::FORBIDDEN, None);
    // A path the typed call cannot write: an id that is not a UUID.
    api.0
        .get::<Customer>("/api/customers/not-a-uuid", Some(&frank))
        .await
        .expect_problem(StatusCode::BAD_REQUEST, None);

    let (admin, _) = tokens(&svc, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let read = api.customer(&admin, erin.id).await.expect_ok();
    assert_eq!(read.email, "erin@example.org");
    api.customer(&admin, Uuid::new_v4())
        .await
        .expect_problem(StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn the_admin_is_ensured_once_at_start_up() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    svc.stop().await.unwrap();
    let svc = spawn(&env).await;
    let (admin, _) = tokens(&svc, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let me = client(&svc).me(&admin).await.expect_ok();
    assert!(me.roles.iter().any(|r| r == "admin"), "{me:?}");
    let admins: i64 = sqlx::query_scalar("select count(*) from customers where is_admin")
        .fetch_one(&env.db(Service::Customer).await)
        .await
        .unwrap();
    assert_eq!(admins, 1);
}

#[tokio::test]
async fn a_profile_update_is_saved_published_and_validated() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    let api = client(&svc);
    register(&svc, "heidi@example.org").await;
    let (access, _) = tokens(&svc, "heidi@example.org", PASSWORD).await;

    let change = UpdateProfile {
        name: Some("Heidi K".into()),
        phone: Some(None),
    };
    let updated = api.update_me(&access, &change).await.expect_ok();
    assert_eq!(updated.name, "Heidi K");
    assert_eq!(updated.phone, None);

    let bad_phone = UpdateProfile {
        phone: Some(Some("0800 123".into())),
        ..UpdateProfile::default()
    };
    api.update_me(&access, &bad_phone)
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, None);
    // What a typed body cannot write: a field that cannot change.
    api.update_me(&access, &json!({"email": "x@example.org"}))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, None);

    let me = api.me(&access).await.expect_ok();
    assert_eq!((me.name.as_str(), me.phone.as_deref()), ("Heidi K", None));
    let updates: i64 =
        sqlx::query_scalar("select count(*) from outbox where event_type = 'customer.updated'")
            .fetch_one(&env.db(Service::Customer).await)
            .await
            .unwrap();
    assert_eq!(updates, 1);
}

#[tokio::test]
async fn an_existing_customer_is_never_promoted_by_the_admin_setting() {
    let env = TestEnv::new();
    let plain = env
        .spawn(Service::Customer, |common, listener, shutdown| {
            customer::run(customer::Config::with_common(common), listener, shutdown)
        })
        .await;
    // Someone registered the address before the operator configured it as the admin's.
    register(&plain, ADMIN_EMAIL).await;
    let (early_session, _) = tokens(&plain, ADMIN_EMAIL, PASSWORD).await;
    plain.stop().await.unwrap();

    let svc = spawn(&env).await;
    let me = client(&svc).me(&early_session).await.expect_ok();
    assert_eq!(me.roles, ["customer"], "{me:?}");
    // The password was not replaced.
    login(&svc, ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, None);
    let admins: i64 = sqlx::query_scalar("select count(*) from customers where is_admin")
        .fetch_one(&env.db(Service::Customer).await)
        .await
        .unwrap();
    assert_eq!(admins, 0);
}
