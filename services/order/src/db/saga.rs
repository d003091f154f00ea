//! The saga's work queue on the orders table: steps, leases and retries, and what is
//! stuck or in flight (for the driver, the admin API and the metrics).

use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use super::orders::{ORDER_COLUMNS, OrderRow};
use crate::domain::Step;

/// Sets the saga's step without a status change (e.g. a refund of a charge that
/// arrived after the order was cancelled).
pub async fn set_step(conn: &mut PgConnection, id: Uuid, step: Option<Step>) -> sqlx::Result<()> {
    sqlx::query(
        "update orders set saga_step = $2,
             step_since = case when $2::text is null then null else now() end,
             next_attempt_at = case when $2::text is null then null else now() end,
             step_attempts = 0, claimed_until = null, updated_at = now()
         where id = $1",
    )
    .bind(id)
    .bind(step.map(Step::as_str))
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives a claimed order back to the driver after `delay_ms` (a transient failure).
pub async fn retry_step_later(
    conn: &mut PgConnection,
    id: Uuid,
    delay_ms: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "update orders set claimed_until = null,
             next_attempt_at = now() + $2 * interval '1 millisecond'
         where id = $1",
    )
    .bind(id)
    .bind(delay_ms as f64)
    .execute(conn)
    .await?;
    Ok(())
}

/// Orders waiting on a step for longer than `soft_secs`, newest first.
pub async fn stuck(
    conn: &mut PgConnection,
    soft_secs: f64,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<OrderRow>> {
    sqlx::query_as(&format!(
        "select {ORDER_COLUMNS} from orders
         where saga_step is not null and step_since < now() - $1 * interval '1 second'
           and ($2::uuid is null or id < $2)
         order by id desc limit $3"
    ))
    .bind(soft_secs)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// How many orders are in the saga: waiting on their charge or their stock, or handed a
/// payment method but not created yet; those that entered their step more than
/// `window_secs` ago are stuck (counted elsewhere), not load. Index reads only (the
/// order look-up per payment method is a scalar subquery, so it stays a key look-up).
pub async fn in_flight(conn: &mut PgConnection, window_secs: f64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "select (select count(*) from orders
                 where saga_step in ('charge', 'stock')
                   and step_since > now() - $1 * interval '1 second')
              + (select count(*) filter (
                            where (select 1 from orders o where o.id = p.order_id) is null)
                 from payment_methods p
                 where p.created_at > now() - $1 * interval '1 second')",
    )
    .bind(window_secs)
    .fetch_one(conn)
    .await
}

/// How many orders wait on each step for longer than `soft_secs`.
pub async fn stuck_counts(
    conn: &mut PgConnection,
    soft_secs: f64,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "select saga_step, count(*) from orders
         where saga_step is not null and step_since < now() - $1 * interval '1 second'
         group by saga_step",
    )
    .bind(soft_secs)
    .fetch_all(conn)
    .await
}

/// A claimed piece of saga work: the order, its step and which attempt at it this is.
#[derive(Debug, Clone, FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub saga_step: Step,
    pub step_attempts: i32,
}

/// Claims up to `limit` orders whose charge or refund is due, leasing them for
/// `lease_secs`. One statement: committed as soon as it returns.
pub async fn claim_due(
    conn: &mut PgConnection,
    lease_secs: f64,
    limit: i64,
) -> sqlx::Result<Vec<Claimed>> {
    sqlx::query_as(
        "update orders set claimed_until = now() + $1 * interval '1 second',
                           step_attempts = step_attempts + 1,
                           charge_started = charge_started or saga_step = 'charge'
         where id in (select id from orders
                      where saga_step in ('charge', 'refund') and next_attempt_at <= now()
                        and (claimed_until is null or claimed_until < now())
                      order by next_attempt_at limit $2
                      for update skip locked)
         returning id, saga_step, step_attempts",
    )
    .bind(lease_secs)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Orders that waited on their charge or their stock past `hard_secs` and are not
/// being worked on, locked (skipping those locked elsewhere).
pub async fn overdue_for_update(
    conn: &mut PgConnection,
    hard_secs: f64,
    limit: i64,
) -> sqlx::Result<Vec<OrderRow>> {
    sqlx::query_as(&format!(
        "select {ORDER_COLUMNS} from orders
         where saga_step in ('charge', 'stock')
           and step_since < now() - $1 * interval '1 second'
           and (claimed_until is null or claimed_until < now())
         order by step_since limit $2
         for update skip locked"
    ))
    .bind(hard_secs)
    .bind(limit)
    .fetch_all(conn)
    .await
}
