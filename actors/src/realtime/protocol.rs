//! Server → client messages of the WebSocket protocol (API.md), with their `type` names.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;

use super::model::{Job, JobStatus, MapDriver};
use crate::ids::{DriverId, JobId, OfferId, UserId};

/// The assigned driver's last position in a `job.snapshot`.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotDriver {
    pub driver_id: DriverId,
    pub lat: f64,
    pub lng: f64,
    pub heading_deg: Option<f64>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type")]
pub enum ServerMessage<'a> {
    #[serde(rename = "hello")]
    Hello {
        user_id: UserId,
        role: &'a str,
        server_time: DateTime<Utc>,
    },
    #[serde(rename = "error")]
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
        code: &'a str,
        message: &'a str,
    },
    #[serde(rename = "ack")]
    Ack { id: &'a RawValue },
    #[serde(rename = "job.snapshot")]
    JobSnapshot {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
        job: &'a Job,
        driver: Option<SnapshotDriver>,
    },
    #[serde(rename = "job.status")]
    JobStatus {
        job_id: JobId,
        status: JobStatus,
        at: DateTime<Utc>,
    },
    #[serde(rename = "driver.location")]
    DriverLocation {
        job_id: JobId,
        driver_id: DriverId,
        lat: f64,
        lng: f64,
        heading_deg: Option<f64>,
        ts: i64,
    },
    #[serde(rename = "job.assigned")]
    JobAssigned { job: &'a Job },
    #[serde(rename = "map.snapshot")]
    MapSnapshot {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
        drivers: &'a [MapDriver],
        jobs: Vec<&'a Job>,
    },
    #[serde(rename = "map.delta")]
    MapDelta {
        drivers: Vec<&'a MapDriver>,
        offline: &'a [DriverId],
        jobs: Vec<&'a Job>,
    },
    #[serde(rename = "job.new")]
    JobNew { job: &'a Job },
    #[serde(rename = "job.unassigned")]
    JobUnassigned { job_id: JobId },
    #[serde(rename = "offer")]
    Offer {
        offer_id: OfferId,
        job: &'a Job,
        distance_m: f64,
        expires_at: DateTime<Utc>,
    },
    #[serde(rename = "offer.closed")]
    OfferClosed {
        offer_id: OfferId,
        reason: OfferClosedReason,
    },
}

/// Why an offer closed without being accepted (`offer.closed`'s `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferClosedReason {
    /// Nobody answered in time.
    Expired,
    /// The job went to someone else (another driver, or a dispatcher assigned it).
    Taken,
    /// The job was cancelled.
    Cancelled,
    /// The driver declined it.
    Declined,
}

impl OfferClosedReason {
    /// The `offers.status` it leaves behind.
    pub fn as_str(self) -> &'static str {
        match self {
            OfferClosedReason::Expired => "expired",
            OfferClosedReason::Taken => "taken",
            OfferClosedReason::Cancelled => "cancelled",
            OfferClosedReason::Declined => "declined",
        }
    }
}
