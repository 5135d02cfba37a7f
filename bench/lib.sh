# bench/lib.sh: sourced by the load benchmarks (. "$(dirname "$0")/lib.sh").
# bench_setup NAME: a temporary directory $tmp (removed at exit) and $pids,
# the servers the script starts, stopped at exit (TERM, then KILL after
# 0.5 s), however the script ends.
bench_cleanup() {
	for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
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
