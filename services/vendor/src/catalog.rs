//! The catalog service: vendors, their members and their products. Every transaction
//! and outbox row of the vendor service is here; the routes parse, call these and map
//! [`CatalogError`] to problem+json.
//!
//! Checks run in this order: the vendor or product exists, the caller may act on it,
//! then the fields (all at once), so a stranger learns nothing from a validation error.
//! Who may act for a vendor: an admin, or a member. Membership lives in this service's
//! `vendor_members` table, which is the authority; the `vendors` claim of an access
//! token only saves the lookup, so a new owner can list products before their token
//! carries the vendor.
//!
//! Every product change writes the product, its `vendor.product.*` event (whole new
//! state and revision) and a change notification in one transaction; after the commit
//! the writer stores the new read in the Redis cache (see [`crate::cache`]) and has
//! every replica drop its in-process copy (see [`crate::local_cache`]) before it answers, so
//! any read after the answer, on any replica, shows the change.

use std::sync::Arc;

use axum::body::Bytes;
use mp_common::{AuthUser, Page, PageQuery, PageRequest, Problem, Validation};
use mp_events::catalog::{
    VendorCreated, VendorMemberAdded, VendorProductCreated, VendorProductUpdated, VendorUpdated,
};
use mp_events::{Money, Service};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::cache::ProductCache;
use crate::db::{self, MemberRow, ProductFilter, VendorRow};
use crate::domain::{self, PriceInput, Role};
use crate::responses::ProductResponse;

/// Why a catalog operation was refused (or failed).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No such vendor or product (what is missing).
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The caller may not act for the vendor.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Fields refused, listed one by one.
    #[error("invalid fields")]
    Invalid(Problem),
    #[error("the vendor already has a product with SKU {0}")]
    SkuTaken(String),
    #[error("the customer is already a member of the vendor")]
    AlreadyMember,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<Problem> for CatalogError {
    fn from(p: Problem) -> Self {
        Self::Invalid(p)
    }
}

/// A product as its vendor lists it (fields not checked yet).
#[derive(Debug)]
pub struct NewProduct {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: PriceInput,
    pub initial_stock: i64,
    pub low_stock_threshold: i64,
}

/// The fields to change (not checked yet); `None` leaves one as it is.
#[derive(Debug, Default)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<PriceInput>,
    pub active: Option<bool>,
    pub low_stock_threshold: Option<i64>,
}

/// A vendor's contact details, checked.
#[derive(Debug)]
pub struct NewVendor {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
}

/// The fields to change (not checked yet); `None` leaves one as it is, `Some(None)`
/// removes the phone.
#[derive(Debug, Default)]
pub struct VendorPatch {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<Option<String>>,
}

/// A page request as the client wrote it (checked by the listing).
#[derive(Debug, Default)]
pub struct PageParams<'a> {
    pub q: Option<&'a str>,
    pub limit: Option<u32>,
    pub cursor: Option<&'a str>,
}

#[derive(Clone)]
pub struct Catalog {
    pub db: PgPool,
    pub cache: Arc<ProductCache>,
}

const NOT_MEMBER: &str = "Only the vendor's members or an administrator may do this.";
const NOT_OWNER: &str = "Only the vendor's owners or an administrator may do this.";

/// An admin, or a member of the vendor (by token claim or, authoritatively, by table).
async fn require_member(
    conn: &mut PgConnection,
    user: &AuthUser,
    vendor_id: Uuid,
) -> Result<(), CatalogError> {
    if user.can_manage_vendor(vendor_id)
        || db::member_role(conn, vendor_id, user.id).await?.is_some()
    {
        return Ok(());
    }
    Err(CatalogError::Forbidden(NOT_MEMBER))
}

/// An admin, or an owner of the vendor.
async fn require_owner(
    conn: &mut PgConnection,
    user: &AuthUser,
    vendor_id: Uuid,
) -> Result<(), CatalogError> {
    let role = db::member_role(conn, vendor_id, user.id).await?;
    if user.is_admin() || role == Some(Role::Owner) {
        return Ok(());
    }
    Err(CatalogError::Forbidden(NOT_OWNER))
}

async fn existing_vendor(conn: &mut PgConnection, vendor_id: Uuid) -> Result<(), CatalogError> {
    if db::vendor_exists(conn, vendor_id).await? {
        Ok(())
    } else {
        Err(CatalogError::NotFound("Vendor"))
    }
}

/// The price, or `None` with its errors recorded as `<field>.amount` and `<field>.currency`.
fn check_price(v: &mut Validation, field: &str, price: &PriceInput) -> Option<Money> {
    domain::parse_price(price)
        .map_err(|errors| {
            for (sub, message) in errors {
                v.error(&format!("{field}.{sub}"), message);
            }
        })
        .ok()
}

/// A listing's search text, limit and cursor, checked.
struct Listing {
    pattern: Option<String>,
    limit: u32,
    after: Option<Uuid>,
}

fn parse_listing(page: &PageParams<'_>) -> Result<Listing, Problem> {
    let mut v = Validation::new();
    let q = v.field("q", domain::parse_query(page.q));
    let request = PageRequest::<Uuid>::parse(
        &PageQuery {
            limit: page.limit,
            cursor: page.cursor.map(str::to_owned),
        },
        &mut v,
    );
    let q = v.finish_with(q)?;
    Ok(Listing {
        pattern: q.as_deref().map(domain::contains_pattern),
        limit: request.limit,
        after: request.after,
    })
}

impl Catalog {
    /// Stores a committed product read in the cache. A failure is logged, not
    /// returned: the change is committed, and the change notification retries the
    /// store.
    async fn store(&self, version: i64, response: &ProductResponse, json: &[u8]) {
        if let Err(e) = self.cache.put(response.id, version, json).await {
            tracing::warn!(product_id = %response.id, error = %e, "could not store the product in the cache");
        }
    }

    /// Lists a product for a vendor (its members or an admin); inventory creates the
    /// stock item from `vendor.product.created`.
    pub async fn create_product(
        &self,
        user: &AuthUser,
        vendor_id: Uuid,
        p: NewProduct,
    ) -> Result<ProductResponse, CatalogError> {
        let mut tx = self.db.begin().await?;
        existing_vendor(&mut tx, vendor_id).await?;
        require_member(&mut tx, user, vendor_id).await?;

        let mut v = Validation::new();
        let sku = v.field("sku", domain::parse_sku(&p.sku));
        let name = v.field("name", domain::parse_product_name(&p.name));
        let description = v.field("description", domain::parse_description(&p.description));
        let price = check_price(&mut v, "price", &p.price);
        v.field("initial_stock", domain::check_quantity(p.initial_stock));
        v.field(
            "low_stock_threshold",
            domain::check_quantity(p.low_stock_threshold),
        );
        let (sku, name, description, price) = v.finish_with((sku, name, description, price))?;

        let row = db::insert_product(
            &mut tx,
            &db::NewProduct {
                id: Uuid::now_v7(),
                vendor_id,
                sku: &sku,
                name: &name,
                description: &description,
                price,
                initial_stock: p.initial_stock,
                low_stock_threshold: p.low_stock_threshold,
            },
        )
        .await
        .map_err(|e| {
            if mp_common::problem::violates(&e, db::SKU_UNIQUE) {
                CatalogError::SkuTaken(sku.clone())
            } else {
                e.into()
            }
        })?;
        mp_events::enqueue(
            &mut tx,
            Service::Vendor,
            VendorProductCreated {
                product_id: row.id,
                vendor_id: row.vendor_id,
                sku: row.sku.clone(),
                name: row.name.clone(),
                price: row.price(),
                active: row.active,
                initial_stock: row.initial_stock,
                low_stock_threshold: row.low_stock_threshold,
                revision: row.revision,
            },
        )
        .await?;
        db::notify_product_changed(&mut tx, row.id).await?;
        // Stock figures cannot exist yet: inventory learns of the product from this event.
        let view = db::product_view(&mut tx, row.id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("inserted product vanished"))?;
        tx.commit().await?;

        let version = view.product.cache_version;
        let response = ProductResponse::from(view);
        let json = serde_json::to_vec(&response).map_err(anyhow::Error::from)?;
        self.store(version, &response, &json).await;
        tracing::info!(product_id = %response.id, %vendor_id, sku = %response.sku, "product created");
        Ok(response)
    }

    /// A product's JSON, active or not: from this replica's memory when it holds the
    /// product, else from the Redis cache, else from PostgreSQL (filling both).
    pub async fn product_json(&self, id: Uuid) -> Result<Bytes, CatalogError> {
        if let Some(body) = self.cache.local(id) {
            return Ok(body);
        }
        let ticket = self.cache.ticket();
        match self.cache.get(id).await {
            Ok(Some(body)) => {
                self.cache.keep(ticket, id, &body);
                return Ok(body);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "product cache unavailable; reading PostgreSQL"),
        }
        let view = db::product_view(&mut *self.db.acquire().await?, id)
            .await?
            .ok_or(CatalogError::NotFound("Product"))?;
        let version = view.product.cache_version;
        let json = serde_json::to_vec(&ProductResponse::from(view)).map_err(anyhow::Error::from)?;
        if let Err(e) = self.cache.fill(id, version, &json).await {
            tracing::warn!(product_id = %id, error = %e, "could not fill the product cache");
        }
        let body = Bytes::from(json);
        self.cache.keep(ticket, id, &body);
        Ok(body)
    }

    /// Changes a product (its vendor's members or an admin): `vendor.product.updated`
    /// with the new revision if anything changed.
    pub async fn update_product(
        &self,
        user: &AuthUser,
        id: Uuid,
        patch: ProductPatch,
    ) -> Result<ProductResponse, CatalogError> {
        let mut tx = self.db.begin().await?;
        let current = db::product_for_update(&mut tx, id)
            .await?
            .ok_or(CatalogError::NotFound("Product"))?;
        require_member(&mut tx, user, current.vendor_id).await?;

        let mut v = Validation::new();
        let name = match patch.name.as_deref() {
            None => Some(current.name.clone()),
            Some(n) => v.field("name", domain::parse_product_name(n)),
        };
        let description = match patch.description.as_deref() {
            None => Some(current.description.clone()),
            Some(d) => v.field("description", domain::parse_description(d)),
        };
        let price = match &patch.price {
            None => Some(current.price()),
            Some(p) => check_price(&mut v, "price", p),
        };
        let threshold = patch
            .low_stock_threshold
            .unwrap_or(current.low_stock_threshold);
        v.field("low_stock_threshold", domain::check_quantity(threshold));
        let (name, description, price) = v.finish_with((name, description, price))?;
        let active = patch.active.unwrap_or(current.active);

        let unchanged = name == current.name
            && description == current.description
            && price == current.price()
            && active == current.active
            && threshold == current.low_stock_threshold;
        if !unchanged {
            let row = db::update_product(
                &mut tx,
                id,
                &db::ProductChange {
                    name: &name,
                    description: &description,
                    price,
                    active,
                    low_stock_threshold: threshold,
                },
            )
            .await?;
            mp_events::enqueue(
                &mut tx,
                Service::Vendor,
                VendorProductUpdated {
                    product_id: row.id,
                    vendor_id: row.vendor_id,
                    sku: row.sku.clone(),
                    name: row.name.clone(),
                    price: row.price(),
                    active: row.active,
                    low_stock_threshold: row.low_stock_threshold,
                    revision: row.revision,
                },
            )
            .await?;
            db::notify_product_changed(&mut tx, id).await?;
        }
        let view = db::product_view(&mut tx, id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("locked product vanished"))?;
        tx.commit().await?;

        let version = view.product.cache_version;
        let response = ProductResponse::from(view);
        if !unchanged {
            let json = serde_json::to_vec(&response).map_err(anyhow::Error::from)?;
            self.store(version, &response, &json).await;
            // Last: once every replica dropped its in-process copy, any read sees the change.
            self.cache.invalidate(id).await;
            tracing::info!(product_id = %id, revision = response.revision, "product updated");
        }
        Ok(response)
    }

    async fn product_page(
        &self,
        conn: &mut PgConnection,
        vendor_id: Option<Uuid>,
        listing: Listing,
        active_only: bool,
    ) -> Result<Page<ProductResponse>, CatalogError> {
        let rows = db::products(
            conn,
            &ProductFilter {
                vendor_id,
                pattern: listing.pattern.as_deref(),
                active_only,
                after: listing.after,
                limit: i64::from(listing.limit) + 1,
            },
        )
        .await?;
        Ok(Page::from_rows(
            rows,
            listing.limit,
            |r| r.product.id,
            ProductResponse::from,
        ))
    }

    /// The public catalog: active products in the order they were listed, optionally of
    /// one vendor and matching a search text.
    pub async fn catalog(
        &self,
        vendor_id: Option<Uuid>,
        page: PageParams<'_>,
    ) -> Result<Page<ProductResponse>, CatalogError> {
        let listing = parse_listing(&page)?;
        let mut conn = self.db.acquire().await?;
        self.product_page(&mut conn, vendor_id, listing, true).await
    }

    /// All of a vendor's products, inactive ones included: its members or an admin.
    pub async fn vendor_products(
        &self,
        user: &AuthUser,
        vendor_id: Uuid,
        page: PageParams<'_>,
    ) -> Result<Page<ProductResponse>, CatalogError> {
        let mut conn = self.db.acquire().await?;
        existing_vendor(&mut conn, vendor_id).await?;
        require_member(&mut conn, user, vendor_id).await?;
        let listing = parse_listing(&page)?;
        self.product_page(&mut conn, Some(vendor_id), listing, false)
            .await
    }

    /// Creates a vendor with the caller as its owner (`vendor.created`).
    pub async fn create_vendor(
        &self,
        user: &AuthUser,
        vendor: NewVendor,
    ) -> Result<VendorRow, CatalogError> {
        let mut tx = self.db.begin().await?;
        let row = db::insert_vendor(
            &mut tx,
            Uuid::now_v7(),
            &vendor.name,
            &vendor.email,
            vendor.phone.as_deref(),
        )
        .await?;
        db::add_member(&mut tx, row.id, user.id, Role::Owner).await?;
        mp_events::enqueue(
            &mut tx,
            Service::Vendor,
            VendorCreated {
                vendor_id: row.id,
                owner_id: user.id,
                name: row.name.clone(),
                email: row.email.clone(),
                phone: row.phone.clone(),
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(vendor_id = %row.id, owner_id = %user.id, "vendor created");
        Ok(row)
    }

    /// A vendor's public profile.
    pub async fn vendor(&self, id: Uuid) -> Result<VendorRow, CatalogError> {
        db::vendor(&mut *self.db.acquire().await?, id)
            .await?
            .ok_or(CatalogError::NotFound("Vendor"))
    }

    /// Changes a vendor's name, email or phone (its members or an admin):
    /// `vendor.updated` if anything changed.
    pub async fn update_vendor(
        &self,
        user: &AuthUser,
        id: Uuid,
        patch: VendorPatch,
    ) -> Result<VendorRow, CatalogError> {
        let mut tx = self.db.begin().await?;
        let current = db::vendor_for_update(&mut tx, id)
            .await?
            .ok_or(CatalogError::NotFound("Vendor"))?;
        require_member(&mut tx, user, id).await?;

        let mut v = Validation::new();
        let name = match patch.name.as_deref() {
            None => Some(current.name.clone()),
            Some(n) => v.field("name", domain::parse_vendor_name(n)),
        };
        let email = match patch.email.as_deref() {
            None => Some(current.email.clone()),
            Some(e) => v.field("email", domain::parse_email(e)),
        };
        let phone = match &patch.phone {
            None => Some(current.phone.clone()),
            Some(None) => Some(None),
            Some(Some(p)) => v.field("phone", domain::parse_phone(p)).map(Some),
        };
        let (name, email, phone) = v.finish_with((name, email, phone))?;
        if name == current.name && email == current.email && phone == current.phone {
            return Ok(current);
        }
        let row = db::update_vendor(&mut tx, id, &name, &email, phone.as_deref()).await?;
        mp_events::enqueue(
            &mut tx,
            Service::Vendor,
            VendorUpdated {
                vendor_id: row.id,
                name: row.name.clone(),
                email: row.email.clone(),
                phone: row.phone.clone(),
                revision: row.revision,
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(vendor_id = %row.id, revision = row.revision, "vendor updated");
        Ok(row)
    }

    /// A vendor's members: its members or an admin.
    pub async fn members(
        &self,
        user: &AuthUser,
        id: Uuid,
        page: PageParams<'_>,
    ) -> Result<Page<MemberRow>, CatalogError> {
        let mut conn = self.db.acquire().await?;
        existing_vendor(&mut conn, id).await?;
        require_member(&mut conn, user, id).await?;
        let listing = parse_listing(&page)?;
        let rows = db::members(&mut conn, id, listing.after, i64::from(listing.limit) + 1).await?;
        Ok(Page::from_rows(
            rows,
            listing.limit,
            |m| m.customer_id,
            |m| m,
        ))
    }

    /// Adds a customer to a vendor (its owners or an admin): `vendor.member.added`; the
    /// new member may act for the vendor here at once.
    pub async fn add_member(
        &self,
        user: &AuthUser,
        id: Uuid,
        customer_id: Uuid,
        role: Role,
    ) -> Result<MemberRow, CatalogError> {
        let mut tx = self.db.begin().await?;
        existing_vendor(&mut tx, id).await?;
        require_owner(&mut tx, user, id).await?;
        let row = db::add_member(&mut tx, id, customer_id, role)
            .await
            .map_err(|e| {
                if mp_common::problem::violates(&e, db::MEMBER_UNIQUE) {
                    CatalogError::AlreadyMember
                } else {
                    e.into()
                }
            })?;
        let event = VendorMemberAdded {
            vendor_id: id,
            customer_id,
            role: role.as_str().to_owned(),
        };
        mp_events::enqueue(&mut tx, Service::Vendor, event).await?;
        tx.commit().await?;
        tracing::info!(vendor_id = %id, %customer_id, role = role.as_str(), "member added");
        Ok(row)
    }
}
