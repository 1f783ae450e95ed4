//! `JobRoom`: one per active job that someone watches. It knows the job's status, its driver and
//! the driver's last position, and fans status changes and the driver's locations out to the
//! job's subscribers (its customer, dispatchers, the driver's own other screens). Each frame is
//! serialised once for all of them. `RoomDirectory` starts rooms on demand and stops them when
//! the job is final and nobody watches. Every join and leave passes through the directory, so it
//! decides alone, without racing a room that is about to stop.

use std::collections::HashMap;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use super::frame::{Deliver, Frame, FrameKind, SessionId, deliver};
use super::geo_index::{GeoIndex, GetDriver};
use super::model::{DriverFix, Job};
use super::protocol::{ServerMessage, SnapshotDriver};
use crate::ids::{DriverId, JobId};

use std::collections::HashSet;

struct RoomEntry {
    room: Addr<JobRoom>,
    subscribers: HashSet<SessionId>,
    job_final: bool,
}

pub struct RoomDirectory {
    rooms: HashMap<JobId, RoomEntry>,
    geo: Option<Addr<GeoIndex>>,
}

impl RoomDirectory {
    pub fn new() -> Self {
        Self {
            rooms: HashMap::new(),
            geo: None,
        }
    }

    /// Stops the room when the job is over and nobody watches.
    fn stop_if_done(&mut self, job: JobId) {
        if let Some(entry) = self.rooms.get(&job)
            && entry.job_final
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
    pub recipient: Recipient<Deliver>,
    /// The `id` of the `subscribe` message, echoed in the snapshot.
    pub request_id: Option<Box<RawValue>>,
}

impl Handler<JoinRoom> for RoomDirectory {
    type Result = ();

    fn handle(&mut self, msg: JoinRoom, _: &mut Context<Self>) {
        let geo = self.geo.clone();
        let entry = self.rooms.entry(msg.job.id).or_insert_with(|| RoomEntry {
            room: JobRoom {
                job: msg.job.clone(),
                subscribers: HashMap::new(),
                driver_fix: None,
                geo,
            }
            .start(),
            subscribers: HashSet::new(),
            job_final: msg.job.status.is_final(),
        });
        entry.subscribers.insert(msg.session);
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
            && entry.subscribers.remove(&msg.session)
        {
            entry.room.do_send(msg);
            self.stop_if_done(job);
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
        if let Some(entry) = self.rooms.get_mut(&job) {
            entry.job_final = msg.job.status.is_final();
            entry.room.do_send(msg);
            self.stop_if_done(job);
        }
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

impl Handler<DriverLocated> for RoomDirectory {
    type Result = ();

    fn handle(&mut self, msg: DriverLocated, _: &mut Context<Self>) {
        if let Some(entry) = self.rooms.get(&msg.job) {
            entry.room.do_send(msg);
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
        let status_changed = msg.job.status != self.job.status;
        if msg.job.driver_id != self.job.driver_id {
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
