//! Two-sample drift statistics with the definitions of scipy and Evidently.
//!
//! [`compare`] takes a column's reference and current values and computes
//! every statistic that applies (PSI, Kolmogorov–Smirnov statistic and
//! p-value, Jensen–Shannon distance, normalised Wasserstein distance,
//! χ² and z-test p-values for columns with few values), then picks the test
//! that decides drift the way Evidently does by default:
//!
//! | reference rows | distinct values (both windows) | test | drift when |
//! |---|---|---|---|
//! | ≤ 1000 | > 5 | KS p-value | p ≤ 0.05 |
//! | ≤ 1000 | 3–5 | χ² p-value | p < 0.05 |
//! | ≤ 1000 | ≤ 2 | z-test p-value | p < 0.05 |
//! | > 1000 | > 5 | Wasserstein / std(reference) | ≥ 0.1 |
//! | > 1000 | ≤ 5 | Jensen–Shannon distance (base 2) | ≥ 0.1 |
//!
//! PSI and Jensen–Shannon bin a numerical column with more than 20 distinct
//! reference values into Sturges bins over both windows (numpy's
//! `histogram_bin_edges(..., "sturges")`), and count values otherwise; PSI
//! replaces empty bins with a small share as Evidently does.
//!
//! Above [`EXACT_MAX_VALUES`] values in the two windows together, the KS
//! statistic and the Wasserstein distance come from the value counts when the
//! reference has at most 20 distinct values (exact), else from a 65,536-bin
//! histogram instead of sorted values (an error of at most one bin width, i.e.
//! range/65,536), and [`ColumnStats::exact`] says so. As in scipy, the KS
//! p-value is exact up to 10,000 values per side and asymptotic above.

use std::collections::HashMap;

use serde::Serialize;
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

/// Values in both windows together above which KS and Wasserstein are
/// computed from a fine histogram rather than by sorting.
pub const EXACT_MAX_VALUES: usize = 2_000_000;
/// Bins of that histogram.
const FINE_BINS: usize = 1 << 16;
/// scipy's `ks_2samp(method="auto")` is exact up to this many values per side.
const KS_EXACT_MAX_N: usize = 10_000;

/// A statistical test that can decide drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatTest {
    /// Two-sample Kolmogorov–Smirnov p-value.
    Ks,
    /// χ² goodness of fit of current counts to reference shares, p-value.
    Chisquare,
    /// Two-proportion z-test p-value (two values).
    Z,
    /// Wasserstein-1 distance divided by the reference's standard deviation.
    Wasserstein,
    /// Jensen–Shannon distance, base 2 (0 = same, 1 = disjoint).
    Jensenshannon,
    /// Population stability index.
    Psi,
}

impl StatTest {
    /// Name used in tables and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            StatTest::Ks => "ks",
            StatTest::Chisquare => "chisquare",
            StatTest::Z => "z",
            StatTest::Wasserstein => "wasserstein",
            StatTest::Jensenshannon => "jensenshannon",
            StatTest::Psi => "psi",
        }
    }

    /// Evidently's default threshold.
    pub fn default_threshold(self) -> f64 {
        match self {
            StatTest::Ks | StatTest::Chisquare | StatTest::Z => 0.05,
            StatTest::Wasserstein | StatTest::Jensenshannon | StatTest::Psi => 0.1,
        }
    }

    /// True when the score is a p-value (small means drift).
    pub fn is_p_value(self) -> bool {
        matches!(self, StatTest::Ks | StatTest::Chisquare | StatTest::Z)
    }

    /// Whether `score` means drift at `threshold`, with Evidently's
    /// comparisons (KS: `p ≤ t`, χ²/z: `p < t`, distances: `d ≥ t`).
    pub fn drifted(self, score: f64, threshold: f64) -> bool {
        match self {
            StatTest::Ks => score <= threshold,
            StatTest::Chisquare | StatTest::Z => score < threshold,
            _ => score >= threshold,
        }
    }
}

/// Shares of a column's values per bin (numerical) or per value (few
/// distinct values), reference and current: what the report draws.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Shares {
    /// Bin edges (`n + 1`) for binned columns; empty for counted values.
    pub edges: Vec<f64>,
    /// The counted values (`n`) for columns with few distinct values.
    pub values: Vec<f64>,
    /// Share of reference rows per bin/value.
    pub reference: Vec<f64>,
    /// Share of current rows per bin/value.
    pub current: Vec<f64>,
}

/// Every statistic of one column, and the verdict of the default test.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnStats {
    /// The test that decides drift.
    pub test: StatTest,
    /// Its score (a p-value or a distance).
    pub score: f64,
    /// Its threshold.
    pub threshold: f64,
    /// The verdict.
    pub drifted: bool,
    /// Population stability index.
    pub psi: f64,
    /// Jensen–Shannon distance, base 2.
    pub jensen_shannon: f64,
    /// KS statistic (largest CDF difference).
    pub ks_statistic: f64,
    /// KS two-sided p-value.
    pub ks_p_value: f64,
    /// Wasserstein-1 distance / std(reference) (floored at 0.001 like Evidently).
    pub wasserstein_norm: f64,
    /// χ² p-value, for columns with at most 5 distinct values.
    pub chi2_p_value: Option<f64>,
    /// z-test p-value, for columns with at most 2 distinct values.
    pub z_p_value: Option<f64>,
    /// Distinct values in both windows, counted up to 21.
    pub distinct: usize,
    /// False when KS and Wasserstein come from the fine histogram.
    pub exact: bool,
    /// Reference values (NaN dropped).
    pub reference_rows: usize,
    /// Current values (NaN dropped).
    pub current_rows: usize,
    /// Mean of the reference values.
    pub reference_mean: f64,
    /// Mean of the current values.
    pub current_mean: f64,
    /// Shares for the picture.
    pub shares: Shares,
}

/// Test and threshold overrides (manifest `drift.tests`); `None` keeps
/// Evidently's defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestChoice {
    /// Use this test instead of the default one.
    pub test: Option<StatTest>,
    /// Use this threshold instead of the test's default.
    pub threshold: Option<f64>,
}

/// Compares one column's windows. `None` when either window has no values.
pub fn compare(reference: &[f32], current: &[f32], choice: TestChoice) -> Option<ColumnStats> {
    compare_chunks(&[reference], &[current], choice)
}

/// The values of a column held in chunks (as read, batch by batch),
/// without NaN: copying millions of values into one buffer costs more than
/// the statistics, so they are read where they lie.
#[derive(Clone, Copy)]
pub struct Chunks<'a> {
    parts: &'a [&'a [f32]],
    len: usize,
    min: f64,
    max: f64,
}

impl<'a> Chunks<'a> {
    /// The non-NaN values of `parts`.
    pub fn new(parts: &'a [&'a [f32]]) -> Self {
        let (mut len, mut min, mut max) = (0, f32::INFINITY, f32::NEG_INFINITY);
        for p in parts {
            for &v in *p {
                if !v.is_nan() {
                    len += 1;
                    min = min.min(v);
                    max = max.max(v);
                }
            }
        }
        Self { parts, len, min: f64::from(min), max: f64::from(max) }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Calls `f` with each value, as f64; stops when `f` says so.
    fn each(&self, mut f: impl FnMut(f64) -> bool) {
        for p in self.parts {
            for &v in *p {
                if !v.is_nan() && !f(f64::from(v)) {
                    return;
                }
            }
        }
    }

    fn to_vec(self) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.len);
        self.each(|v| {
            out.push(v);
            true
        });
        out
    }
}

/// [`compare`] over values held in chunks.
pub fn compare_chunks(reference: &[&[f32]], current: &[&[f32]], choice: TestChoice) -> Option<ColumnStats> {
    let (r, c) = (Chunks::new(reference), Chunks::new(current));
    if r.len() == 0 || c.len() == 0 {
        return None;
    }
    let (ref_distinct, distinct) = count_distinct(r, c, 21);
    let default = if r.len() <= 1000 {
        match distinct {
            d if d > 5 => StatTest::Ks,
            d if d > 2 => StatTest::Chisquare,
            _ => StatTest::Z,
        }
    } else if distinct > 5 {
        StatTest::Wasserstein
    } else {
        StatTest::Jensenshannon
    };
    let test = choice.test.unwrap_or(default);
    let threshold = choice.threshold.unwrap_or(test.default_threshold());

    let binned = ref_distinct > 20;
    let (shares, counts_r, counts_c) = if binned { sturges(r, c) } else { counted(r, c) };
    let (nr, nc) = (r.len() as f64, c.len() as f64);
    let pr: Vec<f64> = counts_r.iter().map(|&k| k as f64 / nr).collect();
    let pc: Vec<f64> = counts_c.iter().map(|&k| k as f64 / nc).collect();
    let psi = psi(&pr, &pc);
    let jensen_shannon = jensen_shannon(&pr, &pc);
    let (chi2_p_value, z_p_value) = if binned || distinct > 5 {
        (None, None)
    } else {
        let chi = chisquare(&counts_r, &counts_c);
        let z = if distinct <= 2 { Some(z_test(&shares.values, &counts_r, &counts_c)) } else { None };
        (Some(chi), z)
    };

    let small = r.len() + c.len() <= EXACT_MAX_VALUES;
    // Large windows: from the value counts when there are few values (exact,
    // no further pass), else from the fine histogram, summing on the way.
    let (ks_statistic, wasserstein, exact, means) = if small {
        let (mut rs, mut cs) = (r.to_vec(), c.to_vec());
        rs.sort_unstable_by(f64::total_cmp);
        cs.sort_unstable_by(f64::total_cmp);
        (ks_statistic(&rs, &cs), wasserstein_sorted(&rs, &cs), true, None)
    } else if !binned {
        let (d, w) = counted_ks_wasserstein(&shares.values, &counts_r, &counts_c);
        let mean = |k: &[u64], n: f64| shares.values.iter().zip(k).map(|(v, &k)| v * k as f64).sum::<f64>() / n;
        (d, w, true, Some((mean(&counts_r, nr), mean(&counts_c, nc))))
    } else {
        let (d, w, sum_r, sum_c) = fine_histogram_ks_wasserstein(r, c);
        (d, w, false, Some((sum_r / nr, sum_c / nc)))
    };
    let ks_p_value = ks_p_value(ks_statistic, r.len(), c.len());
    let (mean_r, std_r) = match means {
        Some((m, _)) => (m, std_about(r, m)),
        None => mean_std(r),
    };
    let wasserstein_norm = wasserstein / std_r.max(0.001);

    let score = match test {
        StatTest::Ks => ks_p_value,
        StatTest::Chisquare => chi2_p_value.unwrap_or_else(|| chisquare(&counts_r, &counts_c)),
        StatTest::Z => z_p_value.unwrap_or(f64::NAN),
        StatTest::Wasserstein => wasserstein_norm,
        StatTest::Jensenshannon => jensen_shannon,
        StatTest::Psi => psi,
    };
    Some(ColumnStats {
        test,
        score,
        threshold,
        drifted: test.drifted(score, threshold),
        psi,
        jensen_shannon,
        ks_statistic,
        ks_p_value,
        wasserstein_norm,
        chi2_p_value,
        z_p_value,
        distinct,
        exact,
        reference_rows: r.len(),
        current_rows: c.len(),
        reference_mean: mean_r,
        current_mean: means.map_or_else(|| mean(c), |m| m.1),
        shares: Shares { reference: pr, current: pc, ..shares },
    })
}

/// Distinct values of `a`, and of `a` and `b` together, counting up to `cap`.
fn count_distinct(a: Chunks, b: Chunks, cap: usize) -> (usize, usize) {
    fn add(seen: &mut Vec<u64>, vals: Chunks, cap: usize) {
        if seen.len() >= cap {
            return;
        }
        vals.each(|v| {
            let bits = normalise_zero(v).to_bits();
            if !seen.contains(&bits) {
                seen.push(bits);
            }
            seen.len() < cap
        });
    }
    let mut seen: Vec<u64> = Vec::with_capacity(cap);
    add(&mut seen, a, cap);
    let in_a = seen.len();
    add(&mut seen, b, cap);
    (in_a, seen.len())
}

fn normalise_zero(v: f64) -> f64 {
    if v == 0.0 {
        0.0
    } else {
        v
    }
}

fn mean(v: Chunks) -> f64 {
    let mut sum = 0.0;
    v.each(|x| {
        sum += x;
        true
    });
    sum / v.len() as f64
}

/// Population standard deviation of `v` about its `mean`.
fn std_about(v: Chunks, mean: f64) -> f64 {
    let mut ss = 0.0;
    v.each(|x| {
        ss += (x - mean) * (x - mean);
        true
    });
    (ss / v.len() as f64).sqrt()
}

fn mean_std(v: Chunks) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = mean(v);
    let mut ss = 0.0;
    v.each(|x| {
        ss += (x - mean) * (x - mean);
        true
    });
    let var = ss / n;
    (mean, var.sqrt())
}

/// numpy's Sturges edges over both windows and the counts per bin.
fn sturges(r: Chunks, c: Chunks) -> (Shares, Vec<u64>, Vec<u64>) {
    let (lo, hi) = min_max(r, c);
    let n = (r.len() + c.len()) as f64;
    let (first, last, bins) = if lo == hi {
        (lo - 0.5, hi + 0.5, 1)
    } else {
        let width = (hi - lo) / (n.log2() + 1.0);
        (lo, hi, (((hi - lo) / width).ceil() as usize).max(1))
    };
    let step = (last - first) / bins as f64;
    let mut edges: Vec<f64> = (0..=bins).map(|i| i as f64 * step + first).collect();
    edges[bins] = last;
    let count = |vals: Chunks| {
        let mut k = vec![0u64; bins];
        vals.each(|v| {
            k[numpy_bin(v, first, last, &edges)] += 1;
            true
        });
        k
    };
    let (kr, kc) = (count(r), count(c));
    (Shares { edges, ..Default::default() }, kr, kc)
}

/// The bin numpy's `histogram` puts `v` in (uniform bins, `v` inside).
fn numpy_bin(v: f64, first: f64, last: f64, edges: &[f64]) -> usize {
    let bins = edges.len() - 1;
    let mut i = (((v - first) / (last - first)) * bins as f64) as usize;
    if i >= bins {
        i = bins - 1;
    }
    if v < edges[i] {
        i = i.saturating_sub(1);
    } else if i != bins - 1 && v >= edges[i + 1] {
        i += 1;
    }
    i
}

/// Counts per distinct value of both windows, values in ascending order.
fn counted(r: Chunks, c: Chunks) -> (Shares, Vec<u64>, Vec<u64>) {
    // Few distinct values (the reference has at most 20): a short list
    // searched in order beats hashing; a map takes over past 64.
    let mut few: Vec<(u64, u64, u64)> = Vec::new();
    let mut map: HashMap<u64, (u64, u64)> = HashMap::new();
    for (vals, side) in [(r, 0), (c, 1)] {
        vals.each(|v| {
            let bits = normalise_zero(v).to_bits();
            let (x, y) = (u64::from(side == 0), u64::from(side == 1));
            if let Some(e) = few.iter_mut().find(|e| e.0 == bits) {
                (e.1, e.2) = (e.1 + x, e.2 + y);
            } else if few.len() < 64 {
                few.push((bits, x, y));
            } else {
                let e = map.entry(bits).or_default();
                (e.0, e.1) = (e.0 + x, e.1 + y);
            }
            true
        });
    }
    let mut keys: Vec<(f64, u64, u64)> = few
        .into_iter()
        .map(|(b, x, y)| (f64::from_bits(b), x, y))
        .chain(map.into_iter().map(|(b, (x, y))| (f64::from_bits(b), x, y)))
        .collect();
    keys.sort_by(|a, b| a.0.total_cmp(&b.0));
    let values = keys.iter().map(|k| k.0).collect();
    let kr = keys.iter().map(|k| k.1).collect();
    let kc = keys.iter().map(|k| k.2).collect();
    (Shares { values, ..Default::default() }, kr, kc)
}

/// Evidently's replacement of empty shares before PSI.
fn fill_zeros(p: &[f64]) -> Vec<f64> {
    let min = p.iter().copied().filter(|&x| x != 0.0).fold(f64::INFINITY, f64::min);
    let fill = if min <= 0.0001 { min / 1e6 } else { 0.0001 };
    p.iter().map(|&x| if x == 0.0 { fill } else { x }).collect()
}

/// Population stability index: Σ (r − c)·ln(r / c).
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    let (r, c) = (fill_zeros(reference), fill_zeros(current));
    r.iter().zip(&c).map(|(&a, &b)| (a - b) * (a / b).ln()).sum()
}

/// Jensen–Shannon distance (base 2) of two share vectors, as
/// `scipy.spatial.distance.jensenshannon(p, q, base=2)`.
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
    let rel_entr = |x: f64, y: f64| if x == 0.0 { 0.0 } else { x * (x / y).ln() };
    let mut js = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        let (a, b) = (a / sp, b / sq);
        let m = (a + b) / 2.0;
        js += rel_entr(a, m) + rel_entr(b, m);
    }
    (js / 2.0 / std::f64::consts::LN_2).max(0.0).sqrt()
}

/// χ² p-value of current counts against reference shares scaled to the
/// current size (`scipy.stats.chisquare(f_obs, f_exp)`).
fn chisquare(counts_r: &[u64], counts_c: &[u64]) -> f64 {
    let nr: u64 = counts_r.iter().sum();
    let nc: u64 = counts_c.iter().sum();
    let k = nc as f64 / nr as f64;
    let mut stat = 0.0;
    for (&a, &b) in counts_r.iter().zip(counts_c) {
        let exp = a as f64 * k;
        let d = b as f64 - exp;
        stat += d * d / exp;
    }
    let df = counts_r.len().saturating_sub(1);
    if df == 0 {
        return 1.0;
    }
    if !stat.is_finite() {
        return 0.0;
    }
    ChiSquared::new(df as f64).map(|d| d.sf(stat)).unwrap_or(f64::NAN)
}

/// Two-proportion z-test p-value: the share of values other than the
/// smallest, reference vs current (Evidently's `z` test).
fn z_test(values: &[f64], counts_r: &[u64], counts_c: &[u64]) -> f64 {
    if values.len() == 1 {
        return 1.0;
    }
    let (nr, nc) = (counts_r.iter().sum::<u64>() as f64, counts_c.iter().sum::<u64>() as f64);
    let p1 = (nr - counts_r[0] as f64) / nr;
    let p2 = (nc - counts_c[0] as f64) / nc;
    let p = (p1 * nr + p2 * nc) / (nr + nc);
    let z = (p1 - p2) / (p * (1.0 - p) * (1.0 / nr + 1.0 / nc)).sqrt();
    let normal = Normal::new(0.0, 1.0).expect("standard normal");
    2.0 * (1.0 - normal.cdf(z.abs()))
}

/// Largest difference of the two empirical CDFs (sorted inputs).
pub fn ks_statistic(r: &[f64], c: &[f64]) -> f64 {
    let (nr, nc) = (r.len() as f64, c.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < r.len() && j < c.len() {
        let x = r[i].min(c[j]);
        while i < r.len() && r[i] <= x {
            i += 1;
        }
        while j < c.len() && c[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / nr - j as f64 / nc).abs());
    }
    d
}

/// Two-sided KS p-value for samples of `n1` and `n2` values: exact (lattice
/// paths, as scipy's `method="exact"`) up to 10,000 values per side, else
/// the Kolmogorov distribution with Stephens' small-sample correction.
pub fn ks_p_value(d: f64, n1: usize, n2: usize) -> f64 {
    if d <= 0.0 {
        return 1.0;
    }
    if n1.max(n2) <= KS_EXACT_MAX_N {
        return ks_exact_p_value(d, n1, n2);
    }
    let (m, n) = (n1 as f64, n2 as f64);
    let en = (m * n / (m + n)).round().sqrt();
    kolmogorov_sf((en + 0.12 + 0.11 / en) * d)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// P(D ≥ d) by counting monotone lattice paths from (0,0) to (n1,n2) that
/// stay strictly inside |i/n1 − j/n2| < d, as probabilities so nothing
/// overflows. Only the band of allowed cells of each row is visited, so a
/// small `d` (the common, no-drift case) costs O(n1 · d · n2).
fn ks_exact_p_value(d: f64, n1: usize, n2: usize) -> f64 {
    let g = gcd(n1, n2);
    let lcm = (n1 / g) as f64 * n2 as f64;
    // D takes values h / lcm; round like scipy so float noise in `d` is harmless.
    let h = (d * lcm).round() as i128;
    if h == 0 {
        return 1.0;
    }
    // Cell (i, j) is inside when |i·a − j·b| < h.
    let (a, b) = ((n2 / g) as i128, (n1 / g) as i128);
    let band = |i: usize| -> (usize, usize) {
        let x = i as i128 * a;
        let lo = (x - h).div_euclid(b) + 1;
        let hi = (x + h + b - 1).div_euclid(b) - 1;
        (lo.clamp(0, n2 as i128) as usize, hi.clamp(-1, n2 as i128).max(0) as usize)
    };
    let mut v = vec![0f64; n2 + 1];
    let (_, hi0) = band(0);
    for x in v.iter_mut().take(hi0 + 1) {
        *x = 1.0;
    }
    let mut prev_lo = 0;
    for i in 1..=n1 {
        let (lo, hi) = band(i);
        for x in &mut v[prev_lo..lo.min(n2 + 1)] {
            *x = 0.0;
        }
        prev_lo = lo;
        if lo > hi {
            continue;
        }
        // The cell left of the band is outside it: no paths.
        let mut left = 0.0;
        for (j, x) in v.iter_mut().enumerate().take(hi + 1).skip(lo) {
            *x = (i as f64 * *x + j as f64 * left) / (i + j) as f64;
            left = *x;
        }
    }
    (1.0 - v[n2]).clamp(0.0, 1.0)
}

/// Survival function of the Kolmogorov distribution.
fn kolmogorov_sf(x: f64) -> f64 {
    if x < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let term = (-2.0 * (k * k) as f64 * x * x).exp();
        sum += if k % 2 == 1 { term } else { -term };
        if term < 1e-18 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Wasserstein-1 distance of two sorted samples (`scipy.stats.wasserstein_distance`).
pub fn wasserstein_sorted(r: &[f64], c: &[f64]) -> f64 {
    let (nr, nc) = (r.len() as f64, c.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut prev = r[0].min(c[0]);
    let mut total = 0.0;
    while i < r.len() || j < c.len() {
        let x = match (r.get(i), c.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        total += (i as f64 / nr - j as f64 / nc).abs() * (x - prev);
        while i < r.len() && r[i] <= x {
            i += 1;
        }
        while j < c.len() && c[j] <= x {
            j += 1;
        }
        prev = x;
    }
    total
}

/// KS statistic and Wasserstein distance from CDFs on a 65,536-bin grid.
/// Smallest and largest value of both.
fn min_max(r: Chunks, c: Chunks) -> (f64, f64) {
    (r.min.min(c.min), r.max.max(c.max))
}

/// KS statistic, Wasserstein distance and the sums of both windows.
fn fine_histogram_ks_wasserstein(r: Chunks, c: Chunks) -> (f64, f64, f64, f64) {
    let (lo, hi) = min_max(r, c);
    if lo == hi {
        return (0.0, 0.0, lo * r.len() as f64, lo * c.len() as f64);
    }
    let scale = FINE_BINS as f64 / (hi - lo);
    let hist = |vals: Chunks| {
        let mut h = vec![0u32; FINE_BINS];
        let mut sum = 0.0;
        vals.each(|v| {
            h[(((v - lo) * scale) as usize).min(FINE_BINS - 1)] += 1;
            sum += v;
            true
        });
        (h, sum)
    };
    let ((hr, sum_r), (hc, sum_c)) = (hist(r), hist(c));
    let (nr, nc) = (r.len() as f64, c.len() as f64);
    let width = (hi - lo) / FINE_BINS as f64;
    let (mut fr, mut fc, mut d, mut w) = (0f64, 0f64, 0f64, 0f64);
    for k in 0..FINE_BINS {
        fr += hr[k] as f64;
        fc += hc[k] as f64;
        let diff = (fr / nr - fc / nc).abs();
        d = d.max(diff);
        if k + 1 < FINE_BINS {
            w += diff * width;
        }
    }
    (d, w, sum_r, sum_c)
}

/// KS statistic and Wasserstein distance of two windows given as counts per
/// distinct value (`values` ascending): exact, from the step CDFs.
fn counted_ks_wasserstein(values: &[f64], counts_r: &[u64], counts_c: &[u64]) -> (f64, f64) {
    let (nr, nc) = (counts_r.iter().sum::<u64>() as f64, counts_c.iter().sum::<u64>() as f64);
    let (mut fr, mut fc, mut d, mut w) = (0f64, 0f64, 0f64, 0f64);
    for k in 0..values.len() {
        fr += counts_r[k] as f64;
        fc += counts_c[k] as f64;
        let diff = (fr / nr - fc / nc).abs();
        d = d.max(diff);
        if k + 1 < values.len() {
            w += diff * (values[k + 1] - values[k]);
        }
    }
    (d, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_windows_do_not_drift_under_any_test() {
        let v: Vec<f32> = (0..5000).map(|i| ((i * 7919) % 1000) as f32 / 10.0).collect();
        let s = compare(&v, &v, TestChoice::default()).unwrap();
        assert_eq!(s.test, StatTest::Wasserstein);
        assert!(!s.drifted);
        assert_eq!((s.ks_statistic, s.wasserstein_norm, s.psi, s.jensen_shannon), (0.0, 0.0, 0.0, 0.0));
        assert_eq!(s.ks_p_value, 1.0);
    }

    #[test]
    fn default_test_follows_size_and_distinct_values() {
        let small: Vec<f32> = (0..500).map(|i| (i % 50) as f32).collect();
        let big: Vec<f32> = (0..5000).map(|i| (i % 50) as f32).collect();
        let three: Vec<f32> = (0..500).map(|i| (i % 3) as f32).collect();
        let two: Vec<f32> = (0..500).map(|i| (i % 2) as f32).collect();
        let two_big: Vec<f32> = (0..5000).map(|i| (i % 2) as f32).collect();
        let t = |r: &[f32]| compare(r, r, TestChoice::default()).unwrap().test;
        assert_eq!(t(&small), StatTest::Ks);
        assert_eq!(t(&big), StatTest::Wasserstein);
        assert_eq!(t(&three), StatTest::Chisquare);
        assert_eq!(t(&two), StatTest::Z);
        assert_eq!(t(&two_big), StatTest::Jensenshannon);
    }

    #[test]
    fn fine_histogram_is_close_to_the_exact_values() {
        let r: Vec<f32> = (0..20_000).map(|i| ((i * 7919) % 20_000) as f32 / 20_000.0).collect();
        let c: Vec<f32> = r.iter().map(|x| x * x).collect();
        let (rp, cp) = ([r.as_slice()], [c.as_slice()]);
        let (r, c) = (Chunks::new(&rp), Chunks::new(&cp));
        let (mut rs, mut cs) = (r.to_vec(), c.to_vec());
        rs.sort_by(f64::total_cmp);
        cs.sort_by(f64::total_cmp);
        let (d, w, _, _) = fine_histogram_ks_wasserstein(r, c);
        let width = 1.0 / FINE_BINS as f64;
        assert!((d - ks_statistic(&rs, &cs)).abs() <= 2.0 * 1.0 / 20_000.0 + width, "{d}");
        assert!((w - wasserstein_sorted(&rs, &cs)).abs() <= 2.0 * width, "{w}");
    }

    #[test]
    fn large_windows_of_few_values_are_counted_exactly() {
        // 3M values in all: beyond the sorting limit, but only two values.
        let r: Vec<f32> = (0..1_500_000).map(|i| f32::from(i % 10 < 3)).collect();
        let c: Vec<f32> = (0..1_500_000).map(|i| f32::from(i % 10 < 6)).collect();
        let s = compare(&r, &c, TestChoice::default()).unwrap();
        assert!(s.exact);
        assert_eq!(s.test, StatTest::Jensenshannon);
        // CDF at 0: 0.7 vs 0.4; the distance between 0 and 1 is 1.
        assert!((s.ks_statistic - 0.3).abs() < 1e-12, "{}", s.ks_statistic);
        let std_r = (0.3f64 * 0.7).sqrt();
        assert!((s.wasserstein_norm - 0.3 / std_r).abs() < 1e-9, "{}", s.wasserstein_norm);
        assert!((s.reference_mean - 0.3).abs() < 1e-12 && (s.current_mean - 0.6).abs() < 1e-12);
    }

    #[test]
    fn ks_exact_p_value_of_tiny_samples_matches_the_path_count() {
        // n1 = n2 = 2, D = 1: only the 2 of C(4,2) = 6 paths that take all of
        // one sample first reach |i/2 − j/2| = 1, so P(D ≥ 1) = 2/6.
        assert!((ks_exact_p_value(1.0, 2, 2) - 1.0 / 3.0).abs() < 1e-12);
    }
}
