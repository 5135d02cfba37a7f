#!/bin/sh
# bench/hold.sh [CONNECTIONS] [BUILDDIR]: hold N logged-in connections with the
# gateway and the loadgen side by side on this machine, and measure what they
# cost: gateway RSS per connection, machine memory per connection (both ends),
# kernel slabs per connection, connect rate, gateway CPU while holding.
#
# Memory is measured the same way as shared/tools/memprobe does (one snapshot
# before the ramp, one while holding; deltas divided by N). The gateway gets
# enough threads (rings) for N under RLIMIT_NOFILE: N / (limit - 64), plus one.
# As root it raises net.core.somaxconn and the SYN backlog for the ramp (and
# says so). Prints its figures last. Bounded: the loadgen gives up ramping after
# 5 minutes (HOLD_RAMP_TIMEOUT) and holds for 40 s. HOLD_TLS=1: every connection over TLS 1.3
# (--listen-tls, loadgen --tls; a certificate made for the run).
set -eu
n=${1:-1000000}
b=${2:-build}
port=${HOLD_PORT:-25222}
stats=${HOLD_STATS:-29100}
tmp=$(mktemp -d /tmp/hold.XXXXXX)
gw=
lg=
cleanup() {
	[ -n "$lg" ] && kill "$lg" 2>/dev/null || true
	[ -n "$gw" ] && kill -TERM "$gw" 2>/dev/null && sleep 1 && kill -KILL "$gw" 2>/dev/null || true
	true
	if [ "${failed:-0}" = 1 ]; then
		echo "hold: logs kept in $tmp" >&2
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT INT TERM

limit=$(ulimit -Hn)
[ "$limit" = unlimited ] && limit=1048576
[ "$limit" -gt 1048576 ] && limit=1048576
per=$((limit - 64))
# users hash to home threads, so threads fill unevenly: keep 5% headroom
threads=$(((n + n / 20 + per - 1) / per))
echo "hold: $n connections; RLIMIT_NOFILE $limit -> $threads gateway threads of $per slots"

if [ "$(id -u)" = 0 ]; then
	# tcp_mem: 2 million sockets (both ends) pass the default pressure threshold
	# (1.5 GB on a 24 GB machine), and TCP under pressure slows the ramp down
	for kv in net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 \
		"net.ipv4.tcp_mem=1048576 1572864 2097152"; do
		sysctl -q -w "$kv" >/dev/null 2>&1 && echo "hold: sysctl $kv" || true
	done
fi

mem() { awk -v k="$1" '$1 == k":" {print $2}' /proc/meminfo; }
slab() { awk -v s="$1" '$1 == s {print $2 * $4}' /proc/slabinfo 2>/dev/null || echo 0; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

"$b/tools/mint-token" --new-secret "$tmp/secret" 2>/dev/null
tls=${HOLD_TLS:-0}
lopt=--listen
gwtls=
lgtls=
if [ "$tls" = 1 ]; then
	"$(dirname "$0")/../tools/tls-selfsigned" "$tmp/tls" >/dev/null
	lopt=--listen-tls
	# the loadgen's --inflight 1024 per thread may all land on one gateway
	# thread: room for them, so the ramp measures handshakes, not refusals
	gwtls="--listen off --tls-cert $tmp/tls/cert.pem --tls-key $tmp/tls/key.pem --tls-max-handshakes 16384"
	lgtls="--tls --tls-ca $tmp/tls/cert.pem"
	echo "hold: over TLS 1.3"
fi
# a previous run's gateway may still be closing its sockets: wait for the port
for _ in $(seq 120); do
	ss -Hltn "sport = :$port" 2>/dev/null | grep -q . || break
	sleep 1
done
failed=0
# shellcheck disable=SC2086
"$b/gateway/gateway" --auth-secret-file "$tmp/secret" --threads "$threads" $gwtls \
	$lopt "127.0.0.1:$port" $lopt "127.0.0.2:$port" $lopt "127.0.0.3:$port" $lopt "127.0.0.4:$port" \
	--stats-listen "127.0.0.1:$stats" --recv-pool 16m --keepalive 900s --login-timeout 60s \
	--log-level warn 2>"$tmp/gateway.log" &
gw=$!
for _ in $(seq 50); do
	(exec 3<>"/dev/tcp/127.0.0.1/$stats") 2>/dev/null && break
	sleep 0.1
done
if ! kill -0 "$gw" 2>/dev/null; then
	failed=1
	echo "hold: the gateway did not start:" >&2
	cat "$tmp/gateway.log" >&2
	exit 1
fi
sleep 1
free0=$(mem MemFree)
rss0=$(rss "$gw")
tcp0=$(slab TCP)
kiocb0=$(slab io_kiocb)
inode0=$(slab sock_inode_cache)

# shellcheck disable=SC2086
"$b/loadgen/loadgen" --secret-file "$tmp/secret" --scenario idle --connections "$n" $lgtls \
	--targets "127.0.0.1:$port" --targets "127.0.0.2:$port" --targets "127.0.0.3:$port" --targets "127.0.0.4:$port" \
	--sources 127.0.1.1-127.0.1.32 --connect-rate "${HOLD_RATE:-100000}" --inflight 1024 --ramp-timeout "${HOLD_RAMP_TIMEOUT:-300s}" \
	--duration 40s --ping-interval 0 --recv-pool 16m --watch-pid "$gw" --report "$tmp/report.json" --quiet \
	>"$tmp/loadgen.out" 2>"$tmp/loadgen.log" &
lg=$!
start=$(date +%s)
logged=0
last=0
tick=0
while kill -0 "$lg" 2>/dev/null; do
	# the first "logged_in" is the gateway's total (per-thread ones follow)
	logged=$(curl -s "http://127.0.0.1:$stats/stats" | grep -o '"logged_in":[0-9]*' | head -n 1 | cut -d: -f2)
	logged=${logged:-0}
	[ "$logged" -ge "$n" ] && break
	tick=$((tick + 1))
	if [ $((tick % 10)) = 0 ]; then
		echo "hold: $((tick))s: $logged logged in (+$(((logged - last) / 10))/s)"
		last=$logged
	fi
	sleep 1
done
ramp=$(($(date +%s) - start))
echo "hold: $logged logged in after ${ramp}s; settling 5 s, then measuring (the loadgen holds for 40 s)"
if [ "$logged" -lt "$n" ]; then
	failed=1
	echo "hold: the target was not reached; see $tmp/loadgen.log and $tmp/gateway.log" >&2
fi
sleep 5
free1=$(mem MemFree)
rss1=$(rss "$gw")
lgrss=$(rss "$lg")
tcp1=$(slab TCP)
kiocb1=$(slab io_kiocb)
inode1=$(slab sock_inode_cache)
c0=$(cpu "$gw")
sleep 10
c1=$(cpu "$gw")
hz=$(getconf CLK_TCK)
wait "$lg" || true
lg=
cat "$tmp/loadgen.out"
held=$(grep -o '"logged_in":[0-9]*' "$tmp/report.json" | head -n 1 | cut -d: -f2)
ramp_s=$(grep -o '"ramp_s":[0-9.]*' "$tmp/report.json" | head -n 1 | cut -d: -f2)
awk -v n="$logged" -v rss0="$rss0" -v rss1="$rss1" -v free0="$free0" -v free1="$free1" -v lgrss="$lgrss" \
	-v tcp0="$tcp0" -v tcp1="$tcp1" -v k0="$kiocb0" -v k1="$kiocb1" -v i0="$inode0" -v i1="$inode1" \
	-v c0="$c0" -v c1="$c1" -v hz="$hz" -v ramp="$ramp_s" -v held="$held" -v thr="$threads" -v tls="$tls" 'BEGIN {
	printf "\n=== hold: %d connections logged in and held%s (gateway %d threads, loadgen on the same machine)\n", n, tls == 1 ? " over TLS 1.3" : "", thr
	printf "gateway RSS          %8.1f MB -> %8.1f MB   = %6.0f bytes per connection (user space)\n", rss0/1024, rss1/1024, (rss1-rss0)*1024/n
	printf "machine memory used  %8.1f MB               = %6.0f bytes per connection (both ends, kernel + user)\n", (free0-free1)/1024, (free0-free1)*1024/n
	printf "loadgen RSS          %8.1f MB               = %6.0f bytes per connection\n", lgrss/1024, lgrss*1024/n
	printf "kernel slabs         TCP %.0f B, sock_inode %.0f B, io_kiocb %.0f B per connection (both ends)\n", (tcp1-tcp0)/n, (i1-i0)/n, (k1-k0)/n
	printf "connect rate         %.0f connections/s (ramp %.1f s, loadgen report)\n", (ramp > 0 ? n/ramp : 0), ramp
	printf "gateway CPU holding  %.2f%% of one core (10 s window, no keepalive traffic)\n", (c1-c0)/hz/10*100
}'
