//! The run's operational events ([`switchyard_schemas::notice`]) into the
//! `audit` table: gathered for half a second and written as one file, so a
//! burst of rebalances or a flapping circuit adds a file, not hundreds.

use std::sync::Mutex;
use std::time::Duration;
use switchyard_schemas::now_us;

use switchyard_analysis::audit;
use switchyard_schemas::Notice;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Where notices go now: the writer of the running pipeline.
static CURRENT: Mutex<Option<mpsc::UnboundedSender<(i64, Notice)>>> = Mutex::new(None);

/// Writes the notices of one run; [`AuditLog::finish`] writes the rest.
pub struct AuditLog {
    task: JoinHandle<()>,
}

impl AuditLog {
    /// Starts writing this process's notices to the tables at `tables`,
    /// rows of `pipeline`.
    pub fn start(tables: switchyard_schemas::TableRoot, pipeline: String) -> Self {
        switchyard_schemas::install_notices(|n| {
            if let Some(tx) = CURRENT.lock().ok().and_then(|c| c.clone()) {
                let _ = tx.send((now_us(), n));
            }
        });
        let (tx, mut rx) = mpsc::unbounded_channel::<(i64, Notice)>();
        if let Ok(mut c) = CURRENT.lock() {
            *c = Some(tx);
        }
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                let gather = tokio::time::sleep(Duration::from_millis(500));
                tokio::pin!(gather);
                loop {
                    tokio::select! {
                        n = rx.recv() => match n {
                            Some(n) => batch.push(n),
                            None => break,
                        },
                        _ = &mut gather => break,
                    }
                }
                for (_, n) in &batch {
                    tracing::info!(event = n.event.as_str(), worker = %n.worker, "{}", n.detail);
                }
                let (tables, pipeline) = (tables.clone(), pipeline.clone());
                let written =
                    tokio::task::spawn_blocking(move || audit::append_notices(&tables, &pipeline, &batch)).await;
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "cannot write the audit table"),
                    Err(e) => tracing::error!(error = %e, "the audit writer failed"),
                }
            }
        });
        Self { task }
    }

    /// Stops taking notices and writes those still waiting.
    pub async fn finish(self) {
        if let Ok(mut c) = CURRENT.lock() {
            *c = None;
        }
        let _ = self.task.await;
    }
}
