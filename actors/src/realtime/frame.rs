//! Frames on their way to WebSocket sessions: serialised once, shared by every recipient.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix::{Message, Recipient};
use bytestring::ByteString;
use serde::Serialize;

use super::metrics::{METRICS, count};
use crate::ids::JobId;

/// One JSON text frame. Cloning shares the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame(ByteString);

impl Frame {
    /// Serialises `message` once.
    pub fn json<T: Serialize>(message: &T) -> Self {
        let text = serde_json::to_string(message).expect("server messages always serialise");
        Frame(ByteString::from(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_text(self) -> ByteString {
        self.0
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({} bytes)", self.0.len())
    }
}

/// How a session may treat a frame when its reader falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Never dropped: statuses, snapshots, acks, errors, offers.
    Status,
    /// Only the newest matters: a slow reader keeps the latest per job.
    Location { job: JobId },
    /// A map delta: a slow reader skips deltas and gets a fresh snapshot when it catches up.
    MapDelta,
}

/// Command to a session: write this frame to the socket.
#[derive(Debug, Message, Clone)]
#[rtype(result = "()")]
pub struct Deliver {
    pub frame: Frame,
    pub kind: FrameKind,
    /// The message type, for metrics.
    pub name: &'static str,
    /// When the position in it reached the engine, for the fan-out latency histogram.
    pub origin: Option<Instant>,
}

impl Deliver {
    pub fn status(name: &'static str, frame: Frame) -> Self {
        Self {
            frame,
            kind: FrameKind::Status,
            name,
            origin: None,
        }
    }
}

/// Sends a frame to a session. Status frames always go (they are rare and must not be lost);
/// location and map frames go only if the session's mailbox has room. False: dropped.
pub fn deliver(to: &Recipient<Deliver>, message: Deliver) -> bool {
    if message.kind == FrameKind::Status {
        to.do_send(message);
        true
    } else if to.try_send(message).is_err() {
        count(&METRICS.frames_dropped, "mailbox_full");
        false
    } else {
        true
    }
}

/// Identifies one socket (a user may hold several).
pub type SessionId = u64;

/// A fresh session id.
pub fn next_session_id() -> SessionId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
