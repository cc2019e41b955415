//! What the `audit` table records: model lifecycle events.

use std::fmt;

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
        }
    }
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
