//! Start-up, signals and shutdown: the executor threads, the first load of
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
use tls_reload_acceptor::{ReloadEvent, ReloadingAcceptor};

use crate::args::Args;
use crate::metrics::Counters;
use crate::proxy::Proxy;
use crate::status::{self, Sources};

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

/// Runs the proxy on `args.threads` threads until a signal stops it.
pub(crate) fn run(args: Args) -> ExitCode {
    let executor = Arc::new(Executor::new());
    let (stop_workers, stopped) = smol::channel::bounded::<()>(1);
    thread::scope(|scope| {
        for n in 1..args.threads {
            let (executor, stopped) = (executor.clone(), stopped.clone());
            let spawned = thread::Builder::new()
                .name(format!("proxy-{n}"))
                .spawn_scoped(scope, move || smol::block_on(executor.run(stopped.recv())));
            if let Err(error) = spawned {
                tracing::warn!(%error, "cannot start a worker thread; going on with fewer");
            }
        }
        let code = smol::block_on(executor.run(main(args, executor.clone())));
        drop(stop_workers);
        code
    })
}

/// Everything, on the executor.
async fn main(args: Args, executor: Arc<Executor<'static>>) -> ExitCode {
    let acceptor = match args.acceptor().build().await {
        Ok(acceptor) => acceptor,
        Err(error) => return fail(format_args!("{error}")),
    };
    let listener = match Async::<TcpListener>::bind(args.listen) {
        Ok(listener) => listener,
        Err(error) => return fail(format_args!("--listen {}: {error}", args.listen)),
    };
    let status_listener = match args.status.map(Async::<TcpListener>::bind).transpose() {
        Ok(listener) => listener,
        Err(error) => return fail(format_args!("--status: {error}")),
    };
    // Before the first line is printed, so that a signal sent as soon as the
    // proxy says it listens is handled rather than fatal.
    let mut signals = match Signals::new([Signal::Hup, Signal::Term, Signal::Int]) {
        Ok(signals) => signals,
        Err(error) => return fail(format_args!("cannot handle signals: {error}")),
    };
    executor.spawn(acceptor.reloader()).detach();
    executor.spawn(report_reloads(acceptor.events())).detach();
    let counters = Arc::new(Counters::default());
    if let Err(error) = announce("listening on", &listener) {
        return fail(format_args!("--listen: {error}"));
    }
    if let Some(status_listener) = status_listener {
        if let Err(error) = announce("status on", &status_listener) {
            return fail(format_args!("--status: {error}"));
        }
        let sources = Sources {
            acceptor: acceptor.clone(),
            counters: counters.clone(),
        };
        let serving = status::serve(status_listener, sources, executor.clone());
        executor.spawn(serving).detach();
    }
    tracing::info!(target = %args.target, max_connections = args.max_connections, "proxy started");
    let proxy = Arc::new(Proxy {
        acceptor: acceptor.clone(),
        target: args.target.clone(),
        connect_timeout: args.connect_timeout,
        max_connections: args.max_connections,
        counters: counters.clone(),
    });
    let stop = next_stop_signal(&mut signals, &acceptor, &executor);
    let (signal, drain) = proxy.serve(listener, &executor, stop).await;
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
        let signal = next_stop_signal(&mut signals, &acceptor, &executor).await;
        tracing::warn!(?signal, "second signal; exiting now");
    };
    smol::future::or(drained, smol::future::or(timed_out, again)).await;
    ExitCode::SUCCESS
}

/// Waits for SIGTERM or SIGINT; a SIGHUP meanwhile starts a reload.
async fn next_stop_signal(
    signals: &mut Signals,
    acceptor: &ReloadingAcceptor,
    executor: &Executor<'static>,
) -> Option<Signal> {
    while let Some(signal) = signals.next().await {
        match signal {
            Ok(Signal::Hup) => {
                executor.spawn(reload_now(acceptor.clone())).detach();
            }
            Ok(signal) => return Some(signal),
            Err(error) => tracing::warn!(%error, "reading signals failed"),
        }
    }
    None
}

/// A reload asked for with SIGHUP; the stdout line comes from the events.
async fn reload_now(acceptor: ReloadingAcceptor) {
    tracing::info!("SIGHUP: reloading the files now");
    match acceptor.reload_now().await {
        Ok(reloaded) => tracing::info!(
            generation = reloaded.generation,
            serial = %reloaded.leaf.serial_hex(),
            "SIGHUP: reload applied"
        ),
        Err(error) => tracing::warn!(%error, "SIGHUP: reload failed; keeping the last good config"),
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
