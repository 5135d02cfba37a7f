/* test_cluster.c: criterion unit tests of the cluster file
 * (runtime/cluster.h): node ids past the old 6-bit limit (1..2047), 1,024
 * backends, the refusals, and the by-id index behind cluster_find and
 * cluster_is_gateway.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/cluster.h"

static char path[] = "/tmp/test_cluster.XXXXXX";
static struct cluster c; /* ~150 KB: not on the stack */

static FILE *open_file(void)
{
	strcpy(path, "/tmp/test_cluster.XXXXXX");
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	FILE *f = fdopen(fd, "w");
	cr_assert_not_null(f);
	return f;
}

static int load(char *err, size_t errlen)
{
	int r = cluster_load(&c, path, err, errlen);
	unlink(path);
	return r;
}

Test(cluster, a_thousand_backends_and_a_thousand_gateways)
{
	FILE *f = open_file();
	/* 1,024 backends with ids 1..2047 (odd ones), 1,023 gateways (even ones) */
	for (unsigned i = 0; i < 1024; i++)
		fprintf(f, "backend %u 127.0.%u.%u:%u\n", 2 * i + 1, i / 250, i % 250 + 1, 7000 + i);
	for (unsigned i = 1; i <= 1023; i++)
		fprintf(f, "gateway %u\n", 2 * i);
	fclose(f);
	char err[256];
	cr_assert_eq(load(err, sizeof err), 0, "%s", err);
	cr_assert_eq(c.n, 1024);
	cr_assert_eq(c.ngateways, 1023);
	for (unsigned id = 1; id <= MSGID_MAX_NODE; id++) {
		int i = cluster_find(&c, id);
		if (id % 2) {
			cr_assert_eq(i, (int)(id - 1) / 2, "backend %u", id);
			cr_assert_eq(c.nodes[i].node, id);
			cr_assert_not(cluster_is_gateway(&c, id));
		} else {
			cr_assert_eq(i, -1, "gateway %u is not a backend", id);
			cr_assert(cluster_is_gateway(&c, id), "gateway %u", id);
		}
	}
	/* ids outside the range are nobody */
	cr_assert_eq(cluster_find(&c, 0), -1);
	cr_assert_eq(cluster_find(&c, MSGID_MAX_NODE + 1), -1);
	cr_assert_eq(cluster_find(&c, UINT32_MAX), -1);
	cr_assert_not(cluster_is_gateway(&c, 0));
	cr_assert_not(cluster_is_gateway(&c, 4096));
	/* every owner is a backend, and users spread over many of them */
	unsigned hit[1024] = {0}, used = 0;
	for (uint64_t u = 1; u <= 20000; u++) {
		size_t o = cluster_user_owner(&c, u);
		cr_assert_lt(o, c.n);
		used += !hit[o]++;
	}
	cr_assert_gt(used, 1000, "20,000 users reached %u of 1,024 backends", used);
}

static void refused(const char *text, const char *want)
{
	FILE *f = open_file();
	fputs(text, f);
	fclose(f);
	char err[256] = "";
	cr_assert_eq(load(err, sizeof err), -1, "accepted: %s", text);
	cr_assert(strstr(err, want), "error '%s' does not say '%s'", err, want);
}

Test(cluster, refusals)
{
	refused("backend 2048 127.0.0.1:7000\n", "NODE_ID 1..2047");
	refused("backend 1 127.0.0.1:7000\ngateway 0\n", "NODE_ID 1..2047");
	refused("backend 5 127.0.0.1:7000\ngateway 5\n", "listed twice");
	refused("backend 2047 127.0.0.1:7000\nbackend 2047 127.0.0.1:7001\n", "listed twice");
	refused("gateway 3\n", "no backends");
	refused("backend 7 nowhere\n", ":1:");
	FILE *f = open_file();
	for (unsigned i = 0; i < 1025; i++)
		fprintf(f, "backend %u 127.0.0.1:%u\n", i + 1, 7000 + i);
	fclose(f);
	char err[256] = "";
	cr_assert_eq(load(err, sizeof err), -1);
	cr_assert(strstr(err, "more than 1024 backends"), "%s", err);
}

static void load_backends(struct cluster *into, const unsigned *ids, size_t n)
{
	FILE *f = open_file();
	for (size_t i = 0; i < n; i++)
		fprintf(f, "backend %u 127.0.0.1:%zu\n", ids[i], 7000 + i);
	fclose(f);
	char err[256];
	cr_assert_eq(load(err, sizeof err), 0, "%s", err);
	memcpy(into, &c, sizeof c);
}

/* Ownership: a user's bucket, then rendezvous over the backends for that
 * bucket; adding a backend moves only the users it takes (about 1/n). */
Test(cluster, owners_move_only_to_a_new_backend)
{
	static struct cluster three, four;
	const unsigned ids[] = {11, 12, 13, 14};
	load_backends(&three, ids, 3);
	load_backends(&four, ids, 4);
	unsigned moved = 0, total = 100000;
	for (uint64_t u = 1; u <= total; u++) {
		size_t a = cluster_user_owner(&three, u), b = cluster_user_owner(&four, u);
		/* the definition, written out */
		uint32_t k = (uint32_t)(hash64(u) >> 48);
		size_t want = 0;
		for (size_t i = 1; i < 3; i++)
			if (hash64(k ^ three.nodes[i].seed) > hash64(k ^ three.nodes[want].seed))
				want = i;
		cr_assert_eq(a, want, "user %llu", (unsigned long long)u);
		if (a != b) {
			cr_assert_eq(four.nodes[b].node, 14, "user %llu moved between old backends", (unsigned long long)u);
			moved++;
		}
	}
	cr_assert(moved > total / 5 && moved < total * 3 / 10, "%u of %u users moved to the 4th backend", moved, total);
}
