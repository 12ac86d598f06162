#!/usr/bin/env bash
# make bench: the API against the natural baselines (kubectl exec tar, kubectl cp), in one run,
# on the simulated cluster over loopback TLS. Prints a table and writes it to target/bench/.
# Figures vary between machines; the ratios are what matters.
set -euo pipefail
cd "$(dirname "$0")/.."
R="${CARGO_TARGET_DIR:-target}/release"
OUT="${CARGO_TARGET_DIR:-target}/bench/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
say() { printf '\n== %s\n' "$*" >&2; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$OUT/sim-fast/nodes" "$OUT/sim-slow/nodes" "$OUT/cp"; }
trap cleanup EXIT

say "Building release binaries"
cargo build --release --locked -p packetcapture-api -p packetcapture-tests --bins >&2

MiB=1048576
cat >"$OUT/fast.yaml" <<YAML
users: [{name: bench, token: bench-token}]
clusters:
  - name: cluster
    nodes: [node-1, node-2, node-3]
    captures:
      - {namespace: bench, name: one-gib, nodes: [{node: node-1, state: Finished, files: 4, size: $((256 * MiB))}]}
      - {namespace: bench, name: four-gib, nodes: [{node: node-2, state: Finished, files: 16, size: $((256 * MiB))}]}
      - {namespace: bench, name: small, nodes: [{node: node-3, state: Finished, files: 2, size: 100000}]}
    rbac:
      - {subjects: [user:bench], verbs: [get], apiGroups: [projectcalico.org], resources: [packetcaptures/files]}
YAML
cat >"$OUT/slow.yaml" <<YAML
users: [{name: bench, token: bench-token}]
clusters:
  - name: cluster
    nodes: [n1, n2, n3, n4, n5, n6, n7, n8]
    captures:
      - namespace: bench
        name: eight-nodes
        nodes:
$(for i in 1 2 3 4 5 6 7 8; do echo "          - {node: n$i, state: Finished, files: 1, size: $((64 * MiB))}"; done)
    rbac:
      - {subjects: [user:bench], verbs: [get], apiGroups: [projectcalico.org], resources: [packetcaptures/files]}
    faults: {execBandwidth: $((50 * 1000 * 1000))}
YAML

start_sim() { # name scenario
  "$R/packetcapture-sim" --scenario "$2" --out "$OUT/$1" >"$OUT/$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 600); do [ -f "$OUT/$1/ready" ] && return 0; sleep 0.2; done
  cat "$OUT/$1.log"; echo "simulation $1 did not start" >&2; exit 1
}
API_PID=""
start_api() { # sim port
  ( source "$OUT/$1/env"; export PACKETCAPTURE_API_PORT="$2" PACKETCAPTURE_API_LOG_LEVEL=Warn; exec "$R/packetcapture-api" ) >>"$OUT/api.log" 2>&1 &
  API_PID=$!
  PIDS+=("$API_PID")
  for _ in $(seq 1 100); do curl -sf --cacert "$OUT/$1/ca.crt" "https://localhost:$2/health" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "the API did not start" >&2; exit 1
}
stop_api() { kill "$API_PID" 2>/dev/null || true; wait "$API_PID" 2>/dev/null || true; }
peak_rss_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$API_PID/status"; }
now() { date +%s.%N; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.0f", b / s / 1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

say "Generating the captures (1 GiB, 4 GiB, 8 x 64 MiB)"
start_sim sim-fast "$OUT/fast.yaml"
start_sim sim-slow "$OUT/slow.yaml"
PORT=18601
KC=(kubectl --kubeconfig "$OUT/sim-fast/kubeconfig" --cache-dir "$OUT/kube-cache" -n tigera-fluentd)
pod_on() { "${KC[@]}" get pods -o jsonpath="{.items[?(@.spec.nodeName==\"$1\")].metadata.name}"; }
TOKEN=bench-token
CURL=(curl -sS --fail --cacert "$OUT/sim-fast/ca.crt" -H "Authorization: Bearer $TOKEN")
BYTES_1G=$(du -sb "$OUT/sim-fast/nodes/cluster/node-1/var/log/calico/pcap/bench/one-gib" | cut -f1)

say "1. Throughput, one node, 1 GiB"
start_api sim-fast $PORT
read -r api_s api_bytes < <("${CURL[@]}" -o /dev/null -w '%{time_total} %{size_download}\n' "https://localhost:$PORT/download/bench/one-gib/files.zip")
rss_1g=$(peak_rss_mib)
# A CPU profile of the same download (a separate run: the profiler slows what it watches).
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf; } >/dev/null 2>&1 || true
if command -v perf >/dev/null; then
  perf record -F 499 -g -p "$API_PID" -o "$OUT/perf.data" >/dev/null 2>&1 &
  PERF_PID=$!
  sleep 0.5
  "${CURL[@]}" -o /dev/null "https://localhost:$PORT/download/bench/one-gib/files.zip"
  kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true
  perf report -i "$OUT/perf.data" --stdio --no-children --sort symbol 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | sed -E 's/ +/ /g; s/\[\.\] //; s/( -)+ *$//' | head -10 >"$OUT/profile.txt" || true
fi
stop_api
POD1=$(pod_on node-1)
t0=$(now); "${KC[@]}" exec "$POD1" -- tar cf - -C /var/log/calico/pcap/bench one-gib >/dev/null; t1=$(now)
exec_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
rm -rf "$OUT/cp"; t0=$(now); "${KC[@]}" cp "$POD1:/var/log/calico/pcap/bench/one-gib" "$OUT/cp" >/dev/null 2>&1; t1=$(now)
cp_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
cp_bytes=$(du -sb "$OUT/cp" | cut -f1); rm -rf "$OUT/cp"

say "2. Memory, 4 GiB"
start_api sim-fast $PORT
read -r api4_s api4_bytes < <("${CURL[@]}" -o /dev/null -w '%{time_total} %{size_download}\n' "https://localhost:$PORT/download/bench/four-gib/files.zip")
rss_4g=$(peak_rss_mib)

say "4. Latency, small capture, warm caches"
LOAD=("$R/packetcapture-load" --url "https://localhost:$PORT/download/bench/small/files.zip" --token "$TOKEN" --cacert "$OUT/sim-fast/ca.crt")
"${LOAD[@]}" --concurrency 1 --requests 200 >"$OUT/latency-1.txt"
"${LOAD[@]}" --concurrency 32 --requests 1000 >"$OUT/latency-32.txt"
val() { grep "^$2=" "$1" | cut -d= -f2; }

say "5. Compression, 1 GiB"
read -r st_s st_bytes < <("${CURL[@]}" -o /dev/null -w '%{time_total} %{size_download}\n' "https://localhost:$PORT/download/bench/one-gib/files.zip?compression=stored")
read -r df_s df_bytes < <("${CURL[@]}" -o /dev/null -w '%{time_total} %{size_download}\n' "https://localhost:$PORT/download/bench/one-gib/files.zip?compression=deflate")
stop_api

say "3. Many nodes: 8 x 64 MiB, each exec stream capped at 50 MB/s"
start_api sim-slow $PORT
read -r eight_s eight_bytes < <(curl -sS --fail --cacert "$OUT/sim-slow/ca.crt" -H "Authorization: Bearer $TOKEN" -o /dev/null -w '%{time_total} %{size_download}\n' "https://localhost:$PORT/download/bench/eight-nodes/files.zip")
stop_api
KS=(kubectl --kubeconfig "$OUT/sim-slow/kubeconfig" --cache-dir "$OUT/kube-cache-slow" -n tigera-fluentd)
sum_s=0
for n in n1 n2 n3 n4 n5 n6 n7 n8; do
  pod=$("${KS[@]}" get pods -o jsonpath="{.items[?(@.spec.nodeName==\"$n\")].metadata.name}")
  t0=$(now); "${KS[@]}" exec "$pod" -- tar cf - -C /var/log/calico/pcap/bench eight-nodes >/dev/null; t1=$(now)
  sum_s=$(awk -v s="$sum_s" -v a="$t0" -v b="$t1" 'BEGIN {print s + b - a}')
done

{
  echo "# make bench, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, loopback TLS, simulated cluster"
  echo
  echo "| # | Measure | Figure | Baseline | Ratio |"
  echo "| --- | --- | --- | --- | --- |"
  echo "| 1 | 1 GiB, one node: API download (curl, HTTPS, zip) | $(mbps "$api_bytes" "$api_s") MB/s ($api_s s) | kubectl exec tar: $(mbps "$BYTES_1G" "$exec_s") MB/s ($exec_s s) | $(ratio "$exec_s" "$api_s")x |"
  echo "| 1 | | | kubectl cp: $(mbps "$cp_bytes" "$cp_s") MB/s ($cp_s s) | $(ratio "$cp_s" "$api_s")x |"
  echo "| 2 | API peak RSS, 1 GiB download | $rss_1g MiB | | |"
  echo "| 2 | API peak RSS, 4 GiB download ($(mbps "$api4_bytes" "$api4_s") MB/s) | $rss_4g MiB | 1 GiB: $rss_1g MiB | $(ratio "$rss_4g" "$rss_1g")x |"
  echo "| 3 | 8 nodes x 64 MiB, exec capped 50 MB/s: API | $eight_s s | sum of per-node kubectl exec tar: $sum_s s | $(ratio "$sum_s" "$eight_s")x |"
  echo "| 4 | small capture, 1 client: TTFB p50 / p99 | $(val "$OUT/latency-1.txt" ttfb_p50_ms) / $(val "$OUT/latency-1.txt" ttfb_p99_ms) ms | whole request p50 / p99: $(val "$OUT/latency-1.txt" total_p50_ms) / $(val "$OUT/latency-1.txt" total_p99_ms) ms | |"
  echo "| 4 | small capture, 32 clients: TTFB p50 / p99 | $(val "$OUT/latency-32.txt" ttfb_p50_ms) / $(val "$OUT/latency-32.txt" ttfb_p99_ms) ms | whole request p50 / p99: $(val "$OUT/latency-32.txt" total_p50_ms) / $(val "$OUT/latency-32.txt" total_p99_ms) ms | $(val "$OUT/latency-32.txt" rps) req/s |"
  echo "| 5 | 1 GiB Stored | $(mbps "$st_bytes" "$st_s") MB/s, $st_bytes bytes | | |"
  echo "| 5 | 1 GiB Deflate | $(mbps "$st_bytes" "$df_s") MB/s of input, $df_bytes bytes | Stored | size $(ratio "$df_bytes" "$st_bytes")x, time $(ratio "$df_s" "$st_s")x |"
  if [ -s "$OUT/profile.txt" ]; then
    echo "| P | CPU profile of case 1 (perf, self time) | $(head -3 "$OUT/profile.txt" | sed 's/^ //' | paste -sd ';' | sed 's/;/; /g') | full list: profile.txt | |"
  fi
  echo
  echo "Ratios: baseline time / API time (above 1: the API is faster); RSS 4 GiB / 1 GiB (1: flat)."
  echo "The simulated pcaps repeat payload bytes, so Deflate compresses them far better than real traffic."
} | tee "$OUT/results.md"
echo >&2; echo "Written to $OUT/results.md" >&2
