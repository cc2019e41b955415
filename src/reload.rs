//! Model reload while running: for each local worker with `reload`, a task
//! that reads the registry on its schedule and takes up new versions
//! (canary, shadow or replace); every change goes to the `audit` table.

use std::sync::Arc;
use switchyard_schemas::now_us;

use switchyard_analysis::audit::{self, AuditRow};
use switchyard_workers::dispatch::{Worker, WorkerSet};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::pipeline::SideReport;

/// Starts, for each local worker with `reload`, the task that reads the
/// registry every `poll_ms` and takes up new versions; each change goes to
/// the `audit` table. The tasks end when `stop` turns true and return what
/// changed.
pub fn spawn(
    workers: &Arc<WorkerSet>,
    pipeline: &str,
    tables: &switchyard_schemas::TableRoot,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<anyhow::Result<SideReport>>> {
    let mut tasks = Vec::new();
    for (name, w) in &workers.list {
        let Worker::Local(worker) = w else { continue };
        let Some(every) = worker.poll_interval() else { continue };
        let (worker, name, pipeline, tables) = (worker.clone(), name.clone(), pipeline.to_string(), tables.clone());
        let all = workers.clone();
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut changes = Vec::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                let w = worker.clone();
                let events = match tokio::task::spawn_blocking(move || w.poll()).await {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!(worker = %name, error = %e, "model reload failed");
                        continue;
                    }
                };
                if !events.is_empty() {
                    crate::telemetry::note_models(&all);
                }
                let model = worker.model().name;
                for e in events {
                    let row = AuditRow {
                        pipeline: &pipeline,
                        event: e.event,
                        model: &model,
                        version: &e.version,
                        worker: &name,
                        detail: &e.detail,
                    };
                    if let Err(err) = audit::append(&tables, now_us(), &row) {
                        tracing::error!(error = %err, "cannot write the audit table");
                    }
                    changes.push(format!("{} {}: {}", e.event, e.version, e.detail));
                }
            }
            Ok(SideReport::ModelChanges(changes))
        }));
    }
    tasks
}
