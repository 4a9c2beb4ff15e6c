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

/// The arguments, or `None` for `--help`.
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        interval: Duration::from_secs(1),
        strategy: Strategy::Combined,
        events: true,
        paths: Vec::new(),
    };
    let mut args = args.into_iter();
    let mut options_done = false;
    while let Some(arg) = args.next() {
        let text = arg.to_str().unwrap_or_default();
        if options_done || !text.starts_with('-') || text == "-" {
            parsed.paths.push(arg.into());
            continue;
        }
        let (name, inline) = match text.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (text, None),
        };
        let mut value = || -> Result<String, String> {
            match inline.clone() {
                Some(value) => Ok(value),
                None => args
                    .next()
                    .and_then(|value| value.into_string().ok())
                    .ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match name {
            "--" => options_done = true,
            "-h" | "--help" => return Ok(None),
            "--interval-ms" => {
                let value = value()?;
                parsed.interval = match value.parse::<u64>() {
                    Ok(ms) if ms > 0 => Duration::from_millis(ms),
                    _ => {
                        return Err(format!(
                            "--interval-ms: {value:?} is not a positive integer"
                        ))
                    }
                };
            }
            "--detector" => {
                parsed.strategy = value()?.parse().map_err(|e| format!("--detector: {e}"))?;
            }
            "--events" => {
                parsed.events = match value()?.as_str() {
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("--events: expected on or off, not {other:?}")),
                };
            }
            _ => return Err(format!("unknown option {text:?}")),
        }
    }
    if parsed.paths.is_empty() {
        return Err("no PATH to watch".to_owned());
    }
    Ok(Some(parsed))
}

fn join(paths: &[PathBuf]) -> String {
    let names: Vec<_> = paths
        .iter()
        .map(|path| Path::display(path).to_string())
        .collect();
    names.join(", ")
}
