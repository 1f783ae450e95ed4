//! Uploaded files: typed by their bytes, then refused or cleaned of metadata.
#![no_main]

#[path = "../../tests/decoders/properties.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| properties::uploaded_file(bytes));
