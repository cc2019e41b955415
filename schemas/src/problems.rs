use std::fmt;

/// One mistake in a manifest, with the dotted path of the field it concerns
/// (`workers.fraud.model`) so a user can find and fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path into the manifest, e.g. `routing.rules[2].route`.
    pub path: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Collects every problem found while validating a manifest: validation never
/// stops at the first mistake.
#[derive(Debug, Default, Clone)]
pub struct Problems {
    items: Vec<Problem>,
}

impl Problems {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.items.push(Problem { path: path.into(), message: message.into() });
    }

    /// True when nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The problems found, in the order they were reported.
    pub fn items(&self) -> &[Problem] {
        &self.items
    }

    /// Appends all problems of `other`.
    pub fn extend(&mut self, other: Problems) {
        self.items.extend(other.items);
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.items {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}
