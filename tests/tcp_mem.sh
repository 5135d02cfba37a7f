#!/bin/sh
# test_tcp_mem: deploy/sysctl/chat-tcp-mem computes tcp_mem from RAM by the
# rule in 90-chat-gateway.conf (the 64 GiB reference host gives the file's
# own line), writes a drop-in, and refuses what it cannot read.
set -eu
# tests/run runs from the source tree; or find it above this script
src=$PWD
for up in .. ../.. ../../..; do
	[ -x "$src/deploy/sysctl/chat-tcp-mem" ] && break
	src=$(cd "$(dirname "$0")/$up" && pwd)
done
script=$src/deploy/sysctl/chat-tcp-mem
tmp=$(mktemp -d /tmp/tcpmem.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
printf 'MemTotal:       67108864 kB\nMemFree:  1 kB\n' >"$tmp/meminfo.64g"
got=$(MEMINFO=$tmp/meminfo.64g PAGE_SIZE=4096 "$script")
want=$(grep '^net.ipv4.tcp_mem' "$src/deploy/sysctl/90-chat-gateway.conf")
[ "$got" = "$want" ] || fail "64 GiB: '$got', the conf file says '$want'"
printf 'MemTotal:       25165824 kB\n' >"$tmp/meminfo.24g"
got=$(MEMINFO=$tmp/meminfo.24g PAGE_SIZE=4096 "$script" --write "$tmp/91.conf")
[ "$got" = "net.ipv4.tcp_mem = 393216 589824 786432" ] || fail "24 GiB: '$got'"
grep -q '^net.ipv4.tcp_mem = 393216 589824 786432$' "$tmp/91.conf" || fail "--write: $(cat "$tmp/91.conf")"
"$script" >/dev/null || fail "this machine's /proc/meminfo"
printf 'nothing\n' >"$tmp/bad"
if MEMINFO=$tmp/bad "$script" 2>/dev/null; then fail "a meminfo without MemTotal was accepted"; fi
if "$script" --bogus 2>/dev/null; then fail "a bad argument was accepted"; fi
echo "Synthesis: Tested: 5 | Passing: 5 | Failing: 0"
