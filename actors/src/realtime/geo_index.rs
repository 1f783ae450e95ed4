//! `GeoIndex`: live driver positions in an R-tree, with each driver's availability, approval,
//! active job, connection and last fix. Positions arrive in batches (see `batcher`), never one
//! message per fix, and never touch the database one by one: each driver's position is written
//! at most every 15 s, in batches, by a spawned future.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rstar::RTree;
use rstar::primitives::GeomWithData;

use super::metrics::{METRICS, count, mailbox};
use super::model::{DriverFix, MapDriver, NearbyDriver};
use super::rooms::{DriverLocated, DriversLocated, RoomDirectory};
use crate::clock::SharedClock;
use crate::geo::{BBox, County, LatLng, ServiceArea};
use crate::ids::{DriverId, JobId};

/// Tree coordinates: longitude scaled by cos(26°) (the middle of the service area) and latitude,
/// so planar distance is proportional to ground distance within a few percent in the region.
const LNG_SCALE: f64 = 0.898_794;
/// Metres per degree of latitude (mean Earth radius).
const METRES_PER_DEGREE: f64 = 111_195.08;
/// How far planar distances may be off from great-circle ones (generous: ±4° of latitude around
/// the region stay within it), so the search never stops early.
const PLANAR_ERROR: f64 = 1.05;
/// A driver's county is looked up again after moving this far.
const AREA_RECHECK_M: f64 = 100.0;
/// Position batches allowed to wait for the index; more are shed.
pub const GEO_INDEX_MAILBOX: usize = 1024;
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Positions are written to storage at most this often per driver.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(15);

fn project(at: &LatLng) -> [f64; 2] {
    [at.lng() * LNG_SCALE, at.lat()]
}

type TreeEntry = GeomWithData<[f64; 2], DriverId>;

/// A driver's last position as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPosition {
    pub driver: DriverId,
    pub at: LatLng,
    pub heading_deg: Option<f64>,
    pub ts_ms: i64,
    pub recorded_at: DateTime<Utc>,
}

/// Where checkpoints go (the database, in the engine).
#[async_trait]
pub trait PositionStore: Send + Sync + 'static {
    async fn save_positions(&self, positions: Vec<StoredPosition>) -> Result<(), String>;
}

/// What the index knows of one driver.
#[derive(Debug, Default)]
struct Driver {
    fix: Option<DriverFix>,
    /// Where the driver sits in the tree; `None` while not searchable (stale, disconnected).
    point: Option<[f64; 2]>,
    approved: bool,
    available: bool,
    job: Option<JobId>,
    /// Open sockets.
    sessions: u32,
    /// With no socket open: still offered jobs (by push) until then, if its position is fresh.
    reachable_until: Option<DateTime<Utc>>,
    county: Option<County>,
    area_checked_at: Option<LatLng>,
    /// Changed since the last checkpoint.
    checkpoint_due: bool,
    /// When its position was last written (the engine's clock).
    checkpointed_at: Option<DateTime<Utc>>,
}

impl Driver {
    fn is_fresh(&self, now: DateTime<Utc>, stale_after: chrono::Duration) -> bool {
        self.fix
            .as_ref()
            .is_some_and(|fix| now - fix.received_at < stale_after)
    }

    /// Whether the driver could be offered a job now: in searches with a fresh fix, approved,
    /// connected, available, not on a job, inside the service area.
    fn is_dispatchable(&self, now: DateTime<Utc>, stale_after: chrono::Duration) -> bool {
        self.point.is_some()
            && self.is_fresh(now, stale_after)
            && self.approved
            && (self.sessions > 0 || self.reachable_until.is_some_and(|until| now < until))
            && self.available
            && self.job.is_none()
            && self.county.is_some()
    }

    fn map_entry(&self, id: DriverId) -> Option<MapDriver> {
        let fix = self.fix.as_ref()?;
        Some(MapDriver {
            driver_id: id,
            lat: fix.at.lat(),
            lng: fix.at.lng(),
            heading_deg: fix.heading_deg,
            available: self.available,
            job_id: self.job,
            updated_at: fix.received_at,
            ts: fix.ts_ms,
            county: self.county,
            in_service_area: self.county.is_some(),
        })
    }
}

/// Which drivers a search may return.
#[derive(Debug, Clone, Default)]
pub struct SearchFilter {
    /// `Some(true)`: only available drivers; `Some(false)`: only unavailable ones.
    pub available: Option<bool>,
    /// Only drivers who could take a job now: approved, connected, available, not on a job,
    /// inside the service area.
    pub dispatchable: bool,
    /// Drivers to leave out (declined or let an offer expire).
    pub exclude: HashSet<DriverId>,
}

/// A driver that moved since the last drain, with where the map last saw it.
#[derive(Debug, Clone)]
pub struct MapChange {
    pub driver: MapDriver,
    pub previous: Option<LatLng>,
}

/// What changed on the map since the last drain.
#[derive(Debug, Default, Clone)]
pub struct MapChanges {
    pub drivers: Vec<MapChange>,
    pub offline: Vec<DriverId>,
}

/// What happened to a fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixOutcome {
    /// Older than what the index has; ignored.
    Rejected,
    /// Applied; `job` is the driver's active job, whose room wants the position; `moved_far`:
    /// the driver moved far enough for its county to be looked up again; `free`: the driver
    /// could take a job now, and `became_free`: could not before this fix.
    Accepted {
        job: Option<JobId>,
        moved_far: bool,
        free: bool,
        became_free: bool,
    },
}

/// The live drivers: an R-tree of positions plus what is known of each driver. A plain data
/// structure (no messages), owned by the `GeoIndex` actor and benchmarked on its own.
pub struct DriverIndex {
    tree: RTree<TreeEntry>,
    drivers: HashMap<DriverId, Driver>,
    area: Arc<ServiceArea>,
    stale_after: chrono::Duration,
}

impl DriverIndex {
    pub fn new(area: Arc<ServiceArea>, stale_after: Duration) -> Self {
        Self {
            tree: RTree::new(),
            drivers: HashMap::new(),
            area,
            stale_after: chrono::Duration::from_std(stale_after)
                .unwrap_or(chrono::Duration::seconds(60)),
        }
    }

    /// Sets what the actor's events otherwise set (connection, approval, availability, job);
    /// for benchmarks and tests of the index on its own.
    pub fn set_state(
        &mut self,
        id: DriverId,
        connected: bool,
        approved: bool,
        available: bool,
        job: Option<JobId>,
    ) {
        let driver = self.drivers.entry(id).or_default();
        driver.sessions = u32::from(connected);
        driver.approved = approved;
        driver.available = available;
        driver.job = job;
    }

    /// Drivers known, live or not.
    pub fn known(&self) -> usize {
        self.drivers.len()
    }

    /// Drivers in searches.
    pub fn live(&self) -> usize {
        self.tree.size()
    }

    fn is_fresh(&self, driver: &Driver, now: DateTime<Utc>) -> bool {
        driver.is_fresh(now, self.stale_after)
    }

    /// Takes a driver out of searches; true if it was in them.
    fn take_off_tree(&mut self, id: DriverId) -> bool {
        let Some(driver) = self.drivers.get_mut(&id) else {
            return false;
        };
        match driver.point.take() {
            Some(point) => {
                self.tree.remove(&GeomWithData::new(point, id));
                true
            }
            None => false,
        }
    }

    /// Applies one fix: moves the driver in the tree, and looks its county up again when it
    /// moved far enough.
    pub fn apply_fix(&mut self, id: DriverId, fix: DriverFix) -> FixOutcome {
        let stale_after = self.stale_after;
        let driver = self.drivers.entry(id).or_default();
        let was_free = driver.is_dispatchable(fix.received_at, stale_after);
        if let Some(previous) = &driver.fix {
            // Newest `ts` wins (on a tie, the later arrival); but a phone whose clock jumped
            // back is believed again once its last accepted fix has gone stale.
            let older = fix.ts_ms < previous.ts_ms;
            let long_silence = fix.received_at - previous.received_at >= stale_after;
            if older && !long_silence {
                return FixOutcome::Rejected;
            }
        }
        let point = project(&fix.at);
        if let Some(old) = driver.point.replace(point) {
            self.tree.remove(&GeomWithData::new(old, id));
        }
        self.tree.insert(GeomWithData::new(point, id));
        let moved_far = driver
            .area_checked_at
            .is_none_or(|checked| checked.distance_m(&fix.at) > AREA_RECHECK_M);
        if moved_far {
            driver.county = self.area.county_at(&fix.at);
            driver.area_checked_at = Some(fix.at);
        }
        let now = fix.received_at;
        driver.checkpoint_due = true;
        driver.fix = Some(fix);
        let free = driver.is_dispatchable(now, stale_after);
        FixOutcome::Accepted {
            job: driver.job,
            moved_far,
            free,
            became_free: free && !was_free,
        }
    }

    /// Where a dispatchable driver is; `None` for anyone else.
    fn dispatchable_at(&self, id: DriverId, now: DateTime<Utc>) -> Option<LatLng> {
        let driver = self.drivers.get(&id)?;
        driver
            .is_dispatchable(now, self.stale_after)
            .then(|| driver.fix.as_ref().map(|fix| fix.at))
            .flatten()
    }

    /// Drivers still in searches whose last fix has gone stale, or whose socket closed longer
    /// than the offline grace ago.
    fn newly_stale(&self, now: DateTime<Utc>) -> Vec<DriverId> {
        let grace_over =
            |d: &Driver| d.sessions == 0 && d.reachable_until.is_some_and(|until| now >= until);
        self.drivers
            .iter()
            .filter(|(_, d)| d.point.is_some() && (!self.is_fresh(d, now) || grace_over(d)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The nearest drivers to `at` within `radius_m`, by great-circle distance, that pass
    /// `filter`. The R-tree yields candidates in (nearly) planar order; the search stops once no
    /// further candidate can be nearer than the `limit`-th found.
    pub fn nearest(
        &self,
        at: &LatLng,
        radius_m: f64,
        limit: usize,
        filter: &SearchFilter,
        now: DateTime<Utc>,
    ) -> Vec<NearbyDriver> {
        self.nearest_where(at, radius_m, limit, filter, now, |_| true)
    }

    /// [`Self::nearest`], among the drivers for whom `eligible` also holds.
    pub fn nearest_where(
        &self,
        at: &LatLng,
        radius_m: f64,
        limit: usize,
        filter: &SearchFilter,
        now: DateTime<Utc>,
        eligible: impl Fn(DriverId) -> bool,
    ) -> Vec<NearbyDriver> {
        if limit == 0 {
            return Vec::new();
        }
        let mut best: Vec<(f64, DriverId)> = Vec::with_capacity(limit + 1);
        for (entry, planar_d2) in self.tree.nearest_neighbor_iter_with_distance_2(project(at)) {
            // Every further candidate is at least this far on the ground.
            let lower_bound_m = planar_d2.sqrt() * METRES_PER_DEGREE / PLANAR_ERROR;
            if lower_bound_m > radius_m
                || (best.len() == limit && lower_bound_m > best[limit - 1].0)
            {
                break;
            }
            let id = entry.data;
            let Some(driver) = self.drivers.get(&id) else {
                continue;
            };
            let Some(fix) = &driver.fix else { continue };
            let passes = self.is_fresh(driver, now)
                && filter
                    .available
                    .is_none_or(|wanted| driver.available == wanted)
                && !filter.exclude.contains(&id)
                && (!filter.dispatchable || driver.is_dispatchable(now, self.stale_after))
                && eligible(id);
            if !passes {
                continue;
            }
            let distance = fix.at.distance_m(at);
            if distance > radius_m {
                continue;
            }
            let position = best.partition_point(|(d, _)| *d <= distance);
            if position < limit {
                best.insert(position, (distance, id));
                best.truncate(limit);
            }
        }
        best.into_iter()
            .filter_map(|(distance_m, id)| {
                let driver = self.drivers.get(&id)?;
                let fix = driver.fix.as_ref()?;
                Some(NearbyDriver {
                    driver_id: id,
                    lat: fix.at.lat(),
                    lng: fix.at.lng(),
                    distance_m,
                    available: driver.available,
                    job_id: driver.job,
                    updated_at: fix.received_at,
                    connected: driver.sessions > 0,
                })
            })
            .collect()
    }
}

pub struct GeoIndex {
    index: DriverIndex,
    clock: SharedClock,
    rooms: Addr<RoomDirectory>,
    store: Arc<dyn PositionStore>,
    /// Moved since the last map drain, with their position at that drain.
    map_moved: HashMap<DriverId, Option<LatLng>>,
    /// Gone offline since the last map drain.
    map_offline: HashSet<DriverId>,
    /// Where each driver was at the last map drain.
    map_last_seen: HashMap<DriverId, LatLng>,
    /// A checkpoint write is still running; the next waits for it.
    checkpoint_running: bool,
    checkpoint_every: Duration,
    /// How long a driver whose last socket closed stays in searches (see
    /// [`GeoIndex::offline_grace`]).
    offline_grace: Duration,
    /// Position writes take turns in the order they were started, so an older write never
    /// lands after a newer one (the periodic checkpoint and the flush at shutdown may overlap).
    write_turns: Arc<tokio::sync::Mutex<()>>,
    /// The matcher, told when drivers become free to take a job.
    matcher: Option<Recipient<DriversFree>>,
    /// The matcher has jobs nobody could take: it also hears of free drivers that moved.
    matcher_waiting: bool,
    /// Drivers that became free (or, while the matcher waits, moved) in the current handler.
    freed: Vec<(DriverId, LatLng)>,
}

impl GeoIndex {
    pub fn new(
        area: Arc<ServiceArea>,
        clock: SharedClock,
        stale_after: Duration,
        rooms: Addr<RoomDirectory>,
        store: Arc<dyn PositionStore>,
    ) -> Self {
        Self {
            index: DriverIndex::new(area, stale_after),
            clock,
            rooms,
            store,
            map_moved: HashMap::new(),
            map_offline: HashSet::new(),
            map_last_seen: HashMap::new(),
            checkpoint_running: false,
            checkpoint_every: CHECKPOINT_EVERY,
            offline_grace: Duration::ZERO,
            write_turns: Arc::default(),
            matcher: None,
            matcher_waiting: false,
            freed: Vec::new(),
        }
    }

    /// Runs `change` on the index and notes the driver if it became dispatchable through it.
    fn watch_freed<T>(&mut self, id: DriverId, change: impl FnOnce(&mut Self) -> T) -> T {
        let now = self.clock.now();
        let before = self.index.dispatchable_at(id, now).is_some();
        let out = change(self);
        if !before && let Some(at) = self.index.dispatchable_at(id, now) {
            self.freed.push((id, at));
        }
        out
    }

    /// Tells the matcher about the drivers freed since the last call.
    fn tell_matcher(&mut self) {
        if self.freed.is_empty() {
            return;
        }
        let freed = std::mem::take(&mut self.freed);
        if let Some(matcher) = &self.matcher {
            matcher.do_send(DriversFree(freed));
        }
    }

    /// Keeps a driver whose last socket closed (an app sent to the background, a tunnel) in
    /// searches and offers for this long, while their position is fresh: offers then reach
    /// them by push. Zero takes them offline at once.
    pub fn offline_grace(mut self, grace: Duration) -> Self {
        self.offline_grace = grace;
        self
    }

    /// Writes positions this often instead of every [`CHECKPOINT_EVERY`].
    pub fn checkpoint_every(mut self, every: Duration) -> Self {
        self.checkpoint_every = every;
        self
    }

    /// Takes a driver out of searches and, if the map showed it, tells the map it is offline.
    fn take_offline(&mut self, id: DriverId) {
        if self.index.take_off_tree(id) {
            self.map_moved.remove(&id);
            self.map_offline.insert(id);
        }
    }

    fn mark_moved(&mut self, id: DriverId) {
        let previous = self.map_last_seen.get(&id).copied();
        self.map_moved.entry(id).or_insert(previous);
        self.map_offline.remove(&id);
    }

    /// Applies one fix; for a driver on a job, adds it to `located` for the job's room.
    fn apply_fix(
        &mut self,
        id: DriverId,
        fix: DriverFix,
        located: &mut Vec<DriverLocated>,
    ) -> bool {
        let at = fix.at;
        match self.index.apply_fix(id, fix) {
            FixOutcome::Rejected => false,
            FixOutcome::Accepted {
                job,
                moved_far,
                free,
                became_free,
            } => {
                if became_free || (free && moved_far && self.matcher_waiting) {
                    self.freed.push((id, at));
                }
                // Copied only for a driver on a job, whose room wants it.
                if let Some(job) = job
                    && let Some(fix) = self.index.drivers.get(&id).and_then(|d| d.fix.clone())
                {
                    located.push(DriverLocated {
                        job,
                        driver: id,
                        fix,
                    });
                }
                self.mark_moved(id);
                true
            }
        }
    }

    fn sweep_stale(&mut self) {
        for id in self.index.newly_stale(self.clock.now()) {
            self.take_offline(id);
        }
        METRICS
            .drivers
            .with_label_values(&["known"])
            .set(self.index.known() as i64);
        METRICS
            .drivers
            .with_label_values(&["live"])
            .set(self.index.live() as i64);
    }

    /// The positions changed since they were last written and last tried at least `min_age`
    /// ago (zero: every changed one). They stay due until a write of them succeeds.
    fn due_positions(&mut self, min_age: chrono::Duration) -> Vec<StoredPosition> {
        let now = self.clock.now();
        self.index
            .drivers
            .iter_mut()
            .filter(|(_, d)| {
                d.checkpoint_due && d.checkpointed_at.is_none_or(|at| now - at >= min_age)
            })
            .filter_map(|(id, d)| {
                d.checkpointed_at = Some(now);
                d.fix.as_ref().map(|fix| StoredPosition {
                    driver: *id,
                    at: fix.at,
                    heading_deg: fix.heading_deg,
                    ts_ms: fix.ts_ms,
                    recorded_at: fix.received_at,
                })
            })
            .collect()
    }

    /// Writes `positions` in its turn; once written, the drivers that have not moved since are
    /// no longer due.
    fn write_positions(
        &self,
        positions: Vec<StoredPosition>,
    ) -> impl ActorFuture<Self, Output = Result<usize, String>> + 'static {
        let written: Vec<(DriverId, DateTime<Utc>)> = positions
            .iter()
            .map(|p| (p.driver, p.recorded_at))
            .collect();
        let (store, turns) = (self.store.clone(), self.write_turns.clone());
        async move {
            let _turn = turns.lock().await;
            store.save_positions(positions).await
        }
        .into_actor(self)
        .map(move |result, this, _| {
            result?;
            for (id, recorded_at) in &written {
                if let Some(driver) = this.index.drivers.get_mut(id)
                    && driver
                        .fix
                        .as_ref()
                        .is_some_and(|fix| fix.received_at == *recorded_at)
                {
                    driver.checkpoint_due = false;
                }
            }
            Ok(written.len())
        })
    }

    fn checkpoint(&mut self, ctx: &mut Context<Self>) {
        if self.checkpoint_running {
            return;
        }
        let min_age = chrono::Duration::from_std(self.checkpoint_every)
            .unwrap_or(chrono::Duration::seconds(15));
        let positions = self.due_positions(min_age);
        if positions.is_empty() {
            return;
        }
        self.checkpoint_running = true;
        ctx.spawn(self.write_positions(positions).map(|result, this, _| {
            this.checkpoint_running = false;
            match result {
                Ok(count) => tracing::debug!(count, "driver positions checkpointed"),
                // Still due: tried again after another period.
                Err(error) => tracing::warn!(%error, "driver position checkpoint failed"),
            }
        }));
    }
}

impl Actor for GeoIndex {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(GEO_INDEX_MAILBOX);
        ctx.run_interval(SWEEP_EVERY, |this, _| this.sweep_stale());
        // Checked every second, but each driver is written at most once per period: drivers
        // connect at different times, so writes spread evenly instead of all at once.
        ctx.run_interval(SWEEP_EVERY.min(self.checkpoint_every), |this, ctx| {
            this.checkpoint(ctx)
        });
    }
}

/// Positions from one HTTP worker, coalesced (the newest per driver).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LocationBatch(pub Vec<(DriverId, DriverFix)>);

impl Handler<LocationBatch> for GeoIndex {
    type Result = ();

    fn handle(&mut self, LocationBatch(fixes): LocationBatch, _: &mut Context<Self>) {
        mailbox("geo_index").dec();
        let mut located = Vec::new();
        for (id, fix) in fixes {
            if !self.apply_fix(id, fix, &mut located) {
                count(&METRICS.frames_dropped, "out_of_order");
            }
        }
        if !located.is_empty() {
            self.rooms.do_send(DriversLocated(located));
        }
        self.tell_matcher();
    }
}

/// Event: a driver opened a socket.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DriverConnected {
    pub driver: DriverId,
    pub approved: bool,
}

impl Handler<DriverConnected> for GeoIndex {
    type Result = ();

    fn handle(&mut self, msg: DriverConnected, _: &mut Context<Self>) {
        self.watch_freed(msg.driver, |this| {
            let driver = this.index.drivers.entry(msg.driver).or_default();
            driver.sessions += 1;
            driver.reachable_until = None;
            driver.approved = msg.approved;
        });
        self.tell_matcher();
    }
}

/// Event: a driver's socket closed. With no socket left the driver goes offline, at once or
/// after the offline grace.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DriverDisconnected {
    pub driver: DriverId,
}

impl Handler<DriverDisconnected> for GeoIndex {
    type Result = ();

    fn handle(&mut self, msg: DriverDisconnected, _: &mut Context<Self>) {
        let Some(driver) = self.index.drivers.get_mut(&msg.driver) else {
            return;
        };
        driver.sessions = driver.sessions.saturating_sub(1);
        if driver.sessions == 0 {
            if self.offline_grace.is_zero() {
                self.take_offline(msg.driver);
            } else {
                let grace = chrono::Duration::from_std(self.offline_grace)
                    .unwrap_or(chrono::Duration::zero());
                driver.reachable_until = Some(self.clock.now() + grace);
            }
        }
    }
}

/// Command: set a driver's availability. Refused for drivers not approved.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), NotApproved>")]
pub struct SetAvailability {
    pub driver: DriverId,
    /// The driver's approval as the database has it now, when the caller read it; otherwise the
    /// index's own knowledge (from the connection and approval events) decides.
    pub approved: Option<bool>,
    pub available: bool,
}

/// Only approved drivers can become available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotApproved;

impl Handler<SetAvailability> for GeoIndex {
    type Result = Result<(), NotApproved>;

    fn handle(&mut self, msg: SetAvailability, _: &mut Context<Self>) -> Self::Result {
        let outcome = self.watch_freed(msg.driver, |this| {
            let driver = this.index.drivers.entry(msg.driver).or_default();
            if let Some(approved) = msg.approved {
                driver.approved = approved;
            }
            if msg.available && !driver.approved {
                return Err(NotApproved);
            }
            let changed = driver.available != msg.available;
            driver.available = msg.available;
            if changed && driver.point.is_some() {
                this.mark_moved(msg.driver);
            }
            Ok(())
        });
        self.tell_matcher();
        outcome
    }
}

/// Event: a dispatcher approved a driver.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DriverApproved {
    pub driver: DriverId,
}

impl Handler<DriverApproved> for GeoIndex {
    type Result = ();

    fn handle(&mut self, msg: DriverApproved, _: &mut Context<Self>) {
        self.watch_freed(msg.driver, |this| {
            this.index.drivers.entry(msg.driver).or_default().approved = true;
        });
        self.tell_matcher();
    }
}

/// Event: a driver took a job (`Some`) or is done with it (`None`).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetDriverJob {
    pub driver: DriverId,
    pub job: Option<JobId>,
}

impl Handler<SetDriverJob> for GeoIndex {
    type Result = ();

    fn handle(&mut self, msg: SetDriverJob, _: &mut Context<Self>) {
        self.watch_freed(msg.driver, |this| {
            let driver = this.index.drivers.entry(msg.driver).or_default();
            if driver.job != msg.job {
                driver.job = msg.job;
                if driver.point.is_some() {
                    this.mark_moved(msg.driver);
                }
            }
        });
        self.tell_matcher();
    }
}

/// Query: the nearest drivers to a point, by great-circle distance, within a radius.
#[derive(Debug, Message)]
#[rtype(result = "Vec<NearbyDriver>")]
pub struct FindNearest {
    pub at: LatLng,
    pub radius_m: f64,
    pub limit: usize,
    pub filter: SearchFilter,
}

impl Handler<FindNearest> for GeoIndex {
    type Result = MessageResult<FindNearest>;

    fn handle(&mut self, msg: FindNearest, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.index.nearest(
            &msg.at,
            msg.radius_m,
            msg.limit,
            &msg.filter,
            self.clock.now(),
        ))
    }
}

/// One job's search for drivers to offer it to.
#[derive(Debug, Clone)]
pub struct CandidateQuery {
    pub at: LatLng,
    /// How many candidates, nearest first.
    pub limit: usize,
    /// Drivers who declined the job or let an offer of it expire.
    pub exclude: HashSet<DriverId>,
}

/// Query: dispatchable drivers for several jobs at once (one message for a whole burst), each
/// list nearest first within `radius_m`. Queries are answered in order and a driver who heads
/// one list is left out of the later ones, so jobs of one burst do not all want the same
/// driver; `busy` drivers (holding offers already) are left out of all.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Vec<NearbyDriver>>")]
pub struct FindCandidates {
    pub radius_m: f64,
    pub queries: Vec<CandidateQuery>,
    pub busy: HashSet<DriverId>,
}

impl Handler<FindCandidates> for GeoIndex {
    type Result = MessageResult<FindCandidates>;

    fn handle(&mut self, msg: FindCandidates, _: &mut Context<Self>) -> Self::Result {
        let now = self.clock.now();
        let mut taken = msg.busy;
        MessageResult(
            msg.queries
                .into_iter()
                .map(|query| {
                    let filter = SearchFilter {
                        available: None,
                        dispatchable: true,
                        exclude: query.exclude,
                    };
                    let found = self.index.nearest_where(
                        &query.at,
                        msg.radius_m,
                        query.limit,
                        &filter,
                        now,
                        |id| !taken.contains(&id),
                    );
                    if let Some(first) = found.first() {
                        taken.insert(first.driver_id);
                    }
                    found
                })
                .collect(),
        )
    }
}

/// Event for the matcher: these drivers just became free to take a job (available, connected,
/// fresh, approved, in the area, not on a job), or, while it waits for drivers, free drivers
/// that moved; with where they are.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DriversFree(pub Vec<(DriverId, LatLng)>);

/// Command at start-up: where to report free drivers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectMatcher(pub Recipient<DriversFree>);

impl Handler<ConnectMatcher> for GeoIndex {
    type Result = ();

    fn handle(&mut self, msg: ConnectMatcher, _: &mut Context<Self>) {
        self.matcher = Some(msg.0);
    }
}

/// Command from the matcher: whether it has jobs waiting for a driver (then free drivers that
/// move are reported too, so a driver driving into range gets the job).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct MatcherWaiting(pub bool);

impl Handler<MatcherWaiting> for GeoIndex {
    type Result = ();

    fn handle(&mut self, msg: MatcherWaiting, _: &mut Context<Self>) {
        self.matcher_waiting = msg.0;
    }
}

/// Query: every live driver (fresh position), optionally within a box.
#[derive(Debug, Message)]
#[rtype(result = "Vec<MapDriver>")]
pub struct GetLiveDrivers {
    pub bbox: Option<BBox>,
}

impl Handler<GetLiveDrivers> for GeoIndex {
    type Result = MessageResult<GetLiveDrivers>;

    fn handle(&mut self, msg: GetLiveDrivers, _: &mut Context<Self>) -> Self::Result {
        let now = self.clock.now();
        let drivers = match msg.bbox {
            Some(bbox) => {
                let envelope = rstar::AABB::from_corners(
                    project(&LatLng::new(bbox.min_lat, bbox.min_lng).expect("checked box")),
                    project(&LatLng::new(bbox.max_lat, bbox.max_lng).expect("checked box")),
                );
                self.index
                    .tree
                    .locate_in_envelope(envelope)
                    .map(|e| e.data)
                    .collect::<Vec<_>>()
            }
            None => self.index.tree.iter().map(|e| e.data).collect(),
        };
        MessageResult(
            drivers
                .into_iter()
                .filter_map(|id| {
                    let driver = self.index.drivers.get(&id)?;
                    self.index
                        .is_fresh(driver, now)
                        .then(|| driver.map_entry(id))
                        .flatten()
                })
                .collect(),
        )
    }
}

/// Query: one driver's live position, if fresh.
#[derive(Debug, Message)]
#[rtype(result = "Option<MapDriver>")]
pub struct GetDriver {
    pub driver: DriverId,
}

impl Handler<GetDriver> for GeoIndex {
    type Result = Option<MapDriver>;

    fn handle(&mut self, msg: GetDriver, _: &mut Context<Self>) -> Self::Result {
        let driver = self.index.drivers.get(&msg.driver)?;
        if !self.index.is_fresh(driver, self.clock.now()) || driver.point.is_none() {
            return None;
        }
        driver.map_entry(msg.driver)
    }
}

/// Query: what changed for the map since the last call (the `DispatchMap` asks every tick).
#[derive(Debug, Message)]
#[rtype(result = "MapChanges")]
pub struct DrainMapChanges;

impl Handler<DrainMapChanges> for GeoIndex {
    type Result = MessageResult<DrainMapChanges>;

    fn handle(&mut self, _: DrainMapChanges, _: &mut Context<Self>) -> Self::Result {
        let mut changes = MapChanges::default();
        for (id, previous) in std::mem::take(&mut self.map_moved) {
            if let Some(entry) = self.index.drivers.get(&id).and_then(|d| d.map_entry(id)) {
                self.map_last_seen.insert(
                    id,
                    LatLng::new(entry.lat, entry.lng).expect("stored positions are valid"),
                );
                changes.drivers.push(MapChange {
                    driver: entry,
                    previous,
                });
            }
        }
        for id in std::mem::take(&mut self.map_offline) {
            self.map_last_seen.remove(&id);
            changes.offline.push(id);
        }
        MessageResult(changes)
    }
}

/// What the engine remembers of a driver across restarts.
#[derive(Debug, Clone)]
pub struct RestoredDriver {
    pub driver: DriverId,
    pub approved: bool,
    pub job: Option<JobId>,
    pub position: Option<StoredPosition>,
}

/// Command at start-up: the drivers as storage has them. Positions come back as stale: known,
/// but out of searches and offline on the map until the driver reports again.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Restore(pub Vec<RestoredDriver>);

impl Handler<Restore> for GeoIndex {
    type Result = ();

    fn handle(&mut self, Restore(restored): Restore, _: &mut Context<Self>) {
        for r in restored {
            let driver = self.index.drivers.entry(r.driver).or_default();
            driver.approved = r.approved;
            driver.job = r.job;
            if let Some(position) = r.position {
                driver.county = self.index.area.county_at(&position.at);
                driver.area_checked_at = Some(position.at);
                driver.fix = Some(DriverFix {
                    at: position.at,
                    heading_deg: position.heading_deg,
                    speed_mps: None,
                    accuracy_m: None,
                    ts_ms: position.ts_ms,
                    received_at: position.recorded_at,
                    received: std::time::Instant::now(),
                });
            }
        }
    }
}

/// Command at shutdown: write every position not yet checkpointed, and answer when done.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, String>")]
pub struct FlushPositions;

impl Handler<FlushPositions> for GeoIndex {
    type Result = ResponseActFuture<Self, Result<usize, String>>;

    fn handle(&mut self, _: FlushPositions, _: &mut Context<Self>) -> Self::Result {
        // Includes positions a periodic checkpoint is still writing: this write comes after it.
        let positions = self.due_positions(chrono::Duration::zero());
        if positions.is_empty() {
            return Box::pin(actix::fut::ready(Ok(0)));
        }
        Box::pin(self.write_positions(positions))
    }
}
