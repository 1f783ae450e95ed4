//! Coordinates and bounding boxes (any floats), and status moves by any mover.
#![no_main]

#[allow(dead_code)] // each target uses one of the shared properties
#[path = "../../tests/decoders/properties.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|input: (f64, f64, [f64; 4], (u8, u8, u8))| {
    let (lat, lng, bbox, (from, to, mover)) = input;
    properties::coordinates(lat, lng, bbox);
    properties::status_move(from.into(), to.into(), mover.into());
});
