/* httpc.h: the few lines of HTTP/1.0 client the tools need (gwstat, gwctl)
 * to talk to a node's stats listener: one request, the whole answer, a 2 s
 * timeout on each step. */
#ifndef RUNTIME_HTTPC_H
#define RUNTIME_HTTPC_H

#include "runtime/addr.h"

/* METHOD path to a; returns the malloc'ed body (NUL-terminated) with the
 * status in *status, or NULL when there was no HTTP answer (no connection,
 * timeout, garbage). Bodies are capped at 16 MiB. */
char *httpc_request(const struct addr *a, const char *method, const char *path, int *status);

#endif
