use std::collections::HashMap;

use proptest::prelude::*;
use switchyard_schemas::{headers, Value};

use super::*;
use crate::config::{AttributeCondition, Egress, RuleConfig, Scalar, ShadowConfig, WhenConfig};
use crate::testutil::{event, policy, router, routes, s, schema};

const PII_SAMPLES: [&str; 6] = [
    "alice@example.com",
    "+44 20 7946 0958",
    "4111 1111 1111 1111",
    "GB82 WEST 1234 5698 7654 32",
    "536-22-1234",
    "AB123456C",
];

const BASIC: &str = r#"
routing:
  version: "fraud-policy/1"
  scan_fields: [note]
  latency_tier: { field: latency_tier }
  rules:
    - id: sensitive-stays-local
      when: { sensitivity: [pii, regulated] }
      route: fraud
      reason: "PII stays on premises"
    - id: big-web
      when:
        attributes:
          - { field: channel, in: [web, app] }
          - { field: amount, gte: 1000 }
      route: fraud
    - id: realtime
      when: { latency_tier: [realtime] }
      route: fraud
      reason: "realtime goes to the GPU"
    - id: rest
      route: fraud_cpu
"#;

// ---------------------------------------------------------------- classification

#[test]
fn an_event_without_tags_or_hits_is_public() {
    let r = router(BASIC, false);
    let c = r.classify(&event(&[("note", s("thanks for the quick delivery")), ("amount", Value::Float(12.5))]));
    assert_eq!(c, Classification { sensitivity: Sensitivity::Public, hits: vec![] });
}

#[test]
fn tagged_fields_count_only_when_non_null() {
    let r = router(BASIC, false);
    assert_eq!(r.classify(&event(&[("merchant_id", Value::Int(7))])).sensitivity, Sensitivity::Internal);
    assert_eq!(r.classify(&event(&[("merchant_id", Value::Null)])).sensitivity, Sensitivity::Public);
    // customer_email is tagged pii: the tag decides even though it is not scanned.
    let c = r.classify(&event(&[("customer_email", s("x")), ("merchant_id", Value::Int(7))]));
    assert_eq!(c.sensitivity, Sensitivity::Pii);
    assert!(c.hits.is_empty());
}

#[test]
fn detector_hits_raise_the_class_and_are_listed_per_field() {
    let r = router(BASIC, false);
    let c = r.classify(&event(&[("note", s("mail a@b.io or call +44 20 7946 0958"))]));
    assert_eq!(c.sensitivity, Sensitivity::Pii);
    assert_eq!(
        c.hits,
        vec![
            Hit { field: "note".into(), detector: Detector::Email },
            Hit { field: "note".into(), detector: Detector::Phone },
        ]
    );
    let c = r.classify(&event(&[("note", s("card 4111 1111 1111 1111")), ("merchant_id", Value::Int(1))]));
    assert_eq!(c.sensitivity, Sensitivity::Regulated);
}

#[test]
fn only_scan_fields_are_scanned_by_the_configured_detectors() {
    let r = router(BASIC, false);
    // channel is not in scan_fields.
    assert_eq!(r.classify(&event(&[("channel", s("a@b.io"))])).sensitivity, Sensitivity::Public);

    let only_cards = "routing:\n  version: v1\n  detectors: [payment_card]\n  rules: [{ id: a, route: fraud }]\n";
    let r = router(only_cards, false);
    assert_eq!(r.classify(&event(&[("note", s("a@b.io"))])).sensitivity, Sensitivity::Public);
    let c = r.classify(&event(&[("channel", s("4111111111111111"))]));
    assert_eq!(c.hits, vec![Hit { field: "channel".into(), detector: Detector::PaymentCard }]);

    let nothing = "routing:\n  version: v1\n  scan_fields: []\n  rules: [{ id: a, route: fraud }]\n";
    let r = router(nothing, false);
    assert_eq!(r.classify(&event(&[("note", s("a@b.io 4111111111111111"))])).sensitivity, Sensitivity::Public);
}

#[test]
fn a_short_value_vector_reads_as_null_instead_of_panicking() {
    let r = router(BASIC, false);
    let mut e = event(&[]);
    e.values.truncate(1);
    let info = r.route(&e).unwrap();
    assert_eq!(info.rule_id, "rest");
}

// ---------------------------------------------------------------- rules

#[test]
fn the_first_matching_rule_wins() {
    let r = router(BASIC, false);
    // Matches both sensitive-stays-local and big-web: the first wins.
    let e = event(&[("note", s("a@b.io")), ("channel", s("web")), ("amount", Value::Float(5000.0))]);
    let info = r.route(&e).unwrap();
    assert_eq!(info.rule_id, "sensitive-stays-local");
    assert_eq!(info.route, "fraud");
    assert_eq!(info.policy_version, "fraud-policy/1");
    assert_eq!(info.sensitivity, Sensitivity::Pii);
    assert_eq!(info.latency_tier, "standard");
    assert_eq!(info.reason, "PII stays on premises; detected email in note");

    let e = event(&[("channel", s("web")), ("amount", Value::Float(5000.0)), ("latency_tier", s("realtime"))]);
    let info = r.route(&e).unwrap();
    assert_eq!(info.rule_id, "big-web");
    assert_eq!(info.reason, "rule big-web matched");

    let e = event(&[("channel", s("pos")), ("amount", Value::Float(5000.0)), ("latency_tier", s("realtime"))]);
    assert_eq!(r.route(&e).unwrap().rule_id, "realtime");

    let e = event(&[("channel", s("web")), ("amount", Value::Float(999.99))]);
    assert_eq!(r.route(&e).unwrap().rule_id, "rest");
}

#[test]
fn reordering_rules_changes_the_decision() {
    let mut p = policy(BASIC);
    p.rules.swap(0, 1);
    let r = p.build(&schema(), &routes()).unwrap();
    let e = event(&[("note", s("a@b.io")), ("channel", s("web")), ("amount", Value::Float(5000.0))]);
    assert_eq!(r.route(&e).unwrap().rule_id, "big-web");
}

fn with_condition(cond: &str) -> Router {
    router(
        &format!(
            "routing:\n  version: v1\n  rules:\n    - {{ id: hit, when: {{ attributes: [{cond}] }}, route: fraud }}\n    - {{ id: miss, route: fraud_cpu }}\n"
        ),
        false,
    )
}

fn rule_for(r: &Router, fields: &[(&str, Value)]) -> String {
    r.route(&event(fields)).unwrap().rule_id
}

#[test]
fn in_compares_the_text_form() {
    let r = with_condition("{ field: channel, in: [web, app] }");
    assert_eq!(rule_for(&r, &[("channel", s("web"))]), "hit");
    assert_eq!(rule_for(&r, &[("channel", s("Web"))]), "miss");
    assert_eq!(rule_for(&r, &[("channel", Value::Null)]), "miss");

    let r = with_condition("{ field: amount, in: [1000, 2.5] }");
    assert_eq!(rule_for(&r, &[("amount", Value::Float(1000.0))]), "hit");
    assert_eq!(rule_for(&r, &[("amount", Value::Float(2.5))]), "hit");
    assert_eq!(rule_for(&r, &[("amount", Value::Float(2.25))]), "miss");

    let r = with_condition("{ field: flagged, in: [true] }");
    assert_eq!(rule_for(&r, &[("flagged", Value::Bool(true))]), "hit");
    assert_eq!(rule_for(&r, &[("flagged", Value::Bool(false))]), "miss");

    let r = with_condition("{ field: merchant_id, in: [42] }");
    assert_eq!(rule_for(&r, &[("merchant_id", Value::Int(42))]), "hit");
}

#[test]
fn exists_tests_for_null() {
    let r = with_condition("{ field: channel, exists: true }");
    assert_eq!(rule_for(&r, &[("channel", s(""))]), "hit");
    assert_eq!(rule_for(&r, &[]), "miss");
    let r = with_condition("{ field: channel, exists: false }");
    assert_eq!(rule_for(&r, &[]), "hit");
    assert_eq!(rule_for(&r, &[("channel", s("web"))]), "miss");
}

#[test]
fn numeric_bounds_compare_ints_and_floats() {
    let r = with_condition("{ field: amount, gte: 100, lt: 1000 }");
    assert_eq!(rule_for(&r, &[("amount", Value::Float(100.0))]), "hit");
    assert_eq!(rule_for(&r, &[("amount", Value::Float(999.99))]), "hit");
    assert_eq!(rule_for(&r, &[("amount", Value::Float(1000.0))]), "miss");
    assert_eq!(rule_for(&r, &[("amount", Value::Float(99.99))]), "miss");
    assert_eq!(rule_for(&r, &[("amount", Value::Float(f64::NAN))]), "miss");
    assert_eq!(rule_for(&r, &[]), "miss");

    let r = with_condition("{ field: merchant_id, gt: 10 }");
    assert_eq!(rule_for(&r, &[("merchant_id", Value::Int(11))]), "hit");
    assert_eq!(rule_for(&r, &[("merchant_id", Value::Int(10))]), "miss");

    let r = with_condition("{ field: merchant_id, lte: 10 }");
    assert_eq!(rule_for(&r, &[("merchant_id", Value::Int(10))]), "hit");
    assert_eq!(rule_for(&r, &[("merchant_id", Value::Int(11))]), "miss");
}

#[test]
fn no_rule_matched_says_why() {
    let yaml = "routing:\n  version: v1\n  scan_fields: [note]\n  rules: [{ id: only-public, when: { sensitivity: [public] }, route: fraud }]\n";
    let r = router(yaml, false);
    let err = r.route(&event(&[("note", s("mail alice@example.com"))])).unwrap_err();
    assert_eq!(
        err,
        NoRoute {
            policy_version: "v1".into(),
            sensitivity: Sensitivity::Pii,
            latency_tier: "standard".into(),
            reason: "no rule matched (sensitivity=pii, tier=standard); detected email in note".into(),
        }
    );
    assert_eq!(err.to_string(), err.reason);
    let as_crate_error: crate::Error = err.into();
    assert!(matches!(as_crate_error, crate::Error::NoRoute(_)));
}

// ---------------------------------------------------------------- latency tier

const TIERS: &str = r#"
routing:
  version: v1
  latency_tier: { field: latency_tier, header: x-tier, default: standard, tiers: [realtime, standard, batch] }
  rules:
    - { id: rt, when: { latency_tier: [realtime] }, route: fraud }
    - { id: batch, when: { latency_tier: [batch] }, route: fraud_cpu }
    - { id: rest, route: fraud_cpu }
"#;

fn with_header(mut e: Event, name: &str, value: &str) -> Event {
    e.headers.push((name.to_string(), value.to_string()));
    e
}

#[test]
fn tier_comes_from_the_field_then_the_header_then_the_default() {
    let r = router(TIERS, false);
    let from_field = event(&[("latency_tier", s("realtime"))]);
    assert_eq!(r.latency_tier(&from_field), "realtime");
    assert_eq!(r.route(&from_field).unwrap().rule_id, "rt");

    let from_header = with_header(event(&[]), "x-tier", "batch");
    assert_eq!(r.latency_tier(&from_header), "batch");
    assert_eq!(r.route(&from_header).unwrap().latency_tier, "batch");

    // The field wins over the header.
    let both = with_header(event(&[("latency_tier", s("realtime"))]), "x-tier", "batch");
    assert_eq!(r.latency_tier(&both), "realtime");

    // An empty field falls through to the header.
    let empty_field = with_header(event(&[("latency_tier", s("  "))]), "x-tier", "batch");
    assert_eq!(r.latency_tier(&empty_field), "batch");

    assert_eq!(r.latency_tier(&event(&[])), "standard");
    // Other headers are not read.
    assert_eq!(r.latency_tier(&with_header(event(&[]), headers::LATENCY_TIER, "batch")), "standard");
}

#[test]
fn tier_names_match_without_case_and_padding() {
    let r = router(TIERS, false);
    assert_eq!(r.latency_tier(&event(&[("latency_tier", s(" RealTime "))])), "realtime");
}

#[test]
fn unknown_tier_falls_back_to_the_default_and_says_so_without_the_value() {
    let r = router(TIERS, false);
    let info = r.route(&event(&[("latency_tier", s("warp-speed"))])).unwrap();
    assert_eq!(info.latency_tier, "standard");
    assert_eq!(info.rule_id, "rest");
    assert_eq!(
        info.reason,
        "rule rest matched; latency tier in field latency_tier is not one of realtime, standard, batch; used standard"
    );
    assert!(!info.reason.contains("warp"));

    let info = r.route(&with_header(event(&[]), "x-tier", "alice@example.com")).unwrap();
    assert_eq!(
        info.reason,
        "rule rest matched; latency tier in header x-tier is not one of realtime, standard, batch; used standard"
    );
}

#[test]
fn the_default_header_is_the_switchyard_one_and_null_turns_it_off() {
    let r = router("routing:\n  version: v1\n  rules: [{ id: a, route: fraud }]\n", false);
    assert_eq!(r.latency_tier(&with_header(event(&[]), headers::LATENCY_TIER, "batch")), "batch");
    let r = router(
        "routing:\n  version: v1\n  latency_tier: { header: null }\n  rules: [{ id: a, route: fraud }]\n",
        false,
    );
    assert_eq!(r.latency_tier(&with_header(event(&[]), headers::LATENCY_TIER, "batch")), "standard");
}

// ---------------------------------------------------------------- egress guarantee

const CLOUD_FIRST: &str = r#"
routing:
  version: v1
  scan_fields: [note]
  rules:
    - { id: summarize, route: summarize, reason: "cheap summary in the cloud" }
    - { id: gpt, when: { sensitivity: [public, internal] }, route: gpt }
    - { id: local, route: fraud, reason: "stays on premises" }
"#;

#[test]
fn cloud_rules_are_skipped_for_classes_that_may_not_leave() {
    let r = router(CLOUD_FIRST, true);
    let public = r.route(&event(&[("note", s("hello"))])).unwrap();
    assert_eq!((public.rule_id.as_str(), public.route.as_str()), ("summarize", "summarize"));
    assert_eq!(public.reason, "cheap summary in the cloud");

    let pii = r.route(&event(&[("note", s("write to alice@example.com"))])).unwrap();
    assert_eq!((pii.rule_id.as_str(), pii.route.as_str()), ("local", "fraud"));
    assert_eq!(
        pii.reason,
        "stays on premises; detected email in note; skipped cloud rule summarize (pii data may not leave the trusted boundary)"
    );

    let tagged = r.route(&event(&[("customer_email", s("x"))])).unwrap();
    assert_eq!(tagged.route, "fraud");
}

#[test]
fn may_send_follows_egress_for_cloud_and_allows_everything_locally() {
    let r = router(CLOUD_FIRST, true);
    for class in [Sensitivity::Public, Sensitivity::Internal, Sensitivity::Pii, Sensitivity::Regulated] {
        assert!(r.may_send(class, RouteKind::Local));
        assert_eq!(r.may_send(class, RouteKind::Cloud), class <= Sensitivity::Internal, "{class:?}");
    }
}

#[test]
fn an_event_only_cloud_rules_match_goes_to_the_dlq_when_it_may_not_leave() {
    let yaml = "routing:\n  version: v1\n  rules:\n    - { id: c1, route: gpt }\n    - { id: c2, route: summarize }\n";
    let r = router(yaml, true);
    let err = r.route(&event(&[("note", s("536-22-1234"))])).unwrap_err();
    assert_eq!(
        err.reason,
        "no rule matched (sensitivity=regulated, tier=standard); detected national_id in note; \
         skipped cloud rules c1, c2 (regulated data may not leave the trusted boundary)"
    );
    assert_eq!(r.route(&event(&[("note", s("fine"))])).unwrap().route, "gpt");
}

#[test]
fn the_evaluator_holds_the_line_even_when_validation_is_bypassed() {
    // Validation would refuse this rule; the evaluator must not rely on that.
    let mut p = policy(CLOUD_FIRST);
    p.rules[0].when.sensitivity = Some(vec![Sensitivity::Pii, Sensitivity::Regulated]);
    let r = p.compile(&schema(), &routes()).unwrap();
    let info = r.route(&event(&[("note", s("card 4111 1111 1111 1111"))])).unwrap();
    assert_eq!(info.route, "fraud");
    assert_eq!(info.sensitivity, Sensitivity::Regulated);
}

#[test]
fn reasons_and_errors_never_contain_the_matched_text() {
    let r = router(CLOUD_FIRST, true);
    let only_cloud = router("routing:\n  version: v1\n  rules: [{ id: c, route: gpt }]\n", true);
    for sample in PII_SAMPLES {
        let e = event(&[("note", s(&format!("customer data: {sample}"))), ("latency_tier", s(sample))]);
        let e = with_header(e, headers::LATENCY_TIER, sample);
        let info = r.route(&e).unwrap();
        assert!(!info.reason.contains(sample), "{}", info.reason);
        let err = only_cloud.route(&e).unwrap_err();
        assert!(!err.reason.contains(sample), "{}", err.reason);
        assert!(!err.to_string().contains(sample));
        // No run of digits from the sample leaks either.
        let digits: String = sample.chars().filter(char::is_ascii_digit).collect();
        if digits.len() >= 4 {
            assert!(!info.reason.contains(&digits[..4]), "{}", info.reason);
            assert!(!err.reason.contains(&digits[..4]), "{}", err.reason);
        }
        let c = r.classify(&e);
        assert!(c.hits.iter().all(|h| !h.field.contains(sample)));
    }
}

// ---------------------------------------------------------------- properties

fn arb_class() -> impl Strategy<Value = Sensitivity> {
    prop_oneof![
        Just(Sensitivity::Public),
        Just(Sensitivity::Internal),
        Just(Sensitivity::Pii),
        Just(Sensitivity::Regulated),
    ]
}

fn arb_egress() -> impl Strategy<Value = Egress> {
    prop_oneof![Just(Egress::Allow), Just(Egress::Deny)]
}

fn arb_condition() -> impl Strategy<Value = AttributeCondition> {
    prop_oneof![
        Just({
            let mut c = AttributeCondition::on("channel");
            c.one_of = Some(vec![Scalar::from("web"), Scalar::from("app")]);
            c
        }),
        (0.0..2000.0f64).prop_map(|x| {
            let mut c = AttributeCondition::on("amount");
            c.gte = Some(x);
            c
        }),
        (0u32..100).prop_map(|x| {
            let mut c = AttributeCondition::on("merchant_id");
            c.lt = Some(f64::from(x));
            c
        }),
        any::<bool>().prop_map(|b| {
            let mut c = AttributeCondition::on("flagged");
            c.exists = Some(b);
            c
        }),
    ]
}

fn arb_rule(i: usize) -> impl Strategy<Value = RuleConfig> {
    let route = prop::sample::select(vec!["fraud", "fraud_cpu", "gpt", "summarize"]);
    let sensitivity = prop::option::of(prop::collection::vec(arb_class(), 0..3));
    let tiers = prop::option::of(prop::sample::subsequence(vec!["realtime", "standard", "batch"], 0..3));
    let attributes = prop::collection::vec(arb_condition(), 0..3);
    let workers = vec!["fraud", "fraud_cpu", "gpt", "summarize"];
    let fallback = prop::sample::subsequence(workers.clone(), 0..4).prop_shuffle();
    let shadow = prop::option::of((prop::sample::select(workers), 0.01..=1.0f64));
    (route, sensitivity, tiers, attributes, fallback, shadow).prop_map(
        move |(route, sensitivity, tiers, attributes, fallback, shadow)| RuleConfig {
            id: format!("r{i}"),
            when: WhenConfig {
                sensitivity,
                latency_tier: tiers.map(|t| t.into_iter().map(String::from).collect()),
                attributes,
            },
            route: route.to_string(),
            reason: None,
            fallback: fallback.into_iter().map(String::from).collect(),
            shadow: shadow.map(|(route, sample)| ShadowConfig { route: route.to_string(), sample }),
        },
    )
}

/// Any policy over the test schema, cloud routes and non-monotonic egress
/// included: validation would refuse many of these, the evaluator must not
/// care.
fn arb_policy() -> impl Strategy<Value = PolicyConfig> {
    let rules = (1usize..6).prop_flat_map(|n| (0..n).map(arb_rule).collect::<Vec<_>>());
    (rules, [arb_egress(), arb_egress(), arb_egress(), arb_egress()]).prop_map(|(rules, [pu, int, pii, reg])| {
        let mut p = policy("routing:\n  version: prop\n  latency_tier: { field: latency_tier }\n  rules: []\n");
        p.rules = rules;
        p.egress = EgressConfig { public: pu, internal: int, pii, regulated: reg };
        p
    })
}

fn arb_text() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        prop::sample::select(PII_SAMPLES.to_vec()).prop_map(s),
        prop::sample::select(vec!["hello", "order 1234567812345678", "amount 1234.56", "web"]).prop_map(s),
        "[ -~]{0,40}".prop_map(Value::Str),
    ]
}

fn arb_event() -> impl Strategy<Value = Event> {
    (
        arb_text(),
        prop::option::of(Just("alice@example.com")),
        arb_text(),
        prop::option::of(-10.0..5000.0f64),
        prop::option::of(prop::sample::select(vec!["web", "app", "pos"])),
        prop::option::of(prop::sample::select(vec!["realtime", "standard", "batch", "bogus", ""])),
        prop::option::of(0i64..200),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::sample::select(vec!["realtime", "batch", "nope"])),
    )
        .prop_map(|(txn, email, note, amount, channel, tier, merchant, flagged, header)| {
            let opt = |v: Option<Value>| v.unwrap_or(Value::Null);
            let mut e = event(&[
                ("txn_id", txn),
                ("customer_email", opt(email.map(s))),
                ("note", note),
                ("amount", opt(amount.map(Value::Float))),
                ("channel", opt(channel.map(s))),
                ("latency_tier", opt(tier.map(s))),
                ("merchant_id", opt(merchant.map(Value::Int))),
                ("flagged", opt(flagged.map(Value::Bool))),
            ]);
            if let Some(h) = header {
                e.headers.push((headers::LATENCY_TIER.to_string(), h.to_string()));
            }
            e
        })
}

/// First-match semantics written the slow, obvious way over the config.
fn reference_rule<'p>(p: &'p PolicyConfig, r: &Router, e: &Event) -> Option<&'p RuleConfig> {
    let class = r.classify(e).sensitivity;
    let tier = r.latency_tier(e);
    let kinds = routes();
    let schema = schema();
    p.rules.iter().find(|rule| {
        let w = &rule.when;
        let class_ok = w.sensitivity.as_ref().is_none_or(|cs| cs.contains(&class));
        let tier_ok = w.latency_tier.as_ref().is_none_or(|ts| ts.iter().any(|t| t == tier));
        let attrs_ok = w.attributes.iter().all(|a| {
            let v = &e.values[schema.index_of(&a.field).unwrap()];
            if let Some(exists) = a.exists {
                return v.is_null() != exists;
            }
            if let Some(set) = &a.one_of {
                return v.to_text().is_some_and(|t| set.iter().any(|x| x.0 == t));
            }
            let x = match v {
                Value::Int(i) => *i as f64,
                Value::Float(f) => *f,
                _ => return false,
            };
            a.gt.is_none_or(|b| x > b)
                && a.gte.is_none_or(|b| x >= b)
                && a.lt.is_none_or(|b| x < b)
                && a.lte.is_none_or(|b| x <= b)
        });
        let egress_ok = kinds[&rule.route] == RouteKind::Local || p.egress.allows(class);
        class_ok && tier_ok && attrs_ok && egress_ok
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) The hard guarantee: whatever the policy says, an event whose class
    /// is denied egress is never routed to a cloud worker.
    #[test]
    fn denied_classes_never_reach_a_cloud_worker(p in arb_policy(), events in prop::collection::vec(arb_event(), 1..8)) {
        let kinds: HashMap<String, RouteKind> = routes();
        let r = p.compile(&schema(), &kinds).unwrap();
        for e in &events {
            let class = r.classify(e).sensitivity;
            match r.route(e) {
                Ok(info) => {
                    prop_assert_eq!(info.sensitivity, class);
                    if kinds[&info.route] == RouteKind::Cloud {
                        prop_assert!(p.egress.allows(class), "{:?} event sent to cloud worker {}", class, info.route);
                    }
                    // Nor is it ever offered one as a fallback or shadow.
                    let plan = r.plan(&info, &format!("{:?}", e.values));
                    for w in plan.fallbacks.iter().chain(plan.shadow.iter()) {
                        if kinds[w] == RouteKind::Cloud {
                            prop_assert!(p.egress.allows(class), "{:?} event offered cloud worker {}", class, w);
                        }
                    }
                }
                Err(no) => prop_assert_eq!(no.sensitivity, class),
            }
        }
    }

    /// The evaluator is first-match over the rules an event may use.
    #[test]
    fn routing_agrees_with_the_reference_evaluator(p in arb_policy(), e in arb_event()) {
        let r = p.compile(&schema(), &routes()).unwrap();
        let expected = reference_rule(&p, &r, &e).map(|rule| rule.id.clone());
        prop_assert_eq!(r.route(&e).ok().map(|i| i.rule_id), expected);
    }

    /// (b) Routing is deterministic: the same event gets the same decision,
    /// from the same router or one built again from the same policy.
    #[test]
    fn routing_is_deterministic(p in arb_policy(), e in arb_event()) {
        let r1 = p.compile(&schema(), &routes()).unwrap();
        let r2 = p.clone().compile(&schema(), &routes()).unwrap();
        let first = r1.route(&e);
        prop_assert_eq!(&first, &r1.route(&e.clone()));
        prop_assert_eq!(&first, &r2.route(&e));
        prop_assert_eq!(r1.spec_hash(), r2.spec_hash());
    }

    /// Validated routers keep the guarantee too (and validation accepts some
    /// of the generated policies).
    #[test]
    fn validated_routers_keep_the_guarantee(p in arb_policy(), e in arb_event()) {
        if let Ok(r) = p.build_with(&schema(), &routes(), true) {
            if let Ok(info) = r.route(&e) {
                if routes()[&info.route] == RouteKind::Cloud {
                    prop_assert!(p.egress.allows(info.sensitivity));
                }
            }
        }
    }
}

// ---------------------------------------------------------------- fallback and shadow plans

const HYBRID: &str = r#"
routing:
  version: "hybrid/1"
  scan_fields: [note]
  latency_tier: { field: latency_tier, deadlines_ms: { realtime: 40 } }
  rules:
    - id: sensitive
      when: { sensitivity: [pii, regulated] }
      route: fraud
      fallback: [gpt, fraud_cpu]
      shadow: { route: summarize, sample: 1.0 }
    - id: cloud-first
      when: { sensitivity: [public, internal] }
      route: gpt
      fallback: [summarize, fraud]
      shadow: { route: fraud_cpu, sample: 0.25 }
"#;

#[test]
fn fallback_chains_keep_their_order_and_drop_cloud_workers_for_sensitive_events() {
    let r = router(HYBRID, true);
    let e = event(&[("note", s("write to a@b.io"))]);
    let info = r.route(&e).unwrap();
    assert_eq!((info.rule_id.as_str(), info.route.as_str()), ("sensitive", "fraud"));
    let plan = r.plan(&info, "lin-1");
    // gpt is a cloud worker and the event is pii: never in the chain, never a shadow.
    assert_eq!(plan.fallbacks, vec!["fraud_cpu".to_string()]);
    assert_eq!(plan.shadow, None);
    assert_eq!(plan.withheld, vec!["gpt".to_string(), "summarize".to_string()]);

    let info = r.route(&event(&[("note", s("all good"))])).unwrap();
    assert_eq!(info.route, "gpt");
    let plan = r.plan(&info, "lin-1");
    assert_eq!(plan.fallbacks, vec!["summarize".to_string(), "fraud".to_string()]);
    assert!(plan.withheld.is_empty());
}

#[test]
fn every_worker_of_a_plan_may_receive_the_event() {
    let r = router(HYBRID, true);
    let kinds = routes();
    for note in PII_SAMPLES.iter().copied().chain(["nothing here", "order 42"]) {
        for tier in ["realtime", "standard", "batch"] {
            let e = event(&[("note", s(note)), ("latency_tier", s(tier))]);
            let info = r.route(&e).unwrap();
            for id in ["a", "b", "c", "d"] {
                let plan = r.plan(&info, id);
                for w in plan.fallbacks.iter().chain(plan.shadow.iter()) {
                    assert!(r.may_send(info.sensitivity, kinds[w]), "{w} for {note:?}");
                }
            }
        }
    }
}

#[test]
fn shadow_sampling_is_deterministic_and_close_to_the_fraction() {
    let r = router(HYBRID, true);
    let info = r.route(&event(&[("note", s("fine"))])).unwrap();
    let ids: Vec<String> = (0..20_000).map(|i| format!("lineage-{i}")).collect();
    let picked: Vec<bool> = ids.iter().map(|id| r.plan(&info, id).shadow.is_some()).collect();
    let again: Vec<bool> = ids.iter().map(|id| r.plan(&info, id).shadow.is_some()).collect();
    assert_eq!(picked, again);
    let share = picked.iter().filter(|p| **p).count() as f64 / ids.len() as f64;
    assert!((share - 0.25).abs() < 0.02, "share {share}");
}

#[test]
fn the_plan_carries_the_tier_deadline() {
    let r = router(HYBRID, true);
    let info = r.route(&event(&[("note", s("fine")), ("latency_tier", s("realtime"))])).unwrap();
    assert_eq!(r.plan(&info, "x").deadline, Some(std::time::Duration::from_millis(40)));
    let info = r.route(&event(&[("note", s("fine"))])).unwrap();
    assert_eq!(r.plan(&info, "x").deadline, None);
}

#[test]
fn a_route_from_another_policy_gets_an_empty_plan() {
    let r = router(HYBRID, true);
    let info = RouteInfo { rule_id: "gone".into(), latency_tier: "batch".into(), ..RouteInfo::default() };
    assert_eq!(r.plan(&info, "x"), Plan::default());
}

#[test]
fn the_scanner_finds_what_the_detectors_find() {
    use switchyard_schemas::PiiScanner;
    let r = router(HYBRID, true);
    let text = "mail a@b.io, card 4111 1111 1111 1111";
    let found = r.scanner().find(text);
    let names: Vec<&str> = found.iter().map(|(_, d)| *d).collect();
    assert_eq!(names, vec!["email", "payment_card"]);
    assert_eq!(&text[found[0].0.clone()], "a@b.io");
    // Detection off in the policy: the last check still runs every detector.
    let off = router("routing:\n  version: v1\n  detectors: []\n  rules: [{ id: a, route: fraud }]\n", true);
    assert_eq!(off.scanner().find(text).len(), 2);
}
