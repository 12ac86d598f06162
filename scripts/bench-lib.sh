# Shared by the bench scripts (sourced): R and OUT must be set. Processes started here are
# stopped on exit; the simulated nodes' files are removed.
say() { printf '\n== %s\n' "$*" >&2; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$OUT"/sim-*/nodes; }
trap cleanup EXIT

if [ -z "${SKIP_BUILD:-}" ]; then
  say "Building release binaries"
  cargo build --release --locked -p packetcapture-api -p packetcapture-tests --bins >&2
fi

start_sim() { # name scenario: the simulation's pid in OUT/name.pid
  "$R/packetcapture-sim" --scenario "$2" --out "$OUT/$1" >"$OUT/$1.log" 2>&1 &
  PIDS+=($!)
  echo $! >"$OUT/$1.pid"
  for _ in $(seq 1 1800); do [ -f "$OUT/$1/ready" ] && return 0; sleep 0.2; done
  cat "$OUT/$1.log"; echo "simulation $1 did not start" >&2; exit 1
}
API_PID=""
start_api() { # sim [VAR=value...], on PORT
  local sim=$1; shift
  ( source "$OUT/$sim/env"; export PACKETCAPTURE_API_PORT="$PORT" PACKETCAPTURE_API_METRICS_PORT=0 PACKETCAPTURE_API_LOG_LEVEL=Warn "$@"; exec "$R/packetcapture-api" ) >>"$OUT/api.log" 2>&1 &
  API_PID=$!
  PIDS+=("$API_PID")
  for _ in $(seq 1 100); do curl -sf --cacert "$OUT/$sim/ca.crt" "https://localhost:$PORT/health" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "the API did not start" >&2; exit 1
}
stop_api() { kill "$API_PID" 2>/dev/null || true; wait "$API_PID" 2>/dev/null || true; }

# one_capture NODES NAME NODE [EXTRA]: a scenario of one cluster, nodes n1..nNODES, holding one
# capture bench/NAME whose every node entry is NODE ("state: Finished, files: 2, size: 1000")
# and whose capture has the EXTRA line ("sameClock: true"); the user bench may get its files.
one_capture() {
  printf 'users: [{name: bench, token: bench-token}]\nclusters:\n  - name: cluster\n'
  echo "    nodes: [$(seq -s, -f 'n%g' 1 "$1")]"
  printf '    captures:\n      - namespace: bench\n        name: %s\n' "$2"
  if [ -n "${4:-}" ]; then echo "        $4"; fi
  echo "        nodes:"
  for i in $(seq 1 "$1"); do echo "          - {node: n$i, $3}"; done
  echo '    rbac:
      - {subjects: [user:bench], verbs: [get], apiGroups: [projectcalico.org], resources: [packetcaptures/files]}'
}
