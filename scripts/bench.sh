#!/usr/bin/env bash
# make bench: the API against the natural baselines (kubectl exec tar, kubectl cp), in one run,
# on the simulated cluster over loopback TLS. Prints a table and writes it to target/bench/.
# Figures vary between machines; the ratios are what matters.
set -euo pipefail
cd "$(dirname "$0")/.."
R="${CARGO_TARGET_DIR:-target}/release"
OUT="${CARGO_TARGET_DIR:-target}/bench/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
if [ -z "${SKIP_BUILD:-}" ]; then
  printf '\n== %s\n' "Building release binaries" >&2
  cargo build --release --locked -p packetcapture-api -p packetcapture-tests -p kubectl-packetcapture --bins >&2
fi
SKIP_BUILD=1 source scripts/bench-lib.sh
trap 'cleanup; rm -rf "$OUT/cp"' EXIT

MiB=1048576
RBAC='    rbac:
      - {subjects: [user:bench], verbs: [get], apiGroups: [projectcalico.org], resources: [packetcaptures/files]}'
# capture NAME COUNT SIZE FILES: a capture on nodes n1..nCOUNT, FILES files of SIZE bytes each.
capture() {
  printf '      - namespace: bench\n        name: %s\n        nodes:\n' "$1"
  for i in $(seq 1 "$2"); do echo "          - {node: n$i, state: Finished, files: $4, size: $3}"; done
}
# scenario NODES [FAULTS] < captures: a cluster of nodes n1..nNODES with the captures given.
scenario() {
  printf 'users: [{name: bench, token: bench-token}]\nclusters:\n  - name: cluster\n'
  echo "    nodes: [$(seq -s, -f 'n%g' 1 "$1")]"
  echo "    captures:"
  cat
  echo "$RBAC"
  [ -n "${2:-}" ] && echo "    faults: {$2}"
  return 0
}
{ capture one-gib 1 $((256 * MiB)) 4; capture four-gib 1 $((256 * MiB)) 16; capture small 1 100000 2; } \
  | scenario 1 >"$OUT/fast.yaml"
# Capped exec streams (16 MB/s each): one node, and eight nodes of the same size.
{ capture one-node 1 $((24 * 1000 * 1000)) 1; capture eight-nodes 8 $((24 * 1000 * 1000)) 1; } \
  | scenario 8 "execBandwidth: $((16 * 1000 * 1000))" >"$OUT/capped.yaml"
# merge-eight: 8 nodes x 64 MiB captured at the same time (their packets interleave).
{ capture sixty-four 64 $((4 * MiB)) 2; capture merge-eight 8 $((64 * MiB)) 1 | sed '2a\        sameClock: true'; } \
  | scenario 64 >"$OUT/wide.yaml"

PORT=18601
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
peak_rss_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$API_PID/status"; }
now() { date +%s.%N; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.0f", b / s / 1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
TOKEN=bench-token
fetch() { # sim path: prints "seconds bytes"
  curl -sS --fail --cacert "$OUT/$1/ca.crt" -H "Authorization: Bearer $TOKEN" -o /dev/null \
    -w '%{time_total} %{size_download}\n' "https://localhost:$PORT$2"
}

say "Generating the captures (1 GiB, 4 GiB, 8 x 24 MB capped, 64 x 8 MiB, 8 x 64 MiB)"
start_sim sim-fast "$OUT/fast.yaml"
start_sim sim-capped "$OUT/capped.yaml"
start_sim sim-wide "$OUT/wide.yaml"
KC=(kubectl --kubeconfig "$OUT/sim-fast/admin.kubeconfig" --cache-dir "$OUT/kube-cache" -n tigera-fluentd)
pod_on() { "${KC[@]}" get pods -o jsonpath="{.items[?(@.spec.nodeName==\"$1\")].metadata.name}"; }
BYTES_1G=$(du -sb "$OUT/sim-fast/nodes/cluster/n1/var/log/calico/pcap/bench/one-gib" | cut -f1)

say "1. One node, 1 GiB: the API, kubectl exec tar, kubectl cp"
start_api sim-fast
api_cpu0=$(cpu_s "$API_PID")
read -r api_s api_bytes < <(fetch sim-fast /download/bench/one-gib/files.zip)
api_cpu=$(awk -v a="$api_cpu0" -v b="$(cpu_s "$API_PID")" 'BEGIN {printf "%.2f", b - a}')
rss_1g=$(peak_rss_mib)
# The same download through the plugin (kube's client: HTTP/1.1), written to /dev/null.
t0=$(now)
"$R/kubectl-packetcapture" --server "https://localhost:$PORT" --token "$TOKEN" \
  --certificate-authority "$OUT/sim-fast/ca.crt" get bench/one-gib -o - >/dev/null 2>"$OUT/plugin.log"
t1=$(now)
plugin_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
# A CPU profile of the same download on a fresh replica (a separate run: the profiler slows
# what it watches).
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf; } >/dev/null 2>&1 || true
if command -v perf >/dev/null; then
  stop_api; start_api sim-fast
  perf record -F 499 -g -p "$API_PID" -o "$OUT/perf.data" >/dev/null 2>&1 &
  PERF_PID=$!
  sleep 0.5
  fetch sim-fast /download/bench/one-gib/files.zip >/dev/null
  kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true
  perf report -i "$OUT/perf.data" --stdio --no-children --sort symbol 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | sed -E 's/ +/ /g; s/\[\.\] //; s/\[k\] //; s/( -)+ *$//' | head -12 >"$OUT/profile.txt" || true
fi
# HTTP/1.1 against HTTP/2 (curl, the same 1 GiB), five rounds each, alternating, each on a
# fresh replica: its first download (every file hashed: CRC-32 and SHA-256), then the same
# again (the digests kept from the first: CRC-32 checked against them, no SHA-256). CPU seconds
# per GiB by process: the API, the simulated cluster (API server and its exec's tar: the sim
# and its children), curl. The simulation sends kube-apiserver's 32 KiB exec frames.
SIM_FAST_PID=$(cat "$OUT/sim-fast.pid")
ticks_all() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }
for v in http1.1 http2 http1.1 http2 http1.1 http2 http1.1 http2 http1.1 http2; do
  stop_api; start_api sim-fast
  for pass in first again; do
    a0=$(ticks_all "$API_PID"); s0=$(ticks_all "$SIM_FAST_PID")
    /usr/bin/time -f '%U %S' -o "$OUT/curl-cpu" curl -sS --fail "--$v" --cacert "$OUT/sim-fast/ca.crt" \
      -H "Authorization: Bearer $TOKEN" -o /dev/null -w '%{time_total} %{size_download}\n' \
      "https://localhost:$PORT/download/bench/one-gib/files.zip" >"$OUT/curl-out"
    a1=$(ticks_all "$API_PID"); s1=$(ticks_all "$SIM_FAST_PID")
    read -r t b <"$OUT/curl-out"
    echo "$v-$pass $t $b $((a1 - a0)) $((s1 - s0)) $(awk '{print $1 + $2}' "$OUT/curl-cpu")" >>"$OUT/protocols.txt"
  done
done
# proto_stat PROTO-PASS (http2-first, http1.1-again...): the medians of its rounds: seconds, then
# CPU per GiB of the API, the simulation, curl (medians: one round slowed by a neighbour on the
# machine moves a mean by a tenth).
proto_stat() {
  local col
  for col in 2 4 5 6; do
    awk -v p="$1" -v c="$col" -v hz="$(getconf CLK_TCK)" '$1 == p {
        gib = $3 / 1073741824
        if (c == 2) print $2; else if (c == 6) print $6 / gib; else print $c / hz / gib
      }' "$OUT/protocols.txt" | sort -n | awk '{v[NR] = $1} END {printf "%.2f ", v[int((NR + 1) / 2)]}'
  done
  echo
}
read -r h1_s h1_api h1_sim h1_curl < <(proto_stat http1.1-first)
read -r h2_s h2_api h2_sim h2_curl < <(proto_stat http2-first)
read -r h1w_s h1w_api h1w_sim h1w_curl < <(proto_stat http1.1-again)
read -r h2w_s h2w_api h2w_sim h2w_curl < <(proto_stat http2-again)
stop_api
POD1=$(pod_on n1)
t0=$(now); /usr/bin/time -f '%U %S' -o "$OUT/kubectl-cpu" "${KC[@]}" exec "$POD1" -- tar cf - -C /var/log/calico/pcap/bench one-gib >/dev/null; t1=$(now)
kubectl_cpu=$(awk '{printf "%.2f", $1 + $2}' "$OUT/kubectl-cpu")
exec_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
rm -rf "$OUT/cp"; t0=$(now); "${KC[@]}" cp "$POD1:/var/log/calico/pcap/bench/one-gib" "$OUT/cp" >/dev/null 2>&1; t1=$(now)
cp_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
cp_bytes=$(du -sb "$OUT/cp" | cut -f1); rm -rf "$OUT/cp"

say "2. Memory, 4 GiB"
start_api sim-fast
read -r api4_s api4_bytes < <(fetch sim-fast /download/bench/four-gib/files.zip)
rss_4g=$(peak_rss_mib)

say "3. Latency, small capture, warm caches"
LOAD=("$R/packetcapture-load" --url "https://localhost:$PORT/download/bench/small/files.zip" --token "$TOKEN" --cacert "$OUT/sim-fast/ca.crt")
"${LOAD[@]}" --concurrency 1 --requests 200 >"$OUT/latency-1.txt"
# CPU per request at 32 clients, by process: the API, the simulation, and the simulation's
# children (the entry pods' tar processes), from /proc (clock ticks).
ticks() { awk '{print $14 + $15, $16 + $17}' "/proc/$1/stat"; }
SIM_FAST_PID=$(cat "$OUT/sim-fast.pid")
read -r api_t0 _ < <(ticks "$API_PID"); read -r sim_t0 tar_t0 < <(ticks "$SIM_FAST_PID")
"${LOAD[@]}" --concurrency 32 --requests 1000 >"$OUT/latency-32.txt"
read -r api_t1 _ < <(ticks "$API_PID"); read -r sim_t1 tar_t1 < <(ticks "$SIM_FAST_PID")
HZ=$(getconf CLK_TCK)
per_req_ms() { awk -v t="$1" -v hz="$HZ" 'BEGIN {printf "%.2f", t / hz * 1000 / 1000}'; }
cpu_api=$(per_req_ms $((api_t1 - api_t0))); cpu_sim=$(per_req_ms $((sim_t1 - sim_t0))); cpu_tar=$(per_req_ms $((tar_t1 - tar_t0)))
val() { grep "^$2=" "$1" | cut -d= -f2; }

say "4. Compression, 1 GiB"
read -r st_s st_bytes < <(fetch sim-fast "/download/bench/one-gib/files.zip?compression=stored")
read -r df_s df_bytes < <(fetch sim-fast "/download/bench/one-gib/files.zip?compression=deflate")
stop_api

say "5. Latency without exec: the same capture read by the local backend (the service's own part)"
start_api sim-fast PACKETCAPTURE_API_FETCH_BACKEND=local "PACKETCAPTURE_API_LOCAL_ROOT=$(realpath "$OUT/sim-fast/nodes/cluster")"
"${LOAD[@]}" --concurrency 32 --requests 2000 >"$OUT/latency-32-local.txt"
stop_api

say "6. Capped exec streams (16 MB/s): 1 node vs 8 nodes of 24 MB, then one node at a time"
start_api sim-capped
read -r one_s _ < <(fetch sim-capped /download/bench/one-node/files.zip)
read -r eight_s _ < <(fetch sim-capped /download/bench/eight-nodes/files.zip)
rss_8=$(peak_rss_mib)
stop_api
start_api sim-capped PACKETCAPTURE_API_FETCH_CONCURRENCY=1
read -r serial_s _ < <(fetch sim-capped /download/bench/eight-nodes/files.zip)
stop_api

say "7. 64 nodes x 2 x 4 MiB"
start_api sim-wide
read -r wide_s wide_bytes < <(fetch sim-wide /download/bench/sixty-four/files.zip)
rss_64=$(peak_rss_mib)
stop_api

say "8. 8 nodes x 64 MiB, interleaved in time: merged.pcapng against files.zip"
start_api sim-wide
read -r zip8_s zip8_bytes < <(fetch sim-wide /download/bench/merge-eight/files.zip)
read -r merged_s merged_bytes < <(fetch sim-wide /download/bench/merge-eight/merged.pcapng)
rss_merged=$(peak_rss_mib)
curl -sS --fail --cacert "$OUT/sim-wide/ca.crt" -H "Authorization: Bearer $TOKEN" -o "$OUT/merged.pcapng" \
  "https://localhost:$PORT/download/bench/merge-eight/merged.pcapng"
# The same merge filtered on the server, keeping about 1% (TCP frames of 1440 bytes or more).
FILTER="tcp and greater 1440"
filtered_path="/download/bench/merge-eight/merged.pcapng?filter=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$FILTER")"
read -r filtered_s filtered_bytes < <(fetch sim-wide "$filtered_path")
curl -sS --fail --cacert "$OUT/sim-wide/ca.crt" -H "Authorization: Bearer $TOKEN" -o "$OUT/filtered.pcapng" \
  "https://localhost:$PORT$filtered_path"
stop_api
merged_packets=$("$R/packetcapture-sim" pcapng-count "$OUT/merged.pcapng")
filtered_packets=$("$R/packetcapture-sim" pcapng-count "$OUT/filtered.pcapng")
rm -f "$OUT/merged.pcapng" "$OUT/filtered.pcapng"

{
  echo "# make bench, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, loopback TLS, simulated cluster"
  echo
  echo "| # | Measure | Figure | Baseline | Ratio |"
  echo "| --- | --- | --- | --- | --- |"
  echo "| 1 | 1 GiB, one node: API download (curl, HTTPS, zip) | $(mbps "$api_bytes" "$api_s") MB/s ($api_s s) | kubectl exec tar: $(mbps "$BYTES_1G" "$exec_s") MB/s ($exec_s s) | $(ratio "$exec_s" "$api_s")x |"
  echo "| 1 | the same through kubectl packetcapture (HTTP/1.1) | $(mbps "$api_bytes" "$plugin_s") MB/s ($plugin_s s) | kubectl exec tar | $(ratio "$exec_s" "$plugin_s")x |"
  echo "| 1 | CPU of that download: the API (TLS both ways, tar to zip, CRC-32, SHA-256) | $api_cpu s | kubectl (TLS, WebSocket): $kubectl_cpu s | |"
  echo "| 1 | curl HTTP/2 against HTTP/1.1, 1 GiB, median of 5 each, first download on a replica | HTTP/2 $h2_s s ($(mbps "$api_bytes" "$h2_s") MB/s) | HTTP/1.1 $h1_s s ($(mbps "$api_bytes" "$h1_s") MB/s) | HTTP/2 takes $(ratio "$h2_s" "$h1_s")x |"
  echo "| 1 | CPU s per GiB at 32 KiB exec frames, medians of 5, first download (SHA-256 and CRC-32 computed): API / simulated cluster (API server, tar) / curl | HTTP/2: $h2_api / $h2_sim / $h2_curl | HTTP/1.1: $h1_api / $h1_sim / $h1_curl | |"
  echo "| 1 | the same again on that replica (digests kept: CRC-32 checked, no SHA-256), time and CPU s per GiB: API / simulated cluster / curl | HTTP/2 $h2w_s s: $h2w_api / $h2w_sim / $h2w_curl | HTTP/1.1 $h1w_s s: $h1w_api / $h1w_sim / $h1w_curl | HTTP/2 takes $(ratio "$h2w_s" "$h1w_s")x |"
  echo "| 1 | | | kubectl cp: $(mbps "$cp_bytes" "$cp_s") MB/s ($cp_s s) | $(ratio "$cp_s" "$api_s")x |"
  echo "| 2 | API peak RSS: 1 GiB / 4 GiB ($(mbps "$api4_bytes" "$api4_s") MB/s) / 8 capped nodes / 64 nodes | $rss_1g / $rss_4g / $rss_8 / $rss_64 MiB | target <= 32 MiB each | 4 GiB / 1 GiB: $(ratio "$rss_4g" "$rss_1g")x |"
  echo "| 3 | small capture, 1 client: TTFB p50 / p99 | $(val "$OUT/latency-1.txt" ttfb_p50_ms) / $(val "$OUT/latency-1.txt" ttfb_p99_ms) ms | whole request p50 / p99: $(val "$OUT/latency-1.txt" total_p50_ms) / $(val "$OUT/latency-1.txt" total_p99_ms) ms | |"
  echo "| 3 | small capture, 32 clients: TTFB p50 / p99 | $(val "$OUT/latency-32.txt" ttfb_p50_ms) / $(val "$OUT/latency-32.txt" ttfb_p99_ms) ms | whole request p50 / p99: $(val "$OUT/latency-32.txt" total_p50_ms) / $(val "$OUT/latency-32.txt" total_p99_ms) ms | $(val "$OUT/latency-32.txt" rps) req/s (TTFB p99 target <= 50 ms) |"
  echo "| 3 | CPU per request at 32 clients: API / simulated API server / entry pods' tar | $cpu_api / $cpu_sim / $cpu_tar ms | 2 cores / total: $(awk -v a="$cpu_api" -v b="$cpu_sim" -v c="$cpu_tar" 'BEGIN {printf "%.0f", 2000 / (a + b + c)}') req/s at most | API share $(awk -v a="$cpu_api" -v b="$cpu_sim" -v c="$cpu_tar" 'BEGIN {printf "%.0f", 100 * a / (a + b + c)}')% |"
  echo "| 4 | 1 GiB Stored | $(mbps "$st_bytes" "$st_s") MB/s, $st_bytes bytes | | |"
  echo "| 4 | 1 GiB Deflate | $(mbps "$st_bytes" "$df_s") MB/s of input, $df_bytes bytes | Stored | size $(ratio "$df_bytes" "$st_bytes")x, time $(ratio "$df_s" "$st_s")x |"
  echo "| 5 | small capture, 32 clients, local backend (no exec: the service's own part): TTFB p50 / p99 | $(val "$OUT/latency-32-local.txt" ttfb_p50_ms) / $(val "$OUT/latency-32-local.txt" ttfb_p99_ms) ms | whole request p50 / p99: $(val "$OUT/latency-32-local.txt" total_p50_ms) / $(val "$OUT/latency-32-local.txt" total_p99_ms) ms | $(val "$OUT/latency-32-local.txt" rps) req/s |"
  echo "| 6 | 8 nodes x 24 MB, each exec capped at 16 MB/s: API | $eight_s s | 1 such node: $one_s s | $(ratio "$eight_s" "$one_s")x (target <= 1.25x) |"
  echo "| 6 | | | same, FETCH_CONCURRENCY=1 (one node at a time): $serial_s s | $(ratio "$serial_s" "$eight_s")x faster |"
  echo "| 7 | 64 nodes x 2 files x 4 MiB | $wide_s s, $(mbps "$wide_bytes" "$wide_s") MB/s | | |"
  echo "| 8 | 8 nodes x 64 MiB, same hours: merged.pcapng | $merged_s s, $(mbps "$merged_bytes" "$merged_s") MB/s, $(awk -v p="$merged_packets" -v s="$merged_s" 'BEGIN {printf "%.2f", p / s / 1e6}') M packets/s ($merged_packets), peak RSS $rss_merged MiB | files.zip of the same: $zip8_s s, $(mbps "$zip8_bytes" "$zip8_s") MB/s | $(ratio "$zip8_s" "$merged_s")x |"
  echo "| 8 | the same merge, filter=$FILTER: kept $filtered_packets of $merged_packets ($(awk -v k="$filtered_packets" -v n="$merged_packets" 'BEGIN {printf "%.2f", 100 * k / n}')%) | $filtered_s s, $(awk -v p="$merged_packets" -v s="$filtered_s" 'BEGIN {printf "%.2f", p / s / 1e6}') M packets/s read, $filtered_bytes bytes sent | unfiltered: $merged_s s, $merged_bytes bytes | bytes $(ratio "$filtered_bytes" "$merged_bytes")x, time $(ratio "$merged_s" "$filtered_s")x faster |"
  if [ -s "$OUT/profile.txt" ]; then
    echo "| P | CPU profile of case 1, first download on a replica (perf, self time) | $(head -4 "$OUT/profile.txt" | sed 's/^ //' | paste -sd ';' | sed 's/;/; /g') | full list: profile.txt | |"
  fi
  echo
  echo "Ratios: baseline time / API time (above 1: the API is faster), except case 6 (8 nodes / 1 node: 1 is perfect overlap)."
  echo "The simulated pcaps repeat payload bytes, so Deflate compresses them far better than real traffic."
} | tee "$OUT/results.md"
echo >&2; echo "Written to $OUT/results.md" >&2

say "9. Load: hundreds of nodes, concurrent downloads (scripts/bench-load.sh)"
cleanup
PIDS=()
SKIP_BUILD=1 BENCH_OUT="$OUT/load" bash scripts/bench-load.sh

say "10. Follow: a running capture live, 8 nodes x 2 streams at 2,000 packets/s (scripts/bench-follow.sh)"
SKIP_BUILD=1 BENCH_OUT="$OUT/follow" bash scripts/bench-follow.sh

say "11. Resume: a 4 GiB zip cut at 90% (scripts/bench-resume.sh)"
SKIP_BUILD=1 BENCH_OUT="$OUT/resume" bash scripts/bench-resume.sh
