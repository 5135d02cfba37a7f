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
gw=
cleanup() {
	[ -n "$gw" ] && kill -KILL "$gw" 2>/dev/null || true
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
	usr/lib/sysctl.d/90-chat-gateway.conf etc/chat/gateway.env usr/share/doc/chat-gateway/copyright; do
	[ -e "$r/$f" ] || fail "/$f not installed"
done
grep -q '^ExecStart=/usr/bin/chat-gateway' "$r/lib/systemd/system/chat-gateway.service" ||
	fail "the unit does not start /usr/bin/chat-gateway"
grep -q '/usr/local' "$r/lib/systemd/system/chat-gateway.service" && fail "the unit still names /usr/local"
grep -q '^/etc/chat/gateway.env$' "$r/var/lib/dpkg/info/chat-gateway.conffiles" || fail "gateway.env is not a conffile"
[ "$("$r/usr/bin/chat-gateway" --version)" = "chat-gateway $(sed -n 's/^#define CHAT_VERSION "\(.*\)"$/\1/p' runtime/version.h)" ] ||
	fail "--version: $("$r/usr/bin/chat-gateway" --version)"
# the installed gateway runs
"$r/usr/bin/chat-mint-token" --new-secret "$tmp/secret" 2>/dev/null
port=$((20000 + $$ % 20000))
"$r/usr/bin/chat-gateway" --auth-secret-file "$tmp/secret" --listen "127.0.0.1:$port" \
	--stats-listen "127.0.0.1:$((port + 1))" --threads 1 --drain-timeout 1s 2>"$tmp/gw.log" &
gw=$!
ok=
for _ in $(seq 50); do
	"$r/usr/bin/chat-gwstat" --count 1 --interval 100ms "127.0.0.1:$((port + 1))" >/dev/null 2>&1 && { ok=1; break; }
	kill -0 "$gw" 2>/dev/null || break
	sleep 0.1
done
[ -n "$ok" ] || fail "the installed gateway did not answer /stats"
kill -TERM "$gw"
wait "$gw" || fail "the installed gateway exited $? on SIGTERM"
gw=
# remove keeps an edited conffile, purge drops it
echo "# edited" >>"$r/etc/chat/gateway.env"
dpkg --root="$r" --force-not-root --log=/dev/null -r chat-gateway >/dev/null 2>&1 || fail "dpkg -r"
[ ! -e "$r/usr/bin/chat-gateway" ] || fail "remove left the binary"
grep -q '# edited' "$r/etc/chat/gateway.env" || fail "remove dropped the edited conffile"
dpkg --root="$r" --force-not-root --log=/dev/null -P chat-gateway >/dev/null 2>&1 || fail "dpkg -P"
[ ! -e "$r/etc/chat/gateway.env" ] || fail "purge left the conffile"
echo "Synthesis: Tested: 1 | Passing: 1 | Failing: 0"
