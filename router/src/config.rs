//! The routing policy as the user writes it: the `routing:` section of a
//! pipeline manifest, as plain serde data. [`PolicyConfig::build`] (in
//! `policy.rs`) checks it against the event schema and the worker names and
//! turns it into a [`crate::Router`].
//!
//! ```yaml
//! routing:
//!   version: "fraud-policy/1"
//!   detectors: [email, phone, payment_card, iban, national_id]
//!   scan_fields: [note, customer_email]
//!   egress: { public: allow, internal: allow, pii: deny, regulated: deny }
//!   latency_tier:
//!     field: latency_tier
//!     header: switchyard.latency_tier
//!     default: standard
//!     tiers: [realtime, standard, batch]
//!   rules:
//!     - id: sensitive-stays-local
//!       when:
//!         sensitivity: [pii, regulated]
//!         attributes:
//!           - { field: channel, in: [web, app] }
//!           - { field: amount, gte: 1000 }
//!       route: fraud
//!       reason: "PII stays on premises"
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use switchyard_schemas::{headers, Sensitivity};

use crate::detect::Detector;
use crate::Result;

/// The routing policy: how events are classified and which worker each one
/// goes to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Policy version (`fraud-policy/1`), recorded with every routing
    /// decision in lineage, result headers and tables. Change it whenever the
    /// rules change.
    pub version: String,
    /// PII detectors run over the scanned string fields. An event in which a
    /// detector fires is at least as sensitive as the detector's class:
    /// `email` and `phone` make it `pii`; `payment_card`, `iban` and
    /// `national_id` make it `regulated`. Default: all five; `[]` turns
    /// detection off (field tags still apply).
    #[serde(default = "default_detectors")]
    pub detectors: Vec<Detector>,
    /// String fields the detectors scan. Default (absent): every string field
    /// of the schema; `[]` scans nothing.
    #[serde(default)]
    pub scan_fields: Option<Vec<String>>,
    /// Which sensitivity classes may leave the trusted boundary, that is, be
    /// sent to a cloud worker. Default: `public` and `internal` may, `pii`
    /// and `regulated` may not.
    #[serde(default)]
    pub egress: EgressConfig,
    /// Where an event's latency tier comes from and which tiers exist.
    #[serde(default)]
    pub latency_tier: LatencyTierConfig,
    /// The rules, in order: the first rule whose conditions all hold decides
    /// the route. A rule that routes to a cloud worker is passed over for an
    /// event whose class may not leave the trusted boundary, and the next
    /// rule is tried. An event no rule accepts goes to the DLQ with the
    /// reason.
    pub rules: Vec<RuleConfig>,
}

/// The detectors used when `detectors` is not given: all of them.
fn default_detectors() -> Vec<Detector> {
    Detector::ALL.to_vec()
}

impl PolicyConfig {
    /// The policy as canonical JSON: defaults filled in, object keys sorted,
    /// no whitespace. Two manifests that mean the same policy (one spelling
    /// out the defaults, one leaving them out) give the same text.
    pub fn canonical_json(&self) -> Result<String> {
        let value = serde_json::to_value(self)?;
        let mut out = String::new();
        write_canonical(&value, &mut out)?;
        Ok(out)
    }

    /// Hex SHA-256 of [`PolicyConfig::canonical_json`]: identifies the exact
    /// policy that routed an event.
    pub fn spec_hash(&self) -> Result<String> {
        Ok(switchyard_schemas::sha256_hex(self.canonical_json()?.as_bytes()))
    }
}

/// Writes `value` with sorted object keys whether or not serde_json's
/// `preserve_order` feature is on somewhere in the build.
fn write_canonical(value: &serde_json::Value, out: &mut String) -> Result<()> {
    use serde_json::Value as J;
    match value {
        J::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k)?);
                out.push(':');
                write_canonical(v, out)?;
            }
            out.push('}');
        }
        J::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out)?;
            }
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar)?),
    }
    Ok(())
}

/// Whether a sensitivity class may be sent outside the trusted boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Egress {
    /// Events of this class may go to cloud workers.
    Allow,
    /// Events of this class never go to cloud workers.
    Deny,
}

/// Egress permission per sensitivity class. A class may be allowed only if
/// every less sensitive class is allowed too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Egress of `public` events. Default: `allow`.
    #[serde(default = "allow")]
    pub public: Egress,
    /// Egress of `internal` events. Default: `allow`.
    #[serde(default = "allow")]
    pub internal: Egress,
    /// Egress of `pii` events. Default: `deny`.
    #[serde(default = "deny")]
    pub pii: Egress,
    /// Egress of `regulated` events. Default: `deny`.
    #[serde(default = "deny")]
    pub regulated: Egress,
}

fn allow() -> Egress {
    Egress::Allow
}

fn deny() -> Egress {
    Egress::Deny
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig { public: allow(), internal: allow(), pii: deny(), regulated: deny() }
    }
}

impl EgressConfig {
    /// The setting for `class`.
    pub fn get(&self, class: Sensitivity) -> Egress {
        match class {
            Sensitivity::Public => self.public,
            Sensitivity::Internal => self.internal,
            Sensitivity::Pii => self.pii,
            Sensitivity::Regulated => self.regulated,
        }
    }

    /// True when events of `class` may be sent to a cloud worker.
    pub fn allows(&self, class: Sensitivity) -> bool {
        self.get(class) == Egress::Allow
    }
}

/// Where an event's latency tier comes from. The tier is taken from the
/// first source that has a non-empty value: the schema `field`, then the
/// `header`, then `default`. A value that is not one of `tiers` (compared
/// without regard to ASCII case) is replaced by `default`, and the routing
/// reason says so (without repeating the value, which is event data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyTierConfig {
    /// Schema field (a string field) that carries the tier. Default: none.
    #[serde(default)]
    pub field: Option<String>,
    /// Kafka header that carries the tier, read when the field is absent or
    /// empty. Default: `switchyard.latency_tier`; `null` ignores headers.
    #[serde(default = "default_tier_header")]
    pub header: Option<String>,
    /// Tier of an event that names none, or names an unknown one. Default:
    /// `standard`.
    #[serde(default = "default_tier")]
    pub default: String,
    /// The tier names that exist. Default: `[realtime, standard, batch]`.
    #[serde(default = "default_tiers")]
    pub tiers: Vec<String>,
    /// Latency budget per tier, in milliseconds (`{realtime: 50}`). A cloud
    /// worker whose recent latency exceeds the event's budget is passed
    /// over for the rule's fallback chain. Tiers not listed have no budget.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deadlines_ms: BTreeMap<String, u64>,
}

/// The header read for the tier when `latency_tier.header` is not given.
fn default_tier_header() -> Option<String> {
    Some(headers::LATENCY_TIER.to_string())
}

/// The tier used when `latency_tier.default` is not given.
fn default_tier() -> String {
    "standard".to_string()
}

/// The tiers used when `latency_tier.tiers` is not given.
fn default_tiers() -> Vec<String> {
    ["realtime", "standard", "batch"].map(String::from).to_vec()
}

impl Default for LatencyTierConfig {
    fn default() -> Self {
        LatencyTierConfig {
            field: None,
            header: default_tier_header(),
            default: default_tier(),
            tiers: default_tiers(),
            deadlines_ms: BTreeMap::new(),
        }
    }
}

/// One routing rule: conditions and the worker that gets the event when
/// they all hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule id, unique within the policy, recorded with every decision it
    /// makes. Letters, digits, `-`, `_`, `.`.
    pub id: String,
    /// Conditions; all given ones must hold. Absent: the rule matches every
    /// event (a catch-all, usually last).
    #[serde(default)]
    pub when: WhenConfig,
    /// Name of the worker that gets the event.
    pub route: String,
    /// Why this route, for people reading lineage. Default: `rule <id>
    /// matched`.
    #[serde(default)]
    pub reason: Option<String>,
    /// Workers tried in order when `route` cannot serve the event: its
    /// circuit is open, its budget is spent, it is too slow for the event's
    /// latency tier (see `latency_tier.deadlines_ms`), or it failed. A cloud
    /// worker in the chain is skipped for events that may not leave the
    /// trusted boundary. Default: none (the event waits, bounded, then goes
    /// to the DLQ).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<String>,
    /// Send a sample of the events this rule routes to a second worker as
    /// well, and record both answers. Only events that may go to the shadow
    /// worker are sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowConfig>,
}

/// A rule's shadow path: a second worker that answers a sample of the
/// rule's events for comparison; its answers are recorded with
/// `shadow = true` and never replace the primary answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// Name of the worker that gets the copies.
    pub route: String,
    /// Fraction of the rule's events copied, in (0, 1]. The choice is a hash
    /// of the lineage id, so a replay samples the same events. Default: 1.
    #[serde(default = "default_sample")]
    pub sample: f64,
}

fn default_sample() -> f64 {
    1.0
}

/// Conditions of a rule. Each key that is given must hold; a key that is
/// absent does not constrain.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhenConfig {
    /// The event's sensitivity class is one of these.
    #[serde(default)]
    pub sensitivity: Option<Vec<Sensitivity>>,
    /// The event's latency tier is one of these.
    #[serde(default)]
    pub latency_tier: Option<Vec<String>>,
    /// Conditions on field values; all must hold.
    #[serde(default)]
    pub attributes: Vec<AttributeCondition>,
}

impl WhenConfig {
    /// True when no condition is given: the rule matches every event.
    pub fn is_empty(&self) -> bool {
        self.sensitivity.is_none() && self.latency_tier.is_none() && self.attributes.is_empty()
    }
}

/// A condition on one field of the event. Give exactly one kind: `in`,
/// `exists`, or numeric bounds (`gt` or `gte`, and/or `lt` or `lte`, which
/// together form a range). A null or absent value fails every condition
/// except `exists: false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeCondition {
    /// Schema field the condition reads.
    pub field: String,
    /// The value's text form (`web`, `42`, `true`) is one of these.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Scalar>>,
    /// `true`: the field has a non-null value; `false`: it is null or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// The numeric value is greater than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// The numeric value is greater than or equal to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    /// The numeric value is less than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// The numeric value is less than or equal to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
}

impl AttributeCondition {
    /// A condition on `field` with nothing set yet; fill in one kind.
    pub fn on(field: impl Into<String>) -> Self {
        AttributeCondition { field: field.into(), one_of: None, exists: None, gt: None, gte: None, lt: None, lte: None }
    }

    /// The keys that are set, in the order `in`, `exists`, `gt`, `gte`,
    /// `lt`, `lte`.
    pub fn keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.one_of.is_some() {
            keys.push("in");
        }
        if self.exists.is_some() {
            keys.push("exists");
        }
        for (key, bound) in [("gt", self.gt), ("gte", self.gte), ("lt", self.lt), ("lte", self.lte)] {
            if bound.is_some() {
                keys.push(key);
            }
        }
        keys
    }
}

/// A scalar from the manifest (string, number or boolean), kept in the text
/// form it is compared in: `web`, `42`, `1.5`, `true`. Numbers are written as
/// event values are (`1000.0` becomes `1000`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Scalar(pub String);

impl Scalar {
    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Scalar {
    fn from(s: &str) -> Self {
        Scalar(s.to_string())
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                // Same text as `Value::Float(v).to_text()`.
                Ok(Scalar(v.to_string()))
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}
