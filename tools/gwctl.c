/* gwctl: the command line of a gateway's admin interface (gateway/admin.h),
 * spoken over its stats listener from the same host.
 *
 *   gwctl [--stats 127.0.0.1:9100] user ID       where user ID is (JSON)
 *   gwctl [--stats ...] kick ID                  close user ID's session
 *   gwctl [--stats ...] lameduck                 as SIGUSR2
 *   gwctl [--stats ...] drain                    as SIGTERM
 *   gwctl [--stats ...] log-level LEVEL          error, warn, info, debug
 *
 * Prints the gateway's JSON answer. Exit status: 0 done, 1 the user is not
 * logged in there (user, kick) or the gateway refused, 2 bad arguments,
 * 3 no answer from the gateway.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/addr.h"
#include "runtime/httpc.h"
#include "runtime/opts.h"

int main(int argc, char **argv)
{
	const char *stats = "127.0.0.1:9100";
	const struct opt opts[] = {
		{"stats", OPT_STR, &stats, "127.0.0.1:9100", 0, 0, "the gateway's --stats-listen address", 0},
	};
	/* options first, then the command and its argument */
	int first = 1;
	while (first < argc && strncmp(argv[first], "--", 2) == 0) {
		first++;
		if (first <= argc - 1 && !strchr(argv[first - 1], '=') && strcmp(argv[first - 1], "--help") != 0 &&
		    strcmp(argv[first - 1], "--version") != 0)
			first++; /* "--stats ADDR" */
	}
	char err[256];
	int r = opts_parse(opts, sizeof opts / sizeof opts[0], first, argv,
			   "usage: gwctl [--stats IP:PORT] user ID | kick ID | lameduck | drain | log-level LEVEL\n"
			   "The admin interface of a gateway (answered to loopback peers only).",
			   err, sizeof err);
	if (r == 1)
		return 0;
	if (r < 0) {
		fprintf(stderr, "gwctl: %s\n", err);
		return 2;
	}
	const char *cmd = first < argc ? argv[first] : NULL, *arg = first + 1 < argc ? argv[first + 1] : NULL;
	int want_arg = cmd && (strcmp(cmd, "user") == 0 || strcmp(cmd, "kick") == 0 || strcmp(cmd, "log-level") == 0);
	int known = want_arg || (cmd && (strcmp(cmd, "lameduck") == 0 || strcmp(cmd, "drain") == 0));
	if (!known || (want_arg && !arg) || first + 1 + want_arg < argc) {
		fprintf(stderr, "gwctl: want one of: user ID, kick ID, lameduck, drain, log-level LEVEL (see --help)\n");
		return 2;
	}
	struct addr a;
	if (addr_parse(stats, &a, err, sizeof err) != 0) {
		fprintf(stderr, "gwctl: --stats: %s\n", err);
		return 2;
	}
	char path[160];
	if (strcmp(cmd, "user") == 0 || strcmp(cmd, "kick") == 0) {
		char *end;
		unsigned long long id = strtoull(arg, &end, 10);
		if (!id || *end) {
			fprintf(stderr, "gwctl: '%s' is not a user id\n", arg);
			return 2;
		}
		snprintf(path, sizeof path, "/admin/%s?id=%llu", cmd, id);
	} else if (strcmp(cmd, "log-level") == 0) {
		snprintf(path, sizeof path, "/admin/log-level?level=%.16s", arg);
	} else {
		snprintf(path, sizeof path, "/admin/%s", cmd);
	}
	int status = 0;
	char *body = httpc_request(&a, strcmp(cmd, "user") == 0 ? "GET" : "POST", path, &status);
	if (!body) {
		fprintf(stderr, "gwctl: no answer from %s\n", stats);
		return 3;
	}
	fputs(body, status == 200 ? stdout : stderr);
	free(body);
	return status == 200 ? 0 : 1;
}
