#!/bin/sh
# bench/throughput.sh [BUILDDIR]: 1:1 message throughput and latency of one
# gateway, with the loadgen on the same machine (they share its cores).
#
# 1. 20,000 connections in pairs, each user sending to its peer on an open
#    loop schedule; the offered rate is raised step by step until delivery
#    falls behind (delivered < 95% of offered, or p99 over 100 ms).
# 2. At 50% and 90% of the highest rate that kept up: latency percentiles,
#    gateway CPU-seconds per million messages, loadgen CPU per message.
# 3. One sender/receiver pair at 1,000 messages/s each way: latency.
# 4. 200 connections at high per-connection rates: the peak when several
#    messages share each socket write (per-connection batching).
# Every load is bounded (5 s runs). Prints its figures last.
set -eu
b=${1:-build}
port=${TP_PORT:-26222}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_setup tp

for _ in $(seq 60); do
	ss -Hltn "sport = :$port" 2>/dev/null | grep -q . || break
	sleep 1
done
"$b/tools/mint-token" --new-secret "$tmp/secret" 2>/dev/null
"$b/gateway/gateway" --auth-secret-file "$tmp/secret" --threads 2 --listen "127.0.0.1:$port" \
	--listen "127.0.0.2:$port" --stats-listen off --rate-frames 0 --rate-bytes 0 --max-queue 4m \
	--log-level warn 2>"$tmp/gateway.log" &
gw=$!
pids=$gw
sleep 0.5

# run CONNS RATE_PER_USER NAME: one 5 s chat run; report in $tmp/NAME.json
run() {
	"$b/loadgen/loadgen" --secret-file "$tmp/secret" --scenario chat --connections "$1" --rate "$2" \
		--targets "127.0.0.1:$port" --targets "127.0.0.2:$port" --sources 127.0.2.1-127.0.2.8 \
		--duration 5s --drain 5s --size 32 --connect-rate 50000 --watch-pid "$gw" --quiet \
		--max-error-rate 1 --report "$tmp/$3.json" >"$tmp/$3.out" 2>"$tmp/$3.log" || true
}
# line NAME OFFERED: one summary line from a report
line() {
	f=$tmp/$1.json
	printf "%-10s offered %9.0f/s  delivered %9.0f/s  p50 %8.1f us  p90 %8.1f us  p99 %9.1f us  p99.9 %9.1f us  gw %6.3f s/M  lg %6.3f s/M  lost %s\n" \
		"$1" "$2" "$(num delivered_per_s "$f")" "$(num p50 "$f")" "$(num p90 "$f")" "$(num p99 "$f")" \
		"$(num p999 "$f")" "$(num watched_s_per_million "$f")" "$(num loadgen_s_per_million "$f")" "$(num lost "$f")"
}

n=20000
best=0
results=
echo "throughput: raising the offered rate with $n connections (pairs)"
for total in 20000 50000 100000 150000 200000 300000 400000 600000; do
	rate=$(awk -v t="$total" -v n="$n" 'BEGIN {printf "%.4f", t / n}')
	run "$n" "$rate" "r$total"
	f=$tmp/r$total.json
	d=$(num delivered_per_s "$f")
	p99=$(num p99 "$f")
	l=$(line "r$total" "$total")
	echo "$l"
	results="$results$l
"
	ok=$(awk -v d="${d:-0}" -v t="$total" -v p="${p99:-1e9}" 'BEGIN {print (d >= 0.95 * t && p <= 100000) ? 1 : 0}')
	[ "$ok" = 1 ] || break
	best=$total
done
echo "throughput: highest offered rate delivered in time: $best msgs/s"
half=$((best / 2))
ninety=$((best * 9 / 10))
for pair in "50pct $half" "90pct $ninety"; do
	set -- $pair
	run "$n" "$(awk -v t="$2" -v n="$n" 'BEGIN {printf "%.4f", t / n}')" "$1"
done
run 2 1000 pair
run 200 2500 batch200
run 200 5000 batch200b

cat <<EOF

=== 1:1 throughput: gateway --threads 2, loadgen on the same 2 cores, 32-byte bodies, open loop
ladder ($n connections; stops at the first rate not delivered in time):
$results
highest rate delivered in time (>= 95% delivered, p99 <= 100 ms): $best msgs/s
$(line 50pct "$half")
$(line 90pct "$ninety")
one pair, 1,000 msgs/s each way:
$(line pair 2000)
200 connections, 2,500 and 5,000 msgs/s each (several messages per socket write):
$(line batch200 500000)
$(line batch200b 1000000)
(gw = gateway CPU-seconds per million delivered messages, lg = loadgen CPU-seconds per million;
 latency is from the scheduled send time to delivery, so loadgen queueing counts)
EOF
