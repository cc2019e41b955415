"""Reproducibility tests for the committed fraud model (pipelines/models/fraud/1/).

Run:  .venv/bin/python -m pytest pipelines/models/fraud -q

Retrains with train.py into a temp dir (same rows/seed as the committed
metadata, ~15 s) and checks it against the committed model.onnx /
metadata.json / reference.jsonl.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

HERE = Path(__file__).resolve().parent
COMMITTED = HERE / "1"

_spec = importlib.util.spec_from_file_location("fraud_train", HERE / "train.py")
train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train)

METADATA_KEYS = {"name", "version", "framework", "input", "outputs", "feature_order",
                 "feature_spec", "sha256", "training"}


def _load_reference(folder: Path) -> list[dict]:
    with open(folder / "reference.jsonl") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _run(path: Path, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    label, proba = _session(path).run(["label", "probabilities"],
                                      {"features": X.astype(np.float32)})
    return label, proba


@pytest.fixture(scope="module")
def committed_meta() -> dict:
    return json.loads((COMMITTED / "metadata.json").read_text())


@pytest.fixture(scope="module")
def reference() -> list[dict]:
    return _load_reference(COMMITTED)


@pytest.fixture(scope="module")
def retrained(tmp_path_factory, committed_meta) -> Path:
    """Run train.py (as a user would) into a temp dir; returns the `1/` folder."""
    out = tmp_path_factory.mktemp("fraud")
    t = committed_meta["training"]
    proc = subprocess.run(
        [sys.executable, str(HERE / "train.py"), "--out", str(out),
         "--rows", str(t["rows"]), "--seed", str(t["seed"])],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "1"


# (a) ----------------------------------------------------------------------
def test_metadata_shape_and_feature_order(committed_meta, retrained):
    new = json.loads((retrained / "metadata.json").read_text())
    assert set(committed_meta) == METADATA_KEYS
    assert set(new) == METADATA_KEYS
    for key in ("name", "version", "framework", "input", "outputs", "feature_order",
                "feature_spec"):
        assert new[key] == committed_meta[key], key
    assert committed_meta["input"] == "features"
    assert committed_meta["outputs"] == {"label": "label", "probabilities": "probabilities",
                                         "positive_class_index": 1}
    assert committed_meta["feature_order"] == train.feature_order()
    assert len(committed_meta["feature_order"]) == 16
    # the spec in train.py is the one the committed model was trained with
    assert committed_meta["feature_spec"] == json.loads(json.dumps(train.FEATURES))
    assert new["training"]["rows"] == committed_meta["training"]["rows"]
    assert new["training"]["seed"] == committed_meta["training"]["seed"]
    assert new["training"]["script"] == "pipelines/models/fraud/train.py"
    assert new["training"]["roc_auc"] == pytest.approx(committed_meta["training"]["roc_auc"],
                                                       abs=1e-4)


def test_committed_model_signature():
    sess = _session(COMMITTED / "model.onnx")
    (inp,) = sess.get_inputs()
    assert inp.name == "features"
    assert inp.type == "tensor(float)"
    assert inp.shape[1] == 16 and not isinstance(inp.shape[0], int)
    outs = {o.name: o for o in sess.get_outputs()}
    assert [o.name for o in sess.get_outputs()] == ["label", "probabilities"]
    assert outs["label"].type == "tensor(int64)"
    assert outs["probabilities"].type == "tensor(float)"
    assert outs["probabilities"].shape[1] == 2
    assert (COMMITTED / "model.onnx").stat().st_size < 100_000


# (b) ----------------------------------------------------------------------
def test_retrained_model_matches_committed(reference, retrained):
    X = train.featurize_events([r["event"] for r in reference])
    label_c, proba_c = _run(COMMITTED / "model.onnx", X)
    label_n, proba_n = _run(retrained / "model.onnx", X)
    np.testing.assert_allclose(proba_n, proba_c, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(label_n, label_c)
    # and the retrained reference file describes the same events
    new_ref = _load_reference(retrained)
    assert [r["event"] for r in new_ref] == [r["event"] for r in reference]


# (c) ----------------------------------------------------------------------
def test_committed_sha256(committed_meta):
    digest = hashlib.sha256((COMMITTED / "model.onnx").read_bytes()).hexdigest()
    assert committed_meta["sha256"] == digest


# (d) ----------------------------------------------------------------------
def test_reference_matches_committed_model(reference):
    assert len(reference) == 64
    events = [r["event"] for r in reference]
    X_recorded = np.array([r["features"] for r in reference], dtype=np.float32)
    assert X_recorded.shape == (64, 16)
    # recorded features are exactly what train.py's pre-processing gives
    np.testing.assert_array_equal(train.featurize_events(events), X_recorded)
    label, proba = _run(COMMITTED / "model.onnx", X_recorded)
    np.testing.assert_allclose(proba[:, 1], [r["score"] for r in reference], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(label, [r["label"] for r in reference])
    # the reference set covers both classes and missing / unknown inputs
    assert {r["label"] for r in reference} == {0, 1}
    assert any(e.get("distance_km", "absent") is None for e in events)
    assert any("txn_count_24h" not in e for e in events)
    assert any(e.get("channel") not in ("pos", "web", "app") for e in events)


def test_featurize_spec_examples():
    ev = {"txn_id": "x", "amount": 49.0, "hour": 12, "card_present": True,
          "channel": "web", "merchant_category": "fuel"}  # three imputed fields absent
    (f,) = train.featurize_events([ev])
    expected = [
        (np.log1p(49.0) - 3.9) / 1.1, 0.0, 1.0,
        (np.log1p(5.0) - 1.8) / 1.2, (2 - 2.5) / 2.0, (np.log1p(365) - 5.5) / 1.3,
        0, 1, 0, 0, 0, 0, 0, 0, 1, 0,
    ]
    np.testing.assert_array_equal(f, np.array(expected, dtype=np.float32))
    null_ev = dict(ev, distance_km=None, txn_count_24h=None, account_age_days=None,
                   channel="kiosk", merchant_category=None, card_present=None)
    (g,) = train.featurize_events([null_ev])
    assert g[2] == 0.0 and np.array_equal(g[3:6], f[3:6]) and not g[6:].any()
