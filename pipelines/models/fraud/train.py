#!/usr/bin/env python3
"""Train and export the `fraud` ONNX model used by switchyard's local scorer.

Generates synthetic card transactions with a fixed seed, turns each raw event
into 16 float32 features (see FEATURES below -- the single source of truth for
the pre-processing, also written into metadata.json for the Rust side), trains
a small sklearn MLPClassifier and exports it to ONNX:

    <out>/1/model.onnx       input `features` float32 [N, 16];
                             outputs `label` int64 [N], `probabilities` float32 [N, 2]
    <out>/1/metadata.json    name/version/io names/feature order/sha256/training info
    <out>/1/reference.jsonl  64 raw events + features + expected score/label

Training is single-threaded and seeded, so the same --rows/--seed give the same
model (the test in test_train.py checks this against the committed files).

Usage:  python3 pipelines/models/fraud/train.py [--out DIR] [--rows N] [--seed S]

The same data and features with a wider network make `fraud-large`, the
model the benchmarks scale up to (see pipelines/models/fraud-large/README.md):

    python3 pipelines/models/fraud/train.py --name fraud-large --hidden 256,384 \
        --rows 40000 --max-iter 10 --out pipelines/models/fraud-large
"""

from __future__ import annotations

import os
import platform

# Pin every BLAS/OpenMP pool to one thread *before* numpy is imported:
# multi-threaded reductions may sum in a different order and change the
# trained weights in the last bits.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
# The same kernels on every x86-64 machine with AVX2: OpenBLAS and numpy
# otherwise choose their code by the CPU (AVX-512 where it has it), sums
# round differently, and the weights trained on two machines differ by more
# than the reproducibility tests allow.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ["OPENBLAS_CORETYPE"] = "Haswell"
    os.environ["NPY_DISABLE_CPU_FEATURES"] = "X86_V4 AVX512_ICL AVX512_SPR"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

# --------------------------------------------------------------------------
# Feature specification: the ONE place where the pre-processing constants live.
# Order of this dict == order of the model's input columns (one-hot entries
# expand in the order of their `categories`).
#
# Transforms (all arithmetic in float64, the result cast to float32 at the end):
#   standardize        (impute(x) - center) / scale
#   log1p_standardize  (log1p(impute(x)) - center) / scale
#   bool               1.0 if x is true else 0.0   (missing/null -> 0.0)
#   one_hot            one column per category, 1.0 where x == category;
#                      an unknown or missing value -> all zeros
# `impute` replaces a missing key or JSON null before the transform; `null`
# impute means the field is required (a missing value is an error).
# --------------------------------------------------------------------------
FEATURES: dict[str, dict] = {
    "amount": {"field": "amount", "transform": "log1p_standardize",
               "impute": None, "center": 3.9, "scale": 1.1},
    "hour": {"field": "hour", "transform": "standardize",
             "impute": None, "center": 12.0, "scale": 6.9},
    "card_present": {"field": "card_present", "transform": "bool"},
    "distance_km": {"field": "distance_km", "transform": "log1p_standardize",
                    "impute": 5.0, "center": 1.8, "scale": 1.2},
    "txn_count_24h": {"field": "txn_count_24h", "transform": "standardize",
                      "impute": 2, "center": 2.5, "scale": 2.0},
    "account_age_days": {"field": "account_age_days", "transform": "log1p_standardize",
                         "impute": 365, "center": 5.5, "scale": 1.3},
    "channel": {"field": "channel", "transform": "one_hot",
                "categories": ["pos", "web", "app"]},
    "merchant_category": {"field": "merchant_category", "transform": "one_hot",
                          "categories": ["grocery", "electronics", "travel", "restaurant",
                                         "online", "fuel", "gambling"]},
}

MODEL_NAME = "fraud"
MODEL_VERSION = "1"
HIDDEN = (64, 32)
MAX_ITER = 30          # epochs; ~10 s for 200k rows on one core
INPUT_NAME = "features"
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
N_REFERENCE = 64
SCRIPT_PATH = "pipelines/models/fraud/train.py"
CURRENCIES = ["USD", "EUR", "GBP"]
MISSING_RATE = 0.05    # for distance_km, txn_count_24h, account_age_days
FRAUD_RATE = 0.025
CAMOUFLAGED_FRAUD = 0.15


def feature_order(spec: dict[str, dict] = FEATURES) -> list[str]:
    """Column names of the model input, in order."""
    names: list[str] = []
    for name, f in spec.items():
        if f["transform"] == "one_hot":
            names.extend(f"{name}={c}" for c in f["categories"])
        else:
            names.append(name)
    return names


N_FEATURES = len(feature_order())
assert N_FEATURES == 16


# --------------------------------------------------------------------------
# Pre-processing
# --------------------------------------------------------------------------
def featurize_columns(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Columnar pre-processing.

    `cols[field]`: float64 array with NaN for missing (numeric / bool fields),
    or an object array of str/None (one-hot fields). Returns float32 [N, 16].
    """
    out = []
    for name, f in FEATURES.items():
        t = f["transform"]
        x = cols[f["field"]]
        if t in ("standardize", "log1p_standardize"):
            x = np.asarray(x, dtype=np.float64)
            missing = np.isnan(x)
            if missing.any():
                if f["impute"] is None:
                    raise ValueError(f"field {f['field']!r} is required but missing")
                x = np.where(missing, float(f["impute"]), x)
            if t == "log1p_standardize":
                x = np.log1p(x)
            out.append((x - f["center"]) / f["scale"])
        elif t == "bool":
            x = np.asarray(x, dtype=np.float64)
            out.append(np.where(x == 1.0, 1.0, 0.0))
        elif t == "one_hot":
            x = np.asarray(x, dtype=object)
            for c in f["categories"]:
                out.append((x == c).astype(np.float64))
        else:  # pragma: no cover
            raise ValueError(f"unknown transform {t!r}")
    return np.column_stack(out).astype(np.float32)


def events_to_columns(events: list[dict]) -> dict[str, np.ndarray]:
    """Raw JSON events -> the columnar form featurize_columns() takes.
    A missing key and a JSON null are both "missing"."""
    cols: dict[str, np.ndarray] = {}
    for f in FEATURES.values():
        field = f["field"]
        vals = [ev.get(field) for ev in events]
        if f["transform"] == "one_hot":
            cols[field] = np.array([v if isinstance(v, str) else None for v in vals],
                                   dtype=object)
        elif f["transform"] == "bool":
            cols[field] = np.array([1.0 if v is True else 0.0 for v in vals])
        else:
            cols[field] = np.array([math.nan if v is None else float(v) for v in vals])
    return cols


def featurize_events(events: list[dict]) -> np.ndarray:
    """Raw JSON events -> float32 [N, 16] model input."""
    return featurize_columns(events_to_columns(events))


# --------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------
def _hour_probs(night_weight: float) -> np.ndarray:
    h = np.arange(24)
    day = np.exp(-0.5 * ((h - 14.0) / 4.0) ** 2)            # busy afternoons
    night = ((h <= 5) | (h >= 23)).astype(np.float64)
    p = day + night_weight * night + 0.02
    return p / p.sum()


def generate(n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """n synthetic transactions as columns (see events_to_columns) + 0/1 fraud labels."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < FRAUD_RATE).astype(np.int64)
    # A share of the frauds is "camouflaged": drawn from the legitimate
    # distributions, so the task is not trivially separable.
    fr = (y == 1) & (rng.random(n) >= CAMOUFLAGED_FRAUD)  # rows drawn "fraud-like"
    nf = int(fr.sum())
    nl = n - nf

    def per_class(legit: np.ndarray, fraud: np.ndarray, dtype=np.float64) -> np.ndarray:
        a = np.empty(n, dtype=dtype)
        a[~fr] = legit
        a[fr] = fraud
        return a

    amount = per_class(rng.lognormal(np.log(50.0), 1.0, nl),
                       rng.lognormal(np.log(140.0), 1.2, nf))
    amount = np.maximum(np.round(amount, 2), 0.01)

    hour = per_class(rng.choice(24, nl, p=_hour_probs(0.03)),
                     rng.choice(24, nf, p=_hour_probs(0.6))).astype(np.float64)

    channels = np.array(FEATURES["channel"]["categories"], dtype=object)
    channel = per_class(rng.choice(channels, nl, p=[0.60, 0.25, 0.15]),
                        rng.choice(channels, nf, p=[0.20, 0.60, 0.20]), dtype=object)

    u = rng.random(n)
    is_pos = channel == "pos"
    p_present = np.where(is_pos, np.where(fr, 0.55, 0.95), np.where(fr, 0.01, 0.03))
    card_present = (u < p_present).astype(np.float64)

    distance = per_class(rng.lognormal(np.log(4.0), 1.0, nl),
                         rng.lognormal(np.log(40.0), 1.5, nf))
    distance = np.round(distance, 2)

    txn_count = per_class(rng.poisson(2.0, nl), rng.poisson(4.5, nf)).astype(np.float64)

    young = rng.random(nf) < 0.5
    age_fraud = np.where(young, rng.lognormal(np.log(15.0), 1.0, nf),
                         rng.lognormal(np.log(400.0), 1.0, nf))
    age = per_class(rng.lognormal(np.log(500.0), 1.0, nl), age_fraud)
    age = np.floor(age)

    cats = np.array(FEATURES["merchant_category"]["categories"], dtype=object)
    category = per_class(
        rng.choice(cats, nl, p=[0.30, 0.08, 0.07, 0.22, 0.15, 0.15, 0.03]),
        rng.choice(cats, nf, p=[0.06, 0.28, 0.10, 0.05, 0.30, 0.04, 0.17]),
        dtype=object)

    for a in (distance, txn_count, age):
        a[rng.random(n) < MISSING_RATE] = np.nan

    currency = rng.choice(np.array(CURRENCIES, dtype=object), n, p=[0.7, 0.2, 0.1])

    cols = {
        "amount": amount, "hour": hour, "card_present": card_present,
        "distance_km": distance, "txn_count_24h": txn_count, "account_age_days": age,
        "channel": channel, "merchant_category": category, "currency": currency,
    }
    return cols, y


def row_to_event(cols: dict[str, np.ndarray], i: int, txn_id: str,
                 drop_missing: bool = False) -> dict:
    """One generated row as a raw JSON event. Missing values become null, or
    are left out entirely when drop_missing is set."""
    def num(v: float, as_int: bool):
        if math.isnan(v):
            return None
        return int(v) if as_int else float(v)

    ev = {
        "txn_id": txn_id,
        "amount": float(cols["amount"][i]),
        "currency": str(cols["currency"][i]),
        "merchant_category": cols["merchant_category"][i],
        "hour": int(cols["hour"][i]),
        "card_present": bool(cols["card_present"][i] == 1.0),
        "distance_km": num(cols["distance_km"][i], False),
        "txn_count_24h": num(cols["txn_count_24h"][i], True),
        "account_age_days": num(cols["account_age_days"][i], True),
        "channel": cols["channel"][i],
    }
    if drop_missing:
        ev = {k: v for k, v in ev.items() if v is not None}
    return ev


def edge_case_events() -> list[dict]:
    """Hand-written events exercising imputation, unknown categories and extremes."""
    base = {"currency": "USD", "merchant_category": "grocery", "hour": 12,
            "card_present": True, "distance_km": 3.5, "txn_count_24h": 1,
            "account_age_days": 900, "channel": "pos"}
    cases = [
        {"amount": 42.0},
        {"amount": 42.0, "distance_km": None, "txn_count_24h": None, "account_age_days": None},
        {"amount": 42.0, "drop": ["distance_km", "txn_count_24h", "account_age_days"]},
        {"amount": 42.0, "channel": "kiosk"},                   # unknown channel
        {"amount": 42.0, "drop": ["channel"]},                  # missing channel
        {"amount": 42.0, "channel": None, "merchant_category": None},
        {"amount": 42.0, "merchant_category": "pharmacy"},      # unknown category
        {"amount": 0.01, "hour": 0, "distance_km": 0.0, "txn_count_24h": 0,
         "account_age_days": 0},
        {"amount": 25000.0, "hour": 23, "card_present": False, "distance_km": 9000.0,
         "txn_count_24h": 40, "account_age_days": 1, "channel": "web",
         "merchant_category": "electronics"},
        {"amount": 1899.99, "hour": 3, "card_present": False, "distance_km": 850.0,
         "txn_count_24h": 12, "account_age_days": 4, "channel": "web",
         "merchant_category": "gambling"},
        {"amount": 640.5, "hour": 2, "card_present": False, "distance_km": None,
         "txn_count_24h": 9, "account_age_days": None, "channel": "app",
         "merchant_category": "online"},
        {"amount": 320.0, "hour": 4, "card_present": False, "channel": "web",
         "merchant_category": "travel", "drop": ["distance_km", "txn_count_24h"]},
        {"amount": 12.75, "hour": 18, "merchant_category": "restaurant", "currency": "EUR"},
        {"amount": 61.3, "hour": 7, "merchant_category": "fuel", "currency": "GBP",
         "distance_km": 0.4},
        {"amount": 99.0, "hour": 21, "card_present": False, "channel": "app",
         "merchant_category": "online", "account_age_days": 30},
        {"amount": 5000.0, "hour": 13, "card_present": True, "channel": "pos",
         "merchant_category": "electronics", "distance_km": 1.2},
    ]
    events = []
    for n, c in enumerate(cases):
        c = dict(c)
        drop = c.pop("drop", [])
        ev = {"txn_id": f"edge-{n:02d}", **base, **c}
        for k in drop:
            ev.pop(k)
        events.append(ev)
    return events


# --------------------------------------------------------------------------
# Training / export
# --------------------------------------------------------------------------
def train(X: np.ndarray, y: np.ndarray, seed: int,
          hidden: tuple[int, ...] = HIDDEN, max_iter: int = MAX_ITER):
    """Single-threaded, seeded MLP training (pipelines/retrain.py uses it too)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    clf = MLPClassifier(hidden_layer_sizes=hidden, activation="relu", solver="adam",
                        alpha=1e-4, batch_size=256, learning_rate_init=1e-3,
                        max_iter=max_iter, shuffle=True, random_state=seed,
                        early_stopping=False)
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    return clf


def flush_subnormals(onx) -> None:
    """Sets float32 weights below the smallest normal float32 to zero.

    L2 decay leaves the weights of dead units tiny; cast from float64 they
    become subnormal floats, which x86 CPUs multiply in microcode about 100
    times slower. 90 such weights made ONNX Runtime's Gemm on `fraud` four
    times slower (docs/BENCHMARKS.md); as zeros they change no score.
    """
    from onnx import numpy_helper

    tiny = np.finfo(np.float32).tiny
    for t in onx.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32 and np.any((a != 0) & (np.abs(a) < tiny)):
            flushed = np.where(np.abs(a) < tiny, np.float32(0), a).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(flushed, t.name))


def export_onnx(clf, name: str = MODEL_NAME) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(clf, initial_types=[(INPUT_NAME, FloatTensorType([None, N_FEATURES]))],
                  options={id(clf): {"zipmap": False}}, target_opset=TARGET_OPSET)
    onx.doc_string = (f"switchyard {name} model v{MODEL_VERSION}; "
                      f"features: {', '.join(feature_order())}")
    outs = [o.name for o in onx.graph.output]
    assert outs == ["label", "probabilities"], outs
    flush_subnormals(onx)
    return onx.SerializeToString()


def run_onnx(model_bytes: bytes, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label int64 [N], probabilities float32 [N, 2]) from onnxruntime, single-threaded."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    label, proba = sess.run(["label", "probabilities"], {INPUT_NAME: X.astype(np.float32)})
    return label, proba


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                    help="output folder; files go to OUT/1/ (default: this script's folder)")
    ap.add_argument("--rows", type=int, default=200_000, help="synthetic rows (default 200000)")
    ap.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    ap.add_argument("--name", default=MODEL_NAME, help=f"model name (default {MODEL_NAME})")
    ap.add_argument("--hidden", default=",".join(map(str, HIDDEN)),
                    help="hidden layer widths (default %(default)s)")
    ap.add_argument("--max-iter", type=int, default=MAX_ITER, help="epochs (default %(default)s)")
    args = ap.parse_args(argv)
    hidden = tuple(int(w) for w in args.hidden.split(","))

    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    t0 = time.perf_counter()
    cols, y = generate(args.rows, args.seed)
    X = featurize_columns(cols)
    idx = np.arange(args.rows)
    idx_tr, idx_te = train_test_split(idx, test_size=0.2, random_state=args.seed, stratify=y)

    t1 = time.perf_counter()
    clf = train(X[idx_tr], y[idx_tr], args.seed, hidden=hidden, max_iter=args.max_iter)
    train_s = time.perf_counter() - t1

    model_bytes = export_onnx(clf, args.name)
    _, proba_te = run_onnx(model_bytes, X[idx_te])
    auc = float(roc_auc_score(y[idx_te], proba_te[:, 1]))

    # Reference events: held-out rows (frauds first so both classes show up),
    # some with missing values written as null and some with the key left out,
    # plus hand-written edge cases.
    edges = edge_case_events()
    n_rows = N_REFERENCE - len(edges)
    te_fraud = idx_te[y[idx_te] == 1]
    te_legit = idx_te[y[idx_te] == 0]
    picked = list(te_fraud[: n_rows // 3]) + list(te_legit[: n_rows - n_rows // 3])
    events = [row_to_event(cols, int(i), f"ref-{k:02d}-{int(i):06d}", drop_missing=(k % 2 == 1))
              for k, i in enumerate(picked)]
    events += edges
    X_ref = featurize_events(events)
    assert np.array_equal(X_ref[: len(picked)], X[np.array(picked)]), "featurize paths disagree"
    label_ref, proba_ref = run_onnx(model_bytes, X_ref)

    out_dir = args.out / MODEL_VERSION
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.onnx").write_bytes(model_bytes)
    metadata = {
        "name": args.name,
        "version": MODEL_VERSION,
        "framework": f"sklearn MLPClassifier ({','.join(map(str, hidden))})",
        "input": INPUT_NAME,
        "outputs": {"label": "label", "probabilities": "probabilities",
                    "positive_class_index": 1},
        "feature_order": feature_order(),
        "feature_spec": FEATURES,
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "training": {"rows": args.rows, "seed": args.seed, "script": SCRIPT_PATH,
                     "roc_auc": round(auc, 6)},
    }
    if args.max_iter != MAX_ITER:
        metadata["training"]["max_iter"] = args.max_iter
    (out_dir / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    with open(out_dir / "reference.jsonl", "w") as fh:
        for ev, feats, p, lab in zip(events, X_ref, proba_ref[:, 1], label_ref):
            rec = {"event": ev, "features": [float(v) for v in feats],
                   "score": float(p), "label": int(lab)}
            fh.write(json.dumps(rec) + "\n")

    total_s = time.perf_counter() - t0
    print(f"rows={args.rows} seed={args.seed} fraud_rate={y.mean():.4f} "
          f"train_rows={len(idx_tr)} test_rows={len(idx_te)}")
    print(f"epochs={clf.n_iter_} loss={clf.loss_:.5f} train_time={train_s:.1f}s total={total_s:.1f}s")
    print(f"held-out ROC AUC={auc:.4f}  model={len(model_bytes)} bytes  "
          f"sha256={metadata['sha256']}")
    print(f"reference: {len(events)} events, {int(label_ref.sum())} labelled fraud")
    print(f"wrote {out_dir}/model.onnx, metadata.json, reference.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
