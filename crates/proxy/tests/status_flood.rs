//! The status page under a flood of idle connections: peers that connect
//! to `--status` and send nothing must not keep a Prometheus scrape out.
//! Real binary, real loopback sockets, answers awaited under deadlines.
//!
//! The flood over the cap holds about 1,100 sockets in this process and as
//! many in the proxy, so each needs an `RLIMIT_NOFILE` of 2,048. When the
//! soft limit is lower and the hard limit allows it, the test runs again in
//! a child started by `sh -c 'ulimit -n 2048 …'` (the proxy inherits it);
//! when even the hard limit is too low it is skipped with a message, and
//! fails when `CI=true`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{echo_backend, Files, Proxy};
use tls_reload_testkit::{wait_until_blocking, Ca, DEADLINE};

/// How long a scrape may take, connect to last byte, however many idle
/// connections are open (Prometheus gives up after 10 s by default).
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// More idle connections than the status page keeps open at once (1,024).
const OVER_THE_CAP: usize = 1_100;

/// What the status page keeps open at once.
const CAP: usize = 1_024;

/// How long the page waits for a request head before answering 408.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// Idle connections are opened in batches smaller than the listen backlog
/// (128), each batch followed by a scrape. A scrape's answer means every
/// connection before it was accepted, so the backlog never overflows
/// (dropped SYNs would stall connects for a second) and the flood is
/// quick; and a scrape is checked at every stage of the flood.
const BATCH: usize = 100;

#[test]
fn metrics_answer_within_a_second_past_200_idle_connections() {
    let (proxy, status, _files) = start_with_status();
    let flood = flood(status, 200);
    println!(
        "/metrics answered in {:?} with 200 idle connections open (slowest {:?})",
        flood.last, flood.slowest
    );
    drop(proxy);
}

#[test]
fn metrics_answer_within_a_second_past_1100_idle_connections_over_the_cap() {
    const NAME: &str = "metrics_answer_within_a_second_past_1100_idle_connections_over_the_cap";
    if !enough_open_files(NAME, 2_048) {
        return;
    }
    let (proxy, status, _files) = start_with_status();
    let flood = flood(status, OVER_THE_CAP);
    println!(
        "/metrics answered in {:?} with {OVER_THE_CAP} idle connections open (slowest {:?}); \
         flood of {OVER_THE_CAP} in {:?}",
        flood.last, flood.slowest, flood.took
    );
    // Otherwise the first idle connections may have been closed by their
    // head timeout, and eviction could not be told from it.
    assert!(
        flood.took < HEAD_TIMEOUT,
        "the flood took {:?}, longer than the head timeout",
        flood.took
    );

    // The page made room by closing the oldest idle connection without an
    // answer (its head timeout would have answered 408)...
    let mut oldest = &flood.idle[0];
    oldest.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut byte = [0; 1];
    let closed = oldest.read(&mut byte);
    assert!(
        matches!(closed, Ok(0))
            || closed
                .as_ref()
                .is_err_and(|e| !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "the oldest idle connection was not closed unanswered: {closed:?} {:?}",
        String::from_utf8_lossy(&byte),
    );
    // ... and said so in a line or two with a count, not a line each.
    let evicted = |log: &str| -> Vec<u64> {
        log.lines()
            .filter_map(|line| line.split(" evicted=").nth(1))
            .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
            .collect()
    };
    let over = (OVER_THE_CAP - CAP) as u64;
    assert!(
        wait_until_blocking(DEADLINE, || {
            evicted(&proxy.stderr()).iter().sum::<u64>() >= over
        }),
        "no warning counting {over} evictions:\n{}",
        proxy.stderr()
    );
    let log = proxy.stderr();
    assert!(evicted(&log).len() <= 2, "too many eviction lines:\n{log}");
    // ... and counted in /metrics.
    let (_, answer) = scrape(status, flood.idle.len());
    let counted = answer
        .lines()
        .find_map(|line| line.strip_prefix("tls_reload_proxy_status_evictions_total "))
        .and_then(|value| value.trim().parse::<u64>().ok());
    assert!(
        counted.is_some_and(|n| n >= over),
        "evictions not counted (want at least {over}): {answer}"
    );
}

/// A proxy with `--status`, the status address and the proxy's files.
fn start_with_status() -> (Proxy, SocketAddr, Files) {
    let ca = Ca::new("proxy test CA");
    let files = Files::new(&ca, &ca.leaf(0x1001));
    let proxy = Proxy::start(&files, echo_backend(), &["--status", "127.0.0.1:0"]);
    let status = proxy.status.unwrap();
    (proxy, status, files)
}

/// Idle connections to the status page, and how scrapes fared among them.
struct Flood {
    /// The connections, oldest first; they sent nothing.
    idle: Vec<TcpStream>,
    /// How long the last scrape took, after all the idle connections.
    last: Duration,
    /// The slowest scrape.
    slowest: Duration,
    /// From the first connect to the last answer.
    took: Duration,
}

/// Opens `n` idle connections to `addr` in batches of [`BATCH`]; after
/// each batch, a scrape must be answered in full within [`ANSWER_WITHIN`].
fn flood(addr: SocketAddr, n: usize) -> Flood {
    let start = Instant::now();
    let mut idle = Vec::with_capacity(n);
    let mut slowest = Duration::ZERO;
    let mut last = Duration::ZERO;
    while idle.len() < n {
        for _ in 0..BATCH.min(n - idle.len()) {
            let i = idle.len();
            let stream = TcpStream::connect_timeout(&addr, DEADLINE)
                .unwrap_or_else(|e| panic!("idle connection {i} of {n} not made: {e}"));
            idle.push(stream);
        }
        let (elapsed, answer) = scrape(addr, idle.len());
        assert_metrics(&answer, idle.len());
        slowest = slowest.max(elapsed);
        last = elapsed;
    }
    Flood {
        idle,
        last,
        slowest,
        took: start.elapsed(),
    }
}

/// `GET /metrics` on a fresh connection, with `idle` connections open;
/// the whole answer, read to its end, must come within [`ANSWER_WITHIN`]
/// of the connect.
fn scrape(addr: SocketAddr, idle: usize) -> (Duration, String) {
    let start = Instant::now();
    let end = start + ANSWER_WITHIN;
    let left = || {
        end.checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    };
    let late = |what: &str, got: &[u8]| -> ! {
        panic!(
            "{what} after {:?}, more than {ANSWER_WITHIN:?}, with {idle} idle connections; got {:?}",
            start.elapsed(),
            String::from_utf8_lossy(got)
        )
    };
    let mut stream = TcpStream::connect_timeout(&addr, ANSWER_WITHIN)
        .unwrap_or_else(|e| late(&format!("no connection ({e})"), b""));
    stream.set_write_timeout(Some(ANSWER_WITHIN)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0; 16 * 1024];
    loop {
        let Some(left) = left() else {
            late("no complete answer", &answer)
        };
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => late(&format!("read failed ({e})"), &answer),
        }
    }
    let elapsed = start.elapsed();
    if elapsed > ANSWER_WITHIN {
        late("answer complete", &answer);
    }
    (elapsed, String::from_utf8(answer).unwrap())
}

fn assert_metrics(answer: &str, idle: usize) {
    assert!(
        answer.starts_with("HTTP/1.1 200 OK\r\n"),
        "after {idle} idle connections: {answer}"
    );
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    assert!(
        body.contains("\ntls_reload_connections_active 0\n"),
        "{body}"
    );
}

// ---------------------------------------------------------------------------
// Open files

/// Set in the child that runs a test again with a raised limit.
const RAISED: &str = "TLS_RELOAD_PROXY_TEST_RAISED_NOFILE";

/// Whether this process may open `needed` files, raising the limit by
/// running test `name` again in a child if the hard limit allows it (then
/// `false`: the child ran it). Skips (`false`) when it cannot, unless
/// `CI=true`.
fn enough_open_files(name: &str, needed: u64) -> bool {
    let Some((soft, hard)) = open_files_limits() else {
        return true; // not Linux: try anyway
    };
    if soft >= needed {
        return true;
    }
    let raised = std::env::var_os(RAISED).is_some();
    if hard < needed || raised {
        let message = format!("RLIMIT_NOFILE is {soft} (hard {hard}), {needed} needed");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        println!("skipped: {message}");
        return false;
    }
    let output = Command::new("sh")
        .args(["-c", "ulimit -n \"$1\" && shift && exec \"$@\"", "sh"])
        .arg(needed.to_string())
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(RAISED, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the child with ulimit -n {needed} failed"
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "the child did not run {name}"
    );
    false
}

/// The soft and hard `RLIMIT_NOFILE` from `/proc/self/limits`.
fn open_files_limits() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..]
        .split_whitespace()
        .map(|n| n.parse().unwrap_or(u64::MAX));
    Some((numbers.next()?, numbers.next()?))
}
