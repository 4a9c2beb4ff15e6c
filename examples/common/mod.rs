//! What the example servers share: the command line (a contract used by
//! other tools; parsed with clap), logging, the reload report lines and the
//! echo.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::{Stream, StreamExt};
use tls_reload::acceptor::{Builder, ReloadEvent, ReloadingAcceptor, TlsStream};
use tls_reload::detect::Strategy;

pub(crate) const USAGE: &str = "\
usage: --cert FILE --key FILE and/or --cert-dir DIR (repeatable: named pairs STEM.crt + STEM.key or STEM.pem, by SNI)
       [--key-passphrase-file FILE] [--client-ca FILE] [--client-ca-dir DIR]
       [--crl FILE (repeatable; needs a client CA)] [--interval-ms N (default 1000)]
       [--listen ADDR (default 127.0.0.1:8443; port 0 picks one)] [--detector hash|metadata|combined (default combined)]
       [--handshake-timeout-ms N (default 10000)] [--events on|off (default on)]";

/// The flags as clap reads them (no binary name; a repeated flag keeps its
/// last value; a value may start with `-`, as in `--cert -x`).
#[derive(Debug, clap::Parser)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true
)]
struct Cli {
    #[arg(value_name = "FILE", long, value_parser = path, allow_hyphen_values = true)]
    cert: Option<PathBuf>,
    #[arg(value_name = "FILE", long, value_parser = path, allow_hyphen_values = true)]
    key: Option<PathBuf>,
    #[arg(value_name = "DIR", long = "cert-dir", value_parser = path, allow_hyphen_values = true)]
    cert_dirs: Vec<PathBuf>,
    #[arg(value_name = "FILE", long, value_parser = path, allow_hyphen_values = true)]
    client_ca: Option<PathBuf>,
    #[arg(value_name = "FILE", long, value_parser = path, allow_hyphen_values = true)]
    client_ca_dir: Option<PathBuf>,
    #[arg(value_name = "FILE", long = "crl", value_parser = path, allow_hyphen_values = true)]
    crls: Vec<PathBuf>,
    #[arg(value_name = "FILE", long, value_parser = path, allow_hyphen_values = true)]
    key_passphrase_file: Option<PathBuf>,
    #[arg(value_name = "N", long = "interval-ms", default_value = "1000", value_parser = millis, allow_hyphen_values = true)]
    interval: Duration,
    #[arg(value_name = "N", long = "handshake-timeout-ms", default_value = "10000", value_parser = millis, allow_hyphen_values = true)]
    handshake_timeout: Duration,
    /// Resolved after parsing, so that a `--help` further on still wins.
    #[arg(
        value_name = "ADDR",
        long,
        default_value = "127.0.0.1:8443",
        allow_hyphen_values = true
    )]
    listen: String,
    #[arg(value_name = "hash|metadata|combined", long, default_value = "combined", value_parser = strategy, allow_hyphen_values = true)]
    detector: Strategy,
    #[arg(value_name = "on|off", long, default_value = "on", value_parser = on_off, action = clap::ArgAction::Set, allow_hyphen_values = true)]
    events: bool,
    #[arg(short, long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

/// clap's error in one line, without its prefix and hints.
pub(crate) fn clap_message(error: &clap::Error) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.trim_start_matches("error: ").to_owned()
}

/// A path, as given (empty included: the load then names it).
fn path(text: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(text))
}

/// A whole number of milliseconds (zero is refused after parsing, so that
/// a `--help` further on still wins).
fn millis(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("not a number of milliseconds: {text:?}"))
}

/// A detector: `hash`, `metadata` or `combined`.
pub(crate) fn strategy(text: &str) -> Result<Strategy, String> {
    text.parse().map_err(|e| format!("{e}"))
}

/// The parsed command line.
#[derive(Debug)]
pub(crate) struct Args {
    /// The default pair; optional with `--cert-dir`.
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    /// Directories of named pairs, served by SNI.
    pub(crate) cert_dirs: Vec<PathBuf>,
    pub(crate) client_ca: Option<PathBuf>,
    pub(crate) client_ca_dir: Option<PathBuf>,
    /// CRL files (PEM), each checked against the client CAs.
    pub(crate) crls: Vec<PathBuf>,
    /// The passphrase of an encrypted key, read at every reload.
    pub(crate) key_passphrase_file: Option<PathBuf>,
    pub(crate) interval: Duration,
    pub(crate) listen: SocketAddr,
    pub(crate) detector: Strategy,
    pub(crate) handshake_timeout: Duration,
    /// Whether file-system events wake a check (the interval stays the backstop).
    pub(crate) events: bool,
}

impl Args {
    /// Parses `std::env::args_os`, or returns the exit code after printing why.
    /// `--help` prints the usage and exits 0.
    pub(crate) fn from_env() -> Result<Self, ExitCode> {
        // `args_os`: a non-UTF-8 argument is a usage error (exit 2), not a panic.
        match Self::parse(std::env::args_os().skip(1)) {
            Ok(Some(args)) => Ok(args),
            Ok(None) => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Err(message) => {
                eprintln!("error: {message}\n{USAGE}");
                Err(ExitCode::from(2))
            }
        }
    }

    /// Parses the arguments (without the program name): `None` when
    /// `--help` or `-h` is reached before an argument that is refused.
    /// Prints nothing and never exits, so fuzzing and tests can call it.
    pub(crate) fn parse(
        args: impl Iterator<Item = impl Into<std::ffi::OsString> + Clone>,
    ) -> Result<Option<Self>, String> {
        let cli = match <Cli as clap::Parser>::try_parse_from(args) {
            Ok(cli) => cli,
            Err(error) if error.kind() == clap::error::ErrorKind::DisplayHelp => return Ok(None),
            Err(error) => return Err(clap_message(&error)),
        };
        if cli.interval.is_zero() {
            return Err("--interval-ms must be at least 1".into());
        }
        if cli.handshake_timeout.is_zero() {
            return Err("--handshake-timeout-ms must be at least 1".into());
        }
        let listen = cli
            .listen
            .to_socket_addrs()
            .map_err(|e| format!("--listen {}: {e}", cli.listen))?
            .next()
            .ok_or_else(|| format!("--listen {}: no address", cli.listen))?;
        match (&cli.cert, &cli.key) {
            (Some(_), None) => return Err("--key is required with --cert".into()),
            (None, Some(_)) => return Err("--cert is required with --key".into()),
            (None, None) if cli.cert_dirs.is_empty() => {
                return Err("--cert and --key are required (or --cert-dir)".into())
            }
            _ => {}
        }
        Ok(Some(Self {
            cert: cli.cert,
            key: cli.key,
            cert_dirs: cli.cert_dirs,
            client_ca: cli.client_ca,
            client_ca_dir: cli.client_ca_dir,
            crls: cli.crls,
            key_passphrase_file: cli.key_passphrase_file,
            interval: cli.interval,
            listen,
            detector: cli.detector,
            handshake_timeout: cli.handshake_timeout,
            events: cli.events,
        }))
    }

    /// The acceptor these arguments describe; client certificates are
    /// required when a client CA is given. Without `--cert`/`--key`, only
    /// the named pairs of `--cert-dir` are served (an unknown name is
    /// refused with `unrecognized_name`).
    pub(crate) fn acceptor(&self) -> Builder {
        let mut builder = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => ReloadingAcceptor::from_files(cert, key),
            _ => ReloadingAcceptor::without_default_pair(),
        };
        for dir in &self.cert_dirs {
            builder = builder.cert_dir(dir);
        }
        builder = builder
            .interval(self.interval)
            .strategy(self.detector)
            .events(self.events)
            .handshake_timeout(self.handshake_timeout);
        if let Some(file) = &self.client_ca {
            builder = builder.client_ca(file);
        }
        if let Some(dir) = &self.client_ca_dir {
            builder = builder.client_ca_dir(dir);
        }
        for file in &self.crls {
            builder = builder.crl(file);
        }
        if let Some(file) = &self.key_passphrase_file {
            builder = builder.key_passphrase_file(file);
        }
        builder
    }
}

/// `on` or `off`.
pub(crate) fn on_off(value: &str) -> Result<bool, String> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected on or off, not {value:?}")),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info,rustls=error`).
///
/// `RUST_LOG`, when set, decides everything. The default keeps rustls's own
/// log records (bridged from the `log` crate) to errors: rustls warns about
/// a bad client on every connection ("Received a ... message while
/// expecting ...", "Illegal SNI hostname received ..." quoting the bytes
/// sent), without the peer and without a limit, so anyone on the network
/// could set our log volume and write into it. The acceptor reports failed
/// handshakes itself, with the peer's address and rate-limited.
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rustls=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Prints a line to stdout and flushes it: other programs wait for these.
pub(crate) fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Prints one stdout line per applied or failed reload, and per expiry
/// warning (`certificate expires soon: ...`, `certificate expired: ...`);
/// for named pairs, `reload applied name=STEM serial=HEX`, `reload failed:
/// MESSAGE` and `reload removed name=STEM`.
pub(crate) async fn report_reloads(mut events: impl Stream<Item = ReloadEvent> + Unpin) {
    while let Some(event) = events.next().await {
        if matches!(
            event,
            ReloadEvent::Applied { .. }
                | ReloadEvent::Failed { .. }
                | ReloadEvent::PairApplied { .. }
                | ReloadEvent::PairFailed { .. }
                | ReloadEvent::PairRemoved { .. }
                | ReloadEvent::ExpiresSoon { .. }
                | ReloadEvent::Expired { .. }
        ) {
            say(format_args!("{event}"));
        }
    }
}

/// Logs a failed `accept` and pauses, so an error that repeats (out of file
/// descriptors, say) does not spin the accept loop.
pub(crate) async fn accept_failed(error: std::io::Error) {
    tracing::warn!(%error, "accept failed");
    async_io::Timer::after(Duration::from_millis(100)).await;
}

/// Echoes what the client sends until it closes its side.
pub(crate) async fn echo<IO>(tls: TlsStream<IO>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tls.split();
    let result = async {
        futures::io::copy(&mut reader, &mut writer).await?;
        writer.close().await
    }
    .await;
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended");
    }
}
