//! Certificate chain, key and CA bundles from memory: built or refused with
//! an error that holds no input byte, never a panic. See `checks/build.rs`.
#![no_main]

#[path = "../checks/build.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::materials(data));
