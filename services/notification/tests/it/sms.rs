//! The Twilio-shaped SMS adapter against a local HTTP server that checks the request.

use std::time::Duration;

use mp_events::Service;
use mp_events::catalog::OrderStatus;
use notification::delivery::SendError;
use notification::delivery::sms::Twilio;

use crate::harness::{Harness, SMS_FROM, SMS_SID, SMS_TOKEN, SmsProviderFake, order_updated};

fn adapter(url: &str, sid: &str, token: &str) -> Twilio {
    Twilio::new(
        url,
        sid,
        token.to_owned().into(),
        SMS_FROM,
        Duration::from_secs(3),
    )
    .unwrap()
}

#[tokio::test]
async fn the_adapter_posts_the_message_form_with_the_account_credentials() {
    let provider = SmsProviderFake::start().await;
    adapter(&provider.url, SMS_SID, SMS_TOKEN)
        .send("+4930123456", "Marketplace: order shipped.")
        .await
        .expect("accepted");
    let sent = provider.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, "+4930123456");
    assert_eq!(sent[0].from, SMS_FROM);
    assert_eq!(sent[0].body, "Marketplace: order shipped.");
}

#[tokio::test]
async fn wrong_credentials_and_unreachable_providers_wait_while_bad_numbers_fail() {
    let provider = SmsProviderFake::start().await;
    let denied = adapter(&provider.url, SMS_SID, "wrong-token")
        .send("+4930123456", "hi")
        .await
        .unwrap_err();
    assert!(matches!(denied, SendError::Unavailable(_)), "{denied:?}");
    assert!(!denied.to_string().contains("wrong-token"), "{denied}");

    let bad_number = adapter(&provider.url, SMS_SID, SMS_TOKEN)
        .send("030123456", "hi")
        .await
        .unwrap_err();
    assert!(
        matches!(bad_number, SendError::Permanent(ref m) if m.contains("21211")),
        "{bad_number:?}"
    );

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let down = adapter(&closed, SMS_SID, SMS_TOKEN)
        .send("+4930123456", "hi")
        .await
        .unwrap_err();
    assert!(matches!(down, SendError::Unavailable(_)), "{down:?}");
    assert!(provider.messages().is_empty());
}

#[tokio::test]
async fn a_payment_failure_is_texted_to_the_customer_within_two_segments() {
    let h = Harness::start().await;
    let ada = h.customer("Ada", Some("+4930123456")).await;
    let mut order = order_updated(ada.customer_id, OrderStatus::PaymentFailed);
    order.reason = Some("card declined".into());
    for item in &mut order.items {
        item.name = format!(
            "{} {}",
            item.name,
            "with a very long product name ".repeat(8)
        );
    }
    let event = h.publish(Service::Order, order.clone()).await;
    let rows = h.settled(event.id, 2).await;
    assert!(rows.iter().all(|r| r.status == "sent"), "{rows:?}");
    let sms = h.sms.messages();
    assert_eq!(sms.len(), 1);
    assert!(sms[0].body.contains("payment failed"), "{}", sms[0].body);
    assert!(sms[0].body.contains(&order.order_id.to_string()));
    assert!(sms[0].body.chars().count() <= 306, "{}", sms[0].body);
    assert_eq!(notification::domain::sms_segments(&sms[0].body), 1);
}
