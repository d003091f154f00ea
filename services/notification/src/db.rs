//! Queries on the notification schema. Each takes the caller's connection or
//! transaction.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, QueryBuilder};
use uuid::Uuid;

use crate::domain::{Audience, Channel, Status};

mp_common::text_enum!(Channel, Status);

/// Name, email and phone of a customer or vendor.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Contact {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
}

/// A contact at `revision` (a customer's profile revision, a vendor's revision):
/// applied only over an older revision, so events arriving out of order never put an
/// older profile back. Returns whether it was applied.
pub async fn upsert_contact(
    conn: &mut PgConnection,
    kind: Audience,
    id: Uuid,
    c: &Contact,
    revision: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "insert into contacts (kind, id, name, email, phone, revision)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (kind, id) do update
         set name = excluded.name, email = excluded.email, phone = excluded.phone,
             revision = excluded.revision, updated_at = now()
         where contacts.revision is null or contacts.revision < excluded.revision",
    )
    .bind(kind.as_str())
    .bind(id)
    .bind(&c.name)
    .bind(&c.email)
    .bind(&c.phone)
    .bind(revision)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn contact(
    conn: &mut PgConnection,
    audience: Audience,
    id: Uuid,
) -> sqlx::Result<Option<Contact>> {
    sqlx::query_as("select name, email, phone from contacts where kind = $1 and id = $2")
        .bind(audience.as_str())
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// A notification to store.
#[derive(Debug, Clone)]
pub struct NewNotification<'a> {
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub channel: Channel,
    pub audience: Audience,
    pub recipient_id: Uuid,
    pub recipient: Option<&'a str>,
    pub template: &'a str,
    pub subject: &'a str,
    pub body_text: &'a str,
    pub body_html: Option<&'a str>,
    pub order_id: Option<Uuid>,
    pub product_id: Option<Uuid>,
    /// Set for a message that cannot be sent at all (no contact): stored as failed.
    pub failed: Option<&'a str>,
}

/// Stores a notification once per (event, channel, recipient); false if it existed.
pub async fn insert_notification(
    conn: &mut PgConnection,
    n: &NewNotification<'_>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "insert into notifications
             (id, event_id, event_type, channel, audience, recipient_id, recipient, template,
              subject, body_text, body_html, order_id, product_id, status, last_error)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                 case when $14::text is null then 'pending' else 'failed' end, $14)
         on conflict on constraint notifications_once do nothing",
    )
    .bind(Uuid::now_v7())
    .bind(n.event_id)
    .bind(n.event_type)
    .bind(n.channel.as_str())
    .bind(n.audience.as_str())
    .bind(n.recipient_id)
    .bind(n.recipient)
    .bind(n.template)
    .bind(n.subject)
    .bind(n.body_text)
    .bind(n.body_html)
    .bind(n.order_id)
    .bind(n.product_id)
    .bind(n.failed)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A message claimed for sending.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub channel: String,
    pub recipient: Option<String>,
    pub template: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: Option<String>,
    /// Including the attempt about to be made.
    pub attempts: i32,
}

/// Claims up to `limit` due pending messages of `channel` for `lease_ms`: one statement, so the
/// transaction ends before anything is sent. Rows another sender holds are skipped.
pub async fn claim_due(
    pool: &PgPool,
    channel: Channel,
    limit: i64,
    lease_ms: i64,
) -> sqlx::Result<Vec<Claimed>> {
    sqlx::query_as(
        "update notifications n
         set attempts = n.attempts + 1,
             claimed_until = now() + make_interval(secs => $2::double precision / 1000)
         from (select id from notifications
               where status = 'pending' and channel = $3 and next_attempt_at <= now()
                 and (claimed_until is null or claimed_until < now())
               order by next_attempt_at
               limit $1
               for update skip locked) due
         where n.id = due.id
         returning n.id, n.channel, n.recipient, n.template, n.subject, n.body_text,
                   n.body_html, n.attempts",
    )
    .bind(limit)
    .bind(lease_ms)
    .bind(channel.as_str())
    .fetch_all(pool)
    .await
}

pub async fn mark_sent(pool: &PgPool, id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "update notifications
         set status = 'sent', sent_at = now(), claimed_until = null, last_error = null
         where id = $1 and status = 'pending'",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn mark_retry(pool: &PgPool, id: Uuid, error: &str, delay_ms: i64) -> sqlx::Result<()> {
    sqlx::query(
        "update notifications
         set last_error = $2, claimed_until = null,
             next_attempt_at = now() + make_interval(secs => $3::double precision / 1000)
         where id = $1 and status = 'pending'",
    )
    .bind(id)
    .bind(error)
    .bind(delay_ms)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn mark_failed(pool: &PgPool, id: Uuid, error: &str) -> sqlx::Result<()> {
    sqlx::query(
        "update notifications
         set status = 'failed', last_error = $2, claimed_until = null
         where id = $1 and status = 'pending'",
    )
    .bind(id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Seconds since the oldest pending message was created; 0 when none is pending.
pub async fn oldest_pending_age(pool: &PgPool) -> sqlx::Result<f64> {
    sqlx::query_scalar(
        "select coalesce(extract(epoch from now() - min(created_at)), 0)::double precision
         from notifications where status = 'pending'",
    )
    .fetch_one(pool)
    .await
}

/// A notification as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub id: Uuid,
    pub event_type: String,
    pub channel: Channel,
    pub audience: String,
    pub recipient_id: Uuid,
    pub recipient: Option<String>,
    pub template: String,
    pub subject: String,
    pub status: Status,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub order_id: Option<Uuid>,
    pub product_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// Whose notifications a reader may see.
#[derive(Debug, Clone)]
pub enum Scope {
    All,
    /// A customer's own, and those of the vendors they are a member of.
    Own {
        customer_id: Uuid,
        vendors: Vec<Uuid>,
    },
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub order_id: Option<Uuid>,
    pub channel: Option<Channel>,
}

/// Newest first, after the id `after`, at most `limit` rows.
pub async fn list(
    conn: &mut PgConnection,
    scope: &Scope,
    filter: &Filter,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Row>> {
    let mut q = QueryBuilder::new(
        "select id, event_type, channel, audience, recipient_id, recipient, template, subject,
                status, attempts, last_error, order_id, product_id, created_at, sent_at
         from notifications where true",
    );
    if let Scope::Own {
        customer_id,
        vendors,
    } = scope
    {
        q.push(" and ((audience = 'customer' and recipient_id = ")
            .push_bind(*customer_id)
            .push(") or (audience = 'vendor' and recipient_id = any(")
            .push_bind(vendors.clone())
            .push(")))");
    }
    if let Some(order_id) = filter.order_id {
        q.push(" and order_id = ").push_bind(order_id);
    }
    if let Some(channel) = filter.channel {
        q.push(" and channel = ").push_bind(channel.as_str());
    }
    if let Some(after) = after {
        q.push(" and id < ").push_bind(after);
    }
    q.push(" order by id desc limit ").push_bind(limit);
    q.build_query_as().fetch_all(conn).await
}
