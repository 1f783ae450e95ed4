//! The WebSocket session actors: `DriverSession` for drivers, `ClientSession` for customers and
//! dispatchers. Both share the socket handling here (heartbeat, frame limits, back-pressure);
//! they differ in what they may send.
//!
//! Back-pressure: the session knows how many bytes wait for its reader ([`OutboundGauge`]).
//! Past the soft limit (`WS_OUTBOUND_SOFT_KIB`), locations are coalesced per job (newest wins)
//! and map deltas are skipped (a fresh snapshot follows when the reader catches up); status
//! frames are always written. A reader behind by more than the hard limit
//! (`WS_OUTBOUND_HARD_KIB`), or behind for `WS_SLOW_READER_SECS`, is closed (1008).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::{CloseCode, CloseReason, Item, Message, ProtocolError};
use actix_web::web;
use actix_web_actors::ws::WebsocketContext;
use serde_json::value::RawValue;
use umuve_actors::ids::{DriverId, JobId, OfferId, UserId};
use umuve_actors::realtime::dispatch_map::{MapSubscribe, MapUnsubscribe, ResyncMap};
use umuve_actors::realtime::frame::{Deliver, Frame, FrameKind, SessionId, next_session_id};
use umuve_actors::realtime::geo_index::{DriverConnected, DriverDisconnected, SetAvailability};
use umuve_actors::realtime::metrics::{METRICS, count};
use umuve_actors::realtime::model::DriverFix;
use umuve_actors::realtime::protocol::ServerMessage;
use umuve_actors::realtime::registry::{RegisterSession, UnregisterSession};
use umuve_actors::realtime::rooms::{JoinRoom, LeaveRoom, Watcher};

use super::outbound::{OutboundGauge, frame_size};
use super::protocol::{self, Command, Position, Refusal};
use crate::domain::Role;
use crate::http::ApiError;
use crate::jobs;
use crate::state::AppState;
use crate::storage;

/// Ping this often.
pub const PING_EVERY: Duration = Duration::from_secs(10);
/// Drop a peer silent this long.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(30);
/// Largest frame (and reassembled message) accepted.
pub const MAX_FRAME: usize = 64 * 1024;
/// Dropped frames within [`ABUSE_WINDOW`] that get a socket closed (1008).
pub const ABUSE_DROPS: u32 = 200;
pub const ABUSE_WINDOW: Duration = Duration::from_secs(10);
/// After a close for flooding, the user's new connections are refused this long (429); doubled
/// for repeat offenders (see `Limiter::cool_down_ws`).
pub const ABUSE_COOLDOWN: Duration = Duration::from_secs(60);
/// A position's `ts` further ahead of the engine's clock than this is replaced by the time of
/// receipt.
pub const MAX_CLOCK_AHEAD_MS: i64 = 5 * 60 * 1000;
/// Jobs one socket may watch at once.
pub const MAX_SUBSCRIPTIONS: usize = 200;
const PUMP_EVERY: Duration = Duration::from_millis(50);

/// Per-socket frame budget: a token bucket (`WS_FRAMES_PER_SECOND`, `WS_FRAME_BURST`).
struct FrameBudget {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    dropped_in_window: u32,
    window_started: Instant,
    last_refusal_sent: Option<Instant>,
}

impl FrameBudget {
    fn new(per_second: f64, burst: f64) -> Self {
        let now = Instant::now();
        Self {
            per_second,
            burst,
            tokens: burst,
            refilled: now,
            dropped_in_window: 0,
            window_started: now,
            last_refusal_sent: None,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        if now.duration_since(self.window_started) > ABUSE_WINDOW {
            self.window_started = now;
            self.dropped_in_window = 0;
        }
        self.dropped_in_window += 1;
        false
    }

    fn abusive(&self) -> bool {
        self.dropped_in_window > ABUSE_DROPS
    }

    /// One `rate_limited` error per second at most, so refusals do not flood a slow client.
    fn should_tell(&mut self, now: Instant) -> bool {
        let tell = self
            .last_refusal_sent
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
        if tell {
            self.last_refusal_sent = Some(now);
        }
        tell
    }
}

/// Where a map subscriber stands after skipping deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MapSync {
    InSync,
    /// Skipped a delta; ask for a snapshot once the reader catches up.
    NeedsSnapshot,
    /// Asked; deltas are skipped until the snapshot arrives.
    AwaitingSnapshot,
}

/// What differs between drivers and everyone else.
pub trait SessionRole: Unpin + Sized + 'static {
    /// For metrics: `driver`, `customer` or `dispatcher`.
    fn label(&self) -> &'static str;
    /// The account's role, as `hello` states it.
    fn role_name(&self) -> &'static str;
    fn driver(&self) -> Option<DriverId> {
        None
    }
    /// Drivers only: approved when the socket opened.
    fn approved(&self) -> bool {
        false
    }
    fn is_dispatcher(&self) -> bool {
        false
    }
}

/// A driver's socket.
pub struct DriverRole {
    pub driver: DriverId,
    pub approved: bool,
}

impl SessionRole for DriverRole {
    fn label(&self) -> &'static str {
        "driver"
    }
    fn role_name(&self) -> &'static str {
        "driver"
    }
    fn driver(&self) -> Option<DriverId> {
        Some(self.driver)
    }
    fn approved(&self) -> bool {
        self.approved
    }
}

/// A customer's or a dispatcher's socket.
pub struct ClientRole {
    pub role: Role,
}

impl SessionRole for ClientRole {
    fn label(&self) -> &'static str {
        if self.role.is_dispatcher() {
            "dispatcher"
        } else {
            "customer"
        }
    }
    fn role_name(&self) -> &'static str {
        self.role.as_str()
    }
    fn is_dispatcher(&self) -> bool {
        self.role.is_dispatcher()
    }
}

/// One socket.
pub struct WsSession<R: SessionRole> {
    id: SessionId,
    user: UserId,
    role: R,
    state: web::Data<AppState>,
    gauge: OutboundGauge,
    /// Bytes written into the context (what the reader will have to read).
    written: u64,
    lagging_since: Option<Instant>,
    /// Newest location per job, held while the reader is behind.
    held_locations: HashMap<JobId, Deliver>,
    map_sync: MapSync,
    last_heard: Instant,
    /// A pump is due (see `schedule_pump`).
    pump_scheduled: bool,
    budget: FrameBudget,
    subscriptions: HashSet<JobId>,
    /// A fragmented text message being put together.
    partial: Option<Vec<u8>>,
}

pub type DriverSession = WsSession<DriverRole>;
pub type ClientSession = WsSession<ClientRole>;
type Ctx<R> = WebsocketContext<WsSession<R>>;

impl<R: SessionRole> WsSession<R> {
    pub fn new(user: UserId, role: R, state: web::Data<AppState>, gauge: OutboundGauge) -> Self {
        let budget = FrameBudget::new(
            state.settings.realtime.frames_per_second,
            state.settings.realtime.frame_burst,
        );
        Self {
            id: next_session_id(),
            user,
            role,
            state,
            gauge,
            written: 0,
            lagging_since: None,
            held_locations: HashMap::new(),
            map_sync: MapSync::InSync,
            last_heard: Instant::now(),
            pump_scheduled: false,
            budget,
            subscriptions: HashSet::new(),
            partial: None,
        }
    }

    /// Bytes written but not yet taken by the HTTP writer.
    fn lag(&mut self) -> u64 {
        if self.gauge.take_drained() {
            self.written = self.gauge.pulled();
        }
        self.written.saturating_sub(self.gauge.pulled())
    }

    fn write(&mut self, ctx: &mut Ctx<R>, message: Deliver) {
        self.lag();
        self.written += frame_size(message.frame.len());
        count(&METRICS.messages_out, message.name);
        if let Some(origin) = message.origin {
            METRICS
                .location_fanout_seconds
                .observe(origin.elapsed().as_secs_f64());
        }
        ctx.text(message.frame.into_text());
    }

    fn send(&mut self, ctx: &mut Ctx<R>, name: &'static str, message: &ServerMessage<'_>) {
        self.write(ctx, Deliver::status(name, Frame::json(message)));
    }

    fn refuse(&mut self, ctx: &mut Ctx<R>, id: Option<&RawValue>, refusal: &Refusal) {
        self.error(ctx, id, refusal.code, &refusal.message);
    }

    /// Sends an `error` frame (answering the message `id`, when it had one).
    fn error(&mut self, ctx: &mut Ctx<R>, id: Option<&RawValue>, code: &str, message: &str) {
        self.send(ctx, "error", &ServerMessage::Error { id, code, message });
    }

    /// The database did not answer: the client may retry.
    fn try_again(&mut self, ctx: &mut Ctx<R>, id: Option<&RawValue>) {
        self.error(ctx, id, "unavailable", "try again");
    }

    fn refuse_binary(&mut self, ctx: &mut Ctx<R>) {
        if self.admit(ctx) {
            let message = "binary messages are not supported; send JSON text";
            self.error(ctx, None, "bad_request", message);
        }
    }

    fn ack(&mut self, ctx: &mut Ctx<R>, id: Option<&RawValue>) {
        if let Some(id) = id {
            self.send(ctx, "ack", &ServerMessage::Ack { id });
        }
    }

    fn close(&mut self, ctx: &mut Ctx<R>, code: CloseCode, reason: &'static str, metric: &str) {
        METRICS.sockets_closed.with_label_values(&[metric]).inc();
        ctx.close(Some(CloseReason {
            code,
            description: Some(reason.to_owned()),
        }));
        ctx.stop();
    }

    /// Closes a reader that fell too far behind: what waits for it is dropped (it would never
    /// read it in time), then the connection ends.
    fn drop_slow_reader(&mut self, ctx: &mut Ctx<R>) {
        if self.gauge.is_aborted() {
            return;
        }
        self.gauge.abort();
        self.held_locations.clear();
        self.close(
            ctx,
            CloseCode::Policy,
            "too slow: fell too far behind",
            "slow_reader",
        );
    }

    /// Writes what waited while the reader was behind, asks for a map snapshot if deltas were
    /// skipped, and closes a reader that stays behind.
    fn pump(&mut self, ctx: &mut Ctx<R>) {
        let lag = self.lag();
        let limits = self.state.settings.realtime;
        if lag > limits.soft_lag_bytes {
            let since = *self.lagging_since.get_or_insert_with(Instant::now);
            if lag > limits.hard_lag_bytes || since.elapsed() > limits.stall_limit {
                self.drop_slow_reader(ctx);
            } else {
                self.schedule_pump(ctx);
            }
            return;
        }
        self.lagging_since = None;
        for message in std::mem::take(&mut self.held_locations).into_values() {
            self.write(ctx, message);
        }
        if self.map_sync == MapSync::NeedsSnapshot {
            self.map_sync = MapSync::AwaitingSnapshot;
            self.state.hub.map.do_send(ResyncMap { session: self.id });
        }
    }

    /// Runs [`Self::pump`] soon, once. Only a socket whose reader is behind needs pumping, so
    /// there is no timer per socket otherwise (tens of thousands of sockets).
    fn schedule_pump(&mut self, ctx: &mut Ctx<R>) {
        if !self.pump_scheduled {
            self.pump_scheduled = true;
            ctx.run_later(PUMP_EVERY, |this, ctx| {
                this.pump_scheduled = false;
                this.pump(ctx);
            });
        }
    }

    fn heartbeat(&mut self, ctx: &mut Ctx<R>) {
        if self.last_heard.elapsed() > SILENCE_LIMIT {
            METRICS.sockets_closed.with_label_values(&["silent"]).inc();
            ctx.stop();
            return;
        }
        self.written += frame_size(0);
        ctx.ping(b"");
    }

    /// Charges one client message (text, binary or ping) to the socket's budget. False: drop
    /// it (the client is told now and then; a socket that keeps flooding is closed).
    fn admit(&mut self, ctx: &mut Ctx<R>) -> bool {
        let now = Instant::now();
        if !self.budget.take(now) {
            count(&METRICS.frames_dropped, "rate_limited");
            if self.budget.abusive() {
                self.state
                    .limits
                    .cool_down_ws(self.user.as_uuid(), ABUSE_COOLDOWN);
                self.close(
                    ctx,
                    CloseCode::Policy,
                    "rate limit exceeded",
                    "rate_limited",
                );
            } else if self.budget.should_tell(now) {
                let message = format!(
                    "more than {} messages per second; some were dropped",
                    self.budget.per_second
                );
                self.error(ctx, None, "rate_limited", &message);
            }
            return false;
        }
        true
    }

    fn on_text(&mut self, ctx: &mut Ctx<R>, text: &str) {
        if !self.admit(ctx) {
            return;
        }
        // Shedding: the engine is behind on positions; new ones are dropped unparsed.
        if self.role.driver().is_some()
            && self.state.hub.locations.is_shedding()
            && text.trim_start().starts_with(r#"{"type":"location"#)
        {
            count(&METRICS.frames_dropped, "shed");
            return;
        }
        let raw = match protocol::parse(text) {
            Ok(raw) => raw,
            Err((id, refusal)) => {
                METRICS.messages_in.with_label_values(&["invalid"]).inc();
                self.refuse(ctx, id.as_deref(), &refusal);
                return;
            }
        };
        count(&METRICS.messages_in, raw.metric_name());
        let id = raw.id.map(|id| id.to_owned());
        match raw.command() {
            Ok(command) => self.on_command(ctx, command, id),
            Err(refusal) => self.refuse(ctx, id.as_deref(), &refusal),
        }
    }

    fn forbidden(&mut self, ctx: &mut Ctx<R>, id: Option<&RawValue>, message: &str) {
        self.error(ctx, id, "forbidden", message);
    }

    fn on_command(&mut self, ctx: &mut Ctx<R>, command: Command, id: Option<Box<RawValue>>) {
        match command {
            Command::Location(position) | Command::Locations(position) => {
                match self.role.driver() {
                    Some(driver) => self.on_position(driver, position),
                    None => self.forbidden(ctx, id.as_deref(), "only drivers send locations"),
                }
            }
            Command::Availability(available) => match self.role.driver() {
                Some(driver) => self.on_availability(ctx, driver, available, id),
                None => self.forbidden(ctx, id.as_deref(), "only drivers have an availability"),
            },
            Command::OfferAccept(offer) | Command::OfferDecline(offer) => {
                let accept = matches!(command, Command::OfferAccept(_));
                match self.role.driver() {
                    Some(driver) => self.on_offer_answer(ctx, driver, offer, accept, id),
                    None => self.forbidden(ctx, id.as_deref(), "only drivers receive offers"),
                }
            }
            Command::Subscribe(job) => self.on_subscribe(ctx, job, id),
            Command::Unsubscribe(job) => {
                if self.subscriptions.remove(&job) {
                    self.state.hub.rooms.do_send(LeaveRoom {
                        job,
                        session: self.id,
                    });
                }
                self.ack(ctx, id.as_deref());
            }
            Command::MapSubscribe(bbox) => {
                if !self.role.is_dispatcher() {
                    return self.forbidden(ctx, id.as_deref(), "only dispatchers watch the map");
                }
                self.map_sync = MapSync::AwaitingSnapshot;
                self.state.hub.map.do_send(MapSubscribe {
                    session: self.id,
                    recipient: ctx.address().recipient(),
                    bbox,
                    request_id: id,
                });
            }
            Command::MapUnsubscribe => {
                if self.role.is_dispatcher() {
                    self.state
                        .hub
                        .map
                        .do_send(MapUnsubscribe { session: self.id });
                    self.map_sync = MapSync::InSync;
                }
                self.ack(ctx, id.as_deref());
            }
        }
    }

    fn on_position(&mut self, driver: DriverId, position: Position) {
        let received_at = self.state.clock.now();
        self.state.hub.locations.push(
            driver,
            DriverFix {
                at: position.at,
                heading_deg: position.heading_deg,
                speed_mps: position.speed_mps,
                accuracy_m: position.accuracy_m,
                // A phone clock far ahead would make every later, correct fix look older than
                // this one (and be ignored): such a time counts as the time of receipt.
                ts_ms: position
                    .ts
                    .filter(|ts| *ts <= received_at.timestamp_millis() + MAX_CLOCK_AHEAD_MS)
                    .unwrap_or_else(|| received_at.timestamp_millis()),
                received_at,
                received: Instant::now(),
            },
        );
    }

    fn on_availability(
        &mut self,
        ctx: &mut Ctx<R>,
        driver: DriverId,
        available: bool,
        id: Option<Box<RawValue>>,
    ) {
        let request = self.state.hub.geo.send(SetAvailability {
            driver,
            approved: None,
            available,
        });
        ctx.spawn(
            request
                .into_actor(self)
                .map(move |outcome, this, ctx| match outcome {
                    Ok(Ok(())) => this.ack(ctx, id.as_deref()),
                    Ok(Err(_)) => this.forbidden(
                        ctx,
                        id.as_deref(),
                        "only approved drivers can become available",
                    ),
                    Err(_) => this.try_again(ctx, id.as_deref()),
                }),
        );
    }

    /// Accepts or declines an offer as `POST /api/offers/{id}/accept|decline` would; `ack` when
    /// done (the job itself follows as `job.assigned`, the decline as `offer.closed`).
    fn on_offer_answer(
        &mut self,
        ctx: &mut Ctx<R>,
        driver: DriverId,
        offer: OfferId,
        accept: bool,
        id: Option<Box<RawValue>>,
    ) {
        let state = self.state.clone();
        let answer = async move {
            if accept {
                jobs::accept_offer(&state, offer, driver).await.map(|_| ())
            } else {
                jobs::decline_offer(&state, offer, driver).await
            }
        };
        ctx.spawn(
            answer
                .into_actor(self)
                .map(move |outcome, this, ctx| match outcome {
                    Ok(()) => this.ack(ctx, id.as_deref()),
                    Err(error) => {
                        if let ApiError::Unexpected(cause) = &error {
                            tracing::error!(error = ?cause, "offer answer failed");
                        }
                        this.error(ctx, id.as_deref(), error.code(), &error.to_string());
                    }
                }),
        );
    }

    /// A driver who (re)connects gets their open offer and active job again, as stored: a
    /// socket that dropped, or an engine that restarted, loses nothing the driver must see.
    fn replay_driver_state(&mut self, ctx: &mut Ctx<R>, driver: DriverId) {
        let state = self.state.clone();
        let lookup = async move {
            let now = state.clock.now();
            let offer = storage::offers::open_for_driver(&state.db, driver, now).await?;
            let job = storage::jobs::active_for_driver(&state.db, driver).await?;
            Ok::<_, sqlx::Error>((offer, job))
        };
        ctx.spawn(
            lookup
                .into_actor(self)
                .map(move |found, this, ctx| match found {
                    Ok((offer, job)) => {
                        if let Some(job) = job {
                            this.send(ctx, "job.assigned", &ServerMessage::JobAssigned { job: &job });
                        }
                        if let Some((offer, job)) = offer {
                            let message = ServerMessage::Offer {
                                offer_id: offer.id,
                                job: &job,
                                distance_m: offer.distance_m,
                                expires_at: offer.expires_at,
                            };
                            this.send(ctx, "offer", &message);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not read a reconnecting driver's offer and job");
                    }
                }),
        );
    }

    /// Who this session watches jobs as (see `Job::visible_to`).
    fn watcher(&self) -> Watcher {
        Watcher {
            user: self.user,
            dispatcher: self.role.is_dispatcher(),
        }
    }

    fn on_subscribe(&mut self, ctx: &mut Ctx<R>, job_id: JobId, id: Option<Box<RawValue>>) {
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS && !self.subscriptions.contains(&job_id) {
            return self.error(
                ctx,
                id.as_deref(),
                "bad_request",
                &format!("at most {MAX_SUBSCRIPTIONS} jobs per connection"),
            );
        }
        let state = self.state.clone();
        let lookup = async move { storage::jobs::by_id(&state.db, job_id).await };
        ctx.spawn(
            lookup
                .into_actor(self)
                .map(move |found, this, ctx| match found {
                    Ok(Some(job)) if this.watcher().may_watch(&job) => {
                        this.subscriptions.insert(job_id);
                        this.state.hub.rooms.do_send(JoinRoom {
                            job,
                            session: this.id,
                            watcher: this.watcher(),
                            recipient: ctx.address().recipient(),
                            request_id: id,
                        });
                    }
                    Ok(_) => {
                        this.error(ctx, id.as_deref(), "not_found", "no such job");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "subscribe: job lookup failed");
                        this.try_again(ctx, id.as_deref());
                    }
                }),
        );
    }

    /// Puts a fragmented text message together, within the frame limit.
    fn on_continuation(&mut self, ctx: &mut Ctx<R>, item: Item) {
        let (bytes, last) = match item {
            Item::FirstText(bytes) => {
                self.partial = Some(Vec::new());
                (bytes, false)
            }
            Item::FirstBinary(_) => return self.refuse_binary(ctx),
            Item::Continue(bytes) => (bytes, false),
            Item::Last(bytes) => (bytes, true),
        };
        let Some(partial) = &mut self.partial else {
            return;
        };
        partial.extend_from_slice(&bytes);
        if partial.len() > MAX_FRAME {
            self.partial = None;
            return self.close(
                ctx,
                CloseCode::Size,
                "message larger than 64 KiB",
                "too_large",
            );
        }
        if last && let Some(whole) = self.partial.take() {
            match String::from_utf8(whole) {
                Ok(text) => self.on_text(ctx, &text),
                Err(_) => self.close(
                    ctx,
                    CloseCode::Invalid,
                    "text is not UTF-8",
                    "protocol_error",
                ),
            }
        }
    }
}

impl<R: SessionRole> Actor for WsSession<R> {
    type Context = Ctx<R>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        let hub = &self.state.hub;
        hub.sessions.do_send(RegisterSession {
            user: self.user,
            session: self.id,
            role: self.role.label(),
            recipient: ctx.address().recipient(),
        });
        if let Some(driver) = self.role.driver() {
            hub.geo.do_send(DriverConnected {
                driver,
                approved: self.role.approved(),
            });
        }
        let hello = ServerMessage::Hello {
            user_id: self.user,
            role: self.role.role_name(),
            server_time: self.state.clock.now(),
        };
        self.send(ctx, "hello", &hello);
        if let Some(driver) = self.role.driver() {
            self.replay_driver_state(ctx, driver);
        }
        // The only timer a socket keeps (tens of thousands of sockets); pumping runs on demand.
        ctx.run_interval(PING_EVERY, |this, ctx| this.heartbeat(ctx));
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        let hub = &self.state.hub;
        // The geo index is told first: by the time the registry shows the socket gone, the
        // index's message is already in its mailbox.
        if let Some(driver) = self.role.driver() {
            hub.geo.do_send(DriverDisconnected { driver });
        }
        hub.sessions.do_send(UnregisterSession {
            user: self.user,
            session: self.id,
        });
        for job in self.subscriptions.drain() {
            hub.rooms.do_send(LeaveRoom {
                job,
                session: self.id,
            });
        }
        if self.role.is_dispatcher() {
            hub.map.do_send(MapUnsubscribe { session: self.id });
        }
        Running::Stop
    }
}

impl<R: SessionRole> StreamHandler<Result<Message, ProtocolError>> for WsSession<R> {
    fn handle(&mut self, item: Result<Message, ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(Message::Text(text)) => self.on_text(ctx, &text),
            Ok(Message::Ping(payload)) => {
                // A client that pings without reading would pile up pongs: while it is behind,
                // its pings go unanswered (its own pong arrives when it reads again).
                if self.admit(ctx) && self.lag() <= self.state.settings.realtime.soft_lag_bytes {
                    self.written += frame_size(payload.len());
                    ctx.pong(&payload);
                }
            }
            Ok(Message::Pong(_)) | Ok(Message::Nop) => {}
            Ok(Message::Binary(_)) => self.refuse_binary(ctx),
            Ok(Message::Continuation(item)) => self.on_continuation(ctx, item),
            Ok(Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(ProtocolError::Overflow) => {
                self.close(
                    ctx,
                    CloseCode::Size,
                    "frame larger than 64 KiB",
                    "too_large",
                );
            }
            Err(error) => {
                tracing::debug!(%error, "websocket protocol error");
                self.close(ctx, CloseCode::Protocol, "protocol error", "protocol_error");
            }
        }
        // Replies (errors, acks, pongs) count towards the reader's backlog like anything else.
        if self.lag() > self.state.settings.realtime.hard_lag_bytes {
            self.drop_slow_reader(ctx);
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl<R: SessionRole> Handler<Deliver> for WsSession<R> {
    type Result = ();

    fn handle(&mut self, message: Deliver, ctx: &mut Self::Context) {
        let limits = self.state.settings.realtime;
        match message.kind {
            FrameKind::Status => {
                if message.name == "map.snapshot" {
                    self.map_sync = MapSync::InSync;
                }
                self.write(ctx, message);
                let lag = self.lag();
                if lag > limits.hard_lag_bytes {
                    self.drop_slow_reader(ctx);
                } else if lag > limits.soft_lag_bytes {
                    self.schedule_pump(ctx);
                }
            }
            FrameKind::Location { job } => {
                if self.lag() > limits.soft_lag_bytes {
                    if self.held_locations.insert(job, message).is_some() {
                        METRICS.locations_coalesced.inc();
                    }
                    self.schedule_pump(ctx);
                } else {
                    self.write(ctx, message);
                }
            }
            FrameKind::MapDelta => {
                if self.map_sync != MapSync::InSync {
                    count(&METRICS.frames_dropped, "slow_reader");
                } else if self.lag() > limits.soft_lag_bytes {
                    count(&METRICS.frames_dropped, "slow_reader");
                    self.map_sync = MapSync::NeedsSnapshot;
                    self.schedule_pump(ctx);
                } else {
                    self.write(ctx, message);
                }
            }
        }
    }
}
