"""Produces the same card transactions four ways with the reference client
(confluent-kafka and its Schema Registry serializers): as plain JSON, as Avro,
as Protobuf and as JSON Schema in the Confluent wire format, registering the
schemas in a real registry (TopicNameStrategy). Half-way through the Avro
topic the writer schema evolves: fields reordered, one removed, one added with
a default, so the stream carries two schema ids.

The Protobuf message is the second one of its file (message index [1]); its
`country` and `distance_km` sit in a nested `Geo` message defined in another
file, which the serializer registers as a schema reference; `card_present`
is a `google.protobuf.BoolValue` and `channel` an enum.

With --bad, three records that must go to the DLQ follow on the Avro topic:
one without the magic byte, one naming a schema id the registry does not
have, and one whose bytes are cut short under a real id; and one on the
Protobuf topic whose message index names no message.

Prints {"avro_ids": [v1, v2], "protobuf_id": id, "json_schema_id": id} on
stdout.
"""

import argparse
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry import topic_subject_name_strategy
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2
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


def proto_class():
    """The CardTxn message class, built from descriptors (no protoc here)."""
    F = descriptor_pb2.FieldDescriptorProto
    scalar = {"string": F.TYPE_STRING, "double": F.TYPE_DOUBLE, "int": F.TYPE_INT32, "long": F.TYPE_INT64}

    def field(msg, name, number, ty, optional=False, type_name=None):
        f = msg.field.add(name=name, number=number, type=ty, label=F.LABEL_OPTIONAL)
        if type_name:
            f.type_name = type_name
        if optional:
            f.proto3_optional = True
            f.oneof_index = len(msg.oneof_decl)
            msg.oneof_decl.add(name="_" + name)

    geo = descriptor_pb2.FileDescriptorProto(
        name="switchyard/test/geo.proto", package="switchyard.test.geo", syntax="proto3"
    )
    g = geo.message_type.add(name="Geo")
    field(g, "country", 1, F.TYPE_STRING, optional=True)
    field(g, "distance_km", 2, F.TYPE_DOUBLE, optional=True)

    main = descriptor_pb2.FileDescriptorProto(
        name="switchyard/test/card_txn.proto", package="switchyard.test", syntax="proto3"
    )
    main.dependency.extend(["switchyard/test/geo.proto", "google/protobuf/wrappers.proto"])
    header = main.message_type.add(name="Header")
    field(header, "source", 1, F.TYPE_STRING)
    m = main.message_type.add(name="CardTxn")
    channel = m.enum_type.add(name="Channel")
    for i, v in enumerate(["pos", "web", "app"]):
        channel.value.add(name=v, number=i)
    number = 0
    for name, avro_ty, _, required in FIELDS:
        number += 1
        if name == "card_present":
            field(m, name, number, F.TYPE_MESSAGE, type_name=".google.protobuf.BoolValue")
        elif name == "channel":
            field(m, name, number, F.TYPE_ENUM, type_name=".switchyard.test.CardTxn.Channel")
        elif name == "country":
            field(m, "geo", number, F.TYPE_MESSAGE, type_name=".switchyard.test.geo.Geo")
        elif name == "distance_km":
            number -= 1
        else:
            field(m, name, number, scalar[avro_ty], optional=not required)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(geo)
    pool.Add(main)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("switchyard.test.CardTxn"))


def to_proto(cls, event):
    msg = cls()
    for name, value in typed(event).items():
        if value is None:
            continue
        if name == "card_present":
            msg.card_present.value = value
        elif name == "channel":
            msg.channel = ["pos", "web", "app"].index(value)
        elif name in ("country", "distance_km"):
            setattr(msg.geo, name, value)
        else:
            setattr(msg, name, value)
    return msg


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
    ap.add_argument("--protobuf-topic")
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
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.1)  # the local queue is full: let it drain
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

    if a.protobuf_topic:
        cls = proto_class()
        ser = ProtobufSerializer(cls, client, conf=STRATEGY)
        ctx = SerializationContext(a.protobuf_topic, MessageField.VALUE)
        value = None
        for e in events:
            value = ser(to_proto(cls, e), ctx)
            send(a.protobuf_topic, e["txn_id"], value)
        out["protobuf_id"] = client.get_latest_version(f"{a.protobuf_topic}-value").schema_id
        if a.bad:
            # Message index [7]: count 1, index 7, as zig-zag varints.
            assert value[5:7] == b"\x02\x02", "CardTxn is message [1]"
            send(a.protobuf_topic, "bad-index", value[:5] + b"\x02\x0e" + value[7:])

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
