//! Progress on the terminal (files, bytes, rate, ETA), redrawn in place twice a second; a line
//! every ten seconds when stderr is not a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    total: AtomicU64,
    done: AtomicU64,
    bytes: AtomicU64,
    started: Instant,
    stop: AtomicBool,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                total: AtomicU64::new(0),
                done: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                started: Instant::now(),
                stop: AtomicBool::new(false),
            }),
        }
    }

    pub fn set_total(&self, n: u64) {
        self.inner.total.store(n, Ordering::Relaxed);
    }
    pub fn advance(&self, n: u64) {
        self.inner.done.fetch_add(n, Ordering::Relaxed);
    }
    pub fn read(&self, n: u64) {
        self.inner.bytes.fetch_add(n, Ordering::Relaxed);
    }
    pub fn bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    pub fn line(&self) -> String {
        let i = &self.inner;
        let (done, total, bytes) =
            (i.done.load(Ordering::Relaxed), i.total.load(Ordering::Relaxed), i.bytes.load(Ordering::Relaxed));
        let secs = i.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let eta =
            if rate > 0.0 && total > done { format!("{:.0} s", (total - done) as f64 / rate) } else { "-".into() };
        let pct = if total > 0 { done as f64 * 100.0 / total as f64 } else { 100.0 };
        format!(
            "files {done}/{total} ({pct:.0}%), {:.1} MB read, {rate:.0} files/s, {:.1} MB/s, ETA {eta}",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / secs
        )
    }

    /// Draw until `finish` (a background task).
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let tty = std::io::stderr().is_terminal();
            let every = if tty { Duration::from_millis(500) } else { Duration::from_secs(10) };
            while !me.inner.stop.load(Ordering::Relaxed) {
                tokio::time::sleep(every).await;
                let mut err = std::io::stderr().lock();
                if tty {
                    let _ = write!(err, "\r\x1b[2K{}", me.line());
                } else {
                    let _ = writeln!(err, "{}", me.line());
                }
            }
        })
    }

    pub fn finish(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        if std::io::stderr().is_terminal() {
            eprintln!("\r\x1b[2K{}", self.line());
        }
    }
}
