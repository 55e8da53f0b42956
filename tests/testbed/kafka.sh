#!/usr/bin/env bash
# Run the reference Apache Kafka broker (one combined KRaft node on loopback).
#
#   kafka.sh start DIR PORT [CONTROLLER_PORT]   format DIR on first use, start in background,
#                                               return once PORT accepts connections
#   kafka.sh stop DIR                           SIGTERM, wait (then SIGKILL after $KAFKA_STOP_TIMEOUT s)
#   kafka.sh kill DIR                           SIGKILL, no clean shutdown
#   kafka.sh status DIR                         exit 0 if running
#
# DIR holds server.properties, the log dirs (DIR/data), the broker's logs (DIR/logs) and
# DIR/kafka.pid.  Restarting on an existing DIR reuses its server.properties, so the ports and
# cluster id stay the same.  Jars come from install.sh: $STRATA_CACHE/kafka-libs.
#
# Environment:
#   STRATA_CACHE          cache root (default ~/.cache/strata-testbed)
#   KAFKA_HEAP_OPTS       JVM heap flags (default -Xms512m -Xmx1g)
#   KAFKA_EXTRA_PROPS     extra server.properties lines, appended when DIR is first formatted
#   KAFKA_START_TIMEOUT   seconds to wait for the port (default 90)
#   KAFKA_STOP_TIMEOUT    seconds to wait after SIGTERM before SIGKILL (default 60)
set -euo pipefail

CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
LIBS="$CACHE/kafka-libs"

die() { echo "kafka.sh: $*" >&2; exit 1; }

# tests/lib/strata_testlib (net.py): port_open (true if something listens on 127.0.0.1:$1; a
# connection from the port to itself does not count) and free_port (a free loopback port below
# the ephemeral range, for the controller listener).
TESTLIB="$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib" && pwd)"
port_open() {
  PYTHONPATH="$TESTLIB" python3 -c \
    'import sys; from strata_testlib import port_open; sys.exit(0 if port_open(int(sys.argv[1])) else 1)' "$1"
}
free_port() {
  PYTHONPATH="$TESTLIB" python3 -c 'from strata_testlib import free_port; print(free_port())'
}

pid_of() {
  local f="$1/kafka.pid"
  [[ -f "$f" ]] || return 1
  local pid; pid="$(cat "$f")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

write_config() {
  local dir="$1" port="$2" cport="$3"
  cat > "$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
# After a crash the restarted node can only re-register once its old broker session expired
# (default 9 s); a short session makes crash-restart tests take ~5 s instead of ~13 s.
broker.session.timeout.ms=2000
broker.heartbeat.interval.ms=500
EOF
  if [[ -n "${KAFKA_EXTRA_PROPS:-}" ]]; then
    printf '%s\n' "$KAFKA_EXTRA_PROPS" >> "$dir/server.properties"
  fi
  cat > "$dir/log4j.properties" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$dir/logs/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
EOF
}

java_cmd() {
  local dir="$1"; shift
  # shellcheck disable=SC2086
  java ${KAFKA_HEAP_OPTS:--Xms512m -Xmx1g} -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$dir/log4j.properties" -cp "$LIBS/*" "$@"
}

cmd_start() {
  local dir="${1:?usage: kafka.sh start DIR PORT [CONTROLLER_PORT]}" port="${2:?PORT missing}"
  local cport="${3:-}"
  [[ -d "$LIBS" ]] && compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null \
    || die "no Kafka jars in $LIBS: run tests/testbed/install.sh first"
  mkdir -p "$dir/logs"
  dir="$(cd "$dir" && pwd)"
  if pid="$(pid_of "$dir")"; then die "already running in $dir (pid $pid)"; fi
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    [[ -n "$cport" ]] || cport="$(free_port)"
    write_config "$dir" "$port" "$cport"
    local cluster_id
    # Kafka's own random ids never start with '-' (the tool would read one as an option);
    # nor do ours, and --cluster-id=... keeps it a value regardless.
    cluster_id="$(python3 -c 'import uuid,base64
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    if not s.startswith("-"):
        print(s); break')"
    java_cmd "$dir" kafka.tools.StorageTool format --cluster-id="$cluster_id" -c "$dir/server.properties" \
      > "$dir/logs/format.log" 2>&1 || { cat "$dir/logs/format.log" >&2; die "format failed"; }
  else
    grep -q "^listeners=PLAINTEXT://127.0.0.1:$port," "$dir/server.properties" \
      || die "$dir was formatted for another port (see $dir/server.properties)"
  fi
  rm -f "$dir/kafka.pid"
  # setsid: the broker must not get signals meant for the caller's process group.
  setsid bash -c 'echo $$ > "$1/kafka.pid"; shift; exec "$@"' _ "$dir" \
    java ${KAFKA_HEAP_OPTS:--Xms512m -Xmx1g} -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$dir/log4j.properties" -cp "$LIBS/*" \
    kafka.Kafka "$dir/server.properties" >> "$dir/logs/stdout.log" 2>&1 < /dev/null &
  local deadline=$(( SECONDS + ${KAFKA_START_TIMEOUT:-90} ))
  while ! { [[ -s "$dir/kafka.pid" ]] && port_open "$port"; }; do
    sleep 0.2
    if ! pid_of "$dir" >/dev/null && [[ -f "$dir/kafka.pid" ]]; then
      tail -n 30 "$dir/logs/stdout.log" "$dir/logs/server.log" >&2 2>/dev/null || true
      die "broker exited during startup"
    fi
    (( SECONDS < deadline )) || { cmd_kill "$dir"; die "port $port not open after ${KAFKA_START_TIMEOUT:-90}s"; }
  done
  echo "kafka started: pid $(cat "$dir/kafka.pid") port $port dir $dir"
}

wait_gone() {
  local pid="$1" secs="$2" deadline=$(( SECONDS + $2 ))
  while kill -0 "$pid" 2>/dev/null; do
    (( SECONDS < deadline )) || return 1
    sleep 0.1
  done
}

cmd_stop() {
  local dir="${1:?usage: kafka.sh stop DIR}" pid
  pid="$(pid_of "$dir")" || { echo "kafka not running in $dir"; return 0; }
  kill -TERM "$pid"
  if ! wait_gone "$pid" "${KAFKA_STOP_TIMEOUT:-60}"; then
    echo "kafka.sh: pid $pid still alive after SIGTERM, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "pid $pid survives SIGKILL"
  fi
  rm -f "$dir/kafka.pid"
}

cmd_kill() {
  local dir="${1:?usage: kafka.sh kill DIR}" pid
  pid="$(pid_of "$dir")" || return 0
  kill -KILL "$pid" 2>/dev/null || true
  wait_gone "$pid" 10 || die "pid $pid survives SIGKILL"
  rm -f "$dir/kafka.pid"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  kill) shift; cmd_kill "$@" ;;
  status) shift; pid_of "${1:?usage: kafka.sh status DIR}" >/dev/null ;;
  *) echo "usage: kafka.sh start DIR PORT [CONTROLLER_PORT] | stop DIR | kill DIR | status DIR" >&2; exit 2 ;;
esac
