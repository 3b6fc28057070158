//! The bar `k2-admin maintain` draws on a terminal while it compacts: input bytes rewritten
//! of the run's total, rate, time left and the partition at work. Log lines go through
//! [`LogWriter`] so they print above the bar instead of through it. Off a terminal (and in
//! `--every` runs, which are services) there is no bar; the log lines say the same.

use std::io::{self, IsTerminal, Write};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use k2_maintain::progress::Progress;
use tracing_subscriber::fmt::MakeWriter;

static BARS: LazyLock<MultiProgress> =
    LazyLock::new(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));

/// Whether a person is watching stderr.
pub fn on_terminal() -> bool {
    io::stderr().is_terminal()
}

/// Log lines to stderr, each printed whole with the bars lifted out of its way.
#[derive(Clone, Copy)]
pub struct LogWriter;

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::new())
    }
}

/// One formatted log event, written when dropped.
pub struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            BARS.suspend(|| {
                let _ = io::stderr().write_all(&self.0);
            });
        }
    }
}

/// A compaction's bar, shown while it runs.
#[derive(Default)]
pub struct CompactionBar {
    bar: Mutex<Option<ProgressBar>>,
}

impl CompactionBar {
    fn with(&self, f: impl FnOnce(&ProgressBar)) {
        if let Some(bar) = self.bar.lock().expect("progress bar lock").as_ref() {
            f(bar);
        }
    }
}

impl Progress for CompactionBar {
    fn started(&self, table: &str, partitions: usize, bytes: u64) {
        let bar = BARS.add(ProgressBar::new(bytes));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:20}] {binary_bytes}/{binary_total_bytes} \
                 {binary_bytes_per_sec} ~{eta} left, {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{table} ({partitions} partitions)"));
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.bar.lock().expect("progress bar lock") = Some(bar);
    }

    fn partition(&self, partition: &str) {
        self.with(|b| b.set_message(partition.to_string()));
    }

    fn advanced(&self, bytes: u64) {
        self.with(|b| b.inc(bytes));
    }

    fn finished(&self) {
        if let Some(bar) = self.bar.lock().expect("progress bar lock").take() {
            bar.finish_and_clear();
            BARS.remove(&bar);
        }
    }
}
