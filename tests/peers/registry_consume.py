"""Reads a topic whose values are in the Confluent wire format with the
reference client's deserializer (confluent-kafka's AvroDeserializer, which
fetches each record's writer schema from the registry by the id in the
record), and prints one JSON object per record:
{"key": ..., "schema_id": ..., "value": {...}}.

Stops after --count records, or when --timeout seconds pass without one.
"""

import argparse
import json
import sys
import time
import uuid

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--registry", required=True, help="base URL of the Confluent-compatible API")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args()

    client = SchemaRegistryClient({"url": a.registry, "timeout": 20})
    deserialize = AvroDeserializer(client)
    consumer = Consumer(
        {
            "bootstrap.servers": a.bootstrap,
            "group.id": f"registry-consume-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([a.topic])
    seen = 0
    last = time.monotonic()
    while seen < a.count and time.monotonic() - last < a.timeout:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            sys.exit(f"consumer error: {msg.error()}")
        value = deserialize(msg.value(), SerializationContext(a.topic, MessageField.VALUE))
        schema_id = int.from_bytes(msg.value()[1:5], "big")
        print(json.dumps({"key": msg.key().decode(), "schema_id": schema_id, "value": value}))
        seen += 1
        last = time.monotonic()
    consumer.close()
    if seen < a.count:
        sys.exit(f"read {seen} of {a.count} records from {a.topic}")


if __name__ == "__main__":
    main()
