//! The tri-county service area (Miami-Dade, Broward, Palm Beach), from the Census Bureau's
//! 2018 1:500,000 county boundaries (public domain; provenance in `data/README.md`), embedded in
//! the binary and prepared for fast repeated point-in-polygon tests.

use std::fmt;

use geo::indexed::IntervalTreeMultiPolygon;
use geo::{Contains, Coord, LineString, MultiPolygon, Polygon, Rect};
use serde::{Deserialize, Serialize};

use super::LatLng;

/// The GeoJSON FeatureCollection served as `GET /api/service-area`.
pub const SERVICE_AREA_GEOJSON: &str = include_str!("../../data/south-florida-tricounty.geojson");

/// A county of the service area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum County {
    #[serde(rename = "Miami-Dade")]
    MiamiDade,
    #[serde(rename = "Broward")]
    Broward,
    #[serde(rename = "Palm Beach")]
    PalmBeach,
}

impl County {
    pub fn name(self) -> &'static str {
        match self {
            County::MiamiDade => "Miami-Dade",
            County::Broward => "Broward",
            County::PalmBeach => "Palm Beach",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [County::MiamiDade, County::Broward, County::PalmBeach]
            .into_iter()
            .find(|c| c.name() == name)
    }
}

impl fmt::Display for County {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

struct PreparedCounty {
    county: County,
    bounds: Rect<f64>,
    shape: IntervalTreeMultiPolygon<f64>,
}

/// Answers "which county, if any" for a point; cheap enough for every driver fix.
pub struct ServiceArea {
    counties: Vec<PreparedCounty>,
    bounds: Rect<f64>,
}

#[derive(Deserialize)]
struct FeatureCollection {
    features: Vec<Feature>,
}

#[derive(Deserialize)]
struct Feature {
    properties: Properties,
    geometry: Geometry,
}

#[derive(Deserialize)]
struct Properties {
    name: String,
}

#[derive(Deserialize)]
#[serde(tag = "type", content = "coordinates")]
enum Geometry {
    Polygon(Vec<Vec<[f64; 2]>>),
    MultiPolygon(Vec<Vec<Vec<[f64; 2]>>>),
}

fn polygon(rings: Vec<Vec<[f64; 2]>>) -> Polygon<f64> {
    let mut rings = rings.into_iter().map(|ring| {
        LineString::from(
            ring.into_iter()
                .map(|[x, y]| Coord { x, y })
                .collect::<Vec<_>>(),
        )
    });
    let exterior = rings.next().unwrap_or_else(|| LineString::new(vec![]));
    Polygon::new(exterior, rings.collect())
}

fn bounds_of(shape: &MultiPolygon<f64>) -> Rect<f64> {
    use geo::BoundingRect;
    shape.bounding_rect().expect("a county has points")
}

impl ServiceArea {
    /// The embedded tri-county area.
    pub fn south_florida() -> Self {
        Self::from_geojson(SERVICE_AREA_GEOJSON)
            .expect("the embedded service area is valid GeoJSON")
    }

    /// Builds an area from a FeatureCollection whose features carry a county `name`.
    pub fn from_geojson(geojson: &str) -> Result<Self, String> {
        let collection: FeatureCollection =
            serde_json::from_str(geojson).map_err(|e| e.to_string())?;
        let mut counties = Vec::new();
        for feature in collection.features {
            let county = County::from_name(&feature.properties.name)
                .ok_or_else(|| format!("unknown county {:?}", feature.properties.name))?;
            let shape = match feature.geometry {
                Geometry::Polygon(rings) => MultiPolygon::new(vec![polygon(rings)]),
                Geometry::MultiPolygon(polygons) => {
                    MultiPolygon::new(polygons.into_iter().map(polygon).collect())
                }
            };
            counties.push(PreparedCounty {
                county,
                bounds: bounds_of(&shape),
                shape: IntervalTreeMultiPolygon::new(&shape),
            });
        }
        let first = counties.first().ok_or("no counties")?.bounds;
        let bounds = counties.iter().fold(first, |acc, c| {
            Rect::new(
                Coord {
                    x: acc.min().x.min(c.bounds.min().x),
                    y: acc.min().y.min(c.bounds.min().y),
                },
                Coord {
                    x: acc.max().x.max(c.bounds.max().x),
                    y: acc.max().y.max(c.bounds.max().y),
                },
            )
        });
        Ok(Self { counties, bounds })
    }

    /// The county containing `at`, or `None` outside the area.
    pub fn county_at(&self, at: &LatLng) -> Option<County> {
        let point = Coord {
            x: at.lng(),
            y: at.lat(),
        };
        if !self.bounds.contains(&point) {
            return None;
        }
        self.counties
            .iter()
            .find(|c| c.bounds.contains(&point) && c.shape.contains(&point))
            .map(|c| c.county)
    }

    /// `[min_lng, min_lat, max_lng, max_lat]` of the whole area.
    pub fn bounds(&self) -> [f64; 4] {
        [
            self.bounds.min().x,
            self.bounds.min().y,
            self.bounds.max().x,
            self.bounds.max().y,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lat: f64, lng: f64) -> LatLng {
        LatLng::new(lat, lng).unwrap()
    }

    #[test]
    fn counties_are_found() {
        let area = ServiceArea::south_florida();
        assert_eq!(
            area.county_at(&at(25.7747, -80.1963)),
            Some(County::MiamiDade)
        );
        assert_eq!(
            area.county_at(&at(26.1224, -80.1373)),
            Some(County::Broward)
        );
        assert_eq!(
            area.county_at(&at(26.7153, -80.0534)),
            Some(County::PalmBeach)
        );
        // Orlando, and the ocean off Miami Beach.
        assert_eq!(area.county_at(&at(28.5383, -81.3792)), None);
        assert_eq!(area.county_at(&at(25.79, -80.10)), None);
    }

    #[test]
    fn the_area_spans_the_three_counties() {
        let [w, s, e, n] = ServiceArea::south_florida().bounds();
        assert!((w + 80.886).abs() < 0.01 && (s - 25.138).abs() < 0.01);
        assert!((e + 80.031).abs() < 0.01 && (n - 26.971).abs() < 0.01);
    }
}
