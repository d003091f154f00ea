//! Handlers of consumed events.

use async_trait::async_trait;
use mp_events::catalog::{VendorCreated, VendorMemberAdded};
use mp_events::{Envelope, EventHandler, HandlerError};
use sqlx::PgConnection;

use crate::db;

/// `vendor.created`: the vendor's creator becomes its owner; access tokens issued from
/// now on carry the membership.
pub struct GrantVendorMembership;

#[async_trait]
impl EventHandler for GrantVendorMembership {
    type Event = VendorCreated;
    const NAME: &'static str = "customer.vendor_membership";

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<VendorCreated>,
    ) -> Result<(), HandlerError> {
        db::grant_membership(
            conn,
            event.payload.owner_id,
            event.payload.vendor_id,
            "owner",
        )
        .await?;
        Ok(())
    }
}

/// `vendor.member.added`: a member added after the vendor's creation; access tokens
/// issued from now on carry the membership.
pub struct GrantAddedMembership;

#[async_trait]
impl EventHandler for GrantAddedMembership {
    type Event = VendorMemberAdded;
    const NAME: &'static str = "customer.vendor_member";

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<VendorMemberAdded>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        db::grant_membership(conn, p.customer_id, p.vendor_id, &p.role).await?;
        Ok(())
    }
}
