"""Trains the small fraud-like classifier MLServer serves in the cloud-worker
integration tests, and records what it must answer.

    .venv-peers/bin/python tests/peers/mlserver/train.py [OUT_DIR]

Writes OUT_DIR/fraud-sk/model.joblib (a scikit-learn LogisticRegression over 8
float features; served by mlserver_sklearn, see fraud-sk/model-settings.json)
and OUT_DIR/reference.json: the fitted coefficients and predict_proba of fixed
reference rows. OUT_DIR defaults to this folder, where both are committed;
tests/integration/cloud.rs re-runs the script into a temporary folder and checks
that it reproduces the committed reference. Everything is seeded.
"""
import json
import pathlib
import sys

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

FEATURES = [
    "amount_log",        # log1p of the amount, standardised
    "hour_sin",          # time of day on the unit circle
    "hour_cos",
    "merchant_risk",     # merchant category risk score
    "distance_home",     # distance from the cardholder's home, standardised
    "txn_velocity_1h",   # transactions in the last hour, standardised
    "card_age",          # card age, standardised
    "foreign",           # 1.0 when abroad
]
# The "true" weights the synthetic labels come from.
TRUE_WEIGHTS = np.array([1.2, -0.3, 0.2, 1.5, 0.8, 1.1, -0.7, 0.9])
TRUE_BIAS = -2.0


def main() -> None:
    here = pathlib.Path(__file__).resolve().parent
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else here
    rng = np.random.default_rng(20261122)

    n = 4000
    X = rng.normal(size=(n, len(FEATURES)))
    X[:, 7] = (rng.random(n) < 0.15).astype(np.float64)  # foreign is a flag
    logits = X @ TRUE_WEIGHTS + TRUE_BIAS + rng.normal(scale=0.5, size=n)
    y = (logits > 0).astype(np.int64)

    clf = LogisticRegression(random_state=0, max_iter=1000).fit(X, y)

    # Reference rows, exactly representable as float32 (the worker's default
    # tensor type), so the server's answer can be compared at 1e-9.
    ref = rng.normal(scale=1.5, size=(16, len(FEATURES))).astype(np.float32).astype(np.float64)
    ref[:, 7] = np.arange(16) % 2
    proba = clf.predict_proba(ref)[:, 1]

    (out / "fraud-sk").mkdir(parents=True, exist_ok=True)
    joblib.dump(clf, out / "fraud-sk" / "model.joblib")
    reference = {
        "features": FEATURES,
        "classes": clf.classes_.tolist(),
        "coef": clf.coef_[0].tolist(),
        "intercept": float(clf.intercept_[0]),
        "rows": ref.tolist(),
        "predict_proba": proba.tolist(),
        "train_accuracy": float(clf.score(X, y)),
    }
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"trained {out / 'fraud-sk' / 'model.joblib'}: accuracy {reference['train_accuracy']:.3f}")


if __name__ == "__main__":
    main()
