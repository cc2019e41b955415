use std::ops::Range;

/// Finds personal data in text. The router's detectors implement it; cloud
/// workers use it to mask fields and, as a last check, to refuse any request
/// body in which something still fires.
pub trait PiiScanner: Send + Sync {
    /// Every match as (byte range, detector name), ordered by start; matches
    /// may overlap.
    fn find(&self, text: &str) -> Vec<(Range<usize>, &'static str)>;
}
