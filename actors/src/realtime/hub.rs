//! Starts the realtime actors together on one thread of their own (an arbiter), so the hops
//! between them (index → rooms, map → index) stay on one thread and cost little; sessions live
//! on the HTTP workers and reach the hub with batches and commands.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::batcher::LocationSink;
use super::dispatch_map::DispatchMap;
use super::geo_index::{ConnectMatcher, GeoIndex, PositionStore};
use super::matcher::{DispatchStore, Matcher, MatcherSettings};
use super::registry::SessionRegistry;
use super::rooms::{ConnectGeoIndex, RoomDirectory};
use super::scheduler::Scheduler;
use crate::clock::SharedClock;
use crate::geo::ServiceArea;

#[derive(Debug, Clone, Copy)]
pub struct HubSettings {
    /// A position older than this leaves searches and shows offline.
    pub driver_stale: Duration,
    /// How often the map sends deltas.
    pub map_tick: Duration,
    /// How often changed positions are written to storage.
    pub checkpoint_every: Duration,
    /// How long a driver whose socket closed is still offered jobs (by push).
    pub driver_offline_grace: Duration,
    pub matcher: MatcherSettings,
}

/// Addresses of the realtime actors.
#[derive(Clone)]
pub struct Hub {
    pub geo: Addr<GeoIndex>,
    pub map: Addr<DispatchMap>,
    pub rooms: Addr<RoomDirectory>,
    pub sessions: Addr<SessionRegistry>,
    pub matcher: Addr<Matcher>,
    pub locations: LocationSink,
    pub area: Arc<ServiceArea>,
    arbiter: ArbiterHandle,
}

impl Hub {
    /// Starts the hub's thread and actors. Must run inside an actix system.
    pub fn start(
        settings: HubSettings,
        clock: SharedClock,
        area: Arc<ServiceArea>,
        store: Arc<dyn PositionStore>,
        dispatch_store: Arc<dyn DispatchStore>,
    ) -> Self {
        let arbiter = Arbiter::new().handle();
        let rooms = RoomDirectory::start_in_arbiter(&arbiter, |_| RoomDirectory::new());
        let geo = {
            let (area, rooms, clock) = (area.clone(), rooms.clone(), clock.clone());
            GeoIndex::start_in_arbiter(&arbiter, move |_| {
                GeoIndex::new(area, clock, settings.driver_stale, rooms, store)
                    .checkpoint_every(settings.checkpoint_every)
                    .offline_grace(settings.driver_offline_grace)
            })
        };
        rooms.do_send(ConnectGeoIndex(geo.clone()));
        let map = {
            let geo = geo.clone();
            DispatchMap::start_in_arbiter(&arbiter, move |_| {
                DispatchMap::new(geo, settings.map_tick)
            })
        };
        let sessions = SessionRegistry::start_in_arbiter(&arbiter, |_| SessionRegistry::default());
        let matcher = {
            let (clock, geo, sessions, map) =
                (clock.clone(), geo.clone(), sessions.clone(), map.clone());
            Matcher::start_in_arbiter(&arbiter, move |ctx| {
                // The scheduler hands due jobs back to this matcher; it runs on this thread too.
                let scheduler = Scheduler::new(
                    clock.clone(),
                    settings.matcher.tick,
                    ctx.address().recipient(),
                )
                .start();
                Matcher::new(
                    settings.matcher,
                    clock,
                    dispatch_store,
                    geo,
                    sessions,
                    map,
                    scheduler,
                )
            })
        };
        geo.do_send(ConnectMatcher(matcher.clone().recipient()));
        Self {
            matcher,
            locations: LocationSink::new(geo.clone()),
            geo,
            map,
            rooms,
            sessions,
            area,
            arbiter,
        }
    }

    /// Stops the hub's thread (its actors stop with it).
    pub fn stop(&self) {
        self.arbiter.stop();
    }
}
