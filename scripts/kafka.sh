#!/usr/bin/env bash
# A real Apache Kafka broker (KRaft mode, one node that is broker and
# controller) for integration tests, from Maven Central jars; no ZooKeeper,
# no download from anywhere but Maven Central.
#
#   scripts/kafka.sh install                   resolve the jars (tests/kafka/pom.xml) once
#   scripts/kafka.sh classpath                 print the classpath ('<home>/libs/*')
#   scripts/kafka.sh start <dir> <port> [id]   format <dir> and start a broker on
#                                              127.0.0.1:<port> (0 = a free port);
#                                              prints 127.0.0.1:<port> on stdout when ready
#   scripts/kafka.sh stop <dir>                stop the broker started in <dir>
#
# Messages go to stderr, so `addr=$(scripts/kafka.sh start "$dir" 0)` works.
#
# Environment:
#   SWITCHYARD_KAFKA_HOME   jar cache (default ~/.cache/switchyard/kafka-<version>)
#   SWITCHYARD_M2           Maven local repository (default ~/.cache/switchyard/m2)
#   JAVA                    java binary, 17 or newer (default: java on PATH)
#   KAFKA_HEAP_OPTS         default -Xms256m -Xmx1g
#   KAFKA_JVM_OPTS          default: G1 and C1-only JIT (faster start, see below)
#   KAFKA_OPTS              appended to the JVM options
#   SWITCHYARD_KAFKA_START_TIMEOUT   seconds to wait for the broker (default 60)
#   SWITCHYARD_KAFKA_CDS=0  no class-data-sharing archive (see below)
#
# Start-up time: a broker's JVM spends most of its start loading and
# compiling classes. Two things shorten it (measured on 2 busy cores:
# format 2.1 -> 1.0 s, broker 5.0 -> 1.9 s to the first metadata answer):
#   - -XX:TieredStopAtLevel=1 (C1 JIT only): 5.0 -> 3.3 s;
#   - an AppCDS archive of the broker's classes: 3.3 -> 1.9 s. The first broker
#     started with a given JDK and jar set writes one when it stops
#     (-XX:ArchiveClassesAtExit; that stop takes ~3 s longer); later starts map
#     it (-XX:SharedArchiveFile). It is checked before each use: a broken or
#     mismatched archive is deleted and written anew, never used.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pom=$root/tests/kafka/pom.xml
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom" | head -n1)
[ -n "$version" ] || { echo "kafka: no <kafka.version> in $pom" >&2; exit 1; }
home=${SWITCHYARD_KAFKA_HOME:-$HOME/.cache/switchyard/kafka-$version}
m2=${SWITCHYARD_M2:-$HOME/.cache/switchyard/m2}
libs=$home/libs
stamp=$home/.pom.sha256
JAVA=${JAVA:-java}

log() { echo "kafka: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

check_java() {
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (Kafka $version needs Java 17+)"
  local v
  v=$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' || true)
  [ "${v%%.*}" -ge 17 ] 2>/dev/null || die "Kafka $version needs Java 17+, $JAVA is ${v:-unknown}"
}

cmd_install() {
  local want
  want=$(sha256sum "$pom" | cut -d' ' -f1)
  if [ -d "$libs" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    log "Kafka $version jars present ($libs)"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (apt-get install maven)"
  log "resolving Kafka $version jars from Maven Central into $libs (Maven repo $m2)"
  local started tmp out
  started=$(date +%s)
  mkdir -p "$home" "$m2"
  tmp=$home/libs.tmp.$$
  rm -rf "$tmp"
  out=$home/mvn.log
  if ! mvn -q -B -f "$pom" -Dmaven.repo.local="$m2" \
      dependency:copy-dependencies -DoutputDirectory="$tmp" >"$out" 2>&1; then
    tail -n 40 "$out" >&2
    rm -rf "$tmp"
    die "mvn failed (log: $out)"
  fi
  ls "$tmp"/kafka_2.13-"$version".jar >/dev/null 2>&1 || die "mvn left no kafka_2.13-$version.jar in $tmp"
  rm -rf "$libs" "$home"/cds-*.jsa*
  mv "$tmp" "$libs"
  echo "$want" >"$stamp"
  log "installed $(find "$libs" -name "*.jar" | wc -l) jars, $(du -sh "$libs" | cut -f1) in $(( $(date +%s) - started )) s"
}

cmd_classpath() {
  echo "$libs/*"
}

# Prints <n> distinct free ports on 127.0.0.1, one a line (held open together
# while chosen, so they differ).
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
PY
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A Kafka Uuid: 16 random bytes, base64url without padding; like
# Uuid.randomUuid(), never one that starts with '-' (it reads as an option).
cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [ "${id:0:1}" != "-" ] && { echo "$id"; return; }
  done
}

jvm_opts() {
  # -XX:TieredStopAtLevel=1 (C1 only) starts the broker noticeably faster on
  # few cores; it is slower for long, heavy runs (set KAFKA_JVM_OPTS for those).
  echo "${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} ${KAFKA_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -XX:TieredStopAtLevel=1 -XX:-UsePerfData -Djava.awt.headless=true} ${KAFKA_OPTS:-}"
}

# The AppCDS archive for this JDK and jar set.
cds_archive() {
  local java key
  java=$(readlink -f "$(command -v "$JAVA")")
  key=$(printf '%s %s' "$java" "$(cat "$stamp")" | sha256sum | cut -c1-16)
  echo "$home/cds-$key.jsa"
}

# Prints the JVM options for class-data sharing: use the archive when it maps
# cleanly, otherwise have this broker write one at exit (to a temporary file
# that `stop` renames; its name goes into <dir>/cds-pending).
cds_opts() {
  local dir=$1 jsa tmp
  [ "${SWITCHYARD_KAFKA_CDS:-1}" = 1 ] || return 0
  jsa=$(cds_archive)
  if [ -f "$jsa" ]; then
    # -Xshare:on fails (instead of silently ignoring it) when the archive does
    # not map; a truncated archive would even crash the JVM, so check first.
    if "$JAVA" -XX:SharedArchiveFile="$jsa" -Xshare:on -XX:ErrorFile=/dev/null \
        -cp "$libs/*" -version >/dev/null 2>&1; then
      echo "-XX:SharedArchiveFile=$jsa"
      return 0
    fi
    log "class-data archive $jsa does not map; deleting it"
    rm -f "$jsa"
  fi
  find "$home" -maxdepth 1 -name 'cds-*.jsa.tmp.*' -mmin +30 -delete 2>/dev/null || true
  tmp=$jsa.tmp.$$
  echo "$tmp" >"$dir/cds-pending"
  echo "-XX:ArchiveClassesAtExit=$tmp"
}

cmd_start() {
  [ $# -ge 2 ] || usage
  local dir=$1 port=$2 node=${3:-1}
  check_java
  cmd_install
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    die "a broker is already running from $dir (pid $(cat "$dir/pid"))"
  fi
  local ports cport
  if [ "$port" = 0 ]; then
    ports=$(free_ports 2)
    port=${ports%%$'\n'*}
    cport=${ports##*$'\n'}
  else
    case "$port" in *[!0-9]*) die "port must be a number, not '$port'" ;; esac
    port_open "$port" && die "port $port is already in use"
    cport=$(free_ports 1)
    while [ "$cport" = "$port" ]; do cport=$(free_ports 1); done
  fi

  rm -rf "$dir/data"
  cat >"$dir/server.properties" <<EOF
# Written by scripts/kafka.sh: a one-node KRaft cluster for tests.
process.roles=broker,controller
node.id=$node
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$dir/data

# One node: every internal topic with one replica, few partitions.
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true

# Small and quick for tests; nothing is deleted by age (tests may produce
# records with old event timestamps).
log.segment.bytes=16777216
log.retention.ms=-1
log.retention.check.interval.ms=60000
log.cleaner.dedupe.buffer.size=16777216
log.cleaner.threads=1
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=1
EOF

  cat >"$dir/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = warn
EOF

  local opts c started
  local cds=() fmt_cds=()
  rm -f "$dir/cds-pending"
  c=$(cds_opts "$dir")
  if [ -n "$c" ]; then
    cds=("$c")
    # The formatter maps the archive when there is one, but never writes it.
    case "$c" in -XX:SharedArchiveFile=*) fmt_cds=("$c") ;; esac
  fi
  # shellcheck disable=SC2207
  opts=($(jvm_opts) -Dlog4j2.configurationFile="$dir/log4j2.properties")
  started=$(date +%s.%N)
  if ! "$JAVA" "${opts[@]}" ${fmt_cds[@]+"${fmt_cds[@]}"} -cp "$libs/*" kafka.tools.StorageTool format \
      -t "$(cluster_id)" -c "$dir/server.properties" --standalone >"$dir/format.log" 2>&1; then
    cat "$dir/format.log" >&2
    die "formatting $dir/data failed"
  fi
  local formatted
  formatted=$(date +%s.%N)

  # Started in its own session (setsid) so that the caller's Ctrl-C or the
  # end of its shell does not reach it; `stop` ends it.
  setsid "$JAVA" "${opts[@]}" ${cds[@]+"${cds[@]}"} -cp "$libs/*" kafka.Kafka "$dir/server.properties" \
    >"$dir/server.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$dir/pid"

  local deadline=$(( $(date +%s) + ${SWITCHYARD_KAFKA_START_TIMEOUT:-60} ))
  # Ready: the log says "Kafka Server started" (logged once the broker is
  # unfenced and serving) and the port takes connections.
  until grep -q 'Kafka Server started' "$dir/server.log" 2>/dev/null && port_open "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 "$dir/server.log" >&2
      rm -f "$dir/pid"
      die "the broker exited during start-up (log: $dir/server.log)"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 40 "$dir/server.log" >&2
      cmd_stop "$dir"
      die "the broker did not start within ${SWITCHYARD_KAFKA_START_TIMEOUT:-60} s (log: $dir/server.log)"
    fi
    sleep 0.1
  done
  log "Kafka $version up on 127.0.0.1:$port (controller $cport, pid $pid):" \
    "format $(awk "BEGIN{printf \"%.1f\", $formatted - $started}") s," \
    "start $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $formatted}") s"
  echo "127.0.0.1:$port"
}

cmd_stop() {
  [ $# -ge 1 ] || usage
  local dir=$1 pid
  if [ ! -f "$dir/pid" ]; then
    log "no broker pid in $dir"
    return 0
  fi
  pid=$(cat "$dir/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 200); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "broker $pid did not stop in 20 s; killing it"
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$(cat "$dir/cds-pending" 2>/dev/null || echo /nonexistent)" "$dir/cds-pending"
    fi
    log "stopped broker $pid"
  fi
  rm -f "$dir/pid"
  # The class-data archive this broker wrote at exit, if it was the one to.
  if [ -f "$dir/cds-pending" ]; then
    local tmp
    tmp=$(cat "$dir/cds-pending")
    if [ -s "$tmp" ]; then
      mv -f "$tmp" "${tmp%.tmp.*}"
      log "wrote class-data archive ${tmp%.tmp.*} (faster later starts)"
    fi
    rm -f "$dir/cds-pending"
  fi
}

case "${1:-}" in
  install) shift; cmd_install "$@" ;;
  classpath) shift; cmd_classpath "$@" ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  *) usage ;;
esac
