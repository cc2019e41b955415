//! # switchyard-router
//!
//! The second stage of `ingest → router → workers → sink`: it takes a
//! decoded, validated [`Event`](switchyard_schemas::Event) from ingest,
//! decides how sensitive it is, and picks the worker that serves it; the
//! decision, a [`RouteInfo`](switchyard_schemas::RouteInfo), travels on in
//! the event's lineage. It depends on `switchyard-schemas` only.
//!
//! ```text
//!  routing: (YAML) ──▶ PolicyConfig ──build()──▶ Router
//!                       validate(): every           │
//!                       problem, with its path      ▼
//!  Event ───────────────────────────────▶ classify(): tags + PII detectors
//!                                          route(): first matching rule,
//!                                          cloud rules skipped for classes
//!                                          that may not leave
//!                                                   │
//!                              RouteInfo ◀──────────┴──────────▶ NoRoute (DLQ)
//! ```
//!
//! Main types:
//!
//! * [`PolicyConfig`] and its parts ([`RuleConfig`], [`WhenConfig`],
//!   [`AttributeCondition`], [`EgressConfig`], [`LatencyTierConfig`]) — the
//!   `routing:` section of a manifest as serde data;
//! * [`Router`] — the compiled policy: [`Router::classify`], [`Router::plan`] (fallback chain, shadow, latency budget) and
//!   [`Router::route`], giving a [`RouteInfo`](switchyard_schemas::RouteInfo)
//!   or a [`NoRoute`] with its reason;
//! * [`RouteKind`] — whether a worker is local or in the cloud;
//! * [`Detector`], [`scan`], [`Match`] — PII detectors returning byte ranges,
//!   for classification here and redaction downstream;
//! * [`Error`] — the crate's error type.
//!
//! The hard guarantee: an event whose class the policy's `egress` denies is
//! never routed to a [`RouteKind::Cloud`] worker. Validation refuses cloud
//! rules that name such a class (a caller may refuse cloud rules altogether);
//! the evaluator passes over a cloud rule for such an event whatever the
//! policy says, and the reason records it. Reasons and errors name fields and
//! detectors, never the values they matched.

mod config;
pub mod detect;
mod error;
mod policy;
mod route;

pub use config::{
    AttributeCondition, Egress, EgressConfig, LatencyTierConfig, PolicyConfig, RuleConfig, Scalar, ShadowConfig,
    WhenConfig,
};
pub use detect::{iban_valid, luhn_check_digit, luhn_valid, mod97, scan, scan_with, Detector, DetectorSet, Match};
pub use error::{Error, Result};
pub use route::{Classification, Hit, NoRoute, Plan, RouteKind, Router};

#[cfg(test)]
mod testutil;
