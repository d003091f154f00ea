//! The service layer: turns an event into stored notifications (one per channel and
//! recipient), rendered with the recipient's contact from the local read model. The
//! sender ([`crate::sender`]) delivers them later, outside any transaction.
//!
//! A customer without a phone number gets the email only. A recipient the read model
//! does not know gets its rows stored as `failed` at once, with the reason, so the
//! problem shows in the list and the metrics instead of blocking anything.
//!
//! [`Notifications`] is the read side: who sees which of them.

use std::sync::Arc;

use mp_common::AuthUser;
use mp_events::HandlerError;
use mp_events::catalog::{InventoryLowStock, OrderShipped, OrderUpdated};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::db::{self, Contact, Filter, NewNotification, Row, Scope};
use crate::domain::{self, Audience, Channel};
use crate::metrics::NotificationMetrics;
use crate::templates::{Rendered, Templates};

#[derive(Clone)]
pub struct Notifier {
    pub db: PgPool,
    pub templates: Templates,
    pub metrics: NotificationMetrics,
    /// Wake the senders (one per channel) when new messages were committed.
    pub wake: Vec<Arc<Notify>>,
}

/// What caused a notification and what it is about.
struct Origin<'a> {
    event_id: Uuid,
    event_type: &'a str,
    template: &'a str,
    audience: Audience,
    recipient_id: Uuid,
    order_id: Option<Uuid>,
    product_id: Option<Uuid>,
    /// Whether an SMS goes out too (when the recipient has a phone number).
    sms: bool,
}

fn render_error(e: minijinja::Error) -> HandlerError {
    HandlerError::permanent(format!("template error: {e:#}"))
}

impl Notifier {
    /// Tells every sender that messages are waiting (kept until it next waits).
    pub fn wake_senders(&self) {
        for w in &self.wake {
            w.notify_one();
        }
    }

    /// Stores the email (and SMS) of one message for one recipient, once per event.
    async fn store(
        &self,
        conn: &mut PgConnection,
        o: Origin<'_>,
        render: impl FnOnce(&str) -> Result<Rendered, minijinja::Error>,
    ) -> Result<(), HandlerError> {
        let contact = db::contact(conn, o.audience, o.recipient_id).await?;
        let name = contact.as_ref().map_or("", |c: &Contact| c.name.as_str());
        let rendered = render(name).map_err(render_error)?;
        let missing = contact.is_none().then(|| {
            format!(
                "no contact details for {} {} (its {}.created event has not arrived)",
                o.audience.as_str(),
                o.recipient_id,
                o.audience.as_str()
            )
        });
        let mut rows = vec![(
            Channel::Email,
            contact.as_ref().map(|c| c.email.clone()),
            rendered.subject.as_str(),
            rendered.text.as_str(),
            Some(rendered.html.as_str()),
        )];
        if o.sms
            && let Some(sms) = &rendered.sms
        {
            match &contact {
                Some(Contact { phone: None, .. }) => {}
                Some(Contact { phone, .. }) => {
                    rows.push((Channel::Sms, phone.clone(), &rendered.subject, sms, None))
                }
                None => rows.push((Channel::Sms, None, &rendered.subject, sms, None)),
            }
        }
        for (channel, recipient, subject, text, html) in rows {
            let new = NewNotification {
                event_id: o.event_id,
                event_type: o.event_type,
                channel,
                audience: o.audience,
                recipient_id: o.recipient_id,
                recipient: recipient.as_deref(),
                template: o.template,
                subject,
                body_text: text,
                body_html: html,
                order_id: o.order_id,
                product_id: o.product_id,
                failed: missing.as_deref(),
            };
            let inserted = db::insert_notification(conn, &new).await?;
            if inserted && let Some(reason) = &missing {
                tracing::warn!(event_id = %o.event_id, channel = channel.as_str(), template = o.template, reason, "notification failed");
                self.metrics
                    .failed
                    .with_label_values(&[channel.as_str(), o.template])
                    .inc();
            }
        }
        Ok(())
    }

    /// `order.updated`: the customer hears of confirmed, payment_failed, rejected and
    /// cancelled orders; other statuses are not told.
    pub async fn order_updated(
        &self,
        conn: &mut PgConnection,
        event_id: Uuid,
        order: &OrderUpdated,
    ) -> Result<(), HandlerError> {
        let Some(template) = domain::order_template(order.status) else {
            return Ok(());
        };
        let origin = Origin {
            event_id,
            event_type: "order.updated",
            template,
            audience: Audience::Customer,
            recipient_id: order.customer_id,
            order_id: Some(order.order_id),
            product_id: None,
            sms: true,
        };
        self.store(conn, origin, |name| {
            self.templates.order_update(name, order)
        })
        .await
    }

    /// `order.shipped`: one email and SMS per shipment.
    pub async fn order_shipped(
        &self,
        conn: &mut PgConnection,
        event_id: Uuid,
        shipment: &OrderShipped,
    ) -> Result<(), HandlerError> {
        let origin = Origin {
            event_id,
            event_type: "order.shipped",
            template: domain::SHIPPED_TEMPLATE,
            audience: Audience::Customer,
            recipient_id: shipment.customer_id,
            order_id: Some(shipment.order_id),
            product_id: None,
            sms: true,
        };
        self.store(conn, origin, |name| {
            self.templates.order_shipped(name, shipment)
        })
        .await
    }

    /// `inventory.low_stock`: an email to the vendor (inventory emits one per crossing).
    pub async fn low_stock(
        &self,
        conn: &mut PgConnection,
        event_id: Uuid,
        alert: &InventoryLowStock,
    ) -> Result<(), HandlerError> {
        let origin = Origin {
            event_id,
            event_type: "inventory.low_stock",
            template: domain::LOW_STOCK_TEMPLATE,
            audience: Audience::Vendor,
            recipient_id: alert.vendor_id,
            order_id: None,
            product_id: Some(alert.product_id),
            sms: false,
        };
        self.store(conn, origin, |name| self.templates.low_stock(name, alert))
            .await
    }
}

/// The notifications a reader may see: a customer their own, a vendor member those of
/// its vendors, an admin all of them.
#[derive(Clone)]
pub struct Notifications {
    pub db: PgPool,
}

impl Notifications {
    /// A page of what `reader` may see, newest first, after the id `after`.
    pub async fn list(
        &self,
        reader: &AuthUser,
        filter: &Filter,
        after: Option<Uuid>,
        limit: i64,
    ) -> sqlx::Result<Vec<Row>> {
        let scope = if reader.is_admin() {
            Scope::All
        } else {
            Scope::Own {
                customer_id: reader.id,
                vendors: reader.vendors.clone(),
            }
        };
        let mut conn = self.db.acquire().await?;
        db::list(&mut conn, &scope, filter, after, limit).await
    }
}
