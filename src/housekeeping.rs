//! Periodic clean-up: expired login codes and reset tokens, idle rate-limit keys.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, WrapFuture};

use crate::state::AppState;
use crate::storage::auth_codes;

const EVERY: Duration = Duration::from_secs(15 * 60);

pub struct Housekeeper {
    state: Arc<AppState>,
}

impl Housekeeper {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    fn sweep(&self, ctx: &mut Context<Self>) {
        self.state.auth_limits.forget_idle_keys();
        let state = self.state.clone();
        // The purge runs as a spawned future: the actor never waits on the database.
        ctx.spawn(
            async move {
                match auth_codes::purge_expired(&state.db, state.clock.now()).await {
                    Ok(0) => {}
                    Ok(purged) => tracing::debug!(purged, "expired codes and tokens purged"),
                    Err(error) => {
                        tracing::warn!(%error, "could not purge expired codes and tokens")
                    }
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
