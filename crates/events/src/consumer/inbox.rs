//! The idempotency inbox. Each handler's transaction first records `(event id, handler)`;
//! when the row is already there, the event was handled (its effect committed) and this
//! delivery is a duplicate with no second effect. Housekeeping prunes the rows after the
//! inbox retention (see [`crate::outbox::Housekeeping`]).

use sqlx::PgConnection;
use uuid::Uuid;

use super::dispatch::ErasedHandler;
use super::{Consumer, HandlerError};
use crate::envelope::Envelope;

/// A handler's run that ended well.
pub(super) enum Outcome {
    /// Handled and committed now.
    Done,
    /// Already in the inbox: handled before.
    Duplicate,
}

/// Records in `conn`'s transaction that `handler` handles event `event_id`: false when
/// the inbox already had it.
async fn record(
    conn: &mut PgConnection,
    event_id: Uuid,
    handler: &str,
) -> Result<bool, sqlx::Error> {
    let inserted =
        sqlx::query("insert into inbox (event_id, handler) values ($1, $2) on conflict do nothing")
            .bind(event_id)
            .bind(handler)
            .execute(conn)
            .await?
            .rows_affected();
    Ok(inserted == 1)
}

impl Consumer {
    /// Runs `handler` in a transaction that first records the event in the inbox. A
    /// duplicate runs only the handler's after-commit step.
    pub(super) async fn run_handler(
        &self,
        handler: &dyn ErasedHandler,
        envelope: &Envelope,
    ) -> Result<Outcome, HandlerError> {
        let mut tx = self.pool.begin().await?;
        let fresh = record(&mut tx, envelope.id, handler.name()).await?;
        if !fresh {
            drop(tx);
            handler.after_commit_raw(envelope).await;
            return Ok(Outcome::Duplicate);
        }
        crate::outbox::tracking(async {
            handler.handle_raw(&mut tx, envelope).await?;
            tx.commit().await.map_err(HandlerError::from)
        })
        .await?;
        handler.after_commit_raw(envelope).await;
        Ok(Outcome::Done)
    }
}
