//! The committed fraud model, run through switchyard's own decoding,
//! pre-processing and ONNX Runtime, gives the features and scores its
//! training script recorded (`pipelines/models/fraud/1/reference.jsonl`).

use std::sync::Arc;

use switchyard_ingest::{Decoder, LineageContext, PreprocessConfig, Preprocessor};
use switchyard_schemas::{EventSchema, RawRecord};
use switchyard_workers::registry;
use switchyard_workers::{BatchModel, ExecutionProviderKind, OnnxModel};

use crate::support::repo;

#[test]
fn rust_features_and_scores_match_the_training_script() {
    let manifest: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join("pipelines/fraud.yaml")).unwrap()).unwrap();
    let schema: EventSchema = serde_yaml::from_value(manifest["schema"].clone()).unwrap();
    let spec: PreprocessConfig = serde_yaml::from_value(manifest["preprocess"].clone()).unwrap();
    let schema = Arc::new(schema);
    let pre = Preprocessor::build(&spec, &schema).unwrap();
    let decoder = Decoder::new(schema, LineageContext::default());

    switchyard_workers::init_runtime(None).unwrap();
    let entry = registry::lookup(&repo().join("pipelines/models"), "fraud", Some("1")).unwrap();
    entry.check_features(pre.feature_names()).unwrap();
    let mut model = OnnxModel::load(&entry, 1, ExecutionProviderKind::Cpu).unwrap();

    let text = std::fs::read_to_string(repo().join("pipelines/models/fraud/1/reference.jsonl")).unwrap();
    let mut features = Vec::new();
    let mut want_scores = Vec::new();
    let mut want_labels = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let raw =
            RawRecord { payload: Some(r["event"].to_string().into_bytes()), offset: i as i64, ..Default::default() };
        let event = decoder.decode(&raw).unwrap_or_else(|d| panic!("reference event {i}: {}", d.message));
        let start = features.len();
        pre.features_into(&event, &mut features).unwrap();
        for (j, want) in r["features"].as_array().unwrap().iter().enumerate() {
            let got = features[start + j];
            let want = want.as_f64().unwrap() as f32;
            assert!((got - want).abs() <= 1e-5, "event {i} feature {j}: {got} vs {want}");
        }
        want_scores.push(r["score"].as_f64().unwrap() as f32);
        want_labels.push(r["label"].as_i64().unwrap());
    }
    let rows = want_scores.len();
    assert!(rows >= 64);
    let got = model.run(&features, rows).unwrap();
    for (i, (score, want)) in got.score.iter().zip(&want_scores).enumerate() {
        assert!((score - want).abs() <= 1e-5, "event {i}: {score} vs {want}");
    }
    assert_eq!(got.label, want_labels);
    assert_eq!(model.provider(), "cpu");
}
