"""Reproducibility of the committed `fraud-large` model (pipelines/models/fraud-large/1/).

Run:  .venv/bin/python -m pytest pipelines/models/fraud-large -q

Retrains with ../fraud/train.py (the command in README.md, ~15 s) and checks
the result against the committed files, and that the model is the ≥ 30×
larger network the benchmarks need.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

HERE = Path(__file__).resolve().parent
COMMITTED = HERE / "1"
FRAUD = HERE.parent / "fraud" / "1"
TRAIN = HERE.parent / "fraud" / "train.py"


def parameters(path: Path) -> int:
    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


def scores(path: Path, X: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(["probabilities"], {"features": X.astype(np.float32)})[0]


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((COMMITTED / "metadata.json").read_text())


@pytest.fixture(scope="module")
def retrained(tmp_path_factory, meta) -> Path:
    out = tmp_path_factory.mktemp("fraud-large")
    t = meta["training"]
    hidden = meta["framework"].split("(")[1].rstrip(")")
    proc = subprocess.run(
        [sys.executable, str(TRAIN), "--name", "fraud-large", "--hidden", hidden,
         "--rows", str(t["rows"]), "--seed", str(t["seed"]), "--max-iter", str(t["max_iter"]),
         "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "1"


def test_the_model_is_thirty_times_the_fraud_model_and_takes_the_same_features(meta):
    assert parameters(COMMITTED / "model.onnx") >= 30 * parameters(FRAUD / "model.onnx")
    fraud = json.loads((FRAUD / "metadata.json").read_text())
    assert meta["feature_order"] == fraud["feature_order"]
    assert meta["feature_spec"] == fraud["feature_spec"]
    assert meta["name"] == "fraud-large"
    assert meta["sha256"] == hashlib.sha256((COMMITTED / "model.onnx").read_bytes()).hexdigest()


def test_the_script_reproduces_the_committed_model_and_reference(meta, retrained):
    reference = [json.loads(line) for line in (COMMITTED / "reference.jsonl").read_text().splitlines()]
    X = np.array([r["features"] for r in reference], dtype=np.float32)
    np.testing.assert_allclose(scores(retrained / "model.onnx", X), scores(COMMITTED / "model.onnx", X),
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(scores(COMMITTED / "model.onnx", X)[:, 1], [r["score"] for r in reference],
                               rtol=0, atol=1e-6)
    new = json.loads((retrained / "metadata.json").read_text())
    for key in ("name", "framework", "feature_order", "input", "outputs"):
        assert new[key] == meta[key], key
    assert new["training"]["roc_auc"] == pytest.approx(meta["training"]["roc_auc"], abs=1e-4)
