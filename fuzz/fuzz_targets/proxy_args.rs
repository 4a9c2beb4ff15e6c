//! The proxy's command line, one argument per NUL-separated part. See
//! `checks/proxy.rs`.
#![no_main]

#[path = "../checks/args_input.rs"]
mod args_input;

#[path = "../checks/proxy.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::proxy_args(data));
