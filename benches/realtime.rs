//! The location path's building blocks: moving a driver in the index, finding the nearest
//! drivers, the tri-county geofence, decoding a location frame, serialising a location for
//! watchers.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use umuve_actors::geo::{LatLng, ServiceArea};
use umuve_actors::ids::{DriverId, JobId};
use umuve_actors::realtime::frame::Frame;
use umuve_actors::realtime::geo_index::{CandidateQuery, DriverIndex, SearchFilter};
use umuve_actors::realtime::model::DriverFix;
use umuve_actors::realtime::protocol::ServerMessage;
use umuve_dispatch::ws::protocol;

/// A point in the tri-county bounding box; seeded generators keep runs comparable.
fn random_point(rng: &mut SmallRng) -> LatLng {
    LatLng::new(
        25.14 + rng.random::<f64>() * 1.83,
        -80.89 + rng.random::<f64>() * 0.86,
    )
    .unwrap()
}

fn fix(at: LatLng, ts_ms: i64) -> DriverFix {
    DriverFix {
        at,
        heading_deg: Some(90.0),
        speed_mps: Some(12.0),
        accuracy_m: Some(5.0),
        ts_ms,
        received_at: Utc::now(),
        received: Instant::now(),
    }
}

fn index_with(drivers: usize, rng: &mut SmallRng) -> (DriverIndex, Vec<(DriverId, LatLng)>) {
    let mut index = DriverIndex::new(
        Arc::new(ServiceArea::south_florida()),
        Duration::from_secs(3600),
    );
    let placed: Vec<(DriverId, LatLng)> = (0..drivers)
        .map(|_| (DriverId::new_random(), random_point(rng)))
        .collect();
    for (id, at) in &placed {
        index.apply_fix(*id, fix(*at, 1));
    }
    (index, placed)
}

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

fn move_one_driver(c: &mut Criterion) {
    let mut group = c.benchmark_group("geo_index/move_one_driver");
    for size in SIZES {
        let mut rng = SmallRng::seed_from_u64(0x2545_F491_4F6C_DD1D);
        let (mut index, placed) = index_with(size, &mut rng);
        let mut ts = 2;
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                // Each driver moves ~30 m (a second of city driving) from where it was.
                let (id, at) = placed[i % placed.len()];
                let step = ((i % 7) as f64 - 3.0) * 0.000_1;
                let to = LatLng::new(at.lat() + step, at.lng() + step).unwrap();
                ts += 1;
                i += 1;
                black_box(index.apply_fix(id, fix(to, ts)))
            })
        });
    }
    group.finish();
}

fn nearest_ten_within_ten_km(c: &mut Criterion) {
    let mut group = c.benchmark_group("geo_index/nearest_10_within_10km");
    let now = Utc::now();
    for size in SIZES {
        let mut rng = SmallRng::seed_from_u64(0x9E37_79B9_7F4A_7C15);
        let (index, _) = index_with(size, &mut rng);
        let queries: Vec<LatLng> = (0..1024).map(|_| random_point(&mut rng)).collect();
        let filter = SearchFilter::default();
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                i += 1;
                black_box(index.nearest(&queries[i % queries.len()], 10_000.0, 10, &filter, now))
            })
        });
    }
    group.finish();
}

/// What the matcher asks for each job: the 4 nearest drivers who could take it now (approved,
/// connected, available, not on a job, in the area) within 40 km, minus the few who declined.
/// A fifth of the drivers are busy or off duty, so the search skips some on its way.
fn candidate_selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("matcher/candidate_selection_4_within_40km");
    let now = Utc::now();
    for size in [10_000, 100_000] {
        let mut rng = SmallRng::seed_from_u64(0x5851_F42D_4C95_7F2D);
        let (mut index, placed) = index_with(size, &mut rng);
        for (n, (id, _)) in placed.iter().enumerate() {
            let busy = n % 10 == 0;
            let off_duty = n % 10 == 1;
            index.set_state(*id, true, true, !off_duty, busy.then(JobId::new_random));
        }
        let queries: Vec<CandidateQuery> = (0..1024)
            .map(|n| CandidateQuery {
                at: random_point(&mut rng),
                limit: 4,
                exclude: placed
                    .iter()
                    .skip(n % placed.len())
                    .take(3)
                    .map(|(id, _)| *id)
                    .collect(),
            })
            .collect();
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                i += 1;
                let query = &queries[i % queries.len()];
                let filter = SearchFilter {
                    available: None,
                    dispatchable: true,
                    exclude: query.exclude.clone(),
                };
                black_box(index.nearest(&query.at, 40_000.0, query.limit, &filter, now))
            })
        });
    }
    group.finish();
}

fn geofence(c: &mut Criterion) {
    let area = ServiceArea::south_florida();
    let mut rng = SmallRng::seed_from_u64(0xD1B5_4A32_D192_ED03);
    let points: Vec<LatLng> = (0..4096).map(|_| random_point(&mut rng)).collect();
    let mut i = 0usize;
    c.bench_function("geofence/county_at (tri-county box)", |b| {
        b.iter(|| {
            i += 1;
            black_box(area.county_at(&points[i % points.len()]))
        })
    });
    let downtown = LatLng::new(25.7747, -80.1963).unwrap();
    c.bench_function("geofence/county_at (downtown Miami)", |b| {
        b.iter(|| black_box(area.county_at(black_box(&downtown))))
    });
}

fn location_frames(c: &mut Criterion) {
    let frame = r#"{"type":"location","lat":25.774712,"lng":-80.196301,"heading_deg":271.5,"speed_mps":11.2,"accuracy_m":4.8,"ts":1795000000123}"#;
    c.bench_function("protocol/decode_location", |b| {
        b.iter(|| {
            let raw = protocol::parse(black_box(frame)).unwrap();
            black_box(raw.command().unwrap())
        })
    });
    let job = JobId::new_random();
    let driver = DriverId::new_random();
    c.bench_function("protocol/encode_driver_location", |b| {
        b.iter(|| {
            black_box(Frame::json(&ServerMessage::DriverLocation {
                job_id: job,
                driver_id: driver,
                lat: 25.774712,
                lng: -80.196301,
                heading_deg: Some(271.5),
                ts: 1_795_000_000_123,
            }))
        })
    });
}

criterion_group!(
    benches,
    move_one_driver,
    nearest_ten_within_ten_km,
    candidate_selection,
    geofence,
    location_frames
);
criterion_main!(benches);
