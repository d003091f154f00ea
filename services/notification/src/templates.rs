//! Message templates (minijinja), compiled into the binary from `templates/`.
//!
//! Each kind of message has a subject, an HTML body (auto-escaped, laid out by
//! `layout.html`), a plain-text alternative and, for customers, an SMS. The context is
//! built here from the event, with money already formatted in the order's currency.

use std::sync::Arc;

use minijinja::Environment;
use mp_events::catalog::{InventoryLowStock, LineItem, OrderShipped, OrderStatus, OrderUpdated};
use serde::Serialize;

use crate::domain::{fit_sms, format_money};

/// A rendered message, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Present for messages that also go out as SMS.
    pub sms: Option<String>,
}

#[derive(Clone)]
pub struct Templates(Arc<Environment<'static>>);

const SOURCES: &[(&str, &str)] = &[
    ("layout.html", include_str!("../templates/layout.html")),
    ("items.html", include_str!("../templates/items.html")),
    ("items.txt", include_str!("../templates/items.txt")),
    (
        "order_update.subject",
        include_str!("../templates/order_update.subject"),
    ),
    (
        "order_update.html",
        include_str!("../templates/order_update.html"),
    ),
    (
        "order_update.txt",
        include_str!("../templates/order_update.txt"),
    ),
    (
        "order_update.sms",
        include_str!("../templates/order_update.sms"),
    ),
    (
        "order_shipped.subject",
        include_str!("../templates/order_shipped.subject"),
    ),
    (
        "order_shipped.html",
        include_str!("../templates/order_shipped.html"),
    ),
    (
        "order_shipped.txt",
        include_str!("../templates/order_shipped.txt"),
    ),
    (
        "order_shipped.sms",
        include_str!("../templates/order_shipped.sms"),
    ),
    (
        "low_stock.subject",
        include_str!("../templates/low_stock.subject"),
    ),
    (
        "low_stock.html",
        include_str!("../templates/low_stock.html"),
    ),
    ("low_stock.txt", include_str!("../templates/low_stock.txt")),
];

#[derive(Serialize)]
struct Item {
    name: String,
    quantity: i64,
    unit_price: String,
    line_total: String,
}

fn items(lines: &[LineItem]) -> Vec<Item> {
    lines
        .iter()
        .map(|l| Item {
            name: l.name.clone(),
            quantity: l.quantity,
            unit_price: format_money(&l.unit_price),
            line_total: format_money(&l.unit_price.times(l.quantity)),
        })
        .collect()
}

fn status_name(status: OrderStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Templates {
    /// Compiles every template; fails on a syntax error (caught by the unit tests).
    pub fn new() -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in SOURCES {
            env.add_template(name, source)?;
        }
        Ok(Self(Arc::new(env)))
    }

    fn render(&self, name: &str, ctx: &minijinja::Value) -> Result<String, minijinja::Error> {
        self.0.get_template(name)?.render(ctx)
    }

    /// Subject, HTML, text and SMS of the templates `base.*`.
    fn render_all(
        &self,
        base: &str,
        ctx: minijinja::Value,
        sms: bool,
    ) -> Result<Rendered, minijinja::Error> {
        let subject = self
            .render(&format!("{base}.subject"), &ctx)?
            .trim()
            .to_owned();
        let ctx = minijinja::context! { subject => subject.clone(), ..ctx };
        Ok(Rendered {
            html: self.render(&format!("{base}.html"), &ctx)?,
            text: self.render(&format!("{base}.txt"), &ctx)?,
            sms: if sms {
                Some(fit_sms(&self.render(&format!("{base}.sms"), &ctx)?))
            } else {
                None
            },
            subject,
        })
    }

    /// The customer's message about an order's new status.
    pub fn order_update(
        &self,
        customer_name: &str,
        order: &OrderUpdated,
    ) -> Result<Rendered, minijinja::Error> {
        let ctx = minijinja::context! {
            customer_name,
            order_id => order.order_id.to_string(),
            status => status_name(order.status),
            reason => order.reason.clone(),
            items => items(&order.items),
            total => format_money(&order.total),
        };
        self.render_all("order_update", ctx, true)
    }

    /// The customer's message about one shipment of an order.
    pub fn order_shipped(
        &self,
        customer_name: &str,
        shipment: &OrderShipped,
    ) -> Result<Rendered, minijinja::Error> {
        let ctx = minijinja::context! {
            customer_name,
            order_id => shipment.order_id.to_string(),
            carrier => shipment.carrier.clone(),
            tracking_number => shipment.tracking_number.clone(),
            order_shipped => shipment.order_shipped,
            items => items(&shipment.items),
            total => minijinja::Value::from(()),
        };
        self.render_all("order_shipped", ctx, true)
    }

    /// The vendor's low-stock alert (email only).
    pub fn low_stock(
        &self,
        vendor_name: &str,
        alert: &InventoryLowStock,
    ) -> Result<Rendered, minijinja::Error> {
        let ctx = minijinja::context! {
            vendor_name,
            product_name => alert.name.clone(),
            product_id => alert.product_id.to_string(),
            sku => alert.sku.clone(),
            available => alert.available,
            threshold => alert.low_stock_threshold,
        };
        self.render_all("low_stock", ctx, false)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use mp_events::{Currency, Money};
    use uuid::Uuid;

    use super::*;
    use crate::domain::sms_segments;

    fn order(status: OrderStatus) -> OrderUpdated {
        OrderUpdated {
            order_id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            cart_id: Uuid::now_v7(),
            status,
            previous_status: Some(OrderStatus::Paid),
            reason: None,
            stock_committed: true,
            items: vec![
                LineItem {
                    product_id: Uuid::now_v7(),
                    vendor_id: Uuid::now_v7(),
                    name: "Tea <Earl Grey>".into(),
                    quantity: 2,
                    unit_price: Money::new(1250, Currency::USD),
                },
                LineItem {
                    product_id: Uuid::now_v7(),
                    vendor_id: Uuid::now_v7(),
                    name: "Mug".into(),
                    quantity: 1,
                    unit_price: Money::new(899, Currency::USD),
                },
            ],
            total: Money::new(3399, Currency::USD),
        }
    }

    #[test]
    fn a_confirmation_lists_items_and_totals_in_the_order_currency() {
        let t = Templates::new().unwrap();
        let o = order(OrderStatus::Confirmed);
        let r = t.order_update("Ada", &o).unwrap();
        assert_eq!(r.subject, format!("Your order {} is confirmed", o.order_id));
        assert!(
            r.text
                .contains("2 x Tea <Earl Grey> @ 12.50 USD = 25.00 USD"),
            "{}",
            r.text
        );
        assert!(r.text.contains("Total: 33.99 USD"), "{}", r.text);
        assert!(r.html.contains("Tea &lt;Earl Grey&gt;"), "{}", r.html);
        assert!(r.html.contains("33.99 USD"));
        assert!(r.html.contains("Hello Ada"));
        let sms = r.sms.unwrap();
        assert!(
            sms.contains("confirmed") && sms.contains("33.99 USD"),
            "{sms}"
        );
        assert!(sms_segments(&sms) <= 2);
    }

    #[test]
    fn every_told_status_has_its_own_wording() {
        let t = Templates::new().unwrap();
        let mut subjects = Vec::new();
        for status in [
            OrderStatus::Confirmed,
            OrderStatus::PaymentFailed,
            OrderStatus::Rejected,
            OrderStatus::Cancelled,
        ] {
            let mut o = order(status);
            o.reason = Some("card declined".into());
            let r = t.order_update("Ada", &o).unwrap();
            assert!(r.text.contains("Reason: card declined"));
            subjects.push(r.subject.replace(&o.order_id.to_string(), ""));
        }
        subjects.sort();
        subjects.dedup();
        assert_eq!(subjects.len(), 4);
    }

    #[test]
    fn a_shipment_names_carrier_and_tracking_number() {
        let t = Templates::new().unwrap();
        let o = order(OrderStatus::Shipped);
        let s = OrderShipped {
            order_id: o.order_id,
            customer_id: o.customer_id,
            shipment_id: Uuid::now_v7(),
            vendor_id: o.items[0].vendor_id,
            carrier: "DHL".into(),
            tracking_number: "JD014600003SE".into(),
            items: o.items[..1].to_vec(),
            order_shipped: false,
        };
        let r = t.order_shipped("Ada", &s).unwrap();
        for body in [&r.text, &r.html, r.sms.as_ref().unwrap()] {
            assert!(
                body.contains("DHL") && body.contains("JD014600003SE"),
                "{body}"
            );
        }
        assert!(!r.text.contains("Mug"));
    }

    #[test]
    fn a_low_stock_alert_names_product_quantity_and_threshold() {
        let t = Templates::new().unwrap();
        let alert = InventoryLowStock {
            product_id: Uuid::now_v7(),
            vendor_id: Uuid::now_v7(),
            sku: "TEA-1".into(),
            name: "Earl Grey".into(),
            available: 3,
            low_stock_threshold: 5,
            at: Utc::now(),
        };
        let r = t.low_stock("Tea Shop", &alert).unwrap();
        assert_eq!(r.subject, "Low stock: Earl Grey (TEA-1) has 3 left");
        assert!(
            r.text
                .contains("fell to 3, at or below your threshold of 5")
        );
        assert!(r.html.contains("Hello Tea Shop"));
        assert_eq!(r.sms, None);
    }
}
