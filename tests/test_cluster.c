/* test_cluster.c: criterion unit tests of the cluster file
 * (runtime/cluster.h): node ids past the old 6-bit limit (1..2047), 1,024
 * backends, the refusals, the by-id index behind cluster_find and
 * cluster_is_gateway, and backend node threads (their links, users, ids).
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

/* The file just written is refused with an error saying want. */
static void refused_file(const char *want, const char *text)
{
	char err[256] = "";
	cr_assert_eq(load(err, sizeof err), -1, "accepted: %s", text);
	cr_assert(strstr(err, want), "error '%s' does not say '%s'", err, want);
}

static void refused(const char *text, const char *want)
{
	FILE *f = open_file();
	fputs(text, f);
	fclose(f);
	refused_file(want, text);
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
	refused_file("more than 1024 backends", "1,025 backends");
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

/* Node threads: "threads N" gives a backend N links, numbered from its
 * link0 in file order; users spread over a backend's threads (bits the
 * bucket does not use), and a message id or a group id names the thread
 * that made it. */
Test(cluster, backend_threads_and_their_links)
{
	FILE *f = open_file();
	fprintf(f, "backend 11 127.0.0.1:7000 threads 4\nbackend 12 127.0.0.1:7100\nbackend 13 127.0.0.1:7200 threads 3\n"
		   "gateway 1\n");
	fclose(f);
	char err[256];
	cr_assert_eq(load(err, sizeof err), 0, "%s", err);
	cr_assert_eq(c.n, 3);
	cr_assert_eq(c.nlinks, 8);
	const uint32_t link0[] = {0, 4, 5}, threads[] = {4, 1, 3};
	for (size_t i = 0; i < 3; i++) {
		cr_assert_eq(c.nodes[i].link0, link0[i]);
		cr_assert_eq(c.nodes[i].threads, threads[i]);
		for (uint32_t k = 0; k < threads[i]; k++) {
			cr_assert_eq(c.link_node[link0[i] + k], i);
			struct addr a = cluster_link_addr(&c, link0[i] + k);
			cr_assert_eq(addr_port(&a), addr_port(&c.nodes[i].addr) + k);
			cr_assert_eq(cluster_link_thread(&c, link0[i] + k), k);
		}
	}
	/* every thread owns users, each user its owner's thread */
	unsigned per[8] = {0};
	for (uint64_t u = 1; u <= 40000; u++) {
		uint32_t l = cluster_user_link(&c, u);
		cr_assert_lt(l, 8);
		size_t o = cluster_user_owner(&c, u);
		cr_assert_eq(c.link_node[l], o, "user %llu: link %u is not its owner's", (unsigned long long)u, l);
		cr_assert_eq(l, c.nodes[o].link0 + cluster_user_thread(u, c.nodes[o].threads));
		per[l]++;
	}
	for (unsigned l = 0; l < 8; l++)
		cr_assert_gt(per[l], 1000, "link %u owns %u of 40,000 users", l, per[l]);
	/* ids made by thread k of backend 13 (3 threads) lead to that thread */
	for (unsigned k = 0; k < 3; k++) {
		struct msgid_gen g;
		msgid_init(&g, 13, k, 3);
		for (int i = 0; i < 5000; i++) {
			uint64_t id = msgid_next(&g, MSGID_EPOCH_MS + 1000000 + (uint64_t)i / 100);
			cr_assert_eq(msgid_thread(id, 3), k);
			cr_assert_eq(cluster_msg_link(&c, id), 5 + (int)k);
		}
		cr_assert_eq(cluster_group_link(&c, cluster_group_id(13, 3 * 7 + k)), 5 + (int)k);
	}
	/* 3 threads take 2 bits: thread number 3 names no thread (a client may
	 * send such an id in a receipt; it used to index one link too far) */
	struct msgid_gen g3;
	msgid_init(&g3, 13, 3, 4);
	cr_assert_eq(cluster_msg_link(&c, msgid_next(&g3, MSGID_EPOCH_MS + 7)), -1);
	cr_assert_eq(cluster_group_link(&c, cluster_group_id(12, 99)), 4);
	cr_assert_eq(cluster_group_link(&c, cluster_group_id(1, 99)), -1, "a gateway makes no groups");
	struct msgid_gen g;
	msgid_init(&g, 1, 0, 2);
	cr_assert_eq(cluster_msg_link(&c, msgid_next(&g, MSGID_EPOCH_MS + 5)), -1, "a gateway's id is no backend's");
}

Test(cluster, thread_refusals)
{
	static const char *const bad[][2] = {
		{"threads 0", "N 1..64"},	 {"threads 65", "N 1..64"},	 {"threads 2x", "[threads N]"},
		{"thread 2", "[threads N]"},	 {"threads", "[threads N]"},	 {"threads 2 more", "[threads N]"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char line[96];
		snprintf(line, sizeof line, "backend 1 127.0.0.1:7000 %s\n", bad[i][0]);
		refused(line, bad[i][1]);
	}
	refused("backend 1 127.0.0.1:65535 threads 2\n", "need ports 65535..65536");
	/* a backend's port range may not meet another's on the same host */
	refused("backend 1 127.0.0.1:7000 threads 4\nbackend 2 127.0.0.1:7003\n",
		"ports 7003..7003 of backend 2 overlap ports 7000..7003 of backend 1");
	refused("backend 1 127.0.0.1:7005 threads 2\nbackend 2 127.0.0.1:7000 threads 8\n", "overlap");
	FILE *g = open_file();
	fputs("backend 1 127.0.0.1:7000 threads 4\nbackend 2 127.0.0.2:7000 threads 4\nbackend 3 127.0.0.1:7004\n", g);
	fclose(g);
	char gerr[256];
	cr_assert_eq(load(gerr, sizeof gerr), 0, "ranges on other hosts, or next to each other, are fine: %s", gerr);
	FILE *f = open_file();
	for (unsigned i = 0; i < 257; i++)
		fprintf(f, "backend %u 127.0.%u.%u:7000 threads 64\n", i + 1, i / 250, i % 250 + 1);
	fclose(f);
	refused_file("more than 16384 backend threads", "257 backends of 64 threads");
}
