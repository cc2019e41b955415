//! Checking a [`PolicyConfig`] against the event schema and the pipeline's
//! workers, and compiling it into a [`Router`].
//!
//! Validation reports every problem at once, each with its dotted path in the
//! manifest (`routing.rules[2].route: unknown worker `frod` (known: fraud)`).
//! It also enforces the egress guarantee before anything runs: no rule that
//! routes to a cloud worker may name a class that may not leave the trusted
//! boundary (and a caller may refuse cloud routes altogether).
//! The evaluator enforces the same guarantee again per event.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use switchyard_schemas::{EventSchema, FieldType, Problems, Sensitivity};

use crate::config::{AttributeCondition, PolicyConfig, RuleConfig};
use crate::route::{class_bit, Bound, Condition, RouteKind, Router, Rule, Test, TierSource};
use crate::{Error, Result};

#[cfg(test)]
mod tests;

const ALL_CLASSES: [Sensitivity; 4] =
    [Sensitivity::Public, Sensitivity::Internal, Sensitivity::Pii, Sensitivity::Regulated];

impl PolicyConfig {
    /// Checks the policy against `schema` and the pipeline's workers
    /// (`routes`: worker name → where it runs), adding every problem found to
    /// `problems` under `path` (normally `routing`). Rules that route to a
    /// cloud worker are reported: cloud workers are not supported in this
    /// version.
    pub fn validate(
        &self,
        path: &str,
        schema: &EventSchema,
        routes: &HashMap<String, RouteKind>,
        problems: &mut Problems,
    ) {
        self.validate_with(path, schema, routes, true, problems);
    }

    /// [`PolicyConfig::validate`], with cloud routes refused when
    /// `allow_cloud` is false (a deployment that must not use cloud workers
    /// at all). A cloud rule must not name,
    /// in `when.sensitivity`, a class that `egress` denies.
    pub fn validate_with(
        &self,
        path: &str,
        schema: &EventSchema,
        routes: &HashMap<String, RouteKind>,
        allow_cloud: bool,
        problems: &mut Problems,
    ) {
        let v = Validator { path, schema, routes, allow_cloud, policy: self, problems };
        v.run();
    }

    /// Validates the policy (see [`PolicyConfig::validate`]) and builds the
    /// [`Router`], with field names resolved to schema indices. Every problem
    /// is in the [`Error::InvalidPolicy`] it returns, under the path
    /// `routing`.
    pub fn build(&self, schema: &EventSchema, routes: &HashMap<String, RouteKind>) -> Result<Router> {
        self.build_with(schema, routes, true)
    }

    /// [`PolicyConfig::build`] with cloud routes accepted when `allow_cloud`
    /// is true; see [`PolicyConfig::validate_with`].
    pub fn build_with(
        &self,
        schema: &EventSchema,
        routes: &HashMap<String, RouteKind>,
        allow_cloud: bool,
    ) -> Result<Router> {
        let mut problems = Problems::new();
        self.validate_with("routing", schema, routes, allow_cloud, &mut problems);
        if !problems.is_empty() {
            return Err(Error::InvalidPolicy(problems));
        }
        self.compile(schema, routes)
    }

    /// Builds the router without validating. Names must resolve (an
    /// unresolved one is an [`Error::Internal`]); everything else is taken as
    /// written, so tests can exercise the evaluator on policies validation
    /// would refuse.
    pub(crate) fn compile(&self, schema: &EventSchema, routes: &HashMap<String, RouteKind>) -> Result<Router> {
        let index_of = |name: &str| {
            schema
                .index_of(name)
                .ok_or_else(|| Error::Internal(format!("field `{name}` is not in schema {}", schema.id)))
        };
        let tagged = schema.fields.iter().enumerate().filter_map(|(i, f)| f.sensitivity.map(|s| (i, s))).collect();
        let mut scan = match &self.scan_fields {
            None => (0..schema.fields.len()).filter(|&i| schema.fields[i].ty == FieldType::String).collect(),
            Some(names) => names.iter().map(|n| index_of(n)).collect::<Result<Vec<_>>>()?,
        };
        scan.sort_unstable();
        scan.dedup();
        let mut detectors = Vec::new();
        for d in &self.detectors {
            if !detectors.contains(d) {
                detectors.push(*d);
            }
        }

        let tiers = self.latency_tier.tiers.clone();
        let tier_index = |name: &str| {
            tiers
                .iter()
                .position(|t| t == name)
                .ok_or_else(|| Error::Internal(format!("latency tier `{name}` is not in {tiers:?}")))
        };
        let tier = TierSource {
            field: self.latency_tier.field.as_deref().map(index_of).transpose()?,
            header: self.latency_tier.header.clone(),
            default: tier_index(&self.latency_tier.default)?,
            tiers: tiers.clone(),
            deadlines: tiers
                .iter()
                .map(|t| self.latency_tier.deadlines_ms.get(t).map(|&ms| Duration::from_millis(ms)))
                .collect(),
        };
        let kind_of = |name: &str| {
            routes.get(name).copied().ok_or_else(|| Error::Internal(format!("worker `{name}` is not defined")))
        };

        let mut rules = Vec::with_capacity(self.rules.len());
        for rule in &self.rules {
            let kind = *routes
                .get(&rule.route)
                .ok_or_else(|| Error::Internal(format!("worker `{}` is not defined", rule.route)))?;
            let conditions = rule
                .when
                .attributes
                .iter()
                .map(|a| Ok(Condition { index: index_of(&a.field)?, test: compile_test(a)? }))
                .collect::<Result<Vec<_>>>()?;
            rules.push(Rule {
                id: rule.id.clone(),
                route: rule.route.clone(),
                kind,
                reason: rule.reason.clone().unwrap_or_else(|| format!("rule {} matched", rule.id)),
                sensitivity: rule
                    .when
                    .sensitivity
                    .as_ref()
                    .map(|classes| classes.iter().fold(0, |mask, &c| mask | class_bit(c))),
                tiers: rule
                    .when
                    .latency_tier
                    .as_ref()
                    .map(|names| names.iter().map(|n| tier_index(n)).collect::<Result<Vec<_>>>())
                    .transpose()?,
                conditions,
                fallback: rule.fallback.iter().map(|n| Ok((n.clone(), kind_of(n)?))).collect::<Result<Vec<_>>>()?,
                shadow: rule
                    .shadow
                    .as_ref()
                    .map(|sh| kind_of(&sh.route).map(|k| (sh.route.clone(), k, sh.sample)))
                    .transpose()?,
            });
        }

        Ok(Router {
            config: self.clone(),
            spec_hash: self.spec_hash()?,
            field_names: schema.fields.iter().map(|f| f.name.clone()).collect(),
            tagged,
            scan,
            detectors,
            egress: self.egress,
            tier,
            rules,
        })
    }
}

fn compile_test(a: &AttributeCondition) -> Result<Test> {
    if let Some(values) = &a.one_of {
        return Ok(Test::OneOf(values.iter().map(|s| s.0.clone()).collect()));
    }
    if let Some(exists) = a.exists {
        return Ok(Test::Exists(exists));
    }
    let bound = |strict: Option<f64>, inclusive: Option<f64>| {
        strict
            .map(|value| Bound { value, inclusive: false })
            .or(inclusive.map(|value| Bound { value, inclusive: true }))
    };
    let (lower, upper) = (bound(a.gt, a.gte), bound(a.lt, a.lte));
    if lower.is_none() && upper.is_none() {
        return Err(Error::Internal(format!("condition on `{}` has no test", a.field)));
    }
    Ok(Test::Range { lower, upper })
}

fn type_name(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "string",
        FieldType::Int => "int",
        FieldType::Float => "float",
        FieldType::Bool => "bool",
        FieldType::Timestamp => "timestamp",
    }
}

fn is_numeric(ty: FieldType) -> bool {
    matches!(ty, FieldType::Int | FieldType::Float | FieldType::Timestamp)
}

fn valid_rule_id(id: &str) -> bool {
    id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// One validation pass; holds what every check needs.
struct Validator<'a> {
    path: &'a str,
    schema: &'a EventSchema,
    routes: &'a HashMap<String, RouteKind>,
    allow_cloud: bool,
    policy: &'a PolicyConfig,
    problems: &'a mut Problems,
}

impl Validator<'_> {
    fn run(mut self) {
        let p = self.path;
        let policy = self.policy;
        if policy.version.trim().is_empty() {
            self.problems.push(format!("{p}.version"), "must not be empty");
        } else if policy.version.chars().any(char::is_control) {
            self.problems
                .push(format!("{p}.version"), "must not contain control characters (it is written to Kafka headers)");
        }
        self.detectors();
        self.scan_fields();
        self.egress();
        self.latency_tier();
        self.rules();
    }

    fn no_field(&self, name: &str) -> String {
        format!("no field `{name}` in schema {}", self.schema.id)
    }

    fn detectors(&mut self) {
        let p = self.path;
        let mut seen = HashSet::new();
        for (i, d) in self.policy.detectors.iter().enumerate() {
            if !seen.insert(*d) {
                self.problems.push(format!("{p}.detectors[{i}]"), format!("duplicate detector `{d}`"));
            }
        }
    }

    fn scan_fields(&mut self) {
        let p = self.path;
        let Some(names) = &self.policy.scan_fields else { return };
        let mut seen = HashSet::new();
        for (i, name) in names.iter().enumerate() {
            let at = format!("{p}.scan_fields[{i}]");
            match self.schema.fields.iter().find(|f| &f.name == name) {
                None => self.problems.push(at, self.no_field(name)),
                Some(f) if f.ty != FieldType::String => self
                    .problems
                    .push(at, format!("field `{name}` is {}; detectors scan only string fields", type_name(f.ty))),
                Some(_) if !seen.insert(name.as_str()) => {
                    self.problems.push(at, format!("duplicate field `{name}`"));
                }
                Some(_) => {}
            }
        }
    }

    fn egress(&mut self) {
        let p = self.path;
        let egress = &self.policy.egress;
        for (i, &class) in ALL_CLASSES.iter().enumerate().skip(1) {
            if !egress.allows(class) {
                continue;
            }
            if let Some(denied) = ALL_CLASSES[..i].iter().find(|c| !egress.allows(**c)) {
                self.problems.push(
                    format!("{p}.egress.{}", class.as_str()),
                    format!(
                        "allows {} while the less sensitive {} is denied; allow {} too, or deny {}",
                        class.as_str(),
                        denied.as_str(),
                        denied.as_str(),
                        class.as_str()
                    ),
                );
            }
        }
    }

    fn tier_list(&self) -> String {
        self.policy.latency_tier.tiers.join(", ")
    }

    fn latency_tier(&mut self) {
        let p = format!("{}.latency_tier", self.path);
        let cfg = &self.policy.latency_tier;
        if let Some(name) = &cfg.field {
            match self.schema.fields.iter().find(|f| &f.name == name) {
                None => self.problems.push(format!("{p}.field"), self.no_field(name)),
                Some(f) if f.ty != FieldType::String => self.problems.push(
                    format!("{p}.field"),
                    format!("field `{name}` is {}; the latency tier field must be a string field", type_name(f.ty)),
                ),
                Some(_) => {}
            }
        }
        if cfg.header.as_deref().is_some_and(|h| h.trim().is_empty()) {
            self.problems.push(format!("{p}.header"), "must not be empty; set it to null to ignore headers");
        }
        if cfg.tiers.is_empty() {
            self.problems.push(format!("{p}.tiers"), "at least one tier is required");
            return;
        }
        let mut seen: Vec<String> = Vec::new();
        for (i, tier) in cfg.tiers.iter().enumerate() {
            let lower = tier.to_ascii_lowercase();
            if tier.trim().is_empty() {
                self.problems.push(format!("{p}.tiers[{i}]"), "must not be empty");
            } else if seen.contains(&lower) {
                self.problems.push(format!("{p}.tiers[{i}]"), format!("duplicate tier `{tier}`"));
            }
            seen.push(lower);
        }
        for (tier, ms) in &cfg.deadlines_ms {
            if !cfg.tiers.contains(tier) {
                self.problems.push(
                    format!("{p}.deadlines_ms.{tier}"),
                    format!("unknown tier `{tier}` (known: {})", self.tier_list()),
                );
            } else if *ms == 0 {
                self.problems.push(format!("{p}.deadlines_ms.{tier}"), "must be at least 1 ms");
            }
        }
        if !cfg.tiers.contains(&cfg.default) {
            self.problems.push(
                format!("{p}.default"),
                format!("`{}` is not one of the tiers ({})", cfg.default, self.tier_list()),
            );
        }
    }

    fn rules(&mut self) {
        let p = self.path;
        let policy = self.policy;
        let rules = &policy.rules;
        if rules.is_empty() {
            self.problems.push(format!("{p}.rules"), "at least one rule is required");
            return;
        }
        let mut ids: HashMap<&str, usize> = HashMap::new();
        // The first rule that matches every event, if any: rules after it never run.
        let mut catch_all: Option<(usize, &str)> = None;
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("{p}.rules[{i}]");
            if rule.id.trim().is_empty() {
                self.problems.push(format!("{at}.id"), "must not be empty");
            } else if !valid_rule_id(&rule.id) {
                self.problems
                    .push(format!("{at}.id"), format!("`{}`: use only letters, digits, `-`, `_` and `.`", rule.id));
            } else if let Some(first) = ids.get(rule.id.as_str()) {
                self.problems.push(
                    format!("{at}.id"),
                    format!("duplicate rule id `{}` (first used by {p}.rules[{first}])", rule.id),
                );
            } else {
                ids.insert(&rule.id, i);
            }
            if let Some((k, id)) = catch_all {
                self.problems.push(
                    at.clone(),
                    format!("unreachable: rule `{id}` ({p}.rules[{k}]) matches every event before it"),
                );
            }
            if let Some(reason) = &rule.reason {
                if reason.trim().is_empty() {
                    self.problems.push(format!("{at}.reason"), "must not be empty; remove it to use the default");
                }
            }
            let kind = self.route(&at, rule);
            self.when(&at, rule, kind);
            self.fallback_and_shadow(&at, rule);
            let matches_all = rule.when.is_empty()
                && match kind {
                    Some(RouteKind::Local) => true,
                    Some(RouteKind::Cloud) => ALL_CLASSES.iter().all(|c| self.policy.egress.allows(*c)),
                    None => false,
                };
            if matches_all && catch_all.is_none() {
                catch_all = Some((i, &rule.id));
            }
        }
    }

    /// Checks the rule's route; returns where the worker runs when it exists.
    fn route(&mut self, at: &str, rule: &RuleConfig) -> Option<RouteKind> {
        let Some(&kind) = self.routes.get(&rule.route) else {
            self.problems.push(format!("{at}.route"), self.unknown_worker(&rule.route));
            return None;
        };
        if kind == RouteKind::Cloud && !self.allow_cloud {
            let mut local: Vec<&str> =
                self.routes.iter().filter(|(_, k)| **k == RouteKind::Local).map(|(n, _)| n.as_str()).collect();
            local.sort_unstable();
            let local =
                if local.is_empty() { String::new() } else { format!(" (local workers: {})", local.join(", ")) };
            self.problems.push(
                format!("{at}.route"),
                format!(
                    "`{}` is a cloud worker: cloud workers are not allowed here; route `{}` to a local worker{local}",
                    rule.route, rule.id
                ),
            );
        }
        Some(kind)
    }

    /// `unknown worker` text with the known names, for route-like fields.
    fn unknown_worker(&self, name: &str) -> String {
        let mut known: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        known.sort_unstable();
        if known.is_empty() {
            format!("unknown worker `{name}` (no workers are defined)")
        } else {
            format!("unknown worker `{name}` (known: {})", known.join(", "))
        }
    }

    /// Checks a worker named by `fallback` or `shadow`.
    fn other_worker(&mut self, at: String, name: &str, rule: &RuleConfig) {
        match self.routes.get(name) {
            None => self.problems.push(at, self.unknown_worker(name)),
            Some(_) if name == rule.route => {
                self.problems.push(at, format!("`{name}` is already the rule's route"));
            }
            Some(RouteKind::Cloud) if !self.allow_cloud => {
                self.problems.push(at, format!("`{name}` is a cloud worker: cloud workers are not allowed here"));
            }
            Some(_) => {}
        }
    }

    fn fallback_and_shadow(&mut self, at: &str, rule: &RuleConfig) {
        for (k, name) in rule.fallback.iter().enumerate() {
            let here = format!("{at}.fallback[{k}]");
            if rule.fallback[..k].contains(name) {
                self.problems.push(here, format!("duplicate worker `{name}`"));
            } else {
                self.other_worker(here, name, rule);
            }
        }
        if let Some(shadow) = &rule.shadow {
            self.other_worker(format!("{at}.shadow.route"), &shadow.route, rule);
            if !(shadow.sample > 0.0 && shadow.sample <= 1.0) {
                self.problems.push(format!("{at}.shadow.sample"), "must lie in (0, 1]");
            }
        }
    }

    fn when(&mut self, at: &str, rule: &RuleConfig, kind: Option<RouteKind>) {
        let when = &rule.when;
        let at = format!("{at}.when");
        if let Some(classes) = &when.sensitivity {
            if classes.is_empty() {
                self.problems.push(
                    format!("{at}.sensitivity"),
                    "an empty list never matches; remove the key to match every class",
                );
            }
            if kind == Some(RouteKind::Cloud) && self.allow_cloud {
                for (k, class) in classes.iter().enumerate() {
                    if !self.policy.egress.allows(*class) {
                        self.problems.push(
                            format!("{at}.sensitivity[{k}]"),
                            format!(
                                "rule routes to cloud worker `{}`, but {} data may not leave the trusted boundary ({}.egress.{}: deny)",
                                rule.route,
                                class.as_str(),
                                self.path,
                                class.as_str()
                            ),
                        );
                    }
                }
            }
        }
        if kind == Some(RouteKind::Cloud)
            && self.allow_cloud
            && when.sensitivity.is_none()
            && !ALL_CLASSES.iter().any(|c| self.policy.egress.allows(*c))
        {
            self.problems.push(
                format!("{at}.sensitivity"),
                format!(
                    "rule routes to cloud worker `{}`, but {}.egress lets no class leave the trusted boundary, so it never matches",
                    rule.route, self.path
                ),
            );
        }
        if let Some(tiers) = &when.latency_tier {
            if tiers.is_empty() {
                self.problems.push(
                    format!("{at}.latency_tier"),
                    "an empty list never matches; remove the key to match every tier",
                );
            }
            for (k, tier) in tiers.iter().enumerate() {
                if !self.policy.latency_tier.tiers.contains(tier) {
                    self.problems.push(
                        format!("{at}.latency_tier[{k}]"),
                        format!("unknown tier `{tier}` (known: {})", self.tier_list()),
                    );
                }
            }
        }
        for (k, cond) in when.attributes.iter().enumerate() {
            self.attribute(&format!("{at}.attributes[{k}]"), cond);
        }
    }

    fn attribute(&mut self, at: &str, cond: &AttributeCondition) {
        let field = self.schema.fields.iter().find(|f| f.name == cond.field);
        if field.is_none() {
            self.problems.push(format!("{at}.field"), self.no_field(&cond.field));
        }
        let keys = cond.keys();
        let numeric: Vec<&str> = keys.iter().copied().filter(|k| matches!(*k, "gt" | "gte" | "lt" | "lte")).collect();
        let kinds =
            usize::from(cond.one_of.is_some()) + usize::from(cond.exists.is_some()) + usize::from(!numeric.is_empty());
        if kinds == 0 {
            self.problems.push(at.to_string(), "needs one of `in`, `exists`, `gt`, `gte`, `lt`, `lte`");
            return;
        }
        if kinds > 1 {
            self.problems.push(
                at.to_string(),
                format!(
                    "`{}` and `{}` cannot be combined in one condition; write them as separate entries",
                    keys[0], keys[1]
                ),
            );
            return;
        }
        if let Some(values) = &cond.one_of {
            if values.is_empty() {
                self.problems.push(format!("{at}.in"), "an empty list never matches");
            }
            if let Some(f) = field {
                for (k, v) in values.iter().enumerate() {
                    let impossible = match f.ty {
                        FieldType::Bool => !matches!(v.as_str(), "true" | "false"),
                        FieldType::Int => v.as_str().parse::<i64>().is_err(),
                        _ => false,
                    };
                    if impossible {
                        self.problems.push(
                            format!("{at}.in[{k}]"),
                            format!("`{}` never equals a value of {} field `{}`", v.as_str(), type_name(f.ty), f.name),
                        );
                    }
                }
            }
        }
        if numeric.is_empty() {
            return;
        }
        if let Some(f) = field.filter(|f| !is_numeric(f.ty)) {
            self.problems.push(
                format!("{at}.{}", numeric[0]),
                format!(
                    "field `{}` is {}; numeric comparisons need an int, float or timestamp field",
                    f.name,
                    type_name(f.ty)
                ),
            );
        }
        for (key, bound) in [("gt", cond.gt), ("gte", cond.gte), ("lt", cond.lt), ("lte", cond.lte)] {
            if bound.is_some_and(|b| !b.is_finite()) {
                self.problems.push(format!("{at}.{key}"), "must be a finite number");
            }
        }
        for (a, b) in [("gt", "gte"), ("lt", "lte")] {
            if numeric.contains(&a) && numeric.contains(&b) {
                self.problems.push(at.to_string(), format!("`{a}` and `{b}` cannot be combined; keep one"));
            }
        }
        let lower = cond.gt.map(|v| ("gt", v, false)).or(cond.gte.map(|v| ("gte", v, true)));
        let upper = cond.lt.map(|v| ("lt", v, false)).or(cond.lte.map(|v| ("lte", v, true)));
        if let (Some((lk, lv, li)), Some((uk, uv, ui))) = (lower, upper) {
            let empty = if li && ui { lv > uv } else { lv >= uv };
            if empty {
                self.problems.push(at.to_string(), format!("no value is both `{lk}: {lv}` and `{uk}: {uv}`"));
            }
        }
    }
}
