//! Client → server messages. One pass of the JSON parser into a flat struct with borrowed
//! strings (a tagged enum or a `Value` costs 2-3x as much on the location path), then a check
//! per message type.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use umuve_actors::geo::{BBox, LatLng};
use umuve_actors::ids::{JobId, OfferId};

/// Largest number of points in one `locations` backlog.
pub const MAX_BACKLOG_POINTS: usize = 1000;

#[derive(Debug, Deserialize)]
pub struct RawPoint {
    pub lat: f64,
    pub lng: f64,
    #[serde(default)]
    pub heading_deg: Option<f64>,
    #[serde(default)]
    pub speed_mps: Option<f64>,
    #[serde(default)]
    pub accuracy_m: Option<f64>,
    #[serde(default)]
    pub ts: Option<i64>,
}

/// Every field any client message may carry.
#[derive(Debug, Deserialize)]
pub struct RawInbound<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub id: Option<&'a RawValue>,
    #[serde(default)]
    pub lat: Option<f64>,
    #[serde(default)]
    pub lng: Option<f64>,
    #[serde(default)]
    pub heading_deg: Option<f64>,
    #[serde(default)]
    pub speed_mps: Option<f64>,
    #[serde(default)]
    pub accuracy_m: Option<f64>,
    #[serde(default)]
    pub ts: Option<i64>,
    #[serde(default)]
    pub points: Option<Vec<RawPoint>>,
    #[serde(default)]
    pub available: Option<bool>,
    #[serde(default, borrow)]
    pub offer_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub job_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub bbox: Option<[f64; 4]>,
}

/// A position as received, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub at: LatLng,
    pub heading_deg: Option<f64>,
    pub speed_mps: Option<f64>,
    pub accuracy_m: Option<f64>,
    pub ts: Option<i64>,
}

/// A checked client message.
#[derive(Debug, PartialEq)]
pub enum Command {
    Location(Position),
    /// The newest point of a backlog.
    Locations(Position),
    Availability(bool),
    OfferAccept(OfferId),
    OfferDecline(OfferId),
    Subscribe(JobId),
    Unsubscribe(JobId),
    MapSubscribe(Option<BBox>),
    MapUnsubscribe,
}

/// Why a message was refused; becomes an `error` frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal {
        code: "bad_request",
        message: message.into(),
    }
}

fn finite_optional(name: &str, value: Option<f64>) -> Result<Option<f64>, Refusal> {
    match value {
        Some(v) if !v.is_finite() => Err(bad(format!("{name} must be a finite number"))),
        other => Ok(other),
    }
}

fn position(
    lat: Option<f64>,
    lng: Option<f64>,
    heading_deg: Option<f64>,
    speed_mps: Option<f64>,
    accuracy_m: Option<f64>,
    ts: Option<i64>,
) -> Result<Position, Refusal> {
    let (Some(lat), Some(lng)) = (lat, lng) else {
        return Err(bad("lat and lng are required"));
    };
    let at = LatLng::new(lat, lng).map_err(bad)?;
    let heading_deg = finite_optional("heading_deg", heading_deg)?;
    if heading_deg.is_some_and(|h| !(0.0..=360.0).contains(&h)) {
        return Err(bad("heading_deg must be between 0 and 360"));
    }
    let speed_mps = finite_optional("speed_mps", speed_mps)?;
    if speed_mps.is_some_and(|s| s < 0.0) {
        return Err(bad("speed_mps must not be negative"));
    }
    let accuracy_m = finite_optional("accuracy_m", accuracy_m)?;
    if accuracy_m.is_some_and(|a| a < 0.0) {
        return Err(bad("accuracy_m must not be negative"));
    }
    if ts.is_some_and(|t| t <= 0) {
        return Err(bad("ts must be Unix epoch milliseconds"));
    }
    Ok(Position {
        at,
        heading_deg,
        speed_mps,
        accuracy_m,
        ts,
    })
}

fn uuid_field<T: std::str::FromStr>(
    name: &str,
    value: Option<&Cow<'_, str>>,
) -> Result<T, Refusal> {
    value
        .ok_or_else(|| bad(format!("{name} is required")))?
        .parse()
        .map_err(|_| bad(format!("{name} must be a UUID")))
}

impl RawInbound<'_> {
    /// The message type, for metrics: known names only, so labels stay bounded.
    pub fn metric_name(&self) -> &'static str {
        const KNOWN: [&str; 9] = [
            "location",
            "locations",
            "availability",
            "offer.accept",
            "offer.decline",
            "subscribe",
            "unsubscribe",
            "map.subscribe",
            "map.unsubscribe",
        ];
        KNOWN
            .into_iter()
            .find(|known| *known == self.kind)
            .unwrap_or("unknown")
    }

    pub fn command(&self) -> Result<Command, Refusal> {
        let offer = || uuid_field("offer_id", self.offer_id.as_ref());
        let job = || uuid_field("job_id", self.job_id.as_ref());
        match self.kind.as_ref() {
            "location" => Ok(Command::Location(position(
                self.lat,
                self.lng,
                self.heading_deg,
                self.speed_mps,
                self.accuracy_m,
                self.ts,
            )?)),
            "locations" => {
                let points = self
                    .points
                    .as_ref()
                    .ok_or_else(|| bad("points is required"))?;
                if points.is_empty() || points.len() > MAX_BACKLOG_POINTS {
                    return Err(bad(format!(
                        "points must hold 1 to {MAX_BACKLOG_POINTS} positions"
                    )));
                }
                let mut newest: Option<Position> = None;
                for p in points {
                    let point = position(
                        Some(p.lat),
                        Some(p.lng),
                        p.heading_deg,
                        p.speed_mps,
                        p.accuracy_m,
                        p.ts,
                    )?;
                    if newest
                        .as_ref()
                        .is_none_or(|n| point.ts.unwrap_or(0) >= n.ts.unwrap_or(0))
                    {
                        newest = Some(point);
                    }
                }
                Ok(Command::Locations(newest.expect("at least one point")))
            }
            "availability" => self
                .available
                .map(Command::Availability)
                .ok_or_else(|| bad("available (true or false) is required")),
            "offer.accept" => offer().map(Command::OfferAccept),
            "offer.decline" => offer().map(Command::OfferDecline),
            "subscribe" => job().map(Command::Subscribe),
            "unsubscribe" => job().map(Command::Unsubscribe),
            "map.subscribe" => Ok(Command::MapSubscribe(
                self.bbox.map(BBox::parse).transpose().map_err(bad)?,
            )),
            "map.unsubscribe" => Ok(Command::MapUnsubscribe),
            other => Err(Refusal {
                code: "unknown_type",
                message: format!("unknown message type {other:?}"),
            }),
        }
    }
}

/// Parses one text frame. On failure, the `id` (when the frame had one) for the error reply.
pub fn parse(text: &str) -> Result<RawInbound<'_>, (Option<Box<RawValue>>, Refusal)> {
    serde_json::from_str::<RawInbound>(text).map_err(|error| {
        // The slow path: find the id in whatever JSON there is, to echo it.
        let id = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
            .ok()
            .and_then(|object| object.get("id").cloned())
            .and_then(|id| serde_json::value::to_raw_value(&id).ok());
        let message = if error.is_syntax() || error.is_eof() {
            format!("malformed JSON: {error}")
        } else {
            format!("invalid message: {error}")
        };
        (id, bad(message))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(text: &str) -> Result<Command, Refusal> {
        parse(text).map_err(|(_, r)| r)?.command()
    }

    #[test]
    fn a_location_parses() {
        let c = command(
            r#"{"type":"location","lat":25.77,"lng":-80.19,"heading_deg":90,"ts":1795000000000}"#,
        )
        .unwrap();
        let Command::Location(p) = c else {
            panic!("{c:?}")
        };
        assert_eq!(
            (p.at.lat(), p.at.lng(), p.heading_deg, p.ts),
            (25.77, -80.19, Some(90.0), Some(1795000000000))
        );
    }

    #[test]
    fn bad_locations_are_refused() {
        for text in [
            r#"{"type":"location","lat":91,"lng":0}"#,
            r#"{"type":"location","lat":0,"lng":-181}"#,
            r#"{"type":"location","lat":0}"#,
            r#"{"type":"location","lat":0,"lng":0,"heading_deg":400}"#,
            r#"{"type":"location","lat":0,"lng":0,"speed_mps":-1}"#,
            r#"{"type":"location","lat":0,"lng":0,"ts":-5}"#,
            r#"{"type":"location","lat":0,"lng":0,"ts":0}"#,
            r#"{"type":"location","lat":0,"lng":0,"heading_deg":-0.5}"#,
            r#"{"type":"location","lat":0,"lng":0,"accuracy_m":-1}"#,
        ] {
            assert_eq!(command(text).unwrap_err().code, "bad_request", "{text}");
        }
        // The edges of the ranges are fine.
        for text in [
            r#"{"type":"location","lat":90,"lng":180,"heading_deg":0}"#,
            r#"{"type":"location","lat":-90,"lng":-180,"heading_deg":360,"speed_mps":0,"accuracy_m":0}"#,
        ] {
            assert!(command(text).is_ok(), "{text}");
        }
        // Wrong types and NaN fail parsing.
        for text in [
            r#"{"type":"location","lat":"25.7","lng":-80.1}"#,
            r#"{"type":"location","lat":NaN,"lng":-80.1}"#,
            r#"{"type":"location","lat":1e400,"lng":-80.1}"#,
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn the_newest_point_of_a_backlog_wins() {
        let c = command(
            r#"{"type":"locations","points":[
                {"lat":25.1,"lng":-80.1,"ts":3},{"lat":25.3,"lng":-80.3,"ts":9},{"lat":25.2,"lng":-80.2,"ts":5}]}"#,
        )
        .unwrap();
        let Command::Locations(p) = c else {
            panic!("{c:?}")
        };
        assert_eq!(p.ts, Some(9));
        assert_eq!(p.at.lat(), 25.3);
    }

    #[test]
    fn backlogs_hold_1_to_1000_valid_points() {
        let point = r#"{"lat":25.1,"lng":-80.1,"ts":3}"#;
        let backlog = |n: usize| {
            format!(
                r#"{{"type":"locations","points":[{}]}}"#,
                vec![point; n].join(",")
            )
        };
        assert!(command(&backlog(1)).is_ok());
        assert!(command(&backlog(MAX_BACKLOG_POINTS)).is_ok());
        for text in [
            backlog(0),
            backlog(MAX_BACKLOG_POINTS + 1),
            r#"{"type":"locations"}"#.to_owned(),
            // One bad point refuses the whole backlog.
            r#"{"type":"locations","points":[{"lat":25.1,"lng":-80.1},{"lat":95,"lng":-80.1}]}"#
                .to_owned(),
        ] {
            let refusal = command(&text).unwrap_err();
            assert_eq!(
                refusal.code,
                "bad_request",
                "{}",
                &text[..text.len().min(80)]
            );
        }
    }

    #[test]
    fn required_fields_of_the_other_messages() {
        for (text, message) in [
            (
                r#"{"type":"availability"}"#,
                "available (true or false) is required",
            ),
            (r#"{"type":"availability","available":"yes"}"#, ""),
            (r#"{"type":"offer.accept"}"#, "offer_id is required"),
            (
                r#"{"type":"offer.decline","offer_id":"nope"}"#,
                "offer_id must be a UUID",
            ),
            (r#"{"type":"subscribe"}"#, "job_id is required"),
            (
                r#"{"type":"unsubscribe","job_id":"../etc"}"#,
                "job_id must be a UUID",
            ),
            (r#"{"type":"map.subscribe","bbox":[26,-80,25,-81]}"#, ""),
            (r#"{"type":"map.subscribe","bbox":[25,-80,26]}"#, ""),
            (r#"{"type":"map.subscribe","bbox":[25,-181,26,-80]}"#, ""),
        ] {
            let refusal = match parse(text) {
                Ok(raw) => raw.command().unwrap_err(),
                Err((_, refusal)) => refusal,
            };
            assert_eq!(refusal.code, "bad_request", "{text}");
            assert!(
                refusal.message.contains(message),
                "{text}: {}",
                refusal.message
            );
        }
        assert_eq!(
            command(r#"{"type":"map.unsubscribe"}"#).unwrap(),
            Command::MapUnsubscribe
        );
    }

    #[test]
    fn ids_are_echoed_even_from_invalid_messages() {
        let (id, refusal) = parse(r#"{"type":"subscribe","id":"abc","job_id":5}"#).unwrap_err();
        assert_eq!(id.unwrap().get(), r#""abc""#);
        assert_eq!(refusal.code, "bad_request");
        let raw = parse(r#"{"type":"availability","id":7,"available":true}"#).unwrap();
        assert_eq!(raw.id.unwrap().get(), "7");
        assert_eq!(raw.command().unwrap(), Command::Availability(true));
    }

    #[test]
    fn unknown_types_and_malformed_json() {
        assert_eq!(
            command(r#"{"type":"teleport"}"#).unwrap_err().code,
            "unknown_type"
        );
        let (id, refusal) = parse("{not json").unwrap_err();
        assert!(id.is_none());
        assert!(
            refusal.message.starts_with("malformed JSON"),
            "{}",
            refusal.message
        );
        assert!(parse(r#"{"lat":1}"#).is_err(), "type is required");
    }
}
