use super::*;
use crate::config::{Egress, Scalar};
use crate::testutil::{policy, routes, schema};
use crate::Detector;

/// Validates `yaml` and returns `path: message` lines.
fn problems_with(yaml: &str, allow_cloud: bool) -> Vec<String> {
    let mut problems = Problems::new();
    policy(yaml).validate_with("routing", &schema(), &routes(), allow_cloud, &mut problems);
    problems.items().iter().map(ToString::to_string).collect()
}

fn problems(yaml: &str) -> Vec<String> {
    problems_with(yaml, true)
}

/// The paths of the problems, for tests that pin where, not what.
fn paths(yaml: &str) -> Vec<String> {
    let mut problems = Problems::new();
    policy(yaml).validate("routing", &schema(), &routes(), &mut problems);
    problems.items().iter().map(|p| p.path.clone()).collect()
}

const GOOD: &str = r#"
routing:
  version: "fraud-policy/1"
  scan_fields: [note, customer_email]
  latency_tier:
    field: latency_tier
  rules:
    - id: sensitive-stays-local
      when:
        sensitivity: [pii, regulated]
        latency_tier: [realtime]
        attributes:
          - { field: channel, in: [web, app] }
          - { field: amount, gte: 1000 }
      route: fraud
      reason: "PII stays on premises"
    - id: default
      route: fraud_cpu
"#;

#[test]
fn the_documented_example_is_valid() {
    assert_eq!(problems(GOOD), Vec::<String>::new());
    let router = policy(GOOD).build(&schema(), &routes()).unwrap();
    assert_eq!(router.version(), "fraud-policy/1");
    assert_eq!(router.spec_hash().len(), 64);
    assert_eq!(router.scan_fields().collect::<Vec<_>>(), vec!["customer_email", "note"]);
}

#[test]
fn defaults_are_filled_in() {
    let p = policy("routing:\n  version: v1\n  rules: [{ id: all, route: fraud }]\n");
    assert_eq!(p.detectors, Detector::ALL.to_vec());
    assert_eq!(p.scan_fields, None);
    assert_eq!(p.egress.public, Egress::Allow);
    assert_eq!(p.egress.internal, Egress::Allow);
    assert_eq!(p.egress.pii, Egress::Deny);
    assert_eq!(p.egress.regulated, Egress::Deny);
    assert_eq!(p.latency_tier.field, None);
    assert_eq!(p.latency_tier.header.as_deref(), Some("switchyard.latency_tier"));
    assert_eq!(p.latency_tier.default, "standard");
    assert_eq!(p.latency_tier.tiers, vec!["realtime", "standard", "batch"]);
    assert!(p.rules[0].when.is_empty());
    assert_eq!(p.rules[0].reason, None);
    let router = p.build(&schema(), &routes()).unwrap();
    // Every string field is scanned by default.
    assert_eq!(
        router.scan_fields().collect::<Vec<_>>(),
        vec!["txn_id", "customer_email", "note", "channel", "latency_tier"]
    );
}

#[test]
fn partial_egress_keeps_the_other_defaults() {
    let p = policy("routing:\n  version: v1\n  egress: { public: deny }\n  rules: [{ id: all, route: fraud }]\n");
    assert_eq!(p.egress.public, Egress::Deny);
    assert_eq!(p.egress.internal, Egress::Allow);
    assert_eq!(p.egress.pii, Egress::Deny);
}

#[test]
fn in_lists_take_any_scalar_in_its_text_form() {
    let p = policy(
        "routing:\n  version: v1\n  rules:\n    - id: r\n      when:\n        attributes:\n          - { field: channel, in: [web, 42, 1000.0, 2.5, true] }\n      route: fraud\n",
    );
    let values = p.rules[0].when.attributes[0].one_of.clone().unwrap();
    assert_eq!(values, ["web", "42", "1000", "2.5", "true"].map(Scalar::from).to_vec());
}

#[test]
fn unknown_keys_are_refused_everywhere() {
    for yaml in [
        "routing:\n  version: v1\n  rulez: []\n  rules: []\n",
        "routing:\n  version: v1\n  egress: { secret: deny }\n  rules: []\n",
        "routing:\n  version: v1\n  latency_tier: { fields: x }\n  rules: []\n",
        "routing:\n  version: v1\n  rules: [{ id: a, route: fraud, why: x }]\n",
        "routing:\n  version: v1\n  rules: [{ id: a, route: fraud, when: { sensitivty: [pii] } }]\n",
        "routing:\n  version: v1\n  rules: [{ id: a, route: fraud, when: { attributes: [{ field: amount, ge: 1 }] } }]\n",
        "routing:\n  version: v1\n  detectors: [email, passport]\n  rules: []\n",
        "routing:\n  version: v1\n  egress: { pii: maybe }\n  rules: []\n",
    ] {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Manifest {
            routing: PolicyConfig,
        }
        assert!(serde_yaml::from_str::<Manifest>(yaml).is_err(), "accepted: {yaml}");
    }
}

#[test]
fn unknown_worker_names_the_known_ones() {
    let yaml = "routing:\n  version: v1\n  rules:\n    - { id: a, route: fraud }\n    - { id: b, route: fraud }\n    - { id: c, route: frod }\n";
    let mut routes = HashMap::new();
    routes.insert("fraud".to_string(), RouteKind::Local);
    let mut problems = Problems::new();
    let mut p = policy(yaml);
    p.rules[0].when.sensitivity = Some(vec![Sensitivity::Pii]); // keep rule a from shadowing the others
    p.rules[1].when.sensitivity = Some(vec![Sensitivity::Public]);
    p.validate("routing", &schema(), &routes, &mut problems);
    let lines: Vec<String> = problems.items().iter().map(ToString::to_string).collect();
    assert_eq!(lines, vec!["routing.rules[2].route: unknown worker `frod` (known: fraud)"]);
}

#[test]
fn unknown_worker_when_none_are_defined() {
    let mut problems = Problems::new();
    policy("routing:\n  version: v1\n  rules: [{ id: a, route: fraud }]\n").validate(
        "routing",
        &schema(),
        &HashMap::new(),
        &mut problems,
    );
    assert_eq!(
        problems.items()[0].to_string(),
        "routing.rules[0].route: unknown worker `fraud` (no workers are defined)"
    );
}

#[test]
fn cloud_routes_can_be_refused_altogether() {
    let yaml = "routing:\n  version: v1\n  rules:\n    - { id: summarize-public, when: { sensitivity: [public] }, route: gpt }\n    - { id: rest, route: fraud }\n";
    assert_eq!(
        problems_with(yaml, false),
        vec![
            "routing.rules[0].route: `gpt` is a cloud worker: cloud workers are not allowed here; \
             route `summarize-public` to a local worker (local workers: fraud, fraud_cpu)"
        ]
    );
    let err = policy(yaml).build_with(&schema(), &routes(), false).unwrap_err();
    assert!(matches!(err, Error::InvalidPolicy(_)));
    assert!(err.to_string().contains("cloud workers are not allowed here"), "{err}");
    // By default they are allowed.
    assert_eq!(problems(yaml), Vec::<String>::new());
    assert!(policy(yaml).build(&schema(), &routes()).is_ok());
}

#[test]
fn cloud_rules_must_not_name_classes_denied_egress() {
    let yaml = "routing:\n  version: v1\n  rules:\n    - { id: leak, when: { sensitivity: [public, pii, regulated] }, route: gpt }\n    - { id: rest, route: fraud }\n";
    assert_eq!(
        problems_with(yaml, true),
        vec![
            "routing.rules[0].when.sensitivity[1]: rule routes to cloud worker `gpt`, but pii data may not leave \
             the trusted boundary (routing.egress.pii: deny)",
            "routing.rules[0].when.sensitivity[2]: rule routes to cloud worker `gpt`, but regulated data may not \
             leave the trusted boundary (routing.egress.regulated: deny)",
        ]
    );
    // Allowed once the policy lets the class leave.
    let allowed = yaml.replace("version: v1\n", "version: v1\n  egress: { pii: allow, regulated: allow }\n");
    assert_eq!(problems_with(&allowed, true), Vec::<String>::new());
}

#[test]
fn a_cloud_rule_is_pointless_when_nothing_may_leave() {
    let yaml = "routing:\n  version: v1\n  egress: { public: deny, internal: deny }\n  rules:\n    - { id: cloud, route: gpt }\n    - { id: rest, route: fraud }\n";
    assert_eq!(
        problems_with(yaml, true),
        vec![
            "routing.rules[0].when.sensitivity: rule routes to cloud worker `gpt`, but routing.egress lets no \
             class leave the trusted boundary, so it never matches"
        ]
    );
}

#[test]
fn egress_must_be_monotonic() {
    let yaml =
        "routing:\n  version: v1\n  egress: { internal: deny, pii: allow }\n  rules: [{ id: a, route: fraud }]\n";
    assert_eq!(
        problems(yaml),
        vec!["routing.egress.pii: allows pii while the less sensitive internal is denied; allow internal too, or deny pii"]
    );
}

#[test]
fn attribute_field_must_exist() {
    let yaml = "routing:\n  version: v1\n  rules:\n    - id: a\n      when:\n        attributes:\n          - { field: amount, gt: 0 }\n          - { field: chanel, in: [web] }\n      route: fraud\n";
    assert_eq!(problems(yaml), vec!["routing.rules[0].when.attributes[1].field: no field `chanel` in schema card_txn"]);
}

#[test]
fn attribute_conditions_are_checked() {
    let yaml = r#"
routing:
  version: v1
  rules:
    - id: a
      when:
        attributes:
          - { field: amount, in: [1], gte: 10 }
          - { field: amount }
          - { field: channel, gte: 10 }
          - { field: amount, gt: 1, gte: 2 }
          - { field: amount, gte: 100, lt: 10 }
          - { field: amount, gt: 5, lte: 5 }
          - { field: amount, gte: 5, lte: 5 }
          - { field: channel, in: [] }
          - { field: flagged, in: [yes, true] }
          - { field: merchant_id, in: [12, abc] }
          - { field: amount, lt: .nan }
          - { field: channel, exists: true, in: [web] }
      route: fraud
"#;
    assert_eq!(
        problems(yaml),
        vec![
            "routing.rules[0].when.attributes[0]: `in` and `gte` cannot be combined in one condition; write them as separate entries",
            "routing.rules[0].when.attributes[1]: needs one of `in`, `exists`, `gt`, `gte`, `lt`, `lte`",
            "routing.rules[0].when.attributes[2].gte: field `channel` is string; numeric comparisons need an int, float or timestamp field",
            "routing.rules[0].when.attributes[3]: `gt` and `gte` cannot be combined; keep one",
            "routing.rules[0].when.attributes[4]: no value is both `gte: 100` and `lt: 10`",
            "routing.rules[0].when.attributes[5]: no value is both `gt: 5` and `lte: 5`",
            "routing.rules[0].when.attributes[7].in: an empty list never matches",
            "routing.rules[0].when.attributes[8].in[0]: `yes` never equals a value of bool field `flagged`",
            "routing.rules[0].when.attributes[9].in[1]: `abc` never equals a value of int field `merchant_id`",
            "routing.rules[0].when.attributes[10].lt: must be a finite number",
            "routing.rules[0].when.attributes[11]: `in` and `exists` cannot be combined in one condition; write them as separate entries",
        ]
    );
}

#[test]
fn rule_ids_must_be_present_well_formed_and_unique() {
    let yaml = r#"
routing:
  version: v1
  rules:
    - { id: a, when: { sensitivity: [pii] }, route: fraud }
    - { id: "", when: { sensitivity: [pii] }, route: fraud }
    - { id: "has space", when: { sensitivity: [pii] }, route: fraud }
    - { id: a, when: { sensitivity: [pii] }, route: fraud }
    - { id: b, when: { sensitivity: [pii] }, route: fraud, reason: " " }
"#;
    assert_eq!(
        problems(yaml),
        vec![
            "routing.rules[1].id: must not be empty",
            "routing.rules[2].id: `has space`: use only letters, digits, `-`, `_` and `.`",
            "routing.rules[3].id: duplicate rule id `a` (first used by routing.rules[0])",
            "routing.rules[4].reason: must not be empty; remove it to use the default",
        ]
    );
}

#[test]
fn empty_rules_and_version_are_reported() {
    assert_eq!(
        problems("routing:\n  version: \" \"\n  rules: []\n"),
        vec!["routing.version: must not be empty", "routing.rules: at least one rule is required"]
    );
}

#[test]
fn rules_after_a_catch_all_are_unreachable() {
    let yaml = "routing:\n  version: v1\n  rules:\n    - { id: everything, route: fraud }\n    - { id: pii, when: { sensitivity: [pii] }, route: fraud_cpu }\n    - { id: rest, route: fraud_cpu }\n";
    assert_eq!(
        problems(yaml),
        vec![
            "routing.rules[1]: unreachable: rule `everything` (routing.rules[0]) matches every event before it",
            "routing.rules[2]: unreachable: rule `everything` (routing.rules[0]) matches every event before it",
        ]
    );
    // A catch-all cloud rule does not shadow: events that may not leave fall through.
    let cloud =
        "routing:\n  version: v1\n  rules:\n    - { id: everything, route: gpt }\n    - { id: rest, route: fraud }\n";
    assert_eq!(problems_with(cloud, true), Vec::<String>::new());
}

#[test]
fn latency_tier_settings_are_checked() {
    let yaml = r#"
routing:
  version: v1
  latency_tier:
    field: amount
    header: ""
    default: fast
    tiers: [realtime, standard, Standard, ""]
  rules:
    - { id: a, when: { latency_tier: [realtime, fast] }, route: fraud }
    - { id: b, when: { latency_tier: [] }, route: fraud }
"#;
    assert_eq!(
        problems(yaml),
        vec![
            "routing.latency_tier.field: field `amount` is float; the latency tier field must be a string field",
            "routing.latency_tier.header: must not be empty; set it to null to ignore headers",
            "routing.latency_tier.tiers[2]: duplicate tier `Standard`",
            "routing.latency_tier.tiers[3]: must not be empty",
            "routing.latency_tier.default: `fast` is not one of the tiers (realtime, standard, Standard, )",
            "routing.rules[0].when.latency_tier[1]: unknown tier `fast` (known: realtime, standard, Standard, )",
            "routing.rules[1].when.latency_tier: an empty list never matches; remove the key to match every tier",
        ]
    );
    assert_eq!(
        problems(
            "routing:\n  version: v1\n  latency_tier: { field: tier, tiers: [] }\n  rules: [{ id: a, route: fraud }]\n"
        ),
        vec![
            "routing.latency_tier.field: no field `tier` in schema card_txn",
            "routing.latency_tier.tiers: at least one tier is required",
        ]
    );
}

#[test]
fn scan_fields_and_detectors_are_checked() {
    let yaml = "routing:\n  version: v1\n  detectors: [email, phone, email]\n  scan_fields: [note, amount, notes, note]\n  rules: [{ id: a, route: fraud }]\n";
    assert_eq!(
        problems(yaml),
        vec![
            "routing.detectors[2]: duplicate detector `email`",
            "routing.scan_fields[1]: field `amount` is float; detectors scan only string fields",
            "routing.scan_fields[2]: no field `notes` in schema card_txn",
            "routing.scan_fields[3]: duplicate field `note`",
        ]
    );
}

#[test]
fn empty_sensitivity_list_is_reported() {
    assert_eq!(
        paths("routing:\n  version: v1\n  rules: [{ id: a, when: { sensitivity: [] }, route: fraud }]\n"),
        vec!["routing.rules[0].when.sensitivity"]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = r#"
routing:
  version: ""
  scan_fields: [amount]
  rules:
    - { id: a, route: frod }
    - id: a
      when: { attributes: [{ field: chanel, in: [web] }] }
      route: gpt
"#;
    assert_eq!(
        paths(yaml),
        vec![
            "routing.version",
            "routing.scan_fields[0]",
            "routing.rules[0].route",
            "routing.rules[1].id",
            "routing.rules[1].when.attributes[0].field",
        ]
    );
}

#[test]
fn the_path_prefix_is_the_callers() {
    let mut problems = Problems::new();
    policy("routing:\n  version: v1\n  rules: []\n").validate(
        "pipelines[0].routing",
        &schema(),
        &routes(),
        &mut problems,
    );
    assert_eq!(problems.items()[0].path, "pipelines[0].routing.rules");
}

#[test]
fn spec_hash_ignores_spelling_out_defaults_but_not_changes() {
    let short = policy("routing:\n  version: v1\n  rules: [{ id: a, route: fraud }]\n");
    let long = policy(
        r#"
routing:
  version: v1
  detectors: [email, phone, payment_card, iban, national_id]
  egress: { public: allow, internal: allow, pii: deny, regulated: deny }
  latency_tier: { header: switchyard.latency_tier, default: standard, tiers: [realtime, standard, batch] }
  rules: [{ id: a, route: fraud, when: { attributes: [] } }]
"#,
    );
    assert_eq!(short.spec_hash().unwrap(), long.spec_hash().unwrap());
    let changed = policy("routing:\n  version: v1\n  rules: [{ id: a, route: fraud_cpu }]\n");
    assert_ne!(short.spec_hash().unwrap(), changed.spec_hash().unwrap());
    let json = short.canonical_json().unwrap();
    assert!(
        json.starts_with(r#"{"detectors":["email","phone","payment_card","iban","national_id"],"egress":{"#),
        "{json}"
    );
    let router = short.build(&schema(), &routes()).unwrap();
    assert_eq!(router.spec_hash(), short.spec_hash().unwrap());
}

#[test]
fn build_reports_all_problems_in_one_error() {
    let err = policy("routing:\n  version: \"\"\n  rules: []\n").build(&schema(), &routes()).unwrap_err();
    let Error::InvalidPolicy(problems) = &err else { panic!("{err}") };
    assert_eq!(problems.items().len(), 2);
    assert_eq!(
        err.to_string(),
        "invalid routing policy (2 problem(s)):\nrouting.version: must not be empty\nrouting.rules: at least one rule is required\n"
    );
}

#[test]
fn fallback_shadow_and_deadlines_are_checked() {
    let yaml = r#"
routing:
  version: v1
  latency_tier: { deadlines_ms: { realtime: 50, fast: 10, batch: 0 } }
  rules:
    - id: a
      route: gpt
      fallback: [fraud, frod, gpt, fraud]
      shadow: { route: summarise, sample: 0 }
    - id: b
      route: fraud
      shadow: { route: fraud }
"#;
    assert_eq!(
        problems(yaml),
        vec![
            "routing.latency_tier.deadlines_ms.batch: must be at least 1 ms",
            "routing.latency_tier.deadlines_ms.fast: unknown tier `fast` (known: realtime, standard, batch)",
            "routing.rules[0].fallback[1]: unknown worker `frod` (known: fraud, fraud_cpu, gpt, summarize)",
            "routing.rules[0].fallback[2]: `gpt` is already the rule's route",
            "routing.rules[0].fallback[3]: duplicate worker `fraud`",
            "routing.rules[0].shadow.route: unknown worker `summarise` (known: fraud, fraud_cpu, gpt, summarize)",
            "routing.rules[0].shadow.sample: must lie in (0, 1]",
            "routing.rules[1].shadow.route: `fraud` is already the rule's route",
        ]
    );
    let refused = "routing:\n  version: v1\n  rules: [{ id: a, route: fraud, fallback: [gpt] }]\n";
    assert_eq!(
        problems_with(refused, false),
        vec!["routing.rules[0].fallback[0]: `gpt` is a cloud worker: cloud workers are not allowed here"]
    );
}

#[test]
fn absent_fallback_and_shadow_leave_the_spec_hash_unchanged() {
    let plain = policy("routing:\n  version: v1\n  rules: [{ id: a, route: fraud }]\n");
    let explicit = policy("routing:\n  version: v1\n  rules: [{ id: a, route: fraud, fallback: [] }]\n");
    assert_eq!(plain.spec_hash().unwrap(), explicit.spec_hash().unwrap());
    let with = policy("routing:\n  version: v1\n  rules: [{ id: a, route: fraud, fallback: [fraud_cpu] }]\n");
    assert_ne!(plain.spec_hash().unwrap(), with.spec_hash().unwrap());
}
