//! A client CA directory whose entries (files, hidden files, symlinks,
//! subdirectories) come from the input, built from disk. See `checks/build.rs`.
#![no_main]

#[path = "../checks/build.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::ca_dir(data));
