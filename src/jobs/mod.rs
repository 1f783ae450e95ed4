//! Jobs: pricing, creation, and the one function through which every status change goes
//! ([`change`]): it writes the job and its `job_events` row in one transaction, then tells the
//! realtime actors (rooms, map, the driver's sockets, the geo index).

mod pricing;

pub use pricing::{Pricing, Quote};

use chrono::{DateTime, Utc};
use umuve_actors::ids::{DriverId, JobId, UserId};
use umuve_actors::realtime::dispatch_map::MapJobChanged;
use umuve_actors::realtime::frame::Frame;
use umuve_actors::realtime::geo_index::SetDriverJob;
use umuve_actors::realtime::hub::Hub;
use umuve_actors::realtime::model::{Job, JobStatus, Mover};
use umuve_actors::realtime::protocol::ServerMessage;
use umuve_actors::realtime::registry::PushToUser;
use umuve_actors::realtime::rooms::JobChanged;

use crate::auth::caller::Caller;
use crate::domain::Role;
use crate::http::ApiError;
use crate::state::AppState;
use crate::storage::jobs::{self, AssignRefused, JobEvent, NewJob, Written};

/// A requested change of a job's status.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    /// To `cancelled` (its customer, dispatchers).
    Cancel,
    /// To this status (its driver, step by step; dispatchers, any legal move).
    Move(JobStatus),
    /// `dispatching` → `assigned` to this driver (dispatchers; the route checks the role).
    Assign { driver: DriverId },
}

/// In whose name `caller` moves a job; 403 for a role that may not make this kind of change.
fn mover_for(caller: &Caller, change: Change) -> Result<Mover, ApiError> {
    match (change, caller.role) {
        (_, Role::Admin | Role::Operator) => Ok(Mover::Dispatcher),
        (Change::Cancel, Role::Customer) => Ok(Mover::Customer),
        (Change::Cancel, _) => Err(ApiError::Forbidden("drivers cannot cancel jobs".into())),
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
    publish(&state.hub, None, &job, now);
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
    let before = jobs::by_id(&state.db, id)
        .await?
        .filter(|job| job.visible_to(user, caller.role.is_dispatcher()))
        .ok_or_else(not_found)?;
    let actor = Some(user);
    let after = match change {
        Change::Cancel | Change::Move(_) => {
            let mover = mover_for(caller, change)?;
            let to = match change {
                Change::Move(to) => to,
                _ => JobStatus::Cancelled,
            };
            if to == JobStatus::Assigned {
                return Err(ApiError::BadRequest(
                    "to assign a driver, use /api/jobs/{id}/assign".into(),
                ));
            }
            if !before.status.may_move(to, mover) {
                return Err(illegal(before.status, to));
            }
            let event = JobEvent {
                from: Some(before.status),
                to,
                actor,
                reason: None,
            };
            match jobs::move_status(&state.db, id, before.status, before.driver_id, event, now)
                .await?
            {
                Written::Done(job) => job,
                Written::Conflict(current) => return Err(illegal(current.status, to)),
                Written::NotFound => return Err(not_found()),
            }
        }
        Change::Assign { driver } => match jobs::assign(&state.db, id, driver, actor, now).await? {
            Ok(job) => job,
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
    publish(&state.hub, Some(&before), &after, now);
    Ok(after)
}

/// Tells everyone who follows the job, after the change is stored.
fn publish(hub: &Hub, before: Option<&Job>, job: &Job, at: DateTime<Utc>) {
    hub.rooms.do_send(JobChanged {
        job: job.clone(),
        at,
    });
    hub.map.do_send(MapJobChanged {
        job: job.clone(),
        became_dispatching: before.map(|b| b.status) != Some(JobStatus::Dispatching)
            && job.status == JobStatus::Dispatching,
    });
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
        hub.sessions.do_send(PushToUser {
            user: driver.into(),
            name: "job.assigned",
            frame: Frame::json(&ServerMessage::JobAssigned { job }),
        });
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
