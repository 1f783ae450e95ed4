//! Client WebSocket text frames: decoded into a valid command or refused with an error.
#![no_main]

#[allow(dead_code)] // each target uses one of the shared properties
#[path = "../../tests/decoders/properties.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|text: &str| properties::client_frame(text));
