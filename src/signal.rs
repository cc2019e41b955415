//! Stopping: the first Ctrl-C or SIGTERM ends a run gracefully — stop
//! fetching, finish the chunks in flight, roll the Parquet files, wait for
//! Kafka's acknowledgements, commit, leave the group — within a grace
//! period; a second signal, or the grace period running out, exits at once.
//! Exiting at once loses nothing either: offsets are committed only after
//! results are durable, so what was not committed is read again and what
//! was already durable is recognised and skipped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::watch;

/// Grace period when the manifest sets none (`service.shutdown_timeout_ms`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Exit status of a stop cut short (a second signal, or the grace period over).
const CUT_SHORT: i32 = 130;

/// Signals seen so far, once the listener is installed.
static SIGNALS: OnceLock<watch::Sender<u32>> = OnceLock::new();
/// Set by the first signal (read by `/readyz`).
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Starts listening for Ctrl-C and SIGTERM (once per process; later calls
/// keep the first grace period). Must run inside the Tokio runtime.
pub fn install(grace: Duration) {
    let mut fresh = false;
    let tx = SIGNALS.get_or_init(|| {
        fresh = true;
        watch::channel(0).0
    });
    if !fresh {
        return;
    }
    let tx = tx.clone();
    tokio::spawn(async move {
        let mut signals = Signals::new();
        let mut count = 0;
        loop {
            signals.next().await;
            count += 1;
            REQUESTED.store(true, Ordering::Relaxed);
            tx.send_replace(count);
            if count == 1 {
                switchyard_schemas::notice(switchyard_schemas::Notice::new(
                    switchyard_schemas::AuditEvent::ShutdownRequested,
                    "pipeline",
                    format!("stop asked for (SIGTERM or Ctrl-C); grace period {:.1} s", grace.as_secs_f64()),
                ));
                tracing::info!(
                    grace_s = grace.as_secs_f64(),
                    "stopping: finishing the records in flight (a second signal exits at once)"
                );
                std::thread::spawn(move || {
                    std::thread::sleep(grace);
                    eprintln!(
                        "switchyard: the graceful stop did not finish within {:.1} s; exiting now (nothing is lost: \
                         uncommitted records are read again, durable ones skipped)",
                        grace.as_secs_f64()
                    );
                    std::process::exit(CUT_SHORT);
                });
            } else {
                eprintln!(
                    "switchyard: second signal; exiting now (nothing is lost: uncommitted records are read again, \
                     durable ones skipped)"
                );
                std::process::exit(CUT_SHORT);
            }
        }
    });
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// Resolves at the first Ctrl-C or SIGTERM (installing the listener with
/// the default grace period if nothing installed it).
pub async fn shutdown_signal() {
    install(DEFAULT_GRACE);
    let Some(tx) = SIGNALS.get() else { return std::future::pending().await };
    let mut rx = tx.subscribe();
    let _ = rx.wait_for(|&n| n > 0).await;
}

/// Ctrl-C and SIGTERM, each listened for once for the whole process (no
/// signal is missed between two waits).
struct Signals {
    #[cfg(unix)]
    both: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let both = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
                (Ok(i), Ok(t)) => Some((i, t)),
                _ => {
                    tracing::warn!("cannot listen for SIGINT/SIGTERM; stop with SIGKILL (nothing is lost)");
                    None
                }
            };
            Signals { both }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        match &mut self.both {
            Some((int, term)) => {
                tokio::select! {
                    _ = int.recv() => {},
                    _ = term.recv() => {},
                }
            }
            None => std::future::pending().await,
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
