#!/bin/sh
# test_deb: `ninja deb`'s package installs into a throw-away root (dpkg
# --root, dependencies taken from this machine), puts the binaries, units,
# sysctl file and conffiles where Debian wants them, and the gateway it
# installed starts, answers its stats endpoint and drains on SIGTERM; remove
# keeps the edited conffiles, purge drops them.
set -eu
b=${GW_BUILD_DIR:-build}
src=$PWD
[ -x "$src/deploy/debian/build-deb" ] || { echo "run from the source tree"; exit 1; }
command -v dpkg-deb >/dev/null || { echo "SKIP: no dpkg-deb"; exit 0; }
tmp=$(mktemp -d /tmp/debtest.XXXXXX)
gw= be=
cleanup() {
	[ -n "$gw" ] && kill -KILL "$gw" 2>/dev/null || true
	[ -n "$be" ] && kill -KILL "$be" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$tmp/gw.log" ] && tail -20 "$tmp/gw.log"; exit 1; }
deb=$("$src/deploy/debian/build-deb" "$b" "$tmp") || fail "build-deb"
[ -f "$deb" ] || fail "no package at '$deb'"
dpkg-deb -I "$deb" | grep -q "Version: $(sed -n 's/^#define CHAT_VERSION "\(.*\)"$/\1/p' runtime/version.h)" ||
	fail "the package version is not runtime/version.h's"
r=$tmp/root
mkdir -p "$r/var/lib/dpkg/info" "$r/var/lib/dpkg/updates" "$r/var/lib/dpkg/triggers"
: >"$r/var/lib/dpkg/status"
: >"$r/var/lib/dpkg/available"
dpkg --root="$r" --force-depends --force-not-root --log=/dev/null -i "$deb" >"$tmp/dpkg.log" 2>&1 ||
	{ cat "$tmp/dpkg.log"; fail "dpkg -i"; }
for f in usr/bin/chat-gateway usr/bin/chat-backend usr/bin/chat-mint-token usr/bin/chat-gwstat usr/bin/chat-gwctl \
	usr/sbin/chat-tcp-mem lib/systemd/system/chat-gateway.service lib/systemd/system/chat-backend.service \
	usr/lib/sysctl.d/90-chat-gateway.conf etc/chat/gateway.conf etc/chat/backend.conf usr/sbin/chat-secrets usr/share/doc/chat-gateway/copyright; do
	[ -e "$r/$f" ] || fail "/$f not installed"
done
grep -q '^ExecStart=/usr/bin/chat-gateway' "$r/lib/systemd/system/chat-gateway.service" ||
	fail "the unit does not start /usr/bin/chat-gateway"
grep -q '/usr/local' "$r/lib/systemd/system/chat-gateway.service" && fail "the unit still names /usr/local"
for f in gateway.conf backend.conf cluster.conf; do
	grep -q "^/etc/chat/$f\$" "$r/var/lib/dpkg/info/chat-gateway.conffiles" || fail "$f is not a conffile"
done
[ "$("$r/usr/bin/chat-gateway" --version)" = "chat-gateway $(sed -n 's/^#define CHAT_VERSION "\(.*\)"$/\1/p' runtime/version.h)" ] ||
	fail "--version: $("$r/usr/bin/chat-gateway" --version)"
# the units are valid (systemd-analyze reads them; the commands' paths are
# rewritten into the throw-away root so that it can check they exist)
if command -v systemd-analyze >/dev/null; then
	mkdir "$tmp/units"
	for u in chat-gateway chat-backend chat-ip-aliases; do
		sed -e "s|/usr/bin/|$r/usr/bin/|g" -e "s|/usr/sbin/|$r/usr/sbin/|g" \
			"$r/lib/systemd/system/$u.service" >"$tmp/units/$u.service"
	done
	systemd-analyze verify "$tmp"/units/*.service >"$tmp/verify.log" 2>&1 || { cat "$tmp/verify.log"; fail "systemd-analyze verify"; }
	[ ! -s "$tmp/verify.log" ] || { cat "$tmp/verify.log"; fail "systemd-analyze verify complained"; }
fi
# The installed backend and gateway run as their units run them: the
# commands of ExecStartPre=, ExecStart= and ExecReload= taken from the
# installed units, with /etc/chat and %t (/run) moved into the throw-away
# root, on the installed configuration files with only the addresses moved
# to loopback ports (and the second example backend left out).
unitcmd() { # UNIT KEY [N]: the Nth KEY= command line of UNIT, continuations joined
	awk -v key="$2=" -v want="${3:-1}" '
		index($0, key) == 1 { n++; on = n == want; line = substr($0, length(key) + 1) }
		!on { next }
		index($0, key) != 1 { line = line " " $0 }
		/\\$/ { sub(/\\$/, "", line); next }
		{ print line; exit }' "$r/lib/systemd/system/$1.service" |
		sed -e 's/^[+-]*//' -e "s|/etc/chat/|$r/etc/chat/|g" -e "s|%t/|$tmp/run/|g" -e "s|/usr/|$r/usr/|g" \
			-e 's/[[:space:]]\+/ /g'
}
# Four consecutive loopback ports (gateway, its stats, backend, its stats)
# that no socket holds, below the ephemeral range: the other tests take
# theirs from the kernel in that range, and a port picked there by chance
# was taken by one of them (CI on 4008dd5: "Address already in use").
in_use() { grep -q ":$(printf '%04X' "$1") " /proc/net/tcp /proc/net/tcp6 2>/dev/null; }
eph=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
span=$(((eph - 10000) / 4))
[ "$span" -gt 0 ] || { echo "FAIL: no ports below the ephemeral range ($eph)"; exit 1; }
port=
for try in $(seq 0 63); do
	p=$((10000 + ((($$ + try * 7919) % span) * 4)))
	in_use "$p" || in_use $((p + 1)) || in_use $((p + 2)) || in_use $((p + 3)) || { port=$p; break; }
done
[ -n "$port" ] || { echo "FAIL: no four free loopback ports below $eph"; exit 1; }
bport=$((port + 2))
sed -i -e "s|^backend 33 .*|backend 33 127.0.0.1:$bport|" -e '/^backend 34 /d' "$r/etc/chat/cluster.conf"
sed -i -e "s|^listen = .*|listen = 127.0.0.1:$port|" -e "s|^stats-listen = .*|stats-listen = 127.0.0.1:$((port + 1))|" \
	-e "s|= /etc/chat/|= $r/etc/chat/|" -e "s|= /run/|= $tmp/run/|" "$r/etc/chat/gateway.conf"
sed -i -e "s|^listen = .*|listen = 127.0.0.1:$bport|" -e "s|^stats-listen = .*|stats-listen = 127.0.0.1:$((port + 3))|" \
	-e "s|^data-dir = .*|data-dir = $tmp/data|" -e "s|^store-size = .*|store-size = 64m|" -e "s|^store-min-free = .*|store-min-free = 1m|" \
	-e "s|= /etc/chat/|= $r/etc/chat/|" "$r/etc/chat/backend.conf"
"$r/usr/bin/chat-mint-token" --new-secret "$r/etc/chat/gateway.secret" 2>/dev/null
"$r/usr/bin/chat-mint-token" --new-secret "$r/etc/chat/cluster.secret" 2>/dev/null
# RuntimeDirectory=: created by systemd, owned by the dynamic user (here
# nobody, when root runs the test), mode 0700
for d in chat-gateway chat-backend; do
	mkdir -p -m 0700 "$tmp/run/$d"
	[ "$(id -u)" = 0 ] && chown 65534:65534 "$tmp/run/$d"
done
$(unitcmd chat-backend ExecStartPre) || fail "chat-backend ExecStartPre: $(unitcmd chat-backend ExecStartPre)"
$(unitcmd chat-gateway ExecStartPre) || fail "chat-gateway ExecStartPre: $(unitcmd chat-gateway ExecStartPre)"
[ "$(stat -c %a:%u "$tmp/run/chat-gateway/auth-secret")" = "400:$(stat -c %u "$tmp/run/chat-gateway")" ] ||
	fail "the copied secret is $(stat -c %a:%U "$tmp/run/chat-gateway/auth-secret"), not 0400 and the service's"
cmp -s "$r/etc/chat/gateway.secret" "$tmp/run/chat-gateway/auth-secret" || fail "auth-secret is not gateway.secret"
[ ! -e "$tmp/run/chat-gateway/auth-secret-previous" ] || fail "a previous secret was copied that does not exist"
$(unitcmd chat-backend ExecStart) 2>"$tmp/be.log" &
be=$!
$(unitcmd chat-gateway ExecStart) --threads 1 --drain-timeout 1s 2>"$tmp/gw.log" &
gw=$!
wait_for() { # WHAT CMD...: up to 10 s
	what=$1
	shift
	for _ in $(seq 100); do
		"$@" && return 0
		kill -0 "$gw" 2>/dev/null || fail "the installed gateway exited"
		kill -0 "$be" 2>/dev/null || { tail -5 "$tmp/be.log"; fail "the installed backend exited"; }
		sleep 0.1
	done
	fail "$what"
}
linked() { # the backend's links column (gwstat): one gateway thread linked
	[ "$("$r/usr/bin/chat-gwstat" --count 1 "127.0.0.1:$((port + 3))" 2>/dev/null | awk '$1 != "time" && $3 == "be" { print $5 }')" = 1 ]
}
wait_for "the installed gateway did not link to the installed backend" linked
# a token secret rotation as gateway.conf describes it, by ExecReload=
mv "$r/etc/chat/gateway.secret" "$r/etc/chat/gateway.previous.secret"
"$r/usr/bin/chat-mint-token" --new-secret "$r/etc/chat/gateway.secret" 2>/dev/null
sed -i 's|^# auth-secret-previous-file = |auth-secret-previous-file = |' "$r/etc/chat/gateway.conf"
grep -q "^auth-secret-previous-file = $tmp/run/chat-gateway/auth-secret-previous$" "$r/etc/chat/gateway.conf" ||
	fail "gateway.conf has no auth-secret-previous-file line for the unit's copy"
reload() { # UNIT PID: its ExecReload= lines
	$(unitcmd "$1" ExecReload 1) || return 1
	kill -HUP "$2"
	[ "$(unitcmd "$1" ExecReload 2)" = '/bin/kill -HUP $MAINPID' ] || fail "$1: the second ExecReload= is not the SIGHUP"
}
reload chat-gateway "$gw" || fail "the gateway's ExecReload= failed"
rotated() { grep -q 'SIGHUP: auth secrets: key [0-9a-f]* signs, key [0-9a-f]* (previous) is still accepted' "$tmp/gw.log"; }
wait_for "the reload did not take the new token secret and the previous one" rotated
cmp -s "$r/etc/chat/gateway.previous.secret" "$tmp/run/chat-gateway/auth-secret-previous" || fail "auth-secret-previous is not gateway.previous.secret"
# a cluster secret rotation on the backend: a second line, then reload
"$r/usr/bin/chat-mint-token" --new-secret "$tmp/new.secret" 2>/dev/null
cat "$tmp/new.secret" >>"$r/etc/chat/cluster.secret"
reload chat-backend "$be" || fail "the backend's ExecReload= failed"
crotated() { grep -q 'SIGHUP: cluster secrets: key [0-9a-f]* signs, key [0-9a-f]* is also accepted' "$tmp/be.log"; }
wait_for "the backend's reload did not take the second cluster secret" crotated
# a secret gone from /etc/chat fails the reload before the signal and the copy stays
mv "$r/etc/chat/gateway.secret" "$tmp/kept.secret"
if $(unitcmd chat-gateway ExecReload 1) 2>"$tmp/secrets.log"; then fail "ExecReload= passed without gateway.secret"; fi
grep -q 'gateway.secret: missing' "$tmp/secrets.log" || fail "no clear message for a missing secret: $(cat "$tmp/secrets.log")"
[ -s "$tmp/run/chat-gateway/auth-secret" ] || fail "a failed copy removed the running secret"
linked || fail "the link went down over the reloads"
kill -TERM "$gw"
wait "$gw" || fail "the installed gateway exited $? on SIGTERM"
gw=
kill -TERM "$be"
wait "$be" || { tail -5 "$tmp/be.log"; fail "the installed backend exited $? on SIGTERM"; }
be=
mv "$tmp/kept.secret" "$r/etc/chat/gateway.secret"
# remove keeps an edited conffile, purge drops it
echo "# edited" >>"$r/etc/chat/gateway.conf"
dpkg --root="$r" --force-not-root --log=/dev/null -r chat-gateway >/dev/null 2>&1 || fail "dpkg -r"
[ ! -e "$r/usr/bin/chat-gateway" ] || fail "remove left the binary"
grep -q '# edited' "$r/etc/chat/gateway.conf" || fail "remove dropped the edited conffile"
dpkg --root="$r" --force-not-root --log=/dev/null -P chat-gateway >/dev/null 2>&1 || fail "dpkg -P"
[ ! -e "$r/etc/chat/gateway.conf" ] || fail "purge left the conffile"
echo "Synthesis: Tested: 1 | Passing: 1 | Failing: 0"
