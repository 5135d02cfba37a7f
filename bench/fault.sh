#!/bin/bash
# bench/fault.sh [BUILDDIR]: a backend stopped for 15 s under chat load.
# Two gateways (one thread each) and one backend on this machine; the
# loadgen's users alternate between the gateways, so every message goes
# through the backend. After a warm-up the backend gets SIGSTOP, 15 s later
# SIGCONT; the loadgen's clients stay connected throughout (none reconnects:
# the report says so). Measures:
#   - gateway RSS growth during the stop against the configured --link-queue
#     (FAULT_LINK_QUEUE, default 1m: small enough that the queue fills), and
#     what /stats link_queue_bytes reported at the end of the stop;
#   - from SIGCONT: the time until the gateways' links are up again, until the
#     first delivery through the backend to a user who stayed online (the
#     gateways' deliver_remote counters, polled every few ms), and until the
#     delivery rate is back to the rate before the stop (the loadgen's
#     per-second series);
#   - what the clients saw: messages acknowledged and not delivered by the
#     end (lost), try_again answers, reconnects.
# Bounded: about 60 s. Ports from FAULT_PORT (default 27400).
# FAULT_BE_THREADS: the backend's node threads (1).
# FAULT_MODE=kill: SIGKILL instead of SIGSTOP, and the backend started again
# on the same data dir after the pause: every message acknowledged `stored`
# must be delivered after the restart (lost 0), the in-memory counts rebuilt.
set -eu
b=${1:-build}
base=${FAULT_PORT:-27400}
lq=${FAULT_LINK_QUEUE:-1m}
stop_s=${FAULT_STOP_S:-15}
conns=${FAULT_CONNECTIONS:-2000}
rate=${FAULT_RATE:-2.5} # messages per second per user
mode=${FAULT_MODE:-stop}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_setup fault
for x in "$b/backend/backend" "$b/gateway/gateway" "$b/loadgen/loadgen" "$b/tools/mint-token"; do
	[ -x "$x" ] || { echo "fault.sh: $x missing: run ninja first" >&2; exit 2; }
done
stat1() { curl -s --max-time 1 "http://127.0.0.1:$1/stats" | grep -o "\"$2\":[0-9]*" | head -n 1 | cut -d: -f2; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

"$b/tools/mint-token" --new-secret "$tmp/secret" 2>/dev/null
"$b/tools/mint-token" --new-secret "$tmp/cluster.secret" 2>/dev/null
bt=${FAULT_BE_THREADS:-1} # node threads of the backend (the cluster file's threads); ports from base + 20
printf 'backend 11 127.0.0.1:%s threads %s\ngateway 1\ngateway 2\n' "$((base + 20))" "$bt" >"$tmp/cluster.conf"

start_backend() {
	"$b/backend/backend" --node 11 --cluster "$tmp/cluster.conf" --cluster-secret-file "$tmp/cluster.secret" \
		--data-dir "$tmp/data" --stats-listen "127.0.0.1:$((base + 11))" --log-level warn 2>>"$tmp/be.log" &
	be=$!
}
start_backend
pids=$be
for g in 1 2; do
	"$b/gateway/gateway" --node $g --threads 1 --cluster "$tmp/cluster.conf" \
		--cluster-secret-file "$tmp/cluster.secret" --auth-secret-file "$tmp/secret" \
		--listen "127.0.0.1:$((base + 1 + g))" --stats-listen "127.0.0.1:$((base + 11 + g))" \
		--link-queue "$lq" --rate-frames 0 --rate-bytes 0 --log-level warn 2>"$tmp/g$g.log" &
	pids="$pids $!"
done
set -- $pids
g1=$2 g2=$3
for _ in $(seq 50); do
	[ "$(stat1 $((base + 12)) links_up)" = "$bt" ] && [ "$(stat1 $((base + 13)) links_up)" = "$bt" ] && break
	sleep 0.2
done

warm=8
run=$((warm + stop_s + 15))
echo "fault: $conns clients, $rate msg/s each, backend stopped ${stop_s}s after ${warm}s of load; --link-queue $lq" >&2
t_lg=$(now_ms)
"$b/loadgen/loadgen" --secret-file "$tmp/secret" --scenario chat --connections "$conns" --rate "$rate" \
	--targets "127.0.0.1:$((base + 2))" --targets "127.0.0.1:$((base + 3))" --receipts --duration "${run}s" \
	--drain 15s --quiet --max-error-rate 1 --report "$tmp/lg.json" --csv "$tmp/lg.csv" >"$tmp/lg.out" 2>&1 &
lg=$!
sleep "$warm"

r1=$(rss_kb "$g1") r2=$(rss_kb "$g2")
if [ "$mode" = kill ]; then
	kill -KILL "$be"
	wait "$be" 2>/dev/null || true
else
	kill -STOP "$be"
fi
t_stop=$(now_ms)
echo "fault: backend ${mode}ed" >&2
m1=$r1 m2=$r2
while [ $(($(now_ms) - t_stop)) -lt $((stop_s * 1000)) ]; do
	x=$(rss_kb "$g1") y=$(rss_kb "$g2")
	[ "$x" -gt "$m1" ] && m1=$x
	[ "$y" -gt "$m2" ] && m2=$y
	sleep 0.2
done
q1=$(stat1 $((base + 12)) link_queue_bytes) q2=$(stat1 $((base + 13)) link_queue_bytes)
d1=$(stat1 $((base + 12)) deliver_remote) d2=$(stat1 $((base + 13)) deliver_remote)
if [ "$mode" = kill ]; then
	start_backend
	pids="$be $g1 $g2"
else
	kill -CONT "$be"
fi
t_cont=$(now_ms)
echo "fault: backend resumed" >&2
t_up='' t_first=''
while [ $(($(now_ms) - t_cont)) -lt 20000 ] && { [ -z "$t_up" ] || [ -z "$t_first" ]; }; do
	if [ -z "$t_up" ] && [ "$(stat1 $((base + 12)) links_up)" = "$bt" ] && [ "$(stat1 $((base + 13)) links_up)" = "$bt" ]; then
		t_up=$(now_ms)
	fi
	if [ -z "$t_first" ]; then
		e1=$(stat1 $((base + 12)) deliver_remote) e2=$(stat1 $((base + 13)) deliver_remote)
		[ "${e1:-0}" -gt "$d1" ] || [ "${e2:-0}" -gt "$d2" ] && t_first=$(now_ms)
	fi
done
wait "$lg" || true

# the delivery rate before the stop (mean of the seconds between 3 s and the
# stop) and the first second after SIGCONT at 90% of it again
back=$(awk -F, -v t0="$t_lg" -v ts="$t_stop" -v tc="$t_cont" 'NR > 1 {
		t = t0 + $1 * 1000
		if (t > t0 + 3000 && t < ts) { s += $6; n++ }
		if (t > tc) { T[++m] = t; R[m] = $6 }
	} END {
		pre = n ? s / n : 0
		for (i = 1; i <= m; i++) if (R[i] >= 0.9 * pre) { printf "%.0f %.0f", T[i] - tc, pre; exit }
		printf "never %.0f", pre
	}' "$tmp/lg.csv")
set -- $back
back_ms=$1 pre=$2
since() { if [ -n "$1" ]; then echo "$(($1 - t_cont)) ms"; else echo "none within 20 s"; fi; }
lq_b=$(awk -v s="$lq" 'BEGIN { n = s + 0; u = substr(s, length(s)); if (u == "k") n *= 1024; else if (u == "m") n *= 1048576; else if (u == "g") n *= 1073741824; print n }')
j=$tmp/lg.json
cat <<EOF

=== backend $( [ "$mode" = kill ] && echo "killed (SIGKILL) and started again after" || echo stopped) ${stop_s} s under load: 2 gateways (1 thread each) + 1 backend, $conns clients, $rate msg/s each ($(awk -v c="$conns" -v r="$rate" 'BEGIN {print c * r}')/s offered)
delivery rate before the stop: $pre msg/s
gateway RSS growth during the stop: gw1 $((m1 - r1)) KiB, gw2 $((m2 - r2)) KiB; --link-queue $lq per link ($bt link(s) per gateway thread); /stats link_queue_bytes at the end of the stop: gw1 $((q1 / 1024)) KiB, gw2 $((q2 / 1024)) KiB ($(awk -v q="$q1" -v b="$lq_b" -v n="$bt" 'BEGIN {printf "%.0f%%", q / b / n * 100}') of the bound)
after $( [ "$mode" = kill ] && echo "the restart" || echo SIGCONT): links up again: $(since "$t_up"), first delivery through the backend to a user who stayed online: $(since "$t_first"), delivery rate back to 90%: $( [ "$back_ms" = never ] && echo never || echo "$back_ms ms") (1 s resolution)
clients: sent $(num sent "$j"), acknowledged $(num acked "$j"), delivered $(num delivered "$j"), lost $(num lost "$j"), duplicated $(num duplicated "$j"), try_again $(x=$(num try_again "$j"); echo "${x:-0}"), reconnects $(num reconnects "$j"), kicked $(num kicked "$j"), closed by server $(num closed_by_server "$j")
EOF
