//! Positions travel from sessions to the `GeoIndex` in batches. Each HTTP worker thread keeps a
//! buffer of the newest fix per driver (no message per fix: sessions on that thread write into it
//! directly) and a `LocationBatcher` actor on the same thread flushes it to the index every few
//! milliseconds as one message. A fix replaced before a flush is counted as coalesced; a batch
//! the index has no room for is shed (counted), never queued without bound.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;

use super::geo_index::{GeoIndex, LocationBatch};
use super::metrics::{METRICS, mailbox};
use super::model::DriverFix;
use crate::ids::DriverId;

/// How often a worker's buffer goes to the index.
pub const FLUSH_EVERY: Duration = Duration::from_millis(4);

type Buffer = Rc<RefCell<HashMap<DriverId, DriverFix>>>;

thread_local! {
    /// This worker's buffer, created with its batcher on first use.
    static LOCAL: RefCell<Option<Buffer>> = const { RefCell::new(None) };
}

/// Where sessions put positions; cheap to clone, usable from any worker thread.
#[derive(Clone)]
pub struct LocationSink {
    geo: Addr<GeoIndex>,
    /// Set while the index cannot keep up: sessions drop positions on arrival.
    shedding: Arc<AtomicBool>,
}

impl LocationSink {
    pub fn new(geo: Addr<GeoIndex>) -> Self {
        Self {
            geo,
            shedding: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True while the engine is behind on positions: callers may skip work on new ones.
    pub fn is_shedding(&self) -> bool {
        self.shedding.load(Ordering::Relaxed)
    }

    /// Buffers a fix; the newest `ts` per driver wins. Must run on an actix arbiter thread.
    pub fn push(&self, driver: DriverId, fix: DriverFix) {
        let buffer = LOCAL.with(|local| {
            local
                .borrow_mut()
                .get_or_insert_with(|| {
                    let buffer: Buffer = Rc::default();
                    LocationBatcher {
                        buffer: buffer.clone(),
                        sink: self.clone(),
                    }
                    .start();
                    buffer
                })
                .clone()
        });
        let mut buffer = buffer.borrow_mut();
        match buffer.entry(driver) {
            Entry::Vacant(slot) => {
                slot.insert(fix);
            }
            Entry::Occupied(mut slot) => {
                METRICS.locations_coalesced.inc();
                if fix.ts_ms >= slot.get().ts_ms {
                    slot.insert(fix);
                }
            }
        }
    }
}

/// Flushes one worker's buffer to the index.
struct LocationBatcher {
    buffer: Buffer,
    sink: LocationSink,
}

impl LocationBatcher {
    fn flush(&mut self) {
        let fixes: Vec<(DriverId, DriverFix)> = {
            let mut buffer = self.buffer.borrow_mut();
            if buffer.is_empty() {
                return;
            }
            buffer.drain().collect()
        };
        let count = fixes.len() as u64;
        match self.sink.geo.try_send(LocationBatch(fixes)) {
            Ok(()) => {
                mailbox("geo_index").inc();
                self.sink.shedding.store(false, Ordering::Relaxed);
            }
            Err(_) => {
                METRICS.locations_shed.inc_by(count);
                self.sink.shedding.store(true, Ordering::Relaxed);
            }
        }
    }
}

impl Actor for LocationBatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(FLUSH_EVERY, |this, _| this.flush());
    }
}
