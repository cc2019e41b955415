//! The monitor in the worker: drift and accuracy evaluated on the
//! manifest's schedule beside a streaming run, and `switchyard monitor`
//! (once, or on the schedule).

use anyhow::Context as _;
use switchyard_analysis::{render, Monitor, RolloutOutcome};
use switchyard_schemas::now_us;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::drift::parse_time;
use crate::manifest::Plan;
use crate::pipeline::SideReport;

/// Builds the manifest's monitor, if it has one.
pub fn build(plan: &Plan) -> anyhow::Result<Option<Monitor>> {
    let Some(m) = plan.monitor.clone() else { return Ok(None) };
    let monitor = Monitor::new(
        m.config,
        m.model,
        plan.features.clone(),
        &plan.loaded.base,
        plan.tables.clone(),
        m.registry,
        plan.manifest().name.clone(),
        plan.loaded.hash.clone(),
        &m.bootstrap_servers,
    )?;
    Ok(Some(monitor))
}

/// Runs the monitor every interval until `stop` turns true. A failed
/// evaluation is logged and retried at the next tick: monitoring must not
/// stop the pipeline.
pub fn spawn(monitor: Monitor, mut stop: watch::Receiver<bool>) -> JoinHandle<anyhow::Result<SideReport>> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(monitor.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut emitted = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => match monitor.evaluate(now_us()).await {
                    Ok(e) => {
                        emitted += e.emitted.len() as u64;
                        for g in &e.report.groups {
                            tracing::info!(version = %g.model_version, route = %g.route, rows = g.rows,
                                drift_share = g.drift_share, drifted = ?g.drifted(), "drift evaluated");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "drift evaluation failed; retrying at the next interval"),
                },
                _ = stop.changed() => break,
            }
        }
        Ok(SideReport::Triggers(emitted))
    })
}

/// `switchyard monitor`: evaluate now (once, or on the schedule).
pub async fn command(plan: &Plan, once: bool, now: Option<String>) -> anyhow::Result<()> {
    let monitor = build(plan)?.with_context(|| format!("{}: has no `monitor:` section", plan.loaded.path.display()))?;
    if once {
        let at = match now {
            Some(t) => parse_time(&t)?,
            None => now_us(),
        };
        let e = monitor.evaluate(at).await?;
        print!("{}", render::text(&e.report, &e.accuracy, &[]));
        for t in &e.emitted {
            println!(
                "\nretrain trigger {} for {} v{} ({}): {}",
                t.trigger_id, t.model.name, t.model.version, t.reason, t.summary
            );
        }
        for (v, why) in &e.suppressed {
            println!("\nretrain trigger for v{v} held back: {why}");
        }
        match &e.rollout {
            Some(RolloutOutcome::Waiting { candidate, labelled }) => {
                println!("\ncandidate v{candidate}: waiting, {labelled} labelled predictions so far")
            }
            Some(RolloutOutcome::Promoted(d)) => println!("\ncandidate v{} promoted: {}", d.version, d.reason),
            Some(RolloutOutcome::RolledBack(d)) => {
                println!("\ncandidate v{} rolled back: {}", d.version, d.reason)
            }
            None => {}
        }
        if e.emitted.is_empty() && e.suppressed.is_empty() {
            println!("\nno retrain trigger: nothing crossed a threshold");
        }
        return Ok(());
    }
    let (tx, rx) = watch::channel(false);
    let task = spawn(monitor, rx);
    crate::signal::shutdown_signal().await;
    let _ = tx.send(true);
    let n = match task.await?? {
        SideReport::Triggers(n) => n,
        _ => 0,
    };
    println!("monitor stopped; {n} trigger(s) emitted");
    Ok(())
}
