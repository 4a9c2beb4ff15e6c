//! `tls-reload-proxy`: a TLS-terminating TCP proxy whose certificate, key and
//! client CAs follow the files on disk, so renewing them (cert-manager,
//! certbot, Vault agent) never needs a restart.
//!
//! Run `tls-reload-proxy --help` for the flags. The modules:
//! [`args`] the command line, [`app`] start-up, signals and the drain,
//! [`proxy`] the accept loop and each connection, [`copy`] the two-way copy
//! with half-close, [`status`] the HTTP status page and [`metrics`] what it
//! shows.

mod app;
mod args;
mod copy;
mod metrics;
mod proxy;
mod status;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
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
