//! Phone numbers, email addresses, names, passwords, statuses, load sizes, list cursors and
//! upload file names: parsed into valid values or refused.
#![no_main]

#[allow(dead_code)] // each target uses one of the shared properties
#[path = "../../tests/decoders/properties.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|text: &str| properties::domain_text(text));
