#!/bin/sh
# make demo: run birdfeederd on its local default sink (no Tinybird token:
# NDJSON to a file), send the sample events with `birdfeeder send`, stop the
# daemon with SIGTERM (which flushes), and show the enriched rows.
set -eu
BUILD=${1:-build}
dir=$(mktemp -d "${TMPDIR:-/tmp}/birdfeeder-demo.XXXXXX")
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT INT TERM
unset TINYBIRD_API_KEY TINYBIRD_TOKEN

echo "== starting birdfeederd (local file sink, no token)"
"$BUILD/birdfeederd" --listen 127.0.0.1:0 \
    --ip-hash-key-file "$dir/ip-hash.key" --stats-socket "$dir/stats.sock" \
    --out "$dir/rows.ndjson" --flush-interval-ms 200 2>"$dir/daemon.log" &
pid=$!
i=0
until grep -q 'event=listening' "$dir/daemon.log" 2>/dev/null; do
    i=$((i + 1)); [ "$i" -lt 100 ] || { cat "$dir/daemon.log"; exit 1; }
    sleep 0.05
done
addr=$(sed -n 's/.*event=listening addr=\([^ ]*\).*/\1/p' "$dir/daemon.log")
cat "$dir/daemon.log"

echo
echo "== sending tests/demo_events.ndjson to $addr (the last line lacks a model)"
"$BUILD/birdfeeder" send --to "$addr" < tests/demo_events.ndjson || true
echo "== and two datagrams the daemon must reject (garbage, bad JSON)"
python3 - "$addr" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(':', 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b'not an event', (host, int(port)))
s.sendto(b'{"dataset": "image_events", "model": ', (host, int(port)))
PY
sleep 0.5
echo
echo "== stats (one line from the stats socket)"
python3 - "$dir/stats.sock" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
line = s.makefile().readline(); d = json.loads(line)
print({k: d[k] for k in ('received', 'accepted', 'rejected_total',
                         'unknown_model', 'rows_batched')})
print('rejected:', {k: v for k, v in d['rejected'].items() if v})
PY
kill -TERM "$pid"; wait "$pid" || true
echo
echo "== daemon log"
cat "$dir/daemon.log"
echo
echo "== enriched rows (NDJSON as they would be POSTed to Tinybird)"
python3 -c '
import json, sys
for line in open(sys.argv[1]):
    print(json.dumps(json.loads(line), ensure_ascii=False))
' "$dir/rows.ndjson"
echo
echo "Rows: $(wc -l < "$dir/rows.ndjson"). Set TINYBIRD_API_KEY (and TINYBIRD_API_URL) to send them to Tinybird instead."
