//! Start-up, signals and shutdown: the worker threads, the first load of
//! the files, the listeners, the report lines on stdout, SIGHUP reloads and
//! the SIGTERM/SIGINT drain.

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use async_io::{Async, Timer};
use async_signal::{Signal, Signals};
use futures::{Stream, StreamExt};
use smol::Executor;
use tls_reload_acceptor::{ConnectorEvent, ReloadEvent};

use crate::args::Args;
use crate::busy;
use crate::metrics::Counters;
use crate::proxy::{Drain, Proxy, Worker};
use crate::status::{self, Sources};
use crate::systemd::{self, Activation, Notify};

/// Logs to stderr, filtered by `RUST_LOG` (default `info,rustls=error`),
/// without colours unless stderr is a terminal.
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

/// Runs the proxy until a signal stops it: `args.threads` workers, each
/// with its own executor, handshaking and copying the connections handed
/// to it, so a connection never moves between threads once handed; and
/// this thread for what all share: the accept loop (which hands each
/// connection to the worker with the fewest open), the reloader, the
/// signals, the status page and the drain.
pub(crate) fn run(args: Args) -> ExitCode {
    // First, while this is the only thread: it edits the environment.
    let activation = match systemd::activation() {
        Ok(activation) => activation,
        Err(error) => return fail(format_args!("socket activation (LISTEN_FDS): {error}")),
    };
    busy::enable(args.busy_poll);
    let control = Arc::new(Executor::new());
    let started = match smol::block_on(control.run(start(&args, &control, activation))) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let Started {
        proxy,
        listener,
        mut signals,
        notify,
    } = started;
    let (stop_accepting, stop) = smol::channel::bounded::<()>(1);
    let (exit_workers, exit) = smol::channel::bounded::<()>(1);
    let (slots, drain) = Drain::new();
    thread::scope(|scope| {
        let mut workers = Vec::with_capacity(args.threads);
        for n in 0..args.threads {
            // A current-thread runtime per worker: its own poller, so the
            // events of a worker's sockets wake that worker's thread only.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build();
            let runtime = match runtime {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::warn!(%error, "cannot start a worker's runtime; going on with fewer");
                    continue;
                }
            };
            let (worker, incoming) = Worker::new();
            let (proxy, exit) = (proxy.clone(), exit.clone());
            let spawned = thread::Builder::new()
                .name(format!("proxy-{n}"))
                .spawn_scoped(scope, move || {
                    runtime.block_on(async {
                        proxy.serve(incoming).await;
                        // The open connections go on until the drain ends.
                        let _ = exit.recv().await;
                    });
                });
            match spawned {
                Ok(_) => workers.push(worker),
                Err(error) => {
                    tracing::warn!(%error, "cannot start a worker thread; going on with fewer")
                }
            }
        }
        let code = if workers.is_empty() {
            fail(format_args!("no worker thread could start"))
        } else {
            let stopped = async move {
                let _ = stop.recv().await;
            };
            let accepting = proxy.clone().dispatch(listener, workers, slots, stopped);
            control.spawn(accepting).detach();
            if let Some(notify) = &notify {
                notify.ready();
            }
            smol::block_on(control.run(async {
                let signal = next_stop_signal(&mut signals, &proxy, &control, &notify).await;
                if let Some(notify) = &notify {
                    notify.stopping();
                }
                drop(stop_accepting);
                drain_after(
                    signal,
                    &args,
                    &proxy,
                    &drain,
                    &mut signals,
                    &control,
                    &notify,
                )
                .await
            }))
        };
        drop(exit_workers);
        code
    })
}

/// What [`start`] readied.
struct Started {
    proxy: Arc<Proxy>,
    listener: Async<TcpListener>,
    signals: Signals,
    /// systemd's notification socket, if it gave one.
    notify: Option<Arc<Notify>>,
}

/// Loads the files, binds the sockets, prints the first lines and starts
/// the reloader and the status page on `control`; the error is the exit
/// status, its message printed.
async fn start(
    args: &Args,
    control: &Arc<Executor<'static>>,
    activation: Activation,
) -> Result<Started, ExitCode> {
    let acceptor = match args.acceptor() {
        Some(builder) => match builder.build().await {
            Ok(acceptor) => Some(acceptor),
            Err(error) => return Err(fail(format_args!("{error}"))),
        },
        None => None,
    };
    let connector = match args.connector() {
        Some(builder) => match builder.build().await {
            Ok(connector) => Some(connector),
            Err(error) => return Err(fail(format_args!("--target-tls: {error}"))),
        },
        None => None,
    };
    let (listener, what) = match (activation.listen, args.listen) {
        (Some(inherited), _) => (Ok(inherited), "the socket from systemd".to_owned()),
        (None, Some(addr)) => (TcpListener::bind(addr), format!("--listen {addr}")),
        (None, None) => {
            return Err(fail(format_args!(
                "--listen is required: LISTEN_FDS passed no socket to this process"
            )))
        }
    };
    let listener = match listener.and_then(Async::new) {
        Ok(listener) => listener,
        Err(error) => return Err(fail(format_args!("{what}: {error}"))),
    };
    let status_listener = match activation.status {
        Some(inherited) => Async::new(inherited).map(Some),
        None => args.status.map(Async::<TcpListener>::bind).transpose(),
    };
    let status_listener = match status_listener {
        Ok(listener) => listener,
        Err(error) => return Err(fail(format_args!("--status: {error}"))),
    };
    // Before the first line is printed, so that a signal sent as soon as the
    // proxy says it listens is handled rather than fatal.
    let signals = match Signals::new([Signal::Hup, Signal::Term, Signal::Int]) {
        Ok(signals) => signals,
        Err(error) => return Err(fail(format_args!("cannot handle signals: {error}"))),
    };
    if let Some(acceptor) = &acceptor {
        control.spawn(acceptor.reloader()).detach();
        control.spawn(report_reloads(acceptor.events())).detach();
    }
    if let Some(connector) = &connector {
        control.spawn(connector.reloader()).detach();
        control
            .spawn(report_target_reloads(connector.events()))
            .detach();
    }
    let counters = Arc::new(Counters::default());
    if let Err(error) = announce("listening on", &listener) {
        return Err(fail(format_args!("--listen: {error}")));
    }
    if let Some(status_listener) = status_listener {
        if let Err(error) = announce("status on", &status_listener) {
            return Err(fail(format_args!("--status: {error}")));
        }
        let sources = Sources {
            acceptor: acceptor.clone(),
            connector: connector.clone(),
            counters: counters.clone(),
        };
        let serving = status::serve(status_listener, sources, control.clone());
        control.spawn(serving).detach();
    }
    tracing::info!(
        target = %args.target,
        max_connections = args.max_connections,
        workers = args.threads,
        "proxy started"
    );
    let proxy = Arc::new(Proxy::new(acceptor, connector, args, counters));
    Ok(Started {
        proxy,
        listener,
        signals,
        notify: Notify::from_env().map(Arc::new),
    })
}

/// After `signal` stopped the accepting: waits for the open connections to
/// finish, for the drain timeout or for a second signal, whichever comes
/// first.
async fn drain_after(
    signal: Option<Signal>,
    args: &Args,
    proxy: &Arc<Proxy>,
    drain: &Drain,
    signals: &mut Signals,
    control: &Executor<'static>,
    notify: &Option<Arc<Notify>>,
) -> ExitCode {
    let counters = &proxy.counters;
    let open = counters.snapshot().active;
    tracing::info!(
        ?signal,
        open,
        drain_timeout = ?args.drain_timeout,
        "stopped accepting; waiting for open connections to finish"
    );
    let drained = async {
        drain.wait().await;
        tracing::info!("all connections closed");
    };
    let timed_out = async {
        Timer::after(args.drain_timeout).await;
        let open = counters.snapshot().active;
        tracing::warn!(open, "drain timeout; closing the connections left");
    };
    let again = async {
        let signal = next_stop_signal(signals, proxy, control, notify).await;
        tracing::warn!(?signal, "second signal; exiting now");
    };
    smol::future::or(drained, smol::future::or(timed_out, again)).await;
    ExitCode::SUCCESS
}

/// Waits for SIGTERM or SIGINT; a SIGHUP meanwhile starts a reload.
async fn next_stop_signal(
    signals: &mut Signals,
    proxy: &Arc<Proxy>,
    executor: &Executor<'static>,
    notify: &Option<Arc<Notify>>,
) -> Option<Signal> {
    while let Some(signal) = signals.next().await {
        match signal {
            Ok(Signal::Hup) => {
                executor
                    .spawn(reload_now(proxy.clone(), notify.clone()))
                    .detach();
            }
            Ok(signal) => return Some(signal),
            Err(error) => tracing::warn!(%error, "reading signals failed"),
        }
    }
    None
}

/// A reload asked for with SIGHUP; the stdout line comes from the events.
async fn reload_now(proxy: Arc<Proxy>, notify: Option<Arc<Notify>>) {
    tracing::info!("SIGHUP: reloading the files now");
    if let Some(notify) = &notify {
        notify.reloading();
    }
    if let Some(acceptor) = &proxy.acceptor {
        match acceptor.reload_now().await {
            Ok(reloaded) => tracing::info!(
                generation = reloaded.generation,
                serial = %reloaded.leaf.serial_hex(),
                "SIGHUP: reload applied"
            ),
            Err(error) => {
                tracing::warn!(%error, "SIGHUP: reload failed; keeping the last good config");
            }
        }
    }
    if let Some((connector, _)) = &proxy.connector {
        match connector.reload_now().await {
            Ok(reloaded) => tracing::info!(
                generation = reloaded.generation,
                "SIGHUP: target TLS reload applied"
            ),
            Err(error) => tracing::warn!(
                %error,
                "SIGHUP: target TLS reload failed; keeping the last good config"
            ),
        }
    }
    // Ready again either way: a failed reload keeps serving the last good
    // files.
    if let Some(notify) = &notify {
        notify.ready();
    }
}

/// Prints one stdout line per applied or failed reload of the files used
/// towards the target, prefixed `target ` (`target reload applied
/// generation=N serial=HEX`).
async fn report_target_reloads(mut events: impl Stream<Item = ConnectorEvent> + Unpin) {
    while let Some(event) = events.next().await {
        if matches!(
            event,
            ConnectorEvent::Applied { .. }
                | ConnectorEvent::Failed { .. }
                | ConnectorEvent::ExpiresSoon { .. }
                | ConnectorEvent::Expired { .. }
        ) {
            say(format_args!("target {event}"));
        }
    }
}

/// Prints one stdout line per applied or failed reload, as the example
/// servers do.
async fn report_reloads(mut events: impl Stream<Item = ReloadEvent> + Unpin) {
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

fn announce(what: &str, listener: &Async<TcpListener>) -> std::io::Result<()> {
    let addr = listener.get_ref().local_addr()?;
    say(format_args!("{what} {addr}"));
    Ok(())
}

/// Prints a line to stdout and flushes it: other programs wait for these.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

fn fail(message: std::fmt::Arguments<'_>) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
