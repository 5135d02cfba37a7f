# shellcheck shell=sh
# bench/lib.sh: sourced by the load benchmarks (. "$(dirname "$0")/lib.sh").
# bench_setup NAME: a temporary directory $tmp (removed at exit) and $pids,
# the servers the script starts, stopped at exit (CONT for a stopped one,
# TERM, then KILL after 0.5 s), however the script ends. num KEY FILE: the
# first number of "KEY": in a JSON file.
bench_cleanup() {
	for p in $pids; do kill -CONT "$p" 2>/dev/null || true; kill -TERM "$p" 2>/dev/null || true; done
	sleep 0.5
	for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
	true
}
bench_setup() {
	tmp=$(mktemp -d "/tmp/$1.XXXXXX")
	pids=
	trap bench_cleanup EXIT INT TERM
}
num() { grep -o "\"$1\":[0-9.e+-]*" "$2" | head -n 1 | cut -d: -f2; }
# bench_tls_gateway BUILDDIR STATS_PORT [gateway options]: an auth secret
# ($tmp/secret), a self-signed pair for localhost ($tmp/tls), and a gateway
# with both, stats on STATS_PORT and no rate limits, logging to
# $tmp/gateway.log; its pid in $gw (and $pids), checked alive after 0.5 s.
bench_tls_gateway() {
	_b=$1 _stats=$2
	shift 2
	"$_b/tools/mint-token" --new-secret "$tmp/secret" 2>/dev/null
	"$(dirname "$0")/../tools/tls-selfsigned" "$tmp/tls" >/dev/null
	"$_b/gateway/gateway" --auth-secret-file "$tmp/secret" --tls-cert "$tmp/tls/cert.pem" \
		--tls-key "$tmp/tls/key.pem" --stats-listen "127.0.0.1:$_stats" --rate-frames 0 --rate-bytes 0 \
		--log-level warn "$@" 2>"$tmp/gateway.log" &
	gw=$!
	pids="$pids $gw"
	sleep 0.5
	kill -0 "$gw" || { cat "$tmp/gateway.log" >&2; exit 1; }
}
