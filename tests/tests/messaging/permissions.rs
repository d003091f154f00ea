//! A service's own broker user: what it may publish, and where.

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use mp_events::{Broker, Envelope, Service};
use mp_test_support::TestEnv;

use crate::rig::vendor_created;

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_service_user_publishes_only_its_own_event_types_and_writes_to_no_other_queue() {
    let env = TestEnv::new();
    let config = env.config(Service::Cart);
    let topology = config.topology();
    // The other services' queues exist, declared by an administrator's connection.
    Broker::new(config.amqp_url.clone(), topology.clone(), None)
        .connection()
        .await
        .unwrap();
    let user = format!("{}_cart", topology.prefix);
    let p = topology.permissions(Service::Cart);
    let exchange = topology.exchange();
    let setup = {
        let user = user.clone();
        tokio::task::spawn_blocking(move || {
            rabbitmqctl(&["add_user", &user, "cart-secret"]);
            rabbitmqctl(&["set_permissions", &user, &p.configure, &p.write, &p.read]);
            rabbitmqctl(&[
                "set_topic_permissions",
                &user,
                &exchange,
                &p.topic_write,
                &p.topic_read,
            ]);
        })
    };
    setup.await.unwrap();
    let url = config
        .amqp_url
        .replacen("guest:guest", &format!("{user}:cart-secret"), 1);
    let broker = Broker::new(url, topology.clone(), Some(Service::Cart));
    broker
        .connection()
        .await
        .expect("the cart user declares its own topology");

    let publish = |exchange: String, key: String| {
        let broker = broker.clone();
        async move {
            let channel = broker.confirm_channel().await.unwrap();
            let body =
                serde_json::to_vec(&Envelope::new(Service::Cart, vendor_created("x"))).unwrap();
            let sent = channel
                .basic_publish(
                    &exchange,
                    &key,
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default(),
                )
                .await;
            match sent {
                Ok(confirm) => confirm.await.map(drop),
                Err(e) => Err(e),
            }
        }
    };
    publish(topology.exchange(), "cart.created".into())
        .await
        .expect("its own event type");
    let forged = publish(topology.exchange(), "order.created".into()).await;
    assert!(
        forged
            .as_ref()
            .is_err_and(mp_events::topology::is_access_refused),
        "{forged:?}"
    );
    let sneaked = publish(String::new(), topology.queue(Service::Order)).await;
    assert!(
        sneaked.is_err(),
        "the default exchange is closed to it: {sneaked:?}"
    );

    broker.close().await;
    tokio::task::spawn_blocking(move || rabbitmqctl(&["delete_user", &user]))
        .await
        .unwrap();
}
