//! The `driver_positions` table: each driver's last checkpointed position.

use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use umuve_actors::geo::LatLng;
use umuve_actors::ids::DriverId;
use umuve_actors::realtime::geo_index::{PositionStore, RestoredDriver, StoredPosition};
use umuve_actors::realtime::model::JobStatus;
use uuid::Uuid;

use super::jobs::statuses_where;
use super::{Db, on_pool};

/// Rows per statement when checkpointing (well under both databases' parameter limits).
const ROWS_PER_STATEMENT: usize = 500;

/// Writes the geo index's checkpoints.
pub struct DbPositionStore {
    pub db: Db,
}

#[async_trait]
impl PositionStore for DbPositionStore {
    async fn save_positions(&self, positions: Vec<StoredPosition>) -> Result<(), String> {
        save(&self.db, &positions).await.map_err(|e| e.to_string())
    }
}

/// Upserts positions; a driver deleted meanwhile is skipped by the database's foreign key only
/// for its own chunk, so chunks are small.
pub async fn save(db: &Db, positions: &[StoredPosition]) -> Result<(), sqlx::Error> {
    for chunk in positions.chunks(ROWS_PER_STATEMENT) {
        on_pool!(db, pool => {
            let mut query = QueryBuilder::new(
                "INSERT INTO driver_positions (driver_id, lat, lng, heading_deg, ts_ms, recorded_at) ",
            );
            query.push_values(chunk, |mut row, p| {
                row.push_bind(p.driver.as_uuid())
                    .push_bind(p.at.lat())
                    .push_bind(p.at.lng())
                    .push_bind(p.heading_deg)
                    .push_bind(p.ts_ms)
                    .push_bind(p.recorded_at);
            });
            query.push(
                " ON CONFLICT (driver_id) DO UPDATE SET lat = excluded.lat, lng = excluded.lng, \
                 heading_deg = excluded.heading_deg, ts_ms = excluded.ts_ms, recorded_at = excluded.recorded_at",
            );
            query.build().execute(pool).await.map(|_| ())
        })?;
    }
    Ok(())
}

type DriverRow = (
    Uuid,
    bool,
    Option<Uuid>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<i64>,
    Option<DateTime<Utc>>,
);

/// Every driver with what the geo index needs at start-up: approval, active job, last position.
pub async fn restore(db: &Db) -> Result<Vec<RestoredDriver>, sqlx::Error> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT u.user_id, u.approved, j.job_id, p.lat, p.lng, p.heading_deg, p.ts_ms, p.recorded_at \
             FROM users u \
             LEFT JOIN driver_positions p ON p.driver_id = u.user_id \
             LEFT JOIN jobs j ON j.driver_id = u.user_id AND j.status IN {} \
             WHERE u.role = 'driver'",
            statuses_where(JobStatus::has_active_driver)
        )
    });
    let rows: Vec<DriverRow> =
        on_pool!(db, pool => sqlx::query_as(SQL.as_str()).fetch_all(pool).await)?;
    Ok(rows
        .into_iter()
        .map(
            |(driver, approved, job, lat, lng, heading_deg, ts_ms, recorded_at)| {
                let driver = DriverId::from_uuid(driver);
                let position = match (lat, lng, ts_ms, recorded_at) {
                    (Some(lat), Some(lng), Some(ts_ms), Some(recorded_at)) => {
                        LatLng::new(lat, lng).ok().map(|at| StoredPosition {
                            driver,
                            at,
                            heading_deg,
                            ts_ms,
                            recorded_at,
                        })
                    }
                    _ => None,
                };
                RestoredDriver {
                    driver,
                    approved,
                    job: job.map(umuve_actors::ids::JobId::from_uuid),
                    position,
                }
            },
        )
        .collect())
}
