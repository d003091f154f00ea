//! The vendor service: vendors, their members and products, and the public catalog.

use chrono::{DateTime, Utc};
use mp_events::{Currency, Money};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::client::{Api, ApiResult};

/// `POST /api/vendors`.
#[derive(Debug, Clone, Serialize)]
pub struct CreateVendor {
    pub name: String,
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
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

/// A page of products.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProductPage {
    pub items: Vec<Product>,
    pub next_cursor: Option<String>,
}

/// The vendor service's API.
#[derive(Debug, Clone)]
pub struct VendorApi(pub Api);

impl VendorApi {
    /// `POST /api/vendors` (201): the caller becomes its owner.
    pub async fn create_vendor(&self, token: &str, vendor: &CreateVendor) -> ApiResult<Vendor> {
        self.0
            .json(
                Method::POST,
                "/api/vendors",
                Some(token),
                vendor,
                StatusCode::CREATED,
            )
            .await
    }

    /// `GET /api/vendors/{id}`.
    pub async fn vendor(&self, token: &str, vendor_id: Uuid) -> ApiResult<Vendor> {
        self.0
            .get(&format!("/api/vendors/{vendor_id}"), Some(token))
            .await
    }

    /// `POST /api/vendors/{id}/members` (201).
    pub async fn add_member(
        &self,
        token: &str,
        vendor_id: Uuid,
        customer_id: Uuid,
    ) -> ApiResult<Member> {
        self.0
            .json(
                Method::POST,
                &format!("/api/vendors/{vendor_id}/members"),
                Some(token),
                &serde_json::json!({ "customer_id": customer_id }),
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

    /// `GET /api/products/{id}` (public).
    pub async fn product(&self, product_id: Uuid) -> ApiResult<Product> {
        self.0
            .get(&format!("/api/products/{product_id}"), None)
            .await
    }

    /// `PATCH /api/products/{id}` with the fields to change.
    pub async fn update_product(
        &self,
        token: &str,
        product_id: Uuid,
        change: &serde_json::Value,
    ) -> ApiResult<Product> {
        self.0
            .json(
                Method::PATCH,
                &format!("/api/products/{product_id}"),
                Some(token),
                change,
                StatusCode::OK,
            )
            .await
    }

    /// `GET /api/products{query}`: the public catalog.
    pub async fn catalog(&self, query: &str) -> ApiResult<ProductPage> {
        self.0.get(&format!("/api/products{query}"), None).await
    }
}
