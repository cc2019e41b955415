//! Fixtures shared by the crate's tests: a card-transaction schema, its
//! workers, and helpers to write policies in YAML and events by field name.

use std::collections::HashMap;

use switchyard_schemas::{Event, EventSchema, FieldSpec, FieldType, Lineage, Sensitivity, Value};

use crate::{PolicyConfig, RouteKind, Router};

/// `card_txn`: string, numeric, bool and tagged fields.
pub fn schema() -> EventSchema {
    let f = |name: &str, ty: FieldType, sensitivity: Option<Sensitivity>| FieldSpec {
        name: name.to_string(),
        ty,
        required: false,
        sensitivity,
        from: None,
    };
    EventSchema {
        id: "card_txn".to_string(),
        version: 1,
        key_field: Some("txn_id".to_string()),
        reject_unknown_fields: false,
        fields: vec![
            f("txn_id", FieldType::String, None),
            f("customer_email", FieldType::String, Some(Sensitivity::Pii)),
            f("note", FieldType::String, None),
            f("amount", FieldType::Float, None),
            f("channel", FieldType::String, None),
            f("latency_tier", FieldType::String, None),
            f("merchant_id", FieldType::Int, Some(Sensitivity::Internal)),
            f("flagged", FieldType::Bool, None),
        ],
        format: Default::default(),
        registry: None,
    }
}

/// Two local and two cloud workers.
pub fn routes() -> HashMap<String, RouteKind> {
    [
        ("fraud", RouteKind::Local),
        ("fraud_cpu", RouteKind::Local),
        ("gpt", RouteKind::Cloud),
        ("summarize", RouteKind::Cloud),
    ]
    .into_iter()
    .map(|(n, k)| (n.to_string(), k))
    .collect()
}

/// Parses the `routing:` section of a manifest.
pub fn policy(yaml: &str) -> PolicyConfig {
    #[derive(serde::Deserialize)]
    struct Manifest {
        routing: PolicyConfig,
    }
    serde_yaml::from_str::<Manifest>(yaml).unwrap_or_else(|e| panic!("bad test policy: {e}\n{yaml}")).routing
}

/// Builds a router from YAML, cloud routes allowed or not.
pub fn router(yaml: &str, allow_cloud: bool) -> Router {
    policy(yaml).build_with(&schema(), &routes(), allow_cloud).unwrap_or_else(|e| panic!("{e}"))
}

/// An event of [`schema`] with the given fields set (others null).
pub fn event(fields: &[(&str, Value)]) -> Event {
    let schema = schema();
    let mut values = vec![Value::Null; schema.fields.len()];
    for (name, value) in fields {
        let i = schema.index_of(name).unwrap_or_else(|| panic!("no field {name}"));
        values[i] = value.clone();
    }
    Event { values, key: "k".to_string(), headers: Vec::new(), lineage: Lineage::default() }
}

/// Shorthand for a string value.
pub fn s(text: &str) -> Value {
    Value::Str(text.to_string())
}
