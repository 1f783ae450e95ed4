//! Identity: who is calling and how they proved it.
//!
//! - [`tokens`]: our HS256 JWTs (issue, verify).
//! - [`caller`]: the extractors handlers use to get the caller and enforce roles.
//! - [`passwords`]: argon2id hashing off the event loop.
//! - [`one_time`]: SMS codes and reset tokens, and their keyed hashes.
//! - [`apple`]: Sign in with Apple identity tokens against Apple's key set.

pub mod apple;
pub mod caller;
pub mod one_time;
pub mod passwords;
pub mod tokens;
