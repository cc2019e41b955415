#!/usr/bin/env python3
"""Retrain a registered model when switchyard emits a retrain trigger.

Reference retrainer closing the drift -> retrain -> canary loop: it takes one
retrain trigger (a JSON file, or records of a Kafka topic), builds the training
set with the trigger's SQL over switchyard's Parquet tables (DataFusion),
trains a new version of the model, compares it with the parent version on a
held-out split and registers it in the model registry, where the worker's
registry watcher picks it up.

Trigger (JSON object; the Kafka record value, its key is the model name):

  trigger_id                 required  unique id; a trigger is registered at most once
  model.name                 required  model folder in the registry
  model.version              required  parent version: the one that drifted
  training_data.tables       required  folder holding predictions/ and feedback/
  training_data.sql          required  SQL over the tables `predictions` and
                                       `feedback` returning `features`
                                       (list of floats) and `label` (0 or 1)
  training_data.min_rows     optional  fewest rows to train on (default 200)
  registry                   required  registry root, unless --registry is given
  reason, created_at, pipeline, route  optional, recorded in metadata.json
Other fields (summary, evidence, windows, ...) and unknown fields are ignored.

Tables (Hive-partitioned Parquet, as switchyard's sink writes them):
  predictions/date=YYYY-MM-DD/model_version=V/*.parquet
  feedback/date=YYYY-MM-DD/*.parquet
`date` and `model_version` are string columns taken from the folder names.
Only files named *.parquet are read (*.parquet.tmp-* are being written).
The row order of the SQL result does not matter: rows are sorted by
(features, label) before the split, so the same rows give the same model.

Training: the parent's model family (sklearn MLPClassifier, hidden layer
sizes read from the parent's `framework`), single-threaded and seeded; the
same rows, seed and package versions give a byte-identical model.onnx. A
stratified 20 % holdout (seeded) measures accuracy, ROC AUC and Brier score of
the new model and of the parent's model.onnx (onnxruntime) on the same rows.

Registry: <registry>/<name>/<version>/{model.onnx, metadata.json}. The new
version is the highest numeric version + 1. Input name, feature_order and
feature_spec are copied from the parent; metadata.json `training` records the
trigger, SQL, row counts, holdout metrics (new and parent) and package
versions. Files are written and fsynced in <registry>/<name>/.tmp-<version>-<pid>/,
which is then renamed to <version>/, so a watcher never sees a partial version.
A trigger whose id is already recorded in a version's metadata.json
(`training.trigger_id`) is reported and not trained again.

Kafka: the consumer commits a record's offset only after it is handled: the
version registered, or found already registered, or the trigger rejected (a
trigger rejected for its content or data would fail the same way again).
After an unexpected failure nothing is committed and the process exits 1;
the next run takes the same record again.

Usage:
  retrain.py --trigger-file trigger.json [--registry DIR] [--tables DIR]
  retrain.py --bootstrap HOST:PORT [--topic T] [--group G] [--once] [--timeout-s S]
"""

from __future__ import annotations

import os
import platform

# Pin every BLAS/OpenMP pool to one thread *before* numpy is imported:
# multi-threaded reductions may sum in a different order and change the
# trained weights in the last bits (same as models/fraud/train.py).
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
import errno  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USER = 2
EXIT_NO_TRIGGER = 3

DEFAULT_MIN_ROWS = 200
DEFAULT_SEED = 7
DEFAULT_MAX_EPOCHS = 200
DEFAULT_HIDDEN = (64, 32)
HOLDOUT_FRACTION = 0.2
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
SCRIPT_PATH = "pipelines/retrain.py"
# Table name -> Hive partition columns, outermost first (sink/src/catalog.rs).
TABLES = {"predictions": ("date", "model_version"), "feedback": ("date",)}
# Registry folder names become path components: keep them to one plain segment.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
NUMERIC_VERSION = re.compile(r"^[0-9]+$")
PACKAGES = ("numpy", "scikit-learn", "skl2onnx", "onnx", "onnxruntime", "datafusion", "pyarrow")
# A retrain can take longer than librdkafka's default 5 minutes between polls;
# the consumer must not be evicted from its group meanwhile.
MAX_POLL_INTERVAL_MS = 3_600_000


class UserError(Exception):
    """A problem in the trigger, the tables or the registry that the user must
    fix (exit code 2). The message says what, where and how."""


def log(msg: str) -> None:
    print(f"retrain: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Trigger
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Trigger:
    trigger_id: str
    model_name: str
    parent_version: str
    tables: Path
    sql: str
    min_rows: int
    registry: Path | None
    reason: str | None
    created_at: str | None
    pipeline: str | None
    route: str | None


_MISSING = object()


def _field(obj: dict, path: str, source: str, required: bool = True):
    cur = obj
    parts = path.split(".")
    for i, part in enumerate(parts):
        if not isinstance(cur, dict):
            raise UserError(f"{source}: field `{'.'.join(parts[:i])}` must be a JSON object")
        if cur.get(part) is None:
            if required:
                raise UserError(f"{source}: missing required field `{path}`")
            return _MISSING
        cur = cur[part]
    return cur


def _str_field(obj: dict, path: str, source: str, required: bool = True) -> str | None:
    v = _field(obj, path, source, required)
    if v is _MISSING:
        return None
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise UserError(f"{source}: field `{path}` must be a string, got {json.dumps(v)}")
    v = str(v)
    if required and not v.strip():
        raise UserError(f"{source}: field `{path}` is empty")
    return v


def _name_field(obj: dict, path: str, source: str) -> str:
    v = _str_field(obj, path, source)
    if not SAFE_NAME.match(v):
        raise UserError(f"{source}: field `{path}` = {v!r} is not a valid registry folder name "
                        "(letters, digits, '.', '_', '-'; not starting with '.')")
    return v


def parse_trigger(obj, source: str) -> Trigger:
    """Validates a decoded trigger. `source` names where it came from (file
    path or topic/partition/offset) in error messages."""
    if not isinstance(obj, dict):
        raise UserError(f"{source}: a retrain trigger must be a JSON object, "
                        f"got {type(obj).__name__}")
    min_rows = _field(obj, "training_data.min_rows", source, required=False)
    if min_rows is _MISSING:
        min_rows = DEFAULT_MIN_ROWS
    elif isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 1:
        raise UserError(f"{source}: field `training_data.min_rows` must be a positive integer, "
                        f"got {json.dumps(min_rows)}")
    registry = _str_field(obj, "registry", source, required=False)
    return Trigger(
        trigger_id=_str_field(obj, "trigger_id", source),
        model_name=_name_field(obj, "model.name", source),
        parent_version=_name_field(obj, "model.version", source),
        tables=Path(_str_field(obj, "training_data.tables", source)),
        sql=_str_field(obj, "training_data.sql", source),
        min_rows=min_rows,
        registry=Path(registry) if registry else None,
        reason=_str_field(obj, "reason", source, required=False),
        created_at=_str_field(obj, "created_at", source, required=False),
        pipeline=_str_field(obj, "pipeline", source, required=False),
        route=_str_field(obj, "route", source, required=False),
    )


def decode_trigger(data: bytes | str, source: str) -> Trigger:
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{source}: not valid JSON: {e}") from None
    return parse_trigger(obj, source)


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------
def numeric_versions(model_dir: Path) -> list[int]:
    """Version folders the worker would consider, as numbers, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir()
                  if p.is_dir() and NUMERIC_VERSION.match(p.name))


def find_trigger(model_dir: Path, trigger_id: str) -> str | None:
    """The version whose metadata.json records `trigger_id`, if any."""
    for v in numeric_versions(model_dir):
        path = model_dir / str(v) / "metadata.json"
        try:
            meta = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            log(f"warning: skipping unreadable {path}: {e}")
            continue
        training = meta.get("training") if isinstance(meta, dict) else None
        if isinstance(training, dict) and training.get("trigger_id") == trigger_id:
            return str(v)
    return None


@dataclass(frozen=True)
class Parent:
    version: str
    path: Path
    metadata: dict
    model_bytes: bytes
    input_name: str
    label_output: str
    proba_output: str
    positive_index: int
    width: int


def load_parent(model_dir: Path, version: str) -> Parent:
    path = model_dir / version
    meta_path = path / "metadata.json"
    model_path = path / "model.onnx"
    if not path.is_dir():
        have = ", ".join(str(v) for v in numeric_versions(model_dir)) or "none"
        raise UserError(f"parent version {version}: folder not found: {path} "
                        f"(versions present: {have})")
    try:
        meta = json.loads(meta_path.read_text())
        model_bytes = model_path.read_bytes()
    except FileNotFoundError as e:
        raise UserError(f"parent version {version}: missing file {e.filename}") from None
    except ValueError as e:
        raise UserError(f"parent version {version}: {meta_path} is not valid JSON: {e}") from None

    def need(key: str, kind: type):
        cur = meta
        for part in key.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if not isinstance(cur, kind) or isinstance(cur, bool):
            raise UserError(f"{meta_path}: field `{key}` is missing or not a {kind.__name__}")
        return cur

    input_name = need("input", str)
    label_output = need("outputs.label", str)
    proba_output = need("outputs.probabilities", str)
    positive_index = need("outputs.positive_class_index", int)
    if hashlib.sha256(model_bytes).hexdigest() != meta.get("sha256"):
        log(f"warning: {model_path} does not match the sha256 in {meta_path} "
            "(the worker refuses it); its holdout metrics are computed anyway")

    width = None
    if isinstance(meta.get("feature_order"), list):
        width = len(meta["feature_order"])
    else:
        import onnxruntime as ort

        try:
            shape = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"]) \
                .get_inputs()[0].shape
            width = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        except Exception as e:  # noqa: BLE001 -- any load failure means the same thing here
            raise UserError(f"parent version {version}: {model_path} cannot be loaded: "
                            f"{e}") from None
    if not width:
        raise UserError(f"{meta_path}: no `feature_order` and the model's input width is not "
                        "fixed; cannot tell how many features the new version takes")
    return Parent(version, path, meta, model_bytes, input_name, label_output, proba_output,
                  positive_index, width)


def hidden_layers(framework: object) -> tuple[tuple[int, ...], str]:
    """Hidden layer sizes from a parent's `framework`, e.g.
    "sklearn MLPClassifier (64,32)" -> (64, 32); else the default."""
    m = re.search(r"MLPClassifier\s*\(\s*([0-9]+(?:\s*,\s*[0-9]+)*)\s*,?\s*\)",
                  str(framework or ""))
    if m:
        return tuple(int(x) for x in m.group(1).split(",")), "parent"
    return DEFAULT_HIDDEN, "default"


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def register(model_dir: Path, model_bytes: bytes, metadata_for, trigger_id: str,
             attempts: int = 5) -> tuple[str, bool]:
    """Writes a new version atomically. `metadata_for(version)` builds its
    metadata.json. Returns (version, False), or (existing version, True) when
    a concurrent run registered this trigger first."""
    for _ in range(attempts):
        done = find_trigger(model_dir, trigger_id)
        if done is not None:
            return done, True
        version = str(max(numeric_versions(model_dir), default=0) + 1)
        tmp = model_dir / f".tmp-{version}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            _write_synced(tmp / "model.onnx", model_bytes)
            meta = metadata_for(version)
            _write_synced(tmp / "metadata.json", (json.dumps(meta, indent=2) + "\n").encode())
            _fsync_dir(tmp)
            try:
                # rename(2) fails on an existing non-empty folder: another
                # retrainer took this version number; take the next one.
                os.rename(tmp, model_dir / version)
            except OSError as e:
                if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    log(f"version {version} appeared while writing; trying the next number")
                    continue
                raise
            _fsync_dir(model_dir)
            return version, False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    raise RuntimeError(f"could not claim a new version folder in {model_dir} "
                       f"after {attempts} attempts")


# --------------------------------------------------------------------------
# Training data
# --------------------------------------------------------------------------
def query_tables(tables: Path, sql: str):
    """Runs `sql` over the predictions/feedback tables under `tables`;
    returns a pyarrow Table."""
    import pyarrow as pa
    from datafusion import SessionContext

    if not tables.is_dir():
        raise UserError(f"training_data.tables: folder not found: {tables}")
    ctx = SessionContext()
    for name, partitions in TABLES.items():
        folder = tables / name
        if not (folder.is_dir() and any(folder.rglob("*.parquet"))):
            # A table the SQL does not use may be absent.
            if re.search(rf"\b{name}\b", sql, re.IGNORECASE):
                raise UserError(f"table `{name}`: no *.parquet files under {folder} "
                                f"(training_data.tables = {tables})")
            continue
        ctx.register_listing_table(name, str(folder),
                                   table_partition_cols=[(p, pa.string()) for p in partitions],
                                   file_extension=".parquet")
    try:
        return ctx.sql(sql).to_arrow_table()
    except Exception as e:  # noqa: BLE001 -- DataFusion raises plain ValueError/Exception
        raise UserError(f"training_data.sql failed over {tables}: {e}\n  SQL: {sql}") from None


def training_set(table, sql: str, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(X float32 [n, width], y int64 [n]) from the SQL result."""
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = [c for c in ("features", "label") if c not in table.column_names]
    if missing:
        raise UserError(f"training_data.sql must return columns `features` and `label`; "
                        f"it returned {table.column_names}\n  SQL: {sql}")
    n = table.num_rows
    feats = table.column("features").combine_chunks()
    labels = table.column("label").combine_chunks()

    t = feats.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) \
            or not (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)):
        raise UserError(f"column `features` must be a list of numbers, got {t}")
    if feats.null_count:
        raise UserError(f"{feats.null_count} of {n} rows have a null `features`; "
                        "filter them in the SQL")
    lengths = pc.list_value_length(feats).to_numpy(zero_copy_only=False)
    if n and not (lengths == width).all():
        bad = sorted(set(int(x) for x in lengths) - {width})
        raise UserError(f"column `features` must hold {width} values per row (the parent's "
                        f"feature_order); found lengths {bad[:5]}")
    values = feats.flatten()
    if values.null_count:
        raise UserError(f"column `features` contains {values.null_count} null values")
    X = values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, width)
    if not np.isfinite(X).all():
        raise UserError("column `features` contains NaN or infinite values")

    if not (pa.types.is_integer(labels.type) or pa.types.is_boolean(labels.type)):
        raise UserError(f"column `label` must be an integer (0 or 1), got {labels.type}")
    if labels.null_count:
        raise UserError(f"{labels.null_count} of {n} rows have a null `label`; "
                        "keep only predictions with feedback (e.g. an inner join)")
    y = labels.cast(pa.int64()).to_numpy(zero_copy_only=False)
    other = sorted(set(np.unique(y).tolist()) - {0, 1})
    if other:
        raise UserError(f"column `label` must be 0 or 1 (binary classifier); found {other[:5]}")
    return X, y


def canonical_order(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorts rows by (features, label) so the split and the training do not
    depend on the order DataFusion returned them in (parallel scans, hash
    joins). Sorting the float bit patterns gives a total order."""
    bits = np.ascontiguousarray(X).view(np.uint32)
    keys = [y] + [bits[:, j] for j in reversed(range(X.shape[1]))]  # last key = primary
    order = np.lexsort(keys)
    return X[order], y[order]


def split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded holdout split of row indices: (train, holdout)."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(np.arange(len(y)), test_size=HOLDOUT_FRACTION,
                                random_state=seed, stratify=y)
    except ValueError as e:
        raise UserError(f"cannot make a stratified {HOLDOUT_FRACTION:.0%} holdout from "
                        f"{len(y)} rows ({int(y.sum())} positive): {e}") from None


# --------------------------------------------------------------------------
# Training, export, evaluation
# --------------------------------------------------------------------------
def train(X: np.ndarray, y: np.ndarray, hidden: tuple[int, ...], seed: int, max_epochs: int):
    """models/fraud/train.py's training with the parent's hidden sizes; the
    epoch count is a cap (training stops when the loss stops improving)
    because retraining sets are much smaller than the original synthetic one."""
    return fraud_train().train(X, y, seed, hidden=hidden, max_iter=max_epochs)


def fraud_train():
    """models/fraud/train.py as a module (training and export helpers)."""
    import importlib.util

    path = Path(__file__).resolve().parent / "models" / "fraud" / "train.py"
    spec = importlib.util.spec_from_file_location("switchyard_fraud_train", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export_onnx(clf, input_name: str, width: int, doc: str) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(clf, initial_types=[(input_name, FloatTensorType([None, width]))],
                  options={id(clf): {"zipmap": False}}, target_opset=TARGET_OPSET)
    onx.doc_string = doc
    outs = [o.name for o in onx.graph.output]
    if outs != ["label", "probabilities"]:
        raise RuntimeError(f"skl2onnx produced outputs {outs}, expected label, probabilities")
    fraud_train().flush_subnormals(onx)
    return onx.SerializeToString()


def run_onnx(model_bytes: bytes, input_name: str, outputs: list[str], X: np.ndarray):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return sess.run(outputs, {input_name: X.astype(np.float32)})


def metrics(y: np.ndarray, label: np.ndarray, p_pos: np.ndarray) -> dict:
    """Holdout accuracy (of the `label` output), ROC AUC and Brier score (of
    the positive-class probability), rounded to 6 decimals."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p_pos, dtype=np.float64)
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None
    return {
        "accuracy": round(float(np.mean(np.asarray(label).astype(np.int64) == y)), 6),
        "roc_auc": None if auc is None else round(auc, 6),
        "brier": round(float(np.mean((p - y) ** 2)), 6),
    }


def parent_metrics(parent: Parent, X: np.ndarray, y: np.ndarray) -> dict:
    try:
        label, proba = run_onnx(parent.model_bytes, parent.input_name,
                                [parent.label_output, parent.proba_output], X)
        return metrics(y, label, np.asarray(proba)[:, parent.positive_index])
    except Exception as e:  # noqa: BLE001 -- the comparison is informative, not required
        log(f"warning: parent version {parent.version} could not be scored on the holdout: {e}")
        return {"error": str(e)}


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def _fmt(m: dict, key: str) -> str:
    v = m.get(key)
    return "n/a" if v is None else f"{v:.4f}"


# --------------------------------------------------------------------------
# One trigger
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    registry: Path | None
    tables: Path | None
    seed: int
    max_epochs: int


def handle(trigger: Trigger, settings: Settings) -> int:
    """Registers a new version for `trigger` (or finds it already done).
    Raises UserError for problems the user must fix."""
    registry = settings.registry or trigger.registry
    if registry is None:
        raise UserError("no registry: the trigger has no `registry` field "
                        "and --registry is not given")
    tables = settings.tables or trigger.tables
    registry, tables = registry.resolve(), tables.resolve()
    name = trigger.model_name
    model_dir = registry / name
    if not model_dir.is_dir():
        raise UserError(f"model `{name}`: folder not found in the registry: {model_dir}")
    log(f"trigger {trigger.trigger_id}: model {name} v{trigger.parent_version}, "
        f"reason {trigger.reason or '-'}, registry {registry}")

    done = find_trigger(model_dir, trigger.trigger_id)
    if done is not None:
        print(f"{name}: trigger {trigger.trigger_id} is already registered as version {done}; "
              "nothing to do", flush=True)
        return EXIT_OK

    parent = load_parent(model_dir, trigger.parent_version)

    t0 = time.perf_counter()
    table = query_tables(tables, trigger.sql)
    if table.num_rows < trigger.min_rows:
        raise UserError(f"too few training rows: the SQL returned {table.num_rows}, "
                        f"training_data.min_rows is {trigger.min_rows} (tables {tables})\n"
                        f"  SQL: {trigger.sql}")
    X, y = training_set(table, trigger.sql, parent.width)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        raise UserError(f"the training rows hold only one class: {len(y)} rows, "
                        f"{positives} with label 1 and {negatives} with label 0 (tables {tables})\n"
                        f"  SQL: {trigger.sql}")
    X, y = canonical_order(X, y)
    log(f"{len(y)} training rows ({positives} positive) in {time.perf_counter() - t0:.1f} s")

    idx_tr, idx_te = split(y, settings.seed)
    hidden, hidden_from = hidden_layers(parent.metadata.get("framework"))
    if hidden_from == "default":
        log(f"parent framework {parent.metadata.get('framework')!r} is not an sklearn "
            f"MLPClassifier; training MLPClassifier {hidden}")
    t1 = time.perf_counter()
    clf = train(X[idx_tr], y[idx_tr], hidden, settings.seed, settings.max_epochs)
    log(f"trained MLPClassifier {hidden} on {len(idx_tr)} rows: {clf.n_iter_} epochs, "
        f"loss {clf.loss_:.5f}, {time.perf_counter() - t1:.1f} s")

    # The doc string holds no version number: the bytes must not depend on
    # which number register() ends up claiming.
    doc = (f"switchyard {name} model retrained from v{parent.version} "
           f"(trigger {trigger.trigger_id})")
    model_bytes = export_onnx(clf, parent.input_name, parent.width, doc)
    label_te, proba_te = run_onnx(model_bytes, parent.input_name, ["label", "probabilities"],
                                  X[idx_te])
    new_m = metrics(y[idx_te], label_te, proba_te[:, 1])
    old_m = parent_metrics(parent, X[idx_te], y[idx_te])
    sha256 = hashlib.sha256(model_bytes).hexdigest()
    trained_at = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")

    def metadata_for(version: str) -> dict:
        meta = {
            "name": name,
            "version": version,
            "framework": f"sklearn MLPClassifier ({','.join(str(h) for h in hidden)})",
            "input": parent.input_name,
            "outputs": {"label": "label", "probabilities": "probabilities",
                        "positive_class_index": 1},
        }
        for key in ("feature_order", "feature_spec"):
            if key in parent.metadata:
                meta[key] = parent.metadata[key]
        meta["sha256"] = sha256
        meta["training"] = {
            "trigger_id": trigger.trigger_id,
            "trigger_created_at": trigger.created_at,
            "pipeline": trigger.pipeline,
            "route": trigger.route,
            "reason": trigger.reason,
            "parent_version": parent.version,
            "rows": int(len(y)),
            "positives": positives,
            "train_rows": int(len(idx_tr)),
            "holdout_rows": int(len(idx_te)),
            "min_rows": trigger.min_rows,
            "sql": trigger.sql,
            "tables": str(tables),
            "seed": settings.seed,
            "epochs": int(clf.n_iter_),
            "holdout": {"new": new_m, "parent": old_m},
            "trained_at": trained_at,
            "script": SCRIPT_PATH,
            "packages": package_versions(),
        }
        return meta

    version, already = register(model_dir, model_bytes, metadata_for, trigger.trigger_id)
    if already:
        print(f"{name}: trigger {trigger.trigger_id} was registered as version {version} "
              "by another run; nothing to do", flush=True)
        return EXIT_OK
    print(f"registered {name} v{version} (parent v{parent.version}): rows={len(y)} "
          f"positives={positives} holdout={len(idx_te)} "
          f"accuracy={_fmt(new_m, 'accuracy')} (parent {_fmt(old_m, 'accuracy')}) "
          f"roc_auc={_fmt(new_m, 'roc_auc')} (parent {_fmt(old_m, 'roc_auc')}) "
          f"brier={_fmt(new_m, 'brier')} (parent {_fmt(old_m, 'brier')}) "
          f"-> {model_dir / version}", flush=True)
    return EXIT_OK


# --------------------------------------------------------------------------
# Trigger sources
# --------------------------------------------------------------------------
def from_file(path: str, settings: Settings) -> int:
    if path == "-":
        data, source = sys.stdin.buffer.read(), "<stdin>"
    else:
        try:
            data, source = Path(path).read_bytes(), path
        except OSError as e:
            raise UserError(f"--trigger-file: cannot read {path}: {e.strerror}") from None
    return handle(decode_trigger(data, source), settings)


def from_kafka(args, settings: Settings) -> int:
    from confluent_kafka import Consumer, KafkaError

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
    })
    consumer.subscribe([args.topic])
    log(f"waiting for triggers on {args.topic} (group {args.group}, {args.bootstrap})")
    idle_since = time.monotonic()
    try:
        while True:
            wait = 1.0
            if args.timeout_s is not None:
                left = args.timeout_s - (time.monotonic() - idle_since)
                if left <= 0:
                    log(f"no trigger on {args.topic} for {args.timeout_s:g} s; stopping")
                    return EXIT_NO_TRIGGER if args.once else EXIT_OK
                wait = min(wait, left)
            msg = consumer.poll(wait)
            if msg is None:
                continue
            if msg.error():
                if msg.error().fatal():
                    raise RuntimeError(f"Kafka: {msg.error()}")
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log(f"Kafka: {msg.error()}")
                continue
            source = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
            try:
                trigger = decode_trigger(msg.value() or b"", source)
                key = msg.key().decode(errors="replace") if msg.key() is not None else None
                if key is not None and key != trigger.model_name:
                    log(f"warning: {source}: record key {key!r} differs from model.name "
                        f"{trigger.model_name!r}; using model.name")
                code = handle(trigger, settings)
            except UserError as e:
                log(f"error: {e}")
                log(f"{source}: trigger rejected")
                code = EXIT_USER
            # Committed only now: a crash before this line leaves the record
            # to the next run, which finds the version by its trigger id.
            consumer.commit(message=msg, asynchronous=False)
            log(f"committed {source}")
            if args.once:
                return code
            idle_since = time.monotonic()
    finally:
        consumer.close()


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
EPILOG = """\
exit codes:
  0  a new version was registered, or the trigger was already registered
     (without --once in Kafka mode: stopped after --timeout-s idle seconds)
  1  unexpected failure (a bug, I/O or Kafka error); nothing is committed
  2  a problem with the trigger, tables, data or registry (the message says
     what to fix): a missing field, too few rows (training_data.min_rows),
     only one class, a failing SQL, a missing table folder
  3  --once: no trigger arrived within --timeout-s

examples:
  retrain.py --trigger-file trigger.json
  retrain.py --trigger-file trigger.json --registry pipelines/models
  retrain.py --bootstrap 127.0.0.1:9092 --once --timeout-s 60
  retrain.py --bootstrap 127.0.0.1:9092 --topic retrain-triggers --group switchyard-retrainer
"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="retrain.py", description=__doc__.split("\nUsage:")[0],
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_argument_group("trigger source (exactly one)")
    src.add_argument("--trigger-file", metavar="PATH",
                     help="handle the trigger in this JSON file ('-' reads stdin) and exit")
    src.add_argument("--bootstrap", metavar="HOST:PORT",
                     help="consume triggers from Kafka at this bootstrap address")
    kafka = ap.add_argument_group("Kafka")
    kafka.add_argument("--topic", default="retrain-triggers",
                       help="trigger topic (default: retrain-triggers)")
    kafka.add_argument("--group", default="switchyard-retrainer",
                       help="consumer group; offsets are committed after each trigger "
                            "is handled (default: switchyard-retrainer)")
    kafka.add_argument("--once", action="store_true",
                       help="handle one trigger, then exit with its exit code")
    kafka.add_argument("--timeout-s", type=float, metavar="S",
                       help="stop after S seconds without a trigger (default: wait forever); "
                            "with --once, exit code 3 when none arrived")
    over = ap.add_argument_group("overrides")
    over.add_argument("--registry", type=Path, metavar="DIR",
                      help="model registry root instead of the trigger's `registry`")
    over.add_argument("--tables", type=Path, metavar="DIR",
                      help="tables root instead of the trigger's `training_data.tables`")
    train_g = ap.add_argument_group("training")
    train_g.add_argument("--seed", type=int, default=DEFAULT_SEED,
                         help=f"seed of the holdout split and the MLP (default: {DEFAULT_SEED})")
    train_g.add_argument("--max-epochs", type=int, default=DEFAULT_MAX_EPOCHS, metavar="N",
                         help="most epochs; training stops earlier when the loss stops "
                              f"improving (default: {DEFAULT_MAX_EPOCHS})")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if (args.trigger_file is None) == (args.bootstrap is None):
        ap.error("give exactly one of --trigger-file and --bootstrap")
    if args.trigger_file is not None and (args.once or args.timeout_s is not None):
        ap.error("--once and --timeout-s apply to --bootstrap only")
    if args.timeout_s is not None and args.timeout_s <= 0:
        ap.error("--timeout-s must be positive")
    if args.max_epochs < 1:
        ap.error("--max-epochs must be at least 1")
    settings = Settings(registry=args.registry, tables=args.tables, seed=args.seed,
                        max_epochs=args.max_epochs)
    try:
        if args.trigger_file is not None:
            return from_file(args.trigger_file, settings)
        return from_kafka(args, settings)
    except UserError as e:
        log(f"error: {e}")
        return EXIT_USER
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except Exception:  # noqa: BLE001 -- last resort: report, exit 1
        log("unexpected failure:\n" + traceback.format_exc().rstrip())
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
