//! A program under test, run as a child process and read line by line.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::wait::DEADLINE;

/// A child process, killed on drop: its stdout read line by line on a
/// thread, its stderr kept.
#[derive(Debug)]
pub struct Process {
    child: Child,
    lines: Receiver<String>,
    seen: Mutex<Vec<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Process {
    /// Starts `command` with stdin closed and stdout and stderr piped.
    pub fn spawn(command: &mut Command) -> Self {
        let mut child = start(command);
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().expect("stderr");
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut sink = sink.lock().expect("lock");
                sink.push_str(&line);
                sink.push('\n');
            }
        });
        Self {
            child,
            lines,
            seen: Mutex::default(),
            stderr,
        }
    }

    /// The next stdout line starting with `prefix`, skipping others;
    /// panics, with what it printed, after [`DEADLINE`].
    pub fn expect_line(&self, prefix: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.lock().expect("lock").push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stdout line starting with {prefix:?} within {DEADLINE:?}; saw {:?}\nstderr:\n{}",
                    self.seen(),
                    self.stderr()
                ),
            }
        }
    }

    /// The stdout lines printed since the last look, without waiting.
    pub fn drain(&self) -> Vec<String> {
        let fresh: Vec<String> = self.lines.try_iter().collect();
        self.seen
            .lock()
            .expect("lock")
            .extend(fresh.iter().cloned());
        fresh
    }

    /// Every stdout line read so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for it to exit, up to `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` (stdin closed) to its end and returns what it printed;
/// kills it and panics if it has not exited within `deadline`.
pub fn run_within(command: &mut Command, deadline: Duration) -> Output {
    let mut child = start(command);
    let stdout = read_all(child.stdout.take().expect("stdout"));
    let stderr = read_all(child.stderr.take().expect("stderr"));
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not exit within {deadline:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Starts `command` with stdin closed and stdout and stderr piped.
fn start(command: &mut Command) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"))
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        all
    })
}

/// Polls `future` once with a waker that does nothing: how the
/// instruction-counting examples start a handshake.
pub fn poll_once<F: std::future::Future + Unpin>(mut future: F) {
    let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
    let _ = std::pin::Pin::new(&mut future).poll(&mut cx);
}

/// The instructions callgrind counts for one run of `program args`.
pub fn callgrind_instructions(program: &std::path::Path, args: &[&str]) -> anyhow::Result<u64> {
    use anyhow::Context as _;
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(program)
        .args(args)
        .output()
        .context("running valgrind (is it installed?)")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(output.status.success(), "valgrind failed: {stderr}");
    stderr
        .lines()
        .find_map(|line| line.split("Collected :").nth(1))
        .and_then(|count| count.trim().parse().ok())
        .with_context(|| format!("no instruction count in valgrind's output: {stderr}"))
}

/// Prints a table of the instructions one `what` of each of `kinds` costs
/// (see [`callgrind_per_item`]), with ratios against the first kind.
pub fn print_instruction_table(
    what: &str,
    program: &std::path::Path,
    kinds: &[&str],
    runs: [u64; 2],
) -> anyhow::Result<()> {
    let mut per_item = Vec::new();
    for kind in kinds {
        per_item.push(callgrind_per_item(program, kind, runs)?);
    }
    println!("| {what} | instructions | vs {} |", kinds[0]);
    println!("|---|---:|---:|");
    for (kind, count) in kinds.iter().zip(&per_item) {
        println!("| {kind} | {count:.0} | {:.3}x |", count / per_item[0]);
    }
    Ok(())
}

/// The instructions one item of `kind` costs: `program kind N` run under
/// callgrind for both counts of `runs`, the difference of the two counts
/// divided by the difference of the two N, whatever the start-up cost.
pub fn callgrind_per_item(
    program: &std::path::Path,
    kind: &str,
    runs: [u64; 2],
) -> anyhow::Result<f64> {
    let mut counts = [0; 2];
    for (count, n) in counts.iter_mut().zip(runs) {
        *count = callgrind_instructions(program, &[kind, &n.to_string()])?;
    }
    Ok(counts[1].saturating_sub(counts[0]) as f64 / (runs[1] - runs[0]) as f64)
}
