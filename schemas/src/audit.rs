//! What the `audit` table records: model lifecycle events, and the
//! operational events of a run (manifest and policy loads, circuit breaker
//! changes, budget warnings and exhaustion, rebalances, stops).
//!
//! Stages report operational events with [`notice`]; where they go (the
//! `audit` table, an audit topic) is the binary's choice
//! ([`install_notices`]). Without a sink a notice goes nowhere.

use std::fmt;
use std::sync::OnceLock;

/// A model lifecycle event: a row of the `audit` table (its `event` column
/// holds [`AuditEvent::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditEvent {
    /// A new version started as a canary or in shadow.
    CandidateStarted,
    /// A candidate now serves every event.
    Promoted,
    /// A candidate was stopped after the monitor rejected it.
    RolledBack,
    /// A candidate was stopped because it is no longer the candidate.
    CandidateWithdrawn,
    /// A new version replaced the serving one at once (`rollout: replace`).
    Replaced,
    /// The serving version changed outside a rollout.
    StableChanged,
    /// A version could not be loaded; the serving one goes on.
    LoadFailed,
    /// The monitor decided to promote a candidate.
    PromoteDecided,
    /// The monitor decided to roll a candidate back.
    RollbackDecided,
    /// The monitor emitted a retrain trigger.
    TriggerEmitted,
    /// A run started from a manifest (detail: its path and SHA-256).
    ManifestLoaded,
    /// A run started with a routing policy (version: the policy's; detail: its hash).
    PolicyLoaded,
    /// A cloud worker's circuit opened (detail: the failure).
    BreakerOpened,
    /// A cloud worker's circuit closed again.
    BreakerClosed,
    /// A cloud budget crossed its warning fraction.
    BudgetWarning,
    /// A cloud budget window was spent.
    BudgetExhausted,
    /// The consumer group gave this worker partitions (detail: which).
    PartitionsAssigned,
    /// The consumer group took partitions away (detail: which).
    PartitionsRevoked,
    /// A signal asked the run to stop.
    ShutdownRequested,
    /// The run stopped (detail: what it did, and how it ended).
    Stopped,
}

impl AuditEvent {
    /// The name in the `audit` table.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::CandidateStarted => "candidate_started",
            AuditEvent::Promoted => "promoted",
            AuditEvent::RolledBack => "rolled_back",
            AuditEvent::CandidateWithdrawn => "candidate_withdrawn",
            AuditEvent::Replaced => "replaced",
            AuditEvent::StableChanged => "stable_changed",
            AuditEvent::LoadFailed => "load_failed",
            AuditEvent::PromoteDecided => "promote_decided",
            AuditEvent::RollbackDecided => "rollback_decided",
            AuditEvent::TriggerEmitted => "trigger_emitted",
            AuditEvent::ManifestLoaded => "manifest_loaded",
            AuditEvent::PolicyLoaded => "policy_loaded",
            AuditEvent::BreakerOpened => "breaker_opened",
            AuditEvent::BreakerClosed => "breaker_closed",
            AuditEvent::BudgetWarning => "budget_warning",
            AuditEvent::BudgetExhausted => "budget_exhausted",
            AuditEvent::PartitionsAssigned => "partitions_assigned",
            AuditEvent::PartitionsRevoked => "partitions_revoked",
            AuditEvent::ShutdownRequested => "shutdown_requested",
            AuditEvent::Stopped => "stopped",
        }
    }
}

/// An operational event, as a stage reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// What happened.
    pub event: AuditEvent,
    /// The worker (or `consumer`, `pipeline`) it is about.
    pub worker: String,
    /// Model name, when it is about one.
    pub model: String,
    /// Version (model or policy), when it is about one.
    pub version: String,
    /// What happened, in words.
    pub detail: String,
}

impl Notice {
    /// A notice about `worker` with `detail` (no model, no version).
    pub fn new(event: AuditEvent, worker: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { event, worker: worker.into(), model: String::new(), version: String::new(), detail: detail.into() }
    }
}

type NoticeSink = Box<dyn Fn(Notice) + Send + Sync>;

static NOTICES: OnceLock<NoticeSink> = OnceLock::new();

/// Sends every later [`notice`] of this process to `sink` (once; later
/// calls are ignored and return false).
pub fn install_notices(sink: impl Fn(Notice) + Send + Sync + 'static) -> bool {
    NOTICES.set(Box::new(sink)).is_ok()
}

/// Reports an operational event (nowhere, until a sink is installed).
pub fn notice(n: Notice) {
    if let Some(sink) = NOTICES.get() {
        sink(n);
    }
}

/// This process, as the `instance` column names it: `host/pid`.
pub fn instance() -> &'static str {
    static INSTANCE: OnceLock<String> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("{host}/{}", std::process::id())
    })
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
