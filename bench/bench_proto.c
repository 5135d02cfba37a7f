/* bench_proto: parse and encode rates of the wire formats on one core.
 *
 * Pre-encodes a buffer of frames in a realistic mix, then parses it end to end
 * (as the gateway does with a receive buffer: proto_parse in a loop, touching
 * the fields it uses) for a fixed time, best of several rounds. Prints
 * frames/s and GB/s per mix. Single-threaded: the figures are per core.
 *
 * usage: bench_proto [--seconds S] [--rounds N]
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto/client.h"
#include "proto/dist.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

#define BUF_CAP (64u << 20)

struct mix {
	const char *name;
	const char *what;
	uint8_t *buf;
	size_t len;
	size_t frames;
	enum proto_dir dir;
	int dist;
};

static uint8_t body[PROTO_MAX_BODY];

static size_t put(struct mix *m, const struct proto_frame *f)
{
	size_t n = proto_encode(f, m->buf + m->len, BUF_CAP - m->len);
	if (n == 0 || m->len + n > BUF_CAP) {
		fprintf(stderr, "bench_proto: encode failed\n");
		exit(1);
	}
	m->len += n;
	m->frames++;
	return n;
}

/* Body sizes of chat text: mostly short, some long (a log-ish spread). */
static uint32_t chat_len(void)
{
	uint64_t r = rng() % 100;
	if (r < 60)
		return 8 + (uint32_t)(rng() % 40);
	if (r < 90)
		return 48 + (uint32_t)(rng() % 200);
	return 256 + (uint32_t)(rng() % 1800);
}

static void fill_client_in(struct mix *m, size_t target)
{
	while (m->len < target) {
		struct proto_frame f = {0};
		uint64_t r = rng() % 100;
		if (r < 70) {
			f.type = PROTO_SEND;
			f.send.cmid = rng() % 100000;
			f.send.to = 1 + rng() % 10000000;
			f.send.body = (struct proto_bytes){body, chat_len()};
		} else if (r < 90) {
			f.type = PROTO_RECEIPT;
			f.receipt.kind = 1 + (uint8_t)(rng() % 2);
			f.receipt.peer = 1 + rng() % 10000000;
			f.receipt.smid = 1 + rng();
		} else {
			f.type = PROTO_PING;
		}
		put(m, &f);
	}
}

static void fill_small(struct mix *m, size_t target)
{
	while (m->len < target) {
		struct proto_frame f = {0};
		if (rng() % 2) {
			f.type = PROTO_PING;
		} else {
			f.type = PROTO_SEND;
			f.send.cmid = rng() % 1000;
			f.send.to = 1 + rng() % 1000000;
			f.send.body = (struct proto_bytes){body, 16};
		}
		put(m, &f);
	}
}

static void fill_server_out(struct mix *m, size_t target)
{
	while (m->len < target) {
		struct proto_frame f = {0};
		uint64_t r = rng() % 100;
		if (r < 50) {
			f.type = PROTO_DELIVER;
			f.deliver.smid = 1 + rng();
			f.deliver.from = 1 + rng() % 10000000;
			f.deliver.time_ms = 1795000000000ull + rng() % 1000000;
			if (r < 10) {
				f.deliver.flags = PROTO_DELIVER_GROUP;
				f.deliver.group = 1 + rng() % 100000;
			}
			f.deliver.body = (struct proto_bytes){body, chat_len()};
		} else if (r < 90) {
			f.type = PROTO_ACK;
			f.ack.cmid = rng() % 100000;
			f.ack.status = (uint8_t)(rng() % 2);
			f.ack.smid = 1 + rng();
		} else {
			f.type = PROTO_RECEIPT;
			f.receipt.kind = 1;
			f.receipt.peer = 1 + rng() % 10000000;
			f.receipt.smid = 1 + rng();
		}
		put(m, &f);
	}
}

/* Dist: batches of ROUTE/STORE_ACK frames, 64 per batch. */
static void fill_dist(struct mix *m, size_t target)
{
	static uint8_t tmp[DIST_MAX_FRAME + DIST_BATCH_HEADROOM];
	uint64_t seq = 0;
	while (m->len < target) {
		struct dist_batch b;
		dist_batch_init(&b, tmp, sizeof tmp);
		for (int i = 0; i < 64; i++) {
			struct dist_frame f = {0};
			if (i % 4 == 3) {
				f.type = DIST_STORE_ACK;
				f.store_ack.thread = (uint32_t)(rng() % 8);
				f.store_ack.conn = rng() % 1000000;
				f.store_ack.cmid = rng() % 100000;
				f.store_ack.smid = 1 + rng();
			} else {
				f.type = DIST_ROUTE;
				f.route.from = 1 + rng() % 10000000;
				f.route.to = 1 + rng() % 10000000;
				f.route.time_ms = 1795000000000ull;
				f.route.onode = 1;
				f.route.othread = (uint32_t)(rng() % 8);
				f.route.oconn = rng() % 1000000;
				f.route.cmid = rng() % 100000;
				f.route.body = (struct proto_bytes){body, chat_len()};
			}
			if (dist_batch_add(&b, &f) != 0) {
				fprintf(stderr, "bench_proto: batch add failed\n");
				exit(1);
			}
		}
		size_t n;
		uint8_t *start = dist_batch_finish(&b, ++seq, &n);
		if (m->len + n > BUF_CAP)
			break;
		memcpy(m->buf + m->len, start, n);
		m->len += n;
		m->frames += 64;
	}
}

/* One pass over the mix. Returns frames parsed; sums fields into *sink so the
 * compiler cannot drop the work. */
static size_t parse_pass(const struct mix *m, uint64_t *sink)
{
	const uint8_t *p = m->buf, *end = m->buf + m->len;
	size_t frames = 0;
	if (!m->dist) {
		struct proto_frame f;
		while (p < end) {
			long n = proto_parse(p, (size_t)(end - p), m->dir, &f);
			if (n <= 0)
				abort();
			*sink += f.type + f.size;
			p += n;
			frames++;
		}
		return frames;
	}
	struct dist_frame f, in;
	while (p < end) {
		long n = dist_parse(p, (size_t)(end - p), &f);
		if (n <= 0)
			abort();
		struct dist_iter it;
		dist_batch_iter(&f, &it);
		int r;
		while ((r = dist_batch_next(&it, &in)) == 1) {
			*sink += in.type + in.size;
			frames++;
		}
		if (r < 0)
			abort();
		p += n;
	}
	return frames;
}

/* Encode pass: DELIVER + ACK pairs, as a gateway produces for a 1:1 message. */
static size_t encode_pass(uint8_t *out, size_t cap, size_t pairs, uint64_t *sink, size_t *bytes)
{
	size_t at = 0, total = 0;
	for (size_t i = 0; i < pairs; i++) {
		at += proto_enc_deliver(out + at, cap - at, 1000000 + i, 1 + (i % 9999991), 0, 1795000000000ull + i,
					body, 16 + (uint32_t)(i & 63));
		at += proto_enc_ack(out + at, cap - at, i, PROTO_ACK_ACCEPTED, 1000000 + i);
		if (cap - at < 256) {
			total += at;
			at = 0;
		}
	}
	*sink += at;
	*bytes = total + at;
	return pairs * 2;
}

int main(int argc, char **argv)
{
	double seconds = 1.0;
	int rounds = 5;
	static const struct option opts[] = {
		{"seconds", required_argument, NULL, 's'},
		{"rounds", required_argument, NULL, 'r'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "s:r:h", opts, NULL)) != -1) {
		switch (c) {
		case 's': seconds = atof(optarg); break;
		case 'r': rounds = atoi(optarg); break;
		case 'h':
			printf("usage: bench_proto [--seconds S (per round, default 1)] [--rounds N (default 5)]\n"
			       "Parse and encode rates of the client and dist formats on one core.\n");
			return 0;
		default: return 2;
		}
	}
	if (seconds <= 0 || rounds <= 0) {
		fprintf(stderr, "bench_proto: --seconds and --rounds must be positive\n");
		return 2;
	}
	for (size_t i = 0; i < sizeof body; i++)
		body[i] = (uint8_t)('a' + i % 26);

	struct mix mixes[] = {
		{"small", "PING + SEND 16 B body, 50/50 (client->gateway)", NULL, 0, 0, PROTO_FROM_CLIENT, 0},
		{"client-in", "70% SEND (8-2000 B), 20% RECEIPT, 10% PING", NULL, 0, 0, PROTO_FROM_CLIENT, 0},
		{"server-out", "50% DELIVER, 40% ACK, 10% RECEIPT", NULL, 0, 0, PROTO_FROM_SERVER, 0},
		{"dist-batch", "batches of 64: 75% ROUTE, 25% STORE_ACK", NULL, 0, 0, PROTO_FROM_ANY, 1},
	};
	size_t nmix = sizeof mixes / sizeof mixes[0];
	/* 4 MiB per mix: larger than L2, as a receive pool is. */
	size_t target = 4u << 20;
	for (size_t i = 0; i < nmix; i++) {
		mixes[i].buf = malloc(BUF_CAP);
		if (!mixes[i].buf)
			return 1;
	}
	fill_small(&mixes[0], target);
	fill_client_in(&mixes[1], target);
	fill_server_out(&mixes[2], target);
	fill_dist(&mixes[3], target);

	uint64_t sink = 0;
	printf("%-12s %-46s %10s %14s %8s %8s\n", "mix", "frames", "avg B", "parse fr/s", "GB/s", "ns/fr");
	for (size_t i = 0; i < nmix; i++) {
		struct mix *m = &mixes[i];
		double best = 0;
		for (int r = 0; r < rounds; r++) {
			size_t frames = 0, passes = 0;
			double t0 = now_s(), t;
			do {
				frames += parse_pass(m, &sink);
				passes++;
				t = now_s() - t0;
			} while (t < seconds);
			double rate = (double)frames / t;
			if (rate > best)
				best = rate;
		}
		double avg = (double)m->len / (double)m->frames;
		printf("%-12s %-46s %10.1f %14.0f %8.2f %8.1f\n", m->name, m->what, avg, best, best * avg / 1e9,
		       1e9 / best);
	}

	uint8_t *out = malloc(1u << 20);
	if (!out)
		return 1;
	double best = 0, bestgb = 0;
	for (int r = 0; r < rounds; r++) {
		size_t frames = 0, bytes = 0, b;
		double t0 = now_s(), t;
		do {
			frames += encode_pass(out, 1u << 20, 100000, &sink, &b);
			bytes += b;
			t = now_s() - t0;
		} while (t < seconds);
		if ((double)frames / t > best) {
			best = (double)frames / t;
			bestgb = (double)bytes / t / 1e9;
		}
	}
	printf("%-12s %-46s %10s %14.0f %8.2f %8.1f\n", "encode", "DELIVER (16-79 B body) + ACK pairs", "-", best,
	       bestgb, 1e9 / best);
	fprintf(stderr, "(sink %llu)\n", (unsigned long long)sink);
	for (size_t i = 0; i < nmix; i++)
		free(mixes[i].buf);
	free(out);
	return 0;
}
