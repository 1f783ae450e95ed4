//! `Matcher`: offers each `dispatching` job to one driver at a time, nearest first.
//!
//! The database decides every race: an offer exists once its row is written (at most one open
//! offer per job and per driver, by unique indexes), and only the conditional accept in the web
//! layer turns it into an assignment. The matcher keeps what it needs to move fast (which job
//! waits, which driver holds which offer, when each offer expires) and re-reads a job from the
//! database whenever a write of its own is refused, because then someone else (another engine
//! process, a dispatcher, the customer) changed it.
//!
//! Flow per job: queued → searched (one `FindCandidates` message for every queued job) → an
//! offer row written (one transaction for every offer decided together) → `offer` to the driver.
//! Decline or expiry excludes the driver and queues the job again; no candidate left →
//! `job.unassigned` to dispatchers, and the job waits until the geo index reports a free driver
//! within range.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::dispatch_map::{DispatchMap, JobUnassigned};
use super::geo_index::{CandidateQuery, DriversFree, FindCandidates, GeoIndex, MatcherWaiting};
use super::metrics::METRICS;
use super::model::{Job, JobStatus};
use super::protocol::{OfferClosedReason, ServerMessage};
use super::registry::{PushToUser, SessionRegistry};
use super::scheduler::{Schedule, Scheduler};
use crate::clock::SharedClock;
use crate::ids::{DriverId, JobId, OfferId};

/// Candidates asked for per job at first; doubled when all of them hold other offers.
const FIRST_CANDIDATES: usize = 4;
/// Jobs searched in one message to the geo index, and offers written in one transaction.
const BATCH: usize = 512;
/// After a storage error, jobs are tried again this much later.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// An offer that is open in the database.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenOffer {
    pub id: OfferId,
    pub driver: DriverId,
    pub distance_m: f64,
    pub expires_at: DateTime<Utc>,
}

/// A `dispatching` job as the database has it, with what dispatching it needs.
#[derive(Debug, Clone)]
pub struct DispatchJob {
    pub job: Job,
    /// Drivers who declined it, let an offer of it expire, or had it and lost it.
    pub excluded: Vec<DriverId>,
    pub open_offer: Option<OpenOffer>,
}

/// An offer to write.
#[derive(Debug, Clone)]
pub struct NewOffer {
    pub id: OfferId,
    pub job: JobId,
    pub driver: DriverId,
    pub distance_m: f64,
    pub expires_at: DateTime<Utc>,
    /// The driver has no socket open (their app is in the background): the offer must also
    /// reach them by push.
    pub by_push: bool,
}

/// What the matcher needs from storage (the database, in the engine).
#[async_trait]
pub trait DispatchStore: Send + Sync + 'static {
    /// Writes the offers whose job is still `dispatching` without an open offer and whose driver
    /// holds no open offer; returns the ids written.
    async fn open_offers(
        &self,
        offers: Vec<NewOffer>,
        now: DateTime<Utc>,
    ) -> Result<Vec<OfferId>, String>;
    /// Closes as expired those of `offers` that are still open and past their expiry; returns
    /// the ids closed.
    async fn expire_offers(
        &self,
        offers: Vec<OfferId>,
        now: DateTime<Utc>,
    ) -> Result<Vec<OfferId>, String>;
    /// The `dispatching` jobs: all of them, or those of `only` that still are.
    async fn dispatching(&self, only: Option<Vec<JobId>>) -> Result<Vec<DispatchJob>, String>;
}

#[derive(Debug, Clone, Copy)]
pub struct MatcherSettings {
    /// `OFFER_TIMEOUT_SECS`.
    pub offer_timeout: Duration,
    /// `DISPATCH_RADIUS_M`.
    pub radius_m: f64,
    /// `DISPATCH_LEAD_MINUTES`: a scheduled job is dispatched this long before its time.
    pub lead: Duration,
    /// How often expiries are checked.
    pub tick: Duration,
    /// How often the database's list of dispatching jobs is read again (jobs made ready by
    /// another engine process, anything missed).
    pub resync_every: Duration,
}

/// Where a job stands in the matcher.
#[derive(Debug, Clone, PartialEq)]
enum Stage {
    /// Waiting for its turn to be searched.
    Queued,
    /// In the search or offer write under way.
    Busy,
    /// Offered to a driver; the offer is ours.
    Offered(OpenOffer),
    /// Another engine process holds an open offer for it until then.
    OfferedElsewhere(DateTime<Utc>),
    /// Nobody could take it; waits for a free driver in range.
    Waiting,
    /// Scheduled for later; the scheduler hands it back when due.
    Scheduled,
}

struct Pending {
    job: Job,
    excluded: HashSet<DriverId>,
    stage: Stage,
    /// Candidates to ask for in the next search.
    want: usize,
    /// When it became ready here (for the dispatch latency histogram).
    ready: Instant,
}

pub struct Matcher {
    settings: MatcherSettings,
    clock: SharedClock,
    store: Arc<dyn DispatchStore>,
    geo: Addr<GeoIndex>,
    sessions: Addr<SessionRegistry>,
    map: Addr<DispatchMap>,
    scheduler: Addr<Scheduler>,
    jobs: HashMap<JobId, Pending>,
    queue: VecDeque<JobId>,
    /// Drivers holding (or about to hold) an offer from here, and for which job.
    offered: HashMap<DriverId, JobId>,
    /// Our open offers by expiry.
    expiries: BTreeSet<(DateTime<Utc>, OfferId, JobId)>,
    waiting: HashSet<JobId>,
    /// A search or an offer write is under way (one at a time; the rest batch up meanwhile).
    working: bool,
    expiring: bool,
    told_geo_waiting: bool,
    work_scheduled: bool,
}

impl Matcher {
    pub fn new(
        settings: MatcherSettings,
        clock: SharedClock,
        store: Arc<dyn DispatchStore>,
        geo: Addr<GeoIndex>,
        sessions: Addr<SessionRegistry>,
        map: Addr<DispatchMap>,
        scheduler: Addr<Scheduler>,
    ) -> Self {
        Self {
            settings,
            clock,
            store,
            geo,
            sessions,
            map,
            scheduler,
            jobs: HashMap::new(),
            queue: VecDeque::new(),
            offered: HashMap::new(),
            expiries: BTreeSet::new(),
            waiting: HashSet::new(),
            working: false,
            expiring: false,
            told_geo_waiting: false,
            work_scheduled: false,
        }
    }

    /// When dispatching of `job` may start.
    fn due_at(&self, job: &Job) -> Option<DateTime<Utc>> {
        let lead = chrono::Duration::from_std(self.settings.lead).unwrap_or_default();
        job.scheduled_at.map(|at| at - lead)
    }

    /// Takes a job in (or updates what is known of it).
    fn admit(&mut self, ready: DispatchJob, ctx: &mut Context<Self>) {
        let DispatchJob {
            job,
            excluded,
            open_offer,
        } = ready;
        if job.status != JobStatus::Dispatching {
            return self.settle(job.id);
        }
        let id = job.id;
        let now = self.clock.now();
        let due = self.due_at(&job).filter(|due| *due > now);
        if let Some(pending) = self.jobs.get_mut(&id) {
            pending.excluded.extend(excluded);
            pending.job = job;
            if let Some(offer) = open_offer
                && !matches!(pending.stage, Stage::Offered(_) | Stage::Busy)
            {
                pending.stage = Stage::OfferedElsewhere(offer.expires_at);
            }
            return;
        }
        let stage = match (&open_offer, due) {
            (_, Some(_)) => Stage::Scheduled,
            (Some(offer), None) if !self.offered.contains_key(&offer.driver) => {
                // An offer written before a restart (or by this process): ours again, so its
                // expiry is watched here.
                self.offered.insert(offer.driver, id);
                self.expiries.insert((offer.expires_at, offer.id, id));
                Stage::Offered(offer.clone())
            }
            (Some(offer), None) => Stage::OfferedElsewhere(offer.expires_at),
            (None, None) => Stage::Queued,
        };
        if let (Stage::Scheduled, Some(due)) = (&stage, due) {
            self.scheduler.do_send(Schedule { job: id, due });
        }
        let queued = stage == Stage::Queued;
        self.jobs.insert(
            id,
            Pending {
                job,
                excluded: excluded.into_iter().collect(),
                stage,
                want: FIRST_CANDIDATES,
                ready: Instant::now(),
            },
        );
        if queued {
            self.queue.push_back(id);
            self.work_soon(ctx);
        }
    }

    /// Forgets a job that left `dispatching` (assigned, cancelled).
    fn settle(&mut self, id: JobId) {
        let Some(pending) = self.jobs.remove(&id) else {
            return;
        };
        if let Stage::Offered(offer) = pending.stage {
            self.release(&offer, id);
        }
        self.waiting.remove(&id);
    }

    /// Frees the driver of an offer that closed.
    fn release(&mut self, offer: &OpenOffer, job: JobId) {
        if self.offered.get(&offer.driver) == Some(&job) {
            self.offered.remove(&offer.driver);
        }
        self.expiries.remove(&(offer.expires_at, offer.id, job));
    }

    fn requeue(&mut self, id: JobId, ctx: &mut Context<Self>) {
        if let Some(pending) = self.jobs.get_mut(&id) {
            pending.stage = Stage::Queued;
            self.waiting.remove(&id);
            self.queue.push_back(id);
            self.work_soon(ctx);
        }
    }

    /// Starts the next search once the current message is handled, so jobs queued together
    /// (a burst of due jobs, many freed at once) are searched together.
    fn work_soon(&mut self, ctx: &mut Context<Self>) {
        if !self.work_scheduled {
            self.work_scheduled = true;
            ctx.run_later(Duration::ZERO, |this, ctx| {
                this.work_scheduled = false;
                this.work(ctx);
            });
        }
    }

    fn push(&self, driver: DriverId, name: &'static str, message: &ServerMessage<'_>) {
        push_to(&self.sessions, driver, name, message);
    }

    /// Starts the next search if none is under way.
    fn work(&mut self, ctx: &mut Context<Self>) {
        if self.working {
            return;
        }
        let mut batch = Vec::new();
        while batch.len() < BATCH {
            let Some(id) = self.queue.pop_front() else {
                break;
            };
            if let Some(pending) = self.jobs.get_mut(&id)
                && pending.stage == Stage::Queued
            {
                if pending.job.position().is_none() {
                    // Stored coordinates are checked on the way in; never seen.
                    tracing::error!(job = %id, "a dispatching job without valid coordinates");
                    self.jobs.remove(&id);
                    continue;
                }
                pending.stage = Stage::Busy;
                batch.push(id);
            }
        }
        if batch.is_empty() {
            return;
        }
        self.working = true;
        let queries = batch
            .iter()
            .filter_map(|id| {
                let pending = &self.jobs[id];
                Some(CandidateQuery {
                    at: pending.job.position()?,
                    limit: pending.want,
                    exclude: pending.excluded.clone(),
                })
            })
            .collect::<Vec<_>>();
        debug_assert_eq!(queries.len(), batch.len());
        let search = self.geo.send(FindCandidates {
            radius_m: self.settings.radius_m,
            queries,
            busy: self.offered.keys().copied().collect(),
        });
        ctx.spawn(
            search
                .into_actor(self)
                .map(move |found, this, ctx| match found {
                    Ok(found) => this.choose(batch, found, ctx),
                    Err(_) => {
                        // The geo index is gone (shutting down).
                        this.working = false;
                    }
                }),
        );
    }

    /// Gives each searched job the nearest candidate no other job holds, then writes the offers.
    fn choose(
        &mut self,
        batch: Vec<JobId>,
        found: Vec<Vec<super::model::NearbyDriver>>,
        ctx: &mut Context<Self>,
    ) {
        let now = self.clock.now();
        let expires_at = now
            + chrono::Duration::from_std(self.settings.offer_timeout)
                .unwrap_or(chrono::Duration::seconds(30));
        let mut offers = Vec::new();
        let mut unassigned = Vec::new();
        for (id, candidates) in batch.into_iter().zip(found) {
            let Some(pending) = self.jobs.get_mut(&id) else {
                continue;
            };
            if pending.stage != Stage::Busy {
                continue;
            }
            let pick = candidates
                .iter()
                .find(|c| !self.offered.contains_key(&c.driver_id));
            match pick {
                Some(candidate) => {
                    self.offered.insert(candidate.driver_id, id);
                    pending.want = FIRST_CANDIDATES;
                    offers.push(NewOffer {
                        id: OfferId::new_random(),
                        job: id,
                        driver: candidate.driver_id,
                        distance_m: candidate.distance_m,
                        expires_at,
                        by_push: !candidate.connected,
                    });
                }
                // Every candidate holds another job's offer: look further.
                None if candidates.len() == pending.want => {
                    pending.want *= 2;
                    pending.stage = Stage::Queued;
                    self.queue.push_back(id);
                }
                None => {
                    pending.want = FIRST_CANDIDATES;
                    pending.stage = Stage::Waiting;
                    self.waiting.insert(id);
                    unassigned.push((id, pending.job.position()));
                }
            }
        }
        for (job, at) in unassigned {
            METRICS
                .dispatch_outcomes
                .with_label_values(&["unassigned"])
                .inc();
            self.map.do_send(JobUnassigned { job, at });
        }
        self.update_geo_waiting();
        if offers.is_empty() {
            self.working = false;
            return self.work(ctx);
        }
        self.write_offers(offers, ctx);
    }

    fn write_offers(&mut self, offers: Vec<NewOffer>, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let now = self.clock.now();
        let written = {
            let offers = offers.clone();
            async move { store.open_offers(offers, now).await }
        };
        ctx.spawn(written.into_actor(self).map(move |result, this, ctx| {
            this.working = false;
            let opened: HashSet<OfferId> = match result {
                Ok(ids) => ids.into_iter().collect(),
                Err(error) => {
                    tracing::warn!(%error, "offers could not be written; trying again");
                    HashSet::new()
                }
            };
            let mut refused = Vec::new();
            for offer in offers {
                if opened.contains(&offer.id) {
                    this.offer_opened(offer);
                } else {
                    if this.offered.get(&offer.driver) == Some(&offer.job) {
                        this.offered.remove(&offer.driver);
                    }
                    refused.push(offer.job);
                }
            }
            if !refused.is_empty() {
                this.reread(refused, ctx);
            }
            this.work(ctx);
        }));
    }

    fn offer_opened(&mut self, offer: NewOffer) {
        let Some(pending) = self.jobs.get_mut(&offer.job) else {
            // Settled while the offer was written (whoever settled it closed the offer in the
            // same transaction): the driver is free again.
            if self.offered.get(&offer.driver) == Some(&offer.job) {
                self.offered.remove(&offer.driver);
            }
            return;
        };
        let open = OpenOffer {
            id: offer.id,
            driver: offer.driver,
            distance_m: offer.distance_m,
            expires_at: offer.expires_at,
        };
        pending.stage = Stage::Offered(open);
        self.expiries
            .insert((offer.expires_at, offer.id, offer.job));
        METRICS
            .dispatch_offer_seconds
            .observe(pending.ready.elapsed().as_secs_f64());
        METRICS
            .dispatch_outcomes
            .with_label_values(&["offered"])
            .inc();
        let message = ServerMessage::Offer {
            offer_id: offer.id,
            job: &pending.job,
            distance_m: offer.distance_m,
            expires_at: offer.expires_at,
        };
        push_to(&self.sessions, offer.driver, "offer", &message);
    }

    /// Reads jobs again after a write of ours was refused: someone else changed them.
    fn reread(&mut self, ids: Vec<JobId>, ctx: &mut Context<Self>) {
        for id in &ids {
            if let Some(pending) = self.jobs.get_mut(id) {
                pending.stage = Stage::Busy;
            }
        }
        let store = self.store.clone();
        let asked = ids.clone();
        ctx.spawn(
            async move { store.dispatching(Some(asked)).await }
                .into_actor(self)
                .map(move |result, this, ctx| match result {
                    Ok(found) => {
                        let still: HashSet<JobId> = found.iter().map(|d| d.job.id).collect();
                        for id in &ids {
                            if !still.contains(id) {
                                this.settle(*id);
                            }
                        }
                        for ready in found {
                            let id = ready.job.id;
                            match &ready.open_offer {
                                Some(offer) => {
                                    if let Some(p) = this.jobs.get_mut(&id) {
                                        p.excluded.extend(ready.excluded.iter().copied());
                                        p.stage = Stage::OfferedElsewhere(offer.expires_at);
                                    }
                                }
                                None => {
                                    if let Some(p) = this.jobs.get_mut(&id) {
                                        p.excluded.extend(ready.excluded.iter().copied());
                                    }
                                    this.requeue(id, ctx);
                                }
                            }
                        }
                    }
                    Err(error) => {
                        // The database is not answering: try again in a while, not in a loop.
                        tracing::warn!(%error, "dispatching jobs could not be read; trying again");
                        ctx.run_later(RETRY_AFTER_ERROR, move |this, ctx| {
                            for id in ids {
                                this.requeue(id, ctx);
                            }
                        });
                    }
                }),
        );
    }

    /// Closes our offers past their expiry and moves their jobs on; looks again at jobs whose
    /// offer from elsewhere should have expired.
    fn expire(&mut self, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        let elsewhere: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, p)| matches!(p.stage, Stage::OfferedElsewhere(at) if at <= now))
            .map(|(id, _)| *id)
            .collect();
        if !elsewhere.is_empty() {
            self.reread(elsewhere, ctx);
        }
        if self.expiring {
            return;
        }
        let due: Vec<(DateTime<Utc>, OfferId, JobId)> = self
            .expiries
            .iter()
            .take_while(|(at, ..)| *at <= now)
            .copied()
            .collect();
        if due.is_empty() {
            return;
        }
        self.expiring = true;
        let store = self.store.clone();
        let ids: Vec<OfferId> = due.iter().map(|(_, id, _)| *id).collect();
        ctx.spawn(
            async move { store.expire_offers(ids, now).await }
                .into_actor(self)
                .map(move |result, this, ctx| {
                    this.expiring = false;
                    let closed: HashSet<OfferId> = match result {
                        Ok(closed) => closed.into_iter().collect(),
                        Err(error) => {
                            tracing::warn!(%error, "offers could not be expired; trying again");
                            return;
                        }
                    };
                    let mut reread = Vec::new();
                    for (_, offer_id, job) in due {
                        let Some(pending) = this.jobs.get_mut(&job) else {
                            continue;
                        };
                        let Stage::Offered(offer) = pending.stage.clone() else {
                            continue;
                        };
                        if offer.id != offer_id {
                            continue;
                        }
                        if closed.contains(&offer_id) {
                            pending.excluded.insert(offer.driver);
                            this.release(&offer, job);
                            METRICS
                                .dispatch_outcomes
                                .with_label_values(&["expired"])
                                .inc();
                            this.push(
                                offer.driver,
                                "offer.closed",
                                &ServerMessage::OfferClosed {
                                    offer_id,
                                    reason: OfferClosedReason::Expired,
                                },
                            );
                            this.requeue(job, ctx);
                        } else {
                            // Answered or closed meanwhile (possibly by another process).
                            this.release(&offer, job);
                            reread.push(job);
                        }
                    }
                    if !reread.is_empty() {
                        this.reread(reread, ctx);
                    }
                }),
        );
    }

    /// Reads the database's dispatching jobs: takes in those not known here, moves on jobs
    /// whose offer from another process closed, and forgets jobs that left `dispatching`
    /// elsewhere.
    fn resync(&mut self, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let asked = Instant::now();
        ctx.spawn(
            async move { store.dispatching(None).await }
                .into_actor(self)
                .map(move |result, this, ctx| {
                    let found = match result {
                        Ok(found) => found,
                        Err(error) => {
                            return tracing::warn!(%error, "dispatching jobs could not be read");
                        }
                    };
                    let listed: HashSet<JobId> = found.iter().map(|d| d.job.id).collect();
                    // Known before the read started, idle here, and no longer dispatching.
                    let gone: Vec<JobId> = this
                        .jobs
                        .iter()
                        .filter(|(id, p)| {
                            !listed.contains(id)
                                && p.ready < asked
                                && matches!(
                                    p.stage,
                                    Stage::Queued | Stage::Waiting | Stage::OfferedElsewhere(_)
                                )
                        })
                        .map(|(id, _)| *id)
                        .collect();
                    for id in gone {
                        this.settle(id);
                    }
                    for ready in found {
                        let id = ready.job.id;
                        match this.jobs.get_mut(&id) {
                            None => this.admit(ready, ctx),
                            Some(pending) => {
                                pending.excluded.extend(ready.excluded.iter().copied());
                                if matches!(pending.stage, Stage::OfferedElsewhere(_))
                                    && ready.open_offer.is_none()
                                {
                                    this.requeue(id, ctx);
                                }
                            }
                        }
                    }
                    this.update_geo_waiting();
                }),
        );
    }

    fn update_geo_waiting(&mut self) {
        let waiting = !self.waiting.is_empty();
        if waiting != self.told_geo_waiting {
            self.told_geo_waiting = waiting;
            self.geo.do_send(MatcherWaiting(waiting));
        }
    }
}

fn push_to(
    sessions: &Addr<SessionRegistry>,
    driver: DriverId,
    name: &'static str,
    message: &ServerMessage<'_>,
) {
    sessions.do_send(PushToUser::message(driver.into(), name, message));
}

impl Actor for Matcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The database's dispatching jobs (read here, so expiries passed while the engine was
        // down are closed on the first tick).
        self.resync(ctx);
        ctx.run_interval(self.settings.tick, |this, ctx| this.expire(ctx));
        ctx.run_interval(self.settings.resync_every, |this, ctx| this.resync(ctx));
    }
}

/// Event: a job is `dispatching` (new, paid, released, or read back at start-up).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct JobReady(pub DispatchJob);

impl Handler<JobReady> for Matcher {
    type Result = ();

    fn handle(&mut self, msg: JobReady, ctx: &mut Context<Self>) {
        self.admit(msg.0, ctx);
    }
}

/// Event: jobs left `dispatching` (assigned, cancelled), so their offers are over.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct JobSettled(pub JobId);

impl Handler<JobSettled> for Matcher {
    type Result = ();

    fn handle(&mut self, msg: JobSettled, _: &mut Context<Self>) {
        self.settle(msg.0);
    }
}

/// Event: a driver declined an offer (already stored).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct OfferDeclined {
    pub offer: OfferId,
    pub job: JobId,
    pub driver: DriverId,
}

impl Handler<OfferDeclined> for Matcher {
    type Result = ();

    fn handle(&mut self, msg: OfferDeclined, ctx: &mut Context<Self>) {
        let Some(pending) = self.jobs.get_mut(&msg.job) else {
            return;
        };
        pending.excluded.insert(msg.driver);
        METRICS
            .dispatch_outcomes
            .with_label_values(&["declined"])
            .inc();
        match pending.stage.clone() {
            Stage::Offered(offer) if offer.id == msg.offer => {
                self.release(&offer, msg.job);
                self.requeue(msg.job, ctx);
            }
            // An offer made elsewhere, or one this process lost track of: read the job again.
            Stage::OfferedElsewhere(_) => self.reread(vec![msg.job], ctx),
            _ => {}
        }
    }
}

impl Handler<DriversFree> for Matcher {
    type Result = ();

    fn handle(&mut self, DriversFree(drivers): DriversFree, ctx: &mut Context<Self>) {
        if self.waiting.is_empty() {
            return;
        }
        let radius = self.settings.radius_m;
        let retry: Vec<JobId> = self
            .waiting
            .iter()
            .filter(|id| {
                let Some(pending) = self.jobs.get(*id) else {
                    return false;
                };
                pending.job.position().is_some_and(|at| {
                    drivers.iter().any(|(driver, position)| {
                        !pending.excluded.contains(driver) && position.distance_m(&at) <= radius
                    })
                })
            })
            .copied()
            .collect();
        for id in retry {
            self.requeue(id, ctx);
        }
        self.update_geo_waiting();
    }
}

/// Event from the scheduler: these jobs' dispatch time has come.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct JobsDue(pub Vec<JobId>);

impl Handler<JobsDue> for Matcher {
    type Result = ();

    fn handle(&mut self, JobsDue(ids): JobsDue, ctx: &mut Context<Self>) {
        for id in ids {
            if let Some(pending) = self.jobs.get_mut(&id)
                && pending.stage == Stage::Scheduled
            {
                pending.ready = Instant::now();
                self.requeue(id, ctx);
            }
        }
    }
}
