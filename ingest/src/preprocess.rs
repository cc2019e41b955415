//! Declarative, deterministic pre-processing: event → feature vector.
//!
//! Each [`FeatureSpec`] selects a source field (`from`), optionally renames it
//! (`name`), coerces it to a number, imputes a missing value, applies numeric
//! [`Step`]s in order, or encodes a categorical with an [`Encoding`]. The
//! whole spec is hashed into every row's lineage; the same input always gives
//! byte-identical features (no hidden state, no statistics learned at run time).

use serde::{Deserialize, Serialize};
use switchyard_schemas::{Event, EventSchema, Problems, Value};

use crate::{Error, Result};

/// The `preprocess:` section of a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PreprocessConfig {
    /// Features in the order the model expects them.
    pub features: Vec<FeatureSpec>,
}

/// One feature (or, for one-hot encoding, one group of features).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Source field of the event schema.
    pub from: String,
    /// Output feature name; defaults to `from`. One-hot features are named
    /// `name=category`.
    #[serde(default)]
    pub name: Option<String>,
    /// Value used when the field is missing or null. Numeric features without
    /// it require the field to be `required` in the schema; categorical
    /// features without it encode a missing value like an unknown category.
    #[serde(default)]
    pub impute: Option<ImputeValue>,
    /// Numeric steps, applied in order after coercion and imputation.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Categorical encoding; mutually exclusive with `steps`.
    #[serde(default)]
    pub encode: Option<Encoding>,
}

/// A value to impute: a number, a boolean or a category.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ImputeValue {
    /// Numeric value.
    Number(f64),
    /// Boolean (coerced to 1.0 / 0.0).
    Bool(bool),
    /// Category name.
    Text(String),
}

/// A numeric transformation. Written `log1p`, `{standardize: {mean, std}}`,
/// `{clip: {min, max}}` or `{scale: {factor}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", try_from = "StepRepr")]
pub enum Step {
    /// `ln(1 + x)`; negative inputs are clamped to 0 first.
    Log1p,
    /// `(x - mean) / std`.
    Standardize {
        /// Mean of the training data.
        mean: f64,
        /// Standard deviation of the training data (> 0).
        std: f64,
    },
    /// Clamp into `[min, max]`.
    Clip {
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
    /// Multiply by `factor`.
    Scale {
        /// The factor.
        factor: f64,
    },
}

/// How a step is written in YAML: a bare name or a one-key map. (YAML
/// libraries differ on externally tagged enums; plain maps read the same
/// everywhere.)
#[derive(Deserialize)]
#[serde(untagged)]
enum StepRepr {
    Name(String),
    Standardize { standardize: StandardizeArgs },
    Clip { clip: ClipArgs },
    Scale { scale: ScaleArgs },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StandardizeArgs {
    mean: f64,
    std: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClipArgs {
    min: f64,
    max: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleArgs {
    factor: f64,
}

impl TryFrom<StepRepr> for Step {
    type Error = String;
    fn try_from(r: StepRepr) -> std::result::Result<Self, String> {
        Ok(match r {
            StepRepr::Name(n) if n == "log1p" => Step::Log1p,
            StepRepr::Name(n) => {
                return Err(format!(
                    "unknown step `{n}` (expected log1p, {{standardize: {{mean, std}}}}, {{clip: {{min, max}}}} or {{scale: {{factor}}}})"
                ))
            }
            StepRepr::Standardize { standardize: a } => Step::Standardize { mean: a.mean, std: a.std },
            StepRepr::Clip { clip: a } => Step::Clip { min: a.min, max: a.max },
            StepRepr::Scale { scale: a } => Step::Scale { factor: a.factor },
        })
    }
}

/// A categorical encoding, written `{one_hot: [..]}` or `{ordinal: [..]}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", from = "EncodingRepr")]
pub enum Encoding {
    /// One 0/1 feature per category; unknown or missing → all zeros.
    OneHot(Vec<String>),
    /// One feature: the category's index; unknown or missing → -1.
    Ordinal(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum EncodingRepr {
    OneHot { one_hot: Vec<String> },
    Ordinal { ordinal: Vec<String> },
}

impl From<EncodingRepr> for Encoding {
    fn from(r: EncodingRepr) -> Self {
        match r {
            EncodingRepr::OneHot { one_hot } => Encoding::OneHot(one_hot),
            EncodingRepr::Ordinal { ordinal } => Encoding::Ordinal(ordinal),
        }
    }
}

impl PreprocessConfig {
    /// Reports every problem of the spec against `schema`, under `path`.
    pub fn validate(&self, path: &str, schema: &EventSchema, problems: &mut Problems) {
        if self.features.is_empty() {
            problems.push(format!("{path}.features"), "at least one feature is needed");
        }
        let mut names = std::collections::HashSet::new();
        for (i, f) in self.features.iter().enumerate() {
            let p = format!("{path}.features[{i}]");
            let Some(field) = schema.fields.iter().find(|s| s.name == f.from) else {
                problems.push(
                    format!("{p}.from"),
                    format!("no field `{}` in schema {} (fields: {})", f.from, schema.id, field_list(schema)),
                );
                continue;
            };
            for n in f.output_names() {
                if !names.insert(n.clone()) {
                    problems.push(format!("{p}.name"), format!("duplicate feature name `{n}`"));
                }
            }
            match &f.encode {
                Some(enc) => {
                    if !f.steps.is_empty() {
                        problems.push(format!("{p}.steps"), "a feature with `encode` cannot also have numeric `steps`");
                    }
                    let cats = match enc {
                        Encoding::OneHot(c) | Encoding::Ordinal(c) => c,
                    };
                    if cats.is_empty() {
                        problems.push(format!("{p}.encode"), "list at least one category");
                    }
                    if let Some(ImputeValue::Number(_)) = f.impute {
                        problems
                            .push(format!("{p}.impute"), "a categorical feature imputes a category name, not a number");
                    }
                }
                None => {
                    if f.impute.is_none() && !field.required {
                        problems.push(
                            format!("{p}.impute"),
                            format!(
                                "field `{}` is optional in the schema; give an `impute` value or make it required",
                                f.from
                            ),
                        );
                    }
                    if let Some(ImputeValue::Text(t)) = &f.impute {
                        if t.parse::<f64>().is_err() {
                            problems.push(format!("{p}.impute"), format!("`{t}` is not a number"));
                        }
                    }
                    for (j, s) in f.steps.iter().enumerate() {
                        match s {
                            Step::Standardize { std, .. } if *std <= 0.0 || std.is_nan() => {
                                problems.push(format!("{p}.steps[{j}].standardize.std"), "must be > 0")
                            }
                            Step::Clip { min, max } if min > max => {
                                problems.push(format!("{p}.steps[{j}].clip"), "min must be ≤ max")
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    /// SHA-256 of the canonical JSON form of the spec.
    pub fn spec_hash(&self) -> String {
        switchyard_schemas::sha256_hex(&serde_json::to_vec(self).expect("spec serialises"))
    }
}

fn field_list(schema: &EventSchema) -> String {
    schema.fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
}

impl FeatureSpec {
    fn base_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.from)
    }

    /// Names of the features this spec produces.
    pub fn output_names(&self) -> Vec<String> {
        match &self.encode {
            Some(Encoding::OneHot(cats)) => cats.iter().map(|c| format!("{}={c}", self.base_name())).collect(),
            _ => vec![self.base_name().to_string()],
        }
    }
}

#[derive(Debug, Clone)]
struct Compiled {
    index: usize,
    from: String,
    impute: Option<ImputeValue>,
    steps: Vec<Step>,
    encode: Option<Encoding>,
}

/// The runtime form of a [`PreprocessConfig`], with fields resolved to schema indices.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    features: Vec<Compiled>,
    names: Vec<String>,
    hash: String,
}

impl Preprocessor {
    /// Builds the runtime form; fails with the first problem `validate` would report.
    pub fn build(config: &PreprocessConfig, schema: &EventSchema) -> Result<Self> {
        let mut problems = Problems::new();
        config.validate("preprocess", schema, &mut problems);
        if !problems.is_empty() {
            return Err(Error::Config(problems.to_string()));
        }
        let features = config
            .features
            .iter()
            .map(|f| Compiled {
                index: schema.index_of(&f.from).expect("validated"),
                from: f.from.clone(),
                impute: f.impute.clone(),
                steps: f.steps.clone(),
                encode: f.encode.clone(),
            })
            .collect();
        let names = config.features.iter().flat_map(FeatureSpec::output_names).collect();
        Ok(Self { features, names, hash: config.spec_hash() })
    }

    /// Feature names in output order.
    pub fn feature_names(&self) -> &[String] {
        &self.names
    }

    /// Number of features per event.
    pub fn width(&self) -> usize {
        self.names.len()
    }

    /// Hash of the spec (recorded in lineage).
    pub fn spec_hash(&self) -> &str {
        &self.hash
    }

    /// Appends the event's features to `out`. On error `out` is left as it was.
    pub fn features_into(&self, event: &Event, out: &mut Vec<f32>) -> std::result::Result<(), String> {
        let start = out.len();
        for f in &self.features {
            if let Err(e) = push_feature(f, &event.values[f.index], out) {
                out.truncate(start);
                return Err(e);
            }
        }
        Ok(())
    }
}

fn push_feature(f: &Compiled, value: &Value, out: &mut Vec<f32>) -> std::result::Result<(), String> {
    if let Some(enc) = &f.encode {
        let text = match (value, &f.impute) {
            (Value::Null, Some(ImputeValue::Text(t))) => Some(t.clone()),
            (Value::Null, Some(ImputeValue::Bool(b))) => Some(b.to_string()),
            (v, _) => v.to_text(),
        };
        match enc {
            Encoding::OneHot(cats) => {
                out.extend(cats.iter().map(|c| if text.as_deref() == Some(c.as_str()) { 1.0 } else { 0.0 }));
            }
            Encoding::Ordinal(cats) => {
                let i = text.and_then(|t| cats.iter().position(|c| *c == t)).map_or(-1.0, |i| i as f32);
                out.push(i);
            }
        }
        return Ok(());
    }
    let mut x = match value {
        Value::Null => match &f.impute {
            Some(ImputeValue::Number(n)) => *n,
            Some(ImputeValue::Bool(b)) => f64::from(u8::from(*b)),
            Some(ImputeValue::Text(t)) => {
                t.parse().map_err(|_| format!("feature `{}`: impute value is not a number", f.from))?
            }
            None => return Err(format!("feature `{}`: value missing and no impute value", f.from)),
        },
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Int(i) => *i as f64,
        Value::Float(v) => *v,
        Value::Str(s) => {
            s.trim().parse::<f64>().map_err(|_| format!("feature `{}`: text cannot be coerced to a number", f.from))?
        }
    };
    if !x.is_finite() {
        return Err(format!("feature `{}`: value is not a finite number", f.from));
    }
    for s in &f.steps {
        x = match *s {
            Step::Log1p => x.max(0.0).ln_1p(),
            Step::Standardize { mean, std } => (x - mean) / std,
            Step::Clip { min, max } => x.clamp(min, max),
            Step::Scale { factor } => x * factor,
        };
    }
    out.push(x as f32);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_schemas::{FieldSpec, FieldType, Lineage};

    fn schema() -> EventSchema {
        let f = |name: &str, ty, required| FieldSpec { name: name.into(), ty, required, sensitivity: None, from: None };
        EventSchema {
            id: "s".into(),
            version: 1,
            key_field: None,
            reject_unknown_fields: false,
            fields: vec![
                f("amount", FieldType::Float, true),
                f("dist", FieldType::Float, false),
                f("channel", FieldType::String, false),
                f("flag", FieldType::Bool, true),
                f("txt", FieldType::String, true),
            ],
            format: Default::default(),
            registry: None,
        }
    }

    fn config() -> PreprocessConfig {
        serde_yaml::from_str(
            r#"
features:
  - from: amount
    steps: [log1p, {standardize: {mean: 1.0, std: 2.0}}]
  - from: dist
    name: distance
    impute: 5.0
    steps: [{clip: {min: 0, max: 3}}]
  - from: channel
    encode: {one_hot: [pos, web]}
  - from: flag
  - from: txt
"#,
        )
        .unwrap()
    }

    fn event(values: Vec<Value>) -> Event {
        Event { values, key: String::new(), headers: vec![], lineage: Lineage::default() }
    }

    #[test]
    fn computes_features_in_order() {
        let p = Preprocessor::build(&config(), &schema()).unwrap();
        assert_eq!(p.feature_names(), ["amount", "distance", "channel=pos", "channel=web", "flag", "txt"]);
        let mut out = vec![];
        p.features_into(
            &event(vec![
                Value::Float(9.0),
                Value::Null,
                Value::Str("web".into()),
                Value::Bool(true),
                Value::Str(" 2.5".into()),
            ]),
            &mut out,
        )
        .unwrap();
        let amount = ((10f64).ln() - 1.0) / 2.0;
        assert_eq!(out, vec![amount as f32, 3.0, 0.0, 1.0, 1.0, 2.5]);
    }

    #[test]
    fn failed_feature_leaves_output_untouched() {
        let p = Preprocessor::build(&config(), &schema()).unwrap();
        let mut out = vec![7.0];
        let err = p
            .features_into(
                &event(vec![Value::Float(1.0), Value::Null, Value::Null, Value::Bool(false), Value::Str("abc".into())]),
                &mut out,
            )
            .unwrap_err();
        assert!(err.contains("`txt`"), "{err}");
        assert_eq!(out, vec![7.0]);
    }

    #[test]
    fn validation_reports_every_problem_with_path() {
        let cfg: PreprocessConfig = serde_yaml::from_str(
            r#"
features:
  - from: amout
  - from: dist
  - from: channel
    encode: {one_hot: []}
    steps: [log1p]
  - from: amount
    steps: [{standardize: {mean: 0, std: 0}}]
"#,
        )
        .unwrap();
        let mut problems = Problems::new();
        cfg.validate("preprocess", &schema(), &mut problems);
        let paths: Vec<_> = problems.items().iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "preprocess.features[0].from",
                "preprocess.features[1].impute",
                "preprocess.features[2].steps",
                "preprocess.features[2].encode",
                "preprocess.features[3].steps[0].standardize.std"
            ]
        );
        assert!(problems.items()[0].message.contains("fields: amount, dist"));
    }

    #[test]
    fn unknown_keys_in_spec_are_rejected() {
        let e = serde_yaml::from_str::<PreprocessConfig>("features: [{from: a, impuet: 1}]").unwrap_err();
        assert!(e.to_string().contains("impuet"), "{e}");
    }

    proptest::proptest! {
        /// Same input → byte-identical features, and the hash is stable.
        #[test]
        fn deterministic(amount in -1e9f64..1e9, dist in proptest::option::of(-1e6f64..1e6), ch in "[a-z]{0,4}") {
            let p = Preprocessor::build(&config(), &schema()).unwrap();
            let ev = event(vec![
                Value::Float(amount),
                dist.map_or(Value::Null, Value::Float),
                Value::Str(ch),
                Value::Bool(true),
                Value::Str("1".into()),
            ]);
            let (mut a, mut b) = (vec![], vec![]);
            p.features_into(&ev, &mut a).unwrap();
            p.features_into(&ev, &mut b).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            proptest::prop_assert_eq!(bits(&a), bits(&b));
            let again = Preprocessor::build(&config(), &schema()).unwrap();
            proptest::prop_assert_eq!(p.spec_hash(), again.spec_hash());
        }
    }
}
