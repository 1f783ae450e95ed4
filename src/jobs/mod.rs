//! Jobs: pricing, creation, and the one function through which every status change goes
//! ([`change`]): it writes the job and its `job_events` row in one transaction, then tells the
//! realtime actors (rooms, map, the driver's sockets, the geo index).

mod pricing;

pub use pricing::{Pricing, Quote};

use chrono::{DateTime, Utc};
use umuve_actors::ids::{DriverId, JobId, OfferId, UserId};
use umuve_actors::realtime::dispatch_map::MapJobChanged;
use umuve_actors::realtime::frame::Frame;
use umuve_actors::realtime::geo_index::SetDriverJob;
use umuve_actors::realtime::hub::Hub;
use umuve_actors::realtime::matcher::{DispatchJob, JobReady, JobSettled, OfferDeclined};
use umuve_actors::realtime::model::{Job, JobStatus, Mover};
use umuve_actors::realtime::protocol::{OfferClosedReason, ServerMessage};
use umuve_actors::realtime::registry::PushToUser;
use umuve_actors::realtime::rooms::JobChanged;

use crate::auth::caller::Caller;
use crate::domain::Role;
use crate::http::ApiError;
use crate::payments::outbox_worker::WakeOutbox;
use crate::state::AppState;
use crate::storage::jobs::{self, AssignRefused, JobEvent, NewJob, Refund, Written};
use crate::storage::offers::{self, ClosedOffer};
use crate::storage::payments::{self, PaymentStatus};

/// A requested change of a job's status.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    /// To `cancelled` (its customer, dispatchers). After the driver set off, a paid job's
    /// refund is a dispatcher's choice (`refund_cents`); before, it is always in full.
    Cancel { refund_cents: Option<i64> },
    /// To this status (its driver, step by step; dispatchers, any legal move).
    Move(JobStatus),
    /// `dispatching` → `assigned` to this driver (dispatchers; the route checks the role).
    Assign { driver: DriverId },
}

/// In whose name `caller` moves a job; 403 for a role that may not make this kind of change.
fn mover_for(caller: &Caller, change: Change) -> Result<Mover, ApiError> {
    match (change, caller.role) {
        (_, Role::Admin | Role::Operator) => Ok(Mover::Dispatcher),
        (Change::Cancel { .. }, Role::Customer) => Ok(Mover::Customer),
        (Change::Cancel { .. }, _) => Err(ApiError::Forbidden("drivers cannot cancel jobs".into())),
        (_, Role::Driver) => Ok(Mover::Driver),
        (_, Role::Customer) => Err(ApiError::Forbidden(
            "customers cannot move jobs; to cancel, use /cancel".into(),
        )),
    }
}

fn illegal(from: JobStatus, to: JobStatus) -> ApiError {
    ApiError::Conflict(format!(
        "a job cannot go from {} to {}",
        from.as_str(),
        to.as_str()
    ))
}

/// Stores a new job (with its first event) and announces it.
pub async fn create(state: &AppState, new: NewJob, actor: UserId) -> Result<Job, ApiError> {
    let now = state.clock.now();
    let job = jobs::insert(&state.db, new, actor, now).await?;
    publish(state, None, &job, None, now).await;
    Ok(job)
}

/// Changes a job's status at `caller`'s request: the one way it happens. The caller must see
/// the job as it is now (404 otherwise) and their role must allow the change (403). The write
/// is conditional on the status and driver read here, so two racing changes cannot both apply
/// (the loser gets 409) and a job released and reassigned meanwhile is not moved by its old
/// driver.
pub async fn change(
    state: &AppState,
    id: JobId,
    change: Change,
    caller: &Caller,
) -> Result<Job, ApiError> {
    let now = state.clock.now();
    let user = UserId::from_uuid(caller.user_id);
    let not_found = || ApiError::NotFound("no such job".into());
    let visible = |job: &Job| job.visible_to(user, caller.role.is_dispatcher());
    let mut before = jobs::by_id(&state.db, id)
        .await?
        .filter(visible)
        .ok_or_else(not_found)?;
    let actor = Some(user);
    let (after, closed_offer) = match change {
        Change::Cancel { .. } | Change::Move(_) => {
            let mover = mover_for(caller, change)?;
            let (to, refund_cents) = match change {
                Change::Move(to) => (to, None),
                Change::Cancel { refund_cents } => (JobStatus::Cancelled, refund_cents),
                Change::Assign { .. } => unreachable!("handled below"),
            };
            if refund_cents.is_some() && mover != Mover::Dispatcher {
                return Err(ApiError::Forbidden(
                    "only dispatchers choose a refund".into(),
                ));
            }
            if to == JobStatus::Assigned {
                return Err(ApiError::BadRequest(
                    "to assign a driver, use /api/jobs/{id}/assign".into(),
                ));
            }
            let mut attempts = 0;
            loop {
                if !before.status.may_move(to, mover) {
                    return Err(illegal(before.status, to));
                }
                let refund = if to == JobStatus::Cancelled {
                    refund_for(state, &before, mover, refund_cents).await?
                } else {
                    Refund::Full
                };
                let event = JobEvent {
                    from: Some(before.status),
                    to,
                    actor,
                    reason: None,
                };
                let written = jobs::move_status(
                    &state.db,
                    id,
                    before.status,
                    before.driver_id,
                    event,
                    refund,
                    now,
                )
                .await?;
                match written {
                    Written::Done(job, closed) => break (job, closed),
                    // Changed meanwhile (a driver accepted the offer as the customer cancelled):
                    // the move is judged again against the job as it is now.
                    Written::Conflict(current) if attempts < 3 && current != before => {
                        attempts += 1;
                        before = Some(current).filter(visible).ok_or_else(not_found)?;
                    }
                    Written::Conflict(current) => return Err(illegal(current.status, to)),
                    Written::NotFound => return Err(not_found()),
                }
            }
        }
        Change::Assign { driver } => match jobs::assign(&state.db, id, driver, actor, now).await? {
            Ok(done) => done,
            Err(AssignRefused::NoSuchDriver) => {
                return Err(ApiError::NotFound("no such driver".into()));
            }
            Err(AssignRefused::DriverNotApproved) => {
                return Err(ApiError::Conflict("the driver is not approved yet".into()));
            }
            Err(AssignRefused::DriverBusy) => {
                return Err(ApiError::Conflict(
                    "the driver is on another active job".into(),
                ));
            }
            Err(AssignRefused::JobNotDispatching(status)) => {
                return Err(ApiError::Conflict(format!(
                    "only a dispatching job can be assigned; this one is {}",
                    status.as_str()
                )));
            }
            Err(AssignRefused::NoSuchJob) => return Err(not_found()),
        },
    };
    publish(state, Some(&before), &after, closed_offer, now).await;
    Ok(after)
}

/// What a cancellation of `job` refunds, if it was paid: everything before the driver set
/// off; after that, what a dispatcher chose (a customer cannot cancel then: the money is for
/// a dispatcher to decide).
async fn refund_for(
    state: &AppState,
    job: &Job,
    mover: Mover,
    refund_cents: Option<i64>,
) -> Result<Refund, ApiError> {
    let set_off = matches!(job.status, JobStatus::EnRoute | JobStatus::Arrived);
    let paid = payments::by_job(&state.db, job.id)
        .await?
        .filter(|p| p.status == PaymentStatus::Succeeded);
    let Some(paid) = paid else {
        if refund_cents.is_some() {
            return Err(ApiError::BadRequest(
                "refund_cents: this job has no payment to refund".into(),
            ));
        }
        return Ok(Refund::Full);
    };
    let left = paid.amount_cents - paid.refunded_cents;
    match (set_off, refund_cents) {
        (_, Some(cents)) if !(0..=left).contains(&cents) => Err(ApiError::BadRequest(format!(
            "refund_cents must be between 0 and {left}"
        ))),
        (false, None) => Ok(Refund::Full),
        (false, Some(cents)) if cents == left => Ok(Refund::Full),
        (false, Some(_)) => Err(ApiError::BadRequest(format!(
            "before the driver sets off the refund is always in full ({left} cents)"
        ))),
        (true, Some(cents)) => Ok(Refund::Cents(cents)),
        (true, None) if mover == Mover::Dispatcher => Err(ApiError::BadRequest(
            "refund_cents is required: the driver has set off, choose how much to refund".into(),
        )),
        (true, None) => Err(ApiError::Conflict(
            "your driver is on the way; please contact us to cancel".into(),
        )),
    }
}

/// Why an offer answer was refused, as an API error.
fn refused(refused: offers::Refused) -> ApiError {
    match refused {
        offers::Refused::NotFound => ApiError::NotFound("no such offer".into()),
        offers::Refused::Closed(message) => ApiError::Conflict(message),
        offers::Refused::DriverBusy => {
            ApiError::Conflict("you are on another active job; finish it first".into())
        }
    }
}

/// A driver accepts an offer: the job is theirs if the offer is still open and unexpired and
/// the job still `dispatching` (one transaction decides; the loser gets 409).
pub async fn accept_offer(
    state: &AppState,
    offer: OfferId,
    driver: DriverId,
) -> Result<Job, ApiError> {
    let now = state.clock.now();
    let (before, after) = offers::accept(&state.db, offer, driver, now)
        .await?
        .map_err(refused)?;
    publish(state, Some(&before), &after, None, now).await;
    Ok(after)
}

/// A driver declines an offer: the matcher moves on to the next driver.
pub async fn decline_offer(
    state: &AppState,
    offer: OfferId,
    driver: DriverId,
) -> Result<(), ApiError> {
    let now = state.clock.now();
    let job = offers::decline(&state.db, offer, driver, now)
        .await?
        .map_err(refused)?;
    state
        .hub
        .matcher
        .do_send(OfferDeclined { offer, job, driver });
    tell_offer_closed(
        &state.hub,
        ClosedOffer {
            offer,
            driver,
            reason: OfferClosedReason::Declined,
        },
    );
    Ok(())
}

fn tell_offer_closed(hub: &Hub, closed: ClosedOffer) {
    hub.sessions.do_send(PushToUser::message(
        closed.driver.into(),
        "offer.closed",
        &ServerMessage::OfferClosed {
            offer_id: closed.offer,
            reason: closed.reason,
        },
    ));
}

/// Tells everyone who follows the job, after the change is stored: rooms, the map, the drivers
/// involved, the matcher, and the outbox worker when money may have to move.
pub(crate) async fn publish(
    state: &AppState,
    before: Option<&Job>,
    job: &Job,
    closed_offer: Option<ClosedOffer>,
    at: DateTime<Utc>,
) {
    let hub = &state.hub;
    if job.status.is_final() {
        state.outbox.do_send(WakeOutbox);
    }
    let was_dispatching = before.map(|b| b.status) == Some(JobStatus::Dispatching);
    let dispatching = job.status == JobStatus::Dispatching;
    if dispatching && !was_dispatching {
        let ready = match before {
            // New: nothing to exclude yet.
            None => Some(DispatchJob {
                job: job.clone(),
                excluded: Vec::new(),
                open_offer: None,
            }),
            // Back from a driver: who had it or declined it is read back.
            Some(_) => match offers::dispatching(&state.db, Some(&[job.id])).await {
                Ok(mut found) => found.pop(),
                Err(error) => {
                    // The matcher's periodic reread picks it up.
                    tracing::warn!(%error, job = %job.id, "could not read a released job's offers");
                    None
                }
            },
        };
        if let Some(ready) = ready {
            hub.matcher.do_send(JobReady(ready));
        }
    } else if was_dispatching && !dispatching {
        hub.matcher.do_send(JobSettled(job.id));
    }
    if let Some(closed) = closed_offer {
        tell_offer_closed(hub, closed);
    }
    hub.rooms.do_send(JobChanged {
        job: job.clone(),
        at,
    });
    hub.map.do_send(MapJobChanged {
        job: job.clone(),
        became_dispatching: before.map(|b| b.status) != Some(JobStatus::Dispatching)
            && job.status == JobStatus::Dispatching,
    });
    // The change may have written notifications; the notifier sends them off this path.
    state.notifications_written.notify_one();
    let status_changed = before.is_none_or(|b| b.status != job.status);
    let status_frame = || {
        Frame::json(&ServerMessage::JobStatus {
            job_id: job.id,
            status: job.status,
            at,
        })
    };
    let previous_driver = before.and_then(|b| b.driver_id);
    if let Some(old) = previous_driver.filter(|old| Some(*old) != job.driver_id) {
        // Released (back to dispatching): off the job, told so.
        hub.geo.do_send(SetDriverJob {
            driver: old,
            job: None,
        });
        hub.sessions.do_send(PushToUser {
            user: old.into(),
            name: "job.status",
            frame: status_frame(),
        });
    }
    let Some(driver) = job.driver_id else { return };
    if previous_driver != Some(driver) {
        hub.geo.do_send(SetDriverJob {
            driver,
            job: job.status.has_active_driver().then_some(job.id),
        });
        hub.sessions.do_send(PushToUser::message(
            driver.into(),
            "job.assigned",
            &ServerMessage::JobAssigned { job },
        ));
    } else if !job.status.has_active_driver() {
        hub.geo.do_send(SetDriverJob { driver, job: None });
    }
    if status_changed {
        hub.sessions.do_send(PushToUser {
            user: driver.into(),
            name: "job.status",
            frame: status_frame(),
        });
    }
}
