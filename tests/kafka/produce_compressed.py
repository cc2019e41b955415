"""Produces the lines of a JSON Lines file to a Kafka topic with confluent-kafka
(librdkafka as other clients ship it), spreading them over the codecs named on
the command line: the first share with the first codec, and so on. Prints one
JSON object: records produced per codec.

    produce_compressed.py BOOTSTRAP TOPIC FILE gzip snappy lz4 zstd
"""

import json
import sys

from confluent_kafka import Producer


def main() -> None:
    bootstrap, topic, path, *codecs = sys.argv[1:]
    with open(path, "rb") as f:
        lines = [line.rstrip(b"\n") for line in f if line.strip()]
    counts = {}
    per = -(-len(lines) // len(codecs))
    for i, codec in enumerate(codecs):
        part = lines[i * per : (i + 1) * per]
        p = Producer(
            {
                "bootstrap.servers": bootstrap,
                "compression.type": codec,
                "linger.ms": 20,
                "enable.idempotence": True,
            }
        )
        failed = []
        for j, value in enumerate(part):
            key = f"{codec}-{j}".encode()
            p.produce(topic, value=value, key=key, on_delivery=lambda err, _msg: err and failed.append(err))
            p.poll(0)
        left = p.flush(30)
        if left or failed:
            sys.exit(f"{codec}: {left} records not delivered, errors: {failed[:3]}")
        counts[codec] = len(part)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
