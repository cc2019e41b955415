//! The one answer type of every worker, local or cloud.

use switchyard_schemas::ModelRef;

use crate::onnx::{Role, RowAnswer};

/// A worker's answer for one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Score, when the worker gives one.
    pub score: Option<f64>,
    /// Label, when the worker gives one.
    pub label: Option<i64>,
    /// Mapped result fields (JSON object), for `openai` workers.
    pub outputs: Option<String>,
    /// Who answered: the local model version, or the cloud provider,
    /// endpoint, model and request id.
    pub model: ModelRef,
    /// For a model version being rolled out: its part (canary or shadow).
    pub rollout: Option<Role>,
    /// The candidate version's shadow answer to the same event.
    pub candidate_shadow: Option<Box<Answer>>,
}

impl Answer {
    /// A remote endpoint's answer as its response says it: score and mapped
    /// outputs; the worker then sets who answered and the label.
    pub fn remote(score: Option<f64>, outputs: Option<String>) -> Self {
        Answer { score, label: None, outputs, model: ModelRef::default(), rollout: None, candidate_shadow: None }
    }

    /// The lineage's note for an answer of a version being rolled out.
    pub fn rollout_note(&self) -> Option<String> {
        match self.rollout? {
            Role::Stable => None,
            Role::Canary => Some(format!("canary of version {}", self.model.version)),
            Role::Shadow => Some(format!("candidate version {} in shadow", self.model.version)),
        }
    }
}

impl From<RowAnswer> for Answer {
    fn from(r: RowAnswer) -> Self {
        let rollout = (r.role != Role::Stable).then_some(r.role);
        Answer {
            score: Some(f64::from(r.score)),
            label: Some(r.label),
            outputs: None,
            model: r.model,
            rollout,
            candidate_shadow: None,
        }
    }
}
