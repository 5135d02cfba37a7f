/* opts.h: declarative command-line and config-file options for every binary.
 *
 * A program lists its options once (name, type, default, help, bounds); the
 * same table parses argv, parses an optional config file (--config FILE:
 * lines "name = value", '#' comments, the long option names without "--"),
 * and prints --help with every default. Command-line values win over the
 * file. Values:
 *   OPT_INT       integer in [min, max]
 *   OPT_MS        duration: "250ms", "10s", "5m", "1h"; a bare number is seconds; stored in ms
 *   OPT_SIZE      bytes: "512", "64k", "256KiB", "1m", "2g" (powers of 1024)
 *   OPT_STR       string (pointer into argv or the file, kept for the process lifetime)
 *   OPT_FLAG      no value; sets 1
 *   OPT_LIST      repeatable string; the default is dropped once one is given
 *   OPT_DOUBLE    floating point number in [min, max]
 */
#ifndef RUNTIME_OPTS_H
#define RUNTIME_OPTS_H

#include <stddef.h>
#include <stdint.h>

enum opt_type { OPT_INT, OPT_MS, OPT_SIZE, OPT_STR, OPT_FLAG, OPT_LIST, OPT_DOUBLE };

struct opt_list {
	const char **v;
	size_t n;
};

struct opt {
	const char *name; /* long name without "--" */
	enum opt_type type;
	void *ptr;        /* int64_t* for INT/MS/SIZE, double* for DOUBLE, const char** for STR, int* for FLAG, struct opt_list* for LIST */
	const char *def;  /* default as text (NULL: none / empty) */
	int64_t min, max; /* bounds for INT/MS/SIZE (after unit conversion) */
	const char *help;
	unsigned flags; /* OPT_RELOAD */
};

/* In struct opt.flags: a running program takes a new value of this option
 * on SIGHUP (--help says so); the others need a restart. */
#define OPT_RELOAD 1u

/* Parse argv (and --config FILE, --help, --version) against opts[0..n).
 * usage is the first lines of --help. Returns 0 ok, 1 when --help or
 * --version was printed (exit 0), or -1 with a message in err (exit 2). */
int opts_parse(const struct opt *opts, size_t n, int argc, char **argv, const char *usage, char *err, size_t errlen);

/* Reloading: a and b are the same option of two tables built over two
 * config structs (the running one and one parsed again). */
/* Whether their values differ. */
int opts_differ(const struct opt *a, const struct opt *b);
/* Copy b's value into a's field. */
void opts_copy(const struct opt *a, const struct opt *b);
/* The value as text for a log line ("(none)" for an unset string); buf is
 * used when it has to be formatted. */
const char *opts_value_str(const struct opt *o, char *buf, size_t cap);

/* A reload: cur, next and dst are n options over three config structs (the
 * running one, the one just parsed, and the one to run with, a copy of the
 * running one). Each option whose value differs between cur and next is
 * copied from next to dst and logged ("SIGHUP: --name old -> new") when it is
 * OPT_RELOAD, and logged as needing a restart otherwise. Returns how many
 * were copied. */
unsigned opts_reload(const struct opt *cur, const struct opt *next, const struct opt *dst, size_t n);

/* Value parsers, exposed for tests and tools. Return 0 or -1. */
int opts_parse_ms(const char *s, int64_t *ms);
int opts_parse_size(const char *s, int64_t *bytes);

#endif
