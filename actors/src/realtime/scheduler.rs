//! `Scheduler`: holds jobs booked for later until their dispatch time (`scheduled_at` minus
//! `DISPATCH_LEAD_MINUTES`), then hands them to the matcher. It reads the engine's clock on a
//! short tick, so tests move a manual clock instead of waiting.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::matcher::JobsDue;
use crate::clock::SharedClock;
use crate::ids::JobId;

pub struct Scheduler {
    clock: SharedClock,
    tick: Duration,
    matcher: Recipient<JobsDue>,
    by_time: BTreeSet<(DateTime<Utc>, JobId)>,
    due_of: HashMap<JobId, DateTime<Utc>>,
}

impl Scheduler {
    pub fn new(clock: SharedClock, tick: Duration, matcher: Recipient<JobsDue>) -> Self {
        Self {
            clock,
            tick,
            matcher,
            by_time: BTreeSet::new(),
            due_of: HashMap::new(),
        }
    }

    fn release_due(&mut self) {
        let now = self.clock.now();
        let mut due = Vec::new();
        while let Some(first) = self.by_time.first().copied() {
            if first.0 > now {
                break;
            }
            self.by_time.pop_first();
            self.due_of.remove(&first.1);
            due.push(first.1);
        }
        if !due.is_empty() {
            self.matcher.do_send(JobsDue(due));
        }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.tick, |this, _| this.release_due());
    }
}

/// Command: hand `job` to the matcher at `due` (again: the new time replaces the old).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Schedule {
    pub job: JobId,
    pub due: DateTime<Utc>,
}

impl Handler<Schedule> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Schedule, _: &mut Context<Self>) {
        if let Some(previous) = self.due_of.insert(msg.job, msg.due) {
            self.by_time.remove(&(previous, msg.job));
        }
        self.by_time.insert((msg.due, msg.job));
        self.release_due();
    }
}
