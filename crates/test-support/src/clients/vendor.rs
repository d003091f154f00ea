//! The vendor service: vendors, their members and products, and the public catalog.

use chrono::{DateTime, Utc};
use mp_events::{Currency, Money};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Page;
use crate::client::{Api, ApiResult};

/// `POST /api/vendors`.
#[derive(Debug, Clone, Serialize)]
pub struct CreateVendor {
    pub name: String,
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// `PATCH /api/vendors/{id}`: the fields to change; an absent field stays as it is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpdateVendor {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `Some(None)` sends `null`, which removes the phone number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<Option<String>>,
}

/// A vendor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Vendor {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A member of a vendor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Member {
    pub vendor_id: Uuid,
    pub customer_id: Uuid,
    /// `owner` or `member`.
    pub role: String,
    pub created_at: DateTime<Utc>,
}

/// `POST /api/vendors/{id}/members`.
#[derive(Debug, Clone, Serialize)]
pub struct AddMember {
    pub customer_id: Uuid,
    /// `member` (absent: the default) or `owner`; a string, so that a test can send
    /// a role the API does not know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl AddMember {
    /// `customer_id` as a member (the default role).
    pub fn member(customer_id: Uuid) -> Self {
        Self {
            customer_id,
            role: None,
        }
    }

    /// `customer_id` with `role`.
    pub fn with_role(customer_id: Uuid, role: &str) -> Self {
        Self {
            customer_id,
            role: Some(role.into()),
        }
    }
}

/// `POST /api/vendors/{id}/products`.
#[derive(Debug, Clone, Serialize)]
pub struct CreateProduct {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: Money,
    pub initial_stock: i64,
    pub low_stock_threshold: i64,
}

impl CreateProduct {
    /// A stoneware mug with this SKU, priced `price` cents (EUR), `stock` in stock.
    pub fn mug(sku: &str, price: i64, stock: i64) -> Self {
        Self {
            sku: sku.into(),
            name: format!("Mug {sku}"),
            description: "Stoneware, 350 ml.".into(),
            price: Money::new(price, Currency::EUR),
            initial_stock: stock,
            low_stock_threshold: 0,
        }
    }
}

/// `PATCH /api/products/{id}`: the fields to change; an absent field stays as it is
/// (the SKU cannot change).
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpdateProduct {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_stock_threshold: Option<i64>,
}

impl UpdateProduct {
    /// A change of the price only, to `amount` cents (EUR).
    pub fn price(amount: i64) -> Self {
        Self {
            price: Some(Money::new(amount, Currency::EUR)),
            ..Self::default()
        }
    }
}

/// The stock figures the catalog shows, from inventory's events.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StockFigures {
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub as_of: DateTime<Utc>,
}

/// A product.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Product {
    pub id: Uuid,
    pub vendor_id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: Money,
    pub active: bool,
    pub initial_stock: i64,
    pub low_stock_threshold: i64,
    pub revision: i64,
    pub stock: Option<StockFigures>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The vendor service's API.
#[derive(Debug, Clone)]
pub struct VendorApi(pub Api);

impl VendorApi {
    /// `POST /api/vendors` (201): the caller becomes its owner. `vendor` is a
    /// [`CreateVendor`], or any JSON for the cases a typed body cannot write; no token
    /// sends no `Authorization`.
    pub async fn create_vendor(
        &self,
        token: Option<&str>,
        vendor: &(impl Serialize + ?Sized),
    ) -> ApiResult<Vendor> {
        self.0
            .json(
                Method::POST,
                "/api/vendors",
                token,
                vendor,
                StatusCode::CREATED,
            )
            .await
    }

    /// `GET /api/vendors/{id}` (public).
    pub async fn vendor(&self, vendor_id: Uuid) -> ApiResult<Vendor> {
        self.0.get(&format!("/api/vendors/{vendor_id}"), None).await
    }

    /// `PATCH /api/vendors/{id}` with the fields to change; no token sends no
    /// `Authorization`.
    pub async fn update_vendor(
        &self,
        token: Option<&str>,
        vendor_id: Uuid,
        change: &UpdateVendor,
    ) -> ApiResult<Vendor> {
        self.0
            .json(
                Method::PATCH,
                &format!("/api/vendors/{vendor_id}"),
                token,
                change,
                StatusCode::OK,
            )
            .await
    }

    /// `GET /api/vendors/{id}/members{query}` (`""`, or `"?limit=1&cursor=..."`).
    pub async fn members(
        &self,
        token: &str,
        vendor_id: Uuid,
        query: &str,
    ) -> ApiResult<Page<Member>> {
        self.0
            .get(
                &format!("/api/vendors/{vendor_id}/members{query}"),
                Some(token),
            )
            .await
    }

    /// `POST /api/vendors/{id}/members` (201).
    pub async fn add_member(
        &self,
        token: &str,
        vendor_id: Uuid,
        member: &AddMember,
    ) -> ApiResult<Member> {
        self.0
            .json(
                Method::POST,
                &format!("/api/vendors/{vendor_id}/members"),
                Some(token),
                member,
                StatusCode::CREATED,
            )
            .await
    }

    /// `POST /api/vendors/{id}/products` (201). `product` is a [`CreateProduct`], or
    /// any JSON for the cases a typed body cannot write.
    pub async fn create_product(
        &self,
        token: &str,
        vendor_id: Uuid,
        product: &(impl Serialize + ?Sized),
    ) -> ApiResult<Product> {
        self.0
            .json(
                Method::POST,
                &format!("/api/vendors/{vendor_id}/products"),
                Some(token),
                product,
                StatusCode::CREATED,
            )
            .await
    }

    /// `GET /api/vendors/{id}/products{query}`: all of the vendor's products, inactive
    /// ones included.
    pub async fn vendor_products(
        &self,
        token: &str,
        vendor_id: Uuid,
        query: &str,
    ) -> ApiResult<Page<Product>> {
        self.0
            .get(
                &format!("/api/vendors/{vendor_id}/products{query}"),
                Some(token),
            )
            .await
    }

    /// `GET /api/products/{id}` (public).
    pub async fn product(&self, product_id: Uuid) -> ApiResult<Product> {
        self.0
            .get(&format!("/api/products/{product_id}"), None)
            .await
    }

    /// `PATCH /api/products/{id}` with the fields to change: an [`UpdateProduct`], or
    /// any JSON for the cases a typed body cannot write. No token sends no
    /// `Authorization`.
    pub async fn update_product(
        &self,
        token: Option<&str>,
        product_id: Uuid,
        change: &(impl Serialize + ?Sized),
    ) -> ApiResult<Product> {
        self.0
            .json(
                Method::PATCH,
                &format!("/api/products/{product_id}"),
                token,
                change,
                StatusCode::OK,
            )
            .await
    }

    /// `GET /api/products{query}`: the public catalog.
    pub async fn catalog(&self, query: &str) -> ApiResult<Page<Product>> {
        self.0.get(&format!("/api/products{query}"), None).await
    }
}
