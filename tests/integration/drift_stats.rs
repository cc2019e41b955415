//! switchyard's drift statistics against reference values computed by scipy
//! and numpy in `tests/peers/drift_reference.py`, on samples chosen to reach
//! every default test (KS, χ², z, Wasserstein, Jensen–Shannon), both KS
//! p-value regimes, Sturges and per-value binning, and values present in
//! only one window.

use std::io::Write as _;
use std::process::{Command, Stdio};

use rand::{Rng, SeedableRng};
use switchyard_analysis::drift::{compare, StatTest, TestChoice};

use crate::support::{python, repo};

fn normal(rng: &mut rand::rngs::StdRng, n: usize, mean: f64, sd: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            // Box–Muller: enough for test data.
            let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
            (mean + sd * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
        })
        .collect()
}

fn choice(rng: &mut rand::rngs::StdRng, n: usize, values: &[f32], weights: &[f64]) -> Vec<f32> {
    let total: f64 = weights.iter().sum();
    (0..n)
        .map(|_| {
            let mut x = rng.random::<f64>() * total;
            for (v, w) in values.iter().zip(weights) {
                if x < *w {
                    return *v;
                }
                x -= w;
            }
            *values.last().unwrap()
        })
        .collect()
}

#[test]
fn statistics_match_scipy_and_numpy() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let cases: Vec<(&str, Vec<f32>, Vec<f32>)> = vec![
        ("small shifted normal", normal(&mut rng, 300, 0.0, 1.0), normal(&mut rng, 400, 0.3, 1.0)),
        ("small same normal", normal(&mut rng, 500, 5.0, 2.0), normal(&mut rng, 450, 5.0, 2.0)),
        (
            "three values",
            choice(&mut rng, 500, &[1.0, 2.0, 3.0], &[0.5, 0.3, 0.2]),
            choice(&mut rng, 700, &[1.0, 2.0, 3.0], &[0.4, 0.3, 0.3]),
        ),
        (
            "binary small",
            choice(&mut rng, 800, &[0.0, 1.0], &[0.7, 0.3]),
            choice(&mut rng, 600, &[0.0, 1.0], &[0.6, 0.4]),
        ),
        ("large scaled normal", normal(&mut rng, 5000, 0.0, 1.0), normal(&mut rng, 6000, 0.0, 1.5)),
        (
            "binary large",
            choice(&mut rng, 3000, &[0.0, 1.0], &[0.9, 0.1]),
            choice(&mut rng, 4000, &[0.0, 1.0], &[0.8, 0.2]),
        ),
        (
            "ten integers",
            choice(&mut rng, 2000, &(0..10).map(|v| v as f32).collect::<Vec<_>>(), &[1.0; 10]),
            choice(
                &mut rng,
                2500,
                &(0..10).map(|v| v as f32).collect::<Vec<_>>(),
                &[2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5],
            ),
        ),
        (
            "new value in current",
            choice(&mut rng, 1500, &[0.0, 1.0, 2.0], &[0.5, 0.3, 0.2]),
            choice(&mut rng, 1500, &[0.0, 1.0, 2.0, 3.0], &[0.5, 0.3, 0.1, 0.1]),
        ),
        ("asymptotic ks", normal(&mut rng, 12_000, 0.0, 1.0), normal(&mut rng, 15_000, 0.02, 1.0)),
        ("one value", vec![4.0; 300], vec![4.0; 200]),
    ];
    let input = serde_json::json!({
        "cases": cases.iter().map(|(_, r, c)| serde_json::json!({"reference": r, "current": c})).collect::<Vec<_>>()
    });
    let mut child = Command::new(python())
        .arg(repo().join("tests/peers/drift_reference.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run .venv/bin/python (make setup)");
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "drift_reference.py failed");
    let want: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();

    for ((name, r, c), w) in cases.iter().zip(&want) {
        let got = compare(r, c, TestChoice::default()).unwrap();
        let close = |what: &str, g: f64, w: &serde_json::Value, tol: f64| {
            let w = w.as_f64().unwrap_or_else(|| panic!("{name}: no reference {what}"));
            assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{name}: {what} is {g}, scipy/numpy say {w}");
        };
        close("psi", got.psi, &w["psi"], 1e-9);
        close("jensen_shannon", got.jensen_shannon, &w["jensen_shannon"], 1e-9);
        close("ks_statistic", got.ks_statistic, &w["ks_statistic"], 1e-12);
        let ks_tol = if w["ks_exact"].as_bool().unwrap() { 1e-9 } else { 5e-3 };
        close("ks_p_value", got.ks_p_value, &w["ks_p_value"], ks_tol);
        close("wasserstein_norm", got.wasserstein_norm, &w["wasserstein_norm"], 1e-9);
        match (got.chi2_p_value, w["chi2_p_value"].as_f64()) {
            (Some(g), Some(_)) => close("chi2_p_value", g, &w["chi2_p_value"], 1e-9),
            (None, None) => {}
            other => panic!("{name}: chi2 presence differs: {other:?}"),
        }
        match (got.z_p_value, w["z_p_value"].as_f64()) {
            (Some(g), Some(_)) => close("z_p_value", g, &w["z_p_value"], 1e-9),
            (None, None) => {}
            other => panic!("{name}: z presence differs: {other:?}"),
        }
        assert_eq!(got.test.as_str(), w["test"].as_str().unwrap(), "{name}: default test");
    }
    // The samples reach every default test.
    let tests: std::collections::BTreeSet<&str> = want.iter().map(|w| w["test"].as_str().unwrap()).collect();
    for t in [StatTest::Ks, StatTest::Chisquare, StatTest::Z, StatTest::Wasserstein, StatTest::Jensenshannon] {
        assert!(tests.contains(t.as_str()), "no case for {}", t.as_str());
    }
}
