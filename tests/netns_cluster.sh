#!/bin/sh
# netns_cluster.sh: end-to-end test of a multi-host cluster on one machine.
# Built into $builddir/tests/test_netns_cluster and run by tests/run.
#
# deploy/cluster/netns-cluster.sh makes five hosts (network namespaces on a
# bridge): two backends, two gateways and a loadgen host. The backends and
# gateways start inside their hosts with the cluster file naming the
# backends' addresses; the loadgen, on its own host, drives both gateways
# with 1:1 chat across them (so every message crosses gateway -> backend ->
# gateway over real TCP/IP between hosts), with delivered receipts. Passes
# when the loadgen reports every connection logged in, no message lost and
# every message acknowledged; then `down` stops everything.
#
# Needs root and network namespaces; where they are not available (an
# unprivileged container) it says SKIP and exits 0.
set -eu
b=${GW_BUILD_DIR:-build}
case "$b" in /*) ;; *) b=$(pwd)/$b ;; esac
net=$(pwd)/deploy/cluster/netns-cluster.sh
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null 2>&1; then
	echo "SKIP: needs root and iproute2"
	exit 0
fi
probe=chat-probe$$
# both creating a namespace and running in one must work (in a chroot, for
# example, `ip netns add` works but `ip netns exec` cannot remount /)
if ! ip netns add "$probe" 2>/dev/null; then
	echo "SKIP: network namespaces are not available here"
	exit 0
fi
if ! ip netns exec "$probe" true 2>/dev/null; then
	ip netns del "$probe" 2>/dev/null || true
	echo "SKIP: cannot run commands in a network namespace here"
	exit 0
fi
ip netns del "$probe"

export CHAT_NETNS_PREFIX="ct$$-" CHAT_NETNS_SUBNET=10.79.0.0/24 CHAT_NETNS_KILL_TIMEOUT=3
logs=$b/tests/netns-cluster
rm -rf "$logs"
mkdir -p "$logs"
tmp=$(mktemp -d /tmp/netns-test.XXXXXX)
cleanup() {
	"$net" down >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

"$net" up >"$logs/up.log" 2>&1 || { cat "$logs/up.log"; exit 1; }
"$net" check >"$logs/check.log" 2>&1 || { cat "$logs/check.log"; exit 1; }
gw1=$("$net" addr gw1)
gw2=$("$net" addr gw2)
be1=$("$net" addr be1)
be2=$("$net" addr be2)
cat >"$tmp/cluster.conf" <<EOF
backend 11 $be1:7001
backend 12 $be2:7001
gateway 1
gateway 2
EOF
"$b/tools/mint-token" --new-secret "$tmp/secret" 2>/dev/null
"$b/tools/mint-token" --new-secret "$tmp/cluster.secret" 2>/dev/null
cs="--cluster-secret-file $tmp/cluster.secret"

"$net" exec be1 "$b/backend/backend" --node 11 --cluster "$tmp/cluster.conf" $cs --data-dir "$tmp/be1" \
	--stats-listen "$be1:9101" >"$logs/be1.log" 2>&1 &
"$net" exec be2 "$b/backend/backend" --node 12 --cluster "$tmp/cluster.conf" $cs --data-dir "$tmp/be2" \
	--stats-listen "$be2:9101" >"$logs/be2.log" 2>&1 &
sleep 0.5
"$net" exec gw1 "$b/gateway/gateway" --node 1 --threads 2 --cluster "$tmp/cluster.conf" $cs \
	--auth-secret-file "$tmp/secret" --listen "$gw1:5222" --stats-listen "$gw1:9100" >"$logs/gw1.log" 2>&1 &
"$net" exec gw2 "$b/gateway/gateway" --node 2 --threads 2 --cluster "$tmp/cluster.conf" $cs \
	--auth-secret-file "$tmp/secret" --listen "$gw2:5222" --stats-listen "$gw2:9100" >"$logs/gw2.log" 2>&1 &
# every gateway thread links to both backends: 4 "up" lines per gateway log
for _ in $(seq 100); do
	up1=$(grep -c "link to backend .* up" "$logs/gw1.log" || true)
	up2=$(grep -c "link to backend .* up" "$logs/gw2.log" || true)
	[ "$up1" -ge 4 ] && [ "$up2" -ge 4 ] && break
	sleep 0.1
done
if [ "$up1" -lt 4 ] || [ "$up2" -lt 4 ]; then
	echo "FAIL: dist links not up ($up1, $up2 of 4)"
	tail -5 "$logs"/*.log
	exit 1
fi

# connections alternate between the two targets, so peers (i, i^1) sit on
# different gateways and every message goes through a backend
rc=0
"$net" exec lg "$b/loadgen/loadgen" --secret-file "$tmp/secret" --scenario chat --connections 2000 \
	--targets "$gw1:5222" --targets "$gw2:5222" --rate 5 --duration 5s --drain 5s --receipts --quiet \
	--ramp-timeout 30s --report "$logs/report.json" >"$logs/loadgen.out" 2>"$logs/loadgen.log" || rc=$?
cat "$logs/loadgen.out"
field() { grep -o "\"$1\":[0-9]*" "$logs/report.json" | head -n 1 | cut -d: -f2; }
sent=$(field sent)
acked=$(field acked)
delivered=$(field delivered)
lost=$(field lost)
if [ "$rc" != 0 ] || [ "${lost:-1}" != 0 ] || [ "${sent:-0}" -lt 1000 ] || [ "${acked:-0}" != "$sent" ] ||
	[ "${delivered:-0}" != "$sent" ]; then
	echo "FAIL: loadgen exit $rc, sent ${sent:-?}, acked ${acked:-?}, delivered ${delivered:-?}, lost ${lost:-?}"
	tail -5 "$logs/gw1.log" "$logs/be1.log" "$logs/loadgen.log"
	exit 1
fi
"$net" down >"$logs/down.log" 2>&1
echo "PASS: 5 hosts, 2000 clients across 2 gateways and 2 backends: $sent messages sent, acked and delivered, none lost"
