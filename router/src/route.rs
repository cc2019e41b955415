//! The runtime side of the policy: [`Router`] classifies an event and picks
//! its worker. Built once per pipeline by [`crate::PolicyConfig::build`],
//! with every field name already resolved to its index in the schema, so
//! routing an event does no lookups by name and no allocation beyond the
//! result.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_schemas::{Event, RouteInfo, Sensitivity, Value};

use crate::config::{EgressConfig, PolicyConfig};
use crate::detect::{self, Detector};

#[cfg(test)]
mod tests;

/// Where a worker runs, which decides whether an event may be sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    /// Inside the trusted boundary (a local ONNX worker): any class may go.
    Local,
    /// Outside the trusted boundary (a cloud API): only classes the policy's
    /// `egress` allows may go.
    Cloud,
}

/// The routing policy, ready to evaluate: classification, latency tier
/// resolution and ordered rules. Cheap to share between threads (`Send +
/// Sync`, no interior mutability).
#[derive(Debug, Clone)]
pub struct Router {
    pub(crate) config: PolicyConfig,
    pub(crate) spec_hash: String,
    /// Schema field names, by index; used to name fields in reasons.
    pub(crate) field_names: Vec<String>,
    /// Fields with a sensitivity tag.
    pub(crate) tagged: Vec<(usize, Sensitivity)>,
    /// String fields the detectors scan.
    pub(crate) scan: Vec<usize>,
    pub(crate) detectors: Vec<Detector>,
    pub(crate) egress: EgressConfig,
    pub(crate) tier: TierSource,
    pub(crate) rules: Vec<Rule>,
}

/// Where the latency tier comes from, with names resolved.
#[derive(Debug, Clone)]
pub(crate) struct TierSource {
    pub(crate) field: Option<usize>,
    pub(crate) header: Option<String>,
    /// Index into `tiers`.
    pub(crate) default: usize,
    pub(crate) tiers: Vec<String>,
    /// Latency budget per tier, by index.
    pub(crate) deadlines: Vec<Option<Duration>>,
}

/// A rule with its conditions compiled.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) id: String,
    pub(crate) route: String,
    pub(crate) kind: RouteKind,
    pub(crate) reason: String,
    /// Bit `1 << class as u8` for each class the rule accepts.
    pub(crate) sensitivity: Option<u8>,
    /// Indices into the tier list.
    pub(crate) tiers: Option<Vec<usize>>,
    pub(crate) conditions: Vec<Condition>,
    /// Fallback workers, in order, with where they run.
    pub(crate) fallback: Vec<(String, RouteKind)>,
    /// Shadow worker, where it runs, and the sampled fraction.
    pub(crate) shadow: Option<(String, RouteKind, f64)>,
}

/// What a routed event may use beyond its primary worker; see
/// [`Router::plan`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Workers to try, in order, when the primary cannot serve the event.
    /// Cloud workers are already left out when the event may not leave the
    /// trusted boundary.
    pub fallbacks: Vec<String>,
    /// Worker that answers a copy of the event for comparison, when the
    /// rule has a shadow, the event was sampled and may go there.
    pub shadow: Option<String>,
    /// The event's latency budget (from `latency_tier.deadlines_ms`).
    pub deadline: Option<Duration>,
    /// Cloud workers of the chain or shadow passed over because the event
    /// may not leave, for the reason text.
    pub withheld: Vec<String>,
}

/// A compiled attribute condition.
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    pub(crate) index: usize,
    pub(crate) test: Test,
}

#[derive(Debug, Clone)]
pub(crate) enum Test {
    OneOf(Vec<String>),
    Exists(bool),
    Range { lower: Option<Bound>, upper: Option<Bound> },
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    pub(crate) value: f64,
    pub(crate) inclusive: bool,
}

pub(crate) fn class_bit(class: Sensitivity) -> u8 {
    1 << class as u8
}

impl Test {
    fn holds(&self, value: &Value) -> bool {
        match self {
            Test::Exists(want) => value.is_null() != *want,
            Test::OneOf(texts) => match value {
                Value::Null => false,
                Value::Str(s) => texts.iter().any(|t| t == s),
                other => other.to_text().is_some_and(|s| texts.contains(&s)),
            },
            Test::Range { lower, upper } => {
                // Amounts and scores, not ids: f64 is exact enough.
                let x = match value {
                    Value::Int(i) => *i as f64,
                    Value::Float(f) => *f,
                    _ => return false,
                };
                let above = lower.is_none_or(|b| if b.inclusive { x >= b.value } else { x > b.value });
                let below = upper.is_none_or(|b| if b.inclusive { x <= b.value } else { x < b.value });
                above && below
            }
        }
    }
}

/// How sensitive an event is, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// The event's class: the maximum over the tags of its non-null fields
    /// and the classes of the detectors that fired.
    pub sensitivity: Sensitivity,
    /// Which detector fired in which field, once per pair, in schema field
    /// order. Never the matched text.
    pub hits: Vec<Hit>,
}

/// A detector that fired in a field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hit {
    /// Name of the schema field.
    pub field: String,
    /// The detector.
    pub detector: Detector,
}

/// No rule accepts the event: it goes to the DLQ with this reason. The
/// reason never contains event values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct NoRoute {
    /// Version of the policy that found no route.
    pub policy_version: String,
    /// The event's sensitivity class.
    pub sensitivity: Sensitivity,
    /// The event's latency tier.
    pub latency_tier: String,
    /// Why: `no rule matched (sensitivity=pii, tier=standard)`, plus any
    /// cloud rule passed over and detector hits.
    pub reason: String,
}

impl Router {
    /// The policy's `version`, recorded with every decision.
    pub fn version(&self) -> &str {
        &self.config.version
    }

    /// Hex SHA-256 of the policy's canonical JSON (see
    /// [`PolicyConfig::canonical_json`]).
    pub fn spec_hash(&self) -> &str {
        &self.spec_hash
    }

    /// The policy this router was built from.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// The detectors this router runs.
    pub fn detectors(&self) -> &[Detector] {
        &self.detectors
    }

    /// The policy's detectors as a [`PiiScanner`](switchyard_schemas::PiiScanner),
    /// for cloud workers' masking and last check before egress. With
    /// detection turned off (`detectors: []`) the last check still runs
    /// every detector: what leaves the boundary is always scanned.
    pub fn scanner(&self) -> detect::DetectorSet {
        if self.detectors.is_empty() {
            detect::DetectorSet(Detector::ALL.to_vec())
        } else {
            detect::DetectorSet(self.detectors.clone())
        }
    }

    /// Names of the string fields the detectors scan, in schema order.
    pub fn scan_fields(&self) -> impl Iterator<Item = &str> + '_ {
        self.scan.iter().map(|&i| self.field_names[i].as_str())
    }

    /// Whether an event of class `sensitivity` may be sent to a worker of
    /// `kind`: always for local workers, for cloud workers only when the
    /// policy's `egress` allows the class. The evaluator asks this of every
    /// rule; fallback and shadow paths must ask it too.
    pub fn may_send(&self, sensitivity: Sensitivity, kind: RouteKind) -> bool {
        kind == RouteKind::Local || self.egress.allows(sensitivity)
    }

    /// Classifies `event`: the maximum of the sensitivity tags of its
    /// non-null fields and the classes of detectors that fire in its scanned
    /// string fields.
    pub fn classify(&self, event: &Event) -> Classification {
        let mut sensitivity = Sensitivity::Public;
        for &(index, class) in &self.tagged {
            if !value_at(event, index).is_null() {
                sensitivity = sensitivity.max(class);
            }
        }
        let mut hits = Vec::new();
        for &index in &self.scan {
            if let Value::Str(text) = value_at(event, index) {
                for detector in detect::fired(&self.detectors, text) {
                    sensitivity = sensitivity.max(detector.class());
                    hits.push(Hit { field: self.field_names[index].clone(), detector });
                }
            }
        }
        Classification { sensitivity, hits }
    }

    /// The event's latency tier: from the tier field, else the tier header,
    /// else the default; an unknown value gives the default.
    pub fn latency_tier(&self, event: &Event) -> &str {
        &self.tier.tiers[self.resolve_tier(event).0]
    }

    /// Routes `event`: the first rule whose conditions hold decides, except
    /// that a rule sending to a cloud worker is passed over when the event's
    /// class may not leave the trusted boundary. The reason names the rule's
    /// reason, the detectors that fired and where, and any cloud rule passed
    /// over; it never contains event values.
    pub fn route(&self, event: &Event) -> Result<RouteInfo, NoRoute> {
        let Classification { sensitivity, hits } = self.classify(event);
        let (tier, tier_note) = self.resolve_tier(event);
        let mut passed_over: Vec<&str> = Vec::new();
        let mut decided = None;
        for rule in &self.rules {
            if !self.matches(rule, sensitivity, tier, event) {
                continue;
            }
            if !self.may_send(sensitivity, rule.kind) {
                passed_over.push(&rule.id);
                continue;
            }
            decided = Some(rule);
            break;
        }

        let mut reason = match decided {
            Some(rule) => rule.reason.clone(),
            None => format!("no rule matched (sensitivity={}, tier={})", sensitivity.as_str(), self.tier.tiers[tier]),
        };
        if !hits.is_empty() {
            reason.push_str("; detected ");
            for (i, hit) in hits.iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                let _ = write!(reason, "{sep}{} in {}", hit.detector, hit.field);
            }
        }
        if !passed_over.is_empty() {
            let plural = if passed_over.len() == 1 { "" } else { "s" };
            let _ = write!(
                reason,
                "; skipped cloud rule{plural} {} ({} data may not leave the trusted boundary)",
                passed_over.join(", "),
                sensitivity.as_str()
            );
        }
        if let Some(note) = tier_note {
            reason.push_str("; ");
            reason.push_str(&note);
        }

        let latency_tier = self.tier.tiers[tier].clone();
        match decided {
            Some(rule) => Ok(RouteInfo {
                policy_version: self.config.version.clone(),
                rule_id: rule.id.clone(),
                reason,
                route: rule.route.clone(),
                sensitivity,
                latency_tier,
            }),
            None => Err(NoRoute { policy_version: self.config.version.clone(), sensitivity, latency_tier, reason }),
        }
    }

    /// The fallback chain, shadow and latency budget of a routed event:
    /// what the rule that decided `info` allows beyond its route. Every
    /// worker in it passed [`Router::may_send`] for the event's class. The
    /// shadow sample is a hash of `lineage_id`, so replays sample the same
    /// events. An unknown rule id (a `RouteInfo` from another policy) gives
    /// an empty plan.
    pub fn plan(&self, info: &RouteInfo, lineage_id: &str) -> Plan {
        let deadline = self
            .tier
            .tiers
            .iter()
            .position(|t| *t == info.latency_tier)
            .and_then(|i| self.tier.deadlines.get(i).copied().flatten());
        let Some(rule) = self.rules.iter().find(|r| r.id == info.rule_id) else {
            return Plan { deadline, ..Plan::default() };
        };
        let mut plan = Plan { deadline, ..Plan::default() };
        for (name, kind) in &rule.fallback {
            if self.may_send(info.sensitivity, *kind) {
                plan.fallbacks.push(name.clone());
            } else {
                plan.withheld.push(name.clone());
            }
        }
        if let Some((name, kind, sample)) = &rule.shadow {
            if !self.may_send(info.sensitivity, *kind) {
                plan.withheld.push(name.clone());
            } else if sampled(lineage_id, *sample) {
                plan.shadow = Some(name.clone());
            }
        }
        plan
    }

    fn matches(&self, rule: &Rule, class: Sensitivity, tier: usize, event: &Event) -> bool {
        rule.sensitivity.is_none_or(|mask| mask & class_bit(class) != 0)
            && rule.tiers.as_ref().is_none_or(|tiers| tiers.contains(&tier))
            && rule.conditions.iter().all(|c| c.test.holds(value_at(event, c.index)))
    }

    /// The tier index and, when the event named an unknown tier, a note for
    /// the reason. The note names where the value came from, not the value:
    /// it is event data and may be anything.
    fn resolve_tier(&self, event: &Event) -> (usize, Option<String>) {
        let source = &self.tier;
        let from_field = source.field.and_then(|index| {
            let text = match value_at(event, index) {
                Value::Str(s) => Some(s.trim().to_string()),
                other => other.to_text(),
            }?;
            (!text.is_empty()).then(|| (text, format!("field {}", self.field_names[index])))
        });
        let from_header = || {
            let name = source.header.as_deref()?;
            let text = event.header(name)?.trim();
            (!text.is_empty()).then(|| (text.to_string(), format!("header {name}")))
        };
        let Some((value, origin)) = from_field.or_else(from_header) else {
            return (source.default, None);
        };
        match source.tiers.iter().position(|t| t.eq_ignore_ascii_case(&value)) {
            Some(index) => (index, None),
            None => (
                source.default,
                Some(format!(
                    "latency tier in {origin} is not one of {}; used {}",
                    source.tiers.join(", "),
                    source.tiers[source.default]
                )),
            ),
        }
    }
}

/// The value of field `index`; a short `values` (an upstream bug) reads as
/// null rather than panicking in the hot path.
fn value_at(event: &Event, index: usize) -> &Value {
    event.values.get(index).unwrap_or(&Value::Null)
}

/// Whether the event with `lineage_id` is in a sample of `fraction`: FNV-1a
/// over the id, compared with the fraction of the 64-bit range. Stable
/// across runs and machines.
fn sampled(lineage_id: &str, fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in lineage_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Finalise (splitmix64) so ids differing in the last byte spread out.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h as f64) < fraction * (u64::MAX as f64)
}
