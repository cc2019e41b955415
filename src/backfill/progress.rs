//! Progress of a running backfill: a bar with rate and ETA on a terminal,
//! plain periodic lines otherwise (logs, CI).

use std::io::IsTerminal as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::pipeline::Counters;

/// How progress is shown.
#[derive(Debug, Clone, Copy)]
pub struct ProgressOptions {
    /// Rows already durable from earlier attempts.
    pub done_before: u64,
    /// Rows in the whole run.
    pub total: u64,
    /// Plain lines this often when stderr is not a terminal (none when zero).
    pub every: Duration,
}

/// Shows progress until `stop` turns true.
pub fn spawn(
    counters: Arc<Counters>,
    opts: ProgressOptions,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(opts.total), ProgressDrawTarget::stderr_with_hz(4));
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows {per_sec} ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(opts.done_before);
            bar.reset_eta();
            bar
        });
        let tick = if bar.is_some() { Duration::from_millis(250) } else { opts.every.max(Duration::from_millis(250)) };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stop.changed() => break,
            }
            let read = counters.records.load(Relaxed);
            let dlq = counters.dlq.load(Relaxed);
            let pos = opts.done_before + read;
            match &bar {
                Some(b) => {
                    b.set_position(pos);
                    b.set_message(format!("dlq {dlq}"));
                }
                None if !opts.every.is_zero() => eprintln!("{}", line(started.elapsed(), read, dlq, &opts)),
                None => {}
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    })
}

/// One plain progress line.
fn line(elapsed: Duration, read: u64, dlq: u64, opts: &ProgressOptions) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = read as f64 / secs;
    let done = opts.done_before + read;
    let left = opts.total.saturating_sub(done);
    let eta = if rate > 0.0 { format!("{:.0} s", left as f64 / rate) } else { "?".into() };
    let pct = if opts.total > 0 { 100.0 * done as f64 / opts.total as f64 } else { 100.0 };
    format!("[{secs:7.1}s] {done} / {} rows ({pct:.1}%)  {rate:.0} rows/s  dlq {dlq}  ETA {eta}", opts.total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_has_position_rate_and_eta() {
        let opts = ProgressOptions { done_before: 100, total: 1100, every: Duration::from_secs(10) };
        let l = line(Duration::from_secs(2), 400, 3, &opts);
        assert!(l.contains("500 / 1100 rows (45.5%)"), "{l}");
        assert!(l.contains("200 rows/s") && l.contains("dlq 3") && l.contains("ETA 3 s"), "{l}");
    }
}
