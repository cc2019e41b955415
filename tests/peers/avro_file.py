"""Writes JSON Lines events as an Avro object container file with fastavro
(the reference Python implementation), using the card transaction schema of
registry_produce.py (its first version), deflate blocks of 500 records.

    avro_file.py --events events.jsonl --out events.avro
"""

import argparse
import json
import os
import sys

import fastavro

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import registry_produce  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--codec", default="deflate")
    a = ap.parse_args()
    v1, _ = registry_produce.avro_schemas()
    schema = fastavro.parse_schema(json.loads(v1))
    records = []
    with open(a.events, "rb") as f:
        for line in f:
            if line.strip():
                r = registry_produce.typed(json.loads(line))
                r["legacy_code"] = "x"
                records.append(r)
    with open(a.out, "wb") as out:
        fastavro.writer(out, schema, records, codec=a.codec, sync_interval=16_000)
    print(json.dumps({"records": len(records)}))


if __name__ == "__main__":
    main()
