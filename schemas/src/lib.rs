//! # switchyard-schemas
//!
//! The bottom of the crate graph: every stage of
//! `ingest → router → workers → sink` depends on this crate and on nothing
//! sideways. It holds what the stages pass to each other:
//!
//! * [`EventSchema`] / [`FieldSpec`] — the manifest's description of an input event;
//! * [`Value`] / [`Event`] — a decoded, validated event with its [`Lineage`];
//! * [`Lineage`], [`ModelRef`] — where a row came from and who answered it;
//! * [`Prediction`], [`DlqRecord`] — the output records, with their Arrow schemas
//!   ([`prediction_arrow_schema`], [`dlq_arrow_schema`]);
//! * [`Feedback`] — ground truth from a feedback topic, and the Arrow schemas of
//!   the `feedback`, `triggers` and `audit` tables;
//! * [`PiiScanner`] — what finds personal data in text (implemented by the
//!   router's detectors, used by cloud workers before egress);
//! * [`RolloutState`] — which registered model version serves and which
//!   candidates were promoted or rejected (`rollout.json` in the registry);
//! * [`tables`] — the tables' folder names and `date` partition; [`TableRoot`]
//!   ([`store`]) — where they live, a local folder or an object store;
//! * [`AuditEvent`] — model lifecycle and operational events of the `audit` table, [`notice`];
//! * [`Problems`] — the collector for manifest validation, so every stage reports
//!   *all* of its mistakes with their paths;
//! * [`Document`] — a YAML manifest with the line of every node, whose typed
//!   extraction reports every shape mistake into [`Problems`] with its path and line;
//! * [`Secret`], [`SecretSource`] — credentials read from the environment or a
//!   file, printed as `***`; [`kafka`] — a Kafka client's properties and secrets;
//! * [`Error`] — the crate's error type.

mod audit;
mod document;
mod error;
mod event;
mod feedback;
pub mod kafka;
mod lineage;
mod pii;
mod problems;
mod record;
mod rollout;
mod schema;
mod secret;
pub mod store;
pub mod tables;
pub mod telemetry;

pub use audit::{install_notices, instance as audit_instance, notice, AuditEvent, Notice};
pub use document::Document;
pub use error::{Error, Result};
pub use event::{Event, RawRecord, Value};
pub use feedback::{audit_arrow_schema, feedback_arrow_schema, trigger_arrow_schema, Feedback};
pub use lineage::{derive_lineage_id, headers, traceparent, Lineage, ModelRef, RouteInfo, Sensitivity, SourceCoords};
pub use pii::PiiScanner;
pub use problems::{Problem, Problems};
pub use record::{dlq_arrow_schema, prediction_arrow_schema, DlqRecord, ErrorClass, Prediction, Stage};
pub use rollout::{registered_versions, RolloutDecision, RolloutState};
pub use schema::{EventSchema, FieldSpec, FieldType, InputFormat, RegistryConfig};
pub use secret::{read_secret, Secret, SecretSource};
pub use store::TableRoot;

/// Now, in µs since the Unix epoch (UTC): the time unit of lineage, rows
/// and tables.
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Hex-encoded SHA-256 of `bytes`: used for manifest, spec and model hashes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex_lower(&sha2::Sha256::digest(bytes))
}

/// `bytes` as lower-case hex. A table lookup per nibble: the lineage id of
/// every record goes through it, and the `hex` crate's char iterator was a
/// few per cent of the file path's time.
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Appends `bytes` as lower-case hex to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_and_sha256_match_the_references() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(super::hex_lower(&bytes), hex::encode(&bytes));
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "FIPS 180-2's test vector"
        );
    }
}
