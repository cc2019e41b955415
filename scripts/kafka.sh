#!/usr/bin/env bash
# A real Apache Kafka broker (KRaft mode; every node is broker and controller)
# for integration tests, from Maven Central jars; no ZooKeeper, no download
# from anywhere but Maven Central. One node, or a small cluster of them.
#
#   scripts/kafka.sh install                   resolve the jars (tests/kafka/pom.xml) once
#   scripts/kafka.sh classpath                 print the classpath ('<home>/libs/*')
#   scripts/kafka.sh start <dir> <port> [id] [--secure]
#                                              format <dir> and start a broker on
#                                              127.0.0.1:<port> (0 = a free port; node
#                                              id default 1); prints 127.0.0.1:<port> on
#                                              stdout when ready. --secure (anywhere after
#                                              start) adds a SASL_SSL listener on a free
#                                              port, printed as a second line (see below)
#   scripts/kafka.sh start-cluster <dir> [n] [--secure]
#                                              format and start n nodes (default 3), ids
#                                              1..n, in <dir>/node1..n, with a static
#                                              controller quorum of all n; prints the
#                                              bootstrap list 127.0.0.1:<p1>,...,127.0.0.1:<pn>
#                                              when all are ready (with --secure, the
#                                              SASL_SSL list as a second line)
#   scripts/kafka.sh restart <dir>             start the node in <dir> (a start <dir>, or a
#                                              <dir>/nodeN of start-cluster) again from its
#                                              server.properties and data, without formatting,
#                                              after it was stopped or killed (a stale pid
#                                              file is fine); prints its address(es) as start
#                                              does when ready. On a start-cluster <dir>:
#                                              every node of it that does not run, all at
#                                              once; prints the bootstrap list(s)
#   scripts/kafka.sh stop <dir>                stop the broker started in <dir>; on a
#                                              start-cluster <dir>, every node in it
#
# Messages go to stderr, so `addr=$(scripts/kafka.sh start "$dir" 0)` works.
#
# Files under <dir> (start; for start-cluster under each <dir>/nodeN, the tls/
# folder in <dir>): server.properties, log4j2.properties, heap.opts (the heap
# options `restart` uses again), data/ (log.dirs), format.log, server.log
# (`restart` appends to it), pid (while it runs), and with --secure tls/:
#   ca.pem          the test CA's certificate: what clients trust (ssl.ca.location)
#   ca.key          its private key (to sign more certificates, e.g. for clients)
#   server.pem      the broker's certificate, signed by ca.pem; SAN IP:127.0.0.1,
#                   DNS:localhost
#   server.p12      the broker's PKCS12 keystore (its key, certificate and the CA)
#   keystore.password   the keystore's password (also in server.properties)
#   other-ca.pem    an unrelated CA that signed nothing ("unknown CA" tests)
#   alice.password  the password (hex, no newline) of the one user, alice, who may
#                   log in with SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512
# All fresh for every start. Inter-broker and controller traffic stay PLAINTEXT.
#
# A cluster: default.replication.factor and the internal topics' replication
# factor n (at most 3), min.insync.replicas 2 (1 when n = 1). Test a node's
# failure with `kill -9 $(cat <dir>/node2/pid)` (or `stop <dir>/node2`), then
# `restart <dir>/node2`. Any node (also a lone one) is fenced, and leaves the
# ISRs, 6 s after its last heartbeat; until then the controller refuses to
# register it again, so a restart soon after kill -9 takes ~6 s longer. A
# cluster node is ready only while a majority of the n nodes run.
#
# Environment:
#   SWITCHYARD_KAFKA_HOME   jar cache (default ~/.cache/switchyard/kafka-<version>)
#   SWITCHYARD_M2           Maven local repository (default ~/.cache/switchyard/m2)
#   JAVA                    java binary, 17 or newer (default: java on PATH)
#   KAFKA_HEAP_OPTS         default -Xms256m -Xmx1g (start), -Xms128m -Xmx512m
#                           (each start-cluster node)
#   KAFKA_JVM_OPTS          default: G1 and C1-only JIT (faster start, see below)
#   KAFKA_OPTS              appended to the JVM options
#   SWITCHYARD_KAFKA_START_TIMEOUT   seconds to wait for the broker (default 60;
#                           120 for start-cluster and restart of a cluster <dir>)
#   SWITCHYARD_KAFKA_CDS=0  no class-data-sharing archive (see below)
#
# Start-up time: a broker's JVM spends most of its start loading and
# compiling classes. Two things shorten it (measured on 2 busy cores:
# format 2.1 -> 1.0 s, broker 5.0 -> 1.9 s to the first metadata answer):
#   - -XX:TieredStopAtLevel=1 (C1 JIT only): 5.0 -> 3.3 s;
#   - an AppCDS archive of the broker's classes: 3.3 -> 1.9 s. The first broker
#     started with a given JDK and jar set (by `start`) writes one when it stops
#     (-XX:ArchiveClassesAtExit; that stop takes ~3 s longer); later starts map
#     it (-XX:SharedArchiveFile). It is checked before each use: a broken or
#     mismatched archive is deleted and written anew, never used. start-cluster
#     and restart only use an archive, never write one (several JVMs at once).
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
single_heap="-Xms256m -Xmx1g"
cluster_heap="-Xms128m -Xmx512m"

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

# Prints <port> and <n> more distinct free ports, one a line; <port> 0 is a
# free port too.
node_ports() {
  local port=$1 n=$2 more
  if [ "$port" = 0 ]; then
    free_ports $((n + 1))
    return
  fi
  case "$port" in ''|*[!0-9]*) die "port must be a number, not '$port'" ;; esac
  port_open "$port" && die "port $port is already in use"
  while :; do
    more=$(free_ports "$n")
    grep -qx "$port" <<<"$more" || break
  done
  printf '%s\n%s\n' "$port" "$more"
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The port of listener <name> in <dir>/server.properties (empty if none).
listener_port() {
  sed -n "s|^listeners=\(.*,\)\{0,1\}$2://[^:,]*:\([0-9]*\).*|\2|p" "$1/server.properties"
}

# Prints the client addresses of the nodes in <dir>...: their PLAINTEXT
# addresses joined by commas, then (if they have that listener) their SASL_SSL
# addresses likewise, on a second line.
bootstrap_lists() {
  local d port plain="" sasl=""
  for d in "$@"; do
    plain+="${plain:+,}127.0.0.1:$(listener_port "$d" PLAINTEXT)"
    port=$(listener_port "$d" SASL_SSL)
    [ -z "$port" ] || sasl+="${sasl:+,}127.0.0.1:$port"
  done
  echo "$plain"
  [ -z "$sasl" ] || echo "$sasl"
}

# Prints the node dirs of a start-cluster <dir>: <dir>/node1, <dir>/node2, ...
cluster_nodes() {
  local i=1
  while [ -f "$1/node$i/server.properties" ]; do
    echo "$1/node$i"
    i=$((i + 1))
  done
}

# Whether process <pid> exists and is not a zombie.
pid_alive() {
  kill -0 "$1" 2>/dev/null && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null
}

# Prints the pid of the broker running from <dir>: the one in <dir>/pid if that
# process is alive and is kafka.Kafka with <dir>/server.properties (a pid file
# left by a killed broker may name a process that reused the number).
node_pid() {
  local dir=$1 pid args
  pid=$(cat "$dir/pid" 2>/dev/null) || return 1
  case "$pid" in ''|*[!0-9]*) return 1 ;; esac
  pid_alive "$pid" || return 1
  if [ -r "/proc/$pid/cmdline" ]; then
    args=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    grep -qx 'kafka.Kafka' <<<"$args" || return 1
    [ "$(tail -n1 <<<"$args")" -ef "$dir/server.properties" ] || return 1
  fi
  echo "$pid"
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

# The JVM options of the node in <dir> (its heap options from <dir>/heap.opts
# unless KAFKA_HEAP_OPTS is set).
jvm_opts() {
  local heap
  heap=$(cat "$1/heap.opts" 2>/dev/null || echo "$single_heap")
  # -XX:TieredStopAtLevel=1 (C1 only) starts the broker noticeably faster on
  # few cores; it is slower for long, heavy runs (set KAFKA_JVM_OPTS for those).
  echo "${KAFKA_HEAP_OPTS:-$heap} ${KAFKA_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -XX:TieredStopAtLevel=1 -XX:-UsePerfData -Djava.awt.headless=true} ${KAFKA_OPTS:-}"
}

# The AppCDS archive for this JDK and jar set.
cds_archive() {
  local java key
  java=$(readlink -f "$(command -v "$JAVA")")
  key=$(printf '%s %s' "$java" "$(cat "$stamp")" | sha256sum | cut -c1-16)
  echo "$home/cds-$key.jsa"
}

# cds_opts <dir> <may write: 1|0>: prints the JVM option for class-data
# sharing: use the archive when it maps cleanly; otherwise, if allowed, have
# this broker write one at exit (to a temporary file that `stop` renames; its
# name goes into <dir>/cds-pending), else nothing.
cds_opts() {
  local dir=$1 write=$2 jsa tmp
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
  [ "$write" = 1 ] || return 0
  find "$home" -maxdepth 1 -name 'cds-*.jsa.tmp.*' -mmin +30 -delete 2>/dev/null || true
  tmp=$jsa.tmp.$$
  echo "$tmp" >"$dir/cds-pending"
  echo "-XX:ArchiveClassesAtExit=$tmp"
}

# After the broker in <dir> ended: keep the class-data archive it wrote at
# exit, if it was the one to (a killed broker's partial file is dropped).
finish_cds() {
  local dir=$1 killed=${2:-0} tmp
  [ -f "$dir/cds-pending" ] || return 0
  tmp=$(cat "$dir/cds-pending")
  if [ "$killed" = 0 ] && [ -s "$tmp" ]; then
    mv -f "$tmp" "${tmp%.tmp.*}"
    log "wrote class-data archive ${tmp%.tmp.*} (faster later starts)"
  else
    rm -f "$tmp"
  fi
  rm -f "$dir/cds-pending"
}

# Seconds since <start> (a `date +%s.%N`), one decimal.
since() {
  awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $1}"
}

# Makes <dir> (absolute, symlinks resolved) for a node, printing its path;
# fails if a broker runs from it.
node_dir() {
  local dir=$1 pid
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)
  if pid=$(node_pid "$dir"); then
    die "a broker is already running from $dir (pid $pid)"
  fi
  echo "$dir"
}

# make_tls <tls dir>: with openssl, a fresh test CA, a server certificate it
# signs (SAN IP:127.0.0.1, DNS:localhost) in a PKCS12 keystore, an unrelated
# second CA, and alice's password; the layout is in the header.
make_tls() (
  local tls=$1 cnf out
  command -v openssl >/dev/null 2>&1 || die "openssl not found (--secure needs it)"
  umask 077
  rm -rf "$tls"
  mkdir -p "$tls"
  cnf=$tls/openssl.cnf
  out=$tls/openssl.log
  cat >"$cnf" <<'EOF'
[req]
distinguished_name = dn
[dn]
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF
  ossl() {
    openssl "$@" >>"$out" 2>&1 || { cat "$out" >&2; die "openssl $1 failed"; }
  }
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -config "$cnf")
  # Distinct subjects, so that a client that trusts the other CA fails with
  # "unable to get local issuer certificate".
  ossl req -x509 "${ec[@]}" -extensions v3_ca -days 3650 -set_serial "0x$(openssl rand -hex 8)" \
    -subj "/O=switchyard tests/CN=switchyard test CA" -keyout "$tls/ca.key" -out "$tls/ca.pem"
  ossl req -x509 "${ec[@]}" -extensions v3_ca -days 3650 -set_serial "0x$(openssl rand -hex 8)" \
    -subj "/O=switchyard tests/CN=switchyard other test CA" -keyout "$tls/other-ca.key" -out "$tls/other-ca.pem"
  ossl req -new "${ec[@]}" -subj "/O=switchyard tests/CN=localhost" \
    -keyout "$tls/server.key" -out "$tls/server.csr"
  ossl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
    -set_serial "0x$(openssl rand -hex 8)" -days 825 -extfile "$cnf" -extensions v3_server \
    -out "$tls/server.pem"
  openssl rand -hex 16 | tr -d '\n' >"$tls/keystore.password"
  ossl pkcs12 -export -name kafka -in "$tls/server.pem" -inkey "$tls/server.key" \
    -certfile "$tls/ca.pem" -passout "file:$tls/keystore.password" -out "$tls/server.p12"
  openssl rand -hex 12 | tr -d '\n' >"$tls/alice.password"
  rm -f "$cnf" "$out" "$tls/server.csr" "$tls/server.key" "$tls/other-ca.key"
  chmod 644 "$tls/ca.pem" "$tls/other-ca.pem" "$tls/server.pem"
  chmod 755 "$tls"
)

# The formatter's arguments that give alice SCRAM credentials (in the metadata
# log), one a line.
scram_args() {
  local pw m
  pw=$(cat "$1/alice.password")
  for m in SCRAM-SHA-256 SCRAM-SHA-512; do
    printf -- '--add-scram\n%s=[name=alice,password=%s]\n' "$m" "$pw"
  done
}

# write_config <dir> <node id> <port> <controller port> <quorum line>
#   <replicas> [<SASL_SSL port> <tls dir>]: server.properties, log4j2.properties.
write_config() {
  local dir=$1 node=$2 port=$3 cport=$4 quorum=$5 rf=$6 sport=${7:-} tls=${8:-}
  local isr=$(( rf < 2 ? rf : 2 )) listeners map
  listeners="PLAINTEXT://127.0.0.1:$port"
  map="PLAINTEXT:PLAINTEXT"
  if [ -n "$sport" ]; then
    listeners+=",SASL_SSL://127.0.0.1:$sport"
    map+=",SASL_SSL:SASL_SSL"
  fi
  listeners+=",CONTROLLER://127.0.0.1:$cport"
  map+=",CONTROLLER:PLAINTEXT"
  {
    cat <<EOF
# Written by scripts/kafka.sh: KRaft node $node (broker and controller) for tests.
process.roles=broker,controller
node.id=$node
$quorum
listeners=$listeners
advertised.listeners=$listeners
listener.security.protocol.map=$map
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$dir/data

# Every topic and internal topic with $rf replica(s), few partitions.
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
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

# A broker that stops heartbeating (killed) is fenced, and leaves every ISR,
# after 6 s instead of 9 s; until then the controller also refuses to register
# the same node started again (so a restart after kill -9 waits for that).
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=6000
EOF
    if [ "$rf" -gt 1 ]; then
      cat <<'EOF'
# A follower that stops fetching leaves the ISR after 10 s instead of 30 s.
replica.lag.time.max.ms=10000
EOF
    fi
    if [ -n "$sport" ]; then
      cat <<EOF

# --secure: SASL over TLS (server certificate from the test CA $tls/ca.pem);
# the user alice may use PLAIN (password here) and SCRAM-SHA-256/512 (salted
# credentials in the metadata log, added when formatting).
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$tls/server.p12
listener.name.sasl_ssl.ssl.keystore.password=$(cat "$tls/keystore.password")
listener.name.sasl_ssl.ssl.key.password=$(cat "$tls/keystore.password")
listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="$(cat "$tls/alice.password")";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
    fi
  } >"$dir/server.properties"

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
}

# format_node <dir> <cluster id> <cds option or ''> [StorageTool format
# arguments]: formats <dir>/data (the formatter only ever maps a class-data
# archive, never writes one).
format_node() {
  local dir=$1 id=$2 cds=$3 opts
  shift 3
  case "$cds" in -XX:SharedArchiveFile=*) ;; *) cds= ;; esac
  rm -rf "$dir/data"
  # shellcheck disable=SC2207
  opts=($(jvm_opts "$dir") -Dlog4j2.configurationFile="$dir/log4j2.properties")
  if ! "$JAVA" "${opts[@]}" ${cds:+"$cds"} -cp "$libs/*" kafka.tools.StorageTool format \
      -t "$id" -c "$dir/server.properties" "$@" >"$dir/format.log" 2>&1; then
    cat "$dir/format.log" >&2
    die "formatting $dir/data failed"
  fi
}

# launch_node <dir> <cds option or ''>: starts the broker of <dir> in the
# background (output appended to <dir>/server.log), its pid in <dir>/pid.
launch_node() {
  local dir=$1 cds=$2 opts
  # shellcheck disable=SC2207
  opts=($(jvm_opts "$dir") -Dlog4j2.configurationFile="$dir/log4j2.properties")
  # Started in its own session (setsid) so that the caller's Ctrl-C or the
  # end of its shell does not reach it; `stop` ends it.
  setsid "$JAVA" "${opts[@]}" ${cds:+"$cds"} -cp "$libs/*" kafka.Kafka "$dir/server.properties" \
    >>"$dir/server.log" 2>&1 </dev/null &
  echo "$!" >"$dir/pid"
}

# wait_ready <dir> <log offset> <deadline>: waits until the broker launched
# from <dir> is ready: its server.log (after <offset> bytes) says "Kafka Server
# started" (logged once the broker is unfenced and serving) and its port takes
# connections. Fails (with the log's tail on stderr) if it exits or the
# deadline (date +%s) passes.
wait_ready() {
  local dir=$1 offset=$2 deadline=$3 pid port
  pid=$(cat "$dir/pid")
  port=$(listener_port "$dir" PLAINTEXT)
  until tail -c +"$((offset + 1))" "$dir/server.log" 2>/dev/null | grep -q 'Kafka Server started' \
      && port_open "$port"; do
    if ! pid_alive "$pid"; then
      tail -n 40 "$dir/server.log" >&2
      rm -f "$dir/pid"
      log "the broker exited during start-up (log: $dir/server.log)"
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 40 "$dir/server.log" >&2
      log "the broker did not start in time (log: $dir/server.log)"
      return 1
    fi
    sleep 0.1
  done
}

# Splits a command's arguments into the caller's `args` (positional) and
# `secure` (1 with --secure); any other option is an error.
split_secure() {
  local a
  for a in "$@"; do
    case "$a" in
      --secure) secure=1 ;;
      -?*) die "unknown option $a" ;;
      *) args+=("$a") ;;
    esac
  done
}

cmd_start() {
  local args=() secure=0
  split_secure "$@"
  case ${#args[@]} in 2|3) ;; *) usage ;; esac
  local dir=${args[0]} node=${args[2]:-1} ports port cport sport="" tls=""
  case "$node" in ''|*[!0-9]*) die "node id must be a number, not '$node'" ;; esac
  check_java
  cmd_install
  dir=$(node_dir "$dir")
  mapfile -t ports < <(node_ports "${args[1]}" $((1 + secure)))
  [ ${#ports[@]} -eq $((2 + secure)) ] || exit 1
  port=${ports[0]} cport=${ports[1]}
  local fmt_args=(--standalone) scram
  rm -rf "$dir/tls"
  if [ "$secure" = 1 ]; then
    sport=${ports[2]} tls=$dir/tls
    make_tls "$tls"
    mapfile -t scram < <(scram_args "$tls")
    fmt_args+=("${scram[@]}")
  fi
  echo "$single_heap" >"$dir/heap.opts"
  write_config "$dir" "$node" "$port" "$cport" "controller.quorum.bootstrap.servers=127.0.0.1:$cport" 1 "$sport" "$tls"

  local cds started formatted
  rm -f "$dir/cds-pending"
  cds=$(cds_opts "$dir" 1)
  started=$(date +%s.%N)
  format_node "$dir" "$(cluster_id)" "$cds" "${fmt_args[@]}"
  formatted=$(date +%s.%N)

  : >"$dir/server.log"
  launch_node "$dir" "$cds"
  if ! wait_ready "$dir" 0 $(( $(date +%s) + ${SWITCHYARD_KAFKA_START_TIMEOUT:-60} )); then
    stop_nodes "$dir"
    exit 1
  fi
  log "Kafka $version up on 127.0.0.1:$port${sport:+ (SASL_SSL 127.0.0.1:$sport)}" \
    "(controller $cport, pid $(cat "$dir/pid")):" \
    "format $(awk "BEGIN{printf \"%.1f\", $formatted - $started}") s, start $(since "$formatted") s"
  bootstrap_lists "$dir"
}

cmd_start_cluster() {
  local args=() secure=0
  split_secure "$@"
  case ${#args[@]} in 1|2) ;; *) usage ;; esac
  local dir=${args[0]} n=${args[1]:-3} d i pid nodes=()
  case "$n" in ''|*[!0-9]*|0) die "the number of nodes must be a positive number, not '$n'" ;; esac
  check_java
  cmd_install
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)
  for d in "$dir"/node*/; do
    if pid=$(node_pid "${d%/}"); then die "a broker is already running from ${d%/} (pid $pid)"; fi
  done
  # Nothing left of an earlier cluster in <dir>.
  rm -rf "$dir/tls"
  for d in "$dir"/node*/; do
    d=${d%/}
    i=${d##*/node}
    case "$i" in ''|*[!0-9]*) ;; *) [ "$i" -le "$n" ] || rm -rf "$d" ;; esac
  done
  for ((i = 1; i <= n; i++)); do
    nodes+=("$dir/node$i")
  done

  # Ports: PLAINTEXT p1..pn, then CONTROLLER c1..cn, then SASL_SSL s1..sn.
  local ports voters="" tls="" rf=$(( n < 3 ? n : 3 )) fmt_args=()
  mapfile -t ports < <(free_ports $(( (2 + secure) * n )))
  for ((i = 1; i <= n; i++)); do
    voters+="${voters:+,}$i@127.0.0.1:${ports[n + i - 1]}"
  done
  if [ "$secure" = 1 ]; then
    tls=$dir/tls
    make_tls "$tls"
    mapfile -t fmt_args < <(scram_args "$tls")
  fi
  for ((i = 1; i <= n; i++)); do
    d=${nodes[i - 1]}
    mkdir -p "$d"
    echo "$cluster_heap" >"$d/heap.opts"
    write_config "$d" "$i" "${ports[i - 1]}" "${ports[n + i - 1]}" "controller.quorum.voters=$voters" "$rf" \
      "${ports[2 * n + i - 1]:-}" "$tls"
  done

  local cds id started formatted fpids=() failed=0 deadline lists
  cds=$(cds_opts "$dir" 0)
  id=$(cluster_id)
  started=$(date +%s.%N)
  # A static quorum (controller.quorum.voters): every node formatted with the
  # same cluster id and none of --standalone, --initial-controllers,
  # --no-initial-controllers (those are for a dynamic quorum).
  for d in "${nodes[@]}"; do
    format_node "$d" "$id" "$cds" ${fmt_args[@]+"${fmt_args[@]}"} &
    fpids+=("$!")
  done
  for pid in "${fpids[@]}"; do
    wait "$pid" || failed=1
  done
  [ "$failed" = 0 ] || exit 1
  formatted=$(date +%s.%N)

  # All at once: a node is ready only once a majority of the quorum is up.
  for d in "${nodes[@]}"; do
    : >"$d/server.log"
    launch_node "$d" "$cds"
  done
  deadline=$(( $(date +%s) + ${SWITCHYARD_KAFKA_START_TIMEOUT:-120} ))
  for d in "${nodes[@]}"; do
    if ! wait_ready "$d" 0 "$deadline"; then
      stop_nodes "${nodes[@]}"
      exit 1
    fi
  done
  mapfile -t lists < <(bootstrap_lists "${nodes[@]}")
  log "Kafka $version cluster of $n up on ${lists[0]}${lists[1]:+ (SASL_SSL ${lists[1]})}:" \
    "format $(awk "BEGIN{printf \"%.1f\", $formatted - $started}") s, start $(since "$formatted") s"
  printf '%s\n' "${lists[@]}"
}

cmd_restart() {
  [ $# -eq 1 ] || usage
  local dir=$1 cluster=0 nodes=() todo=() offsets=() d pid port cds started deadline i
  if [ -f "$dir/server.properties" ]; then
    nodes=("$dir")
  else
    # A start-cluster <dir>: the nodes in it that do not run.
    cluster=1
    mapfile -t nodes < <(cluster_nodes "$dir")
    [ ${#nodes[@]} -gt 0 ] || die "no server.properties in $dir or $dir/node1 (make them with start or start-cluster)"
  fi
  check_java
  cmd_install
  for d in "${nodes[@]}"; do
    d=$(cd "$d" && pwd -P)
    [ -d "$d/data" ] || die "no data in $d (make it with start or start-cluster)"
    if pid=$(node_pid "$d"); then
      [ "$cluster" = 1 ] || die "a broker is already running from $d (pid $pid)"
      log "the broker in $d runs already (pid $pid)"
      continue
    fi
    port=$(listener_port "$d" PLAINTEXT)
    ! port_open "$port" || die "port $port (of $d) is in use"
    todo+=("$d")
  done

  cds=$(cds_opts "$dir" 0)
  started=$(date +%s.%N)
  for d in ${todo[@]+"${todo[@]}"}; do
    # A pid file left by a killed broker; a class-data archive it never finished.
    rm -f "$d/pid"
    finish_cds "$d" 1
    echo "---- scripts/kafka.sh restart, $(date '+%F %T') ----" >>"$d/server.log"
    offsets+=("$(wc -c <"$d/server.log")")
    launch_node "$d" "$cds"
  done
  deadline=$(( $(date +%s) + ${SWITCHYARD_KAFKA_START_TIMEOUT:-$((60 + 60 * cluster))} ))
  i=0
  for d in ${todo[@]+"${todo[@]}"}; do
    if ! wait_ready "$d" "${offsets[i]}" "$deadline"; then
      stop_nodes "${todo[@]}"
      exit 1
    fi
    log "Kafka $version restarted on 127.0.0.1:$(listener_port "$d" PLAINTEXT) (pid $(cat "$d/pid"))" \
      "in $(since "$started") s"
    i=$((i + 1))
  done
  bootstrap_lists "${nodes[@]}"
}

# stop_nodes <dir>...: stops the brokers of these dirs, all at once.
stop_nodes() {
  local dir pid pids=() i=0 alive
  for dir in "$@"; do
    if pid=$(node_pid "$dir"); then
      kill "$pid" 2>/dev/null || true
      pids+=("$pid")
    else
      pids+=("")
    fi
  done
  for _ in $(seq 1 200); do
    alive=0
    for pid in "${pids[@]}"; do
      if [ -n "$pid" ] && pid_alive "$pid"; then alive=1; fi
    done
    [ "$alive" = 1 ] || break
    sleep 0.1
  done
  for dir in "$@"; do
    pid=${pids[i]}
    i=$((i + 1))
    if [ -n "$pid" ] && pid_alive "$pid"; then
      log "broker $pid did not stop in 20 s; killing it"
      kill -9 "$pid" 2>/dev/null || true
      finish_cds "$dir" 1
    fi
    [ -z "$pid" ] || log "stopped broker $pid ($dir)"
    rm -f "$dir/pid"
    finish_cds "$dir"
  done
}

cmd_stop() {
  [ $# -ge 1 ] || usage
  local dir=$1 d nodes=()
  if [ -f "$dir/server.properties" ] || [ -f "$dir/pid" ]; then
    nodes=("$dir")
  else
    for d in "$dir"/node*/; do
      [ ! -f "$d/server.properties" ] || nodes+=("${d%/}")
    done
  fi
  if [ ${#nodes[@]} = 0 ]; then
    log "no broker pid in $dir"
    return 0
  fi
  stop_nodes "${nodes[@]}"
}

case "${1:-}" in
  install) shift; cmd_install "$@" ;;
  classpath) shift; cmd_classpath "$@" ;;
  start) shift; cmd_start "$@" ;;
  start-cluster) shift; cmd_start_cluster "$@" ;;
  restart) shift; cmd_restart "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  *) usage ;;
esac
