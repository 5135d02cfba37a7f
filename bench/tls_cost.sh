#!/bin/sh
# bench/tls_cost.sh [BUILDDIR]: what TLS costs the gateway on the same 1:1
# workload: CPU-seconds of the gateway per million messages delivered, plain
# against TLS 1.3 (AES-128-GCM or whatever the loadgen's libssl picks first:
# AES-256-GCM), and the latency, with the loadgen on the same machine.
#
# One gateway with a plain and a TLS listener; for each offered rate, a 5 s
# chat run over each (2,000 connections in pairs, receipts on), the
# gateway's CPU read by the loadgen (--watch-pid) over the run only (the
# ramp's handshakes are not in it). Also the handshake cost as the gateway
# counts it (gateway_tls_handshake_seconds_total / handshakes). Prints its
# figures last.
set -eu
b=${1:-build}
port=${TC_PORT:-27222}
tport=${TC_TLS_PORT:-27223}
stats=${TC_STATS:-29300}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_setup tlscost

bench_tls_gateway "$b" "$stats" --threads 2 --listen "127.0.0.1:$port" --listen-tls "127.0.0.1:$tport" --max-queue 4m

# run MODE RATE_PER_USER: one 5 s chat run; its report in $tmp/MODE-RATE.json
run() {
	if [ "$1" = tls ]; then
		set -- "$@" --targets "127.0.0.1:$tport" --tls --tls-ca "$tmp/tls/cert.pem"
	else
		set -- "$@" --targets "127.0.0.1:$port"
	fi
	mode=$1 rate=$2
	shift 2
	"$b/loadgen/loadgen" --secret-file "$tmp/secret" --scenario chat --connections 2000 --rate "$rate" \
		--duration 5s --receipts --watch-pid "$gw" --quiet --report "$tmp/$mode-$rate.json" "$@" \
		>"$tmp/$mode-$rate.out" 2>"$tmp/$mode-$rate.log" || true
	grep -E "rates|latency|watched|result" "$tmp/$mode-$rate.out" | sed "s/^/  $mode @ $rate\/s per user: /"
}

for rate in 10 25 50; do
	run plain "$rate"
	run tls "$rate"
done

echo
echo "=== TLS against plain, 2,000 connections, gateway 2 threads, loadgen on the same 2 cores"
printf '%-22s %14s %14s %14s %12s %12s %8s\n' "offered msgs/s" "plain deliv/s" "tls deliv/s" "plain cpu s/M" "tls cpu s/M" "ratio" "tls p99"
for rate in 10 25 50; do
	p=$tmp/plain-$rate.json t=$tmp/tls-$rate.json
	awk -v off=$((rate * 2000)) -v pd="$(num delivered_per_s "$p")" -v td="$(num delivered_per_s "$t")" \
		-v pc="$(num watched_s_per_million "$p")" -v tc="$(num watched_s_per_million "$t")" \
		-v tp="$(grep -o '"latency_us":{[^}]*' "$t" | grep -o '"p99":[0-9.]*' | cut -d: -f2)" 'BEGIN {
		printf "%-22d %14.0f %14.0f %14.3f %12.3f %11.2fx %6.0f us\n", off, pd, td, pc, tc, (pc > 0 ? tc / pc : 0), tp
	}'
done
hs=$(curl -s "http://127.0.0.1:$stats/stats" | grep -o '"tls_handshake_ns":[0-9]*' | head -n 1 | cut -d: -f2)
n=$(curl -s "http://127.0.0.1:$stats/stats" | grep -o '"tls_handshakes":[0-9]*' | head -n 1 | cut -d: -f2)
awk -v hs="${hs:-0}" -v n="${n:-0}" 'BEGIN { printf "gateway handshakes   %d, %.0f us of loop time each (full handshakes, P-256 certificate)\n", n, (n ? hs / n / 1000 : 0) }'
