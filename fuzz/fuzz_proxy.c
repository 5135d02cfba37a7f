/* fuzz_proxy.c: libFuzzer target for the PROXY protocol header parser
 * (proto/proxy.c), fed as the gateway's receive path feeds it: the input at
 * once, and again cut at every length up to the header. Checks the contract:
 * a size within the input and at most PROXY_MAX; NEED_MORE only below the
 * header's end, asking for more than it has; every strict prefix of a
 * header that parses is NEED_MORE; a parsed address family is INET, INET6
 * or none; proxy_src_str always terminates. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "fuzz/check.h"
#include "proto/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_hdr h;
	long r = proxy_parse(data, size, &h);
	CHECK(r == PROXY_BAD || r == PROXY_NEED_MORE || (r > 0 && (size_t)r <= size && (size_t)r <= PROXY_MAX));
	if (r == PROXY_NEED_MORE)
		CHECK(h.need > size || size == 0);
	if (r > 0) {
		CHECK(h.family == 0 || h.family == AF_INET || h.family == AF_INET6);
		CHECK(h.local || h.family != 0);
		char s[80];
		proxy_src_str(&h, s, sizeof s);
		CHECK(memchr(s, 0, sizeof s) != NULL);
		/* every strict prefix asks for more */
		for (size_t k = 0; k < (size_t)r; k++) {
			struct proxy_hdr p;
			long q = proxy_parse(data, k, &p);
			CHECK(q == PROXY_NEED_MORE && p.need > k && p.need <= (size_t)r);
		}
	}
	return 0;
}
