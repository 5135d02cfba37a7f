#!/bin/sh
# bench/logins.sh [N] [BUILDDIR]: logins per second through the backends
# (the SESSION_UP path) and the directory's memory per online user on each
# backend, with 1 and with 4 backends. Two gateways (one thread each) and
# B backends on this machine; the loadgen logs in N users (default 20,000)
# over both gateways and holds them. A gateway thread announces a session
# to the user's owner only (dist version 4, PROTOCOL.md 4.3), so a login
# costs one SESSION_UP and each backend's directory holds its own users,
# about N/B: the figures say so. Prints its figures last.
#   LOGINS_BE_THREADS  node threads per backend (1): each keeps the sessions
#                      of its own users
set -eu
n=${1:-20000}
b=${2:-build}
base=${LOGINS_PORT:-27500}
bt=${LOGINS_BE_THREADS:-1}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_setup logins
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
stat1() { curl -s --max-time 1 "http://127.0.0.1:$1/stats" | grep -o "\"$2\":[0-9]*" | head -n 1 | cut -d: -f2; }

"$b/tools/mint-token" --new-secret "$tmp/secret" 2>/dev/null
"$b/tools/mint-token" --new-secret "$tmp/cluster.secret" 2>/dev/null

# one NBACKENDS: start, log N users in, measure, stop; a result line in $tmp/r.NBACKENDS
one() {
	nb=$1
	: >"$tmp/cluster.conf"
	for i in $(seq "$nb"); do
		printf 'backend %d 127.0.0.1:%d threads %d\n' $((10 + i)) $((base + 100 + 20 * i)) "$bt" >>"$tmp/cluster.conf"
	done
	printf 'gateway 1\ngateway 2\n' >>"$tmp/cluster.conf"
	bes=
	for i in $(seq "$nb"); do
		rm -rf "$tmp/data$i"
		"$b/backend/backend" --node $((10 + i)) --cluster "$tmp/cluster.conf" \
			--cluster-secret-file "$tmp/cluster.secret" --data-dir "$tmp/data$i" \
			--stats-listen "127.0.0.1:$((base + 20 + i))" --log-level warn 2>"$tmp/be$i.log" &
		bes="$bes $!"
	done
	gws=
	for g in 1 2; do
		"$b/gateway/gateway" --node $g --threads 1 --cluster "$tmp/cluster.conf" \
			--cluster-secret-file "$tmp/cluster.secret" --auth-secret-file "$tmp/secret" \
			--listen "127.0.0.1:$((base + 10 + g))" --stats-listen "127.0.0.1:$((base + 40 + g))" \
			--log-level warn 2>"$tmp/g$g.log" &
		gws="$gws $!"
	done
	pids="$bes $gws"
	for _ in $(seq 100); do
		[ "$(stat1 $((base + 41)) links_up)" = $((nb * bt)) ] && [ "$(stat1 $((base + 42)) links_up)" = $((nb * bt)) ] && break
		sleep 0.1
	done
	set -- $bes
	r0=$(rss_kb "$1")
	"$b/loadgen/loadgen" --secret-file "$tmp/secret" --scenario idle --connections "$n" \
		--targets "127.0.0.1:$((base + 11))" --targets "127.0.0.1:$((base + 12))" --duration 20s --quiet \
		--report "$tmp/lg$nb.json" >"$tmp/lg$nb.out" 2>&1 &
	lg=$!
	# while the loadgen holds them: every session is at its owner; wait
	# for the backends' directories to hold all N together
	for _ in $(seq 300); do
		held=0
		for i in $(seq "$nb"); do
			s=$(stat1 $((base + 20 + i)) sessions)
			held=$((held + ${s:-0}))
		done
		[ "$held" -ge "$n" ] && break
		sleep 0.1
	done
	s1=$(stat1 $((base + 21)) sessions)
	r1=$(rss_kb "$1")
	wait "$lg" || true
	ramp=$(grep -o 'ramp [0-9.]* s ([0-9]*/s)' "$tmp/lg$nb.out" | head -n 1)
	ups=0
	for i in $(seq "$nb"); do
		u=$(stat1 $((base + 20 + i)) sessions_up)
		ups=$((ups + ${u:-0}))
	done
	echo "$nb ${s1:-0} $(((r1 - r0) * 1024)) $ups $ramp" >"$tmp/r.$nb"
	kill -TERM $pids 2>/dev/null || true
	wait $pids 2>/dev/null || true
	pids=
}

one 1
one 4

echo
echo "=== logins through the backends ($bt node thread(s) each): $n users over 2 gateways (1 thread each), loadgen on the same 2 cores"
printf '%-9s %16s %22s %26s %s\n' backends "logins/s (ramp)" "SESSION_UPs per login" "directory B/user/backend" "(backend 1: sessions held)"
for nb in 1 4; do
	read -r x s1 dmem ups ramp <"$tmp/r.$nb"
	rate=$(echo "$ramp" | grep -o '([0-9]*/s)' | tr -d '()/s')
	awk -v nb="$x" -v rate="$rate" -v ups="$ups" -v n="$n" -v d="$dmem" -v s="$s1" 'BEGIN {
		printf "%-9d %16s %22.2f %26.0f %s\n", nb, rate, ups / n, (s > 0 ? d / s : 0), "(" s ")"
	}'
done
echo "(directory memory: backend 1's RSS growth over the logins per session it holds; SESSION_UPs: all backends' sessions_up over N)"
