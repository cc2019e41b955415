//! A YAML manifest with the line of every node, and typed extraction that
//! reports *every* shape mistake (unknown key, wrong type, missing field) at
//! its dotted path and its true line.
//!
//! serde_yaml gives neither: it stops at the first error, and because tagged
//! enums and flattened structs are buffered before they are deserialised, the
//! line it reports for a mistake inside one is the line where the buffered
//! node starts, and its path stops above it (for the tests' manifest:
//! `workers: unknown field `max_batch_sise` ... at line 15`, for a key on
//! line 18 under `workers.fraud`). So the text is read twice: once
//! as parser events (`saphyr-parser`, which carries positions) to record the
//! line of every mapping key and sequence item by path, and once by
//! serde_yaml into a [`serde_yaml::Value`] that [`Document::extract`]
//! deserialises, edits and retries until it has found every problem.

use std::collections::{HashMap, HashSet, VecDeque};

use saphyr_parser::{Event, Parser, Span, SpannedEventReceiver};
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml::Value;

use crate::Problems;

/// How many problems one [`Document::extract`] call reports at most: each
/// round removes the offending key and retries, so this bounds the work on a
/// pathological document.
const MAX_ROUNDS: usize = 50;

/// A YAML document parsed once, with the line of every node by its dotted path.
///
/// Paths are the ones [`Problems`] uses: map keys joined with `.`, sequence
/// items as `[i]` (`workers.fraud.model`, `preprocess.features[1].from`); the
/// root is `""`. A key that itself contains `.` or `[` cannot be addressed.
#[derive(Debug, Clone)]
pub struct Document {
    root: Value,
    /// Path → 1-based line: of the key for a map entry, of the item for a
    /// sequence item, of the first token for the root.
    lines: HashMap<String, usize>,
}

impl Document {
    /// Parses `text`. A YAML syntax error is returned as text that starts
    /// with `line N: `.
    pub fn parse(text: &str) -> Result<Document, String> {
        let mut recorder = LineRecorder::default();
        Parser::new_from_str(text)
            .load(&mut recorder, true)
            .map_err(|e| format!("line {}: {}", e.marker().line(), e.info()))?;
        // The event walk accepted the text; serde_yaml can still refuse what
        // YAML allows but its data model does not (duplicate keys, several
        // documents), and does not always say where.
        let root: Value = serde_yaml::from_str(text).map_err(|e| {
            let message = strip_position(&e.to_string()).to_string();
            let line = match (recorder.duplicate, recorder.second_document) {
                (Some(line), _) if message.starts_with("duplicate entry") => Some(line),
                (_, Some(line)) if message.contains("more than one document") => Some(line),
                _ => e.location().map(|at| at.line()),
            };
            match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            }
        })?;
        Ok(Document { root, lines: recorder.lines })
    }

    /// The 1-based line of the node at `path` (`""` is the root;
    /// `workers.fraud.model`, `preprocess.features[1].from`), or of its
    /// nearest ancestor that has one.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut segs = parse_path(path)?;
        loop {
            if let Some(line) = self.lines.get(&format_path(&segs)) {
                return Some(*line);
            }
            segs.pop()?;
        }
    }

    /// The value at `path`, if present.
    pub fn get(&self, path: &str) -> Option<&Value> {
        walk(&self.root, &parse_path(path)?)
    }

    /// Deserialises the node at `path` into `T`. On failure pushes one problem
    /// per shape error found into `problems`, at the error's full path with
    /// its true line (`line 18: unknown field ...`), and returns `None`.
    ///
    /// An absent node is deserialised from `null`, so `Option<T>` extracts an
    /// optional section as `Some(None)`; a required one is reported missing.
    ///
    /// serde stops at the first error of a value, so after each error the
    /// offending key is removed and the node deserialised again: unknown keys
    /// and mistyped fields anywhere in the node are all reported. Only a
    /// mistake that no key removal can skip (a missing field, a sequence item
    /// of the wrong type, the node itself of the wrong type) ends the search.
    pub fn extract<T: DeserializeOwned>(&self, path: &str, problems: &mut Problems) -> Option<T> {
        // A malformed path names no node (unless a key is spelled like it).
        let base = parse_path(path).unwrap_or_else(|| vec![Seg::Key(path.to_string())]);
        let present = walk(&self.root, &base);
        let mut value = present.cloned().unwrap_or(Value::Null);
        // Keys removed because their value was mistyped: serde then misses
        // them as fields, which would report the same mistake twice.
        let mut removed = Vec::new();
        let mut reported = false;
        for _ in 0..MAX_ROUNDS {
            let (segs, message) = match deserialize::<T>(&value) {
                Ok(v) => return (!reported).then_some(v),
                Err(e) => e,
            };
            if present.is_none() {
                let expected = message.split_once(", expected ").map_or(message.as_str(), |(_, e)| e);
                self.report(problems, &base, &format!("missing; expected {expected}"));
                return None;
            }
            let finding = locate(&value, segs, &message);
            if let Some(field) = quoted(&message, "missing field `") {
                if removed.iter().any(|k| k == field) {
                    break;
                }
            }
            let mut full = base.clone();
            full.extend(finding.at.iter().cloned());
            self.report(problems, &full, &message);
            reported = true;
            if !finding.removable || !remove(&mut value, &finding.at) {
                break;
            }
            if let (true, Some(Seg::Key(key))) = (finding.mistyped, finding.at.last()) {
                removed.push(key.clone());
            }
        }
        None
    }

    /// Reports every key of the mapping at `path` that is not in `known`, in
    /// serde's words (`unknown field `x`, expected one of ...`) with the key's
    /// line. For a map whose keys are checked by hand rather than by serde;
    /// does nothing when the node is absent or not a mapping.
    pub fn unknown_keys(&self, path: &str, known: &[&str], problems: &mut Problems) {
        let Some(segs) = parse_path(path) else { return };
        let Some(Value::Mapping(map)) = walk(&self.root, &segs).map(untag) else { return };
        for key in map.keys().filter_map(key_text) {
            if known.contains(&key.as_str()) {
                continue;
            }
            let expected = match known {
                [] => "there are no fields".to_string(),
                [one] => format!("expected `{one}`"),
                [a, b] => format!("expected `{a}` or `{b}`"),
                _ => {
                    format!("expected one of {}", known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "))
                }
            };
            let mut at = segs.clone();
            at.push(Seg::Key(key.clone()));
            self.report(problems, &at, &format!("unknown field `{key}`, {expected}"));
        }
    }

    fn report(&self, problems: &mut Problems, segs: &[Seg], message: &str) {
        let path = format_path(segs);
        match self.line(&path) {
            Some(line) => problems.push(path, format!("line {line}: {message}")),
            None => problems.push(path, message),
        }
    }
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `a.b[1].c` → segments; `None` for a malformed path.
fn parse_path(path: &str) -> Option<Vec<Seg>> {
    let mut segs = Vec::new();
    if path.is_empty() {
        return Some(segs);
    }
    for part in path.split('.') {
        let (name, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !name.is_empty() {
            segs.push(Seg::Key(name.to_string()));
        } else if rest.is_empty() {
            return None;
        }
        while let Some(open) = rest.strip_prefix('[') {
            let (index, after) = open.split_once(']')?;
            segs.push(Seg::Index(index.parse().ok()?));
            rest = after;
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(segs)
}

fn format_path(segs: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The text a map key is addressed by: strings, numbers and booleans.
fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Looks through YAML tags (`!onnx {...}`): paths do not name them.
fn untag(mut value: &Value) -> &Value {
    while let Value::Tagged(t) = value {
        value = &t.value;
    }
    value
}

fn untag_mut(mut value: &mut Value) -> &mut Value {
    while let Value::Tagged(t) = value {
        value = &mut t.value;
    }
    value
}

fn child<'a>(value: &'a Value, seg: &Seg) -> Option<&'a Value> {
    match (seg, untag(value)) {
        (Seg::Key(k), Value::Mapping(m)) => {
            m.iter().find(|(key, _)| key_text(key).as_deref() == Some(k)).map(|(_, v)| v)
        }
        (Seg::Index(i), Value::Sequence(s)) => s.get(*i),
        _ => None,
    }
}

fn walk<'a>(root: &'a Value, segs: &[Seg]) -> Option<&'a Value> {
    segs.iter().try_fold(root, child)
}

/// Removes the map entry at `segs` (whose last segment is a key).
fn remove(root: &mut Value, segs: &[Seg]) -> bool {
    let Some((Seg::Key(last), parents)) = segs.split_last() else { return false };
    let mut node = root;
    for seg in parents {
        let next = match (seg, untag_mut(node)) {
            (Seg::Key(k), Value::Mapping(m)) => {
                m.iter_mut().find(|(key, _)| key_text(key).as_deref() == Some(k)).map(|(_, v)| v)
            }
            (Seg::Index(i), Value::Sequence(s)) => s.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else { return false };
        node = next;
    }
    let Value::Mapping(map) = untag_mut(node) else { return false };
    let Some(key) = map.keys().find(|k| key_text(k).as_deref() == Some(last)).cloned() else { return false };
    map.shift_remove(&key).is_some()
}

/// Deserialises `value` as serde_yaml would from text, returning the error's
/// path and serde's message.
///
/// The value is written back to YAML and read with serde_yaml's text
/// deserialiser rather than `T::deserialize(value)`: the two disagree on
/// scalars (from text, a plain `123` fills a `String` field; from a `Value`
/// it is a type error), and validation must accept exactly what loading does.
fn deserialize<T: DeserializeOwned>(value: &Value) -> Result<T, (Vec<Seg>, String)> {
    let text = serde_yaml::to_string(value).map_err(|e| (Vec::new(), e.to_string()))?;
    serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(&text)).map_err(|e| {
        let segs = convert_path(value, e.path());
        let message = clean_message(&e.inner().to_string(), &segs);
        (segs, message)
    })
}

/// serde_path_to_error's path → ours, following `value` to place enum
/// variants: `{onnx: {...}}` names the variant as a key, `!onnx {...}` does not.
fn convert_path(value: &Value, path: &serde_path_to_error::Path) -> Vec<Seg> {
    let mut segs = Vec::new();
    let mut node = Some(value);
    for segment in path {
        let seg = match segment {
            Segment::Seq { index } => Seg::Index(*index),
            Segment::Map { key } => Seg::Key(key.clone()),
            Segment::Enum { variant } => {
                let seg = Seg::Key(variant.clone());
                if node.and_then(|n| child(n, &seg)).is_none() {
                    continue;
                }
                seg
            }
            Segment::Unknown => break,
        };
        node = node.and_then(|n| child(n, &seg));
        segs.push(seg);
    }
    segs
}

/// serde_yaml's text is `[path: ]message[ at line L column C]`, with its own
/// path and a position in the re-written text: both are dropped, ours replace
/// them. Its path is a prefix of the error's (it is where the error surfaced),
/// so only such a prefix is removed, never a `: ` that is part of the message.
fn clean_message(text: &str, segs: &[Seg]) -> String {
    let text = strip_position(text);
    if let Some((head, rest)) = text.split_once(": ") {
        if let Some(prefix) = parse_path(head) {
            if !prefix.is_empty() && segs.starts_with(&prefix) {
                return rest.to_string();
            }
        }
    }
    text.to_string()
}

fn strip_position(text: &str) -> &str {
    if let Some(i) = text.rfind(" at line ") {
        let tail = &text[i + " at line ".len()..];
        let is_position = tail
            .split_once(" column ")
            .is_some_and(|(l, c)| [l, c].iter().all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())));
        if is_position {
            return &text[..i];
        }
    }
    text
}

/// The name between backticks after `prefix`: `unknown field `x`, ...` → `x`.
fn quoted<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.split_once('`').map(|(name, _)| name)
}

/// Where an error really is, relative to the extracted node.
struct Finding {
    at: Vec<Seg>,
    /// Removing the map entry at `at` lets the next round go past the error.
    removable: bool,
    /// A value of the wrong type or form (not an unknown key).
    mistyped: bool,
}

/// Moves an error from where serde_path_to_error left it to the node it is
/// about. Its path stops at a tagged enum or flattened struct (their content
/// was buffered out of its sight), and for an unknown key it names the
/// containing map; the message names the key or quotes the value, so the
/// nearest (shallowest) match at or below the reported node is the one meant.
fn locate(value: &Value, segs: Vec<Seg>, message: &str) -> Finding {
    let node = walk(value, &segs);
    let search = |pred: &dyn Fn(&Value) -> bool| node.and_then(|n| nearest(n, pred));
    let (found, mistyped) = if let Some(key) = quoted(message, "unknown field `") {
        let key = Seg::Key(key.to_string());
        let found = search(&|v| child(v, &key).is_some()).map(|mut at| {
            at.push(key.clone());
            at
        });
        (found, false)
    } else if quoted(message, "missing field `").is_some() {
        // Nothing to point at or remove: the field is not there.
        return Finding { at: segs, removable: false, mistyped: true };
    } else if let Some(variant) = quoted(message, "unknown variant `") {
        // An internally tagged enum's `type: onnxx`.
        (search(&|v| matches!(v, Value::String(s) if s == variant)), true)
    } else if let Some(unexpected) =
        message.strip_prefix("invalid type: ").or_else(|| message.strip_prefix("invalid value: "))
    {
        // A mistyped field inside a tagged enum: find the scalar serde quotes.
        (search(&|v| describes(unexpected, v)), true)
    } else {
        (None, true)
    };
    match found {
        Some(rel) => {
            let at = [segs, rel].concat();
            Finding { removable: matches!(at.last(), Some(Seg::Key(_))), at, mistyped }
        }
        // An unknown key that is nowhere to be found cannot be removed; any
        // other error is skipped by dropping the entry it was reported at.
        None => Finding { removable: mistyped && matches!(segs.last(), Some(Seg::Key(_))), at: segs, mistyped },
    }
}

/// The path (relative to `root`; empty for `root` itself) of the shallowest
/// node for which `pred` holds, nodes at one depth in document order.
fn nearest(root: &Value, pred: &dyn Fn(&Value) -> bool) -> Option<Vec<Seg>> {
    if pred(root) {
        return Some(Vec::new());
    }
    let mut queue = VecDeque::from([(Vec::new(), root)]);
    while let Some((at, node)) = queue.pop_front() {
        let children: Vec<(Seg, &Value)> = match untag(node) {
            Value::Mapping(m) => m.iter().filter_map(|(k, v)| Some((Seg::Key(key_text(k)?), v))).collect(),
            Value::Sequence(s) => s.iter().enumerate().map(|(i, v)| (Seg::Index(i), v)).collect(),
            _ => Vec::new(),
        };
        for (seg, v) in children {
            let mut path = at.clone();
            path.push(seg);
            if pred(v) {
                return Some(path);
            }
            queue.push_back((path, v));
        }
    }
    None
}

/// Whether serde's `Unexpected` text at the start of `unexpected`
/// (`string "lots", expected usize`) describes the scalar `value`.
fn describes(unexpected: &str, value: &Value) -> bool {
    let shown = match untag(value) {
        Value::String(s) => format!("string {s:?}"),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            // serde shows `1.0` where Display shows `1`.
            return [format!("floating point `{f}`"), format!("floating point `{f}.0`")]
                .iter()
                .any(|s| unexpected.starts_with(&format!("{s},")));
        }
        Value::Number(n) => format!("integer `{n}`"),
        _ => return false,
    };
    unexpected.starts_with(&format!("{shown},"))
}

/// Records the line of every mapping key and sequence item by path, from the
/// parser's event stream.
#[derive(Default)]
struct LineRecorder {
    lines: HashMap<String, usize>,
    stack: Vec<Frame>,
    root_seen: bool,
    /// The line of the first key repeated in its mapping: serde_yaml refuses
    /// the document but places the error at the mapping's start.
    duplicate: Option<usize>,
    documents: usize,
    /// The line where a second document starts: serde_yaml refuses it
    /// without saying where.
    second_document: Option<usize>,
}

/// An open collection; `path` is `None` under a key that is not a scalar
/// (`? [a, b]: ...`) or an alias, which no path can name.
enum Frame {
    Map { path: Option<String>, pending: Pending, keys: HashSet<String> },
    Seq { path: Option<String>, next: usize },
}

enum Pending {
    Key,
    /// The key was read; the next node is its value, at this path.
    Value(Option<String>),
}

impl LineRecorder {
    /// Called at the start of every node; returns the node's path, and
    /// records its line when it is a key or a sequence item.
    fn node(&mut self, span: Span, scalar: Option<&str>) -> Option<String> {
        let line = span.start.line();
        match self.stack.last_mut() {
            None if self.root_seen => None,
            None => {
                self.root_seen = true;
                self.lines.insert(String::new(), line);
                Some(String::new())
            }
            Some(Frame::Map { path, pending: pending @ Pending::Key, keys }) => {
                if let Some(k) = scalar {
                    if !keys.insert(k.to_string()) {
                        self.duplicate.get_or_insert(line);
                    }
                }
                let entry = match (path.as_deref(), scalar) {
                    (Some(p), Some(k)) => Some(join_key(p, k)),
                    _ => None,
                };
                if let Some(entry) = &entry {
                    // Keys with dots can make two entries one path; keep the first.
                    self.lines.entry(entry.clone()).or_insert(line);
                }
                *pending = Pending::Value(entry);
                // The key node itself is not addressable.
                None
            }
            Some(Frame::Map { pending, .. }) => match std::mem::replace(pending, Pending::Key) {
                Pending::Value(path) => path,
                Pending::Key => None,
            },
            Some(Frame::Seq { path, next }) => {
                let item = path.as_deref().map(|p| format!("{p}[{next}]"));
                *next += 1;
                if let Some(item) = &item {
                    self.lines.entry(item.clone()).or_insert(line);
                }
                item
            }
        }
    }
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl<'input> SpannedEventReceiver<'input> for LineRecorder {
    fn on_event(&mut self, event: Event<'input>, span: Span) {
        match event {
            Event::Scalar(text, ..) => {
                self.node(span, Some(&text));
            }
            Event::Alias(_) => {
                self.node(span, None);
            }
            Event::MappingStart(..) => {
                let path = self.node(span, None);
                self.stack.push(Frame::Map { path, pending: Pending::Key, keys: HashSet::new() });
            }
            Event::SequenceStart(..) => {
                let path = self.node(span, None);
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents == 2 {
                    self.second_document = Some(span.start.line());
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Source {
        topic: String,
        chunk_size: usize,
        #[serde(default)]
        codec: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Preprocess {
        normalize: bool,
        features: Vec<Feature>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Feature {
        name: String,
        column: String,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Worker {
        Onnx(OnnxWorker),
        Openai(OpenaiWorker),
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct OnnxWorker {
        model: String,
        threads: usize,
        #[serde(default)]
        max_batch_size: Option<usize>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct OpenaiWorker {
        endpoint: String,
        model: String,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sink {
        path: String,
    }

    /// 25 lines; the mistakes are on lines 3, 5, 12, 18 and 24.
    const BROKEN: &str = "\
source:
  topic: payments
  chunk_size: lots
  # a comment shifts nothing
  compression: zstd
preprocess:
  normalize: true
  features:
    - name: amount
      column: amount_eur
    - name: country
      from: geo
      column: country_code
workers:
  fraud:
    type: onnx
    model: models/fraud.onnx
    max_batch_sise: 64
    threads: 2
  summarise:
    type: openai
    endpoint: https://llm.example.com/v1
    model: small
sink:
  path: out/
";

    fn messages(problems: &Problems) -> Vec<(String, String)> {
        problems.items().iter().map(|p| (p.path.clone(), p.message.clone())).collect()
    }

    #[test]
    fn document_reports_every_shape_error_with_path_and_true_line() {
        assert_eq!(BROKEN.lines().count(), 25);
        let doc = Document::parse(BROKEN).unwrap();
        let mut problems = Problems::new();
        let source = doc.extract::<Source>("source", &mut problems);
        let preprocess = doc.extract::<Preprocess>("preprocess", &mut problems);
        let workers = doc.extract::<BTreeMap<String, Worker>>("workers", &mut problems);
        let sink = doc.extract::<Sink>("sink", &mut problems);
        assert!(source.is_none() && preprocess.is_none() && workers.is_none());
        assert_eq!(sink, Some(Sink { path: "out/".into() }));

        let found = messages(&problems);
        let at: Vec<(&str, &str)> = found.iter().map(|(p, m)| (p.as_str(), m.split(": ").next().unwrap())).collect();
        assert_eq!(
            at,
            [
                ("source.chunk_size", "line 3"),
                ("source.compression", "line 5"),
                ("preprocess.features[1].from", "line 12"),
                ("workers.fraud.max_batch_sise", "line 18"),
            ],
            "{problems}"
        );
        assert_eq!(found[0].1, r#"line 3: invalid type: string "lots", expected usize"#);
        assert_eq!(found[1].1, "line 5: unknown field `compression`, expected one of `topic`, `chunk_size`, `codec`");
        assert_eq!(found[2].1, "line 12: unknown field `from`, expected `name` or `column`");
        assert_eq!(
            found[3].1,
            "line 18: unknown field `max_batch_sise`, expected one of `model`, `threads`, `max_batch_size`"
        );
        assert_eq!(problems.items()[3].to_string(), format!("workers.fraud.max_batch_sise: {}", found[3].1));
    }

    #[test]
    fn document_happy_path_returns_value_without_problems() {
        let fixed = BROKEN
            .replace("chunk_size: lots", "chunk_size: 500")
            .replace("  compression: zstd\n", "")
            .replace("      from: geo\n", "")
            .replace("max_batch_sise", "max_batch_size");
        let doc = Document::parse(&fixed).unwrap();
        let mut problems = Problems::new();
        let source = doc.extract::<Source>("source", &mut problems);
        let preprocess = doc.extract::<Preprocess>("preprocess", &mut problems);
        let workers = doc.extract::<BTreeMap<String, Worker>>("workers", &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems}");
        assert_eq!(source, Some(Source { topic: "payments".into(), chunk_size: 500, codec: None }));
        assert_eq!(preprocess.unwrap().features[1], Feature { name: "country".into(), column: "country_code".into() });
        assert_eq!(
            workers["fraud"],
            Worker::Onnx(OnnxWorker { model: "models/fraud.onnx".into(), threads: 2, max_batch_size: Some(64) })
        );
        assert_eq!(
            workers["summarise"],
            Worker::Openai(OpenaiWorker { endpoint: "https://llm.example.com/v1".into(), model: "small".into() })
        );
    }

    #[test]
    fn document_keeps_serde_yaml_scalar_rules() {
        // From text, serde_yaml reads a plain `123` into a String field; so must
        // extraction, or validation would refuse manifests that load.
        let doc = Document::parse("sink:\n  path: 123\n").unwrap();
        let mut problems = Problems::new();
        assert_eq!(doc.extract::<Sink>("sink", &mut problems), Some(Sink { path: "123".into() }));
        assert!(problems.is_empty(), "{problems}");
    }

    #[test]
    fn document_reports_unknown_keys_then_type_error_in_one_entry() {
        let text = "\
fraud:
  type: onnx
  modle: a.onnx
  model: b.onnx
  thread: 2
  threads: many
";
        let doc = Document::parse(text).unwrap();
        let mut problems = Problems::new();
        assert!(doc.extract::<Worker>("fraud", &mut problems).is_none());
        let found = messages(&problems);
        assert_eq!(
            found.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            ["fraud.modle", "fraud.thread", "fraud.threads"],
            "{problems}"
        );
        assert!(found[0].1.starts_with("line 3: unknown field `modle`"), "{problems}");
        assert!(found[1].1.starts_with("line 5: unknown field `thread`"), "{problems}");
        // Inside a tagged enum serde_path_to_error stops at `fraud`; the quoted
        // value places the error on its key.
        assert_eq!(found[2].1, r#"line 6: invalid type: string "many", expected usize"#);
    }

    #[test]
    fn document_reports_missing_field_and_unknown_variant() {
        let text = "workers:\n  a:\n    type: onnx\n    threads: 1\n  b:\n    type: onnxx\n";
        let doc = Document::parse(text).unwrap();
        let mut problems = Problems::new();
        assert!(doc.extract::<BTreeMap<String, Worker>>("workers", &mut problems).is_none());
        let found = messages(&problems);
        assert_eq!(found[0], ("workers.a".to_string(), "line 2: missing field `model`".to_string()), "{problems}");
        assert_eq!(found.len(), 1, "{problems}");
        let mut problems = Problems::new();
        assert!(doc.extract::<Worker>("workers.b", &mut problems).is_none());
        let found = messages(&problems);
        assert_eq!(found[0].0, "workers.b.type", "{problems}");
        assert!(found[0].1.starts_with("line 6: unknown variant `onnxx`"), "{problems}");
    }

    #[test]
    fn document_absent_section_is_missing_or_none() {
        let doc = Document::parse("source:\n  topic: t\n  chunk_size: 1\n").unwrap();
        let mut problems = Problems::new();
        assert_eq!(doc.extract::<Option<Sink>>("sink", &mut problems), Some(None));
        assert!(problems.is_empty(), "{problems}");
        assert_eq!(doc.extract::<Sink>("sink", &mut problems), None);
        assert_eq!(problems.items()[0].path, "sink");
        assert!(problems.items()[0].message.starts_with("line 1: missing; expected "), "{problems}");
    }

    #[test]
    fn document_syntax_error_names_its_line() {
        let err = Document::parse("source:\n  topic: t\n  chunk_size: [1, 2\nsink:\n  path: x\n").unwrap_err();
        assert!(err.starts_with("line 4: "), "{err}");
        let err = Document::parse("a: 1\nb: 2\n  c: 3\n").unwrap_err();
        assert!(err.starts_with("line 3: "), "{err}");
        let err = Document::parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert!(err.starts_with("line 3: "), "{err}");
        let err = Document::parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(err.starts_with("line 2: "), "{err}");
    }

    #[test]
    fn document_line_for_nested_paths_and_sequence_items() {
        let doc = Document::parse(BROKEN).unwrap();
        assert_eq!(doc.line(""), Some(1));
        assert_eq!(doc.line("source"), Some(1));
        assert_eq!(doc.line("source.compression"), Some(5));
        assert_eq!(doc.line("preprocess.features"), Some(8));
        assert_eq!(doc.line("preprocess.features[0]"), Some(9));
        assert_eq!(doc.line("preprocess.features[1]"), Some(11));
        assert_eq!(doc.line("preprocess.features[1].from"), Some(12));
        assert_eq!(doc.line("workers.summarise.model"), Some(23));
        // Absent nodes fall back to their nearest ancestor.
        assert_eq!(doc.line("workers.summarise.nope.deeper"), Some(20));
        assert_eq!(doc.line("preprocess.features[7]"), Some(8));
        assert_eq!(doc.line("bad[path"), None);
        assert_eq!(doc.get("preprocess.features[1].from"), Some(&Value::String("geo".into())));
        assert_eq!(doc.get("workers.fraud.threads"), Some(&Value::Number(2.into())));
        assert_eq!(doc.get("workers.nope"), None);

        let flow = Document::parse("- [a, {b: 1}]\n-\n  c: 2\n").unwrap();
        assert_eq!(flow.line("[0]"), Some(1));
        assert_eq!(flow.line("[0][1].b"), Some(1));
        assert_eq!(flow.line("[1].c"), Some(3));
    }

    #[test]
    fn document_unknown_keys_in_serde_words() {
        let doc = Document::parse(BROKEN).unwrap();
        let mut problems = Problems::new();
        doc.unknown_keys("source", &["topic", "chunk_size"], &mut problems);
        doc.unknown_keys("sink", &["path"], &mut problems);
        assert_eq!(
            messages(&problems),
            [(
                "source.compression".to_string(),
                "line 5: unknown field `compression`, expected `topic` or `chunk_size`".to_string()
            )]
        );
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct WithFlatten {
        name: String,
        #[serde(flatten)]
        limits: Limits,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Limits {
        timeout_ms: u64,
    }

    #[test]
    fn document_flattened_struct_errors_land_on_their_key() {
        let doc = Document::parse("w:\n  name: x\n  timeout_ms: 5\n  retries: 3\n").unwrap();
        let mut problems = Problems::new();
        assert!(doc.extract::<WithFlatten>("w", &mut problems).is_none());
        let found = messages(&problems);
        assert_eq!(found.len(), 1, "{problems}");
        assert_eq!(found[0].0, "w.retries", "{problems}");
        assert!(found[0].1.starts_with("line 4: unknown field `retries`"), "{problems}");

        // The flattened part is buffered too: its type errors are placed by value.
        let doc = Document::parse("w:\n  name: x\n  timeout_ms: soon\n").unwrap();
        let mut problems = Problems::new();
        assert!(doc.extract::<WithFlatten>("w", &mut problems).is_none());
        assert_eq!(
            messages(&problems)[0],
            ("w.timeout_ms".to_string(), r#"line 3: invalid type: string "soon", expected u64"#.to_string())
        );

        let doc = Document::parse("w:\n  name: x\n  timeout_ms: 5\n").unwrap();
        assert_eq!(
            doc.extract::<WithFlatten>("w", &mut Problems::new()),
            Some(WithFlatten { name: "x".into(), limits: Limits { timeout_ms: 5 } })
        );
    }
}
