//! umuve-loadgen: loads a running engine the way the product does. N drivers stream positions at
//! R Hz (optionally several frames per write), M dispatchers watch the whole map, K customers
//! follow jobs whose drivers are among the streaming ones; optionally some drivers flood at many
//! times the allowed rate. Reports message rates, end-to-end latency from each position's `ts`
//! to its receipt (customers and dispatchers separately), errors, and the engine's memory.
//!
//! Dispatch: with `--dispatch-jobs N` the drivers go available and a customer books N jobs one
//! after another at `--dispatch-rate` per second while the drivers stream; each driver accepts
//! the offers it gets. Reported: booking request sent -> `offer` frame received at the driver
//! (p50/p99); job ready (the job's `created_at`, stamped by the engine on this same machine) ->
//! `offer` frame received; and the engine's own job-ready -> offer-sent histogram. With `--burst-jobs N`, N
//! jobs are booked for the same pickup time so they all become due together (the engine's
//! `DISPATCH_LEAD_MINUTES` must equal `--lead-minutes`); reported: jobs offered per second and
//! the time from the due moment to the last offer.
//!
//! It sets up its own users and jobs through the HTTP API, minting tokens with the engine's
//! `JWT_SECRET` (so run it only against an engine you own).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt, stream};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use umuve_actors::geo::{LatLng, ServiceArea};

#[derive(Debug, Parser)]
#[command(name = "umuve-loadgen", about = "Load generator for umuve-dispatch")]
struct Args {
    /// The engine's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The engine's JWT_SECRET, to mint tokens for the users this run creates.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// Streaming drivers.
    #[arg(long, default_value_t = 1000)]
    drivers: usize,
    /// Positions per second per driver.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Frames per write: 1 is one frame per TCP read; more makes reads carry several frames.
    #[arg(long, default_value_t = 1)]
    burst: usize,
    /// Dispatchers watching the whole map.
    #[arg(long, default_value_t = 0)]
    dispatchers: usize,
    /// Customers following a job whose driver streams (at most --drivers).
    #[arg(long, default_value_t = 0)]
    customers: usize,
    /// Extra drivers that flood at --abusive-rate (and reconnect when the engine closes them).
    #[arg(long, default_value_t = 0)]
    abusive_drivers: usize,
    /// Positions per second per flooding driver; the default is 20x the engine's default
    /// allowance of 10 messages per second.
    #[arg(long, default_value_t = 200.0)]
    abusive_rate: f64,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// HTTP requests and connections opened at once during set-up.
    #[arg(long, default_value_t = 128)]
    setup_concurrency: usize,
    /// Runtime threads of the load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Jobs booked one after another during the measurement (drivers go available and accept).
    #[arg(long, default_value_t = 0)]
    dispatch_jobs: usize,
    /// Bookings per second for --dispatch-jobs.
    #[arg(long, default_value_t = 50.0)]
    dispatch_rate: f64,
    /// Jobs booked for one pickup time, so they become due at the same moment.
    #[arg(long, default_value_t = 0)]
    burst_jobs: usize,
    /// The engine's DISPATCH_LEAD_MINUTES.
    #[arg(long, default_value_t = 60)]
    lead_minutes: i64,
    /// Seconds from the start of the measurement to the burst's due moment.
    #[arg(long, default_value_t = 20)]
    burst_delay: u64,
}

/// When each job was booked and when its first offer reached a driver.
#[derive(Default)]
struct Offers {
    received: std::collections::HashMap<String, Instant>,
    booked: std::collections::HashMap<String, Instant>,
    /// From the job becoming ready (its `created_at`, the engine's clock on this machine) to
    /// the offer frame's arrival (this machine's clock), µs.
    from_ready: std::collections::HashMap<String, u64>,
}

/// Counters and latency histograms, reset at the end of the warm-up.
struct Stats {
    sent: AtomicU64,
    customer_frames: AtomicU64,
    map_deltas: AtomicU64,
    map_bytes: AtomicU64,
    error_frames: AtomicU64,
    closed: AtomicU64,
    connect_failures: AtomicU64,
    customer_latency: Mutex<Histogram<u64>>,
    /// Customer latency of the current second only, for the per-second timeline.
    customer_latency_this_second: Mutex<Histogram<u64>>,
    dispatcher_latency: Mutex<Histogram<u64>>,
}

impl Stats {
    fn new() -> Self {
        let histogram = || Mutex::new(Histogram::new_with_bounds(1, 600_000, 3).unwrap());
        Self {
            sent: AtomicU64::new(0),
            customer_frames: AtomicU64::new(0),
            map_deltas: AtomicU64::new(0),
            map_bytes: AtomicU64::new(0),
            error_frames: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            customer_latency: histogram(),
            customer_latency_this_second: histogram(),
            dispatcher_latency: histogram(),
        }
    }

    async fn reset(&self) {
        for counter in [
            &self.sent,
            &self.customer_frames,
            &self.map_deltas,
            &self.map_bytes,
            &self.error_frames,
            &self.closed,
            &self.connect_failures,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        self.customer_latency.lock().await.reset();
        self.customer_latency_this_second.lock().await.reset();
        self.dispatcher_latency.lock().await.reset();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn mint(secret: &str, user: &str, role: &str) -> String {
    let now = now_ms() / 1000;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": user, "role": role, "iat": now, "exp": now + 86_400 }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing")
}

/// A start point inside the service area, where people live (west of the beaches, east of the
/// Everglades); the same for the same index.
fn start_point(i: usize) -> (f64, f64) {
    static AREA: std::sync::LazyLock<ServiceArea> =
        std::sync::LazyLock::new(ServiceArea::south_florida);
    let mut rng = SmallRng::seed_from_u64(
        0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D),
    );
    loop {
        let (lat, lng) = (
            25.60 + rng.random::<f64>() * 1.20,
            -80.38 + rng.random::<f64>() * 0.20,
        );
        if LatLng::new(lat, lng).is_ok_and(|at| AREA.county_at(&at).is_some()) {
            return (lat, lng);
        }
    }
}

struct Api {
    http: reqwest::Client,
    url: String,
    admin: String,
}

impl Api {
    async fn post(&self, path: &str, token: &str, body: Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{}", self.url, path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {path} answered {status}: {body}");
        }
        Ok(body)
    }

    async fn create_users(
        &self,
        role: &str,
        count: usize,
        run: &str,
        concurrency: usize,
    ) -> anyhow::Result<Vec<String>> {
        let bodies: Vec<Value> = (0..count)
            .map(|i| json!({ "role": role, "email": format!("lg-{run}-{role}{i}@load.test"), "approved": true }))
            .collect();
        let created: Vec<anyhow::Result<Value>> = stream::iter(bodies)
            .map(|body| async move { self.post("/api/admin/users", &self.admin, body).await })
            .buffered(concurrency)
            .collect()
            .await;
        created
            .into_iter()
            .map(|user| Ok(user?["id"].as_str().context("user id")?.to_owned()))
            .collect()
    }

    /// The engine's own fan-out histogram (position received → written to a watcher's socket):
    /// cumulative counts per bucket bound, in seconds.
    async fn engine_fanout(&self) -> Vec<(f64, f64)> {
        self.engine_histogram("umuve_location_fanout_seconds").await
    }

    /// A histogram of the engine's `/metrics`: cumulative counts per bucket bound, in seconds.
    async fn engine_histogram(&self, name: &str) -> Vec<(f64, f64)> {
        let Ok(response) = self.http.get(format!("{}/metrics", self.url)).send().await else {
            return Vec::new();
        };
        let text = response.text().await.unwrap_or_default();
        let prefix = format!("{name}_bucket{{le=\"");
        text.lines()
            .filter_map(|line| line.strip_prefix(prefix.as_str()))
            .filter_map(|rest| {
                let (bound, count) = rest.split_once("\"} ")?;
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().ok()?
                };
                Some((bound, count.trim().parse().ok()?))
            })
            .collect()
    }

    async fn engine_rss(&self) -> Option<u64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with("process_resident_memory_bytes"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, token: &str) -> anyhow::Result<Socket> {
    let mut request = format!("{}/ws", url.replace("http://", "ws://")).into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

/// A driver: streams positions, reads (and counts) what comes back.
#[allow(clippy::too_many_arguments)]
async fn drive(
    url: String,
    token: String,
    index: usize,
    rate: f64,
    burst: usize,
    stats: Arc<Stats>,
    reconnect: bool,
    offers: Option<Arc<Mutex<Offers>>>,
) {
    let (mut lat, mut lng) = start_point(index);
    let mut rng = SmallRng::seed_from_u64(index as u64 + 7);
    loop {
        let socket = match connect(&url, &token).await {
            Ok(socket) => socket,
            Err(_) => {
                stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                if !reconnect {
                    return;
                }
                // Retry after 1 to 5 s, spread out, like real clients backing off.
                tokio::time::sleep(Duration::from_secs_f64(1.0 + 4.0 * rng.random::<f64>())).await;
                continue;
            }
        };
        let (mut sink, mut incoming) = socket.split();
        let reader_stats = stats.clone();
        let (accept_tx, mut accept_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let reader_offers = offers.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = incoming.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                if text.contains("\"type\":\"error\"") {
                    reader_stats.error_frames.fetch_add(1, Ordering::Relaxed);
                } else if let Some(offers) = &reader_offers
                    && text.starts_with("{\"type\":\"offer\",")
                {
                    let received = Instant::now();
                    let received_wall = chrono::Utc::now();
                    let Ok(offer) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if let (Some(offer_id), Some(job)) =
                        (offer["offer_id"].as_str(), offer["job"]["id"].as_str())
                    {
                        let ready = offer["job"]["created_at"]
                            .as_str()
                            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok());
                        let mut offers = offers.lock().await;
                        offers.received.entry(job.to_owned()).or_insert(received);
                        if let Some(ready) = ready {
                            let us = (received_wall - ready.to_utc())
                                .num_microseconds()
                                .unwrap_or(0)
                                .max(1) as u64;
                            offers.from_ready.entry(job.to_owned()).or_insert(us);
                        }
                        drop(offers);
                        let _ = accept_tx.send(offer_id.to_owned());
                    }
                }
            }
        });
        if offers.is_some() {
            let available = json!({ "type": "availability", "available": true }).to_string();
            if sink.send(Message::text(available)).await.is_err() {
                reader.abort();
                continue;
            }
        }
        // Stagger drivers across the period so sends are spread evenly.
        let period = Duration::from_secs_f64(burst as f64 / rate);
        tokio::time::sleep(period.mul_f64(rng.random::<f64>())).await;
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'stream: loop {
            tokio::select! {
                _ = ticker.tick() => {}
                Some(offer_id) = accept_rx.recv() => {
                    let accept = json!({ "type": "offer.accept", "offer_id": offer_id }).to_string();
                    if sink.send(Message::text(accept)).await.is_err() {
                        break 'stream;
                    }
                    continue;
                }
            }
            for _ in 0..burst {
                lat += (rng.random::<f64>() - 0.5) * 0.0004;
                lng += (rng.random::<f64>() - 0.5) * 0.0004;
                let frame = format!(
                    r#"{{"type":"location","lat":{lat:.6},"lng":{lng:.6},"heading_deg":90,"ts":{}}}"#,
                    now_ms()
                );
                if sink.feed(Message::text(frame)).await.is_err() {
                    break 'stream;
                }
            }
            if sink.flush().await.is_err() {
                break 'stream;
            }
            stats.sent.fetch_add(burst as u64, Ordering::Relaxed);
        }
        reader.abort();
        stats.closed.fetch_add(1, Ordering::Relaxed);
        if !reconnect {
            return;
        }
    }
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    ts: Option<i64>,
}

/// A customer: follows one job, records each position's age on arrival.
async fn follow(url: String, token: String, job: String, stats: Arc<Stats>) {
    let Ok(mut socket) = connect(&url, &token).await else {
        stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if socket
        .send(Message::text(
            json!({ "type": "subscribe", "job_id": job }).to_string(),
        ))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(frame) = serde_json::from_str::<Incoming>(&text) else {
            continue;
        };
        match frame.kind.as_str() {
            "driver.location" => {
                stats.customer_frames.fetch_add(1, Ordering::Relaxed);
                if let Some(ts) = frame.ts {
                    let age = (now_ms() - ts).max(1) as u64;
                    let _ = stats.customer_latency.lock().await.record(age);
                    let _ = stats.customer_latency_this_second.lock().await.record(age);
                }
            }
            "error" => {
                stats.error_frames.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    stats.closed.fetch_add(1, Ordering::Relaxed);
}

/// A dispatcher on the whole map: records the age of (a sample of) the positions in each delta.
async fn watch_map(url: String, token: String, stats: Arc<Stats>) {
    let Ok(mut socket) = connect(&url, &token).await else {
        stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if socket
        .send(Message::text(
            json!({ "type": "map.subscribe" }).to_string(),
        ))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        if !text.starts_with(r#"{"type":"map.delta""#) {
            if text.contains("\"type\":\"error\"") {
                stats.error_frames.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        stats.map_deltas.fetch_add(1, Ordering::Relaxed);
        stats
            .map_bytes
            .fetch_add(text.len() as u64, Ordering::Relaxed);
        let received = now_ms();
        // A delta holds thousands of positions; parsing each whole would make the generator the
        // bottleneck. Every 16th `"ts":` is read straight from the text.
        let mut histogram = stats.dispatcher_latency.lock().await;
        for (at, _) in text.match_indices("\"ts\":").step_by(16) {
            let digits: String = text[at + 5..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(ts) = digits.parse::<i64>() {
                let _ = histogram.record((received - ts).max(1) as u64);
            }
        }
    }
    stats.closed.fetch_add(1, Ordering::Relaxed);
}

/// Percentiles of the engine's fan-out between two snapshots of its histogram (upper bucket
/// bounds, so "≤").
fn engine_percentiles(before: &[(f64, f64)], after: &[(f64, f64)]) -> String {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(bound, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == bound)
                .map_or(0.0, |(_, c)| *c);
            (*bound, count - earlier)
        })
        .collect();
    let Some(total) = delta.last().map(|(_, c)| *c).filter(|t| *t > 0.0) else {
        return "no samples".into();
    };
    let at = |q: f64| {
        delta
            .iter()
            .find(|(_, c)| *c >= q * total)
            .map_or("?".to_owned(), |(b, _)| format!("≤ {} ms", b * 1000.0))
    };
    format!(
        "p50 {}, p99 {}, p99.9 {} ({total} samples)",
        at(0.5),
        at(0.99),
        at(0.999)
    )
}

fn percentiles(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "no samples".into();
    }
    format!(
        "p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms ({} samples)",
        histogram.value_at_quantile(0.50),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max(),
        histogram.len()
    )
}

/// Percentiles of a histogram of microseconds, in milliseconds.
fn micros_percentiles(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "no samples".into();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        ms(histogram.value_at_quantile(0.50)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.max()),
        histogram.len()
    )
}

/// Books the dispatch jobs at a steady rate, then the burst; waits for their offers; reports.
#[allow(clippy::too_many_arguments)]
async fn book_jobs(
    api: Arc<Api>,
    customer: String,
    offers: Arc<Mutex<Offers>>,
    steady: usize,
    rate: f64,
    burst: usize,
    lead_minutes: i64,
    burst_delay: u64,
) -> anyhow::Result<String> {
    let mut report = String::new();
    let started = Instant::now();
    const ENGINE: &str = "umuve_dispatch_offer_seconds";
    if steady > 0 {
        let engine_before = api.engine_histogram(ENGINE).await;
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        let mut ids = Vec::new();
        for i in 0..steady {
            ticker.tick().await;
            let (lat, lng) = start_point(1_000_000 + i);
            let sent = Instant::now();
            let job = api
                .post("/api/jobs", &customer, json!({ "address": "load test", "lat": lat, "lng": lng, "description": "", "load_size": "half" }))
                .await?;
            let id = job["id"].as_str().context("job id")?.to_owned();
            offers.lock().await.booked.insert(id.clone(), sent);
            ids.push(id);
        }
        let latency = await_offers(&offers, &ids, Duration::from_secs(30)).await;
        let engine_after = api.engine_histogram(ENGINE).await;
        let mut from_ready = Histogram::<u64>::new(3).expect("a histogram");
        {
            let offers = offers.lock().await;
            for us in ids.iter().filter_map(|id| offers.from_ready.get(id)) {
                from_ready.record(*us).ok();
            }
        }
        report.push_str(&format!(
            "dispatch latency (booking sent -> offer at the driver), {} jobs at {rate}/s: {}; {} without an offer\n\
             dispatch latency (job ready [its created_at] -> offer at the driver): {}\n\
             engine (job ready -> offer sent): {}\n",
            ids.len(),
            micros_percentiles(&latency.0),
            latency.1,
            micros_percentiles(&from_ready),
            engine_percentiles(&engine_before, &engine_after)
        ));
    }
    if burst > 0 {
        // Due `burst_delay` seconds after the run started (booked before that).
        let due_in = Duration::from_secs(burst_delay).saturating_sub(started.elapsed());
        let due_at = chrono::Utc::now() + chrono::Duration::from_std(due_in)?;
        let due = Instant::now() + due_in;
        let pickup = due_at + chrono::Duration::minutes(lead_minutes);
        let booked: Vec<anyhow::Result<String>> = stream::iter(0..burst)
            .map(|i| {
                let (api, customer) = (api.clone(), customer.clone());
                async move {
                    let (lat, lng) = start_point(2_000_000 + i);
                    let job = api
                        .post("/api/jobs", &customer, json!({ "address": "load test", "lat": lat, "lng": lng, "description": "", "load_size": "half", "scheduled_at": pickup.to_rfc3339() }))
                        .await?;
                    Ok(job["id"].as_str().context("job id")?.to_owned())
                }
            })
            .buffered(32)
            .collect()
            .await;
        let ids: Vec<String> = booked.into_iter().collect::<anyhow::Result<_>>()?;
        if Instant::now() > due {
            bail!("booking the burst took longer than --burst-delay; raise it");
        }
        {
            let mut offers = offers.lock().await;
            for id in &ids {
                offers.booked.insert(id.clone(), due);
            }
        }
        let engine_before = api.engine_histogram(ENGINE).await;
        tokio::time::sleep_until(due.into()).await;
        let (latency, missing) = await_offers(&offers, &ids, Duration::from_secs(60)).await;
        let engine_after = api.engine_histogram(ENGINE).await;
        let offers = offers.lock().await;
        let mut times: Vec<Instant> = ids
            .iter()
            .filter_map(|id| offers.received.get(id).copied())
            .collect();
        times.sort();
        if let (Some(first), Some(last)) = (times.first(), times.last()) {
            let span = last.duration_since(*first).as_secs_f64();
            report.push_str(&format!(
                "burst: {} jobs due at once; first offer {:.1} ms after the due moment, last {:.1} ms; {:.0} jobs offered/s (first to last); per job: {}; {missing} without an offer\n",
                ids.len(),
                first.saturating_duration_since(due).as_secs_f64() * 1e3,
                last.saturating_duration_since(due).as_secs_f64() * 1e3,
                times.len() as f64 / span.max(1e-6),
                micros_percentiles(&latency),
            ));
            report.push_str(&format!(
                "engine (job due -> offer sent): {}\n",
                engine_percentiles(&engine_before, &engine_after)
            ));
        }
    }
    Ok(report.trim_end().to_owned())
}

/// Waits until every job has an offer (or `limit` passes); the latencies in µs and the number
/// of jobs without an offer.
async fn await_offers(
    offers: &Mutex<Offers>,
    ids: &[String],
    limit: Duration,
) -> (Histogram<u64>, usize) {
    let deadline = Instant::now() + limit;
    loop {
        {
            let offers = offers.lock().await;
            let missing = ids
                .iter()
                .filter(|id| !offers.received.contains_key(*id))
                .count();
            if missing == 0 || Instant::now() > deadline {
                let mut histogram = Histogram::<u64>::new(3).expect("a histogram");
                for id in ids {
                    if let (Some(sent), Some(got)) =
                        (offers.booked.get(id), offers.received.get(id))
                    {
                        let us = got.saturating_duration_since(*sent).as_micros() as u64;
                        histogram.record(us.max(1)).ok();
                    }
                }
                return (histogram, missing);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let run = format!("{:x}", now_ms());
    let api = Arc::new(Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?,
        url: args.url.trim_end_matches('/').to_owned(),
        admin: mint(&args.jwt_secret, &uuid::Uuid::new_v4().to_string(), "admin"),
    });
    let customers = args.customers.min(args.drivers);

    eprintln!(
        "set-up: {} drivers, {} abusive drivers, {customers} customers with jobs, {} dispatchers",
        args.drivers, args.abusive_drivers, args.dispatchers
    );
    let drivers = api
        .create_users(
            "driver",
            args.drivers + args.abusive_drivers,
            &run,
            args.setup_concurrency,
        )
        .await?;
    let customer_ids = api
        .create_users("customer", customers, &run, args.setup_concurrency)
        .await?;
    let dispatcher_ids = api
        .create_users("operator", args.dispatchers, &run, args.setup_concurrency)
        .await?;
    // Each customer books a pickup next to a streaming driver, who is then assigned to it.
    let jobs: Vec<anyhow::Result<String>> = stream::iter(customer_ids.iter().enumerate())
        .map(|(i, customer)| {
            let api = api.clone();
            let token = mint(&args.jwt_secret, customer, "customer");
            let driver = drivers[i].clone();
            async move {
                let (lat, lng) = start_point(i);
                let job = api
                    .post("/api/jobs", &token, json!({ "address": "load test", "lat": lat, "lng": lng, "description": "", "load_size": "half" }))
                    .await?;
                let id = job["id"].as_str().context("job id")?.to_owned();
                api.post(&format!("/api/jobs/{id}/assign"), &api.admin, json!({ "driver_id": driver })).await?;
                Ok(id)
            }
        })
        .buffered(args.setup_concurrency)
        .collect()
        .await;
    let jobs: Vec<String> = jobs.into_iter().collect::<anyhow::Result<_>>()?;
    let rss_before = api.engine_rss().await;

    let dispatching = args.dispatch_jobs > 0 || args.burst_jobs > 0;
    let offers: Arc<Mutex<Offers>> = Arc::default();
    let booker = if dispatching {
        let id = api.create_users("customer", 1, &run, 1).await?.remove(0);
        Some(mint(&args.jwt_secret, &id, "customer"))
    } else {
        None
    };
    let stats = Arc::new(Stats::new());
    let connections = args.drivers + args.abusive_drivers + customers + args.dispatchers;
    eprintln!("connecting {connections} sockets");
    let mut tasks = Vec::new();
    for (i, id) in dispatcher_ids.iter().enumerate() {
        let token = mint(&args.jwt_secret, id, "operator");
        tasks.push(tokio::spawn(watch_map(
            api.url.clone(),
            token,
            stats.clone(),
        )));
        if i % args.setup_concurrency == 0 {
            tokio::task::yield_now().await;
        }
    }
    for (i, (customer, job)) in customer_ids.iter().zip(&jobs).enumerate() {
        let token = mint(&args.jwt_secret, customer, "customer");
        tasks.push(tokio::spawn(follow(
            api.url.clone(),
            token,
            job.clone(),
            stats.clone(),
        )));
        if i % args.setup_concurrency == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for (i, driver) in drivers.iter().enumerate() {
        let token = mint(&args.jwt_secret, driver, "driver");
        let abusive = i >= args.drivers;
        let rate = if abusive {
            args.abusive_rate
        } else {
            args.rate
        };
        tasks.push(tokio::spawn(drive(
            api.url.clone(),
            token,
            i,
            rate,
            args.burst,
            stats.clone(),
            abusive,
            (!abusive && dispatching).then(|| offers.clone()),
        )));
        if i % args.setup_concurrency == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    eprintln!("warming up for {} s", args.warmup);
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    stats.reset().await;
    let fanout_before = api.engine_fanout().await;
    let dispatch_run = booker.map(|customer| {
        tokio::spawn(book_jobs(
            api.clone(),
            customer,
            offers.clone(),
            args.dispatch_jobs,
            args.dispatch_rate,
            args.burst_jobs,
            args.lead_minutes,
            args.burst_delay,
        ))
    });
    let progress = ProgressBar::new(args.duration);
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} s  {msg}").unwrap(),
    );
    let started = Instant::now();
    let mut last_sent = 0;
    // Customer p99 of each measured second: shows whether a tail is spread out or one burst.
    let mut p99_per_second: Vec<u64> = Vec::new();
    for _ in 0..args.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        {
            let mut second = stats.customer_latency_this_second.lock().await;
            if !second.is_empty() {
                p99_per_second.push(second.value_at_quantile(0.99));
            }
            second.reset();
        }
        let sent = stats.sent.load(Ordering::Relaxed);
        progress.set_message(format!(
            "{} positions/s, {} to customers, {} map deltas",
            sent - last_sent,
            stats.customer_frames.load(Ordering::Relaxed),
            stats.map_deltas.load(Ordering::Relaxed)
        ));
        last_sent = sent;
        progress.inc(1);
    }
    progress.finish();
    let elapsed = started.elapsed().as_secs_f64();
    let dispatch_report = match dispatch_run {
        Some(run) => Some(run.await??),
        None => None,
    };
    let rss_after = api.engine_rss().await;
    let fanout_after = api.engine_fanout().await;

    let sent = stats.sent.load(Ordering::Relaxed);
    println!(
        "umuve-loadgen: {} drivers at {} Hz (burst {}), {} flooding at {} Hz, {} dispatchers, {} customers, {:.0} s measured",
        args.drivers,
        args.rate,
        args.burst,
        args.abusive_drivers,
        args.abusive_rate,
        args.dispatchers,
        customers,
        elapsed
    );
    println!(
        "positions sent:          {} ({:.0}/s)",
        sent,
        sent as f64 / elapsed
    );
    println!(
        "driver.location received: {} ({:.0}/s)",
        stats.customer_frames.load(Ordering::Relaxed),
        stats.customer_frames.load(Ordering::Relaxed) as f64 / elapsed
    );
    println!(
        "map.delta received:       {} ({:.1} MB/s)",
        stats.map_deltas.load(Ordering::Relaxed),
        stats.map_bytes.load(Ordering::Relaxed) as f64 / elapsed / 1e6
    );
    println!(
        "customer latency:   {}",
        percentiles(&*stats.customer_latency.lock().await)
    );
    if !p99_per_second.is_empty() {
        let over: Vec<String> = p99_per_second
            .iter()
            .enumerate()
            .filter(|(_, p99)| **p99 >= 50)
            .map(|(second, p99)| format!("s{}={p99}ms", second + 1))
            .collect();
        let mut sorted = p99_per_second.clone();
        sorted.sort_unstable();
        println!(
            "customer p99 per second: median {} ms, worst {} ms; seconds at or over 50 ms: {}",
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1],
            if over.is_empty() {
                "none".to_owned()
            } else {
                over.join(" ")
            }
        );
    }
    println!(
        "dispatcher latency: {}",
        percentiles(&*stats.dispatcher_latency.lock().await)
    );
    println!(
        "engine fan-out (received -> written to a watcher): {}",
        engine_percentiles(&fanout_before, &fanout_after)
    );
    println!(
        "errors: {} error frames, {} sockets closed, {} failed connects",
        stats.error_frames.load(Ordering::Relaxed),
        stats.closed.load(Ordering::Relaxed),
        stats.connect_failures.load(Ordering::Relaxed)
    );
    if let Some(report) = dispatch_report {
        println!("{report}");
    }
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!(
            "engine RSS: {:.1} MiB before connecting, {:.1} MiB at the end; {:.1} KiB per connection",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            (after as f64 - before as f64) / 1024.0 / connections.max(1) as f64
        );
    }
    for task in tasks {
        task.abort();
    }
    Ok(())
}
