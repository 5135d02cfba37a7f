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
