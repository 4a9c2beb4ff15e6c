//! What `ReloadingAcceptor::accept` makes of a client's first bytes. See
//! `checks/acceptor.rs`.
#![no_main]

#[path = "../checks/acceptor.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::first_bytes(data));
