//! Handlers of consumed events. Each runs in the consumer's transaction with its inbox
//! row, and every notification is unique per (event, channel, recipient), so a
//! redelivered event never stores, and so never sends, a message twice.
//!
//! * `notification.contact`: the contact read model. Customer and vendor events carry
//!   the profile's revision and only a newer one is applied, whatever order they
//!   arrive in.
//! * `notification.order`: the customer's email and SMS for order changes and
//!   shipments.
//! * `notification.vendor`: the vendor's low-stock email.
//!
//! After each commit the sender is woken, so messages leave at once.

use async_trait::async_trait;
use mp_events::catalog::{
    CustomerCreated, CustomerUpdated, InventoryLowStock, OrderShipped, OrderUpdated, VendorCreated,
    VendorUpdated,
};
use std::marker::PhantomData;

use mp_events::{Envelope, Event, EventHandler, HandlerError};
use sqlx::PgConnection;

use uuid::Uuid;

use crate::db::{self, Contact};
use crate::domain::Audience;
use crate::notify::Notifier;

pub const CONTACT: &str = "notification.contact";
pub const ORDER: &str = "notification.order";
pub const VENDOR: &str = "notification.vendor";

/// An event that carries a contact: who, what, and at which revision.
trait ContactEvent {
    fn contact(&self) -> (Audience, Uuid, Contact, i64);
}

fn contact(name: &str, email: &str, phone: &Option<String>) -> Contact {
    Contact {
        name: name.to_owned(),
        email: email.to_owned(),
        phone: phone.clone(),
    }
}

impl ContactEvent for CustomerCreated {
    fn contact(&self) -> (Audience, Uuid, Contact, i64) {
        let c = contact(&self.name, &self.email, &self.phone);
        (
            Audience::Customer,
            self.customer_id,
            c,
            self.revision.max(1),
        )
    }
}

impl ContactEvent for CustomerUpdated {
    fn contact(&self) -> (Audience, Uuid, Contact, i64) {
        let c = contact(&self.name, &self.email, &self.phone);
        (Audience::Customer, self.customer_id, c, self.revision)
    }
}

impl ContactEvent for VendorCreated {
    fn contact(&self) -> (Audience, Uuid, Contact, i64) {
        // A vendor starts at revision 1; a vendor.updated that overtook it wins.
        let c = contact(&self.name, &self.email, &self.phone);
        (Audience::Vendor, self.vendor_id, c, 1)
    }
}

impl ContactEvent for VendorUpdated {
    fn contact(&self) -> (Audience, Uuid, Contact, i64) {
        let c = contact(&self.name, &self.email, &self.phone);
        (Audience::Vendor, self.vendor_id, c, self.revision)
    }
}

/// `notification.contact` for any event that carries a contact.
pub struct ContactHandler<E>(PhantomData<fn() -> E>);

impl<E> Default for ContactHandler<E> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

#[async_trait]
impl<E: Event + ContactEvent> EventHandler for ContactHandler<E> {
    type Event = E;
    const NAME: &'static str = CONTACT;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<E>,
    ) -> Result<(), HandlerError> {
        let (kind, id, contact, revision) = event.payload.contact();
        if !db::upsert_contact(conn, kind, id, &contact, revision).await? {
            tracing::info!(kind = kind.as_str(), %id, revision, "older contact revision ignored");
        }
        Ok(())
    }
}

pub struct OrderUpdatedNotice(pub Notifier);

#[async_trait]
impl EventHandler for OrderUpdatedNotice {
    type Event = OrderUpdated;
    const NAME: &'static str = ORDER;

    /// Only the statuses the customer is told about.
    fn concerns(&self, event: &Envelope<OrderUpdated>) -> bool {
        crate::domain::order_template(event.payload.status).is_some()
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<OrderUpdated>,
    ) -> Result<(), HandlerError> {
        self.0.order_updated(conn, event.id, &event.payload).await
    }

    async fn after_commit(&self, _event: &Envelope<OrderUpdated>) {
        self.0.wake_senders();
    }
}

pub struct OrderShippedNotice(pub Notifier);

#[async_trait]
impl EventHandler for OrderShippedNotice {
    type Event = OrderShipped;
    const NAME: &'static str = ORDER;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<OrderShipped>,
    ) -> Result<(), HandlerError> {
        self.0.order_shipped(conn, event.id, &event.payload).await
    }

    async fn after_commit(&self, _event: &Envelope<OrderShipped>) {
        self.0.wake_senders();
    }
}

pub struct LowStockNotice(pub Notifier);

#[async_trait]
impl EventHandler for LowStockNotice {
    type Event = InventoryLowStock;
    const NAME: &'static str = VENDOR;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<InventoryLowStock>,
    ) -> Result<(), HandlerError> {
        self.0.low_stock(conn, event.id, &event.payload).await
    }

    async fn after_commit(&self, _event: &Envelope<InventoryLowStock>) {
        self.0.wake_senders();
    }
}
