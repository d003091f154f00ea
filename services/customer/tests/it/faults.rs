//! A killed service and a dropped broker connection lose no event and apply none twice.

use std::time::Duration;

use mp_events::Service;
use mp_events::catalog::VendorCreated;
use mp_test_support::{TestEnv, eventually, wait_ready};
use sqlx::PgPool;
use uuid::Uuid;

async fn memberships(db: &PgPool, customer: Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from vendor_memberships where customer_id = $1")
        .bind(customer)
        .fetch_one(db)
        .await
        .unwrap()
}

/// Writes `n` vendor.created events for `owner` into the customer schema's outbox, as
/// if the vendor service had published them.
async fn publish_vendors(db: &PgPool, owner: Uuid, n: usize) {
    let mut tx = db.begin().await.unwrap();
    for i in 0..n {
        let event = VendorCreated {
            vendor_id: Uuid::now_v7(),
            owner_id: owner,
            name: format!("vendor {i}"),
            email: "v@example.org".into(),
            phone: None,
        };
        mp_events::enqueue(&mut tx, Service::Vendor, event)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_service_killed_mid_stream_loses_no_event_and_applies_each_once() {
    let env = TestEnv::new().with_quorum_queues();
    let (mut cmd, url) = env.command(Service::Customer, env!("CARGO_BIN_EXE_customer"));
    let mut first = cmd.spawn().unwrap();
    wait_ready(&url, Duration::from_secs(20)).await;
    let db = env.db(Service::Customer).await;
    let owner = Uuid::now_v7();
    publish_vendors(&db, owner, 300).await;

    // Kill -9 while the relay and the consumer are in the middle of the stream.
    eventually(
        "the stream to be under way",
        Duration::from_secs(20),
        || async { (memberships(&db, owner).await > 0).then_some(()) },
    )
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let at_kill = memberships(&db, owner).await;

    let (mut cmd, url) = env.command(Service::Customer, env!("CARGO_BIN_EXE_customer"));
    let mut second = cmd.spawn().unwrap();
    wait_ready(&url, Duration::from_secs(20)).await;
    eventually("every membership", Duration::from_secs(30), || async {
        (memberships(&db, owner).await == 300).then_some(())
    })
    .await;
    // The relay marks a batch sent after the broker confirmed it, which can be after the
    // consumer applied it: the outbox drains too before the process goes.
    eventually("the outbox drained", Duration::from_secs(30), || async {
        let unsent: i64 =
            sqlx::query_scalar("select count(*) from outbox where published_at is null")
                .fetch_one(&db)
                .await
                .unwrap();
        (unsent == 0).then_some(())
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();

    let inbox: i64 = sqlx::query_scalar(
        "select count(*) from inbox where handler = 'customer.vendor_membership'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let unsent: i64 = sqlx::query_scalar("select count(*) from outbox where published_at is null")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(inbox, 300, "each event handled exactly once");
    assert_eq!(unsent, 0);
    println!("killed after {at_kill}/300 memberships; all 300 applied once after restart");
}

#[tokio::test]
async fn a_dropped_broker_connection_heals_and_loses_no_event() {
    let env = TestEnv::new().with_quorum_queues();
    let svc = env
        .spawn(Service::Customer, |common, listener, shutdown| {
            customer::run(customer::Config::with_common(common), listener, shutdown)
        })
        .await;
    let db = env.db(Service::Customer).await;
    let owner = Uuid::now_v7();
    publish_vendors(&db, owner, 20).await;
    env.drop_broker_connection(Service::Customer).await;
    publish_vendors(&db, owner, 20).await;

    eventually("all 40 memberships", Duration::from_secs(20), || async {
        (memberships(&db, owner).await == 40).then_some(())
    })
    .await;
    let (status, _) = svc
        .call(reqwest::Method::GET, "/health/ready", None, None)
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
}
