"""Reference values of switchyard's drift statistics, from scipy and numpy.

Reads JSON cases {"cases": [{"reference": [...], "current": [...]}, ...]}
on stdin and writes, per case, every statistic computed the way Evidently
defines it (its default test choice, numpy Sturges binning, PSI's empty-bin
fill, scipy's ks_2samp / wasserstein_distance / chisquare /
jensenshannon(base=2), the two-proportion z-test). Written independently of
the Rust code it checks.
"""
import json
import sys

import numpy as np
from scipy import stats
from scipy.spatial import distance


def binned(ref, cur, fill_zeros):
    if len(np.unique(ref)) > 20:
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        r = np.histogram(ref, edges)[0] / len(ref)
        c = np.histogram(cur, edges)[0] / len(cur)
    else:
        keys = sorted(set(ref.tolist()) | set(cur.tolist()))
        r = np.array([np.sum(ref == k) for k in keys]) / len(ref)
        c = np.array([np.sum(cur == k) for k in keys]) / len(cur)
    if fill_zeros:
        for a in (r, c):
            m = a[a != 0].min()
            a[a == 0] = m / 10**6 if m <= 0.0001 else 0.0001
    return r, c


def case(ref, cur):
    with np.errstate(divide="ignore"):
        return _case(ref, cur)


def _case(ref, cur):
    ref = np.asarray(ref, dtype=np.float32).astype(np.float64)
    cur = np.asarray(cur, dtype=np.float32).astype(np.float64)
    n_values = len(np.unique(np.concatenate([ref, cur])))
    out = {}
    r, c = binned(ref, cur, True)
    out["psi"] = float(np.sum((r - c) * np.log(r / c)))
    r, c = binned(ref, cur, False)
    out["jensen_shannon"] = float(distance.jensenshannon(r, c, 2))
    ks = stats.ks_2samp(ref, cur)
    out["ks_statistic"] = float(ks.statistic)
    out["ks_p_value"] = float(ks.pvalue)
    out["ks_exact"] = max(len(ref), len(cur)) <= 10000
    out["wasserstein_norm"] = float(stats.wasserstein_distance(ref, cur) / max(np.std(ref), 0.001))
    out["chi2_p_value"] = None
    out["z_p_value"] = None
    if n_values <= 5:
        keys = sorted(set(ref.tolist()) | set(cur.tolist()))
        k_norm = len(cur) / len(ref)
        f_exp = [np.sum(ref == k) * k_norm for k in keys]
        f_obs = [np.sum(cur == k) for k in keys]
        out["chi2_p_value"] = float(stats.chisquare(f_obs, f_exp)[1]) if len(keys) > 1 else 1.0
        if n_values <= 2:
            if len(keys) == 1:
                out["z_p_value"] = 1.0
            else:
                p1 = np.mean(ref != keys[0])
                p2 = np.mean(cur != keys[0])
                p = (p1 * len(ref) + p2 * len(cur)) / (len(ref) + len(cur))
                z = (p1 - p2) / np.sqrt(p * (1 - p) * (1 / len(ref) + 1 / len(cur)))
                out["z_p_value"] = float(2 * (1 - stats.norm.cdf(abs(z))))
    if len(ref) <= 1000:
        test = "ks" if n_values > 5 else ("chisquare" if n_values > 2 else "z")
    else:
        test = "wasserstein" if n_values > 5 else "jensenshannon"
    out["test"] = test
    return out


def main():
    cases = json.load(sys.stdin)["cases"]
    json.dump([case(c["reference"], c["current"]) for c in cases], sys.stdout)


if __name__ == "__main__":
    main()
