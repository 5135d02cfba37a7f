#!/bin/sh
# bench/dist.sh [BUILDDIR]: the distribution link and the path through a
# backend. Two gateways (one thread each) and one backend on this machine;
# the loadgen's users alternate between the gateways, so every message goes
# gateway -> backend (stored durably: LMDB, fsync per group commit) ->
# gateway, and every delivered receipt goes back the same way.
#
# For each offered rate, twice: with batching (the default 256 KiB batches)
# and with --link-batch 0 (every frame its own batch and send). Reports
# delivered messages/s, latency, frames per batch and bytes per message on
# the gateway->backend link, backend commits/s and bytes written to storage
# per message, and CPU per message of the
# three servers together (and the backend's and gateway 1's user and system
# time apart). Bounded: 5 s per run.
#   DIST_CONNS    loadgen connections (2000)
#   DIST_RATES    offered totals, comma or space separated (2000,10000,30000)
#   DIST_NOBATCH  0: skip the runs without batching
#   DIST_BACKENDS 1 or 2 (the users spread over both; commits and the
#                 backend CPU are both backends' together)
#   DIST_BE_THREADS node threads per backend (1; the cluster file's threads)
#   DIST_GROUP    members per group (0: 1:1 chat): the loadgen's group
#                 scenario, where the first member of each group sends and
#                 the others receive; the rates are then group messages
#                 offered, "delivered" counts the members' copies, and
#                 handoffs/copy says how many copies the group's node
#                 thread handed to the members' owner threads (dist
#                 version 4)
#   DIST_DEBUG    set: print each run's loadgen report as well (stderr)
set -eu
b=${1:-build}
base=${DIST_PORT:-27300}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_setup dist
get() { curl -s "http://127.0.0.1:$1/stats" >"$2"; }
cpu() { awk '{print ($14 + $15)}' "/proc/$1/stat"; }
# a process's user and system CPU ticks, apart
beu() { awk '{print $14}' "/proc/$1/stat"; }
bes() { awk '{print $15}' "/proc/$1/stat"; }
# bytes a process has had written to storage (its commits' pages)
wrb() { awk '/^write_bytes/ {print $2}' "/proc/$1/io"; }

"$b/tools/mint-token" --new-secret "$tmp/secret" 2>/dev/null
"$b/tools/mint-token" --new-secret "$tmp/cluster.secret" 2>/dev/null
nbe=${DIST_BACKENDS:-1}
[ "$nbe" = 1 ] || [ "$nbe" = 2 ] || { echo "dist.sh: DIST_BACKENDS is 1 or 2" >&2; exit 2; }
bt=${DIST_BE_THREADS:-1}
[ "$bt" -ge 1 ] && [ "$bt" -le 16 ] || { echo "dist.sh: DIST_BE_THREADS is 1..16" >&2; exit 2; }
# backend node thread k listens on its port + k: 20.. and 40.. above base
{
	printf 'backend 11 127.0.0.1:%s threads %s\n' "$((base + 20))" "$bt"
	[ "$nbe" = 1 ] || printf 'backend 12 127.0.0.1:%s threads %s\n' "$((base + 40))" "$bt"
	printf 'gateway 1\ngateway 2\n'
} >"$tmp/cluster.conf"

# one configuration: start, load, measure, stop. $1 = batch size, $2 = total rate, $3 = name
one() {
	rm -rf "$tmp/data" "$tmp/data2"
	"$b/backend/backend" --node 11 --cluster "$tmp/cluster.conf" --cluster-secret-file "$tmp/cluster.secret" \
		--data-dir "$tmp/data" --link-batch "$1" \
		--stats-listen "127.0.0.1:$((base + 11))" --log-level warn 2>"$tmp/be.log" &
	be=$! be2=
	if [ "$nbe" = 2 ]; then
		"$b/backend/backend" --node 12 --cluster "$tmp/cluster.conf" --cluster-secret-file "$tmp/cluster.secret" \
			--data-dir "$tmp/data2" --link-batch "$1" \
			--stats-listen "127.0.0.1:$((base + 14))" --log-level warn 2>"$tmp/be2.log" &
		be2=$!
	fi
	"$b/gateway/gateway" --node 1 --threads 1 --cluster "$tmp/cluster.conf" --cluster-secret-file "$tmp/cluster.secret" \
		--auth-secret-file "$tmp/secret" \
		--listen "127.0.0.1:$((base + 2))" --stats-listen "127.0.0.1:$((base + 12))" --link-batch "$1" \
		--rate-frames 0 --rate-bytes 0 --log-level warn 2>"$tmp/g1.log" &
	g1=$!
	"$b/gateway/gateway" --node 2 --threads 1 --cluster "$tmp/cluster.conf" --cluster-secret-file "$tmp/cluster.secret" \
		--auth-secret-file "$tmp/secret" \
		--listen "127.0.0.1:$((base + 3))" --stats-listen "127.0.0.1:$((base + 13))" --link-batch "$1" \
		--rate-frames 0 --rate-bytes 0 --log-level warn 2>"$tmp/g2.log" &
	g2=$!
	pids="$be $be2 $g1 $g2"
	sleep 1
	n=${DIST_CONNS:-2000}
	grp=${DIST_GROUP:-0}
	if [ "$grp" -gt 0 ]; then
		rate=$(awk -v t="$2" -v n="$n" -v g="$grp" 'BEGIN {printf "%.4f", t / int(n / g)}')
		scen="--scenario group --group-size $grp"
	else
		rate=$(awk -v t="$2" -v n="$n" 'BEGIN {printf "%.4f", t / n}')
		scen="--scenario chat"
	fi
	c0=$(($(cpu "$be") + $(cpu "$g1") + $(cpu "$g2"))) u0=$(beu "$be") s0=$(bes "$be") gu0=$(beu "$g1") gs0=$(bes "$g1")
	w0=$(wrb "$be")
	[ -z "$be2" ] || { c0=$((c0 + $(cpu "$be2"))) u0=$((u0 + $(beu "$be2"))) s0=$((s0 + $(bes "$be2"))) w0=$((w0 + $(wrb "$be2"))); }
	get $((base + 12)) "$tmp/g1a.json"
	get $((base + 11)) "$tmp/bea.json"
	echo '{"commits":0,"handoffs_sent":0}' >"$tmp/be2a.json"
	[ -z "$be2" ] || get $((base + 14)) "$tmp/be2a.json"
	# shellcheck disable=SC2086 # $scen is two options
	"$b/loadgen/loadgen" --secret-file "$tmp/secret" $scen --connections "$n" --rate "$rate" \
		--targets "127.0.0.1:$((base + 2))" --targets "127.0.0.1:$((base + 3))" --receipts --duration 5s \
		--drain 5s --quiet --max-error-rate 1 --report "$tmp/$3.json" >"$tmp/$3.out" 2>&1 || true
	[ -z "${DIST_DEBUG:-}" ] || cat "$tmp/$3.out" >&2
	c1=$(($(cpu "$be") + $(cpu "$g1") + $(cpu "$g2"))) u1=$(beu "$be") s1=$(bes "$be") gu1=$(beu "$g1") gs1=$(bes "$g1")
	w1=$(wrb "$be")
	[ -z "$be2" ] || { c1=$((c1 + $(cpu "$be2"))) u1=$((u1 + $(beu "$be2"))) s1=$((s1 + $(bes "$be2"))) w1=$((w1 + $(wrb "$be2"))); }
	get $((base + 12)) "$tmp/g1b.json"
	get $((base + 11)) "$tmp/beb.json"
	echo '{"commits":0,"handoffs_sent":0}' >"$tmp/be2b.json"
	[ -z "$be2" ] || get $((base + 14)) "$tmp/be2b.json"
	kill -TERM $pids 2>/dev/null || true
	wait $pids 2>/dev/null || true
	pids=
	awk -v name="$3" -v offered="$2" -v hz="$(getconf CLK_TCK)" -v c0="$c0" -v c1="$c1" \
		-v bu=$((u1 - u0)) -v bs=$((s1 - s0)) -v wr=$((w1 - w0)) -v gu=$((gu1 - gu0)) -v gs=$((gs1 - gs0)) \
		-v d="$(num delivered "$tmp/$3.json")" -v dps="$(num delivered_per_s "$tmp/$3.json")" \
		-v p50="$(num p50 "$tmp/$3.json")" -v p99="$(num p99 "$tmp/$3.json")" -v p999="$(num p999 "$tmp/$3.json")" -v lost="$(num lost "$tmp/$3.json")" \
		-v fa="$(num link_frames_out "$tmp/g1a.json")" -v fb="$(num link_frames_out "$tmp/g1b.json")" \
		-v ba="$(num link_batches_out "$tmp/g1a.json")" -v bb="$(num link_batches_out "$tmp/g1b.json")" \
		-v ya="$(num link_bytes_out "$tmp/g1a.json")" -v yb="$(num link_bytes_out "$tmp/g1b.json")" \
		-v ra="$(num routed_remote "$tmp/g1a.json")" -v rb="$(num routed_remote "$tmp/g1b.json")" \
		-v ca="$(($(num commits "$tmp/bea.json") + $(num commits "$tmp/be2a.json")))" \
		-v cb="$(($(num commits "$tmp/beb.json") + $(num commits "$tmp/be2b.json")))" \
		-v cp50="$(num commit_p50_us "$tmp/beb.json")" -v cp99="$(num commit_p99_us "$tmp/beb.json")" \
		-v ha="$(($(num handoffs_sent "$tmp/bea.json") + $(num handoffs_sent "$tmp/be2a.json")))" \
		-v hb="$(($(num handoffs_sent "$tmp/beb.json") + $(num handoffs_sent "$tmp/be2b.json")))" 'BEGIN {
		fr = fb - fa; bt = bb - ba; by = yb - ya; r = rb - ra
		printf "%-12s offered %7.0f/s delivered %7.0f/s p50 %8.1f us p99 %9.1f us p99.9 %9.1f us | gw1->be %6.1f frames/batch %5.1f B/msg | commits %5.0f, p50 %5.1f p99 %5.1f ms, %5.0f B written/msg | servers %5.1f us CPU/msg, backend %4.1f user + %4.1f sys, gateway 1 %4.1f + %4.1f | lost %s%s\n",
			name, offered, dps, p50, p99, p999, (bt > 0 ? fr / bt : 0), (r > 0 ? by / r : 0), cb - ca, cp50 / 1000, cp99 / 1000, (d > 0 ? wr / d : 0),
			(d > 0 ? (c1 - c0) / hz / d * 1e6 : 0), (d > 0 ? bu / hz / d * 1e6 : 0), (d > 0 ? bs / hz / d * 1e6 : 0),
			(d > 0 ? gu / hz / d * 1e6 : 0), (d > 0 ? gs / hz / d * 1e6 : 0), lost,
			(hb > ha ? sprintf(" | handoffs %.2f/copy", d > 0 ? (hb - ha) / d : 0) : "")
	}'
}

results=
for total in $(echo "${DIST_RATES:-2000 10000 30000}" | tr , ' '); do
	results="$results$(one 256k "$total" "batch-$total")
"
	[ "${DIST_NOBATCH:-1}" = 0 ] || results="$results$(one 0 "$total" "nobatch-$total")
"
done
cat <<EOF

=== dist link: 2 gateways (1 thread each) + $nbe backend(s) of $bt node thread(s), every message through the backend, delivered receipts on, ${DIST_CONNS:-2000} connections$( [ "${DIST_GROUP:-0}" -gt 0 ] && echo ", groups of ${DIST_GROUP:-0} (rates: group messages; delivered: members' copies)")
$results
(frames/batch and bytes/msg: gateway 1's link to the backend, sends and receipts both counted in frames;
 commits: backend group commits during the run, and backend 1's commit duration (fsync included) since it
 started, and the bytes the backends wrote to storage per delivered message; CPU: gateways + backend, per delivered message, and the
 backend's own user and system time per delivered message, and gateway 1's (half the senders and
 recipients))
EOF
