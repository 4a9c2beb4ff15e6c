//! `tls-reload-proxy`: a TLS-terminating TCP proxy whose certificate, key and
//! client CAs follow the files on disk, so renewing them (cert-manager,
//! certbot, Vault agent) never needs a restart.
//!
//! The product is the binary; run `tls-reload-proxy --help` for its flags.
//! This library holds its code so that fuzzers can reach the parsers: the
//! binary's `main` only calls [`run`], and the one other public item is a
//! hidden `fuzzing` module. Neither is a stable API.
//!
//! The private modules: `args` the command line, `app` start-up, the
//! workers, signals and the drain, `proxy` the accept loop, the hand-off
//! to the workers and each connection, `access` the allow lists,
//! `systemd` notifications and socket activation, `copy` the
//! two-way copy with half-close, `busy` its busy-polling of a lone
//! connection, `status` the HTTP status page and
//! `metrics` what it shows.
#![forbid(unsafe_code)]

mod access;
mod app;
mod args;
mod busy;
mod copy;
mod metrics;
mod proxy;
mod status;
mod systemd;

use std::process::ExitCode;

/// Runs `tls-reload-proxy` with these arguments (those after the program
/// name) and returns its exit status: 0 after SIGTERM or SIGINT, 1 when the
/// files or addresses cannot be used at start-up, 2 on bad arguments (the
/// message and the usage on stderr), 0 after `--help` (the help on
/// stdout).
pub fn run<I>(args: I) -> ExitCode
where
    I: IntoIterator,
    I::Item: Into<std::ffi::OsString> + Clone,
{
    let args = match args::parse(args) {
        Ok(args::Command::Run(args)) => args,
        Ok(args::Command::Help) => {
            println!("{}", args::HELP);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    app::init_logging();
    app::run(*args)
}

/// Entry points for fuzzers (`cargo fuzz`): the status page's request
/// parsing and the command line, on plain owned values. Hidden from the
/// docs and not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::status::{route_received, Route};

    /// What the status page makes of the bytes a client sent.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct StatusRequest {
        /// Once the request head is complete (up to its blank line) or
        /// 8 KiB came without one: `Status`, `Metrics`, `BadRequest`,
        /// `NotFound`, `MethodNotAllowed` or `TooLarge`. Before that,
        /// `Incomplete`: the page would wait for more bytes, then answer
        /// 408 after its head timeout.
        pub route: String,
        /// The status code of the answer: 200, 400, 404, 405, 431, or 408
        /// when `Incomplete`.
        pub code: u16,
    }

    /// Parses `bytes` as the status page parses a request that arrives in
    /// reads of up to 1 KiB (what follows the head is ignored, as the page
    /// does). Never panics.
    pub fn parse_status_request(bytes: &[u8]) -> StatusRequest {
        let route = route_received(bytes);
        StatusRequest {
            route: route.map_or_else(|| "Incomplete".to_owned(), |route| format!("{route:?}")),
            code: route.unwrap_or(Route::Timeout).code(),
        }
    }

    /// Parses command-line arguments (those after the program name) as
    /// `tls-reload-proxy` does, without acting on them: `Ok` with the
    /// `Debug` text of what would run (`Help`, or `Run(Args { .. })` with
    /// every setting), `Err` with the message it would print before
    /// exiting with status 2. Never panics. Like the binary, it resolves a
    /// host name given to `--listen` or `--status` (a DNS lookup: slow and
    /// not repeatable under a fuzzer, which may want to skip such inputs);
    /// it opens no file and binds nothing.
    pub fn parse_args(args: Vec<String>) -> Result<String, String> {
        crate::args::parse(args).map(|command| format!("{command:?}"))
    }
}
