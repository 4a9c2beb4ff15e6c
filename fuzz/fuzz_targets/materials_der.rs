//! Certificate and key DER, written out as PEM and built from memory, so
//! mutations reach the X.509 and key parsers. See `checks/build.rs`.
#![no_main]

#[path = "../checks/build.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::materials_der(data));
