//! The realtime actors alone, through their messages.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::mpsc;
use umuve_actors::clock::{Clock, ManualClock, SharedClock};
use umuve_actors::geo::{BBox, LatLng, ServiceArea};
use umuve_actors::ids::{DriverId, JobId, UserId};
use umuve_actors::realtime::dispatch_map::{DispatchMap, MapSubscribe};
use umuve_actors::realtime::frame::{Deliver, FrameKind};
use umuve_actors::realtime::geo_index::*;
use umuve_actors::realtime::model::{DriverFix, Job, JobStatus, LoadSize};
use umuve_actors::realtime::rooms::{
    CountRooms, JobChanged, JoinRoom, LeaveRoom, RoomDirectory, Watcher,
};

#[derive(Default)]
struct MemoryStore(Mutex<Vec<StoredPosition>>);

#[async_trait]
impl PositionStore for MemoryStore {
    async fn save_positions(&self, positions: Vec<StoredPosition>) -> Result<(), String> {
        self.0.lock().unwrap().extend(positions);
        Ok(())
    }
}

/// Collects what a session would write.
struct Collector(mpsc::UnboundedSender<Deliver>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Collector {
    type Result = ();
    fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) {
        let _ = self.0.send(msg);
    }
}

fn collector() -> (Recipient<Deliver>, mpsc::UnboundedReceiver<Deliver>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Collector(tx).start().recipient(), rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Deliver>) -> (Deliver, serde_json::Value) {
    let message = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let value = serde_json::from_str(message.frame.as_str()).unwrap();
    (message, value)
}

struct Setup {
    clock: ManualClock,
    geo: Addr<GeoIndex>,
    rooms: Addr<RoomDirectory>,
    store: Arc<MemoryStore>,
}

fn setup() -> Setup {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 25, 19, 0, 0).unwrap());
    let shared: SharedClock = Arc::new(clock.clone());
    let store = Arc::new(MemoryStore::default());
    let rooms = RoomDirectory::new().start();
    let geo = GeoIndex::new(
        Arc::new(ServiceArea::south_florida()),
        shared,
        Duration::from_secs(60),
        rooms.clone(),
        store.clone(),
    )
    .start();
    rooms.do_send(umuve_actors::realtime::rooms::ConnectGeoIndex(geo.clone()));
    Setup {
        clock,
        geo,
        rooms,
        store,
    }
}

fn fix(clock: &ManualClock, lat: f64, lng: f64, ts_ms: i64) -> DriverFix {
    DriverFix {
        at: LatLng::new(lat, lng).unwrap(),
        heading_deg: Some(45.0),
        speed_mps: None,
        accuracy_m: None,
        ts_ms,
        received_at: clock.now(),
        received: Instant::now(),
    }
}

/// A point in the tri-county box.
fn random_point(rng: &mut SmallRng) -> (f64, f64) {
    (
        25.14 + rng.random::<f64>() * 1.83,
        -80.89 + rng.random::<f64>() * 0.86,
    )
}

#[actix_rt::test]
async fn nearest_matches_a_brute_force_search() {
    let s = setup();
    let mut rng = SmallRng::seed_from_u64(0x9E37_79B9_7F4A_7C15);
    let drivers: Vec<(DriverId, (f64, f64))> = (0..3000)
        .map(|_| (DriverId::new_random(), random_point(&mut rng)))
        .collect();
    let batch = drivers
        .iter()
        .map(|(id, (lat, lng))| (*id, fix(&s.clock, *lat, *lng, 1)))
        .collect();
    s.geo.send(LocationBatch(batch)).await.unwrap();

    for _ in 0..200 {
        let (lat, lng) = random_point(&mut rng);
        let at = LatLng::new(lat, lng).unwrap();
        let radius_m = 1_000.0 + rng.random::<f64>() * 40_000.0;
        let limit = 1 + (rng.random::<f64>() * 20.0) as usize;
        let found = s
            .geo
            .send(FindNearest {
                at,
                radius_m,
                limit,
                filter: SearchFilter::default(),
            })
            .await
            .unwrap();
        let mut expected: Vec<(f64, DriverId)> = drivers
            .iter()
            .map(|(id, (lat, lng))| (LatLng::new(*lat, *lng).unwrap().distance_m(&at), *id))
            .filter(|(d, _)| *d <= radius_m)
            .collect();
        expected.sort_by(|a, b| a.0.total_cmp(&b.0));
        expected.truncate(limit);
        let found_ids: Vec<DriverId> = found.iter().map(|d| d.driver_id).collect();
        let expected_ids: Vec<DriverId> = expected.iter().map(|(_, id)| *id).collect();
        assert_eq!(
            found_ids, expected_ids,
            "query at {lat},{lng} r={radius_m} k={limit}"
        );
        for (got, (distance, _)) in found.iter().zip(&expected) {
            assert!((got.distance_m - distance).abs() < 1e-6);
        }
    }
}

#[actix_rt::test]
async fn dispatch_searches_see_only_drivers_who_can_take_a_job() {
    let s = setup();
    let brickell = (25.7617, -80.1918);
    let ready = DriverId::new_random();
    let unapproved = DriverId::new_random();
    let busy = DriverId::new_random();
    let offline = DriverId::new_random();
    let unavailable = DriverId::new_random();
    for (driver, approved) in [
        (ready, true),
        (unapproved, false),
        (busy, true),
        (unavailable, true),
    ] {
        s.geo
            .send(DriverConnected { driver, approved })
            .await
            .unwrap();
    }
    for driver in [ready, busy] {
        s.geo
            .send(SetAvailability {
                driver,
                approved: None,
                available: true,
            })
            .await
            .unwrap()
            .unwrap();
    }
    assert!(
        s.geo
            .send(SetAvailability {
                driver: unapproved,
                approved: None,
                available: true
            })
            .await
            .unwrap()
            .is_err()
    );
    s.geo
        .send(SetDriverJob {
            driver: busy,
            job: Some(JobId::new_random()),
        })
        .await
        .unwrap();
    let batch = [ready, unapproved, busy, offline, unavailable]
        .iter()
        .map(|id| (*id, fix(&s.clock, brickell.0, brickell.1, 1)))
        .collect();
    s.geo.send(LocationBatch(batch)).await.unwrap();

    let search = |filter: SearchFilter| {
        s.geo.send(FindNearest {
            at: LatLng::new(brickell.0, brickell.1).unwrap(),
            radius_m: 5_000.0,
            limit: 10,
            filter,
        })
    };
    let dispatchable = search(SearchFilter {
        dispatchable: true,
        ..SearchFilter::default()
    })
    .await
    .unwrap();
    assert_eq!(
        dispatchable.iter().map(|d| d.driver_id).collect::<Vec<_>>(),
        [ready]
    );
    let excluded = search(SearchFilter {
        dispatchable: true,
        exclude: [ready].into(),
        ..SearchFilter::default()
    })
    .await
    .unwrap();
    assert!(excluded.is_empty());
    assert_eq!(search(SearchFilter::default()).await.unwrap().len(), 5);
}

#[actix_rt::test]
async fn old_and_stale_positions_are_handled() {
    let s = setup();
    let driver = DriverId::new_random();
    s.geo
        .send(DriverConnected {
            driver,
            approved: true,
        })
        .await
        .unwrap();
    s.geo
        .send(LocationBatch(vec![(
            driver,
            fix(&s.clock, 25.7617, -80.1918, 2_000),
        )]))
        .await
        .unwrap();
    // An older fix arriving late is ignored.
    s.geo
        .send(LocationBatch(vec![(
            driver,
            fix(&s.clock, 26.10, -80.14, 1_000),
        )]))
        .await
        .unwrap();
    let live = s.geo.send(GetDriver { driver }).await.unwrap().unwrap();
    assert_eq!((live.lat, live.ts), (25.7617, 2_000));
    assert_eq!(live.county, Some(umuve_actors::geo::County::MiamiDade));

    let changes = s.geo.send(DrainMapChanges).await.unwrap();
    assert_eq!(changes.drivers.len(), 1);
    assert!(
        s.geo
            .send(DrainMapChanges)
            .await
            .unwrap()
            .drivers
            .is_empty(),
        "drained"
    );

    // A minute of silence: out of searches.
    s.clock.advance(chrono::Duration::seconds(61));
    assert!(s.geo.send(GetDriver { driver }).await.unwrap().is_none());
    let found = s
        .geo
        .send(FindNearest {
            at: LatLng::new(25.7617, -80.1918).unwrap(),
            radius_m: 1_000.0,
            limit: 5,
            filter: SearchFilter::default(),
        })
        .await
        .unwrap();
    assert!(found.is_empty());

    // Disconnecting takes the driver off the map at once.
    s.geo
        .send(LocationBatch(vec![(
            driver,
            fix(&s.clock, 25.71, -80.21, 3_000),
        )]))
        .await
        .unwrap();
    s.geo.send(DrainMapChanges).await.unwrap();
    s.geo.send(DriverDisconnected { driver }).await.unwrap();
    assert_eq!(s.geo.send(DrainMapChanges).await.unwrap().offline, [driver]);
}

#[actix_rt::test]
async fn a_driver_whose_socket_closed_is_offered_jobs_for_the_grace_only() {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 25, 19, 0, 0).unwrap());
    let rooms = RoomDirectory::new().start();
    let geo = GeoIndex::new(
        Arc::new(ServiceArea::south_florida()),
        Arc::new(clock.clone()),
        Duration::from_secs(60),
        rooms,
        Arc::new(MemoryStore::default()),
    )
    .offline_grace(Duration::from_secs(30))
    .start();
    let brickell = (25.7617, -80.1918);
    let driver = DriverId::new_random();
    geo.send(DriverConnected {
        driver,
        approved: true,
    })
    .await
    .unwrap();
    geo.send(SetAvailability {
        driver,
        approved: None,
        available: true,
    })
    .await
    .unwrap()
    .unwrap();
    geo.send(LocationBatch(vec![(
        driver,
        fix(&clock, brickell.0, brickell.1, 1),
    )]))
    .await
    .unwrap();
    geo.send(DrainMapChanges).await.unwrap();
    let dispatchable = || {
        geo.send(FindNearest {
            at: LatLng::new(brickell.0, brickell.1).unwrap(),
            radius_m: 5_000.0,
            limit: 10,
            filter: SearchFilter {
                dispatchable: true,
                ..SearchFilter::default()
            },
        })
    };

    // The app went to the background: still offered jobs, shown as not connected.
    geo.send(DriverDisconnected { driver }).await.unwrap();
    let found = dispatchable().await.unwrap();
    assert_eq!(
        found
            .iter()
            .map(|d| (d.driver_id, d.connected))
            .collect::<Vec<_>>(),
        [(driver, false)]
    );
    assert!(geo.send(DrainMapChanges).await.unwrap().offline.is_empty());

    // The grace is over: out of searches at once, and off the map at the next sweep.
    clock.advance(chrono::Duration::seconds(31));
    assert!(dispatchable().await.unwrap().is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let changes = geo.send(DrainMapChanges).await.unwrap();
        if changes.offline == [driver] {
            break;
        }
        assert!(Instant::now() < deadline, "never taken offline");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // It connects again: dispatchable on its next report, and shown connected.
    geo.send(DriverConnected {
        driver,
        approved: true,
    })
    .await
    .unwrap();
    geo.send(LocationBatch(vec![(
        driver,
        fix(&clock, brickell.0, brickell.1, 2),
    )]))
    .await
    .unwrap();
    let found = dispatchable().await.unwrap();
    assert_eq!(found.len(), 1);
    assert!(found[0].connected);
}

#[actix_rt::test]
async fn positions_are_saved_once_per_change() {
    let s = setup();
    let drivers: Vec<DriverId> = (0..3).map(|_| DriverId::new_random()).collect();
    let batch = drivers
        .iter()
        .map(|id| (*id, fix(&s.clock, 26.0, -80.2, 1)))
        .collect();
    s.geo.send(LocationBatch(batch)).await.unwrap();
    assert_eq!(s.geo.send(FlushPositions).await.unwrap(), Ok(3));
    assert_eq!(
        s.geo.send(FlushPositions).await.unwrap(),
        Ok(0),
        "nothing changed since"
    );
    s.geo
        .send(LocationBatch(vec![(
            drivers[0],
            fix(&s.clock, 26.1, -80.2, 2),
        )]))
        .await
        .unwrap();
    assert_eq!(s.geo.send(FlushPositions).await.unwrap(), Ok(1));
    let saved = s.store.0.lock().unwrap().clone();
    assert_eq!(saved.len(), 4);
    assert_eq!(saved[3].at.lat(), 26.1);
}

/// A position store that can be held (writes wait for `open`) or made to fail once, and tells
/// when a write starts.
struct GatedStore {
    saved: Mutex<Vec<StoredPosition>>,
    started: mpsc::UnboundedSender<()>,
    gate: tokio::sync::Semaphore,
    fail_next: std::sync::atomic::AtomicBool,
}

impl GatedStore {
    fn open(&self) {
        self.gate.add_permits(1_000);
    }
}

#[async_trait]
impl PositionStore for GatedStore {
    async fn save_positions(&self, positions: Vec<StoredPosition>) -> Result<(), String> {
        let _ = self.started.send(());
        let _permit = self.gate.acquire().await.unwrap();
        if self
            .fail_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err("database unavailable".into());
        }
        self.saved.lock().unwrap().extend(positions);
        Ok(())
    }
}

fn gated_geo(
    checkpoint_every: Duration,
) -> (
    Addr<GeoIndex>,
    Arc<GatedStore>,
    mpsc::UnboundedReceiver<()>,
    ManualClock,
) {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 25, 19, 0, 0).unwrap());
    let (started, started_rx) = mpsc::unbounded_channel();
    let store = Arc::new(GatedStore {
        saved: Mutex::default(),
        started,
        gate: tokio::sync::Semaphore::new(0),
        fail_next: Default::default(),
    });
    let geo = GeoIndex::new(
        Arc::new(ServiceArea::south_florida()),
        Arc::new(clock.clone()),
        Duration::from_secs(60),
        RoomDirectory::new().start(),
        store.clone(),
    )
    .checkpoint_every(checkpoint_every)
    .start();
    (geo, store, started_rx, clock)
}

#[actix_rt::test]
async fn a_failed_position_write_is_tried_again() {
    let (geo, store, _started, clock) = gated_geo(Duration::from_secs(3600));
    store.open();
    store
        .fail_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let driver = DriverId::new_random();
    geo.send(LocationBatch(vec![(driver, fix(&clock, 26.0, -80.2, 1))]))
        .await
        .unwrap();
    assert!(geo.send(FlushPositions).await.unwrap().is_err());
    assert_eq!(
        geo.send(FlushPositions).await.unwrap(),
        Ok(1),
        "still due after the failure"
    );
    assert_eq!(store.saved.lock().unwrap().len(), 1);
}

#[actix_rt::test]
async fn a_flush_during_a_checkpoint_writes_after_it_and_loses_nothing() {
    // A short period: the periodic checkpoint starts as soon as positions arrive.
    let (geo, store, mut started, clock) = gated_geo(Duration::from_millis(10));
    let (still, moving) = (DriverId::new_random(), DriverId::new_random());
    geo.send(LocationBatch(vec![
        (still, fix(&clock, 26.0, -80.2, 1)),
        (moving, fix(&clock, 26.0, -80.3, 1)),
    ]))
    .await
    .unwrap();
    started.recv().await.unwrap();
    // The checkpoint is held mid-write; one driver moves and the engine shuts down.
    geo.send(LocationBatch(vec![(moving, fix(&clock, 26.1, -80.3, 2))]))
        .await
        .unwrap();
    let flush = geo.send(FlushPositions);
    geo.send(GetDriver { driver: still }).await.unwrap();
    assert!(
        started.try_recv().is_err(),
        "the flush's write waits for the checkpoint's"
    );
    store.open();
    // Both: the one the checkpoint is writing counts as written only once it is.
    assert_eq!(flush.await.unwrap(), Ok(2));
    let saved = store.saved.lock().unwrap().clone();
    let last_of = |driver| {
        saved
            .iter()
            .rev()
            .find(|p| p.driver == driver)
            .unwrap()
            .at
            .lat()
    };
    assert_eq!(saved.len(), 4);
    assert_eq!((last_of(still), last_of(moving)), (26.0, 26.1));
}

fn job(status: JobStatus, driver: Option<DriverId>) -> Job {
    let now = Utc::now();
    Job {
        id: JobId::new_random(),
        customer_id: UserId::new_random(),
        driver_id: driver,
        status,
        address: "1 Main St".into(),
        lat: 25.77,
        lng: -80.19,
        county: Some("Miami-Dade".into()),
        description: String::new(),
        load_size: LoadSize::Half,
        scheduled_at: None,
        price_cents: 1,
        service_fee_cents: 1,
        total_cents: 2,
        driver_payout_cents: 1,
        photos: vec![],
        created_at: now,
        updated_at: now,
    }
}

fn dispatcher() -> Watcher {
    Watcher {
        user: UserId::new_random(),
        dispatcher: true,
    }
}

fn driver_watcher(driver: DriverId) -> Watcher {
    Watcher {
        user: driver.into(),
        dispatcher: false,
    }
}

/// `job` as changed `seconds` later.
fn changed(job: &Job, status: JobStatus, driver: Option<DriverId>, seconds: i64) -> JobChanged {
    let mut job = job.clone();
    job.status = status;
    job.driver_id = driver;
    job.updated_at += chrono::Duration::seconds(seconds);
    JobChanged {
        job,
        at: Utc::now(),
    }
}

#[actix_rt::test]
async fn a_released_driver_stops_seeing_the_job() {
    let s = setup();
    let (released, next_driver) = (DriverId::new_random(), DriverId::new_random());
    let job = job(JobStatus::Assigned, Some(released));
    // One channel for both sessions: frames arrive in the order the room sends them, so a
    // frame still going to the released driver would show up as a duplicate.
    let (recipient, mut rx) = collector();
    for (session, watcher) in [(1, driver_watcher(released)), (2, dispatcher())] {
        s.rooms
            .send(JoinRoom {
                job: job.clone(),
                session,
                watcher,
                recipient: recipient.clone(),
                request_id: None,
            })
            .await
            .unwrap();
    }
    assert_eq!(next(&mut rx).await.1["type"], "job.snapshot");
    assert_eq!(next(&mut rx).await.1["type"], "job.snapshot");

    s.rooms
        .send(changed(&job, JobStatus::Dispatching, None, 1))
        .await
        .unwrap();
    s.rooms
        .send(changed(&job, JobStatus::Assigned, Some(next_driver), 2))
        .await
        .unwrap();
    s.geo
        .send(SetDriverJob {
            driver: next_driver,
            job: Some(job.id),
        })
        .await
        .unwrap();
    s.geo
        .send(LocationBatch(vec![(
            next_driver,
            fix(&s.clock, 25.76, -80.19, 5),
        )]))
        .await
        .unwrap();
    s.rooms
        .send(changed(&job, JobStatus::EnRoute, Some(next_driver), 3))
        .await
        .unwrap();
    let seen: Vec<String> = [
        next(&mut rx).await.1,
        next(&mut rx).await.1,
        next(&mut rx).await.1,
        next(&mut rx).await.1,
    ]
    .iter()
    .map(|frame| format!("{} {}", frame["type"], frame["status"]))
    .collect();
    assert_eq!(
        seen,
        [
            r#""job.status" "dispatching""#,
            r#""job.status" "assigned""#,
            r#""driver.location" null"#,
            r#""job.status" "en_route""#,
        ],
        "only the dispatcher's copies"
    );
}

#[actix_rt::test]
async fn a_change_between_reading_a_job_and_joining_its_room_is_not_lost() {
    let s = setup();
    let driver = DriverId::new_random();
    let other = job(JobStatus::Assigned, Some(driver));
    let job = job(JobStatus::Assigned, Some(driver));
    // Cancelled after the subscriber read the job, before it joined: no room yet.
    s.rooms
        .send(changed(&job, JobStatus::Cancelled, Some(driver), 1))
        .await
        .unwrap();
    let (recipient, mut rx) = collector();
    s.rooms
        .send(JoinRoom {
            job: job.clone(),
            session: 1,
            watcher: dispatcher(),
            recipient: recipient.clone(),
            request_id: None,
        })
        .await
        .unwrap();
    let snapshot = next(&mut rx).await.1;
    assert_eq!(snapshot["type"], "job.snapshot");
    assert_eq!(snapshot["job"]["status"], "cancelled");
    assert!(snapshot["driver"].is_null(), "no driver on a finished job");

    // A driver who lost the job in between is told it does not exist.
    s.rooms
        .send(changed(&other, JobStatus::Dispatching, None, 1))
        .await
        .unwrap();
    s.rooms
        .send(JoinRoom {
            job: other.clone(),
            session: 2,
            watcher: driver_watcher(driver),
            recipient,
            request_id: None,
        })
        .await
        .unwrap();
    let refusal = next(&mut rx).await.1;
    assert_eq!(refusal["type"], "error");
    assert_eq!(refusal["code"], "not_found");
    assert_eq!(
        s.rooms.send(CountRooms).await.unwrap(),
        1,
        "no room for the refused one"
    );
}

#[actix_rt::test]
async fn a_room_fans_out_and_closes_when_the_job_is_over_and_nobody_watches() {
    let s = setup();
    let driver = DriverId::new_random();
    let mut job = job(JobStatus::Assigned, Some(driver));
    s.geo
        .send(SetDriverJob {
            driver,
            job: Some(job.id),
        })
        .await
        .unwrap();
    let (first, mut first_rx) = collector();
    let (second, mut second_rx) = collector();
    for (session, recipient) in [(1, first), (2, second)] {
        s.rooms
            .send(JoinRoom {
                job: job.clone(),
                session,
                watcher: dispatcher(),
                recipient,
                request_id: None,
            })
            .await
            .unwrap();
    }
    assert_eq!(next(&mut first_rx).await.1["type"], "job.snapshot");
    assert_eq!(next(&mut second_rx).await.1["type"], "job.snapshot");

    s.geo
        .send(LocationBatch(vec![(
            driver,
            fix(&s.clock, 25.76, -80.19, 5),
        )]))
        .await
        .unwrap();
    let (a, location) = next(&mut first_rx).await;
    let (b, _) = next(&mut second_rx).await;
    assert_eq!(location["type"], "driver.location");
    assert_eq!(a.kind, FrameKind::Location { job: job.id });
    // One serialisation, shared by every subscriber.
    assert_eq!(a.frame.as_str().as_ptr(), b.frame.as_str().as_ptr());

    job.status = JobStatus::Completed;
    s.rooms
        .send(JobChanged {
            job: job.clone(),
            at: Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!(next(&mut first_rx).await.1["status"], "completed");
    assert_eq!(s.rooms.send(CountRooms).await.unwrap(), 1, "still watched");
    s.rooms
        .send(LeaveRoom {
            job: job.id,
            session: 1,
        })
        .await
        .unwrap();
    assert_eq!(s.rooms.send(CountRooms).await.unwrap(), 1);
    s.rooms
        .send(LeaveRoom {
            job: job.id,
            session: 2,
        })
        .await
        .unwrap();
    assert_eq!(s.rooms.send(CountRooms).await.unwrap(), 0);
}

#[actix_rt::test]
async fn map_deltas_are_serialised_once_per_box() {
    let s = setup();
    let map = DispatchMap::new(s.geo.clone(), Duration::from_millis(20)).start();
    let (a, mut a_rx) = collector();
    let (b, mut b_rx) = collector();
    let (c, mut c_rx) = collector();
    let broward = Some(BBox::parse([-80.5, 26.0, -80.0, 26.4]).unwrap());
    for (session, recipient, bbox) in [(1, a, None), (2, b, None), (3, c, broward)] {
        map.send(MapSubscribe {
            session,
            recipient,
            bbox,
            request_id: None,
        })
        .await
        .unwrap();
    }
    for rx in [&mut a_rx, &mut b_rx, &mut c_rx] {
        assert_eq!(next(rx).await.1["type"], "map.snapshot");
    }
    let miami = DriverId::new_random();
    let lauderdale = DriverId::new_random();
    s.geo
        .send(LocationBatch(vec![
            (miami, fix(&s.clock, 25.76, -80.19, 1)),
            (lauderdale, fix(&s.clock, 26.12, -80.14, 1)),
        ]))
        .await
        .unwrap();
    let (delta_a, value_a) = next(&mut a_rx).await;
    let (delta_b, _) = next(&mut b_rx).await;
    let (delta_c, value_c) = next(&mut c_rx).await;
    assert_eq!(delta_a.kind, FrameKind::MapDelta);
    assert_eq!(
        delta_a.frame.as_str().as_ptr(),
        delta_b.frame.as_str().as_ptr()
    );
    assert_ne!(
        delta_a.frame.as_str().as_ptr(),
        delta_c.frame.as_str().as_ptr()
    );
    assert_eq!(value_a["drivers"].as_array().unwrap().len(), 2);
    let in_box: Vec<&str> = value_c["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["driver_id"].as_str().unwrap())
        .collect();
    assert_eq!(in_box, [lauderdale.to_string()]);
}
