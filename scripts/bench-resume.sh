#!/usr/bin/env bash
# make bench-resume (and a part of make bench): a 4 GiB zip of a finished capture (8 nodes x 2
# files x 256 MiB) downloaded whole, then cut at 90% and resumed with curl -C -: on the replica
# that served the cut download (it kept the files' digests) and on a fresh one (it reads every
# file before the cut for the central directory's CRCs and the manifest's SHA-256s). Prints the
# time, the bytes sent and the CPU of the service and of the simulated cluster (API server and
# its execs) of each, against the whole download, and checks each resumed zip is the whole
# one (SHA-256) and that unzip -t tests the whole one (past 4 GiB: its Zip64 fields). Writes
# resume.md.
set -euo pipefail
cd "$(dirname "$0")/.."
R="${CARGO_TARGET_DIR:-target}/release"
OUT="${BENCH_OUT:-${CARGO_TARGET_DIR:-target}/bench/resume-$(date +%Y%m%d-%H%M%S)}"
CUT_PERCENT="${CUT_PERCENT:-90}"
MiB=$((1024 * 1024))
mkdir -p "$OUT"
source scripts/bench-lib.sh
PORT=18901

one_capture 8 four-gib "state: Finished, files: 2, size: $((256 * MiB))" >"$OUT/resume.yaml"

say "Generating 8 nodes x 2 x 256 MiB"
start_sim sim-resume "$OUT/resume.yaml"
SIM_PID=$(cat "$OUT/sim-resume.pid")
ZIP="$OUT/four-gib.zip"
URL="https://localhost:$PORT/download/bench/four-gib/files.zip"
CURL=(curl -sS --fail --cacert "$OUT/sim-resume/ca.crt" -H "Authorization: Bearer bench-token")
# CPU seconds of a process and its children that have been waited for (the sim's execs).
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15 + $16 + $17) / hz}' "/proc/$1/stat"; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }
# measure NAME CURL-ARGS...: runs curl into the zip; NAME_s, NAME_bytes, NAME_api, NAME_sim.
measure() {
  local name=$1; shift
  local api0 sim0 s bytes code
  api0=$(cpu_s "$API_PID"); sim0=$(cpu_s "$SIM_PID")
  read -r s bytes code < <("${CURL[@]}" "$@" -o "$ZIP" -w '%{time_total} %{size_download} %{http_code}\n' "$URL")
  printf -v "${name}_s" %s "$s"
  printf -v "${name}_bytes" %s "$bytes"
  printf -v "${name}_code" %s "$code"
  printf -v "${name}_api" %s "$(sub "$api0" "$(cpu_s "$API_PID")")"
  printf -v "${name}_sim" %s "$(sub "$sim0" "$(cpu_s "$SIM_PID")")"
}

start_api sim-resume
say "Whole download"
measure whole
LEN=$(stat -c %s "$ZIP")
SUM=$(sha256sum "$ZIP" | cut -d' ' -f1)
# Past 4 GiB the last entries' offsets are Zip64 fields: Info-ZIP must read it whole.
unzip -tq "$ZIP" >&2 || { echo "unzip -t fails on the whole zip" >&2; exit 1; }
CUT=$((LEN * CUT_PERCENT / 100))
ETAG=$("${CURL[@]}" -I "$URL" | awk -F': ' 'tolower($1) == "etag" {print $2}' | tr -d '\r')

say "Cut at $CUT_PERCENT% ($CUT of $LEN bytes), resumed on the same replica"
truncate -s "$CUT" "$ZIP"
measure warm -C - -H "If-Range: $ETAG"
[ "$(sha256sum "$ZIP" | cut -d' ' -f1)" = "$SUM" ] || { echo "the resumed zip differs from the whole one" >&2; exit 1; }

say "Cut again, resumed on a fresh replica (no digest kept)"
stop_api
start_api sim-resume
truncate -s "$CUT" "$ZIP"
measure cold -C - -H "If-Range: $ETAG"
[ "$(sha256sum "$ZIP" | cut -d' ' -f1)" = "$SUM" ] || { echo "the resumed zip differs from the whole one" >&2; exit 1; }
rm -f "$ZIP"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
{
  echo "# make bench-resume, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, loopback TLS, simulated cluster"
  echo
  echo "4 GiB zip of a finished capture (8 nodes x 2 x 256 MiB, $LEN bytes, Zip64 past 4 GiB: unzip -t passes), cut at $CUT_PERCENT% and resumed with curl -C - (each resumed zip checked: the same SHA-256 as the whole one)."
  echo
  echo "| Download | HTTP | Time | Bytes sent | CPU: service / simulated cluster | Time against whole |"
  echo "| --- | --- | --- | --- | --- | --- |"
  echo "| whole | $whole_code | $whole_s s | $whole_bytes | $whole_api / $whole_sim s | 1.00x |"
  echo "| resumed, same replica (digests kept) | $warm_code | $warm_s s | $warm_bytes | $warm_api / $warm_sim s | $(ratio "$warm_s" "$whole_s")x (goal <= 0.50x) |"
  echo "| resumed, fresh replica (reads the files before the cut) | $cold_code | $cold_s s | $cold_bytes | $cold_api / $cold_sim s | $(ratio "$cold_s" "$whole_s")x |"
} | tee "$OUT/resume.md"
echo >&2; echo "Written to $OUT/resume.md" >&2
