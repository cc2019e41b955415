//! Data minimisation before egress: request templates over event fields,
//! the redaction operators applied to those fields, and the last check that
//! refuses a request body in which a PII detector still fires.

use std::collections::HashMap;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use switchyard_schemas::{PiiScanner, Value};

use crate::cloud::config::{RedactOp, RedactRule};
use crate::cloud::template::{Part, Template};
use crate::{Error, Result};

#[derive(Debug)]
enum Op {
    Keep,
    Drop,
    Mask,
    Hash(Vec<u8>),
    Replace(String),
}

/// A template bound to the schema, with each field's redaction.
pub struct Redactor {
    /// (literal text, or field index with its op)
    parts: Vec<Bound>,
    ops: Vec<Op>,
    scanner: Arc<dyn PiiScanner>,
}

enum Bound {
    Text(String),
    Field(usize),
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("fields", &self.ops.len()).finish_non_exhaustive()
    }
}

impl Redactor {
    /// Binds `template` to the schema's `fields` and the `rules`; hash keys
    /// are read from their environment variables now.
    pub fn new(
        template: &Template,
        fields: &[String],
        rules: &[RedactRule],
        scanner: Arc<dyn PiiScanner>,
    ) -> Result<Self> {
        let index: HashMap<&str, usize> = fields.iter().enumerate().map(|(i, f)| (f.as_str(), i)).collect();
        let mut ops: Vec<Op> = fields.iter().map(|_| Op::Keep).collect();
        for r in rules {
            let &i = index
                .get(r.field.as_str())
                .ok_or_else(|| Error::Config(format!("redact: no field `{}` in the schema", r.field)))?;
            ops[i] = match r.op {
                RedactOp::Drop => Op::Drop,
                RedactOp::Mask => Op::Mask,
                RedactOp::Replace => Op::Replace(r.with.clone().unwrap_or_else(|| "[REDACTED]".into())),
                RedactOp::Hash => {
                    let var = r.key_env.as_deref().unwrap_or_default();
                    let key = std::env::var(var).map_err(|_| {
                        Error::Config(format!(
                            "redact `{}`: environment variable `{var}` (the HMAC key) is not set",
                            r.field
                        ))
                    })?;
                    Op::Hash(key.into_bytes())
                }
            };
        }
        let parts = template
            .parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => Ok(Bound::Text(t.clone())),
                Part::Field(f) => index
                    .get(f.as_str())
                    .map(|&i| Bound::Field(i))
                    .ok_or_else(|| Error::Config(format!("template: no field `{f}` in the schema"))),
            })
            .collect::<Result<_>>()?;
        Ok(Redactor { parts, ops, scanner })
    }

    /// The template rendered over `values` (schema order), every field
    /// redacted as configured. Null renders as empty text.
    pub fn render(&self, values: &[Value]) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Bound::Text(t) => out.push_str(t),
                Bound::Field(i) => {
                    let text = values.get(*i).and_then(Value::to_text).unwrap_or_default();
                    out.push_str(&self.apply(&self.ops[*i], text));
                }
            }
        }
        out
    }

    fn apply(&self, op: &Op, text: String) -> String {
        match op {
            Op::Keep => text,
            Op::Drop => String::new(),
            Op::Replace(with) => with.clone(),
            Op::Hash(key) => {
                let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(text.as_bytes());
                hex::encode(&mac.finalize().into_bytes()[..8])
            }
            Op::Mask => mask(self.scanner.as_ref(), &text),
        }
    }

    /// Values a rendering passes through a redaction rule (any but `keep`).
    pub fn redacted_fields(&self) -> usize {
        self.parts.iter().filter(|p| matches!(p, Bound::Field(i) if !matches!(self.ops[*i], Op::Keep))).count()
    }

    /// The last check before egress: the names of detectors that fire in
    /// `body`, or none. A non-empty answer blocks the request.
    pub fn last_check(&self, body: &str) -> Vec<&'static str> {
        last_check(self.scanner.as_ref(), body)
    }
}

/// Detector names that fire in `body`, once each.
pub fn last_check(scanner: &dyn PiiScanner, body: &str) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = scanner.find(body).into_iter().map(|(_, n)| n).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Replaces every detector match in `text` by `[KIND]`; overlapping matches
/// are merged and take the first one's name.
pub fn mask(scanner: &dyn PiiScanner, text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (range, kind) in scanner.find(text) {
        if range.start < at {
            at = at.max(range.end);
            continue;
        }
        out.push_str(&text[at..range.start]);
        out.push('[');
        out.push_str(&kind.to_ascii_uppercase());
        out.push(']');
        at = range.end;
    }
    out.push_str(&text[at.min(text.len())..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finds `secret` and `@`-words: enough to test the operators.
    struct Words;
    impl PiiScanner for Words {
        fn find(&self, text: &str) -> Vec<(std::ops::Range<usize>, &'static str)> {
            let mut out = vec![];
            let mut start = 0;
            for w in text.split(' ') {
                if w.contains('@') {
                    out.push((start..start + w.len(), "email"));
                } else if w == "secret" {
                    out.push((start..start + w.len(), "national_id"));
                }
                start += w.len() + 1;
            }
            out
        }
    }

    fn fields() -> Vec<String> {
        ["note", "email", "amount", "card"].map(String::from).to_vec()
    }

    #[test]
    fn template_parses_placeholders_and_escapes() {
        let t = Template::parse("Score {amount} {{json}} for {note}").unwrap();
        assert_eq!(t.fields().collect::<Vec<_>>(), ["amount", "note"]);
        assert!(Template::parse("open {amount").unwrap_err().contains("not closed"));
        assert!(Template::parse("stray } here").unwrap_err().contains("closes nothing"));
        assert!(Template::parse("empty {}").unwrap_err().contains("names no field"));
    }

    #[test]
    fn every_operator_redacts_as_documented() {
        std::env::set_var("SY_TEST_HMAC_KEY", "k1");
        let rules = vec![
            RedactRule { field: "note".into(), op: RedactOp::Mask, with: None, key_env: None },
            RedactRule {
                field: "email".into(),
                op: RedactOp::Hash,
                with: None,
                key_env: Some("SY_TEST_HMAC_KEY".into()),
            },
            RedactRule { field: "card".into(), op: RedactOp::Drop, with: None, key_env: None },
        ];
        let t = Template::parse("{note}|{email}|{amount}|{card}").unwrap();
        let r = Redactor::new(&t, &fields(), &rules, Arc::new(Words)).unwrap();
        let values = vec![
            Value::Str("mail me at a@b.c or say secret now".into()),
            Value::Str("a@b.c".into()),
            Value::Float(12.5),
            Value::Str("4111111111111111".into()),
        ];
        let out = r.render(&values);
        let parts: Vec<&str> = out.split('|').collect();
        assert_eq!(parts[0], "mail me at [EMAIL] or say [NATIONAL_ID] now");
        assert_eq!(parts[1].len(), 16);
        assert!(!out.contains("a@b.c") && !out.contains("4111"));
        assert_eq!(parts[2], "12.5");
        assert_eq!(parts[3], "");
        // Keyed: the same value hashes the same; another key differently.
        assert_eq!(r.render(&values), out);
        std::env::set_var("SY_TEST_HMAC_KEY_2", "k2");
        let rules2 = vec![RedactRule {
            field: "email".into(),
            op: RedactOp::Hash,
            with: None,
            key_env: Some("SY_TEST_HMAC_KEY_2".into()),
        }];
        let r2 = Redactor::new(&Template::parse("{email}").unwrap(), &fields(), &rules2, Arc::new(Words)).unwrap();
        assert_ne!(r2.render(&values), parts[1]);
        let replace =
            vec![RedactRule { field: "note".into(), op: RedactOp::Replace, with: Some("n/a".into()), key_env: None }];
        let r3 = Redactor::new(&Template::parse("{note}").unwrap(), &fields(), &replace, Arc::new(Words)).unwrap();
        assert_eq!(r3.render(&values), "n/a");
    }

    #[test]
    fn last_check_names_what_fires() {
        let t = Template::parse("{note}").unwrap();
        let r = Redactor::new(&t, &fields(), &[], Arc::new(Words)).unwrap();
        assert_eq!(r.last_check("{\"content\":\"x@y secret x@z\"}"), vec!["email", "national_id"]);
        assert!(r.last_check("nothing here").is_empty());
    }

    #[test]
    fn missing_hash_key_is_a_clear_error() {
        let rules = vec![RedactRule {
            field: "email".into(),
            op: RedactOp::Hash,
            with: None,
            key_env: Some("SY_NOT_SET_XYZ".into()),
        }];
        let e = Redactor::new(&Template::parse("{email}").unwrap(), &fields(), &rules, Arc::new(Words)).unwrap_err();
        assert!(e.to_string().contains("SY_NOT_SET_XYZ"), "{e}");
    }
}
