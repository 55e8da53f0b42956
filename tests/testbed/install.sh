#!/usr/bin/env bash
# Install (idempotently) everything tests/compat needs, cached outside the repo in
#   ${STRATA_CACHE:-$HOME/.cache/strata-testbed}:
#     testbed-venv/  the Python venv of every suite (venv.sh, requirements.txt)
#     kafka-libs/    Apache Kafka 3.9.x jars (reference broker + tools), see kafka/pom.xml
#   ~/.m2            Maven's own cache of the jars
#   tests/java/target/strata-compat.jar + target/libs/   Java client CLI (gitignored)
#   tests/java-streams/target/strata-streams.jar + target/libs/   Kafka Streams app (gitignored)
#   tests/java-flink/target/strata-flink.jar + target/libs/   Flink exactly-once job (gitignored)
#   kcat             Debian package, installed only if missing
# A warm run takes a few seconds and touches no network.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TESTS="$(dirname "$HERE")"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
mkdir -p "$CACHE"

log() { echo "[install] $*" >&2; }
sha() { cat "$@" | sha256sum | cut -d' ' -f1; }

# Maven: offline first (warm cache), online if something is missing.
mvn_run() {
  mvn -q -B -o "$@" >/dev/null 2>&1 || mvn -q -B "$@"
}

# ---- Python venv -------------------------------------------------------------------------
bash "$HERE/venv.sh" >/dev/null

# ---- kcat ---------------------------------------------------------------------------------
if ! command -v kcat >/dev/null 2>&1; then
  log "kcat (apt)"
  SUDO=""; [[ "$(id -u)" == 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq kcat >/dev/null
fi

# ---- Apache Kafka reference broker jars --------------------------------------------------
want="$(sha "$HERE/kafka/pom.xml")"
if [[ "$(cat "$CACHE/kafka-libs/.stamp" 2>/dev/null)" != "$want" ]]; then
  log "apache kafka jars -> $CACHE/kafka-libs"
  rm -rf "$CACHE/kafka-libs"
  (cd "$HERE/kafka" && mvn_run dependency:copy-dependencies \
      -DoutputDirectory="$CACHE/kafka-libs" -DincludeScope=runtime)
  echo "$want" > "$CACHE/kafka-libs/.stamp"
fi

# ---- Java modules: client CLI (kafka-clients 3.9), Kafka Streams EOS app (4.x), Flink job --
# Rebuilt when the jar or its libs are missing or the pom/sources are newer than the jar.
java_module() {
  local dir="$1" jar="$1/target/$2" what="$3"
  if [[ ! -f "$jar" || ! -d "$dir/target/libs" ]] \
     || [[ -n "$(find "$dir/pom.xml" "$dir/src" -newer "$jar" -print -quit)" ]]; then
    log "$what -> $jar"
    rm -rf "$dir/target/libs"  # no stale jars of an older dependency version on the classpath
    (cd "$dir" && mvn_run package)
  fi
}
java_module "$TESTS/java" strata-compat.jar "java client CLI"
java_module "$TESTS/java-streams" strata-streams.jar "kafka streams app"
java_module "$TESTS/java-flink" strata-flink.jar "flink exactly-once job"

log "ok (cache: $CACHE)"
