//! Uploaded files: typed by their bytes, then refused or cleaned of every metadata block.
#![no_main]

#[allow(dead_code)] // each target uses one of the shared properties
#[path = "../../tests/decoders/properties.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    properties::uploaded_file(bytes);
});
