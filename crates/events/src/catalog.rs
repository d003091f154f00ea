//! The event catalog: every event's Rust type, its publisher and its consumers.
//!
//! Topology (which queue is bound to which routing key) and the AsyncAPI document are
//! derived from [`catalog()`]; nothing about events is written down anywhere else.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use schemars::r#gen::SchemaGenerator;
use schemars::schema::Schema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Money;

/// The six services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Customer,
    Order,
    Notification,
    Inventory,
    Vendor,
    Cart,
}

impl Service {
    pub const ALL: [Service; 6] = [
        Service::Customer,
        Service::Order,
        Service::Notification,
        Service::Inventory,
        Service::Vendor,
        Service::Cart,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Service::Customer => "customer",
            Service::Order => "order",
            Service::Notification => "notification",
            Service::Inventory => "inventory",
            Service::Vendor => "vendor",
            Service::Cart => "cart",
        }
    }

    /// The port the service listens on by default.
    pub fn default_port(self) -> u16 {
        match self {
            Service::Customer => 5000,
            Service::Order => 5001,
            Service::Notification => 5002,
            Service::Inventory => 5003,
            Service::Vendor => 5004,
            Service::Cart => 5005,
        }
    }

    /// The PostgreSQL schema the service owns by default.
    pub fn default_schema(self) -> &'static str {
        match self {
            Service::Order => "orders",
            other => other.as_str(),
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed event of the catalog.
pub trait Event: Serialize + DeserializeOwned + JsonSchema + Clone + Send + Sync + 'static {
    /// The event type, which is also the routing key.
    const TYPE: &'static str;
    /// Version of the payload schema.
    const VERSION: u32 = 1;
}

macro_rules! events {
    ($($ty:ident => $name:literal),* $(,)?) => {
        $(impl Event for $ty { const TYPE: &'static str = $name; })*
    };
}

events! {
    CustomerCreated => "customer.created",
    CustomerUpdated => "customer.updated",
    VendorCreated => "vendor.created",
    VendorMemberAdded => "vendor.member.added",
    VendorUpdated => "vendor.updated",
    VendorProductCreated => "vendor.product.created",
    VendorProductUpdated => "vendor.product.updated",
    CartCreated => "cart.created",
    CartItemAdded => "cart.item.added",
    CartItemRemoved => "cart.item.removed",
    CartCheckout => "cart.checkout",
    OrderCreated => "order.created",
    OrderUpdated => "order.updated",
    OrderShipped => "order.shipped",
    InventoryCreated => "inventory.created",
    InventoryUpdated => "inventory.updated",
    InventoryLowStock => "inventory.low_stock",
}

/// A customer registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerCreated {
    pub customer_id: Uuid,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    /// The profile's revision: 1 at registration, +1 per change. Read models keep the
    /// highest they saw. (0 in events from before revisions existed.)
    #[serde(default)]
    pub revision: i64,
}

/// A customer's profile changed; carries the whole new profile and its revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerUpdated {
    pub customer_id: Uuid,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    #[serde(default)]
    pub revision: i64,
}

/// A vendor was created; its creator is the owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VendorCreated {
    pub vendor_id: Uuid,
    /// The customer who created the vendor and became its owner.
    pub owner_id: Uuid,
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
}

/// A customer became a member of a vendor after its creation.
///
/// Not in the original catalog: without it the customer service never learns of
/// members added later, and their tokens would not carry the vendor, so the services
/// that authorize by token (inventory adjustments) would refuse them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VendorMemberAdded {
    pub vendor_id: Uuid,
    pub customer_id: Uuid,
    /// `owner` or `member`.
    pub role: String,
}

/// A vendor's name or contact details changed; carries the whole new state.
///
/// Not in the original catalog: without it the notification service's copy of a vendor's
/// contact would never change, and low-stock alerts would go to an old address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VendorUpdated {
    pub vendor_id: Uuid,
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    /// Starts at 1 with `vendor.created`, grows by one with every change: consumers
    /// ignore older revisions.
    pub revision: i64,
}

/// A product was listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VendorProductCreated {
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub sku: String,
    pub name: String,
    pub price: Money,
    pub active: bool,
    pub initial_stock: i64,
    pub low_stock_threshold: i64,
    /// Starts at 1, grows by one with every change: consumers ignore older revisions.
    pub revision: i64,
}

/// A product changed; carries the whole new state and its revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VendorProductUpdated {
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub sku: String,
    pub name: String,
    pub price: Money,
    pub active: bool,
    pub low_stock_threshold: i64,
    pub revision: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CartCreated {
    pub cart_id: Uuid,
    pub customer_id: Uuid,
}

/// An item was added to a cart or its quantity changed; `quantity` is the new total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CartItemAdded {
    pub cart_id: Uuid,
    pub customer_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i64,
    /// The `generation` inventory returned for the reservation this change made
    /// (`POST /api/reservations`). Inventory confirms only that reservation, never a
    /// newer one; ordering by generation, not by clocks. 0 when unknown.
    #[serde(default)]
    pub generation: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CartItemRemoved {
    pub cart_id: Uuid,
    pub customer_id: Uuid,
    pub product_id: Uuid,
    /// The `generation` of the last reservation the cart held for this line (from
    /// inventory's reservation answer). Inventory releases a reservation only up to
    /// this generation, so a removal that arrives late never releases a newer
    /// reservation of the same cart. 0 when unknown.
    #[serde(default)]
    pub generation: i64,
}

/// A line of a cart or an order, priced when the cart was checked out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LineItem {
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
}

/// Where an order is shipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShippingAddress {
    pub name: String,
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code, upper case.
    pub country: String,
}

/// A customer checked out a cart: the order service takes it from here.
///
/// The payment token is not here: events carry no secrets. The cart hands it to the
/// order service over an authenticated internal call before this event is committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CartCheckout {
    pub cart_id: Uuid,
    pub customer_id: Uuid,
    /// Chosen by the cart service so the client gets it in the 202.
    pub order_id: Uuid,
    pub items: Vec<LineItem>,
    pub subtotal: Money,
    pub tax: Money,
    pub total: Money,
    pub shipping_address: ShippingAddress,
}

/// An order was paid: inventory commits its stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub cart_id: Uuid,
    pub items: Vec<LineItem>,
    pub total: Money,
}

/// Order statuses of the order state machine.
// The order service stores them as their snake_case names in `text` columns (sqlx::Type):
// a name it does not know fails to decode, it is never read as another status.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    JsonSchema,
    utoipa::ToSchema,
    sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Paid,
    Confirmed,
    Shipped,
    Delivered,
    Cancelled,
    PaymentFailed,
    Rejected,
}

/// An order changed status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderUpdated {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub cart_id: Uuid,
    pub status: OrderStatus,
    pub previous_status: Option<OrderStatus>,
    pub reason: Option<String>,
    /// Whether inventory had committed stock for the order before this change; a
    /// failed or cancelled order with committed stock gets it back.
    pub stock_committed: bool,
    pub items: Vec<LineItem>,
    pub total: Money,
}

/// One vendor shipped its lines of an order (shipping is per vendor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderShipped {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub shipment_id: Uuid,
    pub vendor_id: Uuid,
    pub carrier: String,
    pub tracking_number: String,
    /// The lines in this shipment.
    pub items: Vec<LineItem>,
    /// Whether every vendor of the order has now shipped (the order is `shipped`).
    pub order_shipped: bool,
}

/// Stock figures of one product after a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StockLevel {
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    /// Grows by one with every change of this stock item; consumers keep the highest
    /// version they saw, never the latest to arrive.
    pub version: i64,
}

/// A stock item was created for a new product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryCreated {
    pub level: StockLevel,
    pub low_stock_threshold: i64,
}

/// Why stock changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StockChange {
    /// A member or admin adjusted on-hand stock.
    Adjustment,
    /// An order's reservations became a sale.
    OrderCommitted,
    /// An order could not be committed (not enough stock); nothing changed.
    OrderRejected,
    /// A failed or cancelled order's stock came back.
    OrderReleased,
}

/// A product for which an order wanted more than there was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Shortage {
    pub product_id: Uuid,
    pub requested: i64,
    pub available: i64,
}

/// Stock changed, or an order's stock commit was rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryUpdated {
    pub change: StockChange,
    /// The order concerned, for order commits, rejections and releases.
    pub order_id: Option<Uuid>,
    pub levels: Vec<StockLevel>,
    /// Set for `order_rejected`: what was short.
    #[serde(default)]
    pub shortages: Vec<Shortage>,
}

/// Available stock fell to or below the threshold (once per crossing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryLowStock {
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub sku: String,
    pub name: String,
    pub available: i64,
    pub low_stock_threshold: i64,
    pub at: DateTime<Utc>,
}

/// One entry of the catalog.
pub struct EventSpec {
    pub event_type: &'static str,
    pub version: u32,
    pub summary: &'static str,
    pub publisher: Service,
    /// `(service, handler)` pairs; the handler name is also the inbox key.
    pub consumers: &'static [(Service, &'static str)],
    pub schema: fn(&mut SchemaGenerator) -> Schema,
}

fn spec<E: Event>(
    summary: &'static str,
    publisher: Service,
    consumers: &'static [(Service, &'static str)],
) -> EventSpec {
    EventSpec {
        event_type: E::TYPE,
        version: E::VERSION,
        summary,
        publisher,
        consumers,
        schema: |g| g.subschema_for::<crate::Envelope<E>>(),
    }
}

/// Every event, in catalog order.
pub fn catalog() -> Vec<EventSpec> {
    use Service::*;
    vec![
        spec::<CustomerCreated>(
            "A customer registered.",
            Customer,
            &[(Notification, "notification.contact")],
        ),
        spec::<CustomerUpdated>(
            "A customer's profile changed.",
            Customer,
            &[(Notification, "notification.contact")],
        ),
        spec::<VendorCreated>(
            "A vendor was created.",
            Vendor,
            &[
                (Customer, "customer.vendor_membership"),
                (Notification, "notification.contact"),
            ],
        ),
        spec::<VendorMemberAdded>(
            "A customer became a member of a vendor.",
            Vendor,
            &[(Customer, "customer.vendor_member")],
        ),
        spec::<VendorUpdated>(
            "A vendor's name or contact details changed.",
            Vendor,
            &[(Notification, "notification.contact")],
        ),
        spec::<VendorProductCreated>(
            "A product was listed.",
            Vendor,
            &[(Inventory, "inventory.create")],
        ),
        spec::<VendorProductUpdated>(
            "A product changed.",
            Vendor,
            &[
                (Inventory, "inventory.update"),
                (Cart, "cart.price_refresh"),
            ],
        ),
        spec::<CartCreated>("A cart was opened.", Cart, &[]),
        spec::<CartItemAdded>(
            "An item was added to a cart.",
            Cart,
            &[(Inventory, "inventory.check")],
        ),
        spec::<CartItemRemoved>(
            "An item was removed from a cart.",
            Cart,
            &[(Inventory, "inventory.release")],
        ),
        spec::<CartCheckout>("A cart was checked out.", Cart, &[(Order, "order.create")]),
        spec::<OrderCreated>(
            "An order was paid.",
            Order,
            &[(Inventory, "inventory.commit")],
        ),
        spec::<OrderUpdated>(
            "An order changed status.",
            Order,
            &[
                (Notification, "notification.order"),
                (Inventory, "inventory.restock"),
            ],
        ),
        spec::<OrderShipped>(
            "An order was shipped.",
            Order,
            &[(Notification, "notification.order")],
        ),
        spec::<InventoryCreated>(
            "A stock item was created.",
            Inventory,
            &[(Vendor, "vendor.stock")],
        ),
        spec::<InventoryUpdated>(
            "Stock changed or an order's stock commit was rejected.",
            Inventory,
            &[(Order, "order.stock"), (Vendor, "vendor.stock")],
        ),
        spec::<InventoryLowStock>(
            "Available stock crossed the low-stock threshold.",
            Inventory,
            &[(Notification, "notification.vendor")],
        ),
    ]
}

/// The routing keys a service's queue is bound to.
pub fn subscriptions(service: Service) -> Vec<&'static str> {
    catalog()
        .into_iter()
        .filter(|s| s.consumers.iter().any(|(svc, _)| *svc == service))
        .map(|s| s.event_type)
        .collect()
}

/// `deploy/services.txt`: the services, default ports and schemas, in start order, for
/// the scripts and deploy checks (which read it instead of naming the services).
pub fn services_file() -> String {
    let mut out = String::from(
        "# The services: name, default port, PostgreSQL schema, in start order.\n\
         # Generated from mp_events::Service (a test fails when it is stale; regenerate with\n\
         # UPDATE_SERVICES=1 cargo nextest run -p mp-events services_file).\n",
    );
    for s in Service::ALL {
        out.push_str(&format!(
            "{} {} {}\n",
            s.as_str(),
            s.default_port(),
            s.default_schema()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn services_file_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/services.txt");
        let fresh = super::services_file();
        if std::env::var_os("UPDATE_SERVICES").is_some() {
            std::fs::write(path, &fresh).expect("write deploy/services.txt");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == fresh,
            "deploy/services.txt is stale; regenerate it with UPDATE_SERVICES=1 cargo nextest run -p mp-events services_file"
        );
    }

    use super::*;

    #[test]
    fn every_event_type_appears_once() {
        let mut types: Vec<_> = catalog().iter().map(|s| s.event_type).collect();
        let n = types.len();
        types.sort();
        types.dedup();
        assert_eq!(types.len(), n);
        assert_eq!(n, 17);
    }
}
