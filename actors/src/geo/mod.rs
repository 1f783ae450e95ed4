//! Geography: validated coordinates, great-circle distance, the tri-county service area.

mod service_area;

pub use service_area::{County, ServiceArea};

/// The service area as served by `GET /api/service-area`.
pub fn service_area_geojson() -> &'static str {
    service_area::SERVICE_AREA_GEOJSON
}

use geo::{Distance, Haversine, Point};
use serde::{Deserialize, Serialize};

/// A WGS84 position: finite, latitude in [-90, 90], longitude in [-180, 180].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatLng {
    lat: f64,
    lng: f64,
}

impl LatLng {
    pub fn new(lat: f64, lng: f64) -> Result<Self, String> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err("lat must be a number between -90 and 90".into());
        }
        if !lng.is_finite() || !(-180.0..=180.0).contains(&lng) {
            return Err("lng must be a number between -180 and 180".into());
        }
        Ok(Self { lat, lng })
    }

    pub fn lat(&self) -> f64 {
        self.lat
    }

    pub fn lng(&self) -> f64 {
        self.lng
    }

    /// Great-circle distance in metres.
    pub fn distance_m(&self, other: &LatLng) -> f64 {
        Haversine.distance(
            Point::new(self.lng, self.lat),
            Point::new(other.lng, other.lat),
        )
    }
}

/// A `[min_lng, min_lat, max_lng, max_lat]` box, as maps send it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    pub min_lng: f64,
    pub min_lat: f64,
    pub max_lng: f64,
    pub max_lat: f64,
}

impl BBox {
    pub fn parse(raw: [f64; 4]) -> Result<Self, String> {
        let [min_lng, min_lat, max_lng, max_lat] = raw;
        LatLng::new(min_lat, min_lng)?;
        LatLng::new(max_lat, max_lng)?;
        if min_lat > max_lat || min_lng > max_lng {
            return Err("bbox must be [min_lng, min_lat, max_lng, max_lat]".into());
        }
        Ok(Self {
            min_lng,
            min_lat,
            max_lng,
            max_lat,
        })
    }

    pub fn contains(&self, at: &LatLng) -> bool {
        (self.min_lat..=self.max_lat).contains(&at.lat)
            && (self.min_lng..=self.max_lng).contains(&at.lng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_are_checked() {
        assert!(LatLng::new(25.77, -80.19).is_ok());
        assert!(LatLng::new(91.0, 0.0).is_err());
        assert!(LatLng::new(0.0, -180.5).is_err());
        assert!(LatLng::new(f64::NAN, 0.0).is_err());
        assert!(LatLng::new(0.0, f64::INFINITY).is_err());
    }

    #[test]
    fn distance_between_miami_and_fort_lauderdale() {
        let miami = LatLng::new(25.7617, -80.1918).unwrap();
        let fort_lauderdale = LatLng::new(26.1224, -80.1373).unwrap();
        let d = miami.distance_m(&fort_lauderdale);
        assert!((40_000.0..41_000.0).contains(&d), "{d}");
    }

    #[test]
    fn boxes_are_checked_and_contain() {
        let bbox = BBox::parse([-80.5, 25.5, -80.0, 26.0]).unwrap();
        assert!(bbox.contains(&LatLng::new(25.77, -80.19).unwrap()));
        assert!(!bbox.contains(&LatLng::new(26.5, -80.19).unwrap()));
        assert!(BBox::parse([-80.0, 25.5, -80.5, 26.0]).is_err());
        assert!(BBox::parse([-80.5, 95.0, -80.0, 96.0]).is_err());
    }
}
