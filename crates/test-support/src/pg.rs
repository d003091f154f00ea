//! Interleavings in PostgreSQL made deterministic: a test holds one transaction open
//! at a chosen point, starts the competing one, and waits until PostgreSQL reports it
//! blocked on a lock before letting the first go on.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use crate::eventually;

/// The server process id of `conn`'s session.
pub async fn backend_pid(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(conn)
        .await
        .expect("pg_backend_pid")
}

/// Waits (up to 30 s) until the session `pid` waits on a lock, e.g. a row or a unique
/// key that another open transaction holds.
pub async fn wait_until_blocked(pool: &PgPool, pid: i32) {
    eventually(
        &format!("session {pid} to wait on a lock"),
        Duration::from_secs(30),
        || async move {
            let waiting: Option<String> =
                sqlx::query_scalar("select wait_event_type from pg_stat_activity where pid = $1")
                    .bind(pid)
                    .fetch_optional(pool)
                    .await
                    .expect("pg_stat_activity")
                    .flatten();
            (waiting.as_deref() == Some("Lock")).then_some(())
        },
    )
    .await
}

/// Waits (up to 30 s) until `n` sessions named `application_name` (a service's pool
/// names its sessions after its schema) wait on a lock.
pub async fn wait_until_sessions_blocked(pool: &PgPool, application_name: &str, n: i64) {
    eventually(
        &format!("{n} session(s) of {application_name} to wait on a lock"),
        Duration::from_secs(30),
        || async move {
            let waiting: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity
                 where application_name = $1 and wait_event_type = 'Lock'",
            )
            .bind(application_name)
            .fetch_one(pool)
            .await
            .expect("pg_stat_activity");
            (waiting >= n).then_some(())
        },
    )
    .await
}
