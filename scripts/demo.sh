#!/usr/bin/env bash
# make demo: the service against the embedded simulated cluster, then curl commands to try.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${DEMO_PORT:-8444}"
METRICS_PORT="${DEMO_METRICS_PORT:-9091}"
BIN="${CARGO_TARGET_DIR:-target}/debug"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Building the service and the simulated cluster"
bash scripts/build-deps.sh
cargo build --locked -p packetcapture-api -p packetcapture-tests -p kubectl-packetcapture --bins

DIR="$(mktemp -d /tmp/packetcapture-demo.XXXXXX)"
cleanup() {
  [ -n "${API_PID:-}" ] && kill "$API_PID" 2>/dev/null || true
  [ -n "${SIM_PID:-}" ] && kill "$SIM_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  echo; echo "Stopped. Files of this run are in $DIR"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

say "Starting the simulated cluster (management cluster + managed cluster 'east') in $DIR"
"$BIN/packetcapture-sim" --out "$DIR" >"$DIR/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 1 100); do [ -f "$DIR/ready" ] && break; sleep 0.1; done
[ -f "$DIR/ready" ] || { cat "$DIR/sim.log"; echo "the simulated cluster did not start"; exit 1; }
sed 's/^/  /' "$DIR/sim.log"

say "Starting packetcapture-api on https://localhost:$PORT (configuration: $DIR/env)"
# shellcheck disable=SC1091
source "$DIR/env"
export PACKETCAPTURE_API_PORT="$PORT" PACKETCAPTURE_API_METRICS_PORT="$METRICS_PORT"
"$BIN/packetcapture-api" >"$DIR/api.log" 2>&1 &
API_PID=$!
for _ in $(seq 1 100); do
  curl -sf --cacert "$DIR/ca.crt" "https://localhost:$PORT/health" >/dev/null 2>&1 && break
  kill -0 "$API_PID" 2>/dev/null || { cat "$DIR/api.log"; echo "packetcapture-api stopped"; exit 1; }
  sleep 0.1
done
curl -sS --cacert "$DIR/ca.crt" "https://localhost:$PORT/version"; echo

CURL=(curl -sS --cacert "$DIR/ca.crt")
URL="https://localhost:$PORT"

say "jane lists dev/web-traffic with the kubectl plugin (kubectl-packetcapture, on PATH)"
PLUGIN_DIR="$(cd "$BIN" && pwd)"
export PATH="$PLUGIN_DIR:$PATH" PACKETCAPTURE_SERVER="$URL"
PC=(kubectl packetcapture --certificate-authority "$DIR/ca.crt" --token "$(cat "$DIR/tokens/jane")")
"${PC[@]}" ls dev/web-traffic | sed 's/^/  /'
say "... and gets node-1 and node-2 as one time-ordered pcapng (a bar on a terminal, a line otherwise)"
(cd "$DIR" && "${PC[@]}" get dev/web-traffic --merged --node node-1 --node node-2 -o plugin.pcapng 2>&1 | sed 's/^/  /')
say "... and bob gets the server's own words and exit code 4"
set +e
(cd "$DIR" && kubectl packetcapture --certificate-authority "$DIR/ca.crt" --token "$(cat "$DIR/tokens/bob")" get dev/web-traffic 2>&1)
echo "  exit code $?"
set -e

say "jane (group capture-readers) downloads dev/web-traffic with curl, captured on three nodes"
"${CURL[@]}" -H "Authorization: Bearer $(cat "$DIR/tokens/jane")" -o "$DIR/web-traffic.zip" \
  -w '  HTTP %{http_code}, %{size_download} bytes\n' "$URL/download/dev/web-traffic/files.zip"
unzip -l "$DIR/web-traffic.zip"
mkdir -p "$DIR/web-traffic" && unzip -q -o "$DIR/web-traffic.zip" -d "$DIR/web-traffic"
echo "  Packets in each file:"
"$BIN/packetcapture-sim" pcap-info "$DIR"/web-traffic/*.pcap | sed 's/^/  /'

say "dana@example.com signs in with Dex; the service verifies her ID token itself"
"${CURL[@]}" -H "Authorization: Bearer $(cat "$DIR/tokens/dana@example.com")" -o "$DIR/dana.zip" \
  -w '  HTTP %{http_code}, %{size_download} bytes\n' "$URL/download/dev/web-traffic/files.zip"

say "bob (group developers) may not"
"${CURL[@]}" -H "Authorization: Bearer $(cat "$DIR/tokens/bob")" -w '  HTTP %{http_code}\n' \
  "$URL/download/dev/web-traffic/files.zip" | sed 's/^/  /'

say "jane downloads the capture of the same name in managed cluster east (through Voltron)"
"${CURL[@]}" -H "Authorization: Bearer $(cat "$DIR/tokens/jane")" -H "X-Cluster-ID: east" -o "$DIR/east.zip" \
  -w '  HTTP %{http_code}, %{size_download} bytes\n' "$URL/download/dev/web-traffic/files.zip"
unzip -l "$DIR/east.zip" | sed 's/^/  /'

say "The zip's last entry, SHA256SUMS, checks what was unzipped"
(cd "$DIR/web-traffic" && sha256sum -c SHA256SUMS | sed 's/^/  /')

say "jane merges the three nodes into one time-ordered pcapng (one interface per node and pod)"
"${CURL[@]}" -H "Authorization: Bearer $(cat "$DIR/tokens/jane")" -o "$DIR/web-traffic.pcapng" \
  -w '  HTTP %{http_code}, %{size_download} bytes\n' "$URL/download/dev/web-traffic/merged.pcapng"
if command -v capinfos >/dev/null; then
  capinfos "$DIR/web-traffic.pcapng" 2>/dev/null \
    | grep -E 'Number of packets|Strict time order|Number of interfaces|Name =|First packet|Last packet' | sed 's/^ */  /'
  if command -v mergecap >/dev/null; then
    # node-1's active file ends mid-record, as Felix's can: mergecap stops there.
    mergecap -w "$DIR/mergecap.pcapng" "$DIR"/web-traffic/*.pcap 2>/dev/null || true
    count() { capinfos -c -M "$1" 2>/dev/null | awk '/Number of packets/ {print $NF}'; }
    echo "  For comparison, mergecap of the unzipped files stops at node-1's cut record:"
    echo "  $(count "$DIR/mergecap.pcapng") of $(count "$DIR/web-traffic.pcapng") packets, and every node on one interface."
  fi
else
  echo "  (install Wireshark's capinfos to see its packets and interfaces)"
fi

say "Only node-2, only 23:13:20.1 to 23:13:20.2 UTC on 15 November 2023 (RFC 3339; since inclusive, until exclusive)"
"${CURL[@]}" -H "Authorization: Bearer $(cat "$DIR/tokens/jane")" -o "$DIR/window.pcapng" \
  -w '  HTTP %{http_code}, %{size_download} bytes\n' \
  "$URL/download/dev/web-traffic/merged.pcapng?node=node-2&since=2023-11-15T23:13:20.1Z&until=2023-11-15T23:13:20.2Z"
command -v capinfos >/dev/null && capinfos "$DIR/window.pcapng" 2>/dev/null \
  | grep -E 'Number of packets|First packet|Last packet|Name =' | sed 's/^ */  /'

say "Filtered on the server with tcpdump's syntax (compiled by libpcap): only UDP port 53"
"${CURL[@]}" -G -H "Authorization: Bearer $(cat "$DIR/tokens/jane")" -o "$DIR/dns.pcapng" \
  -w '  HTTP %{http_code}, %{size_download} bytes (the whole merge: '"$(stat -c %s "$DIR/web-traffic.pcapng")"' bytes)\n' \
  --data-urlencode "filter=udp port 53" "$URL/download/dev/web-traffic/merged.pcapng"
command -v capinfos >/dev/null && capinfos "$DIR/dns.pcapng" 2>/dev/null \
  | grep -E 'Number of packets:' | sed 's/^ */  /'
echo "  A filter libpcap refuses is 400 in its words:"
"${CURL[@]}" -G -H "Authorization: Bearer $(cat "$DIR/tokens/jane")" \
  --data-urlencode "filter=udp port" "$URL/download/dev/web-traffic/merged.pcapng" | sed 's/^/  /'

say "Following dev/web-live while it captures (node-1 and node-3, 20 packets/s each): 3 s, then Ctrl-C"
# What Wireshark would show live: kubectl packetcapture get dev/web-live --merged --follow -o - | wireshark -k -i -
(cd "$DIR" && timeout -s INT 3 "${PC[@]}" get dev/web-live --merged --follow --lag 500 -o live.pcapng 2>&1 | sed 's/^/  /') || true
command -v capinfos >/dev/null && capinfos "$DIR/live.pcapng" 2>/dev/null \
  | grep -E 'Number of packets|First packet|Last packet|Name =' | sed 's/^ */  /'

say "What is on the nodes now (JSON listing: each file with its own path)"
"${CURL[@]}" -H "Authorization: Bearer $(cat "$DIR/tokens/jane")" "$URL/files/dev/web-traffic" | head -c 600; echo " ..."

say "One file, resumed: the first 1000 bytes, then curl -C - fetches the rest (Range)"
FILE_PATH=$("${CURL[@]}" -H "Authorization: Bearer $(cat "$DIR/tokens/jane")" "$URL/files/dev/web-traffic" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["nodes"][0]["files"][0]["path"])')
"${CURL[@]}" -H "Authorization: Bearer $(cat "$DIR/tokens/jane")" -r 0-999 -o "$DIR/one.pcap" \
  -w '  HTTP %{http_code}, %{size_download} bytes\n' "$URL$FILE_PATH"
"${CURL[@]}" -H "Authorization: Bearer $(cat "$DIR/tokens/jane")" -C - -o "$DIR/one.pcap" \
  -w '  HTTP %{http_code}, %{size_download} more bytes\n' "$URL$FILE_PATH"
cmp "$DIR/one.pcap" "$DIR/web-traffic/$(basename "$FILE_PATH")" && echo "  identical to the file in the zip"

say "The whole zip, resumed: dev/web-traffic is Finished, so its zip has a length and an ETag"
ZIP_URL="$URL/download/dev/web-traffic/files.zip"
"${CURL[@]}" -I -H "Authorization: Bearer $(cat "$DIR/tokens/jane")" "$ZIP_URL" | tr -d '\r' >"$DIR/zip-head.txt"
grep -iE '^(content-length|etag|last-modified|accept-ranges):' "$DIR/zip-head.txt" | sed 's/^/  HEAD: /'
ETAG=$(awk -F': ' 'tolower($1) == "etag" {print $2}' "$DIR/zip-head.txt")
"${CURL[@]}" -H "Authorization: Bearer $(cat "$DIR/tokens/jane")" -r 0-499999 -o "$DIR/resumed.zip" \
  -w '  cut: HTTP %{http_code}, %{size_download} bytes\n' "$ZIP_URL"
"${CURL[@]}" -H "Authorization: Bearer $(cat "$DIR/tokens/jane")" -H "If-Range: $ETAG" -C - -o "$DIR/resumed.zip" \
  -w '  resumed: HTTP %{http_code}, %{size_download} more bytes\n' "$ZIP_URL"
cmp "$DIR/resumed.zip" "$DIR/web-traffic.zip" && echo "  identical to the zip downloaded whole"

say "What an operator sees: Prometheus metrics on :$METRICS_PORT (no names in labels) and each request's last log line"
curl -sS "http://localhost:$METRICS_PORT/metrics" \
  | grep -E '^packetcapture_api_(http_requests_total|download_bytes_total|cache_hits_total)' | sed 's/^/  /'
grep 'request finished' "$DIR/api.log" | tail -1 | sed 's/^/  /'

cat <<EOT

== Running until Ctrl-C. Try these (copy and paste into another terminal):

  # the kubectl plugin
  export PATH="$PLUGIN_DIR:\$PATH" PACKETCAPTURE_SERVER=https://localhost:$PORT
  kubectl packetcapture --certificate-authority $DIR/ca.crt --token \$(cat $DIR/tokens/jane) ls dev/web-traffic
  kubectl packetcapture --certificate-authority $DIR/ca.crt --token \$(cat $DIR/tokens/jane) get dev/web-traffic --merged

  # curl
  TOKEN=\$(cat $DIR/tokens/jane)
  curl --fail --cacert $DIR/ca.crt -H "Authorization: Bearer \$TOKEN" \\
    -o files.zip https://localhost:$PORT/download/dev/web-traffic/files.zip

  # the same capture in managed cluster east
  curl --fail --cacert $DIR/ca.crt -H "Authorization: Bearer \$TOKEN" -H "X-Cluster-ID: east" \\
    -o east.zip https://localhost:$PORT/download/dev/web-traffic/files.zip

  # one time-ordered pcapng of every node; only node-2, only a window (RFC 3339)
  curl --fail --cacert $DIR/ca.crt -H "Authorization: Bearer \$TOKEN" \\
    -o web-traffic.pcapng https://localhost:$PORT/download/dev/web-traffic/merged.pcapng
  curl --fail --cacert $DIR/ca.crt -H "Authorization: Bearer \$TOKEN" -o part.pcapng \\
    "https://localhost:$PORT/download/dev/web-traffic/merged.pcapng?node=node-2&since=2023-11-15T23:13:20.1Z&until=2023-11-15T23:13:20.2Z"
  # only the packets a pcap-filter expression matches (tcpdump's syntax), filtered on the server
  curl --fail --cacert $DIR/ca.crt -G -H "Authorization: Bearer \$TOKEN" -o dns.pcapng \\
    --data-urlencode "filter=udp port 53" https://localhost:$PORT/download/dev/web-traffic/merged.pcapng

  # follow a running capture from every node, live, into Wireshark (Ctrl-C to stop)
  kubectl packetcapture --certificate-authority $DIR/ca.crt --token \$(cat $DIR/tokens/jane) get dev/web-live --merged --follow -o - | wireshark -k -i -
  curl -sN --fail --cacert $DIR/ca.crt -H "Authorization: Bearer \$TOKEN" \\
    "https://localhost:$PORT/download/dev/web-live/merged.pcapng?follow=true" | tshark -r - -l

  # list the files; deflate the zip; a running capture (still downloadable)
  curl --cacert $DIR/ca.crt -H "Authorization: Bearer \$TOKEN" https://localhost:$PORT/files/dev/web-traffic
  curl --fail --cacert $DIR/ca.crt -H "Authorization: Bearer \$TOKEN" \\
    -o files.zip "https://localhost:$PORT/download/dev/dns-live/files.zip?compression=deflate"

  # ops-admin may delete a finished capture's files (then downloading it answers 204)
  curl --cacert $DIR/ca.crt -X DELETE -H "Authorization: Bearer \$(cat $DIR/tokens/ops-admin)" \\
    -w '%{http_code}\n' https://localhost:$PORT/files/payments/checkout

  # metrics, and the OpenAPI document of every route
  curl http://localhost:$METRICS_PORT/metrics
  curl --cacert $DIR/ca.crt https://localhost:$PORT/openapi.json

  # the simulated cluster also serves kubectl
  kubectl --kubeconfig $DIR/admin.kubeconfig get pods -n tigera-fluentd

Logs: $DIR/api.log, $DIR/sim.log
EOT
wait "$API_PID"
