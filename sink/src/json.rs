//! Results as JSON, written by hand: the bytes `serde_json::to_vec` gives for
//! a [`Prediction`] (a test holds the two equal), without serde's machinery
//! per field. Serialising each result through serde took a tenth of the
//! Kafka path's CPU, most of it escaping ~35 constant keys and the strings of
//! the lineage one call at a time.

use serde_json::ser::{CompactFormatter, Formatter as _};
use switchyard_schemas::Prediction;

/// Appends `p` as JSON to `out`, exactly as `serde_json::to_writer` would.
pub(crate) fn write_prediction(out: &mut Vec<u8>, p: &Prediction) {
    let l = &p.lineage;
    out.extend_from_slice(b"{\"key\":");
    string(out, &p.key);
    out.extend_from_slice(b",\"score\":");
    match p.score {
        Some(v) => float(out, v),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"label\":");
    match p.label {
        Some(v) => int(out, v),
        None => out.extend_from_slice(b"null"),
    }
    if let Some(outputs) = &p.outputs {
        out.extend_from_slice(b",\"outputs\":");
        string(out, outputs);
    }
    out.extend_from_slice(b",\"features\":[");
    for (i, &f) in p.features.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if f.is_finite() {
            let _ = CompactFormatter.write_f32(out, f);
        } else {
            out.extend_from_slice(b"null");
        }
    }
    out.extend_from_slice(b"],\"latency_us\":");
    int(out, p.latency_us);
    out.extend_from_slice(b",\"lineage\":{\"lineage_id\":");
    string(out, &l.lineage_id);
    out.extend_from_slice(b",\"source_topic\":");
    string(out, &l.source.topic);
    out.extend_from_slice(b",\"source_partition\":");
    int(out, l.source.partition);
    out.extend_from_slice(b",\"source_offset\":");
    int(out, l.source.offset);
    out.extend_from_slice(b",\"kafka_timestamp_ms\":");
    match l.source.kafka_timestamp_ms {
        Some(ms) => int(out, ms),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"ingest_time_us\":");
    int(out, l.source.ingest_time_us);
    out.extend_from_slice(b",\"pipeline\":");
    string(out, &l.pipeline);
    out.extend_from_slice(b",\"manifest_hash\":");
    string(out, &l.manifest_hash);
    out.extend_from_slice(b",\"schema_id\":");
    string(out, &l.schema_id);
    out.extend_from_slice(b",\"schema_version\":");
    int(out, l.schema_version);
    out.extend_from_slice(b",\"preprocess_hash\":");
    string(out, &l.preprocess_hash);
    out.extend_from_slice(b",\"route\":{\"policy_version\":");
    string(out, &l.route.policy_version);
    out.extend_from_slice(b",\"rule_id\":");
    string(out, &l.route.rule_id);
    out.extend_from_slice(b",\"reason\":");
    string(out, &l.route.reason);
    out.extend_from_slice(b",\"route\":");
    string(out, &l.route.route);
    out.extend_from_slice(b",\"sensitivity\":");
    string(out, l.route.sensitivity.as_str());
    out.extend_from_slice(b",\"latency_tier\":");
    string(out, &l.route.latency_tier);
    out.extend_from_slice(b"},\"model\":{\"name\":");
    string(out, &l.model.name);
    out.extend_from_slice(b",\"version\":");
    string(out, &l.model.version);
    out.extend_from_slice(b",\"sha256\":");
    string(out, &l.model.sha256);
    out.extend_from_slice(b",\"provider\":");
    string(out, &l.model.provider);
    out.extend_from_slice(b",\"request_id\":");
    string(out, &l.model.request_id);
    out.extend_from_slice(b"},\"fallback\":");
    out.extend_from_slice(if l.fallback { b"true" } else { b"false" });
    out.extend_from_slice(b",\"shadow\":");
    out.extend_from_slice(if l.shadow { b"true" } else { b"false" });
    out.extend_from_slice(b",\"traceparent\":");
    string(out, &l.traceparent);
    out.extend_from_slice(b",\"run_id\":");
    string(out, &l.run_id);
    out.extend_from_slice(b"}}");
}

/// A JSON string: copied whole when nothing in it needs escaping (ids,
/// hashes, names: nearly always), else escaped by serde_json.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// A finite float as serde_json writes it; `null` otherwise (as serde_json).
fn float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let _ = CompactFormatter.write_f64(out, v);
    } else {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use switchyard_schemas::{Lineage, ModelRef, RouteInfo, Sensitivity, SourceCoords};

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9a-f]{0,64}",
            any::<String>(),
            Just("quote \" backslash \\ newline \n tab \t bell \u{7} del \u{7f} é 日本".to_string()),
        ]
    }

    fn float32() -> impl Strategy<Value = f32> {
        prop_oneof![any::<f32>(), Just(f32::NAN), Just(f32::INFINITY), Just(-0.0f32), Just(1e-45f32)]
    }

    prop_compose! {
        fn prediction()(
            s in proptest::collection::vec(text(), 19),
            score in proptest::option::of(prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::NEG_INFINITY)]),
            label in any::<Option<i64>>(),
            outputs in proptest::option::of(text()),
            features in proptest::collection::vec(float32(), 0..20),
            ints in (any::<i64>(), any::<i32>(), any::<i64>(), any::<Option<i64>>(), any::<i64>(), any::<u32>()),
            flags in (any::<bool>(), any::<bool>(), 0..4usize),
        ) -> Prediction {
            let sensitivity =
                [Sensitivity::Public, Sensitivity::Internal, Sensitivity::Pii, Sensitivity::Regulated][flags.2];
            Prediction {
                key: s[0].clone(),
                score,
                label,
                outputs,
                features,
                latency_us: ints.0,
                lineage: Lineage {
                    lineage_id: s[1].clone(),
                    source: SourceCoords {
                        topic: s[2].clone(),
                        partition: ints.1,
                        offset: ints.2,
                        kafka_timestamp_ms: ints.3,
                        ingest_time_us: ints.4,
                    },
                    pipeline: s[3].clone(),
                    manifest_hash: s[4].clone(),
                    schema_id: s[5].clone(),
                    schema_version: ints.5,
                    preprocess_hash: s[6].clone(),
                    route: RouteInfo {
                        policy_version: s[7].clone(),
                        rule_id: s[8].clone(),
                        reason: s[9].clone(),
                        route: s[10].clone(),
                        sensitivity,
                        latency_tier: s[11].clone(),
                    },
                    model: ModelRef {
                        name: s[12].clone(),
                        version: s[13].clone(),
                        sha256: s[14].clone(),
                        provider: s[15].clone(),
                        request_id: s[16].clone(),
                    },
                    fallback: flags.0,
                    shadow: flags.1,
                    traceparent: s[17].clone(),
                    run_id: s[18].clone(),
                },
            }
        }
    }

    proptest! {
        #[test]
        fn writes_what_serde_json_writes(p in prediction()) {
            let mut out = Vec::new();
            write_prediction(&mut out, &p);
            let want = serde_json::to_vec(&p).unwrap();
            prop_assert_eq!(String::from_utf8(out).unwrap(), String::from_utf8(want).unwrap());
        }
    }
}
