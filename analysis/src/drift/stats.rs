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
//!
//! A window arrives as [`Chunk`]s, the runs it was read in: a dictionary run
//! is counted per code and then per value, with the same results as its
//! values one by one.

use std::collections::HashMap;

pub use super::chunk::Chunk;
use super::chunk::{code_counts, key, CODED_MAX};

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
    compare_chunks(&[Chunk::Plain(reference)], &[Chunk::Plain(current)], choice)
}

/// What one pass over a column's non-NaN values tells.
#[derive(Clone, Copy, Debug)]
struct Summary {
    len: usize,
    min: f64,
    max: f64,
    mean: f64,
    /// Population standard deviation.
    std: f64,
}

/// Count, range, mean and deviation of the non-NaN values of `parts` (the
/// column in chunks as read: copying millions of values into one buffer
/// costs more than the statistics, so they are read where they lie).
fn summarise(parts: &[Chunk]) -> Summary {
    // Sums about the first value, so a column far from zero keeps its
    // precision in one pass.
    let shift = parts
        .iter()
        .find_map(|p| match p {
            Chunk::Plain(p) => p.iter().find(|v| !v.is_nan()),
            Chunk::Coded { dict, .. } => dict.iter().find(|v| !v.is_nan()),
        })
        .map_or(0.0, |&v| f64::from(v));
    let (mut len, mut min, mut max, mut sum, mut sum_sq) = (0, f32::INFINITY, f32::NEG_INFINITY, 0.0, 0.0);
    for p in parts {
        let p = match p {
            Chunk::Plain(p) => p,
            Chunk::Coded { dict, codes } => {
                for (&v, n) in dict.iter().zip(code_counts(codes)) {
                    if n > 0 && !v.is_nan() {
                        len += n as usize;
                        min = min.min(v);
                        max = max.max(v);
                        let d = f64::from(v) - shift;
                        sum += d * n as f64;
                        sum_sq += d * d * n as f64;
                    }
                }
                continue;
            }
        };
        if p.iter().any(|v| v.is_nan()) {
            for &v in p.iter().filter(|v| !v.is_nan()) {
                len += 1;
                min = min.min(v);
                max = max.max(v);
                let d = f64::from(v) - shift;
                sum += d;
                sum_sq += d * d;
            }
            continue;
        }
        // Eight lanes the compiler turns into vector instructions.
        const L: usize = 8;
        let (mut mn, mut mx, mut s, mut ss) = ([f32::INFINITY; L], [f32::NEG_INFINITY; L], [0f64; L], [0f64; L]);
        let lanes = p.chunks_exact(L);
        let rest = lanes.remainder();
        for c in lanes {
            for k in 0..L {
                let v = c[k];
                mn[k] = if v < mn[k] { v } else { mn[k] };
                mx[k] = if v > mx[k] { v } else { mx[k] };
                let d = f64::from(v) - shift;
                s[k] += d;
                ss[k] += d * d;
            }
        }
        for &v in rest {
            min = min.min(v);
            max = max.max(v);
            let d = f64::from(v) - shift;
            sum += d;
            sum_sq += d * d;
        }
        len += p.len();
        min = mn.iter().fold(min, |a, &b| a.min(b));
        max = mx.iter().fold(max, |a, &b| a.max(b));
        sum += s.iter().sum::<f64>();
        sum_sq += ss.iter().sum::<f64>();
    }
    let n = len.max(1) as f64;
    let mean_d = sum / n;
    let std = (sum_sq / n - mean_d * mean_d).max(0.0).sqrt();
    Summary { len, min: f64::from(min), max: f64::from(max), mean: shift + mean_d, std }
}

/// The same from counts per value (`values` ascending), exactly.
fn summary_of_counts(values: &[f64], counts: &[u64]) -> Summary {
    let n: u64 = counts.iter().sum();
    let nf = n.max(1) as f64;
    let mean = values.iter().zip(counts).map(|(v, &k)| v * k as f64).sum::<f64>() / nf;
    let var = values.iter().zip(counts).map(|(v, &k)| k as f64 * (v - mean) * (v - mean)).sum::<f64>() / nf;
    let present = || values.iter().zip(counts).filter(|(_, &k)| k > 0).map(|(v, _)| *v);
    Summary {
        len: n as usize,
        min: present().next().unwrap_or(f64::NAN),
        max: present().next_back().unwrap_or(f64::NAN),
        mean,
        std: var.sqrt(),
    }
}

/// How both windows of a column are binned: the same grid for the whole
/// windows and for every time bucket of the current one.
enum Grid {
    /// The reference has at most 20 distinct values: count each value of
    /// either window (`values` ascending).
    Values { values: Vec<f64>, index: ValueIndex },
    /// numpy's Sturges bins over both windows, and for large windows the
    /// fine grid the KS statistic and Wasserstein distance are read from.
    Bins { edges: Vec<f64>, fine: Option<Fine> },
}

/// The fine grid: [`FINE_BINS`] equal bins from `lo`.
struct Fine {
    lo: f64,
    /// Bins per unit.
    scale: f64,
    /// The Sturges bin every value of a fine bin falls in, or [`NEAR_EDGE`]
    /// for the fine bins next to a Sturges edge, whose values are binned
    /// one by one. The Sturges counts are then sums of fine counts.
    sturges_of: Vec<u16>,
}

const NEAR_EDGE: u16 = u16::MAX;

/// Position of a value among a grid's values.
enum ValueIndex {
    /// A short list searched in order (faster than hashing).
    Few(Vec<u32>),
    /// A map past 64 values.
    Map(HashMap<u32, usize>),
}

impl ValueIndex {
    fn new(keys: &[u32]) -> Self {
        if keys.len() <= 64 {
            ValueIndex::Few(keys.to_vec())
        } else {
            ValueIndex::Map(keys.iter().enumerate().map(|(i, &b)| (b, i)).collect())
        }
    }

    #[inline]
    fn get(&self, v: f32) -> Option<usize> {
        let k = key(v);
        match self {
            ValueIndex::Few(b) => b.iter().position(|&x| x == k),
            ValueIndex::Map(m) => m.get(&k).copied(),
        }
    }
}

/// One window (or time bucket) counted on a [`Grid`].
#[derive(Default)]
struct Tally {
    /// Values counted.
    n: usize,
    /// Per value or Sturges bin.
    counts: Vec<u64>,
    /// Per fine bin (large binned windows).
    fine: Vec<u32>,
    /// The values, sorted (small binned windows: exact KS and Wasserstein).
    sorted: Vec<f64>,
}

impl Tally {
    fn empty(grid: &Grid) -> Self {
        match grid {
            Grid::Values { values, .. } => Tally { counts: vec![0; values.len()], ..Default::default() },
            Grid::Bins { edges, fine } => Tally {
                counts: vec![0; edges.len() - 1],
                fine: if fine.is_some() { vec![0; FINE_BINS] } else { Vec::new() },
                ..Default::default()
            },
        }
    }

    /// The non-NaN values of `parts` counted on `grid`.
    fn of(grid: &Grid, parts: &[Chunk]) -> Self {
        let mut t = Tally::empty(grid);
        for p in parts {
            match p {
                Chunk::Plain(p) => {
                    let values = p.iter().filter(|v| !v.is_nan());
                    if let Grid::Bins { edges, fine: Some(fine) } = grid {
                        // The common large case, without a match per value.
                        for &v in values {
                            t.add_fine(edges, fine, v, 1);
                        }
                    } else {
                        for &v in values {
                            t.add(grid, v, 1);
                        }
                    }
                }
                Chunk::Coded { dict, codes } => t.add_coded(grid, dict, &code_counts(codes)),
            }
        }
        t.finish(grid)
    }

    /// Counts `n` times `v` (a value of the grid's windows, not NaN).
    #[inline]
    fn add(&mut self, grid: &Grid, v: f32, n: u64) {
        match grid {
            Grid::Values { index, .. } => {
                self.n += n as usize;
                if let Some(i) = index.get(v) {
                    self.counts[i] += n;
                }
            }
            Grid::Bins { edges, fine: Some(fine) } => self.add_fine(edges, fine, v, n),
            Grid::Bins { edges, fine: None } => {
                self.n += n as usize;
                let v = f64::from(v);
                self.counts[numpy_bin(v, edges)] += n;
                self.sorted.extend(std::iter::repeat_n(v, n as usize));
            }
        }
    }

    /// Counts a dictionary run from its counts per entry.
    fn add_coded(&mut self, grid: &Grid, dict: &[f32], counts: &[u64; CODED_MAX]) {
        for (&v, &n) in dict.iter().zip(counts) {
            if n > 0 && !v.is_nan() {
                self.add(grid, v, n);
            }
        }
    }

    /// Counts `n` times `v` on the fine grid (and in its Sturges bin next to
    /// an edge).
    #[inline]
    fn add_fine(&mut self, edges: &[f64], fine: &Fine, v: f32, n: u64) {
        let v = f64::from(v);
        let f = (((v - fine.lo) * fine.scale) as usize).min(FINE_BINS - 1);
        self.fine[f] += n as u32;
        if fine.sturges_of[f] == NEAR_EDGE {
            self.counts[numpy_bin(v, edges)] += n;
        }
        self.n += n as usize;
    }

    /// Adds the fine counts to the Sturges bins and sorts the kept values.
    fn finish(mut self, grid: &Grid) -> Self {
        if let Grid::Bins { fine: Some(fine), .. } = grid {
            for (&s, &k) in fine.sturges_of.iter().zip(&self.fine) {
                if s != NEAR_EDGE {
                    self.counts[usize::from(s)] += u64::from(k);
                }
            }
        }
        self.sorted.sort_unstable_by(f64::total_cmp);
        self
    }
}

/// A column's comparison: its statistics, and what the metric over time
/// needs to score time buckets of the current window on the same grid.
pub struct Comparison {
    /// Every statistic and the verdict.
    pub stats: ColumnStats,
    std_r: f64,
    grid: Grid,
    tally_r: Tally,
}

/// [`compare`] over values held in chunks.
pub fn compare_chunks(reference: &[Chunk], current: &[Chunk], choice: TestChoice) -> Option<ColumnStats> {
    comparison(reference, current, choice).map(|c| c.stats)
}

/// [`compare_chunks`], keeping what [`Comparison::over_time`] needs.
pub fn comparison(reference: &[Chunk], current: &[Chunk], choice: TestChoice) -> Option<Comparison> {
    // A column with few values is counted in one pass per window (the
    // reference's stops at its 21st distinct value); any other is
    // summarised, then binned, in two.
    let (grid, tally_r, tally_c, sr, sc, distinct) = match count_values(reference, Some(20)) {
        Some(ref_counts) => {
            let cur_counts = count_values(current, None).expect("no cap");
            let mut keys: Vec<u32> = ref_counts.keys().chain(cur_counts.keys()).collect();
            keys.sort_by(|a, b| f32::from_bits(*a).total_cmp(&f32::from_bits(*b)));
            keys.dedup();
            let values: Vec<f64> = keys.iter().map(|&b| f64::from(f32::from_bits(b))).collect();
            let tally = |counts: &ValueCounts| {
                let counts: Vec<u64> = keys.iter().map(|k| counts.get(*k)).collect();
                Tally { n: counts.iter().sum::<u64>() as usize, counts, ..Default::default() }
            };
            let (tr, tc) = (tally(&ref_counts), tally(&cur_counts));
            let (sr, sc) = (summary_of_counts(&values, &tr.counts), summary_of_counts(&values, &tc.counts));
            let distinct = keys.len().min(21);
            (Grid::Values { values, index: ValueIndex::new(&keys) }, tr, tc, sr, sc, distinct)
        }
        None => {
            let (sr, sc) = (summarise(reference), summarise(current));
            if sc.len == 0 {
                return None;
            }
            let grid = sturges(sr, sc);
            let (tr, tc) = (Tally::of(&grid, reference), Tally::of(&grid, current));
            (grid, tr, tc, sr, sc, 21)
        }
    };
    if sr.len == 0 || sc.len == 0 {
        return None;
    }
    let default = if sr.len <= 1000 {
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
    let m = measures(&grid, &tally_r, &tally_c, sr.std);
    let score = m.score(test);
    let exact = !matches!(grid, Grid::Bins { fine: Some(_), .. });
    let shares = match &grid {
        Grid::Values { values, .. } => Shares { values: values.clone(), ..Default::default() },
        Grid::Bins { edges, .. } => Shares { edges: edges.clone(), ..Default::default() },
    };
    let stats = ColumnStats {
        test,
        score,
        threshold,
        drifted: test.drifted(score, threshold),
        psi: m.psi,
        jensen_shannon: m.jensen_shannon,
        ks_statistic: m.ks_statistic,
        ks_p_value: m.ks_p_value,
        wasserstein_norm: m.wasserstein_norm,
        chi2_p_value: m.chi2_p_value,
        z_p_value: m.z_p_value,
        distinct,
        exact,
        reference_rows: sr.len,
        current_rows: sc.len,
        reference_mean: sr.mean,
        current_mean: sc.mean,
        shares: Shares { reference: m.shares_r, current: m.shares_c, ..shares },
    };
    Some(Comparison { stats, std_r: sr.std, grid, tally_r })
}

impl Comparison {
    /// The deciding test's score for each of `buckets` time buckets of the
    /// current window (`bucket_of` per value of `current`, NaN included;
    /// [`NO_BUCKET`] for none), on the whole windows' grid; NaN for an
    /// empty bucket.
    pub fn over_time(&self, current: &[Chunk], bucket_of: &[u32], buckets: usize) -> Vec<f64> {
        let mut tallies: Vec<Tally> = (0..buckets).map(|_| Tally::empty(&self.grid)).collect();
        let mut per_bucket = vec![[0u64; CODED_MAX]; buckets];
        let mut start = 0;
        for p in current {
            let end = (start + p.len()).min(bucket_of.len());
            let of = &bucket_of[start..end];
            start = end;
            match p {
                Chunk::Plain(p) => {
                    for (&v, &b) in p.iter().zip(of) {
                        if b != NO_BUCKET && !v.is_nan() {
                            tallies[b as usize].add(&self.grid, v, 1);
                        }
                    }
                }
                Chunk::Coded { dict, codes } => {
                    // Counts per bucket and code, then per bucket and value.
                    per_bucket.iter_mut().for_each(|c| *c = [0; CODED_MAX]);
                    for (&c, &b) in codes.iter().zip(of) {
                        if b != NO_BUCKET {
                            per_bucket[b as usize][usize::from(c) % CODED_MAX] += 1;
                        }
                    }
                    for (t, counts) in tallies.iter_mut().zip(&per_bucket) {
                        t.add_coded(&self.grid, dict, counts);
                    }
                }
            }
        }
        tallies
            .into_iter()
            .map(|t| {
                if t.n == 0 {
                    return f64::NAN;
                }
                measures(&self.grid, &self.tally_r, &t.finish(&self.grid), self.std_r).score(self.stats.test)
            })
            .collect()
    }
}

/// A value in no time bucket.
pub const NO_BUCKET: u32 = u32::MAX;

/// Every statistic of two windows counted on one grid.
struct Measures {
    shares_r: Vec<f64>,
    shares_c: Vec<f64>,
    psi: f64,
    jensen_shannon: f64,
    ks_statistic: f64,
    ks_p_value: f64,
    wasserstein_norm: f64,
    chi2_p_value: Option<f64>,
    /// χ² over the grid whatever its size (a chosen `chisquare` test).
    chi2_any: f64,
    z_p_value: Option<f64>,
}

impl Measures {
    fn score(&self, test: StatTest) -> f64 {
        match test {
            StatTest::Ks => self.ks_p_value,
            StatTest::Chisquare => self.chi2_p_value.unwrap_or(self.chi2_any),
            StatTest::Z => self.z_p_value.unwrap_or(f64::NAN),
            StatTest::Wasserstein => self.wasserstein_norm,
            StatTest::Jensenshannon => self.jensen_shannon,
            StatTest::Psi => self.psi,
        }
    }
}

fn measures(grid: &Grid, r: &Tally, c: &Tally, std_r: f64) -> Measures {
    let (nr, nc) = (r.n as f64, c.n as f64);
    let shares_r: Vec<f64> = r.counts.iter().map(|&k| k as f64 / nr).collect();
    let shares_c: Vec<f64> = c.counts.iter().map(|&k| k as f64 / nc).collect();
    let (ks_statistic, wasserstein, chi2_p_value, z_p_value) = match grid {
        Grid::Values { values, .. } => {
            let (d, w) = counted_ks_wasserstein(values, &r.counts, &c.counts);
            // χ² for at most 5 values, the z-test for at most 2.
            let few = values.len() <= 5;
            let chi = few.then_some(chisquare(&r.counts, &c.counts));
            let z = (values.len() <= 2).then(|| z_test(values, &r.counts, &c.counts));
            (d, w, chi, z)
        }
        Grid::Bins { fine: Some(fine), .. } => {
            let (d, w) = fine_ks_wasserstein(&r.fine, &c.fine, nr, nc, 1.0 / fine.scale);
            (d, w, None, None)
        }
        Grid::Bins { fine: None, .. } => {
            (ks_statistic(&r.sorted, &c.sorted), wasserstein_sorted(&r.sorted, &c.sorted), None, None)
        }
    };
    Measures {
        psi: psi(&shares_r, &shares_c),
        jensen_shannon: jensen_shannon(&shares_r, &shares_c),
        ks_statistic,
        ks_p_value: ks_p_value(ks_statistic, r.n, c.n),
        wasserstein_norm: wasserstein / std_r.max(0.001),
        chi2_any: chi2_p_value.unwrap_or_else(|| chisquare(&r.counts, &c.counts)),
        chi2_p_value,
        z_p_value,
        shares_r,
        shares_c,
    }
}

/// Counts per distinct value (by [`key`]).
#[derive(Default)]
struct ValueCounts {
    /// A short list searched in order beats hashing for few values…
    few: Vec<(u32, u64)>,
    /// …and a map takes over past 64.
    map: HashMap<u32, u64>,
}

impl ValueCounts {
    fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.few.iter().map(|e| e.0).chain(self.map.keys().copied())
    }

    fn get(&self, k: u32) -> u64 {
        self.few.iter().find(|e| e.0 == k).map(|e| e.1).or_else(|| self.map.get(&k).copied()).unwrap_or(0)
    }

    fn distinct(&self) -> usize {
        self.few.len() + self.map.len()
    }
}

/// Counts of each non-NaN value of `parts`; `None` as soon as there are
/// more than `cap` distinct values.
fn count_values(parts: &[Chunk], cap: Option<usize>) -> Option<ValueCounts> {
    // The first four values are counted without branching on which one a
    // value is (0/1 flags would mispredict half the time); the rest go to
    // the general counts. Dictionary runs are counted by code.
    let mut c = Counter { keys: [FREE; 4], counts: [0; 4], out: ValueCounts::default(), cap };
    for p in parts {
        match p {
            Chunk::Plain(p) => {
                for &v in p.iter().filter(|v| !v.is_nan()) {
                    let k = key(v);
                    let hits = [k == c.keys[0], k == c.keys[1], k == c.keys[2], k == c.keys[3]];
                    if hits.iter().any(|&h| h) {
                        for (n, h) in c.counts.iter_mut().zip(hits) {
                            *n += u64::from(h);
                        }
                    } else if !c.add(k, 1) {
                        return None;
                    }
                }
            }
            Chunk::Coded { dict, codes } => {
                for (&v, n) in dict.iter().zip(code_counts(codes)) {
                    if n > 0 && !v.is_nan() && !c.add(key(v), n) {
                        return None;
                    }
                }
            }
        }
    }
    let first: Vec<(u32, u64)> = c.keys.into_iter().zip(c.counts).filter(|e| e.0 != FREE).collect();
    c.out.few.splice(0..0, first);
    Some(c.out)
}

/// An empty slot of [`Counter`]: a NaN's bits, never a key.
const FREE: u32 = u32::MAX;

/// [`count_values`]' state: four slots counted without branching, then the
/// general counts.
struct Counter {
    keys: [u32; 4],
    counts: [u64; 4],
    out: ValueCounts,
    cap: Option<usize>,
}

impl Counter {
    /// Counts `n` times key `k`; false once past the cap.
    fn add(&mut self, k: u32, n: u64) -> bool {
        if let Some(i) = self.keys.iter().position(|&x| x == k) {
            self.counts[i] += n;
            return true;
        }
        if let Some(slot) = self.keys.iter().position(|&x| x == FREE) {
            (self.keys[slot], self.counts[slot]) = (k, n);
        } else if let Some(e) = self.out.few.iter_mut().find(|e| e.0 == k) {
            e.1 += n;
            return true;
        } else if self.out.few.len() < 60 {
            self.out.few.push((k, n));
        } else {
            *self.out.map.entry(k).or_default() += n;
        }
        let slots = self.keys.iter().filter(|&&x| x != FREE).count();
        self.cap.is_none_or(|cap| self.out.distinct() + slots <= cap)
    }
}

/// numpy's Sturges edges over both windows (`histogram_bin_edges(...,
/// "sturges")`), and the fine grid for large windows.
fn sturges(r: Summary, c: Summary) -> Grid {
    let (lo, hi) = (r.min.min(c.min), r.max.max(c.max));
    let n = (r.len + c.len) as f64;
    let (first, last, bins) = if lo == hi {
        (lo - 0.5, hi + 0.5, 1)
    } else {
        let width = (hi - lo) / (n.log2() + 1.0);
        (lo, hi, (((hi - lo) / width).ceil() as usize).max(1))
    };
    let step = (last - first) / bins as f64;
    let mut edges: Vec<f64> = (0..=bins).map(|i| i as f64 * step + first).collect();
    edges[bins] = last;
    let large = r.len + c.len > EXACT_MAX_VALUES && hi > lo && bins < usize::from(NEAR_EDGE);
    let fine = large.then(|| {
        let scale = FINE_BINS as f64 / (hi - lo);
        let mut sturges_of: Vec<u16> =
            (0..FINE_BINS).map(|f| numpy_bin(lo + (f as f64 + 0.5) / scale, &edges) as u16).collect();
        // A fine bin within one bin of an inner edge may hold values of two
        // Sturges bins (and rounding blurs its own bounds).
        for e in &edges[1..bins] {
            let f = ((e - lo) * scale) as i64;
            for g in (f - 1).max(0)..=(f + 1).min(FINE_BINS as i64 - 1) {
                sturges_of[g as usize] = NEAR_EDGE;
            }
        }
        Fine { lo, scale, sturges_of }
    });
    Grid::Bins { edges, fine }
}

/// The bin numpy's `histogram` puts `v` in (uniform bins, `v` inside).
#[inline]
fn numpy_bin(v: f64, edges: &[f64]) -> usize {
    let bins = edges.len() - 1;
    let (first, last) = (edges[0], edges[bins]);
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

/// KS statistic and Wasserstein distance from two histograms on the fine
/// grid (bins `width` wide): CDFs at the bins' right edges.
fn fine_ks_wasserstein(hr: &[u32], hc: &[u32], nr: f64, nc: f64, width: f64) -> (f64, f64) {
    if !width.is_finite() {
        // All values equal.
        return (0.0, 0.0);
    }
    let (mut fr, mut fc, mut d, mut w) = (0f64, 0f64, 0f64, 0f64);
    for k in 0..hr.len() {
        fr += f64::from(hr[k]);
        fc += f64::from(hc[k]);
        let diff = (fr / nr - fc / nc).abs();
        d = d.max(diff);
        if k + 1 < hr.len() {
            w += diff * width;
        }
    }
    (d, w)
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
        let (rp, cp) = ([Chunk::Plain(&r)], [Chunk::Plain(&c)]);
        // Binned as large windows are: on the fine grid.
        let grid = sturges(Summary { len: EXACT_MAX_VALUES, ..summarise(&rp) }, summarise(&cp));
        assert!(matches!(grid, Grid::Bins { fine: Some(_), .. }));
        // A standard deviation of 1 leaves the distance as it is.
        let m = measures(&grid, &Tally::of(&grid, &rp), &Tally::of(&grid, &cp), 1.0);
        let sorted = |v: &[f32]| {
            let mut s: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
            s.sort_by(f64::total_cmp);
            s
        };
        let (rs, cs) = (sorted(&r), sorted(&c));
        let width = 1.0 / FINE_BINS as f64;
        assert!((m.ks_statistic - ks_statistic(&rs, &cs)).abs() <= 2.0 * 1.0 / 20_000.0 + width, "{}", m.ks_statistic);
        assert!((m.wasserstein_norm - wasserstein_sorted(&rs, &cs)).abs() <= 2.0 * width, "{}", m.wasserstein_norm);
    }

    #[test]
    fn sturges_counts_from_the_fine_grid_are_numpys_counts() {
        // Values at, just below and just above every edge, and spread between.
        let mut v: Vec<f32> =
            (0..3_000_000u64).map(|i| ((i * 7919) % 1_000_003) as f32 / 1_000_003.0 * 7.3 - 2.1).collect();
        let grid = sturges(summarise(&[Chunk::Plain(&v)]), summarise(&[Chunk::Plain(&v)]));
        let Grid::Bins { edges, fine: Some(_) } = &grid else { panic!("a fine grid") };
        for &e in &edges[1..edges.len() - 1] {
            let x = e as f32;
            assert!(x != 0.0, "an edge at 0 has no neighbours by bits");
            v.extend([x, f32::from_bits(x.to_bits() - 1), f32::from_bits(x.to_bits() + 1)]);
        }
        let tally = Tally::of(&grid, &[Chunk::Plain(&v)]);
        let mut direct = vec![0u64; edges.len() - 1];
        for &x in &v {
            direct[numpy_bin(f64::from(x), edges)] += 1;
        }
        assert_eq!(tally.counts, direct);
    }

    #[test]
    fn one_pass_mean_and_deviation_match_two_passes_far_from_zero() {
        let v: Vec<f32> = (0..100_000).map(|i| 1.0e6 + ((i * 7919) % 1000) as f32 / 100.0).collect();
        let p = [Chunk::Plain(&v)];
        let c = summarise(&p);
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!((c.mean - mean).abs() < 1e-9 * mean, "{} vs {mean}", c.mean);
        assert!((c.std - var.sqrt()).abs() < 1e-9 * var.sqrt(), "{} vs {}", c.std, var.sqrt());
    }

    #[test]
    fn time_buckets_are_scored_on_the_whole_windows_grid() {
        // Binary column, large: counted exactly, so a bucket's score is the
        // comparison of the reference with that bucket alone.
        let r: Vec<f32> = (0..1_500_000).map(|i| f32::from(i % 10 < 3)).collect();
        let c: Vec<f32> = (0..1_500_000).map(|i| f32::from(i % 10 < if i < 750_000 { 3 } else { 6 })).collect();
        let buckets: Vec<u32> = (0..c.len()).map(|i| u32::from(i >= 750_000)).collect();
        let (rp, cp) = ([Chunk::Plain(&r)], [Chunk::Plain(&c)]);
        let cmp = comparison(&rp, &cp, TestChoice::default()).unwrap();
        let over = cmp.over_time(&cp, &buckets, 3);
        for (b, part) in [&c[..750_000], &c[750_000..]].into_iter().enumerate() {
            let alone = compare(&r, part, TestChoice::default()).unwrap().score;
            assert!((over[b] - alone).abs() < 1e-12, "bucket {b}: {} vs {alone}", over[b]);
        }
        assert!(over[0] < 0.01 && over[1] > 0.1 && over[2].is_nan(), "{over:?}");

        // Continuous, large: the fine grid of the whole windows, within a
        // few of its bins of the bucket's own comparison.
        let noise = |i: usize| ((i * 7919) % 10_007) as f32 / 10_007.0;
        let r: Vec<f32> = (0..1_500_000).map(noise).collect();
        let c: Vec<f32> = (0..1_500_000).map(|i| noise(i) + if i < 750_000 { 0.0 } else { 0.3 }).collect();
        let (rp, cp) = ([Chunk::Plain(&r)], [Chunk::Plain(&c)]);
        let cmp = comparison(&rp, &cp, TestChoice::default()).unwrap();
        assert_eq!(cmp.stats.test, StatTest::Wasserstein);
        let over = cmp.over_time(&cp, &buckets, 2);
        let std_r = cmp.std_r;
        for (b, part) in [&c[..750_000], &c[750_000..]].into_iter().enumerate() {
            let alone = compare(&r, part, TestChoice::default()).unwrap().score;
            assert!(
                (over[b] - alone).abs() < 4.0 * 1.3 / FINE_BINS as f64 / std_r,
                "bucket {b}: {} vs {alone}",
                over[b]
            );
        }
        assert!(over[0] < 0.01 && over[1] > 0.5, "{over:?}");
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

    #[test]
    fn dictionary_runs_give_the_statistics_of_their_values() {
        use super::super::chunk::Held;
        // Runs of few values (coded) and of many (plain) in one column, with
        // NaN and −0: the same statistics and time buckets as plain values.
        let run = |seed: usize, shift: f32| -> Vec<f32> {
            (0..9000)
                .map(|i| match (i / 3000 + seed) % 3 {
                    0 => [0.0, -0.0, 1.0, f32::NAN][(i * 7919 + seed) % 4] + shift,
                    1 => ((i * 7919 + seed) % 1000) as f32 / 100.0 + shift,
                    _ => ((i * 31 + seed) % 5) as f32,
                })
                .collect()
        };
        let (r, c) = (run(0, 0.0), run(1, 0.5));
        let held = |v: &[f32]| -> Vec<Held> { v.chunks(3000).map(|p| Held::encode(p.to_vec())).collect() };
        let (rh, ch) = (held(&r), held(&c));
        assert!(rh.iter().filter(|h| matches!(h, Held::Coded { .. })).count() == 2);
        let (rv, cv): (Vec<Chunk>, Vec<Chunk>) =
            (rh.iter().map(Held::view).collect(), ch.iter().map(Held::view).collect());
        let (rp, cp) = ([Chunk::Plain(&r)], [Chunk::Plain(&c)]);
        let buckets: Vec<u32> = (0..c.len()).map(|i| if i % 11 == 0 { NO_BUCKET } else { (i % 4) as u32 }).collect();
        for choice in [TestChoice::default(), TestChoice { test: Some(StatTest::Psi), threshold: None }] {
            let (a, b) = (comparison(&rp, &cp, choice).unwrap(), comparison(&rv, &cv, choice).unwrap());
            let (sa, sb) = (&a.stats, &b.stats);
            for (x, y) in [
                (sa.score, sb.score),
                (sa.psi, sb.psi),
                (sa.ks_statistic, sb.ks_statistic),
                (sa.wasserstein_norm, sb.wasserstein_norm),
                (sa.jensen_shannon, sb.jensen_shannon),
                (sa.reference_mean, sb.reference_mean),
                (sa.current_mean, sb.current_mean),
            ] {
                assert!((x - y).abs() <= 1e-9 * x.abs().max(1.0), "{x} vs {y}");
            }
            assert_eq!((sa.reference_rows, sa.current_rows, sa.test), (sb.reference_rows, sb.current_rows, sb.test));
            let (oa, ob) = (a.over_time(&cp, &buckets, 5), b.over_time(&cv, &buckets, 5));
            assert!(oa[4].is_nan() && ob[4].is_nan());
            for (x, y) in oa[..4].iter().zip(&ob[..4]) {
                assert!((x - y).abs() <= 1e-9 * x.abs().max(1.0), "{oa:?} vs {ob:?}");
            }
        }
        // A column of few values in all: counted, the same either way.
        let flags: Vec<f32> = (0..6000).map(|i| f32::from(i % 7 < 2)).collect();
        let fh = held(&flags);
        let fv: Vec<Chunk> = fh.iter().map(Held::view).collect();
        let (x, y) = (
            compare(&flags, &r, TestChoice::default()).unwrap(),
            compare_chunks(&fv, &rv, TestChoice::default()).unwrap(),
        );
        assert_eq!((x.distinct, x.test, x.score.to_bits()), (y.distinct, y.test, y.score.to_bits()));
    }
}
