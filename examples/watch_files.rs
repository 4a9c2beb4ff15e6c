//! Run with: cargo run --example watch_files -- [--interval-ms N] [--detector hash|metadata|combined] [--events on|off] PATH...
//! Watches files and directories on smol with `tls_reload::detect` alone, printing `changed: PATH[, PATH...]` per change and `error: MESSAGE` per error.
//!
//! Options: `--interval-ms N` (default 1000), `--detector` (default
//! `combined`) and `--events on|off` (default `on`: file-system events wake
//! a check at once, the interval stays the backstop; `off` polls only). Each line goes to stdout and is flushed at once, so another
//! program can read them as they come. Bad arguments exit with status 2 and a
//! usage message on stderr.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use tls_reload::detect::{poll, watch, Composite, Strategy};

const USAGE: &str =
    "usage: watch_files [--interval-ms N] [--detector hash|metadata|combined] [--events on|off] PATH...";

#[derive(Debug)]
struct Args {
    interval: Duration,
    strategy: Strategy,
    events: bool,
    paths: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let args = match parse(std::env::args_os().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("watch_files: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    smol::block_on(async {
        let detector = Composite::from_paths(args.strategy, &args.paths);
        let mut events = if args.events {
            watch(detector, args.interval)
        } else {
            poll(detector, args.interval)
        };
        while let Some(event) = events.next().await {
            let line = match event {
                Ok(change) => format!("changed: {}", join(change.paths())),
                Err(error) => format!("error: {error}"),
            };
            let mut stdout = std::io::stdout().lock();
            if writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                // Whoever read the lines has gone (a closed pipe): so do we.
                break;
            }
        }
        ExitCode::SUCCESS
    })
}

/// The flags as clap reads them (a repeated flag keeps its last value).
#[derive(Debug, clap::Parser)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true
)]
struct Cli {
    #[arg(value_name = "N", long = "interval-ms", default_value = "1000", value_parser = positive_millis)]
    interval: Duration,
    #[arg(value_name = "hash|metadata|combined", long = "detector", default_value = "combined", value_parser = strategy)]
    strategy: Strategy,
    #[arg(value_name = "on|off", long, default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    events: bool,
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    #[arg(short, long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

/// The arguments, or `None` for `--help`.
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Option<Args>, String> {
    let cli = match <Cli as clap::Parser>::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) if error.kind() == clap::error::ErrorKind::DisplayHelp => return Ok(None),
        Err(error) => {
            let text = error.to_string();
            return Err(text
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_owned());
        }
    };
    if cli.paths.is_empty() {
        return Err("no PATH to watch".to_owned());
    }
    Ok(Some(Args {
        interval: cli.interval,
        strategy: cli.strategy,
        events: cli.events,
        paths: cli.paths,
    }))
}

fn positive_millis(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(format!("{text:?} is not a positive integer")),
    }
}

fn strategy(text: &str) -> Result<Strategy, String> {
    text.parse().map_err(|e| format!("{e}"))
}

fn on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("expected on or off, not {other:?}")),
    }
}

fn join(paths: &[PathBuf]) -> String {
    let names: Vec<_> = paths
        .iter()
        .map(|path| Path::display(path).to_string())
        .collect();
    names.join(", ")
}
