//! The realtime core: live driver positions, job rooms, the dispatch map, and the registry of
//! open sockets. The WebSocket sessions themselves live in the engine's web layer; they talk to
//! these actors with the messages defined here.
//!
//! - [`geo_index`]: `GeoIndex`, the R-tree of live drivers.
//! - [`batcher`]: how positions reach the index (per-worker buffers, flushed as batches).
//! - [`rooms`]: `JobRoom` per watched job, and the `RoomDirectory` that owns them.
//! - [`matcher`]: `Matcher`, offers dispatching jobs to the nearest free driver, one at a time.
//! - [`scheduler`]: `Scheduler`, holds jobs booked for later until their dispatch time.
//! - [`dispatch_map`]: `DispatchMap`, snapshots and coalesced deltas for dispatchers.
//! - [`registry`]: `SessionRegistry`, user → open sockets.
//! - [`hub`]: starts them together on one thread.
//! - [`frame`], [`protocol`], [`model`], [`metrics`]: what they exchange and count.

pub mod batcher;
pub mod dispatch_map;
pub mod frame;
pub mod geo_index;
pub mod hub;
pub mod matcher;
pub mod metrics;
pub mod model;
pub mod protocol;
pub mod registry;
pub mod rooms;
pub mod scheduler;
