//! Handlers of consumed events. Each runs in the consumer's transaction with its inbox
//! row, and every notification is unique per (event, channel, recipient), so a
//! redelivered event never stores, and so never sends, a message twice.
//!
//! * `notification.contact`: the contact read model. Vendor events carry a revision
//!   and only a newer one is applied. Customer events carry none: `customer.created`
//!   never overwrites what an earlier-arrived `customer.updated` wrote, and updates
//!   apply in arrival order.
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
use mp_events::{Envelope, EventHandler, HandlerError};
use sqlx::PgConnection;

use crate::db::{self, Contact};
use crate::notify::Notifier;

pub const CONTACT: &str = "notification.contact";
pub const ORDER: &str = "notification.order";
pub const VENDOR: &str = "notification.vendor";

fn contact(name: &str, email: &str, phone: &Option<String>) -> Contact {
    Contact {
        name: name.to_owned(),
        email: email.to_owned(),
        phone: phone.clone(),
    }
}

pub struct CustomerCreatedContact;

#[async_trait]
impl EventHandler for CustomerCreatedContact {
    type Event = CustomerCreated;
    const NAME: &'static str = CONTACT;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<CustomerCreated>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        db::insert_customer(conn, p.customer_id, &contact(&p.name, &p.email, &p.phone)).await?;
        Ok(())
    }
}

pub struct CustomerUpdatedContact;

#[async_trait]
impl EventHandler for CustomerUpdatedContact {
    type Event = CustomerUpdated;
    const NAME: &'static str = CONTACT;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<CustomerUpdated>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        db::upsert_customer(conn, p.customer_id, &contact(&p.name, &p.email, &p.phone)).await?;
        Ok(())
    }
}

pub struct VendorCreatedContact;

#[async_trait]
impl EventHandler for VendorCreatedContact {
    type Event = VendorCreated;
    const NAME: &'static str = CONTACT;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<VendorCreated>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        // A vendor starts at revision 1; a vendor.updated that overtook it wins.
        db::upsert_vendor(conn, p.vendor_id, &contact(&p.name, &p.email, &p.phone), 1).await?;
        Ok(())
    }
}

pub struct VendorUpdatedContact;

#[async_trait]
impl EventHandler for VendorUpdatedContact {
    type Event = VendorUpdated;
    const NAME: &'static str = CONTACT;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<VendorUpdated>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        let applied = db::upsert_vendor(
            conn,
            p.vendor_id,
            &contact(&p.name, &p.email, &p.phone),
            p.revision,
        )
        .await?;
        if !applied {
            tracing::info!(vendor_id = %p.vendor_id, revision = p.revision, "older vendor revision ignored");
        }
        Ok(())
    }
}

pub struct OrderUpdatedNotice(pub Notifier);

#[async_trait]
impl EventHandler for OrderUpdatedNotice {
    type Event = OrderUpdated;
    const NAME: &'static str = ORDER;

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
