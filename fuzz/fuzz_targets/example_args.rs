//! The example servers' command line (`Args::parse` in
//! `examples/common/mod.rs`). See `checks/example_args.rs`.
#![no_main]

#[allow(dead_code)]
#[path = "../../examples/common/mod.rs"]
mod common;

#[path = "../checks/args_input.rs"]
mod args_input;

#[path = "../checks/example_args.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::example_args(data));
