//! `JobRoom`: one per active job that someone watches. It knows the job's status, its driver and
//! the driver's last position, and fans status changes and the driver's locations out to the
//! job's subscribers (its customer, dispatchers, the driver's own other screens). Each frame is
//! serialised once for all of them. `RoomDirectory` starts rooms on demand and stops them when
//! nobody watches (a new subscriber gets a fresh snapshot from the store and the index). Every
//! join and leave passes through the directory, so it decides alone, without racing a room that
//! is about to stop. When a job changes hands, the directory removes watchers who may no longer
//! see it (a released driver).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use super::frame::{Deliver, Frame, FrameKind, SessionId, deliver};
use super::geo_index::{GeoIndex, GetDriver};
use super::model::{DriverFix, Job};
use super::protocol::{ServerMessage, SnapshotDriver};
use crate::ids::{DriverId, JobId, UserId};

/// How long a change to a job nobody watched is remembered: longer than a `subscribe` takes
/// between reading the job and joining its room, so a change in between is not lost.
const RECENT_CHANGES_KEPT: Duration = Duration::from_secs(30);

/// Who watches a job, so their right to is checked again when the job changes hands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watcher {
    pub user: UserId,
    /// Admins and operators see every job.
    pub dispatcher: bool,
}

impl Watcher {
    pub fn may_watch(&self, job: &Job) -> bool {
        job.visible_to(self.user, self.dispatcher)
    }
}

struct RoomEntry {
    room: Addr<JobRoom>,
    subscribers: HashMap<SessionId, Watcher>,
}

pub struct RoomDirectory {
    rooms: HashMap<JobId, RoomEntry>,
    geo: Option<Addr<GeoIndex>>,
    /// The latest change of each job without a room, for a subscriber that read the job
    /// before the change and joins after it.
    recent: HashMap<JobId, (Job, Instant)>,
}

impl RoomDirectory {
    pub fn new() -> Self {
        Self {
            rooms: HashMap::new(),
            geo: None,
            recent: HashMap::new(),
        }
    }

    /// Stops the room when nobody watches.
    fn stop_if_empty(&mut self, job: JobId) {
        if let Some(entry) = self.rooms.get(&job)
            && entry.subscribers.is_empty()
        {
            entry.room.do_send(StopRoom);
            self.rooms.remove(&job);
        }
    }
}

impl Default for RoomDirectory {
    fn default() -> Self {
        Self::new()
    }
}

impl Actor for RoomDirectory {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(RECENT_CHANGES_KEPT / 3, |this, _| {
            this.recent
                .retain(|_, (_, seen)| seen.elapsed() < RECENT_CHANGES_KEPT);
            this.recent.shrink_to_fit();
        });
    }
}

/// Wiring at start-up: the directory and the index refer to each other.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectGeoIndex(pub Addr<GeoIndex>);

impl Handler<ConnectGeoIndex> for RoomDirectory {
    type Result = ();

    fn handle(&mut self, msg: ConnectGeoIndex, _: &mut Context<Self>) {
        self.geo = Some(msg.0);
    }
}

/// Command: add a session to a job's room (ownership already checked) and send it
/// `job.snapshot`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JoinRoom {
    /// The job as stored now.
    pub job: Job,
    pub session: SessionId,
    /// Who the session belongs to (already allowed to watch `job`).
    pub watcher: Watcher,
    pub recipient: Recipient<Deliver>,
    /// The `id` of the `subscribe` message, echoed in the snapshot.
    pub request_id: Option<Box<RawValue>>,
}

impl Handler<JoinRoom> for RoomDirectory {
    type Result = ();

    fn handle(&mut self, mut msg: JoinRoom, _: &mut Context<Self>) {
        let job_id = msg.job.id;
        if !self.rooms.contains_key(&job_id)
            && let Some((changed, _)) = self.recent.get(&job_id)
            && changed.updated_at > msg.job.updated_at
        {
            msg.job = changed.clone();
        }
        if !msg.watcher.may_watch(&msg.job) {
            // It changed hands since the session looked: as if the job did not exist.
            let refusal = Frame::json(&ServerMessage::Error {
                id: msg.request_id.as_deref(),
                code: "not_found",
                message: "no such job",
            });
            deliver(&msg.recipient, Deliver::status("error", refusal));
            return;
        }
        let geo = self.geo.clone();
        let entry = self.rooms.entry(job_id).or_insert_with(|| RoomEntry {
            room: JobRoom {
                job: msg.job.clone(),
                subscribers: HashMap::new(),
                driver_fix: None,
                geo,
            }
            .start(),
            subscribers: HashMap::new(),
        });
        entry.subscribers.insert(msg.session, msg.watcher);
        entry.room.do_send(msg);
    }
}

/// Command: remove a session from a room.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LeaveRoom {
    pub job: JobId,
    pub session: SessionId,
}

impl Handler<LeaveRoom> for RoomDirectory {
    type Result = ();

    fn handle(&mut self, msg: LeaveRoom, _: &mut Context<Self>) {
        let job = msg.job;
        if let Some(entry) = self.rooms.get_mut(&job)
            && entry.subscribers.remove(&msg.session).is_some()
        {
            entry.room.do_send(msg);
            self.stop_if_empty(job);
        }
    }
}

/// Event: a job changed (status, driver); stored already.
#[derive(Debug, Message, Clone)]
#[rtype(result = "()")]
pub struct JobChanged {
    pub job: Job,
    pub at: DateTime<Utc>,
}

impl Handler<JobChanged> for RoomDirectory {
    type Result = ();

    fn handle(&mut self, msg: JobChanged, _: &mut Context<Self>) {
        let job = msg.job.id;
        let Some(entry) = self.rooms.get_mut(&job) else {
            match self.recent.get(&job) {
                Some((known, _)) if known.updated_at > msg.job.updated_at => {}
                _ => {
                    self.recent.insert(job, (msg.job, Instant::now()));
                }
            }
            return;
        };
        // Watchers who lost the job (a released driver) leave before the change is told.
        let lost: Vec<SessionId> = entry
            .subscribers
            .iter()
            .filter(|(_, watcher)| !watcher.may_watch(&msg.job))
            .map(|(session, _)| *session)
            .collect();
        for session in lost {
            entry.subscribers.remove(&session);
            entry.room.do_send(LeaveRoom { job, session });
        }
        entry.room.do_send(msg);
        self.stop_if_empty(job);
    }
}

/// Event: a driver on a job reported a position.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DriverLocated {
    pub job: JobId,
    pub driver: DriverId,
    pub fix: DriverFix,
}

/// Event: the positions of one batch from drivers on jobs (one message per batch, not per
/// position, through the directory).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DriversLocated(pub Vec<DriverLocated>);

impl Handler<DriversLocated> for RoomDirectory {
    type Result = ();

    fn handle(&mut self, DriversLocated(located): DriversLocated, _: &mut Context<Self>) {
        for msg in located {
            // No room: nobody watches the job; the index keeps the position.
            if let Some(entry) = self.rooms.get(&msg.job) {
                entry.room.do_send(msg);
            }
        }
    }
}

/// Command from the directory: the job is over and nobody watches.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct StopRoom;

/// Query: how many rooms are open (for tests and metrics).
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct CountRooms;

impl Handler<CountRooms> for RoomDirectory {
    type Result = usize;

    fn handle(&mut self, _: CountRooms, _: &mut Context<Self>) -> usize {
        self.rooms.len()
    }
}

pub struct JobRoom {
    job: Job,
    subscribers: HashMap<SessionId, Recipient<Deliver>>,
    /// The assigned driver's last position.
    driver_fix: Option<DriverFix>,
    geo: Option<Addr<GeoIndex>>,
}

impl JobRoom {
    fn broadcast(&self, message: Deliver) {
        for recipient in self.subscribers.values() {
            deliver(recipient, message.clone());
        }
    }

    fn snapshot_driver(&self, live: Option<super::model::MapDriver>) -> Option<SnapshotDriver> {
        let driver = self.job.driver_id?;
        if let Some(live) = live.filter(|l| l.driver_id == driver) {
            return Some(SnapshotDriver {
                driver_id: driver,
                lat: live.lat,
                lng: live.lng,
                heading_deg: live.heading_deg,
                updated_at: live.updated_at,
            });
        }
        if !self.job.status.has_active_driver() {
            return None;
        }
        self.driver_fix.as_ref().map(|fix| SnapshotDriver {
            driver_id: driver,
            lat: fix.at.lat(),
            lng: fix.at.lng(),
            heading_deg: fix.heading_deg,
            updated_at: fix.received_at,
        })
    }
}

impl Actor for JobRoom {
    type Context = Context<Self>;
}

impl Handler<StopRoom> for JobRoom {
    type Result = ();

    fn handle(&mut self, _: StopRoom, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<JoinRoom> for JobRoom {
    type Result = ();

    fn handle(&mut self, msg: JoinRoom, ctx: &mut Context<Self>) {
        // The newer of the two views of the job wins.
        if msg.job.updated_at > self.job.updated_at {
            self.job = msg.job;
        }
        let driver_query = match (&self.geo, self.job.driver_id) {
            (Some(geo), Some(driver)) if self.job.status.has_active_driver() => {
                Some(geo.send(GetDriver { driver }))
            }
            _ => None,
        };
        let session = msg.session;
        let recipient = msg.recipient;
        let request_id = msg.request_id;
        // Wait for the driver's position before taking other messages, so the snapshot comes
        // before any status or location sent to this subscriber.
        ctx.wait(
            async move {
                match driver_query {
                    Some(query) => query.await.ok().flatten(),
                    None => None,
                }
            }
            .into_actor(self)
            .map(move |live, this, _| {
                let snapshot = Frame::json(&ServerMessage::JobSnapshot {
                    id: request_id.as_deref(),
                    job: &this.job,
                    driver: this.snapshot_driver(live),
                });
                deliver(&recipient, Deliver::status("job.snapshot", snapshot));
                this.subscribers.insert(session, recipient);
            }),
        );
    }
}

impl Handler<LeaveRoom> for JobRoom {
    type Result = ();

    fn handle(&mut self, msg: LeaveRoom, _: &mut Context<Self>) {
        self.subscribers.remove(&msg.session);
    }
}

impl Handler<JobChanged> for JobRoom {
    type Result = ();

    fn handle(&mut self, msg: JobChanged, _: &mut Context<Self>) {
        if msg.job.updated_at < self.job.updated_at {
            // Two changes published out of order: the older one is already superseded.
            return;
        }
        let status_changed = msg.job.status != self.job.status;
        if msg.job.driver_id != self.job.driver_id || !msg.job.status.has_active_driver() {
            self.driver_fix = None;
        }
        self.job = msg.job;
        if status_changed {
            let frame = Frame::json(&ServerMessage::JobStatus {
                job_id: self.job.id,
                status: self.job.status,
                at: msg.at,
            });
            self.broadcast(Deliver::status("job.status", frame));
        }
    }
}

impl Handler<DriverLocated> for JobRoom {
    type Result = ();

    fn handle(&mut self, msg: DriverLocated, _: &mut Context<Self>) {
        if self.job.driver_id != Some(msg.driver) || !self.job.status.has_active_driver() {
            return;
        }
        if !self.subscribers.is_empty() {
            let frame = Frame::json(&ServerMessage::DriverLocation {
                job_id: self.job.id,
                driver_id: msg.driver,
                lat: msg.fix.at.lat(),
                lng: msg.fix.at.lng(),
                heading_deg: msg.fix.heading_deg,
                ts: msg.fix.ts_ms,
            });
            self.broadcast(Deliver {
                frame,
                kind: FrameKind::Location { job: self.job.id },
                name: "driver.location",
                origin: Some(msg.fix.received),
            });
        }
        self.driver_fix = Some(msg.fix);
    }
}
