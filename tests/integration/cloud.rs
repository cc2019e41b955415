//! Cloud workers against real servers: the `kserve_v2` client against
//! MLServer serving a scikit-learn model, the `openai` client against the
//! LiteLLM proxy with a deterministic provider, and between client and
//! server the fault-injecting proxy of [`crate::proxy`], which injects
//! failures and records every byte that leaves.
//!
//! The worker under test is the real [`CloudWorker`]; nothing of ours is
//! mocked. Peers start once per test binary ([`crate::peers`]).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use switchyard_router::{Detector, DetectorSet};
use switchyard_schemas::{Problems, Value};
use switchyard_workers::cloud::{BreakerState, CloudError, CloudInput, CloudWorker, CloudWorkerConfig, Protocol};

use crate::peers::{self, LITELLM_KEY};
use crate::proxy::{Fault, FaultProxy};
use crate::support::repo;

type Answer = Result<switchyard_workers::Answer, CloudError>;

fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(f)
}

/// Environment variables the workers read their secrets from. Set once,
/// before any worker starts.
const KEY_ENV: &str = "SWITCHYARD_TEST_LITELLM_KEY";
const WRONG_KEY_ENV: &str = "SWITCHYARD_TEST_WRONG_KEY";
const WRONG_KEY: &str = "sk-switchyard-wrong-9999";
const HMAC_ENV: &str = "SWITCHYARD_TEST_HMAC_KEY";

fn secrets_in_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var(KEY_ENV, LITELLM_KEY);
        std::env::set_var(WRONG_KEY_ENV, WRONG_KEY);
        std::env::set_var(HMAC_ENV, "hmac-key-of-the-leak-test");
    });
}

/// Every detector, as the last check before egress runs them.
fn scanner() -> Arc<DetectorSet> {
    Arc::new(DetectorSet(Detector::ALL.to_vec()))
}

/// A worker configuration as a manifest would give it, validated.
fn config(protocol: Protocol, yaml: &str, fields: &[String]) -> CloudWorkerConfig {
    let cfg: CloudWorkerConfig = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("worker config: {e}\n{yaml}"));
    let mut problems = Problems::new();
    cfg.validate(protocol, "workers.cloud", fields, &mut problems);
    assert!(problems.is_empty(), "{:?}", problems.items());
    cfg
}

// ---------------------------------------------------------------- kserve_v2

/// `tests/peers/mlserver/reference.json`: rows and what the model answers.
struct Reference {
    rows: Vec<Vec<f64>>,
    proba: Vec<f64>,
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(repo().join("tests/peers/mlserver/reference.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let nums = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>();
    let rows: Vec<Vec<f64>> = r["rows"].as_array().unwrap().iter().map(nums).collect();
    let proba = nums(&r["predict_proba"]);
    assert_eq!(rows.len(), proba.len());
    Reference { rows, proba }
}

const WIDTH: usize = 8;

/// A `kserve_v2` worker for MLServer's `fraud-sk` at `url`, asking for the
/// `predict_proba` output (whose second column is the positive class);
/// `extra` adds settings.
fn kserve(url: &str, extra: &str) -> CloudWorker {
    let yaml = format!("url: {url}\nmodel: fraud-sk\nversion: v1\noutput: predict_proba\n{extra}");
    let cfg = config(Protocol::KserveV2, &yaml, &[]);
    CloudWorker::start("fraud-cloud", Protocol::KserveV2, &cfg, &repo(), &[], WIDTH, scanner()).unwrap()
}

/// `n` events cycling through the reference rows; event `i` is row `i % 16`.
fn reference_inputs(r: &Reference, n: usize) -> Vec<CloudInput> {
    (0..n)
        .map(|i| CloudInput {
            id: format!("ev-{i}"),
            trace: None,
            // The rows are exactly representable as f32 (train.py).
            features: r.rows[i % r.rows.len()].iter().map(|&x| x as f32).collect(),
            values: vec![],
        })
        .collect()
}

/// Asserts answer `i` is the model's probability for row `i % 16`.
fn assert_reference_answer(r: &Reference, i: usize, a: &Answer) {
    let a = a.as_ref().unwrap_or_else(|e| panic!("event {i}: {e}"));
    let want = r.proba[i % r.proba.len()];
    let got = a.score.unwrap();
    assert!((got - want).abs() <= 1e-12, "event {i}: score {got}, reference {want}");
    assert_eq!(a.label, Some(i64::from(want >= 0.5)), "event {i}");
}

/// Rows in the request's input tensor.
fn rows_in(body: &serde_json::Value) -> usize {
    body["inputs"][0]["shape"][0].as_u64().unwrap() as usize
}

#[test]
fn training_script_reproduces_the_committed_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(peers::peers_bin("python"))
        .arg(repo().join("tests/peers/mlserver/train.py"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "train.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let read = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let committed = read(&repo().join("tests/peers/mlserver/reference.json"));
    let fresh = read(&dir.path().join("reference.json"));
    assert!(dir.path().join("fraud-sk/model.joblib").is_file());
    for key in ["features", "classes", "rows"] {
        assert_eq!(fresh[key], committed[key], "{key}");
    }
    let close = |a: &serde_json::Value, b: &serde_json::Value, what: &str| {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!((a - b).abs() <= 1e-12, "{what}: {a} vs committed {b}");
    };
    for key in ["coef", "predict_proba"] {
        let (f, c) = (fresh[key].as_array().unwrap(), committed[key].as_array().unwrap());
        assert_eq!(f.len(), c.len(), "{key}");
        for (i, (a, b)) in f.iter().zip(c).enumerate() {
            close(a, b, &format!("{key}[{i}]"));
        }
    }
    close(&fresh["intercept"], &committed["intercept"], "intercept");
    close(&fresh["train_accuracy"], &committed["train_accuracy"], "train_accuracy");
}

#[test]
fn fault_proxy_does_what_its_plan_says_and_records_every_request() {
    let upstream = peers::mlserver().url.clone();
    run(async {
        let proxy = FaultProxy::start(&upstream).await;
        proxy.script(vec![
            Fault::Pass,
            Fault::Status(503),
            Fault::TooManyRequests { retry_after_s: 7 },
            Fault::Slow(Duration::from_millis(300)),
            Fault::Drop,
            Fault::Hang,
        ]);
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
        let get = |path: &str| client.get(format!("{}{path}", proxy.url())).header("x-test", "yes").send();
        assert_eq!(get("/v2/health/ready").await.unwrap().status().as_u16(), 200);
        assert_eq!(get("/v2/health/ready").await.unwrap().status().as_u16(), 503);
        let throttled = get("/v2/health/ready").await.unwrap();
        assert_eq!(throttled.status().as_u16(), 429);
        assert_eq!(throttled.headers()["retry-after"], "7");
        let t = Instant::now();
        assert_eq!(get("/v2/health/ready").await.unwrap().status().as_u16(), 200);
        assert!(t.elapsed() >= Duration::from_millis(300), "slow answered after {:?}", t.elapsed());
        let dropped = get("/v2/health/ready").await.unwrap_err();
        assert!(!dropped.is_timeout(), "a dropped connection is not a timeout: {dropped:?}");
        let hung = client
            .post(format!("{}/v2/models/fraud-sk/infer", proxy.url()))
            .timeout(Duration::from_millis(300))
            .body("{\"secret\":\"a-body-value\"}")
            .send()
            .await
            .unwrap_err();
        assert!(hung.is_timeout(), "{hung:?}");
        // After the script, requests pass again.
        assert_eq!(get("/v2/health/live").await.unwrap().status().as_u16(), 200);

        let seen = proxy.requests();
        assert_eq!(seen.len(), 7);
        assert_eq!(seen.iter().map(|r| r.n).collect::<Vec<_>>(), (0..7).collect::<Vec<_>>());
        assert!(seen.windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!((seen[5].method.as_str(), seen[5].path.as_str()), ("POST", "/v2/models/fraud-sk/infer"));
        assert_eq!(seen[5].body, b"{\"secret\":\"a-body-value\"}");
        assert!(seen[5].contains("a-body-value") && seen[0].contains("x-test: yes"));
        assert_eq!(seen[0].header("x-test"), Some("yes"));
        assert_eq!(seen[6].fault, Fault::Pass);
        assert_eq!(proxy.posts().len(), 1);
    });
}

/// MLServer's answers through the worker are the training script's
/// `predict_proba`, the positive-class column, for every reference row; the
/// request is one FP32 tensor of exactly the rows given.
#[test]
fn kserve_answers_are_the_reference_probabilities() {
    let r = reference();
    let upstream = peers::mlserver().url.clone();
    run(async {
        let proxy = FaultProxy::start(&upstream).await;
        // The batching window under its former name still applies.
        let w = kserve(&proxy.url(), "max_batch_size: 64\nmax_batch_delay_ms: 50\n");
        w.check_ready().await.unwrap();
        let n = r.rows.len();
        let answers = w.infer(reference_inputs(&r, n)).await;
        assert_eq!(answers.len(), n);
        for (i, a) in answers.iter().enumerate() {
            assert_reference_answer(&r, i, a);
        }
        let first = answers[0].as_ref().unwrap();
        assert_eq!(first.model.name, "fraud-sk");
        assert_eq!(first.model.version, "v1");
        assert_eq!(first.model.request_id, "sy-ev-0", "MLServer echoes the request id");
        assert_eq!(first.model.provider, format!("kserve_v2 {}", proxy.url()));

        let posts = proxy.posts();
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].path, "/v2/models/fraud-sk/versions/v1/infer");
        assert_eq!(posts[0].header("content-type"), Some("application/json"));
        let body = posts[0].json();
        assert_eq!(body["outputs"], serde_json::json!([{"name": "predict_proba"}]));
        let input = &body["inputs"][0];
        assert_eq!(input["datatype"], "FP32");
        assert_eq!(input["shape"], serde_json::json!([n, WIDTH]));
        let sent: Vec<f32> = input["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let want: Vec<f32> = r.rows.iter().flatten().map(|&x| x as f32).collect();
        assert_eq!(sent, want);
        let s = w.snapshot();
        assert_eq!((s.requests, s.attempts, s.retries, s.rows), (1, 1, 0, n as u64));
    });
}

/// N events become ceil(N / max_batch_size) requests, each full but the
/// last, and every answer goes back to its own event.
#[test]
fn kserve_coalesces_events_into_max_batch_size_requests() {
    let r = reference();
    let upstream = peers::mlserver().url.clone();
    run(async {
        let proxy = FaultProxy::start(&upstream).await;
        let w = kserve(&proxy.url(), "max_batch_size: 8\nmax_queue_delay_ms: 200\nmax_concurrency: 2\n");
        let n = 37;
        let answers = w.infer(reference_inputs(&r, n)).await;
        for (i, a) in answers.iter().enumerate() {
            assert_reference_answer(&r, i, a);
        }
        let posts = proxy.posts();
        assert_eq!(posts.len(), n.div_ceil(8));
        let mut sizes: Vec<usize> = posts.iter().map(|p| rows_in(&p.json())).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![5, 8, 8, 8, 8]);
        let s = w.snapshot();
        assert_eq!((s.requests, s.attempts, s.rows), (5, 5, n as u64));
    });
}

/// A 429 with `Retry-After: 1` is retried no sooner than a second later
/// (the backoff alone would be ~10 ms); a longer wait than
/// `max_retry_after_ms` fails at once instead of waiting.
#[test]
fn kserve_retry_after_is_waited_for() {
    let r = reference();
    let upstream = peers::mlserver().url.clone();
    run(async {
        let proxy = FaultProxy::start(&upstream).await;
        proxy.script(vec![
            Fault::TooManyRequests { retry_after_s: 1 },
            Fault::Pass,
            Fault::TooManyRequests { retry_after_s: 5 },
        ]);
        let w = kserve(
            &proxy.url(),
            "max_batch_size: 1\nretry: { max_attempts: 4, initial_backoff_ms: 10, max_backoff_ms: 20, max_retry_after_ms: 2000 }\n",
        );
        let answers = w.infer(reference_inputs(&r, 1)).await;
        assert_reference_answer(&r, 0, &answers[0]);
        let seen = proxy.posts();
        assert_eq!(seen.len(), 2);
        let waited = seen[1].at - seen[0].at;
        assert!(waited >= Duration::from_secs(1), "retried after {waited:?}, Retry-After asked 1 s");
        assert!(waited < Duration::from_millis(1800), "retried only after {waited:?}");
        let s = w.snapshot();
        assert_eq!((s.requests, s.attempts, s.retries, s.throttled), (1, 2, 1, 1));
        // Rate limits say nothing about the endpoint's health.
        assert_eq!(s.breaker, BreakerState::Closed);

        // Asked to wait 5 s with at most 2 s allowed: give up now.
        let t = Instant::now();
        let answers = w.infer(reference_inputs(&r, 1)).await;
        let Err(CloudError::Failed(msg)) = &answers[0] else { panic!("{:?}", answers[0]) };
        assert!(msg.contains("HTTP 429") && msg.contains("after 1 attempt"), "{msg}");
        assert!(t.elapsed() < Duration::from_secs(1), "gave up after {:?}", t.elapsed());
        assert_eq!(proxy.posts().len(), 3);
    });
}

/// Bursts of 5xx, rate limits, slow answers, timeouts and dropped
/// connections, with requests in flight concurrently: every event is
/// answered, correctly, and the worker's counters agree with what the
/// proxy saw.
#[test]
fn kserve_faults_lose_no_event_and_counters_match_the_wire() {
    let r = reference();
    let upstream = peers::mlserver().url.clone();
    let timeout_ms = 500;
    // (fault, whether the attempt fails)
    let script = vec![
        (Fault::Status(500), true),
        (Fault::Status(503), true),
        (Fault::Slow(Duration::from_millis(150)), false),
        (Fault::Drop, true),
        (Fault::TooManyRequests { retry_after_s: 0 }, true),
        (Fault::Hang, true),
        (Fault::Pass, false),
        (Fault::Status(502), true),
        (Fault::Slow(Duration::from_millis(timeout_ms + 300)), true),
        (Fault::Drop, true),
        (Fault::Status(504), true),
        (Fault::Slow(Duration::from_millis(50)), false),
    ];
    let failing = script.iter().filter(|(_, f)| *f).count();
    let throttled = script.iter().filter(|(f, _)| matches!(f, Fault::TooManyRequests { .. })).count();
    run(async {
        let proxy = FaultProxy::start(&upstream).await;
        proxy.script(script.iter().map(|(f, _)| f.clone()).collect());
        // Enough attempts for one request to meet every failure.
        let w = kserve(
            &proxy.url(),
            &format!(
                "max_batch_size: 4\nmax_queue_delay_ms: 50\nmax_concurrency: 4\ntimeout_ms: {timeout_ms}\n\
                 retry: {{ max_attempts: {}, initial_backoff_ms: 10, max_backoff_ms: 80 }}\n\
                 circuit_breaker: {{ failure_threshold: 1000 }}\n",
                failing + 1
            ),
        );
        let n = 48;
        let answers = w.infer(reference_inputs(&r, n)).await;
        assert_eq!(answers.len(), n);
        for (i, a) in answers.iter().enumerate() {
            assert_reference_answer(&r, i, a);
        }
        let posts = proxy.posts();
        let requests = n / 4;
        assert_eq!(posts.len(), requests + failing, "each failed attempt is retried once");
        let s = w.snapshot();
        assert_eq!(s.requests, requests as u64);
        assert_eq!(s.attempts, posts.len() as u64);
        assert_eq!(s.retries, failing as u64);
        assert_eq!(s.throttled, throttled as u64);
        assert_eq!((s.rows, s.failed_rows), (n as u64, 0));
        // Retries resend the same request: one body per request id.
        let mut bodies: BTreeMap<String, HashSet<Vec<u8>>> = BTreeMap::new();
        for p in &posts {
            let id = p.json()["id"].as_str().unwrap().to_string();
            bodies.entry(id).or_default().insert(p.body.clone());
        }
        assert_eq!(bodies.len(), requests);
        assert!(bodies.values().all(|b| b.len() == 1));
    });
}

/// With too few attempts, a request whose every attempt fails answers each
/// of its events with an explicit failure; the others are answered; none
/// is lost. Requests go one at a time, so the script says exactly which.
#[test]
fn kserve_exhausted_retries_fail_explicitly_and_lose_nothing() {
    let r = reference();
    let upstream = peers::mlserver().url.clone();
    run(async {
        let proxy = FaultProxy::start(&upstream).await;
        proxy.script(vec![
            Fault::Status(500), // request A, attempt 1
            Fault::Status(500), // A, attempt 2: A fails
            Fault::Pass,        // B
            Fault::Drop,        // C, attempt 1
            Fault::Pass,        // C, attempt 2
            Fault::Hang,        // D, attempt 1 (timeout)
            Fault::Status(503), // D, attempt 2: D fails
        ]);
        let w = kserve(
            &proxy.url(),
            "max_batch_size: 4\nmax_queue_delay_ms: 50\nmax_concurrency: 1\ntimeout_ms: 400\n\
             retry: { max_attempts: 2, initial_backoff_ms: 10 }\ncircuit_breaker: { failure_threshold: 1000 }\n",
        );
        let answers = w.infer(reference_inputs(&r, 16)).await;
        assert_eq!(answers.len(), 16);
        for (i, a) in answers.iter().enumerate() {
            match i / 4 {
                0 | 3 => {
                    let Err(CloudError::Failed(msg)) = a else { panic!("event {i}: {a:?}") };
                    let status = if i < 4 { "HTTP 500" } else { "HTTP 503" };
                    assert!(msg.contains(status) && msg.contains("after 2 attempts"), "event {i}: {msg}");
                }
                _ => assert_reference_answer(&r, i, a),
            }
        }
        assert_eq!(proxy.posts().len(), 7);
        let s = w.snapshot();
        assert_eq!((s.requests, s.attempts, s.retries), (4, 7, 3));
        assert_eq!((s.rows, s.failed_rows), (8, 8));
    });
}

/// A sustained burst of 5xx opens the circuit: requests are refused without
/// reaching the server; after `open_ms` one probe goes through; a failed
/// probe opens it again, a successful one closes it.
#[test]
fn kserve_breaker_opens_on_sustained_errors_and_a_probe_closes_it() {
    let r = reference();
    let upstream = peers::mlserver().url.clone();
    let open = Duration::from_millis(1000);
    run(async {
        let proxy = FaultProxy::start(&upstream).await;
        proxy.script(vec![Fault::Status(503); 4]);
        let w = kserve(
            &proxy.url(),
            &format!(
                "max_batch_size: 1\nmax_concurrency: 1\nretry: {{ max_attempts: 1 }}\n\
                 circuit_breaker: {{ failure_threshold: 3, open_ms: {}, half_open_probes: 1 }}\n",
                open.as_millis()
            ),
        );
        let one = |i: usize| reference_inputs(&r, i + 1).pop().unwrap();
        for i in 0..3 {
            assert_eq!(w.snapshot().breaker, BreakerState::Closed, "before failure {i}");
            let a = w.infer(vec![one(i)]).await;
            assert!(matches!(&a[0], Err(CloudError::Failed(m)) if m.contains("HTTP 503")), "{a:?}");
        }
        let s = w.snapshot();
        assert_eq!((s.breaker, s.breaker_opened), (BreakerState::Open, 1));
        let opened = Instant::now();
        match w.admit() {
            Err(CloudError::Unavailable { retry_in, pause, .. }) => {
                assert!(retry_in <= open && retry_in > Duration::ZERO, "{retry_in:?}");
                assert!(!pause);
            }
            other => panic!("admit while open: {other:?}"),
        }
        // Refused without a request.
        let a = w.infer(vec![one(3)]).await;
        assert!(matches!(&a[0], Err(CloudError::Unavailable { .. })), "{a:?}");
        assert_eq!(proxy.posts().len(), 3);
        assert_eq!(w.snapshot().unavailable_rows, 1);

        tokio::time::sleep(open.saturating_sub(opened.elapsed()) + Duration::from_millis(100)).await;
        assert_eq!(w.snapshot().breaker, BreakerState::HalfOpen);
        w.admit().unwrap();
        // The probe meets the fourth 503: open again.
        let a = w.infer(vec![one(4)]).await;
        assert!(matches!(&a[0], Err(CloudError::Failed(_))), "{a:?}");
        let s = w.snapshot();
        assert_eq!((s.breaker, s.breaker_opened), (BreakerState::Open, 2));
        assert_eq!(proxy.posts().len(), 4);

        tokio::time::sleep(open + Duration::from_millis(100)).await;
        let a = w.infer(vec![one(5)]).await;
        assert_reference_answer(&r, 5, &a[0]);
        assert_eq!(w.snapshot().breaker, BreakerState::Closed);
        w.admit().unwrap();
        let a = w.infer(reference_inputs(&r, 6)).await;
        for (i, a) in a.iter().enumerate() {
            assert_reference_answer(&r, i, a);
        }
        assert_eq!(proxy.posts().len(), 11);
        assert_eq!(w.snapshot().breaker_opened, 2);
    });
}

/// Under excess demand the requests that reach the server never exceed
/// `requests_per_second` in any window (plus the configured burst), and the
/// limit is used: at least 95% of it over the run.
#[test]
fn kserve_rate_limit_holds_on_the_wire_and_is_used() {
    let r = reference();
    let upstream = peers::mlserver().url.clone();
    let (rps, burst) = (50.0, 5usize);
    run(async {
        let proxy = FaultProxy::start(&upstream).await;
        let w = kserve(
            &proxy.url(),
            &format!(
                "max_batch_size: 1\nmax_concurrency: 16\n\
                 rate_limit: {{ requests_per_second: {rps}, burst: {burst} }}\n"
            ),
        );
        // About two seconds of work, all of it asked for at once.
        let n = 105;
        let answers = w.infer(reference_inputs(&r, n)).await;
        for (i, a) in answers.iter().enumerate() {
            assert_reference_answer(&r, i, a);
        }
        let at: Vec<Instant> = proxy.posts().iter().map(|p| p.at).collect();
        assert_eq!(at.len(), n);
        // Arrival times carry a little transit jitter on top of the send
        // times the limiter controls: windows are shortened by 20 ms.
        let jitter = Duration::from_millis(20);
        for window in [Duration::from_millis(250), Duration::from_secs(1)] {
            let allowed = (rps * window.as_secs_f64()).floor() as usize + burst;
            for (i, &t) in at.iter().enumerate() {
                let inside = at[i..].iter().take_while(|&&u| u - t < window - jitter).count();
                assert!(inside <= allowed, "{inside} requests within {window:?} (allowed {allowed})");
            }
        }
        let span = (*at.last().unwrap() - at[0]).as_secs_f64();
        let achieved = (n - burst) as f64 / span;
        assert!(achieved >= 0.95 * rps, "achieved {achieved:.1} requests/s of {rps}");
    });
}

#[test]
fn kserve_check_ready_names_an_unreachable_endpoint() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    run(async {
        let w = kserve(&format!("http://127.0.0.1:{closed}"), "timeout_ms: 500\n");
        let e = w.check_ready().await.unwrap_err();
        assert!(e.contains(&format!("127.0.0.1:{closed}/v2/health/ready")), "{e}");
        let ready = kserve(&peers::mlserver().url, "");
        ready.check_ready().await.unwrap();
    });
}

// ------------------------------------------------------------------ openai

/// `det_provider.risk`: the score det-chat writes for a message.
fn det_risk(text: &str) -> f64 {
    let digest = hex::encode(Sha256::digest(text.as_bytes()));
    (u64::from_str_radix(&digest[..8], 16).unwrap() % 10_000) as f64 / 10_000.0
}

/// `det_provider._embed`: det-embed's vector for a text.
fn det_embed(text: &str) -> Vec<f64> {
    let mut v = [0f64; 8];
    for ch in text.chars() {
        v[(ch as usize) % 8] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let norm = if norm == 0.0 { 1.0 } else { norm };
    v.iter().map(|x| x / norm).collect()
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn txn_fields() -> Vec<String> {
    ["txn_id", "amount", "currency", "merchant"].map(String::from).to_vec()
}

fn txn_inputs(n: usize) -> Vec<CloudInput> {
    let merchants = ["grocery", "electronics", "travel", "fuel", "jewellery"];
    (0..n)
        .map(|i| CloudInput {
            id: format!("tx-{i}"),
            trace: None,
            features: vec![],
            values: vec![
                Value::Str(format!("T{i:04}")),
                Value::Float(12.5 + i as f64 * 7.25),
                Value::Str(if i % 2 == 0 { "EUR" } else { "USD" }.into()),
                Value::Str(merchants[i % merchants.len()].into()),
            ],
        })
        .collect()
}

fn rendered(input: &CloudInput) -> String {
    let v: Vec<String> = input.values.iter().map(|v| v.to_text().unwrap_or_default()).collect();
    format!("Transaction {}: {} {} at {}", v[0], v[1], v[2], v[3])
}

fn openai(url: &str, extra: &str, fields: &[String]) -> CloudWorker {
    secrets_in_env();
    let yaml = format!("url: {url}/v1\n{extra}");
    let cfg = config(Protocol::OpenAi, &yaml, fields);
    CloudWorker::start("llm", Protocol::OpenAi, &cfg, &repo(), fields, 0, scanner()).unwrap()
}

/// Chat completions through LiteLLM with the bearer token from the
/// environment: the score is the number det-chat computed for exactly the
/// rendered template, and the token usage the provider reported is spent
/// from the budget.
#[test]
fn openai_chat_scores_come_from_the_reply() {
    let upstream = peers::litellm().url.clone();
    let system = "Answer with a fraud risk.";
    run(async {
        let proxy = FaultProxy::start(&upstream).await;
        let w = openai(
            &proxy.url(),
            &format!(
                "model: det-chat\ntemplate: \"Transaction {{txn_id}}: {{amount}} {{currency}} at {{merchant}}\"\n\
                 system: {system}\nmax_tokens: 24\nthreshold: 0.5\nauth: {{ bearer_env: {KEY_ENV} }}\n\
                 budget: {{ cost_per_1k_tokens: 1.0, limit: 1000.0 }}\n"
            ),
            &txn_fields(),
        );
        w.check_ready().await.unwrap();
        let inputs = txn_inputs(6);
        let answers = w.infer(inputs.clone()).await;
        let mut tokens = 0;
        for (input, a) in inputs.iter().zip(&answers) {
            let a = a.as_ref().unwrap_or_else(|e| panic!("{}: {e}", input.id));
            let text = rendered(input);
            let risk = det_risk(&text);
            assert_eq!(a.score, Some(risk), "{text}");
            assert_eq!(a.label, Some(i64::from(risk >= 0.5)));
            let reply = format!("risk: {risk:.4} echo: {text}");
            let outputs: serde_json::Value = serde_json::from_str(a.outputs.as_deref().unwrap()).unwrap();
            assert_eq!(outputs, serde_json::json!({ "reply": reply }));
            assert_eq!(a.model.version, "det-chat");
            assert!(a.model.request_id.starts_with("chatcmpl-"), "{}", a.model.request_id);
            tokens += words(system) + words(&text) + words(&reply);
        }
        let spent = w.snapshot().budget_spent.unwrap();
        assert!((spent - tokens as f64 / 1000.0).abs() < 1e-9, "spent {spent}, usage {tokens} tokens");

        // One request per event, each authenticated, carrying the template.
        let posts = proxy.posts();
        assert_eq!(posts.len(), inputs.len());
        let mut contents: Vec<String> = posts
            .iter()
            .map(|p| {
                assert_eq!(p.path, "/v1/chat/completions");
                assert_eq!(p.header("authorization"), Some(format!("Bearer {LITELLM_KEY}").as_str()));
                let b = p.json();
                assert_eq!((b["model"].as_str(), b["max_tokens"].as_u64()), (Some("det-chat"), Some(24)));
                assert_eq!(b["messages"][0], serde_json::json!({"role": "system", "content": system}));
                b["messages"][1]["content"].as_str().unwrap().to_string()
            })
            .collect();
        contents.sort();
        let mut want: Vec<String> = inputs.iter().map(rendered).collect();
        want.sort();
        assert_eq!(contents, want);
    });
}

/// Embeddings are batched up to `max_batch_size` inputs per request and
/// each vector goes back to its own event.
#[test]
fn openai_embeddings_are_batched_and_returned_in_order() {
    let upstream = peers::litellm().url.clone();
    run(async {
        let proxy = FaultProxy::start(&upstream).await;
        let w = openai(
            &proxy.url(),
            &format!(
                "model: det-embed\napi: embeddings\ntemplate: \"{{merchant}} {{currency}} {{txn_id}}\"\n\
                 max_batch_size: 4\nmax_queue_delay_ms: 100\nauth: {{ bearer_env: {KEY_ENV} }}\n"
            ),
            &txn_fields(),
        );
        let inputs = txn_inputs(10);
        let answers = w.infer(inputs.clone()).await;
        for (input, a) in inputs.iter().zip(&answers) {
            let a = a.as_ref().unwrap_or_else(|e| panic!("{}: {e}", input.id));
            assert_eq!((a.score, a.label), (None, None));
            let v = &input.values;
            let text = format!("{} {} {}", v[3].to_text().unwrap(), v[2].to_text().unwrap(), v[0].to_text().unwrap());
            let got: serde_json::Value = serde_json::from_str(a.outputs.as_deref().unwrap()).unwrap();
            let got: Vec<f64> = got["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            let want = det_embed(&text);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-6, "{text}: {got:?} vs {want:?}");
            }
        }
        let posts = proxy.posts();
        let mut sizes: Vec<usize> = posts.iter().map(|p| p.json()["input"].as_array().unwrap().len()).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![2, 4, 4]);
        assert!(posts.iter().all(|p| p.path == "/v1/embeddings"));
    });
}

/// A key the server refuses fails at once, without retries, with the
/// server's status and message, and without the key in the message; no
/// key at all gets LiteLLM's 401.
#[test]
fn openai_refused_credentials_fail_without_retrying() {
    let upstream = peers::litellm().url.clone();
    let chat =
        "model: det-chat\ntemplate: \"Transaction {txn_id}\"\nretry: { max_attempts: 4, initial_backoff_ms: 10 }\n";
    run(async {
        let proxy = FaultProxy::start(&upstream).await;
        let wrong = openai(&proxy.url(), &format!("{chat}auth: {{ bearer_env: {WRONG_KEY_ENV} }}\n"), &txn_fields());
        let a = wrong.infer(txn_inputs(1)).await;
        // LiteLLM without a database answers an unknown key with 400.
        let Err(CloudError::Failed(msg)) = &a[0] else { panic!("{a:?}") };
        assert!(msg.contains("HTTP 400") && msg.contains("after 1 attempt"), "{msg}");
        assert!(!msg.contains(WRONG_KEY), "{msg}");
        let s = wrong.snapshot();
        assert_eq!((s.attempts, s.retries, s.failed_rows), (1, 0, 1));
        assert_eq!(s.breaker, BreakerState::Closed, "a refused key says nothing about the endpoint's health");
        let e = wrong.check_ready().await.unwrap_err();
        assert!(e.contains("HTTP 400") && !e.contains(WRONG_KEY), "{e}");
        let posts = proxy.posts();
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].header("authorization"), Some(format!("Bearer {WRONG_KEY}").as_str()));

        let none = openai(&proxy.url(), chat, &txn_fields());
        let a = none.infer(txn_inputs(1)).await;
        let Err(CloudError::Failed(msg)) = &a[0] else { panic!("{a:?}") };
        assert!(msg.contains("HTTP 401") && msg.contains("Authentication Error"), "{msg}");
        assert_eq!(none.snapshot().attempts, 1);
        assert_eq!(proxy.posts().len(), 2);
    });
}

// -------------------------------------------------------------- leak test

/// A 16-digit Visa-like number passing the Luhn check.
pub(crate) fn card_number(i: usize) -> String {
    let body = format!("453914{:09}", 880_343 + i * 7919);
    format!("{body}{}", switchyard_router::luhn_check_digit(&body).expect("digits"))
}

pub(crate) fn spaced(card: &str) -> String {
    card.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" ")
}

/// Events carry planted e-mail addresses, card numbers and phone numbers in
/// structured fields and in free text. With `hash`, `drop` and `mask`
/// redaction, not one planted value reaches the wire (every byte the proxy
/// received is searched); an event whose un-redacted field still holds
/// personal data is blocked by the last check and never sent.
#[test]
fn openai_planted_pii_never_leaves_and_unredacted_pii_is_blocked() {
    let upstream = peers::litellm().url.clone();
    let fields: Vec<String> =
        ["txn_id", "merchant", "amount", "email", "card", "phone", "note"].map(String::from).to_vec();
    let template = "Transaction {txn_id} at {merchant}: {amount}. Customer {email}, card {card}, phone {phone}. \
                    Note: {note}";
    let mut planted: Vec<String> = Vec::new();
    let mut inputs = Vec::new();
    for i in 0..8 {
        // Events 0 and 1 share an address: its hash must be equal.
        let email = if i < 2 { "alice@example.com".to_string() } else { format!("alice.{i}@example.com") };
        let card = card_number(i);
        let phone = format!("+44 20 7946 0{:03}", 100 + i);
        let note_mail = format!("bob.{i}@mail.example.org");
        let note_card = card_number(100 + i);
        let note_phone = format!("(415) 555-{:04}", 2600 + i);
        let note = format!("reach me at {note_phone} or {note_mail}, spare card {} thanks", spaced(&note_card));
        planted.extend([
            email.clone(),
            card.clone(),
            spaced(&card),
            phone.clone(),
            phone.replace(' ', ""),
            note_mail.clone(),
            note_card.clone(),
            spaced(&note_card),
            note_phone.clone(),
            format!("555-{:04}", 2600 + i),
        ]);
        inputs.push(CloudInput {
            id: format!("pii-{i}"),
            trace: None,
            features: vec![],
            values: vec![
                Value::Str(format!("T{i:04}")),
                Value::Str("grocery".into()),
                Value::Float(10.0 + i as f64),
                Value::Str(email),
                Value::Str(card),
                Value::Str(phone),
                Value::Str(note),
            ],
        });
    }
    // Personal data in a field that has no redaction rule: the last check
    // must stop both, whatever the redaction missed.
    let slipped = [("carol@example.net", 8), (&*spaced(&card_number(200)), 9)].map(|(v, i)| (v.to_string(), i));
    for (value, i) in &slipped {
        planted.push(value.clone());
        inputs.push(CloudInput {
            id: format!("pii-{i}"),
            trace: None,
            features: vec![],
            values: vec![
                Value::Str(format!("T{i:04}")),
                Value::Str(format!("shop of {value} ltd")),
                Value::Float(1.0),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Str("nothing to see".into()),
            ],
        });
    }
    run(async {
        let proxy = FaultProxy::start(&upstream).await;
        let w = openai(
            &proxy.url(),
            &format!(
                "model: det-chat\ntemplate: \"{template}\"\nscore_from: none\nauth: {{ bearer_env: {KEY_ENV} }}\n\
                 redact:\n\
                 - {{ field: email, op: hash, key_env: {HMAC_ENV} }}\n\
                 - {{ field: card, op: drop }}\n\
                 - {{ field: phone, op: mask }}\n\
                 - {{ field: note, op: mask }}\n"
            ),
            &fields,
        );
        let answers = w.infer(inputs.clone()).await;
        assert_eq!(answers.len(), 10);
        // First what matters most: nothing planted reached the wire.
        let seen = proxy.requests();
        let mut leaks = Vec::new();
        for r in &seen {
            for value in &planted {
                if r.contains(value) {
                    leaks.push(format!("request {} carries {value:?}", r.n));
                }
            }
        }
        assert!(leaks.is_empty(), "{} planted values reached the wire:\n{}", leaks.len(), leaks.join("\n"));
        assert_eq!(seen.iter().filter(|r| r.method == "POST").count(), 8, "blocked requests must not be sent");
        let mut echoes = Vec::new();
        for (i, a) in answers.iter().enumerate().take(8) {
            let a = a.as_ref().unwrap_or_else(|e| panic!("event {i}: {e}"));
            let out: serde_json::Value = serde_json::from_str(a.outputs.as_deref().unwrap()).unwrap();
            let reply = out["reply"].as_str().unwrap().to_string();
            for kind in ["[PHONE]", "[EMAIL]", "[PAYMENT_CARD]"] {
                assert!(reply.contains(kind), "event {i}: no {kind} in {reply}");
            }
            echoes.push(reply);
        }
        for (a, (value, i)) in answers[8..].iter().zip(&slipped) {
            let Err(CloudError::Blocked(msg)) = a else { panic!("event {i} ({value}) was not blocked: {a:?}") };
            assert!(!msg.contains(value.as_str()), "the block message repeats the value: {msg}");
        }
        assert!(matches!(&answers[8], Err(CloudError::Blocked(m)) if m.contains("email")));
        assert!(matches!(&answers[9], Err(CloudError::Blocked(m)) if m.contains("payment_card")));

        // The hashed address: 16 hex digits, equal for equal addresses.
        let hash_of = |reply: &str| -> String {
            let at = reply.find("Customer ").unwrap() + "Customer ".len();
            reply[at..at + 16].to_string()
        };
        let hashes: Vec<String> = echoes.iter().map(|e| hash_of(e)).collect();
        assert!(hashes.iter().all(|h| h.chars().all(|c| c.is_ascii_hexdigit())), "{hashes:?}");
        assert_eq!(hashes[0], hashes[1]);
        assert_ne!(hashes[1], hashes[2]);

        let s = w.snapshot();
        assert_eq!((s.requests, s.rows, s.blocked_rows), (8, 8, 2));
    });
}
