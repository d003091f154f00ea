//! Queries on the customer schema.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Clone, sqlx::FromRow)]
pub struct CustomerRow {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub name: String,
    pub phone: Option<String>,
    pub is_admin: bool,
    pub revision: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Everything but the password hash.
impl std::fmt::Debug for CustomerRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerRow")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("password_hash", &"[redacted]")
            .field("name", &self.name)
            .field("phone", &self.phone)
            .field("is_admin", &self.is_admin)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

pub struct NewCustomer<'a> {
    pub id: Uuid,
    pub email: &'a str,
    pub email_normalized: &'a str,
    pub password_hash: &'a str,
    pub name: &'a str,
    pub phone: Option<&'a str>,
    pub is_admin: bool,
}

pub const EMAIL_UNIQUE: &str = "customers_email_unique";

const COLUMNS: &str =
    "id, email, password_hash, name, phone, is_admin, revision, created_at, updated_at";

pub async fn insert(conn: &mut PgConnection, c: &NewCustomer<'_>) -> sqlx::Result<CustomerRow> {
    sqlx::query_as(&format!(
        "insert into customers (id, email, email_normalized, password_hash, name, phone, is_admin)
         values ($1, $2, $3, $4, $5, $6, $7) returning {COLUMNS}"
    ))
    .bind(c.id)
    .bind(c.email)
    .bind(c.email_normalized)
    .bind(c.password_hash)
    .bind(c.name)
    .bind(c.phone)
    .bind(c.is_admin)
    .fetch_one(conn)
    .await
}

pub async fn by_id(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<CustomerRow>> {
    sqlx::query_as(&format!("select {COLUMNS} from customers where id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The row, locked until the transaction ends (for read-modify-write).
pub async fn by_id_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<Option<CustomerRow>> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from customers where id = $1 for update"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn by_email(
    conn: &mut PgConnection,
    normalized: &str,
) -> sqlx::Result<Option<CustomerRow>> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from customers where email_normalized = $1"
    ))
    .bind(normalized)
    .fetch_optional(conn)
    .await
}

pub async fn update_profile(
    conn: &mut PgConnection,
    id: Uuid,
    name: &str,
    phone: Option<&str>,
) -> sqlx::Result<CustomerRow> {
    sqlx::query_as(&format!(
        "update customers set name = $2, phone = $3, revision = revision + 1, updated_at = now()
         where id = $1 returning {COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(phone)
    .fetch_one(conn)
    .await
}

/// Sets an account's password hash.
pub async fn set_password(
    conn: &mut PgConnection,
    id: Uuid,
    password_hash: &str,
) -> sqlx::Result<()> {
    sqlx::query("update customers set password_hash = $2, updated_at = now() where id = $1")
        .bind(id)
        .bind(password_hash)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn vendor_ids(conn: &mut PgConnection, customer_id: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar("select vendor_id from vendor_memberships where customer_id = $1 order by created_at, vendor_id")
        .bind(customer_id)
        .fetch_all(conn)
        .await
}

pub async fn grant_membership(
    conn: &mut PgConnection,
    customer_id: Uuid,
    vendor_id: Uuid,
    role: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into vendor_memberships (customer_id, vendor_id, role) values ($1, $2, $3)
         on conflict (customer_id, vendor_id) do nothing",
    )
    .bind(customer_id)
    .bind(vendor_id)
    .bind(role)
    .execute(conn)
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customer_row_never_shows_its_password_hash() {
        let row = CustomerRow {
            id: Uuid::nil(),
            email: "ada@example.org".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            name: "Ada".into(),
            phone: None,
            is_admin: false,
            revision: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let shown = format!("{row:?}");
        assert!(!shown.contains("argon2"), "{shown}");
        assert!(shown.contains("ada@example.org"), "{shown}");
    }
}
