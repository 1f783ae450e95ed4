//! `DispatchMap`: the dispatchers' live map. A subscriber gets `map.snapshot` (drivers and
//! active jobs, optionally within a box), then every tick a `map.delta` with what changed, only
//! when something did. Subscribers with the same box share one payload, serialised once.
//! `job.new` goes out at once when a job starts dispatching.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use serde_json::value::RawValue;

use super::frame::{Deliver, Frame, FrameKind, SessionId, deliver};
use super::geo_index::{DrainMapChanges, GeoIndex, GetLiveDrivers, MapChanges};
use super::model::{Job, JobStatus};
use super::protocol::ServerMessage;
use crate::geo::{BBox, LatLng};
use crate::ids::JobId;

struct Subscriber {
    recipient: Recipient<Deliver>,
    bbox: Option<BBox>,
}

/// The subscribers who see one box.
type Members<'a> = Vec<(SessionId, &'a Subscriber)>;

pub struct DispatchMap {
    geo: Addr<GeoIndex>,
    tick: Duration,
    subscribers: HashMap<SessionId, Subscriber>,
    /// Jobs shown on the map (not final, not waiting for payment).
    jobs: HashMap<JobId, Job>,
    /// Jobs changed since the last tick (including ones that just left the map).
    changed_jobs: HashMap<JobId, Job>,
    /// Subscribers that missed a delta (their mailbox was full): a fresh snapshot next tick.
    missed_delta: Vec<SessionId>,
}

impl DispatchMap {
    pub fn new(geo: Addr<GeoIndex>, tick: Duration) -> Self {
        Self {
            geo,
            tick,
            subscribers: HashMap::new(),
            jobs: HashMap::new(),
            changed_jobs: HashMap::new(),
            missed_delta: Vec::new(),
        }
    }

    fn jobs_in<'a>(jobs: impl Iterator<Item = &'a Job>, bbox: Option<BBox>) -> Vec<&'a Job> {
        jobs.filter(|job| match (bbox, job.position()) {
            (None, _) => true,
            (Some(bbox), Some(at)) => bbox.contains(&at),
            (Some(_), None) => false,
        })
        .collect()
    }

    fn send_snapshot(
        &mut self,
        ctx: &mut Context<Self>,
        session: SessionId,
        request_id: Option<Box<RawValue>>,
    ) {
        let Some(bbox) = self.subscribers.get(&session).map(|s| s.bbox) else {
            return;
        };
        // Waits for the index before handling anything else, so no delta overtakes the snapshot.
        ctx.wait(self.geo.send(GetLiveDrivers { bbox }).into_actor(self).map(
            move |drivers, this, _| {
                let Some(subscriber) = this.subscribers.get(&session) else {
                    return;
                };
                let drivers = drivers.unwrap_or_default();
                let frame = Frame::json(&ServerMessage::MapSnapshot {
                    id: request_id.as_deref(),
                    drivers: &drivers,
                    jobs: Self::jobs_in(this.jobs.values(), bbox),
                });
                deliver(
                    &subscriber.recipient,
                    Deliver::status("map.snapshot", frame),
                );
            },
        ));
    }

    /// Waits for the index (ticks do not pile up: a waiting actor runs no timers).
    fn on_tick(&mut self, ctx: &mut Context<Self>) {
        ctx.wait(
            self.geo
                .send(DrainMapChanges)
                .into_actor(self)
                .map(|changes, this, ctx| {
                    let changes = changes.unwrap_or_default();
                    let jobs: Vec<Job> = this.changed_jobs.drain().map(|(_, job)| job).collect();
                    this.publish(&changes, &jobs);
                    // Asked for after the drain, so no delta is newer than these snapshots.
                    for session in std::mem::take(&mut this.missed_delta) {
                        this.send_snapshot(ctx, session, None);
                    }
                }),
        );
    }

    /// One `map.delta` per distinct box, serialised once and shared.
    fn publish(&mut self, changes: &MapChanges, jobs: &[Job]) {
        if self.subscribers.is_empty()
            || (changes.drivers.is_empty() && changes.offline.is_empty() && jobs.is_empty())
        {
            return;
        }
        let mut groups: Vec<(Option<BBox>, Members<'_>)> = Vec::new();
        for (session, subscriber) in &self.subscribers {
            match groups.iter_mut().find(|(bbox, _)| *bbox == subscriber.bbox) {
                Some((_, members)) => members.push((*session, subscriber)),
                None => groups.push((subscriber.bbox, vec![(*session, subscriber)])),
            }
        }
        let mut missed = Vec::new();
        for (bbox, members) in groups {
            let drivers: Vec<_> = changes
                .drivers
                .iter()
                .filter(|change| match bbox {
                    None => true,
                    // In the box now, or just left it (the client removes it).
                    Some(bbox) => {
                        LatLng::new(change.driver.lat, change.driver.lng)
                            .is_ok_and(|at| bbox.contains(&at))
                            || change.previous.is_some_and(|at| bbox.contains(&at))
                    }
                })
                .map(|change| &change.driver)
                .collect();
            let jobs = Self::jobs_in(jobs.iter(), bbox);
            if drivers.is_empty() && changes.offline.is_empty() && jobs.is_empty() {
                continue;
            }
            let frame = Frame::json(&ServerMessage::MapDelta {
                drivers,
                offline: &changes.offline,
                jobs,
            });
            let message = Deliver {
                frame,
                kind: FrameKind::MapDelta,
                name: "map.delta",
                origin: None,
            };
            for (session, member) in members {
                if !deliver(&member.recipient, message.clone()) {
                    missed.push(session);
                }
            }
        }
        self.missed_delta.extend(missed);
    }

    fn broadcast_status(&self, name: &'static str, frame: Frame, at: Option<LatLng>) {
        let message = Deliver::status(name, frame);
        for subscriber in self.subscribers.values() {
            let in_view = match (subscriber.bbox, at) {
                (Some(bbox), Some(at)) => bbox.contains(&at),
                _ => true,
            };
            if in_view {
                deliver(&subscriber.recipient, message.clone());
            }
        }
    }
}

impl Actor for DispatchMap {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.tick, |this, ctx| this.on_tick(ctx));
    }
}

/// Command: put a session on the map (again, with a new box, when already there).
#[derive(Message)]
#[rtype(result = "()")]
pub struct MapSubscribe {
    pub session: SessionId,
    pub recipient: Recipient<Deliver>,
    pub bbox: Option<BBox>,
    pub request_id: Option<Box<RawValue>>,
}

impl Handler<MapSubscribe> for DispatchMap {
    type Result = ();

    fn handle(&mut self, msg: MapSubscribe, ctx: &mut Context<Self>) {
        self.subscribers.insert(
            msg.session,
            Subscriber {
                recipient: msg.recipient,
                bbox: msg.bbox,
            },
        );
        self.send_snapshot(ctx, msg.session, msg.request_id);
    }
}

/// Command: a subscriber that skipped deltas (it fell behind) needs a fresh snapshot.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ResyncMap {
    pub session: SessionId,
}

impl Handler<ResyncMap> for DispatchMap {
    type Result = ();

    fn handle(&mut self, msg: ResyncMap, ctx: &mut Context<Self>) {
        self.send_snapshot(ctx, msg.session, None);
    }
}

#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct MapUnsubscribe {
    pub session: SessionId,
}

impl Handler<MapUnsubscribe> for DispatchMap {
    type Result = ();

    fn handle(&mut self, msg: MapUnsubscribe, _: &mut Context<Self>) {
        self.subscribers.remove(&msg.session);
    }
}

/// Event: a job changed (stored already). `became_dispatching` announces it as `job.new`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct MapJobChanged {
    pub job: Job,
    pub became_dispatching: bool,
}

impl Handler<MapJobChanged> for DispatchMap {
    type Result = ();

    fn handle(&mut self, msg: MapJobChanged, _: &mut Context<Self>) {
        let job = msg.job;
        if msg.became_dispatching && job.status == JobStatus::Dispatching {
            let frame = Frame::json(&ServerMessage::JobNew { job: &job });
            self.broadcast_status("job.new", frame, job.position());
        }
        if job.status.is_on_map() {
            self.jobs.insert(job.id, job.clone());
        } else {
            self.jobs.remove(&job.id);
        }
        self.changed_jobs.insert(job.id, job);
    }
}

/// Event: no driver could be found for a job.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct JobUnassigned {
    pub job: JobId,
    pub at: Option<LatLng>,
}

impl Handler<JobUnassigned> for DispatchMap {
    type Result = ();

    fn handle(&mut self, msg: JobUnassigned, _: &mut Context<Self>) {
        let frame = Frame::json(&ServerMessage::JobUnassigned { job_id: msg.job });
        self.broadcast_status("job.unassigned", frame, msg.at);
    }
}

/// Command at start-up: the jobs the map shows.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SeedMapJobs(pub Vec<Job>);

impl Handler<SeedMapJobs> for DispatchMap {
    type Result = ();

    fn handle(&mut self, msg: SeedMapJobs, _: &mut Context<Self>) {
        for job in msg.0 {
            if job.status.is_on_map() {
                self.jobs.insert(job.id, job);
            }
        }
    }
}
