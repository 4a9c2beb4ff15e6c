//! The command line: flags, defaults, durations and the help text, with
//! clap (derive) and humantime. The flags and their meaning are a contract
//! other tools rely on.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::Parser;
use tls_reload_acceptor::rustls::pki_types::ServerName;
use tls_reload_acceptor::{
    Builder, ClientMaterials, ConnectorBuilder, ReloadingAcceptor, ReloadingConnector,
};

use crate::access::Allow;

/// One line on how to call the proxy, printed after an argument error.
pub(crate) const USAGE: &str = "\
usage: tls-reload-proxy --listen ADDR --target HOST:PORT --cert FILE --key FILE
                        [--cert-dir DIR]... (named pairs by SNI; --cert/--key then optional)
                        [--target-tls --target-ca FILE [--target-cert FILE --target-key FILE]
                         [--target-name NAME]]
                        [--key-passphrase-file FILE] [--client-ca FILE] [--client-ca-dir DIR]
                        [--crl FILE]... [--interval DURATION]
                        [--events on|off] [--status ADDR] [--max-connections N] [--handshake-timeout DURATION]
                        [--connect-timeout DURATION] [--drain-timeout DURATION] [--threads N]
                        [--allow-cn NAME]... [--allow-dns NAME]... [--allow-uri URI]...
                        [--idle-timeout DURATION] [--busy-poll on|off]
       tls-reload-proxy --help";

/// What `--help` prints.
pub(crate) const HELP: &str = "\
tls-reload-proxy: terminates TLS and forwards the plaintext to a TCP target.
The certificate, key, client CAs and CRLs are re-read when they change on disk
(and on SIGHUP); open connections keep going, new ones get the new files.

usage: tls-reload-proxy --listen ADDR --target HOST:PORT --cert FILE --key FILE [options]
       tls-reload-proxy --listen ADDR --target HOST:PORT --cert-dir DIR [options]

required:
  --listen ADDR              address to accept TLS on, e.g. 0.0.0.0:6380
                             (port 0 picks a free port; the real one is printed);
                             not needed under socket activation (see systemd)
  --target HOST:PORT         plaintext TCP service to forward to, e.g. 127.0.0.1:6379;
                             a host name is resolved for every connection
  --cert FILE                PEM certificate chain, leaf first
  --key FILE                 PEM private key of the leaf (PKCS#8, PKCS#1 or SEC1,
                             or encrypted PKCS#8 with --key-passphrase-file)
                             Without --cert and --key the listener is plaintext
                             (client mode: give --target-tls), unless --cert-dir
                             is given
  --cert-dir DIR             named pairs chosen by SNI: STEM.crt + STEM.key or
                             STEM.pem (chain and key), served for the DNS names
                             of each certificate; each reloads on its own, pairs
                             come and go with their files; repeatable. With
                             --cert/--key those are the default pair; without,
                             an unknown name (or no SNI) is refused with the
                             unrecognized_name alert

client mode (TLS towards the target, files reloaded as the listener's are):
  --target-tls               originate TLS to the target
  --target-ca FILE           PEM roots that verify the target (required with --target-tls)
  --target-cert FILE         PEM client certificate chain presented to the target
  --target-key FILE          its private key (with --target-cert)
  --target-name NAME         server name sent (SNI) and verified [default: the
                             target's host]

options:
  --key-passphrase-file FILE decrypt an ENCRYPTED PRIVATE KEY (PKCS#8, PBES2 with
                             PBKDF2 or scrypt, as openssl pkcs8 -topk8 writes) with
                             the passphrase in FILE (trailing newlines ignored),
                             re-read at every reload
  --client-ca FILE           require client certificates signed by a CA in this
                             PEM bundle (every certificate in it is trusted)
  --client-ca-dir DIR        require client certificates signed by a CA in one of
                             this directory's files (combines with --client-ca)
  --crl FILE                 refuse client certificates revoked by the CRLs in this
                             PEM file; repeatable. Each CRL must be signed by a
                             client CA, or the reload fails and the old trust stays;
                             a client whose CA has no CRL is refused
  --interval DURATION        how often the files are checked for changes [default: 1s]
  --events on|off            on: file-system events (inotify) wake a check at once,
                             with --interval as the backstop; off: poll only [default: on]
  --status ADDR              serve plain HTTP on ADDR: GET /status (JSON) and
                             GET /metrics (Prometheus, OpenMetrics text)
  --max-connections N        most client connections open at once, handshakes
                             included; beyond it new connections wait in the
                             listen backlog until one closes [default: 10000]
  --handshake-timeout DURATION
                             time a client has to finish the TLS handshake [default: 10s]
  --connect-timeout DURATION time to connect to the target; the client is closed
                             when it runs out or the target refuses [default: 5s]
  --drain-timeout DURATION   on SIGTERM or SIGINT, how long open connections may
                             go on before the proxy exits anyway [default: 30s]
  --allow-cn NAME            with client certificates (--client-ca or --client-ca-dir),
                             let in only clients whose certificate's subject CN is
                             NAME, or that an --allow-dns or --allow-uri lets in;
                             repeatable. Others are closed after the handshake,
                             logged with their subject and counted in /metrics
  --allow-dns NAME           let in clients with this DNS name among their
                             certificate's subject alternative names (case ignored);
                             repeatable
  --allow-uri URI            let in clients with this URI among their certificate's
                             subject alternative names, such as a SPIFFE ID
                             spiffe://example.org/web (compared whole); repeatable
  --idle-timeout DURATION    close a connection once both directions have been silent
                             this long [default: never]
  --threads N                worker threads; each new connection goes to the one
                             with the fewest open, which serves it start to end
                             [default: number of CPUs]
  --busy-poll on|off         on: a connection alone on its worker, whose both
                             directions wait on their peers, polls its sockets for
                             up to 100 us before the worker sleeps (adaptive; never
                             when idle or beside other connections): lower latency
                             for a lone busy connection, some CPU; off: never poll
                             [default: on]
  -h, --help                 print this help and exit

DURATION is a number with a unit: 500ms, 5s, 1m, 1h (or 1h30m, 2days).

output:
  stdout gets one line per event other programs may wait for:
    listening on IP:PORT
    status on IP:PORT                      (with --status)
    reload applied generation=N serial=HEX
    reload failed: MESSAGE
  logs go to stderr; RUST_LOG sets the level [default: info].

signals:
  SIGHUP             reload the files now and log the result
  SIGTERM, SIGINT    stop accepting, let open connections finish within
                     --drain-timeout, exit 0 (a second signal exits at once)

systemd:
  with NOTIFY_SOCKET set, READY=1 once listening, RELOADING=1 and READY=1 around
  a SIGHUP reload, STOPPING=1 on SIGTERM/SIGINT (Type=notify or notify-reload).
  With LISTEN_FDS (socket activation), the first socket passed is the TLS
  listener, shared by the workers, and a second one the status page's.

exit status: 0 after a signal, 1 when the files or addresses cannot be used
at start-up, 2 on bad arguments.";

/// The flags as clap reads them; [`HELP`] describes them, in the words
/// and layout the proxy has always printed.
#[derive(Debug, Parser)]
#[command(
    name = "tls-reload-proxy",
    override_usage = USAGE,
    override_help = HELP,
    disable_version_flag = true,
    disable_help_flag = true
)]
struct Cli {
    /// address to accept TLS on, e.g. 0.0.0.0:6380 (port 0 picks a free
    /// port; the real one is printed); not needed under socket activation
    /// (see systemd)
    #[arg(long, value_name = "ADDR", value_parser = socket_addr, help_heading = "Required")]
    listen: Option<SocketAddr>,
    /// plaintext TCP service to forward to, e.g. 127.0.0.1:6379; a host name
    /// is resolved for every connection
    #[arg(long, value_name = "HOST:PORT", value_parser = target_of, help_heading = "Required")]
    target: Target,
    /// PEM certificate chain, leaf first
    #[arg(long, value_name = "FILE", value_parser = file, help_heading = "Required")]
    cert: Option<PathBuf>,
    /// PEM private key of the leaf (PKCS#8, PKCS#1 or SEC1, or encrypted
    /// PKCS#8 with --key-passphrase-file)
    #[arg(long, value_name = "FILE", value_parser = file, help_heading = "Required")]
    key: Option<PathBuf>,
    /// named pairs chosen by SNI (STEM.crt + STEM.key or STEM.pem);
    /// repeatable
    #[arg(long = "cert-dir", value_name = "DIR", value_parser = file, help_heading = "Required")]
    cert_dirs: Vec<PathBuf>,
    /// originate TLS to the target
    #[arg(long, help_heading = "Client mode")]
    target_tls: bool,
    /// PEM roots that verify the target
    #[arg(long, value_name = "FILE", value_parser = file, help_heading = "Client mode")]
    target_ca: Option<PathBuf>,
    /// PEM client certificate chain presented to the target
    #[arg(long, value_name = "FILE", value_parser = file, help_heading = "Client mode")]
    target_cert: Option<PathBuf>,
    /// its private key
    #[arg(long, value_name = "FILE", value_parser = file, help_heading = "Client mode")]
    target_key: Option<PathBuf>,
    /// server name sent (SNI) and verified
    #[arg(long, value_name = "NAME", value_parser = server_name, help_heading = "Client mode")]
    target_name: Option<ServerName<'static>>,

    /// decrypt an ENCRYPTED PRIVATE KEY (PKCS#8, PBES2 with PBKDF2 or
    /// scrypt, as openssl pkcs8 -topk8 writes) with the passphrase in FILE
    /// (trailing newlines ignored), re-read at every reload
    #[arg(long, value_name = "FILE", value_parser = file, help_heading = "Options")]
    key_passphrase_file: Option<PathBuf>,
    /// require client certificates signed by a CA in this PEM bundle (every
    /// certificate in it is trusted)
    #[arg(long, value_name = "FILE", value_parser = file, help_heading = "Options")]
    client_ca: Option<PathBuf>,
    /// require client certificates signed by a CA in one of this
    /// directory's files (combines with --client-ca)
    #[arg(long, value_name = "DIR", value_parser = file, help_heading = "Options")]
    client_ca_dir: Option<PathBuf>,
    /// refuse client certificates revoked by the CRLs in this PEM file;
    /// repeatable. Each CRL must be signed by a client CA, or the reload
    /// fails and the old trust stays; a client whose CA has no CRL is
    /// refused
    #[arg(long = "crl", value_name = "FILE", value_parser = file, help_heading = "Options")]
    crls: Vec<PathBuf>,
    /// how often the files are checked for changes
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = positive, help_heading = "Options")]
    interval: Duration,
    /// on: file-system events (inotify) wake a check at once, with
    /// --interval as the backstop; off: poll only
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set, help_heading = "Options")]
    events: bool,
    /// serve plain HTTP on ADDR: GET /status (JSON) and GET /metrics
    /// (Prometheus, OpenMetrics text)
    #[arg(long, value_name = "ADDR", value_parser = socket_addr, help_heading = "Options")]
    status: Option<SocketAddr>,
    /// most client connections open at once, handshakes included; beyond it
    /// new connections wait in the listen backlog until one closes
    #[arg(long, value_name = "N", default_value = "10000", value_parser = at_least_one, help_heading = "Options")]
    max_connections: usize,
    /// time a client has to finish the TLS handshake
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive, help_heading = "Options")]
    handshake_timeout: Duration,
    /// time to connect to the target; the client is closed when it runs out
    /// or the target refuses
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = positive, help_heading = "Options")]
    connect_timeout: Duration,
    /// on SIGTERM or SIGINT, how long open connections may go on before the
    /// proxy exits anyway
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration, help_heading = "Options")]
    drain_timeout: Duration,
    /// close a connection once both directions have been silent this long
    /// [default: never]
    #[arg(long, value_name = "DURATION", value_parser = positive, help_heading = "Options")]
    idle_timeout: Option<Duration>,
    /// worker threads; each new connection goes to the one with the fewest
    /// open, which serves it start to end [default: number of CPUs]
    #[arg(long, value_name = "N", value_parser = at_least_one, help_heading = "Options")]
    threads: Option<usize>,
    /// on: a connection alone on its worker, whose both directions wait on
    /// their peers, polls its sockets for up to 100 us before the worker
    /// sleeps; off: never poll
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set, help_heading = "Options")]
    busy_poll: bool,

    /// with client certificates (--client-ca or --client-ca-dir), let in
    /// only clients whose certificate's subject CN is NAME, or that an
    /// --allow-dns or --allow-uri lets in; repeatable. Others are closed
    /// after the handshake, logged with their subject and counted in
    /// /metrics
    #[arg(long, value_name = "NAME", value_parser = name, help_heading = "Access control")]
    allow_cn: Vec<String>,
    /// let in clients with this DNS name among their certificate's subject
    /// alternative names (case ignored); repeatable
    #[arg(long, value_name = "NAME", value_parser = name, help_heading = "Access control")]
    allow_dns: Vec<String>,
    /// let in clients with this URI among their certificate's subject
    /// alternative names, such as a SPIFFE ID spiffe://example.org/web
    /// (compared whole); repeatable
    #[arg(long, value_name = "URI", value_parser = name, help_heading = "Access control")]
    allow_uri: Vec<String>,

    /// print this help and exit
    #[arg(short, long, action = clap::ArgAction::Help, help_heading = "Options")]
    help: Option<bool>,
}

/// The parsed command line.
#[derive(Clone, Debug)]
pub(crate) struct Args {
    /// Where TLS clients connect.
    /// `None` only under socket activation, where systemd passes the socket.
    pub(crate) listen: Option<SocketAddr>,
    /// Where the plaintext goes.
    pub(crate) target: Target,
    /// The certificate chain file; `None` for a plaintext listener.
    pub(crate) cert: Option<PathBuf>,
    /// The private key file; `None` for a plaintext listener.
    pub(crate) key: Option<PathBuf>,
    /// Directories of named pairs, served by SNI (with or without
    /// `cert`/`key`, the default pair).
    pub(crate) cert_dirs: Vec<PathBuf>,
    /// TLS towards the target (client mode).
    pub(crate) target_tls: Option<TargetTls>,
    /// A client CA bundle, for mTLS.
    pub(crate) client_ca: Option<PathBuf>,
    /// A directory of client CAs, for mTLS.
    pub(crate) client_ca_dir: Option<PathBuf>,
    /// CRL files (PEM), checked against the client CAs.
    pub(crate) crls: Vec<PathBuf>,
    /// The passphrase of an encrypted key.
    pub(crate) key_passphrase_file: Option<PathBuf>,
    /// How often the files are checked.
    pub(crate) interval: Duration,
    /// Whether file-system events wake a check.
    pub(crate) events: bool,
    /// Where the status page listens, if anywhere.
    pub(crate) status: Option<SocketAddr>,
    /// The most client connections open at once.
    pub(crate) max_connections: usize,
    /// The bound on each TLS handshake.
    pub(crate) handshake_timeout: Duration,
    /// The bound on connecting to the target.
    pub(crate) connect_timeout: Duration,
    /// How long connections may go on after SIGTERM.
    pub(crate) drain_timeout: Duration,
    /// How many workers accept and serve connections.
    pub(crate) threads: usize,
    /// The client identities allowed in (all, when empty).
    pub(crate) allow: Allow,
    /// How long a connection may stay silent both ways, if bounded.
    pub(crate) idle_timeout: Option<Duration>,
    /// Whether a lone connection busy-polls before its worker sleeps.
    pub(crate) busy_poll: bool,
}

/// `--target-tls` and its files.
#[derive(Clone, Debug)]
pub(crate) struct TargetTls {
    /// The roots that verify the target.
    pub(crate) ca: PathBuf,
    /// The client certificate chain and key presented to it, if any.
    pub(crate) identity: Option<(PathBuf, PathBuf)>,
    /// The name sent and verified.
    pub(crate) name: ServerName<'static>,
}

/// What the command line asks for.
#[derive(Clone, Debug)]
pub(crate) enum Command {
    /// Run the proxy.
    Run(Box<Args>),
    /// Print the help.
    Help,
}

/// The target, as given: an address, or a host name to resolve per
/// connection (so a DNS change is followed without a restart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// An IP address and port.
    Addr(SocketAddr),
    /// `HOST:PORT` with a host name.
    Host(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Addr(addr) => addr.fmt(f),
            Self::Host(host) => f.write_str(host),
        }
    }
}

impl Args {
    /// The connector towards the target these arguments describe, with
    /// `--target-tls`.
    pub(crate) fn connector(&self) -> Option<ConnectorBuilder> {
        let tls = self.target_tls.as_ref()?;
        let mut materials = ClientMaterials::new().with_roots(&tls.ca);
        if let Some((cert, key)) = &tls.identity {
            materials = materials.with_identity(cert, key);
        }
        Some(
            ReloadingConnector::builder(materials)
                .interval(self.interval)
                .events(self.events),
        )
    }

    /// The acceptor these arguments describe, for a TLS listener; client
    /// certificates are required when a client CA is given.
    pub(crate) fn acceptor(&self) -> Option<Builder> {
        let mut builder = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => ReloadingAcceptor::from_files(cert, key),
            _ if !self.cert_dirs.is_empty() => ReloadingAcceptor::without_default_pair(),
            _ => return None,
        };
        for dir in &self.cert_dirs {
            builder = builder.cert_dir(dir);
        }
        builder = builder
            .interval(self.interval)
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
        Some(builder)
    }
}

/// Parses the arguments after the program name; the error is the message
/// to print, clap's, with the usage.
pub(crate) fn parse<I>(args: I) -> Result<Command, String>
where
    I: IntoIterator,
    I::Item: Into<OsString> + Clone,
{
    let argv =
        std::iter::once(OsString::from("tls-reload-proxy")).chain(args.into_iter().map(Into::into));
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(error) if error.kind() == ErrorKind::DisplayHelp => return Ok(Command::Help),
        Err(error) => return Err(message(&error)),
    };
    cli.finish().map(|args| Command::Run(Box::new(args)))
}

/// clap's error in the proxy's words: `--target is required`, `unknown
/// argument "--nope"`, `--cert given twice`, `--listen needs a value`,
/// `--events: expected on or off`.
fn message(error: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    // The flag as clap shows it, `--target <HOST:PORT>`, without the value.
    let flag = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.split(' ').next(),
        Some(ContextValue::Strings(args)) => args.first().and_then(|arg| arg.split(' ').next()),
        _ => None,
    };
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => Some(value.as_str()),
        _ => None,
    };
    match (error.kind(), flag) {
        (ErrorKind::MissingRequiredArgument, Some(flag)) => format!("{flag} is required"),
        (ErrorKind::UnknownArgument, Some(flag)) => format!("unknown argument {flag:?}"),
        (ErrorKind::ArgumentConflict, Some(flag)) => format!("{flag} given twice"),
        (ErrorKind::InvalidValue, Some(flag)) if value.is_none_or(str::is_empty) => {
            format!("{flag} needs a value")
        }
        (ErrorKind::ValueValidation, Some(flag)) => match std::error::Error::source(error) {
            Some(reason) => format!("{flag}: {reason}"),
            None => format!("{flag}: bad value"),
        },
        // Anything else in clap's words, without its own prefix and hints.
        _ => {
            let text = error
                .kind()
                .as_str()
                .map_or_else(|| error.to_string(), |kind| kind.to_owned());
            text.trim_start_matches("error: ")
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        }
    }
}

impl Cli {
    /// `--target-tls` and the flags that go with it.
    fn target_tls(&self) -> Result<Option<TargetTls>, String> {
        if !self.target_tls {
            for (flag, given) in [
                ("--target-ca", self.target_ca.is_some()),
                ("--target-cert", self.target_cert.is_some()),
                ("--target-key", self.target_key.is_some()),
                ("--target-name", self.target_name.is_some()),
            ] {
                if given {
                    return Err(format!("{flag} needs --target-tls"));
                }
            }
            return Ok(None);
        }
        let ca = self
            .target_ca
            .clone()
            .ok_or("--target-tls needs --target-ca FILE (the roots that verify the target)")?;
        let identity = match (&self.target_cert, &self.target_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            (Some(_), None) => return Err("--target-key is required with --target-cert".into()),
            (None, Some(_)) => return Err("--target-cert is required with --target-key".into()),
        };
        let name = match (&self.target_name, &self.target) {
            (Some(name), _) => name.clone(),
            (None, Target::Addr(addr)) => ServerName::IpAddress(addr.ip().into()),
            (None, Target::Host(host)) => {
                let host = host
                    .rsplit_once(':')
                    .map_or(host.as_str(), |(host, _)| host);
                server_name(host)
                    .map_err(|e| format!("--target {host}: {e}; give --target-name"))?
            }
        };
        Ok(Some(TargetTls { ca, identity, name }))
    }

    /// The checks across flags, and the defaults that depend on the
    /// environment.
    fn finish(self) -> Result<Args, String> {
        // Under socket activation (LISTEN_FDS) systemd hands the socket over.
        if self.listen.is_none() && std::env::var_os("LISTEN_FDS").is_none() {
            return Err("--listen is required".into());
        }
        for (flag, list) in [
            ("--allow-cn", &self.allow_cn),
            ("--allow-dns", &self.allow_dns),
            ("--allow-uri", &self.allow_uri),
        ] {
            if !list.is_empty() && self.client_ca.is_none() && self.client_ca_dir.is_none() {
                return Err(format!(
                    "{flag} checks client certificates: give --client-ca or --client-ca-dir too"
                ));
            }
        }
        let target_tls = self.target_tls()?;
        match (&self.cert, &self.key) {
            (Some(_), Some(_)) => {}
            (None, None) if target_tls.is_some() || !self.cert_dirs.is_empty() => {}
            (None, None) => {
                return Err("--cert is required: plaintext on both sides is refused (give --cert and --key for TLS to clients, or --target-tls for TLS to the target)".into())
            }
            (Some(_), None) => return Err("--key is required with --cert".into()),
            (None, Some(_)) => return Err("--cert is required with --key".into()),
        }
        if self.cert.is_none() && self.cert_dirs.is_empty() {
            // A plaintext listener: the listener's TLS flags would be ignored.
            for (flag, given) in [
                ("--client-ca", self.client_ca.is_some()),
                ("--client-ca-dir", self.client_ca_dir.is_some()),
                ("--crl", !self.crls.is_empty()),
                ("--key-passphrase-file", self.key_passphrase_file.is_some()),
            ] {
                if given {
                    return Err(format!(
                        "{flag} is for the TLS listener: give --cert and --key (or --cert-dir) too"
                    ));
                }
            }
        }
        Ok(Args {
            listen: self.listen,
            cert: self.cert,
            key: self.key,
            cert_dirs: self.cert_dirs,
            target_tls,
            target: self.target,
            client_ca: self.client_ca,
            client_ca_dir: self.client_ca_dir,
            crls: self.crls,
            key_passphrase_file: self.key_passphrase_file,
            interval: self.interval,
            events: self.events,
            status: self.status,
            max_connections: self.max_connections,
            handshake_timeout: self.handshake_timeout,
            connect_timeout: self.connect_timeout,
            drain_timeout: self.drain_timeout,
            threads: self.threads.unwrap_or_else(default_threads),
            allow: Allow {
                cns: self.allow_cn,
                dns: self.allow_dns,
                uris: self.allow_uri,
            },
            idle_timeout: self.idle_timeout,
            busy_poll: self.busy_poll,
        })
    }
}

/// A duration with a unit, such as `500ms`, `5s`, `1m` or `1h30m`.
fn duration(text: &str) -> Result<Duration, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{text:?} has no unit: write {text}ms, {text}s, {text}m or {text}h"
        ));
    }
    humantime::parse_duration(text)
        .map_err(|error| format!("{text:?} is not a duration: {error} (as in 500ms, 5s, 1m)"))
}

/// A [`duration`] above zero.
fn positive(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        zero if zero.is_zero() => Err("must be more than zero".into()),
        duration => Ok(duration),
    }
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("not a whole number".into()),
    }
}

fn on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

fn file(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("needs a file".into());
    }
    Ok(text.into())
}

fn server_name(text: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(text.to_owned()).map_err(|_| "not a DNS name or IP address".to_owned())
}

fn name(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("needs a name".into());
    }
    Ok(text.into())
}

fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .map_err(|e| format!("{e} (expected IP:PORT)"))?
        .next()
        .ok_or_else(|| "no address".to_owned())
}

fn target_of(text: &str) -> Result<Target, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Target::Addr(addr));
    }
    let bad = || "expected HOST:PORT".to_owned();
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains(':') || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(Target::Host(text.to_owned()))
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Command, String> {
        parse(line.split_whitespace())
    }

    fn run(line: &str) -> Args {
        match args(line) {
            Ok(Command::Run(args)) => *args,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn args_err(line: &str) -> String {
        match args(line) {
            Err(message) => message,
            Ok(command) => panic!("{line}: accepted as {command:?}"),
        }
    }

    const BASE: &str = "--listen 127.0.0.1:0 --target 127.0.0.1:6379 --cert c.pem --key k.pem";

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        let bare = duration("5").unwrap_err();
        assert!(bare.contains("no unit") && bare.contains("5s"), "{bare}");
        assert!(duration("5x").is_err());
        assert!(duration("s").is_err());
        assert!(duration("-1s").is_err());
        assert!(duration("99999999999999999999h").is_err());
        assert!(positive("0s").unwrap_err().contains("more than zero"));
    }

    #[test]
    fn defaults_apply() {
        let args = run(BASE);
        assert_eq!(args.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(args.target, Target::Addr("127.0.0.1:6379".parse().unwrap()));
        assert_eq!(args.interval, Duration::from_secs(1));
        assert!(args.events);
        assert_eq!(args.max_connections, 10_000);
        assert_eq!(args.handshake_timeout, Duration::from_secs(10));
        assert_eq!(args.connect_timeout, Duration::from_secs(5));
        assert_eq!(args.drain_timeout, Duration::from_secs(30));
        assert_eq!(args.status, None);
        assert_eq!(args.idle_timeout, None);
        assert!(args.threads >= 1);
        assert!(args.busy_poll);
    }

    #[test]
    fn every_flag_is_read_with_a_space_or_an_equals_sign() {
        let args = run(&format!(
            "{BASE} --client-ca ca.pem --client-ca-dir=cas --interval=250ms --status 127.0.0.1:9000 \
             --max-connections=2 --handshake-timeout 3s --connect-timeout=1s --drain-timeout 0s --threads 3 \
             --events=off --busy-poll off"
        ));
        assert!(!args.busy_poll);
        assert_eq!(args.client_ca, Some("ca.pem".into()));
        assert_eq!(args.client_ca_dir, Some("cas".into()));
        assert_eq!(args.interval, Duration::from_millis(250));
        assert_eq!(args.status, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(args.max_connections, 2);
        assert_eq!(args.handshake_timeout, Duration::from_secs(3));
        assert_eq!(args.connect_timeout, Duration::from_secs(1));
        assert_eq!(args.drain_timeout, Duration::ZERO);
        assert_eq!(args.threads, 3);
        assert!(!args.events);
    }

    #[test]
    fn crl_is_repeatable_and_the_passphrase_file_is_not() {
        let args = run(&format!(
            "{BASE} --crl a.crl --key-passphrase-file=pass --crl=b.crl"
        ));
        assert_eq!(args.crls, [PathBuf::from("a.crl"), "b.crl".into()]);
        assert_eq!(args.key_passphrase_file, Some("pass".into()));
        assert!(args_err(&format!("{BASE} --crl")).contains("--crl needs a value"));
        assert!(args_err(&format!("{BASE} --crl=")).contains("needs a file"));
        assert!(args_err(&format!(
            "{BASE} --key-passphrase-file a --key-passphrase-file b"
        ))
        .contains("given twice"));
    }

    #[test]
    fn allow_lists_are_repeatable_and_need_client_cas() {
        let args = run(&format!(
            "{BASE} --client-ca ca.pem --allow-cn web --allow-cn=api --allow-dns db.example.org \
             --allow-uri spiffe://example.org/web --idle-timeout 5m"
        ));
        assert_eq!(args.allow.cns, ["web", "api"]);
        assert_eq!(args.allow.dns, ["db.example.org"]);
        assert_eq!(args.allow.uris, ["spiffe://example.org/web"]);
        assert_eq!(args.idle_timeout, Some(Duration::from_secs(300)));
        assert!(!run(BASE).allow.is_restricted());
        let error = args_err(&format!("{BASE} --allow-cn web"));
        assert!(
            error.contains("--allow-cn") && error.contains("--client-ca"),
            "{error}"
        );
        assert!(args_err(&format!("{BASE} --client-ca c --allow-uri=")).contains("needs a name"));
        assert!(args_err(&format!("{BASE} --idle-timeout 0s")).contains("more than zero"));
    }

    #[test]
    fn client_mode_takes_its_files_and_a_name() {
        let args = run(
            "--listen 127.0.0.1:0 --target redis.internal:6380 --target-tls --target-ca ca.pem \
             --target-cert c.pem --target-key k.pem",
        );
        assert_eq!(args.cert, None);
        assert!(args.acceptor().is_none());
        let tls = args.target_tls.as_ref().unwrap();
        assert_eq!(tls.ca, PathBuf::from("ca.pem"));
        assert_eq!(tls.identity, Some(("c.pem".into(), "k.pem".into())));
        assert_eq!(tls.name, ServerName::try_from("redis.internal").unwrap());
        let by_ip =
            run("--listen 127.0.0.1:0 --target 10.0.0.1:6380 --target-tls --target-ca ca.pem");
        assert_eq!(
            by_ip.target_tls.unwrap().name,
            ServerName::try_from("10.0.0.1").unwrap()
        );
        let named = run(&format!(
            "{BASE} --target-tls --target-ca ca --target-name db.internal"
        ));
        assert!(named.acceptor().is_some());
        assert_eq!(
            named.target_tls.unwrap().name,
            ServerName::try_from("db.internal").unwrap()
        );
    }

    #[test]
    fn client_mode_mistakes_are_named() {
        let plain = "--listen 127.0.0.1:0 --target 127.0.0.1:1";
        assert!(args_err(plain).contains("plaintext on both sides"));
        assert!(args_err(&format!("{plain} --target-tls")).contains("--target-ca"));
        assert!(
            args_err(&format!("{BASE} --target-ca ca")).contains("--target-ca needs --target-tls")
        );
        assert!(args_err(&format!(
            "{plain} --target-tls --target-ca ca --target-cert c"
        ))
        .contains("--target-key is required"));
        assert!(
            args_err("--listen 127.0.0.1:0 --target 127.0.0.1:1 --cert= --key k")
                .contains("needs a file")
        );
        assert!(
            args_err("--listen 127.0.0.1:0 --target 127.0.0.1:1 --cert c")
                .contains("--key is required")
        );
        // A plaintext listener cannot use the listener's TLS flags.
        let client = "--listen 127.0.0.1:0 --target 127.0.0.1:1 --target-tls --target-ca ca";
        for flag in [
            "--client-ca c",
            "--client-ca-dir d",
            "--crl c",
            "--key-passphrase-file p",
        ] {
            let error = args_err(&format!("{client} {flag}"));
            assert!(error.contains("is for the TLS listener"), "{flag}: {error}");
        }
    }

    #[test]
    fn cert_dir_makes_cert_and_key_optional() {
        let only = "--listen 127.0.0.1:0 --target 127.0.0.1:6379";
        let args = run(&format!("{only} --cert-dir a --cert-dir=b"));
        assert_eq!((&args.cert, &args.key), (&None, &None));
        assert_eq!(args.cert_dirs, [PathBuf::from("a"), PathBuf::from("b")]);
        assert!(
            args.acceptor().is_some(),
            "TLS to clients, named pairs only"
        );
        let args = run(&format!("{BASE} --cert-dir a"));
        assert_eq!(args.cert, Some(PathBuf::from("c.pem")));
        assert!(args_err(&format!("{only} --cert-dir a --cert c")).contains("--key is required"));
        assert!(args_err(only).contains("--cert is required"));
        assert!(args_err(&format!("{only} --cert-dir=")).contains("--cert-dir"));
    }

    #[test]
    fn a_target_host_is_kept_for_resolving_later() {
        let args = run("--listen 127.0.0.1:0 --target localhost:6379 --cert c --key k");
        assert_eq!(args.target, Target::Host("localhost:6379".into()));
        let v6 = run("--listen [::1]:0 --target [::1]:6379 --cert c --key k");
        assert_eq!(v6.target, Target::Addr("[::1]:6379".parse().unwrap()));
    }

    #[test]
    fn help_wins() {
        assert!(matches!(args("--help"), Ok(Command::Help)));
        assert!(matches!(args("--listen 127.0.0.1:0 -h"), Ok(Command::Help)));
        for flag in [
            "--listen",
            "--target",
            "--cert",
            "--key",
            "--cert-dir",
            "--key-passphrase-file",
            "--client-ca",
            "--client-ca-dir",
            "--crl",
            "--interval",
            "--events",
            "--status",
            "--max-connections",
            "--handshake-timeout",
            "--connect-timeout",
            "--drain-timeout",
            "--threads",
            "--allow-cn",
            "--allow-dns",
            "--allow-uri",
            "--idle-timeout",
            "--target-tls",
            "--target-ca",
            "--target-cert",
            "--target-key",
            "--target-name",
            "listening on IP:PORT",
            "SIGHUP",
            "NOTIFY_SOCKET",
        ] {
            assert!(HELP.contains(flag), "--help does not explain {flag}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        let error = args_err;
        assert!(error("--target 127.0.0.1:1 --cert c --key k").contains("--listen is required"));
        assert!(error(&format!("{BASE} --bogus 1")).contains("--bogus"));
        assert!(error(&format!("{BASE} --cert d")).contains("--cert"));
        assert!(error(&format!("{BASE} --interval")).contains("--interval"));
        let bare = error(&format!("{BASE} --interval 5"));
        assert!(
            bare.contains("--interval") && bare.contains("unit"),
            "{bare}"
        );
        assert!(error(&format!("{BASE} --interval 0s")).contains("more than zero"));
        assert!(error(&format!("{BASE} --max-connections 0")).contains("at least 1"));
        assert!(error(&format!("{BASE} --max-connections x")).contains("not a whole number"));
        assert!(error(&format!("{BASE} --events maybe")).contains("--events: expected on or off"));
        assert!(
            error(&format!("{BASE} --busy-poll yes")).contains("--busy-poll: expected on or off")
        );
        assert!(
            error("--listen 127.0.0.1:0 --target nowhere --cert c --key k")
                .contains("expected HOST:PORT")
        );
        assert!(
            error("--listen 127.0.0.1:0 --target host:99999 --cert c --key k")
                .contains("expected HOST:PORT")
        );
        assert!(error("--listen nowhere --target h:1 --cert c --key k").contains("--listen"));
        assert!(error("--listen 127.0.0.1:0 --cert c --key k").contains("--target is required"));
    }
}
