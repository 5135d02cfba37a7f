#!/bin/sh
# bench/tls_storm.sh [N] [BUILDDIR]: a reconnect storm over TLS, full
# handshakes against resumed ones (loadgen --tls-resume), on one gateway
# with 2 threads (room for 16,384 handshakes at once per thread, so the
# storm measures handshakes, not refusals) and the loadgen on the same
# machine.
#
# For each mode: N connections (default 20,000) ramp up, then 4 s into the
# run every one of them closes and reconnects at once (--scenario storm;
# the run lasts 40 s, room for the storm to end).
# The gateway's counters are read when the ramp is done and after the run,
# so the figures are the storm's alone: its handshakes (and how many
# resumed), the gateway's loop time per handshake, the gateway's CPU
# during the storm and how long until all N were logged in again (from the
# loadgen's per-second series: 1 s resolution). Prints its figures last.
set -eu
n=${1:-20000}
b=${2:-build}
tport=${TC_TLS_PORT:-27233}
stats=${TC_STATS:-29310}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_setup tlsstorm
stat() { curl -s "http://127.0.0.1:$stats/stats" | grep -o "\"$1\":[0-9]*" | head -n 1 | cut -d: -f2; }

bench_tls_gateway "$b" "$stats" --threads 2 --listen off --listen-tls "127.0.0.1:$tport" --tls-max-handshakes 16384

# storm MODE [loadgen options]: one run; the storm's figures in $tmp/MODE.fig
storm() {
	mode=$1
	shift
	h0=$(stat tls_handshakes)
	"$b/loadgen/loadgen" --secret-file "$tmp/secret" --targets "127.0.0.1:$tport" --tls \
		--tls-ca "$tmp/tls/cert.pem" --scenario storm --connections "$n" --rate 0 --storm-at 4s \
		--duration 40s --ramp-timeout 120s --watch-pid "$gw" --quiet --csv "$tmp/$mode.csv" \
		--report "$tmp/$mode.json" "$@" >"$tmp/$mode.out" 2>"$tmp/$mode.log" &
	lg=$!
	# the ramp is done when the gateway has done N more handshakes
	i=0
	while [ "$(stat tls_handshakes)" -lt $((h0 + n)) ] && [ $i -lt 1200 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	a_h=$(stat tls_handshakes) a_r=$(stat tls_resumed) a_ns=$(stat tls_handshake_ns)
	wait "$lg" || true
	b_h=$(stat tls_handshakes) b_r=$(stat tls_resumed) b_ns=$(stat tls_handshake_ns)
	grep -E "connections|tls |result" "$tmp/$mode.out" | sed "s/^/  $mode: /"
	# recovery: the first second after the storm with fewer than N logged
	# in, to the first after it with all N again; gateway CPU between them
	rec=$(awk -F, -v n="$n" 'NR > 1 && $1 > 3.5 {
		if (!s && $3 < n) { s = $1; c0 = prev }
		if (s && !e && $3 >= n) { e = $1; c1 = $10 }
	} NR > 1 { prev = $10 } END { if (s && e) printf "%.0f %.2f", e - s + 1, c1 - c0; else print "- -" }' \
		"$tmp/$mode.csv")
	echo "$mode $((b_h - a_h)) $((b_r - a_r)) $((b_ns - a_ns)) $rec" >"$tmp/$mode.fig"
}

storm full
storm resumed --tls-resume

echo
echo "=== reconnect storm over TLS 1.3: $n connections reconnect at once, gateway 2 threads, loadgen on the same 2 cores"
printf '%-9s %11s %9s %16s %14s %18s %16s\n' mode handshakes resumed "gw us/handshake" "handshakes/s" "gw cpu in storm" "all back within"
for mode in full resumed; do
	read -r m h r ns secs cpu <"$tmp/$mode.fig"
	awk -v m="$m" -v h="$h" -v r="$r" -v ns="$ns" -v secs="$secs" -v cpu="$cpu" 'BEGIN {
		printf "%-9s %11d %9d %16.0f %14s %16s s %14s s\n", m, h, r, (h ? ns / h / 1000 : 0),
			(secs + 0 > 0 ? sprintf("%.0f", h / secs) : "-"), cpu, secs
	}'
done
echo "(handshakes/s: the storm's handshakes over its recovery time, at 1 s resolution: a lower bound)"
