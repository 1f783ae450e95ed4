//! What the realtime actors move around: jobs and their statuses, driver fixes, map entries.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::geo::{County, LatLng};
use crate::ids::{DriverId, JobId, UserId};

/// Where a job stands. `pending_payment` → `dispatching` → `assigned` → `en_route` → `arrived`
/// → `in_progress` → `completed`; `cancelled` from any state before `in_progress`;
/// `payment_failed` from `pending_payment` (and back, or on to `dispatching` when a retry pays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    PendingPayment,
    Dispatching,
    Assigned,
    EnRoute,
    Arrived,
    InProgress,
    Completed,
    Cancelled,
    PaymentFailed,
}

/// Who asks for a status change; decides which moves are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mover {
    /// The job's own driver: only forward through the work, one step at a time.
    Driver,
    /// The job's customer: may cancel before the work starts.
    Customer,
    /// Admins and operators: any legal move.
    Dispatcher,
    /// The engine itself (payments, matcher).
    Engine,
}

impl JobStatus {
    pub const ALL: [JobStatus; 9] = [
        JobStatus::PendingPayment,
        JobStatus::Dispatching,
        JobStatus::Assigned,
        JobStatus::EnRoute,
        JobStatus::Arrived,
        JobStatus::InProgress,
        JobStatus::Completed,
        JobStatus::Cancelled,
        JobStatus::PaymentFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::PendingPayment => "pending_payment",
            JobStatus::Dispatching => "dispatching",
            JobStatus::Assigned => "assigned",
            JobStatus::EnRoute => "en_route",
            JobStatus::Arrived => "arrived",
            JobStatus::InProgress => "in_progress",
            JobStatus::Completed => "completed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::PaymentFailed => "payment_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// A driver is on the job: their location is shared with the job's watchers.
    pub fn has_active_driver(self) -> bool {
        matches!(
            self,
            JobStatus::Assigned | JobStatus::EnRoute | JobStatus::Arrived | JobStatus::InProgress
        )
    }

    /// Nothing more will happen to the job.
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Cancelled)
    }

    /// Shown on the dispatch map: everything not final, except jobs waiting for payment.
    pub fn is_on_map(self) -> bool {
        !self.is_final() && !matches!(self, JobStatus::PendingPayment | JobStatus::PaymentFailed)
    }

    /// Whether `mover` may move a job from `self` to `to`. Assignment (`dispatching` →
    /// `assigned`) needs a driver and goes through its own path, so it is not a plain move.
    pub fn may_move(self, to: JobStatus, mover: Mover) -> bool {
        use JobStatus::*;
        let legal = matches!(
            (self, to),
            (PendingPayment, Dispatching | PaymentFailed | Cancelled)
                | (PaymentFailed, PendingPayment | Dispatching | Cancelled)
                | (Dispatching, Cancelled)
                | (Assigned, EnRoute | Dispatching | Cancelled)
                | (EnRoute, Arrived | Cancelled)
                | (Arrived, InProgress | Cancelled)
                | (InProgress, Completed)
        );
        legal
            && match mover {
                Mover::Dispatcher | Mover::Engine => true,
                Mover::Driver => matches!(
                    (self, to),
                    (Assigned, EnRoute)
                        | (EnRoute, Arrived)
                        | (Arrived, InProgress)
                        | (InProgress, Completed)
                ),
                Mover::Customer => to == Cancelled,
            }
    }
}

/// How much junk: sets the price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadSize {
    SingleItem,
    Quarter,
    Half,
    ThreeQuarter,
    Full,
}

impl LoadSize {
    pub const ALL: [LoadSize; 5] = [
        LoadSize::SingleItem,
        LoadSize::Quarter,
        LoadSize::Half,
        LoadSize::ThreeQuarter,
        LoadSize::Full,
    ];

    /// Its place in [`Self::ALL`] (and in tables indexed like it, such as prices).
    pub fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|size| *size == self)
            .expect("ALL lists every size")
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LoadSize::SingleItem => "single_item",
            LoadSize::Quarter => "quarter",
            LoadSize::Half => "half",
            LoadSize::ThreeQuarter => "three_quarter",
            LoadSize::Full => "full",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|size| size.as_str() == s)
    }
}

/// A pickup job, as API.md's `job`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Job {
    #[schema(value_type = String, format = Uuid)]
    pub id: JobId,
    #[schema(value_type = String, format = Uuid)]
    pub customer_id: UserId,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub driver_id: Option<DriverId>,
    pub status: JobStatus,
    pub address: String,
    pub lat: f64,
    pub lng: f64,
    /// `Miami-Dade`, `Broward` or `Palm Beach`.
    pub county: Option<String>,
    pub description: String,
    pub load_size: LoadSize,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub price_cents: i64,
    pub service_fee_cents: i64,
    pub total_cents: i64,
    pub driver_payout_cents: i64,
    pub photos: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Job {
    pub fn position(&self) -> Option<LatLng> {
        LatLng::new(self.lat, self.lng).ok()
    }

    /// Who may see the job: its customer, its driver (a driver's id is their user id),
    /// dispatchers. Everyone else is told it does not exist.
    pub fn visible_to(&self, user: UserId, dispatcher: bool) -> bool {
        dispatcher || self.customer_id == user || self.driver_id == Some(user.as_driver())
    }
}

/// One position report of a driver.
#[derive(Debug, Clone)]
pub struct DriverFix {
    pub at: LatLng,
    pub heading_deg: Option<f64>,
    pub speed_mps: Option<f64>,
    pub accuracy_m: Option<f64>,
    /// The driver's own timestamp (Unix ms), or the server's when the app sent none.
    pub ts_ms: i64,
    /// When the engine received it (engine clock).
    pub received_at: DateTime<Utc>,
    /// When the engine received it (monotonic), for latency measurements.
    pub received: Instant,
}

/// A driver as the dispatch map and the live layer show it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MapDriver {
    #[schema(value_type = String, format = Uuid)]
    pub driver_id: DriverId,
    pub lat: f64,
    pub lng: f64,
    pub heading_deg: Option<f64>,
    pub available: bool,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub job_id: Option<JobId>,
    /// When the engine received the position.
    pub updated_at: DateTime<Utc>,
    /// The driver's own timestamp of the position (Unix ms).
    pub ts: i64,
    /// County of the position; null outside the service area.
    #[schema(value_type = Option<String>)]
    pub county: Option<County>,
    /// False while the driver is outside Miami-Dade, Broward and Palm Beach.
    pub in_service_area: bool,
}

/// A driver near a point, nearest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct NearbyDriver {
    #[schema(value_type = String, format = Uuid)]
    pub driver_id: DriverId,
    pub lat: f64,
    pub lng: f64,
    pub distance_m: f64,
    pub available: bool,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub job_id: Option<JobId>,
    pub updated_at: DateTime<Utc>,
    /// Has a socket open now; `false` for a driver whose app went to the background lately
    /// (still offered jobs, by push, for `DRIVER_OFFLINE_GRACE_SECS`).
    pub connected: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;

    #[test]
    fn drivers_move_forward_one_step_at_a_time() {
        assert!(Assigned.may_move(EnRoute, Mover::Driver));
        assert!(EnRoute.may_move(Arrived, Mover::Driver));
        assert!(Arrived.may_move(InProgress, Mover::Driver));
        assert!(InProgress.may_move(Completed, Mover::Driver));
        assert!(!Assigned.may_move(Arrived, Mover::Driver));
        assert!(!Assigned.may_move(Cancelled, Mover::Driver));
        assert!(!EnRoute.may_move(Assigned, Mover::Driver));
    }

    #[test]
    fn cancelling_is_possible_only_before_the_work_starts() {
        for from in [
            PendingPayment,
            PaymentFailed,
            Dispatching,
            Assigned,
            EnRoute,
            Arrived,
        ] {
            assert!(from.may_move(Cancelled, Mover::Customer), "{from:?}");
            assert!(from.may_move(Cancelled, Mover::Dispatcher), "{from:?}");
        }
        for from in [InProgress, Completed, Cancelled] {
            assert!(!from.may_move(Cancelled, Mover::Dispatcher), "{from:?}");
        }
        assert!(!Dispatching.may_move(Completed, Mover::Customer));
    }

    #[test]
    fn a_paid_job_never_goes_back_to_waiting_for_payment() {
        assert!(PendingPayment.may_move(Dispatching, Mover::Engine));
        assert!(PaymentFailed.may_move(Dispatching, Mover::Engine));
        for from in [Dispatching, Assigned, EnRoute, Completed, Cancelled] {
            assert!(!from.may_move(PaymentFailed, Mover::Engine), "{from:?}");
            assert!(!from.may_move(PendingPayment, Mover::Engine), "{from:?}");
        }
    }

    #[test]
    fn final_states_are_final() {
        for to in JobStatus::ALL {
            assert!(!Completed.may_move(to, Mover::Dispatcher));
            assert!(!Cancelled.may_move(to, Mover::Dispatcher));
        }
    }

    #[test]
    fn names_round_trip() {
        for status in JobStatus::ALL {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
        }
        for size in LoadSize::ALL {
            assert_eq!(LoadSize::parse(size.as_str()), Some(size));
        }
    }
}
