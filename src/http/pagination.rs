//! Keyset pagination. Lists are ordered newest first by `(created_at, id)`; a cursor is the
//! position of the last item of a page, opaque to clients, so pages stay stable while rows are
//! added.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::ApiError;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 100;

/// A list position: after this `(created_at, id)`.
pub type Position = (DateTime<Utc>, Uuid);

/// A list request's page size and start, checked: `(limit, after)`.
pub fn page(limit: Option<u32>, cursor: Option<&str>) -> Result<(u32, Option<Position>), ApiError> {
    Ok((self::limit(limit)?, cursor.map(decode).transpose()?))
}

/// The page size asked for, checked.
fn limit(requested: Option<u32>) -> Result<u32, ApiError> {
    let limit = requested.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )))
    }
}

fn encode((created_at, id): Position) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{id}", created_at.to_rfc3339()))
}

/// The position a cursor stands for; 400 for anything this API did not give out.
fn decode(cursor: &str) -> Result<Position, ApiError> {
    let invalid = || ApiError::BadRequest("cursor is not one this API gave out".into());
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let raw = String::from_utf8(raw).map_err(|_| invalid())?;
    let (time, id) = raw.split_once('|').ok_or_else(invalid)?;
    let time = DateTime::parse_from_rfc3339(time)
        .map_err(|_| invalid())?
        .with_timezone(&Utc);
    Ok((time, Uuid::parse_str(id).map_err(|_| invalid())?))
}

/// Lists fetch one row more than the page; this drops it and, when it existed, returns the
/// cursor of the next page.
pub fn next_cursor<T>(
    items: &mut Vec<T>,
    limit: u32,
    position: impl Fn(&T) -> Position,
) -> Option<String> {
    if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|last| encode(position(last)))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_strangers_are_refused() {
        let position = (Utc::now(), Uuid::new_v4());
        let mut items = vec![position, position, position];
        let cursor = next_cursor(&mut items, 2, |p| *p).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(decode(&cursor).unwrap(), position);
        assert!(decode("bm90LWEtY3Vyc29y").is_err());
        assert!(decode("%%%").is_err());
        assert!(next_cursor(&mut items, 2, |p| *p).is_none());
        assert!(limit(Some(0)).is_err() && limit(Some(101)).is_err());
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
    }
}
