//! Log output in tests: to the test's captured output, or into a buffer.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Logs to the test's captured output; `RUST_LOG` filters (default: warn).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A `MakeWriter` (through a closure) whose clones share one buffer: what
/// a tracing subscriber wrote, for a test to read back.
#[derive(Clone, Debug, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().expect("lock").clone()
    }

    /// Everything written so far, line by line (lossily as UTF-8).
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.bytes())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}
