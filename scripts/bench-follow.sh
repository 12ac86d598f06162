#!/usr/bin/env bash
# make bench-follow (and a part of make bench): a running capture followed live. 8 nodes x 2
# streams, each written at RATE packets/s (default 2,000) by the simulation's live writer,
# rotating every 10 s; one client follows merged.pcapng?follow=true for SECONDS (default 30).
# Prints the packets received, their delay from the write on the node to the arrival at the
# client (p50, p99, max), the execs started on the nodes, and the CPU per 100k packets of the
# service and of the simulated cluster (API server, exec, tail, and the live writer itself).
# Writes follow.md.
set -euo pipefail
cd "$(dirname "$0")/.."
R="${CARGO_TARGET_DIR:-target}/release"
OUT="${BENCH_OUT:-${CARGO_TARGET_DIR:-target}/bench/follow-$(date +%Y%m%d-%H%M%S)}"
RATE="${RATE:-2000}"
SECONDS_FOLLOWED="${SECONDS_FOLLOWED:-30}"
LAG="${LAG:-1000}"
mkdir -p "$OUT"
source scripts/bench-lib.sh
PORT=18801

one_capture 8 live "state: Capturing, files: 1, size: 24, interfaces: 2" \
  "live: {rate: $RATE, rotateMs: 10000}" >"$OUT/live.yaml"

start_sim sim-live "$OUT/live.yaml"
SIM_PID=$(cat "$OUT/sim-live.pid")
start_api sim-live

# CPU seconds of a process and its children that have been waited for (the sim's tails).
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15 + $16 + $17) / hz}' "/proc/$1/stat"; }
say "Following bench/live for $SECONDS_FOLLOWED s: 16 streams at $RATE packets/s, lag $LAG ms"
execs_started() { awk '{print $3}' "$OUT/sim-live/execs"; }
api0=$(cpu_s "$API_PID"); sim0=$(cpu_s "$SIM_PID"); execs0=$(execs_started)
"$R/packetcapture-load" --url "https://localhost:$PORT/download/bench/live/merged.pcapng?follow=true&lag=$LAG" \
  --token bench-token --cacert "$OUT/sim-live/ca.crt" --follow-seconds "$SECONDS_FOLLOWED" >"$OUT/follow.txt"
# The tails end when the follow ends: give the sim a moment to reap them.
sleep 1
api1=$(cpu_s "$API_PID"); sim1=$(cpu_s "$SIM_PID"); execs1=$(execs_started)
val() { sed -n "s/^$1=//p" "$OUT/follow.txt"; }
packets=$(val packets)
per100k() { awk -v a="$1" -v b="$2" -v p="$packets" 'BEGIN {printf "%.2f", (b - a) / p * 100000}'; }
{
  echo "| Follow: 8 nodes x 2 streams at $RATE packets/s each, $SECONDS_FOLLOWED s, lag $LAG ms | Figure |"
  echo "| --- | --- |"
  echo "| packets received ($(awk -v p="$packets" -v s="$SECONDS_FOLLOWED" 'BEGIN {printf "%.0f", p / s}')/s; written: $((16 * RATE))/s) | $packets |"
  echo "| delay from write on the node to arrival: p50 / p99 / max | $(val delay_p50_ms) / $(val delay_p99_ms) / $(val delay_max_ms) ms (goal p99 <= $((LAG + 500)) ms) |"
  echo "| packets that came after a later one | $(val after_a_later_one) |"
  echo "| execs started on the nodes (listings, tails, reads of rotated files) | $((execs1 - execs0)) |"
  echo "| CPU per 100k packets: the service / the simulated cluster (API server, exec, tail, writer) | $(per100k "$api0" "$api1") / $(per100k "$sim0" "$sim1") s |"
} | tee "$OUT/follow.md"
