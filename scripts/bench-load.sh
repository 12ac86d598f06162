#!/usr/bin/env bash
# make bench-load (and the last part of make bench): hundreds of nodes and concurrent
# downloads against one API process on the simulated cluster. For each load: the API's peak
# RSS (VmHWM, the API restarted before each load), wall time, the answers by status, and the
# most execs the simulated cluster had open at once. Prints a table, writes load.md.
set -euo pipefail
cd "$(dirname "$0")/.."
R="${CARGO_TARGET_DIR:-target}/release"
OUT="${BENCH_OUT:-${CARGO_TARGET_DIR:-target}/bench/load-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
source scripts/bench-lib.sh
PORT=18701

# scenario NODES IFACES FILES SIZE: one capture `load` on n1..nNODES, captured at the same time.
scenario() { one_capture "$1" load "state: Finished, files: $3, size: $4, interfaces: $2" "sameClock: true"; }
scenario 200 1 2 1000000 >"$OUT/two-hundred.yaml"
scenario 500 2 1 200000 >"$OUT/five-hundred.yaml"

peak_rss_mib() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$API_PID/status"; }
now() { date +%s.%N; }

ROWS=()
# load LABEL SIM CLIENTS PATH [VAR=value...]: CLIENTS concurrent GETs of PATH.
load() {
  local label=$1 sim=$2 clients=$3 path=$4; shift 4
  if [ -n "${ONLY:-}" ] && [[ "$label" != *"$ONLY"* ]]; then return 0; fi
  start_api "$sim" "$@"
  touch "$OUT/$sim/reset-peak-execs"
  sleep 0.2
  local t0 t1 i curls=()
  t0=$(now)
  for i in $(seq 1 "$clients"); do
    curl -sS --cacert "$OUT/$sim/ca.crt" -H "Authorization: Bearer bench-token" -o /dev/null \
      -w '%{http_code} %{size_download}\n' "https://localhost:$PORT$path" >"$OUT/status-$i" 2>"$OUT/curl-$i.err" &
    curls+=($!)
  done
  wait "${curls[@]}" || true
  t1=$(now)
  local rss execs statuses
  rss=$(peak_rss_mib)
  execs=$(awk '{print $2}' "$OUT/$sim/execs" 2>/dev/null || echo n/a)
  statuses=$(for i in $(seq 1 "$clients"); do
      s=$(cut -d' ' -f1 "$OUT/status-$i" 2>/dev/null); [ -s "$OUT/curl-$i.err" ] && s="cut"; echo "${s:-none}"
    done | sort | uniq -c | awk '{printf "%s%s x %s", sep, $1, $2; sep=", "}')
  local bytes; bytes=$(cat "$OUT"/status-* | awk '{b += $2} END {printf "%.0f", b / 1e6}')
  stop_api
  rm -f "$OUT"/status-* "$OUT"/curl-*.err
  local row
  row="| $label | $rss MiB | $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s | $statuses ($bytes MB) | $execs |"
  echo "$row" >&2
  ROWS+=("$row")
}

say "Generating the captures: 200 nodes x 2 files x 1 MB; 500 nodes x 2 interfaces x 200 KB"
start_sim sim-200 "$OUT/two-hundred.yaml"
start_sim sim-500 "$OUT/five-hundred.yaml"

say "Loads"
load "one 200-node files.zip" sim-200 1 /download/bench/load/files.zip "$@"
load "one 200-stream merged.pcapng" sim-200 1 /download/bench/load/merged.pcapng "$@"
load "8 concurrent 200-node files.zip" sim-200 8 /download/bench/load/files.zip "$@"
load "4 concurrent 200-stream merged.pcapng" sim-200 4 /download/bench/load/merged.pcapng "$@"
load "8 concurrent 200-stream merged.pcapng" sim-200 8 /download/bench/load/merged.pcapng "$@"
load "one 1,000-stream merged.pcapng (500 nodes x 2)" sim-500 1 /download/bench/load/merged.pcapng "$@"

{
  echo "# make bench-load, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores${*:+, $*}"
  echo
  echo "| Load | API peak RSS | Time | Answers | Most execs open |"
  echo "| --- | --- | --- | --- | --- |"
  printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/load.md"
echo >&2; echo "Written to $OUT/load.md" >&2
