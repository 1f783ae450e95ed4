//! Actors of the Umuve dispatch engine and the messages between them.
//!
//! This crate knows nothing of HTTP routes or SQL. What an actor needs from the outside
//! (send an SMS, deliver an email, tell the time) comes in as a small trait, so every actor
//! can be tested alone with an implementation of that trait.
//!
//! Module map:
//! - [`ids`]: typed identifiers (`UserId`, `JobId`, `DriverId`, `OfferId`).
//! - [`clock`]: the time source; tests control it instead of sleeping.
//! - [`outbound`]: SMS and email senders with retries and provider fallback.
//! - [`geo`]: coordinates, distances, the tri-county service area.
//! - [`realtime`]: the geo index, job rooms, the dispatch map, the session registry.

pub mod clock;
pub mod geo;
pub mod ids;
pub mod outbound;
pub mod realtime;
