"""Produces the same card transactions three ways with the reference client
(confluent-kafka and its Schema Registry serializers): as plain JSON, as Avro
and as JSON Schema in the Confluent wire format, registering the schemas in
a real registry (TopicNameStrategy). Half-way through the Avro topic the
writer schema evolves: fields reordered, one removed, one added with a
default, so the stream carries two schema ids.

With --bad, three records that must go to the DLQ follow on the Avro topic:
one without the magic byte, one naming a schema id the registry does not
have, and one whose bytes are cut short under a real id.

Prints {"avro_ids": [v1, v2], "json_schema_id": id} on stdout.
"""

import argparse
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry import topic_subject_name_strategy
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

# (name, Avro type, JSON Schema type, required) of the fraud pipeline's events.
FIELDS = [
    ("txn_id", "string", "string", True),
    ("amount", "double", "number", True),
    ("currency", "string", "string", False),
    ("merchant_category", "string", "string", False),
    ("hour", "int", "integer", True),
    ("card_present", "boolean", "boolean", False),
    ("distance_km", "double", "number", False),
    ("txn_count_24h", "int", "integer", False),
    ("account_age_days", "int", "integer", False),
    ("channel", "string", "string", False),
    ("country", "string", "string", False),
    ("customer_email", "string", "string", False),
    ("card_number", "string", "string", False),
    ("note", "string", "string", False),
    ("latency_tier", "string", "string", False),
]


STRATEGY = {"subject.name.strategy": topic_subject_name_strategy}


def avro_field(name, ty, required):
    if required:
        return {"name": name, "type": ty}
    return {"name": name, "type": ["null", ty], "default": None}


def avro_schemas():
    v1 = [avro_field(n, t, r) for n, t, _, r in FIELDS]
    v1.append({"name": "legacy_code", "type": "string", "default": ""})
    # v2: the same fields in reverse order, legacy_code gone, one added.
    v2 = [avro_field(n, t, r) for n, t, _, r in reversed(FIELDS)]
    v2.append({"name": "terminal", "type": "string", "default": "unknown"})
    record = lambda fields: json.dumps(  # noqa: E731
        {"type": "record", "name": "CardTxn", "namespace": "switchyard.test", "fields": fields}
    )
    return record(v1), record(v2)


def json_schema():
    props = {}
    for n, _, t, r in FIELDS:
        props[n] = {"type": t} if r else {"type": [t, "null"]}
    return json.dumps(
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "title": "CardTxn",
            "type": "object",
            "properties": props,
            "required": [n for n, _, _, r in FIELDS if r],
        }
    )


def typed(event):
    """The event with integer fields as ints (JSON may write 3.0)."""
    out = {}
    for n, avro_ty, _, _ in FIELDS:
        v = event.get(n)
        if v is not None and avro_ty == "int":
            v = int(v)
        elif v is not None and avro_ty == "double":
            v = float(v)
        out[n] = v
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--registry", required=True, help="base URL of the Confluent-compatible API")
    ap.add_argument("--events", required=True, help="JSON Lines, one event per line")
    ap.add_argument("--json-topic")
    ap.add_argument("--avro-topic")
    ap.add_argument("--json-schema-topic")
    ap.add_argument("--bad", action="store_true")
    ap.add_argument("--user-info", help="USER:PASSWORD for the registry's basic auth")
    a = ap.parse_args()

    lines = [l for l in open(a.events, "rb").read().split(b"\n") if l.strip()]
    events = [json.loads(l) for l in lines]
    # A timeout on every request, and the classic subject strategy (the
    # default one first asks an API the test registry does not implement).
    conf = {"url": a.registry, "timeout": 20}
    if a.user_info:
        conf["basic.auth.user.info"] = a.user_info
    client = SchemaRegistryClient(conf)
    producer = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 5, "enable.idempotence": True})
    out = {}

    def send(topic, key, value):
        producer.produce(topic, key=key.encode(), value=value)
        producer.poll(0)

    if a.json_topic:
        for line, e in zip(lines, events):
            send(a.json_topic, e["txn_id"], line)

    if a.avro_topic:
        v1, v2 = avro_schemas()
        ser = [AvroSerializer(client, v, conf=STRATEGY) for v in (v1, v2)]
        ctx = SerializationContext(a.avro_topic, MessageField.VALUE)
        half = len(events) // 2
        last_v1 = None
        for i, e in enumerate(events):
            which = 0 if i < half else 1
            value = ser[which](typed(e), ctx)
            if which == 0:
                last_v1 = value
            send(a.avro_topic, e["txn_id"], value)
        subject = f"{a.avro_topic}-value"
        out["avro_ids"] = [client.get_version(subject, v).schema_id for v in (1, 2)]
        if a.bad:
            send(a.avro_topic, "bad-unframed", b'{"txn_id": "bad-unframed", "amount": 1, "hour": 1}')
            send(a.avro_topic, "bad-unknown-id", b"\x00" + (999_999).to_bytes(4, "big") + last_v1[5:])
            send(a.avro_topic, "bad-cut", last_v1[: len(last_v1) // 2])

    if a.json_schema_topic:
        ser = JSONSerializer(json_schema(), client, conf=STRATEGY)
        ctx = SerializationContext(a.json_schema_topic, MessageField.VALUE)
        for e in events:
            send(a.json_schema_topic, e["txn_id"], ser(typed(e), ctx))
        out["json_schema_id"] = client.get_latest_version(f"{a.json_schema_topic}-value").schema_id

    left = producer.flush(30)
    if left:
        sys.exit(f"{left} records not acknowledged")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
