//! Vendors and members through the API, with real tokens from the customer service.

use std::time::Duration;

use mp_common::TokenKeys;
use mp_common::auth::USER_AUDIENCE;
use mp_events::Service;
use mp_test_support::api::assert_problem;
use mp_test_support::eventually;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::harness::Harness;

#[tokio::test]
async fn creating_a_vendor_makes_the_caller_its_owner_and_writes_vendor_created() {
    let fleet = Harness::start().await;
    let owner = fleet.customer("Ada").await;

    let (status, vendor) = fleet
        .vendor
        .call(
            Method::POST,
            "/api/vendors",
            Some(&owner.token),
            Some(json!({"name": "  Tea & Cups ", "email": "shop@teacups.test", "phone": "+49 30 123456"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{vendor}");
    assert_eq!(vendor["name"], "Tea & Cups");
    assert_eq!(vendor["phone"], "+4930123456");
    let id = vendor["id"].as_str().unwrap();

    let (status, read) = fleet.get(&format!("/api/vendors/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, vendor);

    let (status, members) = fleet
        .get(&format!("/api/vendors/{id}/members"), Some(&owner.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{members}");
    assert_eq!(members["items"].as_array().unwrap().len(), 1);
    assert_eq!(members["items"][0]["customer_id"], owner.id.to_string());
    assert_eq!(members["items"][0]["role"], "owner");
    assert_eq!(members["next_cursor"], serde_json::Value::Null);

    let outbox = fleet.outbox().await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].0, "vendor.created");
    assert_eq!(outbox[0].1["payload"]["vendor_id"], id);
    assert_eq!(outbox[0].1["payload"]["owner_id"], owner.id.to_string());
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
            let (_, me) = fleet
                .customer
                .call(Method::GET, "/api/customers/me", Some(&owner.token), None)
                .await;
            me["vendor_ids"]
                .as_array()?
                .contains(&json!(vendor_id))
                .then_some(())
        },
    )
    .await;

    let (status, tokens) = fleet
        .customer
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": owner.refresh_token})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let token = tokens["access_token"].as_str().unwrap();
    let claims = keys.verify(token, USER_AUDIENCE).unwrap();
    assert_eq!(claims.vendors, vec![vendor_id]);
    assert!(claims.roles.iter().any(|r| r == "vendor"));

    let (status, _) = fleet
        .patch(
            &format!("/api/vendors/{vendor_id}"),
            token,
            json!({"name": "Renamed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn an_owner_adds_a_member_who_may_list_products_at_once() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let clerk = fleet.customer("Clerk").await;
    let members = format!("/api/vendors/{vendor_id}/members");

    let (status, _) = fleet
        .vendor
        .call(
            Method::POST,
            &format!("/api/vendors/{vendor_id}/products"),
            Some(&clerk.token),
            Some(crate::harness::product_body("EARLY-1")),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, member) = fleet
        .vendor
        .call(
            Method::POST,
            &members,
            Some(&owner.token),
            Some(json!({"customer_id": clerk.id})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    assert_eq!(member["role"], "member");

    // The clerk's token knows nothing of the vendor; the members table is enough.
    fleet
        .product(&clerk, vendor_id, crate::harness::product_body("CLERK-1"))
        .await;

    let (status, body) = fleet
        .vendor
        .call(
            Method::POST,
            &members,
            Some(&owner.token),
            Some(json!({"customer_id": clerk.id, "role": "owner"})),
        )
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT, None);

    let outsider = fleet.customer("Outsider").await;
    let (status, body) = fleet
        .vendor
        .call(
            Method::POST,
            &members,
            Some(&clerk.token),
            Some(json!({"customer_id": outsider.id})),
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, None);

    let (status, body) = fleet
        .vendor
        .call(
            Method::POST,
            &members,
            Some(&owner.token),
            Some(json!({"customer_id": outsider.id, "role": "boss"})),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("role"),
    );

    let (status, page) = fleet
        .get(&format!("{members}?limit=1"), Some(&clerk.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = fleet
        .get(
            &format!("{members}?limit=1&cursor={cursor}"),
            Some(&clerk.token),
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_ne!(rest["items"][0], page["items"][0]);
    assert_eq!(rest["next_cursor"], serde_json::Value::Null);

    let (status, body) = fleet.get(&members, Some(&outsider.token)).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, None);
}

#[tokio::test]
async fn only_members_and_admins_may_change_a_vendor() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let path = format!("/api/vendors/{vendor_id}");

    let stranger = fleet.customer("Stranger").await;
    let (status, body) = fleet
        .patch(&path, &stranger.token, json!({"name": "Mine now"}))
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, None);

    let (status, body) = fleet
        .vendor
        .call(Method::PATCH, &path, None, Some(json!({"name": "Anon"})))
        .await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, None);

    let (status, body) = fleet
        .patch(
            &path,
            &owner.token,
            json!({"email": "not an email", "name": ""}),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("email"),
    );
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("name"),
    );

    let (status, body) = fleet
        .patch(
            &path,
            &owner.token,
            json!({"phone": null, "email": "new@shop.test"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["phone"], serde_json::Value::Null);
    assert_eq!(body["email"], "new@shop.test");

    let admin = fleet.admin().await;
    let (status, body) = fleet
        .patch(&path, &admin.token, json!({"name": "Curated"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, read) = fleet.get(&path, None).await;
    assert_eq!(read["name"], "Curated");
    assert_eq!(read["email"], "new@shop.test");

    // The same values again change nothing and tell no one.
    let (status, _) = fleet
        .patch(&path, &admin.token, json!({"name": "Curated"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let updates: Vec<serde_json::Value> = fleet
        .outbox()
        .await
        .into_iter()
        .filter(|(t, _)| t == "vendor.updated")
        .map(|(_, e)| e["payload"].clone())
        .collect();
    assert_eq!(
        updates.len(),
        2,
        "one vendor.updated per change: {updates:?}"
    );
    assert_eq!(updates[0]["email"], "new@shop.test");
    assert_eq!(updates[0]["phone"], serde_json::Value::Null);
    assert_eq!(updates[0]["revision"], 2);
    assert_eq!(updates[1]["name"], "Curated");
    assert_eq!(updates[1]["email"], "new@shop.test");
    assert_eq!(updates[1]["revision"], 3);

    let (status, body) = fleet
        .patch(
            &format!("/api/vendors/{}", Uuid::now_v7()),
            &admin.token,
            json!({"name": "Ghost"}),
        )
        .await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn invalid_vendors_are_refused_field_by_field_and_nothing_is_stored() {
    let fleet = Harness::start().await;
    let user = fleet.customer("Ada").await;

    let cases = [
        (json!({"name": "", "email": "a@shop.test"}), "name"),
        (json!({"name": "Shop", "email": "nope"}), "email"),
        (
            json!({"name": "Shop", "email": "a@shop.test", "phone": "0301234"}),
            "phone",
        ),
        (json!({"email": "a@shop.test"}), "name"),
        (
            json!({"name": "Shop", "email": "a@shop.test", "owner_id": Uuid::now_v7()}),
            "owner_id",
        ),
    ];
    for (body, field) in cases {
        let (status, problem) = fleet
            .vendor
            .call(Method::POST, "/api/vendors", Some(&user.token), Some(body))
            .await;
        assert_problem(
            status,
            &problem,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(field),
        );
    }
    let (status, _, problem) = fleet
        .vendor
        .api()
        .call_text(
            Method::POST,
            "/api/vendors",
            Some(&user.token),
            "application/json",
            "{\"name\": ",
        )
        .await;
    assert_problem(status, &problem, StatusCode::BAD_REQUEST, None);

    let (status, problem) = fleet
        .vendor
        .call(
            Method::POST,
            "/api/vendors",
            None,
            Some(json!({"name": "Shop", "email": "a@shop.test"})),
        )
        .await;
    assert_problem(status, &problem, StatusCode::UNAUTHORIZED, None);

    let vendors: i64 = sqlx::query_scalar("select count(*) from vendors")
        .fetch_one(&fleet.vendor_db().await)
        .await
        .unwrap();
    assert_eq!(vendors, 0);
    assert!(fleet.outbox().await.is_empty());

    let (status, problem) = fleet.get("/api/vendors/not-a-uuid", None).await;
    assert_problem(status, &problem, StatusCode::BAD_REQUEST, None);
    let (status, problem) = fleet
        .get(&format!("/api/vendors/{}", Uuid::now_v7()), None)
        .await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn an_added_member_gets_the_vendor_in_tokens_issued_afterwards() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let clerk = fleet.customer("Clerk").await;
    let (status, _) = fleet
        .vendor
        .call(
            Method::POST,
            &format!("/api/vendors/{vendor_id}/members"),
            Some(&owner.token),
            Some(json!({"customer_id": clerk.id})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // vendor.member.added travels through the outbox and RabbitMQ to the customer service.
    let me = eventually(
        "the membership to reach the customer service",
        Duration::from_secs(10),
        || async {
            let (_, me) = fleet
                .customer
                .call(Method::GET, "/api/customers/me", Some(&clerk.token), None)
                .await;
            (me["vendor_ids"] == json!([vendor_id])).then_some(me)
        },
    )
    .await;
    assert!(
        me["roles"].as_array().unwrap().contains(&json!("vendor")),
        "{me}"
    );
    let fresh = fleet.login(&clerk.email, crate::harness::PASSWORD).await;
    let keys = TokenKeys::from_config(&fleet.env.config(Service::Customer)).unwrap();
    let claims = keys.verify(&fresh.token, USER_AUDIENCE).unwrap();
    assert_eq!(claims.vendors, vec![vendor_id]);
}
