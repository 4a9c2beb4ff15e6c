//! What the proxy's status page makes of the bytes a client sends. See
//! `checks/proxy.rs`.
#![no_main]

#[path = "../checks/args_input.rs"]
mod args_input;

#[path = "../checks/proxy.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::status_request(data));
