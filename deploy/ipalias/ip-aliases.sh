#!/bin/sh
# ip-aliases.sh: add, delete or list a range of IPv4 /32 aliases on one
# interface, for gateways published under several DNS A records
# (deploy/ipalias/chat.example.zone; the WhatsApp talk's "DNS via extra IP
# aliases").
#
# Why several addresses: a client-facing address can be taken out of DNS and
# drained on its own; clients behind one carrier NAT address are limited to
# ~64k connections per (NAT address, server address, port), so more server
# addresses raise that ceiling; and the loadgen spreads its connections over
# them the same way (--targets).
#
# Idempotent: `add` skips addresses already there, `del` skips those already
# gone; both check the whole range before changing anything.
# Addresses added with ip(8) do not survive a reboot: run `add` at boot
# (deploy/systemd/chat-ip-aliases.service) or put them in the network config.
set -eu

PROG=${0##*/}
MAX_COUNT=1024

usage() {
	cat <<EOF
usage: $PROG [--dry-run] add  IFACE BASE_IP COUNT
       $PROG [--dry-run] del  IFACE BASE_IP COUNT
       $PROG list IFACE [BASE_IP COUNT]
       $PROG --help

Adds (del: removes) the COUNT IPv4 addresses BASE_IP, BASE_IP+1, ... as /32
aliases on IFACE, e.g. "add eth0 10.0.0.10 8" adds 10.0.0.10 .. 10.0.0.17.
list shows the /32 addresses on IFACE, or with a range, which of its
addresses are present.

  --dry-run   print the ip(8) commands instead of running them
  COUNT       1 .. $MAX_COUNT; the range may cross octet boundaries
              (10.0.0.250 8 ends at 10.0.1.1)

Refused: addresses in 0/8, 127/8 (all of it is local already), 169.254/16,
224/4 and above; an address of the range configured on another interface;
(del) an address of the range configured on IFACE with a prefix other than
/32 (that is the interface's own address, not an alias).
add and del need root. Exit status: 0 done (or nothing to do), 1 runtime
error, 2 usage error.

After add, if the addresses moved from another host, neighbours may hold
stale ARP entries for a while; "arping -U -I IFACE ADDR" announces them.
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

# ip_to_int A.B.C.D: prints the address as an integer; fails on anything but
# four decimal octets 0..255 without leading zeros (010 is octal to some tools).
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

# refused_reason N: why address N may not be an alias (empty: allowed)
refused_reason() {
	_a=$(($1 >> 24 & 255))
	_b=$(($1 >> 16 & 255))
	if [ "$_a" -eq 0 ]; then
		echo "is in 0.0.0.0/8 (this network)"
	elif [ "$_a" -eq 127 ]; then
		echo "is loopback (all of 127.0.0.0/8 is local already)"
	elif [ "$_a" -eq 169 ] && [ "$_b" -eq 254 ]; then
		echo "is link-local (169.254.0.0/16)"
	elif [ "$_a" -ge 224 ]; then
		echo "is multicast or reserved (224.0.0.0 and above)"
	fi
}

# IPv4 addresses on all interfaces, one "IFACE ADDR/PREFIX" per line
all_addrs() {
	ip -4 -o addr show | awk '{ for (i = 1; i < NF; i++) if ($i == "inet") { print $2, $(i + 1); break } }'
}

run() {
	if [ "$DRY_RUN" = 1 ]; then
		echo "$*"
	else
		"$@"
	fi
}

check_iface() {
	case $1 in
	"" | *[!A-Za-z0-9_.:@-]* | -*) usage_error "bad interface name '$1'" ;;
	esac
	[ "${#1}" -le 15 ] || usage_error "interface name '$1' is longer than 15 characters"
	ip link show dev "$1" >/dev/null 2>&1 || die "no interface '$1' (ip link show)"
}

# parse_range BASE COUNT: sets FIRST and COUNT, or exits
parse_range() {
	FIRST=$(ip_to_int "$1") || usage_error "'$1' is not an IPv4 address (A.B.C.D)"
	case $2 in
	"" | *[!0-9]*) usage_error "COUNT '$2' is not a number" ;;
	esac
	# strip leading zeros so that the shell doesn't read octal
	COUNT=$(echo "$2" | sed 's/^0*//')
	[ -n "$COUNT" ] || COUNT=0
	if [ "${#COUNT}" -gt 5 ] || [ "$COUNT" -lt 1 ] || [ "$COUNT" -gt "$MAX_COUNT" ]; then
		usage_error "COUNT must be 1 .. $MAX_COUNT, not '$2'"
	fi
	_last=$((FIRST + COUNT - 1))
	[ "$_last" -le 4294967295 ] || usage_error "the range runs past 255.255.255.255"
	_i=0
	while [ "$_i" -lt "$COUNT" ]; do
		_r=$(refused_reason $((FIRST + _i)))
		[ -z "$_r" ] || usage_error "$(int_to_ip $((FIRST + _i))) $_r"
		_i=$((_i + 1))
	done
}

# where ADDR: prints "IFACE PREFIX" for each interface holding ADDR
where() {
	printf '%s\n' "$ADDRS" | awk -v a="$1" '{ split($2, p, "/"); if (p[1] == a) print $1, p[2] }'
}

cmd_add_del() {
	_op=$1
	# Check the whole range first: change nothing if any address is refused.
	_i=0
	_todo=
	while [ "$_i" -lt "$COUNT" ]; do
		_ip=$(int_to_ip $((FIRST + _i)))
		_w=$(where "$_ip")
		_here=no
		if [ -n "$_w" ]; then
			_other=$(printf '%s\n' "$_w" | awk -v d="$IFACE" '$1 != d { print $1 }' | head -n 1)
			[ -z "$_other" ] || die "$_ip is configured on $_other, not $IFACE: refusing to $_op it here (nothing changed)"
			_prefix=$(printf '%s\n' "$_w" | awk 'NR == 1 { print $2 }')
			if [ "$_prefix" != 32 ]; then
				[ "$_op" = add ] ||
					die "$_ip/$_prefix is $IFACE's own address, not a /32 alias: refusing to delete it (nothing changed)"
				echo "$_ip: already on $IFACE as /$_prefix (the interface's own address), skipped"
				_i=$((_i + 1))
				continue
			fi
			_here=yes
		fi
		if [ "$_op" = add ] && [ "$_here" = yes ]; then
			echo "$_ip/32: already on $IFACE"
		elif [ "$_op" = del ] && [ "$_here" = no ]; then
			echo "$_ip/32: not on $IFACE"
		else
			_todo="$_todo $_ip"
		fi
		_i=$((_i + 1))
	done
	_n=0
	if [ "$_op" = add ]; then _done="added to"; else _done="deleted from"; fi
	for _ip in $_todo; do
		run ip addr "$_op" "$_ip/32" dev "$IFACE"
		[ "$DRY_RUN" = 1 ] || echo "$_ip/32: $_done $IFACE"
		_n=$((_n + 1))
	done
	[ "$DRY_RUN" = 1 ] || echo "$PROG: $_op $IFACE: $_n changed, $((COUNT - _n)) already as wanted"
}

cmd_list() {
	if [ -z "${FIRST-}" ]; then
		printf '%s\n' "$ADDRS" | awk -v d="$IFACE" '$1 == d && $2 ~ /\/32$/ { print $2 }'
		return 0
	fi
	_i=0
	_present=0
	while [ "$_i" -lt "$COUNT" ]; do
		_ip=$(int_to_ip $((FIRST + _i)))
		_w=$(where "$_ip")
		if [ -z "$_w" ]; then
			echo "$_ip absent"
		else
			printf '%s\n' "$_w" | while read -r _d _p; do
				if [ "$_d" = "$IFACE" ]; then
					echo "$_ip present/$_p"
				else
					echo "$_ip on-$_d/$_p"
				fi
			done
			if printf '%s\n' "$_w" | awk -v d="$IFACE" '$1 == d { f = 1 } END { exit !f }'; then
				_present=$((_present + 1))
			fi
		fi
		_i=$((_i + 1))
	done
	echo "$PROG: $_present of $COUNT on $IFACE"
}

DRY_RUN=0
while [ $# -gt 0 ]; do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	-n | --dry-run)
		DRY_RUN=1
		shift
		;;
	--)
		shift
		break
		;;
	-*) usage_error "unknown option '$1'" ;;
	*) break ;;
	esac
done

[ $# -ge 1 ] || usage_error "missing command (add, del or list)"
CMD=$1
shift
case $CMD in
add | del)
	[ $# -eq 3 ] || usage_error "$CMD needs IFACE BASE_IP COUNT"
	;;
list)
	[ $# -eq 1 ] || [ $# -eq 3 ] || usage_error "list needs IFACE [BASE_IP COUNT]"
	;;
*) usage_error "unknown command '$CMD'" ;;
esac

command -v ip >/dev/null 2>&1 || die "ip(8) not found: install iproute2"
IFACE=$1
[ $# -eq 1 ] || parse_range "$2" "$3"
check_iface "$IFACE"
if [ "$CMD" != list ] && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" -ne 0 ]; then
	die "$CMD changes addresses: run as root (or try --dry-run)"
fi
ADDRS=$(all_addrs)

case $CMD in
add | del) cmd_add_del "$CMD" ;;
list) cmd_list ;;
esac
