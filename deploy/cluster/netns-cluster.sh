#!/bin/sh
# netns-cluster.sh: a local multi-host cluster on one machine, one network
# namespace per host (gateways gw1 gw2, backends be1 be2, loadgen lg by
# default), joined by a bridge. See deploy/cluster/README.md.
#
# Layout (PREFIX = $CHAT_NETNS_PREFIX, default "chat-"):
#
#   netns PREFIXgw1   eth0 10.77.0.1/24 --veth--+
#   netns PREFIXgw2   eth0 10.77.0.2/24 --veth--+-- bridge "chatbr" in netns PREFIXsw
#   ...                                         |   (ports p-gw1, p-gw2, ...)
#   netns PREFIXlg    eth0 10.77.0.5/24 --veth--+
#
# Nothing is created in the machine's own (root) network namespace: the
# bridge and the switch-side veth ends live in their own namespace PREFIXsw,
# the host-side ends in the host namespaces. So no interface name can clash
# with a real one, the host's routes, firewall and bridge netfilter settings
# never see this traffic, there is no NAT and no way out to the internet, and
# clusters with different prefixes are fully separate (even with the same
# subnet). From the root namespace, reach the hosts with `exec`.
set -eu

PROG=${0##*/}
SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)

PREFIX=${CHAT_NETNS_PREFIX-chat-}
SUBNET=${CHAT_NETNS_SUBNET-10.77.0.0/24}
HOSTS=${CHAT_NETNS_HOSTS-gw1 gw2 be1 be2 lg}
SYSCTL_FILE=${CHAT_NETNS_SYSCTL-$SCRIPT_DIR/../sysctl/90-chat-gateway.conf}
KILL_TIMEOUT=${CHAT_NETNS_KILL_TIMEOUT-5}

BRIDGE=chatbr
HOST_IF=eth0

# Per-namespace keys of deploy/sysctl/90-chat-gateway.conf that `up` applies
# inside each host namespace (a new namespace starts from kernel defaults).
# Global keys (fs.*, vm.*, tcp_mem, netdev_max_backlog, [rw]mem_max) are
# never written from here: they would change the whole machine.
NETNS_SYSCTLS="net.core.somaxconn net.ipv4.tcp_max_syn_backlog net.ipv4.tcp_syncookies
net.ipv4.ip_local_port_range net.ipv4.ip_local_reserved_ports net.ipv4.tcp_rmem net.ipv4.tcp_wmem
net.ipv4.tcp_fin_timeout net.ipv4.tcp_orphan_retries net.ipv4.tcp_tw_reuse net.ipv4.tcp_max_tw_buckets
net.ipv4.tcp_slow_start_after_idle net.ipv4.tcp_keepalive_time net.ipv4.tcp_keepalive_intvl
net.ipv4.tcp_keepalive_probes"

usage() {
	cat <<EOF
usage: $PROG up | down | status | check | addr [HOST] | exec HOST CMD [ARG...] | --help

  up       create the namespaces, bridge and links (idempotent: creates only
           what is missing, leaves running processes alone)
  down     kill the processes inside the namespaces (SIGTERM, SIGKILL after
           CHAT_NETNS_KILL_TIMEOUT s) and delete everything; idempotent, also
           cleans up after a partial or failed up
  status   one line per host; exit 0 all up, 1 partly up, 3 down
  check    ping (or, without ping, a TCP connect with python3) between every
           pair of hosts; exit 0 if all reach each other
  addr     print "HOST ADDRESS" for every host, or HOST's address alone
  exec     run CMD inside HOST's namespace (ip netns exec), e.g.
             $PROG exec gw1 build/gateway/gateway --listen \$($PROG addr gw1):5222 ...
           processes started this way are killed by down

Environment (set the same values for every call on one cluster):
  CHAT_NETNS_PREFIX        namespace name prefix [chat-]; namespaces are
                           PREFIX<host> and PREFIXsw (the switch). Use a
                           unique one per parallel run, e.g. chat-ci\$\$-
  CHAT_NETNS_SUBNET        IPv4 subnet A.B.C.D/N, N 8..30 [10.77.0.0/24];
                           host number i (1-based in CHAT_NETNS_HOSTS) gets
                           the subnet's address + i
  CHAT_NETNS_HOSTS         host names [gw1 gw2 be1 be2 lg]: 1-12 of a-z 0-9,
                           starting with a letter
  CHAT_NETNS_SYSCTL        sysctl file whose per-namespace net.* keys up
                           applies in every host ["none" to skip]
                           [$SCRIPT_DIR/../sysctl/90-chat-gateway.conf]
  CHAT_NETNS_KILL_TIMEOUT  seconds down waits after SIGTERM [5]

Needs root and iproute2. Current settings: prefix '$PREFIX', subnet $SUBNET,
hosts: $HOSTS.
EOF
}

die() {
	printf '%s: %s\n' "$PROG" "$*" >&2
	exit 1
}

usage_error() {
	printf '%s: %s (see --help)\n' "$PROG" "$*" >&2
	exit 2
}

say() {
	printf '%s: %s\n' "$PROG" "$*"
}

# ---------------------------------------------------------------- checks ----

ip_to_int() {
	case $1 in
	*[!0-9.]* | .* | *. | *..*) return 1 ;;
	esac
	_old_ifs=$IFS
	IFS=.
	# shellcheck disable=SC2086 # splitting at dots is the point
	set -- $1
	IFS=$_old_ifs
	[ $# -eq 4 ] || return 1
	_n=0
	for _o in "$@"; do
		case $_o in
		0 | [1-9] | [1-9][0-9] | 1[0-9][0-9] | 2[0-4][0-9] | 25[0-5]) ;;
		*) return 1 ;;
		esac
		_n=$((_n * 256 + _o))
	done
	echo "$_n"
}

int_to_ip() {
	echo "$(($1 >> 24 & 255)).$(($1 >> 16 & 255)).$(($1 >> 8 & 255)).$(($1 & 255))"
}

validate() {
	case $PREFIX in
	"" | *[!A-Za-z0-9_.-]*) usage_error "CHAT_NETNS_PREFIX '$PREFIX' must be 1-40 of A-Z a-z 0-9 _ . -" ;;
	esac
	[ "${#PREFIX}" -le 40 ] || usage_error "CHAT_NETNS_PREFIX is longer than 40 characters"

	case $SUBNET in
	*/*) ;;
	*) usage_error "CHAT_NETNS_SUBNET '$SUBNET' is not A.B.C.D/N" ;;
	esac
	_net=$(ip_to_int "${SUBNET%/*}") || usage_error "CHAT_NETNS_SUBNET '$SUBNET' is not A.B.C.D/N"
	PLEN=${SUBNET#*/}
	case $PLEN in
	[89] | [12][0-9] | 30) ;;
	*) usage_error "CHAT_NETNS_SUBNET prefix length '/$PLEN' must be 8..30" ;;
	esac
	_size=$((1 << (32 - PLEN)))
	NET=$((_net & ~(_size - 1) & 4294967295))
	[ "$NET" -eq "$_net" ] || usage_error "CHAT_NETNS_SUBNET '$SUBNET' has host bits set (the network is $(int_to_ip "$NET")/$PLEN)"

	NHOSTS=0
	_seen=" "
	for _h in $HOSTS; do
		case $_h in
		[a-z]*) ;;
		*) usage_error "host name '$_h' must start with a lowercase letter" ;;
		esac
		case $_h in
		*[!a-z0-9]*) usage_error "host name '$_h' may only hold a-z and 0-9" ;;
		esac
		[ "${#_h}" -le 12 ] || usage_error "host name '$_h' is longer than 12 characters"
		[ "$_h" != sw ] || usage_error "host name 'sw' is taken by the switch namespace"
		case $_seen in
		*" $_h "*) usage_error "host '$_h' is listed twice in CHAT_NETNS_HOSTS" ;;
		esac
		_seen="$_seen$_h "
		NHOSTS=$((NHOSTS + 1))
	done
	[ "$NHOSTS" -ge 1 ] || usage_error "CHAT_NETNS_HOSTS is empty"
	[ "$NHOSTS" -le $((_size - 2)) ] || usage_error "$NHOSTS hosts do not fit in $SUBNET"

	case $KILL_TIMEOUT in
	"" | *[!0-9]*) usage_error "CHAT_NETNS_KILL_TIMEOUT '$KILL_TIMEOUT' is not a number of seconds" ;;
	esac
	SW_NS=${PREFIX}sw
}

need_root() {
	[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
	command -v ip >/dev/null 2>&1 || die "ip(8) not found: install iproute2"
	ip netns list >/dev/null 2>&1 || die "'ip netns' does not work here (iproute2 too old, or no /run/netns?)"
}

# --------------------------------------------------------------- helpers ----

ns_exists() {
	[ -e "/run/netns/$1" ] && ip netns list | awk '{ print $1 }' | grep -qx -- "$1"
}

# host_index HOST: 1-based position in HOSTS, or fails
host_index() {
	_hi_i=0
	for _hi_h in $HOSTS; do
		_hi_i=$((_hi_i + 1))
		if [ "$_hi_h" = "$1" ]; then
			echo "$_hi_i"
			return 0
		fi
	done
	return 1
}

host_addr() {
	_idx=$(host_index "$1") || die "unknown host '$1' (hosts: $HOSTS)"
	int_to_ip $((NET + _idx))
}

# Hosts found as ports on the switch: those of an earlier `up` with another
# CHAT_NETNS_HOSTS, so that `down` removes them too.
switch_hosts() {
	ns_exists "$SW_NS" || return 0
	ip -n "$SW_NS" -o link show 2>/dev/null |
		awk -F': ' '{ sub(/@.*/, "", $2); if ($2 ~ /^p-[a-z][a-z0-9]*$/) print substr($2, 3) }'
}

apply_sysctls() {
	_ns=$1
	[ "$SYSCTL_FILE" != none ] || return 0
	[ -r "$SYSCTL_FILE" ] || die "cannot read sysctl file '$SYSCTL_FILE' (CHAT_NETNS_SYSCTL=none skips it)"
	# "key = value" lines; comments and blank lines skipped
	sed -n 's/^[[:space:]]*\([a-z0-9_.-]*\)[[:space:]]*=[[:space:]]*\(.*[^[:space:]]\)[[:space:]]*$/\1 \2/p' "$SYSCTL_FILE" |
		while read -r _key _val; do
			case " $(echo "$NETNS_SYSCTLS" | tr '\n' ' ') " in
			*" $_key "*) ;;
			*) continue ;;
			esac
			_path=/proc/sys/$(echo "$_key" | tr . /)
			# shellcheck disable=SC2016 # $1 and $2 are the inner shell's
			ip netns exec "$_ns" sh -c '[ -w "$1" ] && printf "%s\n" "$2" > "$1"' sh "$_path" "$_val" ||
				say "warning: $_ns: cannot set $_key = $_val"
		done
}

# --------------------------------------------------------------- commands ----

cmd_up() {
	need_root
	if [ "$SYSCTL_FILE" != none ] && [ ! -r "$SYSCTL_FILE" ]; then
		die "cannot read sysctl file '$SYSCTL_FILE' (CHAT_NETNS_SYSCTL=none skips it)"
	fi
	if ! ns_exists "$SW_NS"; then
		ip netns add "$SW_NS"
	fi
	ip -n "$SW_NS" link set lo up
	if ! ip -n "$SW_NS" link show "$BRIDGE" >/dev/null 2>&1; then
		ip -n "$SW_NS" link add "$BRIDGE" type bridge
	fi
	ip -n "$SW_NS" link set "$BRIDGE" up

	for _h in $HOSTS; do
		_ns=$PREFIX$_h
		_addr=$(host_addr "$_h")
		if ! ns_exists "$_ns"; then
			ip netns add "$_ns"
		fi
		ip -n "$_ns" link set lo up
		if ! ip -n "$_ns" link show "$HOST_IF" >/dev/null 2>&1; then
			# a switch port left from an earlier host namespace would block the name
			if ip -n "$SW_NS" link show "p-$_h" >/dev/null 2>&1; then
				ip -n "$SW_NS" link del "p-$_h"
			fi
			# Both ends are created directly in their namespaces: they never
			# exist in the root namespace, not even for a moment.
			ip link add "$HOST_IF" netns "$_ns" type veth peer name "p-$_h" netns "$SW_NS"
		fi
		ip -n "$SW_NS" link set "p-$_h" master "$BRIDGE"
		ip -n "$SW_NS" link set "p-$_h" up
		ip -n "$_ns" addr replace "$_addr/$PLEN" dev "$HOST_IF"
		ip -n "$_ns" link set "$HOST_IF" up
		apply_sysctls "$_ns"
		say "$_h: namespace $_ns, $HOST_IF $_addr/$PLEN"
	done
	say "up: $NHOSTS hosts on $SUBNET (bridge $BRIDGE in namespace $SW_NS)"
}

cmd_down() {
	need_root
	_all=$HOSTS
	for _h in $(switch_hosts); do
		case " $_all " in
		*" $_h "*) ;;
		*) _all="$_all $_h" ;;
		esac
	done
	_list=
	for _h in $_all; do
		if ns_exists "$PREFIX$_h"; then _list="$_list $PREFIX$_h"; fi
	done
	if ns_exists "$SW_NS"; then _list="$_list $SW_NS"; fi
	if [ -z "$_list" ]; then
		say "down: nothing to do (no namespace with prefix '$PREFIX')"
		return 0
	fi

	# Processes first: a namespace that a process still runs in outlives
	# `ip netns del` (unnamed, with its interfaces) until that process exits.
	_pids=
	for _ns in $_list; do
		_pids="$_pids $(ip netns pids "$_ns" 2>/dev/null | tr '\n' ' ')"
	done
	# shellcheck disable=SC2086 # one word per pid
	set -- $_pids
	if [ $# -gt 0 ]; then
		say "down: SIGTERM to $# process(es): $*"
		kill -TERM "$@" 2>/dev/null || true
		_t=0
		while [ "$_t" -lt $((KILL_TIMEOUT * 10)) ]; do
			_alive=
			for _p in "$@"; do
				if kill -0 "$_p" 2>/dev/null; then _alive="$_alive $_p"; fi
			done
			[ -n "$_alive" ] || break
			sleep 0.1
			_t=$((_t + 1))
		done
		if [ -n "$_alive" ]; then
			say "down: SIGKILL to$_alive (still running after ${KILL_TIMEOUT}s)"
			# shellcheck disable=SC2086 # one word per pid
			kill -KILL $_alive 2>/dev/null || true
			sleep 0.2
		fi
	fi

	_failed=0
	for _ns in $_list; do
		if ip netns del "$_ns"; then
			say "deleted namespace $_ns"
		else
			say "error: could not delete namespace $_ns"
			_failed=1
		fi
	done
	[ "$_failed" -eq 0 ] || die "down: some namespaces are left (see above)"
	say "down: done"
}

cmd_status() {
	need_root
	_up=0
	_present=0
	if ns_exists "$SW_NS" && ip -n "$SW_NS" link show "$BRIDGE" >/dev/null 2>&1; then
		say "switch: namespace $SW_NS, bridge $BRIDGE"
		_sw=1
	else
		say "switch: absent"
		_sw=0
	fi
	printf '%-12s %-16s %-22s %-6s %s\n' HOST ADDRESS NAMESPACE LINK PROCESSES
	for _h in $HOSTS; do
		_ns=$PREFIX$_h
		_addr=$(host_addr "$_h")
		if ! ns_exists "$_ns"; then
			printf '%-12s %-16s %-22s %-6s %s\n' "$_h" "$_addr" "(absent)" - -
			continue
		fi
		_present=$((_present + 1))
		_state=$(ip -n "$_ns" -o link show "$HOST_IF" 2>/dev/null |
			sed -n 's/.*state \([A-Z]*\).*/\1/p')
		[ -n "$_state" ] || _state=NONE
		_has=$(ip -n "$_ns" -4 -o addr show dev "$HOST_IF" 2>/dev/null | grep -c " $_addr/" || true)
		_np=$(ip netns pids "$_ns" 2>/dev/null | wc -l)
		if [ "$_state" = UP ] && [ "$_has" -ge 1 ]; then
			_up=$((_up + 1))
		else
			_state="$_state(!)"
		fi
		printf '%-12s %-16s %-22s %-6s %s\n' "$_h" "$_addr" "$_ns" "$_state" "$_np"
	done
	if [ "$_up" -eq "$NHOSTS" ] && [ "$_sw" -eq 1 ]; then
		say "status: up ($NHOSTS hosts)"
		return 0
	elif [ "$_present" -eq 0 ] && [ "$_sw" -eq 0 ]; then
		say "status: down"
		return 3
	fi
	say "status: partly up ($_up of $NHOSTS hosts ready); '$PROG up' completes it, '$PROG down' removes it"
	return 1
}

# reach FROM_NS TO_ADDR: one probe, quiet; 0 if TO_ADDR answered
reach() {
	if [ "$PROBE" = ping ]; then
		ip netns exec "$1" ping -n -q -c 1 -W 2 "$2" >/dev/null 2>&1
		return
	fi
	# TCP: a one-shot listener in the target namespace, a connect from FROM
	_to_ns=$3
	_tmp=$(mktemp)
	ip netns exec "$_to_ns" "$PYTHON" -c '
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.listen(1)
print(s.getsockname()[1], flush=True)
s.settimeout(5)
try:
    s.accept()[0].close()
except OSError:
    sys.exit(1)
' "$2" >"$_tmp" 2>/dev/null &
	_lpid=$!
	_port=
	_t=0
	while [ -z "$_port" ] && [ "$_t" -lt 50 ]; do
		_port=$(head -n 1 "$_tmp")
		[ -n "$_port" ] || sleep 0.1
		_t=$((_t + 1))
	done
	_rc=1
	if [ -n "$_port" ] && ip netns exec "$1" "$PYTHON" -c '
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
' "$2" "$_port" 2>/dev/null; then
		_rc=0
	fi
	kill "$_lpid" 2>/dev/null || true
	wait "$_lpid" 2>/dev/null || true
	rm -f "$_tmp"
	return "$_rc"
}

cmd_check() {
	need_root
	if command -v ping >/dev/null 2>&1; then
		PROBE=ping
	elif command -v python3 >/dev/null 2>&1; then
		PROBE=tcp
		PYTHON=$(command -v python3)
	else
		die "check needs ping (iputils-ping) or python3"
	fi
	for _h in $HOSTS; do
		ns_exists "$PREFIX$_h" || die "host $_h is not up (namespace $PREFIX$_h missing): run '$PROG up'"
	done
	_ok=0
	_bad=0
	for _a in $HOSTS; do
		for _b in $HOSTS; do
			[ "$_a" != "$_b" ] || continue
			_to=$(host_addr "$_b")
			if reach "$PREFIX$_a" "$_to" "$PREFIX$_b"; then
				_ok=$((_ok + 1))
			else
				say "check: $_a cannot reach $_b ($_to)"
				_bad=$((_bad + 1))
			fi
		done
	done
	_how=ping
	[ "$PROBE" = ping ] || _how="TCP connect (no ping installed)"
	if [ "$_bad" -ne 0 ]; then
		die "check: $_bad of $((_ok + _bad)) host pairs failed ($_how)"
	fi
	say "check: all $_ok host pairs reach each other ($_how)"
}

cmd_addr() {
	if [ $# -eq 0 ]; then
		for _h in $HOSTS; do
			echo "$_h $(host_addr "$_h")"
		done
	else
		host_addr "$1"
	fi
}

cmd_exec() {
	[ $# -ge 2 ] || usage_error "exec needs HOST CMD [ARG...]"
	need_root
	_h=$1
	shift
	host_index "$_h" >/dev/null || usage_error "unknown host '$_h' (hosts: $HOSTS)"
	ns_exists "$PREFIX$_h" || die "host $_h is not up (namespace $PREFIX$_h missing): run '$PROG up'"
	exec ip netns exec "$PREFIX$_h" "$@"
}

# ------------------------------------------------------------------ main ----

[ $# -ge 1 ] || usage_error "missing command"
case $1 in
-h | --help | help)
	usage
	exit 0
	;;
esac
validate
CMD=$1
shift
case $CMD in
up | down | status | check)
	[ $# -eq 0 ] || usage_error "$CMD takes no arguments"
	"cmd_$CMD"
	;;
addr)
	[ $# -le 1 ] || usage_error "addr takes at most one host"
	cmd_addr "$@"
	;;
exec) cmd_exec "$@" ;;
*) usage_error "unknown command '$CMD'" ;;
esac
