//! A running ONNX worker takes up new registry versions without a restart:
//! as a canary (a stable share of events by lineage id), in shadow, or as a
//! replacement; it follows the promotions and rejections of the registry's
//! `rollout.json`, and a version that cannot be loaded never costs an answer.

use std::path::{Path, PathBuf};

use switchyard_schemas::{RolloutDecision, RolloutState};
use switchyard_workers::{EventAnswers, OnnxWorker, OnnxWorkerConfig, Role};

use crate::support::copy_registry;

/// A copy of the committed registry (`fraud/1`) in a temporary folder, and
/// its path.
fn registry() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let registry = t.path().join("models");
    copy_registry(&registry);
    // Start from no rollout state, whatever the working copy holds.
    let _ = std::fs::remove_file(RolloutState::path(&registry, "fraud"));
    (t, registry)
}

/// Registers version `to` as a copy of version 1; `broken` makes its hash
/// disagree with its metadata.
fn register(registry: &Path, to: &str, broken: bool) {
    let (from, dir) = (registry.join("fraud/1"), registry.join("fraud").join(to));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(from.join("model.onnx"), dir.join("model.onnx")).unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(from.join("metadata.json")).unwrap()).unwrap();
    meta["version"] = to.into();
    if broken {
        meta["sha256"] = "00".repeat(32).into();
    }
    std::fs::write(dir.join("metadata.json"), meta.to_string()).unwrap();
}

fn worker(registry: &Path, reload: &str) -> OnnxWorker {
    switchyard_workers::init_runtime(None).unwrap();
    let cfg: OnnxWorkerConfig = serde_yaml::from_str(&format!(
        "{{model: fraud, registry: '{}', reload: {{poll_ms: 100, {reload}}}}}",
        registry.display()
    ))
    .unwrap();
    let entry = switchyard_workers::registry::lookup(registry, "fraud", Some("1")).unwrap();
    OnnxWorker::start("fraud", &cfg, Path::new("."), &entry.metadata.feature_order).unwrap()
}

fn answer(w: &OnnxWorker, n: usize) -> EventAnswers {
    let width = 16;
    let features: Vec<f32> = (0..n * width).map(|i| (i % 7) as f32 / 7.0).collect();
    let ids: Vec<String> = (0..n).map(|i| format!("lineage-{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(w.answer(features, &ids)).unwrap()
}

fn served_versions(a: &EventAnswers) -> Vec<(String, Role)> {
    a.served.iter().map(|r| (r.model.version.clone(), r.role)).collect()
}

fn events(w: &OnnxWorker) -> Vec<(&'static str, String)> {
    w.poll().into_iter().map(|e| (e.event.as_str(), e.version)).collect()
}

fn decide(registry: &Path, version: &str, promote: bool) {
    let mut s = RolloutState::load(registry, "fraud").unwrap();
    let d = RolloutDecision {
        version: version.into(),
        at: "2026-11-23T00:00:00Z".into(),
        reason: "test".into(),
        evaluated_from_us: None,
        evaluated_to_us: None,
    };
    if promote {
        s.promote(d)
    } else {
        s.reject(d)
    }
    s.save(registry, "fraud").unwrap();
}

#[test]
fn canary_candidates_follow_promotions_and_rejections_without_a_restart() {
    let (_dir, reg) = registry();
    let r = reg.as_path();
    let w = worker(r, "rollout: canary, canary_fraction: 0.3");
    assert_eq!(RolloutState::load(r, "fraud").unwrap().stable.as_deref(), Some("1"), "recorded on first start");
    assert!(events(&w).is_empty());

    register(r, "2", false);
    assert_eq!(events(&w), [("candidate_started", "2".to_string())]);
    let a = served_versions(&answer(&w, 2000));
    let canary = a.iter().filter(|(v, role)| v == "2" && *role == Role::Canary).count();
    assert_eq!(a.iter().filter(|(v, _)| v == "2").count(), canary, "version 2 answers only as the canary");
    assert_eq!(a.iter().filter(|(v, role)| v == "1" && *role == Role::Stable).count(), 2000 - canary);
    assert!((500..700).contains(&canary), "30% of 2,000 events: {canary}");
    assert_eq!(served_versions(&answer(&w, 2000)), a, "the same lineage ids take the same side");

    // A broken newer version is reported once and leaves the canary running.
    register(r, "3", true);
    let e = w.poll();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].event.as_str(), e[0].version.as_str()), ("load_failed", "3"));
    assert!(e[0].detail.contains("sha256"), "{}", e[0].detail);
    assert!(events(&w).is_empty(), "not tried again");
    assert_eq!(w.candidate().map(|m| m.version).as_deref(), Some("2"));

    // Rejected: it stops; version 3 stays unloadable, so 1 serves alone.
    decide(r, "2", false);
    assert_eq!(events(&w), [("rolled_back", "2".to_string())]);
    assert!(served_versions(&answer(&w, 500)).iter().all(|(v, role)| v == "1" && *role == Role::Stable));

    // The next good version is the candidate, then promoted: it serves all.
    register(r, "4", false);
    assert_eq!(events(&w), [("candidate_started", "4".to_string())]);
    decide(r, "4", true);
    assert_eq!(events(&w), [("promoted", "4".to_string())]);
    assert!(served_versions(&answer(&w, 500)).iter().all(|(v, role)| v == "4" && *role == Role::Stable));
    assert_eq!(w.candidate(), None);

    // A restart serves the promoted version.
    let again = worker(r, "rollout: canary");
    assert_eq!(again.model().version, "4");
    assert_eq!(again.candidate(), None);
}

#[test]
fn shadow_candidates_score_beside_the_stable_version() {
    let (_dir, reg) = registry();
    let r = reg.as_path();
    let w = worker(r, "rollout: shadow, shadow_sample: 0.5");
    register(r, "2", false);
    assert_eq!(events(&w), [("candidate_started", "2".to_string())]);
    let a = answer(&w, 1000);
    assert!(a.served.iter().all(|x| x.model.version == "1" && x.role == Role::Stable), "only version 1 answers");
    assert!((400..600).contains(&a.shadow.len()), "half the events in shadow: {}", a.shadow.len());
    for (row, s) in &a.shadow {
        assert_eq!((s.model.version.as_str(), s.role), ("2", Role::Shadow));
        assert_eq!(s.score, a.served[*row].score, "the same model file scores alike");
    }
}

#[test]
fn replace_takes_up_the_newest_version_at_once() {
    let (_dir, reg) = registry();
    let r = reg.as_path();
    let w = worker(r, "rollout: replace");
    register(r, "2", false);
    assert_eq!(events(&w), [("replaced", "2".to_string())]);
    assert!(served_versions(&answer(&w, 100)).iter().all(|(v, role)| v == "2" && *role == Role::Stable));
    assert!(!RolloutState::path(r, "fraud").exists(), "replace keeps no rollout state");
}

#[test]
fn a_pinned_version_cannot_reload() {
    let cfg: OnnxWorkerConfig = serde_yaml::from_str("{model: fraud, version: '1', reload: {}}").unwrap();
    let mut p = switchyard_schemas::Problems::default();
    cfg.validate("workers.fraud", &mut p);
    assert!(p.to_string().contains("workers.fraud.reload"), "{p}");
}
