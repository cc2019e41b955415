"""Tests of pipelines/retrain.py, the reference retrainer.

Run:  .venv/bin/python -m pytest pipelines/test_retrain.py -q

Builds Hive-partitioned predictions/feedback tables with pyarrow, a registry
holding a copy of the committed fraud model as version 1, and a trigger file;
then checks what the retrainer registers. The expected training set is
computed here from the generated arrays, independently of DataFusion.
The Kafka test uses $KAFKA_BOOTSTRAP or starts an Apache Kafka broker
(scripts/kafka.sh), and is skipped when neither is available.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "retrain.py"
PARENT = HERE / "models" / "fraud" / "1"

_spec = importlib.util.spec_from_file_location("retrain", SCRIPT)
retrain = importlib.util.module_from_spec(_spec)
sys.modules["retrain"] = retrain  # dataclasses look their module up there
_spec.loader.exec_module(retrain)

WIDTH = 16
N_SERVED = 2000          # served predictions of v1 in the training window
N_LABELLED = 1800        # of which have feedback
N_RELABELLED = 150       # of which also have an older feedback record with the other label
SEED = 11
TRIGGER_ID = "3f2a9c0e-retrain-test"

SQL = """
WITH fb AS (
  SELECT lineage_id, label,
         ROW_NUMBER() OVER (PARTITION BY lineage_id ORDER BY observed_time DESC) AS rn
  FROM feedback
  WHERE lineage_id IS NOT NULL
)
SELECT p.features, fb.label
FROM predictions p
JOIN fb ON fb.lineage_id = p.lineage_id AND fb.rn = 1
WHERE p.model_name = 'fraud' AND p.model_version = '1' AND NOT p.shadow
  AND p.date >= '2026-11-20'
"""

FEATURES_TYPE = pa.list_(pa.field("item", pa.float32(), nullable=False))
TS = pa.timestamp("us", tz="UTC")
PREDICTION_SCHEMA = pa.schema([
    ("lineage_id", pa.string()), ("key", pa.string()), ("model_name", pa.string()),
    ("route", pa.string()), ("shadow", pa.bool_()), ("score", pa.float64()),
    ("label", pa.int64()), ("features", FEATURES_TYPE), ("ingest_time", TS),
    ("kafka_timestamp", TS),
])
FEEDBACK_SCHEMA = pa.schema([
    ("lineage_id", pa.string()), ("key", pa.string()), ("label", pa.int64()),
    ("observed_time", TS), ("source", pa.string()), ("feedback_topic", pa.string()),
    ("feedback_partition", pa.int32()), ("feedback_offset", pa.int64()), ("ingest_time", TS),
])
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)


# --------------------------------------------------------------------------
# Fixtures: tables, registry, trigger
# --------------------------------------------------------------------------
def _rule(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The ground truth the retrained model has to learn."""
    z = 1.6 * X[:, 0] - 1.2 * X[:, 3] + 0.8 * X[:, 7] * X[:, 1] + 0.3 * rng.normal(size=len(X))
    return (z > 0.4).astype(np.int64)


def _predictions(ids: list[str], X: np.ndarray, shadow: bool, when: datetime) -> pa.Table:
    n = len(ids)
    return pa.table({
        "lineage_id": ids,
        "key": [f"key-{i}" for i in ids],
        "model_name": ["fraud"] * n,
        "route": ["fraud"] * n,
        "shadow": [shadow] * n,
        "score": [0.5] * n,
        "label": [0] * n,
        "features": pa.array([row.tolist() for row in X], type=FEATURES_TYPE),
        "ingest_time": [when] * n,
        "kafka_timestamp": [None if k % 7 == 0 else when for k in range(n)],
    }, schema=PREDICTION_SCHEMA)


def _feedback(ids: list[str], labels: np.ndarray, observed: list[datetime],
              offset0: int) -> pa.Table:
    n = len(ids)
    return pa.table({
        "lineage_id": ids,
        "key": [f"key-{i}" for i in ids],
        "label": [int(v) for v in labels],
        "observed_time": observed,
        "source": ["chargebacks"] * n,
        "feedback_topic": ["fraud-feedback"] * n,
        "feedback_partition": [0] * n,
        "feedback_offset": list(range(offset0, offset0 + n)),
        "ingest_time": observed,
    }, schema=FEEDBACK_SCHEMA)


def _write(table: pa.Table, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / name)


def build_tables(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Writes predictions/ and feedback/ under `root`; returns the training
    set the SQL above must select (X float32 [N_LABELLED, 16], y)."""
    rng = np.random.default_rng(SEED)
    X = rng.normal(size=(N_SERVED, WIDTH)).astype(np.float32)
    y = _rule(X, rng)
    ids = [f"lin-{i:05d}" for i in range(N_SERVED)]
    preds = root / "predictions"
    half = N_SERVED // 2
    # Two days of served v1 predictions, split over several files.
    for k, (lo, hi, day) in enumerate([(0, 600, 20), (600, half, 20), (half, N_SERVED, 21)]):
        folder = preds / f"date=2026-11-{day}" / "model_version=1"
        _write(_predictions(ids[lo:hi], X[lo:hi], False, T0), folder, f"part-{k}.parquet")
    # Shadow answers of v2 for the same events: excluded by the SQL's
    # model_version and shadow filters.
    _write(_predictions(ids[:300], X[:300] + 1.0, True, T0),
           preds / "date=2026-11-20" / "model_version=2", "part-0.parquet")
    # Older served predictions, outside the SQL's date window, with feedback.
    old_ids = [f"old-{i:05d}" for i in range(200)]
    X_old = rng.normal(size=(200, WIDTH)).astype(np.float32)
    _write(_predictions(old_ids, X_old, False, T0 - timedelta(days=10)),
           preds / "date=2026-11-10" / "model_version=1", "part-0.parquet")
    # A file still being written: not Parquet at all; reading it would fail.
    (preds / "date=2026-11-21" / "model_version=1" / "part-9.parquet.tmp-x") \
        .write_bytes(b"PAR1 half")

    fb = root / "feedback"
    labelled = rng.permutation(N_SERVED)[:N_LABELLED]
    relabelled = labelled[:N_RELABELLED]
    later = [T0 + timedelta(hours=2, seconds=int(i)) for i in range(N_LABELLED)]
    _write(_feedback([ids[i] for i in labelled], y[labelled], later, 0),
           fb / "date=2026-11-20", "part-0.parquet")
    # Earlier records with the other label: the SQL keeps the latest one.
    _write(_feedback([ids[i] for i in relabelled], 1 - y[relabelled],
                     [T0 + timedelta(hours=1)] * N_RELABELLED, 10_000),
           fb / "date=2026-11-20", "part-1.parquet")
    _write(_feedback(old_ids, np.ones(200, dtype=np.int64), [T0 - timedelta(days=9)] * 200, 20_000),
           fb / "date=2026-11-11", "part-0.parquet")
    # An in-progress file that IS valid Parquet and newer than everything:
    # if it were read, 300 labels would flip and the counts below would change.
    flip = labelled[:300]
    pq.write_table(_feedback([ids[i] for i in flip], 1 - y[flip],
                             [T0 + timedelta(days=1)] * 300, 30_000),
                   fb / "date=2026-11-20" / "part-2.parquet.tmp-x")
    return X[np.sort(labelled)], y[np.sort(labelled)]


def write_trigger(path: Path, tables: Path, registry_root: Path, **changes) -> Path:
    """A trigger file; `changes` set (or, with None, remove) fields, `__`
    separating nesting levels: training_data__min_rows=5."""
    trigger = {
        "trigger_id": TRIGGER_ID,
        "created_at": "2026-11-22T10:00:00Z",
        "pipeline": "fraud-scoring",
        "model": {"name": "fraud", "version": "1", "sha256": "ignored"},
        "route": "fraud",
        "reason": "drift",
        "summary": "psi 0.31 on amount",
        "evidence": {"psi": {"amount": 0.31}},
        "windows": {"reference": ["2026-11-01", "2026-11-08"]},
        "training_data": {"tables": str(tables), "sql": SQL, "min_rows": 200,
                          "format_version": 2},
        "registry": str(registry_root),
        "field_from_a_newer_monitor": [1, 2, 3],
    }
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        obj = trigger
        for p in parents:
            obj = obj[p]
        if value is None:
            obj.pop(leaf, None)
        else:
            obj[leaf] = value
    path.write_text(json.dumps(trigger))
    return path


def make_registry(root: Path) -> Path:
    shutil.copytree(PARENT, root / "fraud" / "1")
    return root


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("tables")
    X, y = build_tables(root)
    return root, X, y


def run_main(*argv) -> int:
    return retrain.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def first_run(tables, tmp_path_factory):
    """One retrain from a fresh registry; shared by the tests that inspect it."""
    root, _, _ = tables
    tmp = tmp_path_factory.mktemp("first")
    registry = make_registry(tmp / "registry")
    trigger = write_trigger(tmp / "trigger.json", root, registry)
    rc = run_main("--trigger-file", trigger)
    return rc, registry, trigger


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------
def versions(registry: Path) -> list[str]:
    return sorted(p.name for p in (registry / "fraud").iterdir())


def run_onnx(path: Path, input_name: str, X: np.ndarray):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess, sess.run(["label", "probabilities"], {input_name: X})


def holdout(X: np.ndarray, y: np.ndarray, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """The documented holdout rule, re-implemented: rows sorted by (features
    bit patterns, label), then a stratified 20 % split seeded with --seed."""
    bits = X.view(np.uint32)
    order = np.lexsort([y] + [bits[:, j] for j in reversed(range(X.shape[1]))])
    X, y = X[order], y[order]
    _, te = train_test_split(np.arange(len(y)), test_size=0.2, random_state=seed, stratify=y)
    return X[te], y[te]


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------
def test_registers_version_2_with_consistent_metadata(first_run, tables, capsys):
    rc, registry, _ = first_run
    _, X, y = tables
    assert rc == 0
    assert versions(registry) == ["1", "2"], "one new version, no temp folder left behind"

    parent = json.loads((registry / "fraud" / "1" / "metadata.json").read_text())
    meta = json.loads((registry / "fraud" / "2" / "metadata.json").read_text())
    model = (registry / "fraud" / "2" / "model.onnx").read_bytes()
    assert meta["sha256"] == hashlib.sha256(model).hexdigest()
    assert meta["name"] == "fraud" and meta["version"] == "2"
    for key in ("input", "framework", "feature_order", "feature_spec"):
        assert meta[key] == parent[key], key
    assert meta["outputs"] == {"label": "label", "probabilities": "probabilities",
                               "positive_class_index": 1}

    t = meta["training"]
    assert t["trigger_id"] == TRIGGER_ID
    assert t["parent_version"] == "1" and t["reason"] == "drift"
    assert t["sql"] == SQL and Path(t["tables"]) == tables[0].resolve()
    # Exactly the latest feedback of the served v1 rows in the window: the
    # older relabels, the shadow rows, the old partition and the
    # *.parquet.tmp-* files all change these counts if they leak in.
    assert t["rows"] == N_LABELLED
    assert t["positives"] == int(y.sum())
    assert t["holdout_rows"] == len(holdout(X, y)[1])
    assert t["train_rows"] + t["holdout_rows"] == N_LABELLED
    assert set(t["packages"]) >= {"numpy", "scikit-learn", "skl2onnx", "onnxruntime", "datafusion"}
    assert t["trained_at"].endswith("Z")


def test_new_model_runs_and_reported_holdout_metrics_are_its_own(first_run, tables):
    _, registry, _ = first_run
    _, X, y = tables
    meta = json.loads((registry / "fraud" / "2" / "metadata.json").read_text())
    X_te, y_te = holdout(X, y)

    sess, (label, proba) = run_onnx(registry / "fraud" / "2" / "model.onnx", "features", X_te)
    assert [i.name for i in sess.get_inputs()] == ["features"]
    assert sess.get_inputs()[0].shape[1] == WIDTH
    assert label.shape == (len(y_te),) and proba.shape == (len(y_te), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)

    new = meta["training"]["holdout"]["new"]
    assert new["accuracy"] == pytest.approx(np.mean(label == y_te), abs=1e-6)
    assert new["roc_auc"] == pytest.approx(roc_auc_score(y_te, proba[:, 1]), abs=1e-6)
    brier = np.mean((proba[:, 1].astype(np.float64) - y_te) ** 2)
    assert new["brier"] == pytest.approx(brier, abs=1e-6)
    # It learned the rule from the right labels (chance is ~0.5-0.6 here).
    assert new["accuracy"] > 0.85 and new["roc_auc"] > 0.9

    _, (p_label, p_proba) = run_onnx(registry / "fraud" / "1" / "model.onnx", "features", X_te)
    old = meta["training"]["holdout"]["parent"]
    assert old["accuracy"] == pytest.approx(np.mean(p_label == y_te), abs=1e-6)
    assert old["roc_auc"] == pytest.approx(roc_auc_score(y_te, p_proba[:, 1]), abs=1e-6)


def test_summary_line_and_same_trigger_again_registers_nothing(first_run, capsys):
    _, registry, trigger = first_run
    before = (registry / "fraud" / "2" / "metadata.json").read_bytes()
    assert run_main("--trigger-file", trigger) == 0
    out = capsys.readouterr().out
    assert "already registered as version 2" in out
    assert versions(registry) == ["1", "2"]
    assert (registry / "fraud" / "2" / "metadata.json").read_bytes() == before


def test_same_data_gives_byte_identical_model(first_run, tables, tmp_path, capsys):
    _, first_registry, _ = first_run
    registry = make_registry(tmp_path / "registry")
    # A leftover of a crashed run must neither count as a version nor block.
    (registry / "fraud" / ".tmp-2-999999").mkdir()
    trigger = write_trigger(tmp_path / "trigger.json", tables[0], registry)
    assert run_main("--trigger-file", trigger) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("registered fraud v2 (parent v1): rows=1800 ")
    assert "accuracy=" in out[0] and "(parent " in out[0]
    assert (registry / "fraud" / "2" / "model.onnx").read_bytes() == \
        (first_registry / "fraud" / "2" / "model.onnx").read_bytes()


def test_new_trigger_takes_the_next_version_and_the_registry_override(tables, tmp_path):
    registry = make_registry(tmp_path / "registry")
    shutil.copytree(registry / "fraud" / "1", registry / "fraud" / "7")  # a gap is fine
    (registry / "fraud" / "candidate").mkdir()                        # not numeric: ignored
    trigger = write_trigger(tmp_path / "trigger.json", tables[0], tmp_path / "elsewhere",
                            trigger_id="another-id", training_data__min_rows=1000)
    assert run_main("--trigger-file", trigger, "--registry", registry) == 0
    meta = json.loads((registry / "fraud" / "8" / "metadata.json").read_text())
    assert meta["version"] == "8" and meta["training"]["parent_version"] == "1"
    assert not (tmp_path / "elsewhere").exists()


def test_too_few_rows_exit_2_names_min_rows(tables, tmp_path, capsys):
    registry = make_registry(tmp_path / "registry")
    trigger = write_trigger(tmp_path / "t.json", tables[0], registry, training_data__min_rows=5000)
    assert run_main("--trigger-file", trigger) == 2
    err = capsys.readouterr().err
    assert "min_rows is 5000" in err and "returned 1800" in err and "SELECT p.features" in err
    assert versions(registry) == ["1"]


def test_one_class_exit_2(tables, tmp_path, capsys):
    registry = make_registry(tmp_path / "registry")
    trigger = write_trigger(tmp_path / "t.json", tables[0], registry,
                            training_data__sql=SQL + " AND fb.label = 0")
    assert run_main("--trigger-file", trigger) == 2
    err = capsys.readouterr().err
    assert "only one class" in err and "0 with label 1" in err
    assert versions(registry) == ["1"]


@pytest.mark.parametrize("field", ["training_data__sql", "trigger_id", "model__version",
                                   "registry"])
def test_missing_field_exit_2_names_it(tables, tmp_path, capsys, field):
    registry = make_registry(tmp_path / "registry")
    trigger = write_trigger(tmp_path / "t.json", tables[0], registry, **{field: None})
    assert run_main("--trigger-file", trigger) == 2
    err = capsys.readouterr().err
    name = field.replace("__", ".")
    assert f"`{name}`" in err, err
    assert versions(registry) == ["1"]


def test_bad_tables_and_sql_exit_2_with_path(tables, tmp_path, capsys):
    registry = make_registry(tmp_path / "registry")
    empty = tmp_path / "no-tables"
    (empty / "predictions").mkdir(parents=True)
    assert run_main("--trigger-file", write_trigger(tmp_path / "a.json", empty, registry)) == 2
    assert f"no *.parquet files under {empty.resolve() / 'predictions'}" in capsys.readouterr().err

    missing = tmp_path / "nowhere"
    assert run_main("--trigger-file", write_trigger(tmp_path / "b.json", missing, registry)) == 2
    assert f"folder not found: {missing}" in capsys.readouterr().err

    bad_sql = "SELECT features FROM predictions"
    assert run_main("--trigger-file", write_trigger(tmp_path / "c.json", tables[0], registry,
                                                    training_data__sql=bad_sql)) == 2
    assert "must return columns `features` and `label`" in capsys.readouterr().err
    assert versions(registry) == ["1"]


def test_command_line_exit_codes_and_help(tables, tmp_path):
    registry = make_registry(tmp_path / "registry")
    trigger = write_trigger(tmp_path / "t.json", tables[0], registry, training_data__sql=None)
    p = subprocess.run([sys.executable, str(SCRIPT), "--trigger-file", str(trigger)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "missing required field `training_data.sql`" in p.stderr
    assert p.stdout == ""

    p = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0
    for option in ("--trigger-file", "--bootstrap", "--topic", "--group", "--once", "--timeout-s",
                   "--registry", "--tables", "--seed", "--max-epochs", "exit codes"):
        assert option in p.stdout, option


# --------------------------------------------------------------------------
# Kafka (a real broker)
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bootstrap():
    if os.environ.get("KAFKA_BOOTSTRAP"):
        yield os.environ["KAFKA_BOOTSTRAP"]
        return
    kafka = Path(__file__).resolve().parent.parent / "scripts/kafka.sh"
    if shutil.which("java") is None:
        pytest.skip("no Kafka broker: set KAFKA_BOOTSTRAP, or install Java 17+ and run `make setup-broker`")
    workdir = tempfile.mkdtemp(prefix="switchyard-kafka-")
    started = subprocess.run(["bash", str(kafka), "start", workdir, "0"], capture_output=True, text=True)
    assert started.returncode == 0, f"the Kafka test broker did not start:\n{started.stderr[-3000:]}"
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run(["bash", str(kafka), "stop", workdir], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


def test_kafka_commits_only_handled_triggers(bootstrap, tables, tmp_path):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"retrain-triggers-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic] \
        .result(timeout=30)
    registry = make_registry(tmp_path / "registry")

    def produce(path: Path) -> None:
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(topic, key=b"fraud", value=path.read_bytes())
        assert producer.flush(30) == 0

    def consume(timeout_s: int) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(SCRIPT), "--bootstrap", bootstrap, "--topic", topic,
             "--group", f"{topic}-g", "--once", "--timeout-s", str(timeout_s)],
            capture_output=True, text=True, timeout=timeout_s + 60)

    def committed() -> int:
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-g"})
        try:
            return c.committed([TopicPartition(topic, 0)], timeout=30)[0].offset
        finally:
            c.close()

    produce(write_trigger(tmp_path / "t1.json", tables[0], registry))
    p = consume(60)
    assert p.returncode == 0, p.stderr
    assert versions(registry) == ["1", "2"]
    assert p.stdout.startswith("registered fraud v2")
    assert committed() == 1

    # A rejected trigger (exit 2) is committed too: it would fail the same way again.
    produce(write_trigger(tmp_path / "t2.json", tables[0], registry, trigger_id="t2",
                          training_data__min_rows=10**6))
    p = consume(60)
    assert p.returncode == 2, p.stderr
    assert "min_rows is 1000000" in p.stderr
    assert committed() == 2

    # The first trigger again (a redelivery): recognised, nothing trained.
    produce(tmp_path / "t1.json")
    p = consume(60)
    assert p.returncode == 0, p.stderr
    assert "already registered as version 2" in p.stdout
    assert committed() == 3
    assert versions(registry) == ["1", "2"]

    # Nothing left: --once gives up after --timeout-s with exit code 3.
    p = consume(3)
    assert p.returncode == 3, p.stderr
