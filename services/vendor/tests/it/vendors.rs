//! Vendors and members through the API, with real tokens from the customer service.

use std::time::Duration;

use mp_common::TokenKeys;
use mp_common::auth::USER_AUDIENCE;
use mp_events::catalog::{VendorCreated, VendorUpdated};
use mp_events::{Envelope, Service};
use mp_test_support::client::Problem;
use mp_test_support::clients::Expect;
use mp_test_support::clients::vendor::{AddMember, CreateVendor, UpdateVendor, Vendor};
use mp_test_support::eventually;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::harness::{Harness, product_body};

fn vendor(name: &str, email: &str, phone: Option<&str>) -> CreateVendor {
    CreateVendor {
        name: name.into(),
        email: email.into(),
        phone: phone.map(Into::into),
    }
}

#[tokio::test]
async fn creating_a_vendor_makes_the_caller_its_owner_and_writes_vendor_created() {
    let fleet = Harness::start().await;
    let client = fleet.client();
    let owner = fleet.customer("Ada").await;

    let created = vendor("  Tea & Cups ", "shop@teacups.test", Some("+49 30 123456"));
    let vendor = client
        .create_vendor(Some(&owner.token), &created)
        .await
        .expect_ok();
    assert_eq!(vendor.name, "Tea & Cups");
    assert_eq!(vendor.phone.as_deref(), Some("+4930123456"));

    let read = client.vendor(vendor.id).await.expect_ok();
    assert_eq!(read, vendor);

    let members = client
        .members(&owner.token, vendor.id, "")
        .await
        .expect_ok();
    assert_eq!(members.items.len(), 1);
    assert_eq!(members.items[0].customer_id, owner.id);
    assert_eq!(members.items[0].role, "owner");
    assert_eq!(members.next_cursor, None);

    let outbox = fleet.outbox().await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].0, "vendor.created");
    let event: Envelope<VendorCreated> = serde_json::from_value(outbox[0].1.clone()).unwrap();
    assert_eq!(event.payload.vendor_id, vendor.id);
    assert_eq!(event.payload.owner_id, owner.id);
}

#[tokio::test]
async fn vendor_created_reaches_the_customer_service_so_a_refreshed_token_carries_the_vendor() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let keys = TokenKeys::from_config(&fleet.env.config(Service::Customer)).unwrap();
    assert!(
        !keys
            .verify(&owner.token, USER_AUDIENCE)
            .unwrap()
            .vendors
            .contains(&vendor_id)
    );

    eventually(
        "the customer service to grant the membership",
        Duration::from_secs(10),
        || async {
            let me = fleet.customers().me(&owner.token).await.expect_ok();
            me.vendor_ids.contains(&vendor_id).then_some(())
        },
    )
    .await;

    let tokens = fleet
        .customers()
        .refresh(&owner.refresh_token)
        .await
        .expect_ok();
    let token = &tokens.access_token;
    let claims = keys.verify(token, USER_AUDIENCE).unwrap();
    assert_eq!(claims.vendors, vec![vendor_id]);
    assert!(claims.roles.iter().any(|r| r == "vendor"));

    let rename = UpdateVendor {
        name: Some("Renamed".into()),
        ..UpdateVendor::default()
    };
    fleet
        .client()
        .update_vendor(Some(token), vendor_id, &rename)
        .await
        .expect_ok();
}

#[tokio::test]
async fn an_owner_adds_a_member_who_may_list_products_at_once() {
    let fleet = Harness::start().await;
    let client = fleet.client();
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let clerk = fleet.customer("Clerk").await;

    client
        .create_product(&clerk.token, vendor_id, &product_body("EARLY-1"))
        .await
        .expect_problem(StatusCode::FORBIDDEN, None);

    let member = client
        .add_member(&owner.token, vendor_id, &AddMember::member(clerk.id))
        .await
        .expect_ok();
    assert_eq!(member.role, "member");

    // The clerk's token knows nothing of the vendor; the members table is enough.
    fleet
        .product(&clerk, vendor_id, &product_body("CLERK-1"))
        .await;

    client
        .add_member(
            &owner.token,
            vendor_id,
            &AddMember::with_role(clerk.id, "owner"),
        )
        .await
        .expect_problem(StatusCode::CONFLICT, None);

    let outsider = fleet.customer("Outsider").await;
    client
        .add_member(&clerk.token, vendor_id, &AddMember::member(outsider.id))
        .await
        .expect_problem(StatusCode::FORBIDDEN, None);

    client
        .add_member(
            &owner.token,
            vendor_id,
            &AddMember::with_role(outsider.id, "boss"),
        )
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, Some("role"));

    let page = client
        .members(&clerk.token, vendor_id, "?limit=1")
        .await
        .expect_ok();
    assert_eq!(page.items.len(), 1);
    let cursor = page.next_cursor.as_deref().expect("a next page");
    let rest = client
        .members(
            &clerk.token,
            vendor_id,
            &format!("?limit=1&cursor={cursor}"),
        )
        .await
        .expect_ok();
    assert_eq!(rest.items.len(), 1);
    assert_ne!(rest.items[0], page.items[0]);
    assert_eq!(rest.next_cursor, None);

    client
        .members(&outsider.token, vendor_id, "")
        .await
        .expect_problem(StatusCode::FORBIDDEN, None);
}

#[tokio::test]
async fn only_members_and_admins_may_change_a_vendor() {
    let fleet = Harness::start().await;
    let client = fleet.client();
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let name = |name: &str| UpdateVendor {
        name: Some(name.into()),
        ..UpdateVendor::default()
    };

    let stranger = fleet.customer("Stranger").await;
    client
        .update_vendor(Some(&stranger.token), vendor_id, &name("Mine now"))
        .await
        .expect_problem(StatusCode::FORBIDDEN, None);

    client
        .update_vendor(None, vendor_id, &name("Anon"))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, None);

    let invalid = UpdateVendor {
        email: Some("not an email".into()),
        name: Some(String::new()),
        phone: None,
    };
    client
        .update_vendor(Some(&owner.token), vendor_id, &invalid)
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, Some("email"))
        .assert(StatusCode::UNPROCESSABLE_ENTITY, Some("name"));

    let contact = UpdateVendor {
        phone: Some(None),
        email: Some("new@shop.test".into()),
        name: None,
    };
    let changed = client
        .update_vendor(Some(&owner.token), vendor_id, &contact)
        .await
        .expect_ok();
    assert_eq!(changed.phone, None);
    assert_eq!(changed.email, "new@shop.test");

    let admin = fleet.admin().await;
    client
        .update_vendor(Some(&admin.token), vendor_id, &name("Curated"))
        .await
        .expect_ok();
    let read = client.vendor(vendor_id).await.expect_ok();
    assert_eq!(read.name, "Curated");
    assert_eq!(read.email, "new@shop.test");

    // The same values again change nothing and tell no one.
    client
        .update_vendor(Some(&admin.token), vendor_id, &name("Curated"))
        .await
        .expect_ok();
    let updates = fleet.events::<VendorUpdated>().await;
    assert_eq!(
        updates.len(),
        2,
        "one vendor.updated per change: {updates:?}"
    );
    assert_eq!(updates[0].email, "new@shop.test");
    assert_eq!(updates[0].phone, None);
    assert_eq!(updates[0].revision, 2);
    assert_eq!(updates[1].name, "Curated");
    assert_eq!(updates[1].email, "new@shop.test");
    assert_eq!(updates[1].revision, 3);

    client
        .update_vendor(Some(&admin.token), Uuid::now_v7(), &name("Ghost"))
        .await
        .expect_problem(StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn invalid_vendors_are_refused_field_by_field_and_nothing_is_stored() {
    let fleet = Harness::start().await;
    let client = fleet.client();
    let user = fleet.customer("Ada").await;

    for (body, field) in [
        (vendor("", "a@shop.test", None), "name"),
        (vendor("Shop", "nope", None), "email"),
        (vendor("Shop", "a@shop.test", Some("0301234")), "phone"),
    ] {
        client
            .create_vendor(Some(&user.token), &body)
            .await
            .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, Some(field));
    }
    // What a typed body cannot write: a missing field, an unknown one.
    for (body, field) in [
        (json!({"email": "a@shop.test"}), "name"),
        (
            json!({"name": "Shop", "email": "a@shop.test", "owner_id": Uuid::now_v7()}),
            "owner_id",
        ),
    ] {
        client
            .create_vendor(Some(&user.token), &body)
            .await
            .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, Some(field));
    }
    // Malformed JSON.
    let (status, content_type, body) = client
        .0
        .call_text(
            Method::POST,
            "/api/vendors",
            Some(&user.token),
            "application/json",
            "{\"name\": ",
        )
        .await;
    Problem::from_parts(status, &content_type, body).assert(StatusCode::BAD_REQUEST, None);

    client
        .create_vendor(None, &vendor("Shop", "a@shop.test", None))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, None);

    let vendors: i64 = sqlx::query_scalar("select count(*) from vendors")
        .fetch_one(&fleet.vendor_db().await)
        .await
        .unwrap();
    assert_eq!(vendors, 0);
    assert!(fleet.outbox().await.is_empty());

    // A path the typed call cannot write: an id that is not a UUID.
    client
        .0
        .get::<Vendor>("/api/vendors/not-a-uuid", None)
        .await
        .expect_problem(StatusCode::BAD_REQUEST, None);
    client
        .vendor(Uuid::now_v7())
        .await
        .expect_problem(StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn an_added_member_gets_the_vendor_in_tokens_issued_afterwards() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let clerk = fleet.customer("Clerk").await;
    fleet
        .client()
        .add_member(&owner.token, vendor_id, &AddMember::member(clerk.id))
        .await
        .expect_ok();

    // vendor.member.added travels through the outbox and RabbitMQ to the customer service.
    let me = eventually(
        "the membership to reach the customer service",
        Duration::from_secs(10),
        || async {
            let me = fleet.customers().me(&clerk.token).await.expect_ok();
            (me.vendor_ids == [vendor_id]).then_some(me)
        },
    )
    .await;
    assert!(me.roles.iter().any(|r| r == "vendor"), "{me:?}");
    let fresh = fleet.login(&clerk.email, crate::harness::PASSWORD).await;
    let keys = TokenKeys::from_config(&fleet.env.config(Service::Customer)).unwrap();
    let claims = keys.verify(&fresh.token, USER_AUDIENCE).unwrap();
    assert_eq!(claims.vendors, vec![vendor_id]);
}
