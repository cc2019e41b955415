#!/usr/bin/env python3
"""Python baseline for switchyard's benchmark: the same work, done the way a
competent Python data engineer would write it (stdlib `json`, NumPy for the
pre-processing, ONNX Runtime for the model, PyArrow for Parquet,
confluent-kafka for Kafka).

Work per record, as in switchyard's `pipelines/fraud.yaml`:

  bytes -> json.loads -> validate against the `card_txn` schema (object;
  required txn_id/amount/hour; every schema field type-checked with the same
  rules as switchyard: float accepts any number, int accepts integral numbers,
  null == missing) -> lineage id sha256("topic\\0partition\\0offset")[:32]
  -> 16 float32 features (vectorised NumPy, float64 arithmetic)
  -> ONNX model (1 intra-op thread) in batches -> Parquet (+ Kafka).

Not done here (switchyard does it): policy routing with PII/regulated-data
scanning of note/customer_email/card_number, traceparent derivation, the
~28 lineage columns of switchyard's predictions table, 10 lineage headers per
Kafka result, replay de-duplication. Keep that in mind when comparing rates.

Modes (all print one JSON line with the rate at the end, on stdout):

  batch      --input FILE.jsonl --out DIR [--batch 1024] [--chunk 1024]
             [--row-group 65536]
             [--check-reference]
  kafka      --bootstrap HOST:PORT --topic T --group G --out DIR
             [--results-topic RT] [--dlq-topic DT] [--idle-exit-s 3]
             [--batch 1024] [--max-wait-ms 20] [--flush-each-batch]
  kafka-raw  --bootstrap HOST:PORT --topic T --group G [--idle-exit-s 3]
             [--batch 1024] [--max-wait-ms 20]
  drift      --tables DIR [--reference-date D] [--current-date D]
             (the data of `switchyard bench drift`)

Run it with the project's venv:  .venv/bin/python scripts/bench_python.py ...
"""

from __future__ import annotations

import os

# The baseline is single-threaded by design (switchyard's worker uses one
# intra-op thread too); keep any BLAS/OpenMP pool from spreading out.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from itertools import repeat  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "pipelines" / "models" / "fraud" / "1"
MODEL_PATH = MODEL_DIR / "model.onnx"
REFERENCE_PATH = MODEL_DIR / "reference.jsonl"
METADATA_PATH = MODEL_DIR / "metadata.json"

# ---------------------------------------------------------------------------
# The manifest, transcribed (pipelines/fraud.yaml; no YAML parser in the venv).
# ---------------------------------------------------------------------------
STRING, FLOAT, INT, BOOL = "string", "float", "int", "bool"

SCHEMA: list[tuple[str, str, bool]] = [  # (name, type, required)
    ("txn_id", STRING, True),
    ("amount", FLOAT, True),
    ("currency", STRING, False),
    ("merchant_category", STRING, False),
    ("hour", INT, True),
    ("card_present", BOOL, False),
    ("distance_km", FLOAT, False),
    ("txn_count_24h", INT, False),
    ("account_age_days", INT, False),
    ("channel", STRING, False),
    ("country", STRING, False),
    ("customer_email", STRING, False),
    ("card_number", STRING, False),
    ("note", STRING, False),
    ("latency_tier", STRING, False),
]
KEY_FIELD = "txn_id"

# Numeric features: (field, impute or None if required, log1p?, mean, std).
NUMERIC = [
    ("amount", None, True, 3.9, 1.1),
    ("hour", None, False, 12.0, 6.9),
    ("distance_km", 5.0, True, 1.8, 1.2),
    ("txn_count_24h", 2.0, False, 2.5, 2.0),
    ("account_age_days", 365.0, True, 5.5, 1.3),
]
CHANNELS = ["pos", "web", "app"]
CATEGORIES = ["grocery", "electronics", "travel", "restaurant", "online", "fuel", "gambling"]
N_FEATURES = 16
MODEL_REF = "fraud/1"


def use_model(name: str) -> None:
    """Score with version 1 of `name` in pipelines/models (same features as `fraud`)."""
    global MODEL_DIR, MODEL_PATH, REFERENCE_PATH, METADATA_PATH, MODEL_REF
    MODEL_DIR = REPO / "pipelines" / "models" / name / "1"
    MODEL_PATH = MODEL_DIR / "model.onnx"
    REFERENCE_PATH = MODEL_DIR / "reference.jsonl"
    METADATA_PATH = MODEL_DIR / "metadata.json"
    MODEL_REF = f"{name}/1"

# Python types accepted per schema type (None == missing, always accepted
# here; `required` is checked separately). bool is *not* a number: type()
# is compared exactly, so True/False never pass as int/float.
_NONE = type(None)
ALLOWED = {
    STRING: frozenset({str, _NONE}),
    FLOAT: frozenset({float, int, _NONE}),
    INT: frozenset({int, _NONE}),  # integral floats are let through below
    BOOL: frozenset({bool, _NONE}),
}
TYPE_NAME = {STRING: "string", FLOAT: "number", INT: "integer", BOOL: "boolean"}


def _kind(v) -> str:
    """JSON kind of a decoded value, for error messages (never the value)."""
    if v is None:
        return "null"
    t = type(v)
    if t is bool:
        return "boolean"
    if t is int:
        return "integer"
    if t is float:
        return "number"
    if t is str:
        return "string"
    if t is list:
        return "array"
    return "object"


def _check_metadata() -> None:
    """Cross-checks the transcribed constants with the model's metadata.json."""
    meta = json.loads(METADATA_PATH.read_text())
    spec = meta["feature_spec"]
    for name, impute, log, mean, std in NUMERIC:
        s = spec[name]
        want = "log1p_standardize" if log else "standardize"
        ok = (s["transform"] == want and s["center"] == mean and s["scale"] == std
              and (s["impute"] is None if impute is None else float(s["impute"]) == impute))
        if not ok:
            raise SystemExit(f"feature {name!r}: constants disagree with {METADATA_PATH}")
    if spec["channel"]["categories"] != CHANNELS or spec["merchant_category"]["categories"] != CATEGORIES:
        raise SystemExit(f"one-hot categories disagree with {METADATA_PATH}")
    if len(meta["feature_order"]) != N_FEATURES:
        raise SystemExit("feature count disagrees with metadata.json")


# ---------------------------------------------------------------------------
# Decode + validate + featurise + score one chunk of raw records.
# ---------------------------------------------------------------------------
def _reject_constant(name: str):
    # serde_json (switchyard) rejects NaN/Infinity literals; so do we.
    raise ValueError(f"{name} is not valid JSON")


# Built once: json.loads(s, **kw) would build a new decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_decode_json = _DECODER.decode


@dataclass
class Chunk:
    """Raw records of one chunk: payload bytes (None: tombstone) + coordinates."""
    payloads: list
    topics: list          # str per record
    partitions: list      # int per record
    offsets: list         # int per record
    keys: list | None = None  # Kafka keys (bytes/None), only for the DLQ


@dataclass
class Result:
    # valid rows
    lineage_ids: list = field(default_factory=list)
    keys: list = field(default_factory=list)
    topics: list = field(default_factory=list)
    partitions: list = field(default_factory=list)
    offsets: list = field(default_factory=list)
    scores: np.ndarray | None = None    # float64 [n]
    labels: np.ndarray | None = None    # int64 [n]
    features: np.ndarray | None = None  # float32 [n, 16]
    # rejected rows
    rej_index: list = field(default_factory=list)   # index into the chunk
    rej_stage: list = field(default_factory=list)
    rej_class: list = field(default_factory=list)
    rej_message: list = field(default_factory=list)
    rej_lineage_ids: list = field(default_factory=list)

    @property
    def n_valid(self) -> int:
        return len(self.keys)

    @property
    def n_rejected(self) -> int:
        return len(self.rej_index)


def lineage_ids(topics: list, partitions: list, offsets: list) -> list:
    sha = hashlib.sha256
    return [sha(f"{t}\0{p}\0{o}".encode()).hexdigest()[:32]
            for t, p, o in zip(topics, partitions, offsets)]


def _bad_types(col: list, ftype: str) -> dict:
    """{row: kind} for values of the wrong JSON type in `col` (columnar check)."""
    allowed = ALLOWED[ftype]
    types = set(map(type, col))
    if types <= allowed:
        return {}
    bad = {}
    if ftype == INT:
        for i, v in enumerate(col):
            t = type(v)
            if t is int or v is None:
                continue
            # 3.0 is an integer written as a float; 3.5 is not (as switchyard).
            if t is float and v.is_integer() and abs(v) <= 9.0e15:
                continue
            bad[i] = _kind(v)
    else:
        for i, v in enumerate(col):
            if type(v) not in allowed:
                bad[i] = _kind(v)
    return bad


def _to_float(col: list) -> np.ndarray:
    """Column values (numbers/None) -> float64 with NaN for missing. Values of
    other types only occur on rows already rejected; they become NaN."""
    try:
        return np.array(col, dtype=np.float64)  # None -> nan
    except (OverflowError, ValueError, TypeError):  # "twelve", a list, a huge int, ...
        out = np.empty(len(col))
        for i, v in enumerate(col):
            t = type(v)
            if t is float or t is int:
                try:
                    out[i] = float(v)
                except OverflowError:
                    out[i] = math.inf  # rejected below as non-finite
            else:
                out[i] = math.nan
        return out


class Scorer:
    """The model, plus the per-chunk pipeline that feeds it."""

    def __init__(self, batch: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(str(MODEL_PATH), so, providers=["CPUExecutionProvider"])
        self.batch = max(1, batch)
        self.onnx_seconds = 0.0
        self.onnx_runs = 0

    def infer(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(score float64 [n], label int64 [n]) in batches of `self.batch` rows."""
        n = X.shape[0]
        scores = np.empty(n, dtype=np.float64)
        labels = np.empty(n, dtype=np.int64)
        run = self.sess.run
        t0 = time.perf_counter()
        for s in range(0, n, self.batch):
            label, proba = run(["label", "probabilities"], {"features": X[s:s + self.batch]})
            scores[s:s + self.batch] = proba[:, 1]
            labels[s:s + self.batch] = label
            self.onnx_runs += 1
        self.onnx_seconds += time.perf_counter() - t0
        return scores, labels

    def process(self, chunk: Chunk) -> Result:
        payloads = chunk.payloads
        n = len(payloads)
        res = Result()
        lids = lineage_ids(chunk.topics, chunk.partitions, chunk.offsets)

        def reject(i, stage, cls, msg):
            res.rej_index.append(i)
            res.rej_stage.append(stage)
            res.rej_class.append(cls)
            res.rej_message.append(msg)

        # 1. Decode: bytes -> dict (one json parse per record; unavoidable in Python).
        objs: list[dict] = []
        idx: list[int] = []
        decode = _decode_json
        for i, p in enumerate(payloads):
            if not p:
                reject(i, "decode", "empty_payload", "record has no value (tombstone or empty message)")
                continue
            try:
                o = decode(p.decode("utf-8"))
            except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
                reject(i, "decode", "invalid_json", f"value is not valid JSON: {e}")
                continue
            if type(o) is dict:
                objs.append(o)
                idx.append(i)
            else:
                reject(i, "decode", "not_an_object", f"value is a JSON {_kind(o)}, expected an object")

        # 2. Validate, column by column: gather each schema field once.
        cols: dict[str, list] = {}
        errors: dict[int, tuple[str, str]] = {}  # position in objs -> (class, message)
        for name, ftype, required in SCHEMA:
            col = list(map(dict.get, objs, repeat(name)))  # C loop, no per-row bytecode
            cols[name] = col
            for j, kind in _bad_types(col, ftype).items():
                if j not in errors:
                    errors[j] = ("wrong_type",
                                 f"field `{name}`: expected {TYPE_NAME[ftype]}, got {kind}")
        for name, _ftype, required in SCHEMA:
            if required and None in cols[name]:
                for j, v in enumerate(cols[name]):
                    if v is None and j not in errors:
                        errors[j] = ("missing_field", f"required field `{name}` is missing or null")

        keep = np.ones(len(objs), dtype=bool)
        for j, (cls, msg) in errors.items():
            keep[j] = False
            reject(idx[j], "validate", cls, msg)

        # 3. Features, vectorised over the chunk (float64 arithmetic, float32 out).
        m = len(objs)
        X64 = np.zeros((m, N_FEATURES), dtype=np.float64)
        finite = np.ones(m, dtype=bool)
        numeric_cols = [0, 1, 3, 4, 5]
        for c, (name, impute, log, mean, std) in zip(numeric_cols, NUMERIC):
            x = _to_float(cols[name])
            if impute is not None:
                x[np.isnan(x)] = impute
            finite &= np.isfinite(x) | ~keep  # rows already rejected: ignore
            if log:
                x = np.log1p(np.maximum(x, 0.0))  # switchyard clamps negatives to 0
            X64[:, c] = (x - mean) / std
        X64[:, 2] = [v is True for v in cols["card_present"]]
        for base, name, cats in ((6, "channel", CHANNELS), (9, "merchant_category", CATEGORIES)):
            lookup = {c: k for k, c in enumerate(cats)}
            get = lookup.get
            try:
                code = np.fromiter(map(get, cols[name], repeat(-1)), dtype=np.int64, count=m)
            except TypeError:  # an unhashable value (list/object) on a rejected row
                code = np.fromiter((get(v, -1) if type(v) is str else -1 for v in cols[name]),
                                   dtype=np.int64, count=m)
            hit = code >= 0
            X64[np.nonzero(hit)[0], base + code[hit]] = 1.0
        for j in np.nonzero(keep & ~finite)[0]:
            keep[j] = False
            reject(idx[j], "preprocess", "feature_error", "a numeric feature is not a finite number")

        if errors or not finite.all():  # keep the DLQ in source order
            order = sorted(range(len(res.rej_index)), key=res.rej_index.__getitem__)
            for name in ("rej_index", "rej_stage", "rej_class", "rej_message"):
                col = getattr(res, name)
                setattr(res, name, [col[k] for k in order])

        sel = np.nonzero(keep)[0]
        X = np.ascontiguousarray(X64[sel], dtype=np.float32)
        res.features = X
        res.scores, res.labels = self.infer(X)

        valid_rows = [idx[j] for j in sel.tolist()]
        key_col = cols[KEY_FIELD]
        res.keys = [key_col[j] for j in sel.tolist()]
        res.lineage_ids = [lids[i] for i in valid_rows]
        res.topics = [chunk.topics[i] for i in valid_rows]
        res.partitions = [chunk.partitions[i] for i in valid_rows]
        res.offsets = [chunk.offsets[i] for i in valid_rows]
        res.rej_lineage_ids = [lids[i] for i in res.rej_index]
        return res


# ---------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------
def _schemas():
    import pyarrow as pa

    pred = pa.schema([
        ("lineage_id", pa.string()),
        ("key", pa.string()),
        ("source_topic", pa.string()),
        ("source_partition", pa.int32()),
        ("source_offset", pa.int64()),
        ("score", pa.float64()),
        ("label", pa.int64()),
        ("features", pa.list_(pa.field("item", pa.float32(), nullable=False))),
    ])
    dlq = pa.schema([
        ("lineage_id", pa.string()),
        ("source_topic", pa.string()),
        ("source_partition", pa.int32()),
        ("offset", pa.int64()),
        ("stage", pa.string()),
        ("error_class", pa.string()),
        ("error", pa.string()),
        ("key", pa.binary()),
        ("payload", pa.binary()),
    ])
    return pred, dlq


class ParquetOut:
    """predictions.parquet + rejected.parquet under DIR (snappy, as switchyard)."""

    def __init__(self, out_dir: Path, tag: str, row_group: int = 0):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa, self.pq = pa, pq
        out_dir.mkdir(parents=True, exist_ok=True)
        self.pred_schema, self.dlq_schema = _schemas()
        self.pred_path = out_dir / f"predictions-{tag}.parquet"
        self.dlq_path = out_dir / f"rejected-{tag}.parquet"
        self.pred = pq.ParquetWriter(self.pred_path, self.pred_schema, compression="snappy")
        self.dlq = pq.ParquetWriter(self.dlq_path, self.dlq_schema, compression="snappy")
        # row_group > 0: buffer chunks and write row groups of that many rows
        # (switchyard: up to 64Ki rows per row group); 0: write every chunk now.
        self.row_group = row_group
        self.pending: dict[str, list] = {"pred": [], "dlq": []}
        self.pending_rows = {"pred": 0, "dlq": 0}

    def _emit(self, which: str, table, force: bool = False) -> None:
        writer = self.pred if which == "pred" else self.dlq
        if table is not None:
            if self.row_group <= 0:
                writer.write_table(table)
                return
            self.pending[which].append(table)
            self.pending_rows[which] += table.num_rows
        rows = self.pending_rows[which]
        if self.pending[which] and (force or rows >= self.row_group):
            big = self.pa.concat_tables(self.pending[which])
            # whole row groups now; the remainder waits for the next chunks
            n = rows if force else rows - rows % self.row_group
            writer.write_table(big.slice(0, n), row_group_size=self.row_group)
            rest = big.slice(n)
            self.pending[which] = [rest] if rest.num_rows else []
            self.pending_rows[which] = rest.num_rows

    def write(self, chunk: Chunk, res: Result) -> None:
        pa = self.pa
        n = res.n_valid
        if n:
            X = res.features
            offsets = pa.array(np.arange(0, N_FEATURES * (n + 1), N_FEATURES, dtype=np.int32))
            feats = pa.ListArray.from_arrays(offsets, pa.array(X.reshape(-1)),
                                             type=self.pred_schema.field("features").type)
            table = pa.Table.from_arrays([
                pa.array(res.lineage_ids, pa.string()),
                pa.array(res.keys, pa.string()),
                pa.array(res.topics, pa.string()),
                pa.array(res.partitions, pa.int32()),
                pa.array(res.offsets, pa.int64()),
                pa.array(res.scores),
                pa.array(res.labels),
                feats,
            ], schema=self.pred_schema)
            self._emit("pred", table)
        if res.n_rejected:
            ri = res.rej_index
            ckeys = chunk.keys
            table = pa.Table.from_arrays([
                pa.array(res.rej_lineage_ids, pa.string()),
                pa.array([chunk.topics[i] for i in ri], pa.string()),
                pa.array([chunk.partitions[i] for i in ri], pa.int32()),
                pa.array([chunk.offsets[i] for i in ri], pa.int64()),
                pa.array(res.rej_stage, pa.string()),
                pa.array(res.rej_class, pa.string()),
                pa.array(res.rej_message, pa.string()),
                pa.array([ckeys[i] for i in ri] if ckeys is not None else [None] * len(ri), pa.binary()),
                pa.array([chunk.payloads[i] for i in ri], pa.binary()),
            ], schema=self.dlq_schema)
            self._emit("dlq", table)

    def close(self) -> None:
        self._emit("pred", None, force=True)
        self._emit("dlq", None, force=True)
        self.pred.close()
        self.dlq.close()


# ---------------------------------------------------------------------------
# Reference check
# ---------------------------------------------------------------------------
def check_reference(batch: int) -> bool:
    refs = [json.loads(line) for line in REFERENCE_PATH.read_text().splitlines() if line.strip()]
    payloads = [json.dumps(r["event"]).encode() for r in refs]
    n = len(payloads)
    chunk = Chunk(payloads, ["reference.jsonl"] * n, [0] * n, list(range(n)))
    res = Scorer(batch).process(chunk)
    ok = res.n_valid == n and res.n_rejected == 0
    if not ok:
        print(f"reference: {res.n_rejected} of {n} events rejected: "
              f"{list(zip(res.rej_index, res.rej_message))[:5]}", file=sys.stderr)
        return False
    want_score = np.array([r["score"] for r in refs])
    want_label = np.array([r["label"] for r in refs])
    want_feat = np.array([r["features"] for r in refs], dtype=np.float32)
    d_score = float(np.max(np.abs(res.scores - want_score)))
    d_feat = float(np.max(np.abs(res.features - want_feat)))
    labels_ok = bool(np.array_equal(res.labels, want_label))
    ok = d_score <= 1e-5 and d_feat <= 1e-5 and labels_ok
    print(f"reference: {n} events, max |score diff| {d_score:.3g}, "
          f"max |feature diff| {d_feat:.3g}, labels {'equal' if labels_ok else 'DIFFER'}: "
          f"{'ok' if ok else 'MISMATCH'}", file=sys.stderr)
    return ok


# ---------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------
def _report(mode: str, rows: int, valid: int, rejected: int, seconds: float, **extra) -> None:
    rec = {"mode": mode, "rows": rows, "valid": valid, "rejected": rejected,
           "seconds": round(seconds, 6), "rows_per_s": round(rows / seconds, 1) if seconds > 0 else None}
    rec.update(extra)
    print(json.dumps(rec), flush=True)


def cmd_batch(args) -> int:
    _check_metadata()
    if args.check_reference:
        if not check_reference(args.batch):
            return 1
        if args.input is None:
            return 0
    if args.input is None or args.out is None:
        print("batch: --input and --out are required (unless only --check-reference)", file=sys.stderr)
        return 2

    # Untimed: read the file, split into lines (as switchyard's FileSource:
    # every line is a record, empty ones too; only the final newline is not).
    data = args.input.read_bytes()
    if data.endswith(b"\n"):
        data = data[:-1]
    lines = data.split(b"\n") if data else []
    del data
    topic = args.input.name
    scorer = Scorer(args.batch)
    out = ParquetOut(args.out, "batch", row_group=args.row_group)

    n = len(lines)
    valid = rejected = 0
    step = max(1, args.chunk)
    t0 = time.perf_counter()
    for s in range(0, n, step):
        part = lines[s:s + step]
        k = len(part)
        chunk = Chunk(part, [topic] * k, [0] * k, list(range(s, s + k)))
        res = scorer.process(chunk)
        out.write(chunk, res)
        valid += res.n_valid
        rejected += res.n_rejected
    out.close()
    seconds = time.perf_counter() - t0
    _report("batch", n, valid, rejected, seconds,
            onnx_seconds=round(scorer.onnx_seconds, 6), onnx_runs=scorer.onnx_runs,
            batch=args.batch, chunk=step, row_group=args.row_group, out=str(args.out))
    return 0 if valid + rejected == n else 1


def _consumer(args, extra: dict | None = None):
    from confluent_kafka import Consumer

    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        # as switchyard's consumer / fraud.yaml
        "session.timeout.ms": 10000,
        "queued.max.messages.kbytes": 16384,
    }
    conf.update(extra or {})
    c = Consumer(conf)
    c.subscribe([args.topic])
    return c


def _consume_loop(consumer, args, handle) -> tuple[int, float | None, float | None]:
    """Consumes batches until idle for --idle-exit-s after the first message (or
    --startup-timeout-s without any). handle(msgs) is called per non-empty batch.
    Returns (messages, time of first message, time the last batch was handled)."""
    from confluent_kafka import KafkaError

    wait = max(0.001, args.max_wait_ms / 1000.0)
    start = time.perf_counter()
    first = last_msg = done = None
    count = 0
    while True:
        msgs = consumer.consume(num_messages=args.batch, timeout=wait)
        now = time.perf_counter()
        if msgs:
            good = []
            for m in msgs:
                err = m.error()
                if err is None:
                    good.append(m)
                elif err.code() != KafkaError._PARTITION_EOF:
                    print(f"consumer error: {err}", file=sys.stderr)
            msgs = good
        if not msgs:
            if first is None:
                if now - start >= args.startup_timeout_s:
                    break
            elif now - last_msg >= args.idle_exit_s:
                break
            handle(None)
            continue
        if first is None:
            first = now
        last_msg = now
        count += len(msgs)
        handle(msgs)
        done = time.perf_counter()
    return count, first, done


def cmd_kafka(args) -> int:
    from confluent_kafka import KafkaError, KafkaException, Producer

    _check_metadata()
    scorer = Scorer(args.batch)
    out = ParquetOut(args.out, f"kafka-{os.getpid()}")
    producer = None
    delivery_errors = [0]
    if args.results_topic or args.dlq_topic:
        producer = Producer({
            "bootstrap.servers": args.bootstrap,
            "linger.ms": 5,
            "enable.idempotence": True,               # as switchyard's sink
            "queue.buffering.max.messages": 200000,   # as switchyard's sink
        })

    def on_delivery(err, _msg):
        if err is not None:
            delivery_errors[0] += 1

    encode = json.JSONEncoder(separators=(",", ":")).encode

    def produce(topic, value, key, headers):
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
                return
            except BufferError:  # local queue full: serve deliveries, retry
                producer.poll(0.05)

    consumer = _consumer(args)
    totals = {"valid": 0, "rejected": 0, "commits": 0}

    def handle(msgs):
        if msgs is None:
            if producer is not None:
                producer.poll(0)
            return
        chunk = Chunk([m.value() for m in msgs], [m.topic() for m in msgs],
                      [m.partition() for m in msgs], [m.offset() for m in msgs],
                      [m.key() for m in msgs])
        res = scorer.process(chunk)
        out.write(chunk, res)
        if producer is not None and args.results_topic and res.n_valid:
            feats = res.features.tolist()
            scores = res.scores.tolist()
            labels = res.labels.tolist()
            rt = args.results_topic
            for i in range(res.n_valid):
                lid = res.lineage_ids[i]
                body = encode({
                    "key": res.keys[i], "score": scores[i], "label": labels[i],
                    "features": feats[i], "lineage_id": lid,
                    "source_topic": res.topics[i], "source_partition": res.partitions[i],
                    "source_offset": res.offsets[i], "model": MODEL_REF,
                })
                produce(rt, body, res.keys[i], [("switchyard.lineage_id", lid)])
                if i & 255 == 255:
                    producer.poll(0)
        if producer is not None and args.dlq_topic and res.n_rejected:
            for k, i in enumerate(res.rej_index):
                produce(args.dlq_topic, msgs[i].value(), msgs[i].key(), [
                    ("__connect.errors.topic", chunk.topics[i]),
                    ("__connect.errors.partition", str(chunk.partitions[i])),
                    ("__connect.errors.offset", str(chunk.offsets[i])),
                    ("__connect.errors.stage", res.rej_stage[k]),
                    ("__connect.errors.class.name", res.rej_class[k]),
                    ("__connect.errors.exception.message", res.rej_message[k]),
                    ("switchyard.lineage_id", res.rej_lineage_ids[k]),
                ])
        if producer is not None:
            producer.poll(0)
            if args.flush_each_batch:
                producer.flush()  # results acknowledged before the commit (as switchyard)
        totals["valid"] += res.n_valid
        totals["rejected"] += res.n_rejected
        try:
            consumer.commit(asynchronous=False)  # offsets of everything consumed so far
            totals["commits"] += 1
        except KafkaException as e:
            if e.args[0].code() != KafkaError._NO_OFFSET:
                raise

    try:
        count, first, done = _consume_loop(consumer, args, handle)
        flush_s = 0.0
        if producer is not None:
            t = time.perf_counter()
            left = producer.flush(60)
            flush_s = time.perf_counter() - t
            if left:
                print(f"producer: {left} messages not delivered", file=sys.stderr)
                delivery_errors[0] += left
    finally:
        out.close()
        consumer.close()
    # Measured: first message received -> last batch processed and committed,
    # plus the final producer flush (the idle wait before exit is excluded).
    seconds = (done - first + flush_s) if first is not None else 0.0
    _report("kafka", count, totals["valid"], totals["rejected"], seconds,
            commits=totals["commits"], delivery_errors=delivery_errors[0],
            onnx_seconds=round(scorer.onnx_seconds, 6), batch=args.batch,
            out=str(args.out))
    if first is None:
        print("kafka: no message arrived", file=sys.stderr)
        return 1
    return 0 if delivery_errors[0] == 0 else 1


def cmd_kafka_raw(args) -> int:
    consumer = _consumer(args)
    nbytes = [0]

    def handle(msgs):
        if msgs:
            for m in msgs:
                v = m.value()
                if v:
                    nbytes[0] += len(v)

    try:
        count, first, done = _consume_loop(consumer, args, handle)
    finally:
        consumer.close()
    seconds = (done - first) if first is not None else 0.0
    _report("kafka-raw", count, count, 0, seconds, bytes=nbytes[0], batch=args.batch)
    return 0 if first is not None else 1


# ---------------------------------------------------------------------------
# Hidden: a generator of events shaped like `switchyard generate` (for testing
# this script without the Rust binary; not the same random stream).
# ---------------------------------------------------------------------------
def cmd_gen(args) -> int:
    import random

    rng = random.Random(args.seed)
    countries = ["US", "GB", "DE", "FR", "NL", "ES"]
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    with open(args.out, "w") as fh:
        for i in range(args.events):
            txn_id = f"tx-{i:010d}"
            fraud = rng.random() < 0.025
            amount = min(max(math.exp((5.2 if fraud else 3.9) + rng.gauss(0, 1)), 0.5), 25000.0)
            amount = round(amount * 100) / 100
            hour = rng.randrange(6) if fraud and rng.random() < 0.6 else rng.randrange(24)
            cat = rng.choice(["electronics", "online", "gambling"]) if fraud else rng.choice(CATEGORIES)
            channel = "web" if fraud and rng.random() < 0.6 else rng.choice(CHANNELS)

            def maybe(v):
                return None if rng.random() < 0.05 else v

            dist = math.exp((5.0 if fraud else 1.8) + 1.2 * rng.gauss(0, 1))
            ev = {
                "txn_id": txn_id, "amount": amount, "currency": rng.choice(["USD", "EUR", "GBP"]),
                "merchant_category": cat, "hour": hour,
                "card_present": channel == "pos" and not fraud,
                "distance_km": maybe(round(dist * 10) / 10),
                "txn_count_24h": maybe(rng.randrange(15 if fraud else 6)),
                "account_age_days": maybe(rng.randrange(1, 200) if fraud else rng.randrange(30, 4000)),
                "channel": channel, "country": rng.choice(countries),
            }
            if rng.random() < 0.10:
                k = rng.randrange(4)
                if k == 0:
                    ev["customer_email"] = f"customer{i}@example.com"
                elif k == 1:
                    ev["note"] = f"call back on +44 20 7946 {i % 10000:04d}"
                elif k == 2:
                    ev["card_number"] = "4111 1111 1111 1111"
                else:
                    ev["note"] = f"receipt to jane.doe{i}@example.org"
            elif rng.random() < 0.2:
                ev["note"] = f"order {100000 + i % 900000} gift wrap"
            if rng.random() < args.malformed_rate:
                k = rng.randrange(5)
                if k == 0:
                    line = '{"txn_id": "broken'
                elif k == 1:
                    ev.pop("amount")
                    line = dumps(ev)
                elif k == 2:
                    ev["amount"] = "twelve"
                    line = dumps(ev)
                elif k == 3:
                    line = "[1, 2, 3]"
                else:
                    line = ""
            else:
                line = dumps(ev)
            fh.write(line + "\n")
    print(f"wrote {args.events} records to {args.out}", file=sys.stderr)
    return 0


def _sturges_shares(r: np.ndarray, c: np.ndarray):
    edges = np.histogram_bin_edges(np.concatenate([r, c]), bins="sturges")
    hr, _ = np.histogram(r, edges)
    hc, _ = np.histogram(c, edges)
    return hr / len(r), hc / len(c)


def _value_shares(r: np.ndarray, c: np.ndarray):
    values = np.union1d(np.unique(r), np.unique(c))
    hr = np.array([np.count_nonzero(r == v) for v in values])
    hc = np.array([np.count_nonzero(c == v) for v in values])
    return hr / len(r), hc / len(c)


def _psi(pr: np.ndarray, pc: np.ndarray) -> float:
    def fill(p):
        p = p.copy()
        p[p == 0] = p[p > 0].min() / 10 if (p > 0).any() else 1e-4
        return p
    pr, pc = fill(pr), fill(pc)
    return float(np.sum((pr - pc) * np.log(pr / pc)))


def cmd_drift(args) -> int:
    """The drift report's statistics over the same Parquet rows, the way a
    Python analyst would compute them: pyarrow to read, numpy/scipy for
    PSI, KS (statistic and p-value), Jensen-Shannon, Wasserstein / std."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import ks_2samp, wasserstein_distance

    t0 = time.perf_counter()
    data = ds.dataset(args.tables / "predictions", format="parquet", partitioning="hive")

    def window(date: str):
        f = (pc.field("date") == date) & (pc.field("model_name") == "fraud") & ~pc.field("shadow")
        t = data.to_table(columns=["features", "score"], filter=f)
        feats = pc.list_flatten(t.column("features")).to_numpy().reshape(t.num_rows, -1)
        score = t.column("score").to_numpy()
        return np.column_stack([feats.astype(np.float64), score])

    ref, cur = window(args.reference_date), window(args.current_date)
    t_read = time.perf_counter() - t0
    drifted = []
    for j in range(ref.shape[1]):
        r, c = ref[:, j], cur[:, j]
        distinct_ref = len(np.unique(r[:1000_000]))
        pr, pcur = _sturges_shares(r, c) if distinct_ref > 20 else _value_shares(r, c)
        psi = _psi(pr, pcur)
        js = float(jensenshannon(pr, pcur, base=2))
        ks = ks_2samp(r, c)
        wd = wasserstein_distance(r, c) / max(float(np.std(r)), 0.001)
        test_score = wd if distinct_ref > 5 else js
        if test_score >= 0.1:
            drifted.append(j)
        _ = (psi, ks.statistic, ks.pvalue)
    total = time.perf_counter() - t0
    print(json.dumps({"bench": "drift-python", "reference_rows": int(ref.shape[0]), "current_rows": int(cur.shape[0]),
                      "columns": int(ref.shape[1]), "drifted": drifted, "read_s": t_read, "seconds": total}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fraud",
                    help="model of pipelines/models to score with, version 1 (default fraud; fraud-large takes "
                         "the same features)")
    sub = ap.add_subparsers(dest="mode", required=True, metavar="{batch,kafka,kafka-raw,drift}")

    b = sub.add_parser("batch", help="JSON Lines file -> Parquet (file read not timed)")
    b.add_argument("--input", type=Path, help="JSON Lines file (topic = its file name, partition 0, offset = line)")
    b.add_argument("--out", type=Path, help="output folder for predictions-batch.parquet / rejected-batch.parquet")
    b.add_argument("--batch", type=int, default=1024, help="rows per ONNX run (default 1024)")
    b.add_argument("--chunk", type=int, default=1024,
                   help="records decoded/validated/featurised per step (default 1024, as fraud.yaml's chunk_size; "
                        "small chunks stay in cache and are faster than whole-file steps)")
    b.add_argument("--row-group", type=int, default=65536,
                   help="Parquet rows per row group; results are buffered to this size (default 65536, as switchyard)")
    b.add_argument("--check-reference", action="store_true",
                   help="first check scores/labels/features on the model's reference.jsonl (1e-5); exit 1 on mismatch")
    b.set_defaults(func=cmd_batch)

    def kafka_common(p):
        p.add_argument("--bootstrap", required=True, help="HOST:PORT")
        p.add_argument("--topic", required=True)
        p.add_argument("--group", required=True, help="consumer group (use a fresh one per run)")
        p.add_argument("--idle-exit-s", type=float, default=3.0,
                       help="stop after this long without a message, once one arrived (default 3)")
        p.add_argument("--startup-timeout-s", type=float, default=60.0,
                       help="give up if no message arrives within this long (default 60)")
        p.add_argument("--batch", type=int, default=1024, help="max messages per consume() = per model batch (default 1024)")
        p.add_argument("--max-wait-ms", type=float, default=20.0,
                       help="consume() timeout: how long to wait to fill a batch (default 20, as chunk_max_wait_ms)")

    k = sub.add_parser("kafka", help="Kafka -> model -> Parquet (+ results topic)")
    kafka_common(k)
    k.add_argument("--out", type=Path, required=True, help="output folder for the Parquet files")
    k.add_argument("--results-topic", help="produce one JSON result per valid record here")
    k.add_argument("--dlq-topic", help="produce rejected records (original key/value) here")
    k.add_argument("--flush-each-batch", action="store_true",
                   help="wait for the broker's acks of a batch's results before committing its offsets")
    k.set_defaults(func=cmd_kafka)

    r = sub.add_parser("kafka-raw", help="only consume and count (Python's consume rate)")
    kafka_common(r)
    r.set_defaults(func=cmd_kafka_raw)

    d = sub.add_parser("drift", help="drift statistics over switchyard's predictions table (numpy/scipy)")
    d.add_argument("--tables", type=Path, required=True)
    d.add_argument("--reference-date", default="2026-01-01")
    d.add_argument("--current-date", default="2026-01-02")
    d.set_defaults(func=cmd_drift)

    g = sub.add_parser("gen", help=argparse.SUPPRESS)
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--events", type=int, default=10000)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--malformed-rate", type=float, default=0.01)
    g.set_defaults(func=cmd_gen)
    # keep the hidden mode out of the usage line's choices
    sub._choices_actions = [a for a in sub._choices_actions if a.dest != "gen"]

    args = ap.parse_args(argv)
    use_model(args.model)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
