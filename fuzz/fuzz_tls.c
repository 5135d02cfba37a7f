/* fuzz_tls.c: libFuzzer target for the TLS record layer (runtime/tls.c),
 * fed as the gateway's receive path feeds it. The input is a script for a
 * sender sharing the receiver's secrets: sealed data records, raw bytes,
 * flipped bits, KeyUpdates and alerts, in the order given; the stream is
 * then opened cut in two at a point the input picks. Checks the contract:
 * the result is 0, 1 (close_notify), 2 (peer alert) or -alert; the
 * plaintext fits in the input; when the script made only valid records,
 * the plaintext is exactly what was sealed and the result is 0 or 1. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fuzz/check.h"
#include "runtime/carry.h"
#include "runtime/tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t wire[1 << 18], want[1 << 17], got[1 << 17], part[1 << 18];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct tls_thread *th;
	if (!th) {
		char err[256];
		th = tls_thread_new(err, sizeof err);
		CHECK(th);
	}
	if (size < 3)
		return 0;
	struct tls_conn tx = {0}, rx = {0};
	tx.state = rx.state = TLS_S_OPEN;
	tx.suite = rx.suite = (uint8_t)(1 + data[0] % 3);
	rx.flags = TLS_F_SERVER;
	memset(tx.tx_secret, 0x5a, sizeof tx.tx_secret);
	memcpy(rx.rx_secret, tx.tx_secret, sizeof rx.rx_secret);
	/* the peer's KeyUpdate moves our send key: give the sender the same one */
	memset(tx.rx_secret, 0xa5, sizeof tx.rx_secret);
	memcpy(rx.tx_secret, tx.rx_secret, sizeof rx.tx_secret);
	size_t cutpick = data[1], wn = 0, wantn = 0;
	int clean = 1, closed = 0;
	const uint8_t *p = data + 2, *end = data + size;
	while (p < end && wn < sizeof wire - 2 * TLS_RECORD_MAX) {
		unsigned op = *p % 5, len = (unsigned)(*p++ >> 3) * 9;
		if ((size_t)(end - p) < len)
			len = (unsigned)(end - p);
		switch (op) {
		case 0: /* a data record */
			if (closed)
				break;
			wn += tls_seal(th, &tx, p, len, wire + wn);
			memcpy(want + wantn, p, len);
			wantn += len;
			p += len;
			break;
		case 1: /* raw bytes */
			memcpy(wire + wn, p, len);
			wn += len;
			p += len;
			clean = clean && len == 0;
			break;
		case 2: /* a flipped bit in what is there */
			if (wn && len) {
				wire[(len * 131u) % wn] ^= (uint8_t)(1u << (len % 8));
				clean = 0;
			}
			break;
		case 3: /* a KeyUpdate of the sender's */
			if (!closed) {
				tls_key_update(&tx, len & 1);
				wn += tls_seal(th, &tx, NULL, 0, wire + wn);
			}
			break;
		default: /* close_notify */
			if (!closed)
				wn += tls_alert(th, &tx, TLS_A_CLOSE_NOTIFY, wire + wn);
			closed = 1;
			break;
		}
	}
	size_t cut = wn ? (cutpick * wn) / 255 : 0, gn = 0;
	int r = 0;
	const uint8_t *pl;
	size_t pn;
	memcpy(part, wire, wn);
	r = tls_open(th, &rx, part, cut, &pl, &pn);
	CHECK(pn <= wn);
	memcpy(got, pl, pn);
	gn = pn;
	if (r == 0) {
		r = tls_open(th, &rx, part + cut, wn - cut, &pl, &pn);
		CHECK(pn <= wn);
		memcpy(got + gn, pl, pn);
		gn += pn;
	}
	CHECK(r == 0 || r == 1 || r == 2 || (r < 0 && r >= -255));
	if (clean) {
		CHECK(r == 0 || r == 1);
		CHECK(gn == wantn && memcmp(got, want, gn) == 0);
	}
	tls_conn_free(&tx);
	tls_conn_free(&rx);
	return 0;
}
