//! Two replicas of the vendor service on one schema and one Redis prefix, each with its
//! own in-process product cache: a write answered by one is what the other reads next.

use std::time::Duration;

use futures::StreamExt;
use mp_events::Service;
use mp_test_support::clients::Expect;
use mp_test_support::clients::vendor::{Product, UpdateProduct, VendorApi};
use mp_test_support::{TestService, eventually};
use uuid::Uuid;

use crate::harness::{Harness, product_body};

async fn second_replica(fleet: &Harness) -> TestService {
    fleet
        .env
        .spawn(Service::Vendor, |common, listener, shutdown| {
            vendor::run(vendor::Config::with_common(common), listener, shutdown)
        })
        .await
}

/// Reads of a replica answered from its memory so far.
async fn memory_hits(replica: &TestService) -> f64 {
    replica
        .api()
        .metric("vendor_product_local_cache_total", &[("outcome", "hit")])
        .await
}

/// The vendor API of one replica.
fn client(replica: &TestService) -> VendorApi {
    VendorApi(replica.api())
}

async fn read(replica: &TestService, product_id: Uuid) -> Product {
    client(replica).product(product_id).await.expect_ok()
}

/// Waits until the replica answers the product from memory.
async fn until_served_from_memory(replica: &TestService, product_id: Uuid) {
    eventually(
        "the replica answers the product from memory",
        Duration::from_secs(20),
        || async {
            let before = memory_hits(replica).await;
            read(replica, product_id).await;
            (memory_hits(replica).await > before).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_price_written_on_one_replica_is_read_at_once_on_the_other() {
    let fleet = Harness::start().await;
    let other = second_replica(&fleet).await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let product = fleet
        .product(&owner, vendor_id, &product_body("MUG-1"))
        .await;
    let id = product.id;
    let replicas = [&fleet.vendor, &other];
    for replica in replicas {
        until_served_from_memory(replica, id).await;
    }
    let hits_before = [
        memory_hits(replicas[0]).await,
        memory_hits(replicas[1]).await,
    ];

    let mut current = product.price.amount();
    for (round, amount) in (2000..2020).enumerate() {
        let (writer, reader) = (replicas[round % 2], replicas[(round + 1) % 2]);
        // Both hold the current price in memory...
        for replica in replicas {
            assert_eq!(read(replica, id).await.price.amount(), current);
        }
        // ...one of them takes a new one...
        client(writer)
            .update_product(Some(&owner.token), id, &UpdateProduct::price(amount))
            .await
            .expect_ok();
        // ...and the other shows it on the very next read.
        assert_eq!(
            read(reader, id).await.price.amount(),
            amount,
            "a read on the other replica right after the write"
        );
        current = amount;
    }

    for (replica, before) in replicas.into_iter().zip(hits_before) {
        assert!(
            memory_hits(replica).await > before,
            "reads between the writes were answered from memory"
        );
    }
}

#[tokio::test]
async fn a_replica_that_never_acknowledges_delays_a_write_by_a_lease_but_does_not_block_it() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let product = fleet
        .product(&owner, vendor_id, &product_body("MUG-1"))
        .await;
    let id = product.id;
    until_served_from_memory(&fleet.vendor, id).await;

    // A subscriber that receives every change and never answers, as a wedged replica.
    let client = redis::Client::open(fleet.env.config(Service::Vendor).redis_url).unwrap();
    let mut silent = client.get_async_pubsub().await.unwrap();
    silent
        .subscribe(format!("t_{}:vendor:product-changes", fleet.env.id))
        .await
        .unwrap();

    fleet
        .client()
        .update_product(Some(&owner.token), id, &UpdateProduct::price(4242))
        .await
        .expect_ok();
    assert_eq!(read(&fleet.vendor, id).await.price.amount(), 4242);
    let change = silent
        .on_message()
        .next()
        .await
        .expect("the change reached the silent subscriber");
    assert!(
        change
            .get_payload::<String>()
            .unwrap()
            .starts_with(&product.id.to_string()),
        "the change names the product"
    );
}
