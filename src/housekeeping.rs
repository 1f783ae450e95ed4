//! Periodic clean-up: expired login codes and reset tokens, idle rate-limit keys, notifications
//! delivered or skipped long ago.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, WrapFuture};

use crate::state::AppState;
use crate::storage::{auth_codes, notifications};

const EVERY: Duration = Duration::from_secs(15 * 60);
/// How long sent and skipped notifications are kept (support answers "was she told?" from
/// them); dead letters stay until a dispatcher deals with them.
const NOTIFICATIONS_KEPT_DAYS: i64 = 30;

pub struct Housekeeper {
    state: Arc<AppState>,
}

impl Housekeeper {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    fn sweep(&self, ctx: &mut Context<Self>) {
        self.state.limits.forget_idle_keys();
        let state = self.state.clone();
        // The purge runs as a spawned future: the actor never waits on the database.
        ctx.spawn(
            async move {
                let now = state.clock.now();
                match auth_codes::purge_expired(&state.db, now).await {
                    Ok(0) => {}
                    Ok(purged) => tracing::debug!(purged, "expired codes and tokens purged"),
                    Err(error) => {
                        tracing::warn!(%error, "could not purge expired codes and tokens")
                    }
                }
                let kept_since = now - chrono::Duration::days(NOTIFICATIONS_KEPT_DAYS);
                match notifications::purge_settled(&state.db, kept_since).await {
                    Ok(0) => {}
                    Ok(purged) => tracing::debug!(purged, "old notifications purged"),
                    Err(error) => tracing::warn!(%error, "could not purge old notifications"),
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for Housekeeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(EVERY, |this, ctx| this.sweep(ctx));
    }
}
