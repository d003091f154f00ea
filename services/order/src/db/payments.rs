//! Payment attempts (charges and refunds) and the provider's intent of an order.

use chrono::{DateTime, Utc};
use mp_events::{Currency, Money};
use sqlx::postgres::PgArguments;
use sqlx::{FromRow, PgConnection, Postgres};
use uuid::Uuid;

use crate::domain::{PaymentKind, PaymentStatus};

#[derive(Debug, Clone, FromRow)]
pub struct PaymentRow {
    pub id: Uuid,
    pub kind: PaymentKind,
    pub status: PaymentStatus,
    pub gateway: String,
    pub provider_id: Option<String>,
    pub amount: i64,
    pub currency: Currency,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn payments(conn: &mut PgConnection, order_id: Uuid) -> sqlx::Result<Vec<PaymentRow>> {
    sqlx::query_as(
        "select id, kind, status, gateway, provider_id, amount, currency, error, created_at
         from payments where order_id = $1 order by created_at, id",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await
}

pub async fn succeeded_payment(
    conn: &mut PgConnection,
    order_id: Uuid,
    kind: PaymentKind,
) -> sqlx::Result<Option<PaymentRow>> {
    sqlx::query_as(
        "select id, kind, status, gateway, provider_id, amount, currency, error, created_at
         from payments where order_id = $1 and kind = $2 and status = 'succeeded'",
    )
    .bind(order_id)
    .bind(kind)
    .fetch_optional(conn)
    .await
}

pub struct NewPayment<'a> {
    pub order_id: Uuid,
    pub kind: PaymentKind,
    pub status: PaymentStatus,
    pub gateway: &'a str,
    pub idempotency_key: &'a str,
    pub provider_id: Option<&'a str>,
    pub amount: Money,
    pub error: Option<&'a str>,
}

/// Binds a new payment as `$1` (a new id) to `$10`, in the columns' order: id,
/// order_id, kind, status, gateway, idempotency_key, provider_id, amount, currency, error.
fn bind_payment<'q>(
    q: sqlx::query::Query<'q, Postgres, PgArguments>,
    p: &NewPayment<'q>,
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    q.bind(Uuid::now_v7())
        .bind(p.order_id)
        .bind(p.kind)
        .bind(p.status)
        .bind(p.gateway)
        .bind(p.idempotency_key)
        .bind(p.provider_id)
        .bind(p.amount.amount())
        .bind(p.amount.currency())
        .bind(p.error)
}

/// Records a payment attempt; `false` for a second success of the same kind (the
/// partial unique indexes allow only one).
pub async fn insert_payment(conn: &mut PgConnection, p: &NewPayment<'_>) -> sqlx::Result<bool> {
    Ok(bind_payment(
        sqlx::query(
            "insert into payments (id, order_id, kind, status, gateway, idempotency_key,
                                   provider_id, amount, currency, error)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             on conflict do nothing",
        ),
        p,
    )
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Keeps the provider's intent id for the order (before it is ever confirmed).
pub async fn set_intent(conn: &mut PgConnection, id: Uuid, intent: &str) -> sqlx::Result<()> {
    sqlx::query("update orders set payment_intent = $2 where id = $1 and payment_intent is null")
        .bind(id)
        .bind(intent)
        .execute(conn)
        .await
        .map(drop)
}

/// Records the outcome of the order's latest charge attempt still `requested` (or a new
/// attempt row if there is none, e.g. an approval found by asking the provider); earlier
/// attempts still `requested` captured nothing (the provider says so) and become
/// `failed`. One statement.
pub async fn settle_charge(conn: &mut PgConnection, p: &NewPayment<'_>) -> sqlx::Result<()> {
    let q = sqlx::query(
        "with latest as (
             select id from payments
             where order_id = $2 and kind = 'charge' and status = 'requested'
             order by created_at desc, id desc limit 1),
         settled as (
             update payments set status = $4, provider_id = coalesce($7, provider_id),
                                 error = $10
             where id in (select id from latest)
             returning id),
         earlier as (
             update payments set status = 'failed',
                                 error = coalesce(error, 'nothing captured, the provider says')
             where order_id = $2 and kind = 'charge' and status = 'requested'
               and id not in (select id from latest))
         insert into payments (id, order_id, kind, status, gateway, idempotency_key,
                               provider_id, amount, currency, error)
         select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
         where not exists (select 1 from settled)
         on conflict do nothing",
    );
    bind_payment(q, p).execute(conn).await.map(drop)
}

/// Marks the order's charge attempts still `requested` as `failed`: the provider says
/// nothing was captured.
pub async fn fail_requested_charges(
    conn: &mut PgConnection,
    order_id: Uuid,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "update payments set status = 'failed', error = $2
         where order_id = $1 and kind = 'charge' and status = 'requested'",
    )
    .bind(order_id)
    .bind(error)
    .execute(conn)
    .await
    .map(drop)
}
