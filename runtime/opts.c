/* opts.c: see opts.h. */
#include "runtime/opts.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runtime/log.h"
#include "runtime/version.h"

int opts_parse_ms(const char *s, int64_t *ms)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || !(v >= 0)) /* !(>=) also refuses NaN */
		return -1;
	double mul;
	if (!*end || strcmp(end, "s") == 0)
		mul = 1000;
	else if (strcmp(end, "ms") == 0)
		mul = 1;
	else if (strcmp(end, "us") == 0)
		mul = 0.001;
	else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
		mul = 60000;
	else if (strcmp(end, "h") == 0)
		mul = 3600000;
	else
		return -1;
	double r = v * mul;
	if (!(r <= 9e15))
		return -1;
	*ms = (int64_t)(r + 0.5);
	return 0;
}

int opts_parse_size(const char *s, int64_t *bytes)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || !(v >= 0))
		return -1;
	double mul = 1;
	switch (tolower((unsigned char)*end)) {
	case 0: break;
	case 'b': mul = 1; end++; break;
	case 'k': mul = 1024.0; end++; break;
	case 'm': mul = 1024.0 * 1024; end++; break;
	case 'g': mul = 1024.0 * 1024 * 1024; end++; break;
	default: return -1;
	}
	if (*end && strcasecmp(end, "b") && strcasecmp(end, "ib"))
		return -1;
	double r = v * mul;
	if (!(r <= 9e15))
		return -1;
	*bytes = (int64_t)r;
	return 0;
}

static const struct opt *find(const struct opt *opts, size_t n, const char *name, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
			return &opts[i];
	return NULL;
}

/* Store one value. `given` tracks lists replaced from their default. */
static int set(const struct opt *o, const char *val, unsigned char *given, char *err, size_t errlen)
{
	int64_t v = 0;
	switch (o->type) {
	case OPT_FLAG:
		*(int *)o->ptr = val ? (strcmp(val, "0") != 0 && strcasecmp(val, "false") != 0 && strcasecmp(val, "no") != 0) : 1;
		return 0;
	case OPT_STR:
		*(const char **)o->ptr = val;
		return 0;
	case OPT_LIST: {
		struct opt_list *l = o->ptr;
		if (!*given) {
			l->n = 0;
			*given = 1;
		}
		const char **nv = realloc(l->v, (l->n + 1) * sizeof *nv);
		if (!nv) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		l->v = nv;
		l->v[l->n++] = val;
		return 0;
	}
	case OPT_DOUBLE: {
		char *end;
		errno = 0;
		double d = strtod(val, &end);
		if (end == val || *end || errno || !(d >= (double)o->min && d <= (double)o->max)) { /* NaN fails too */
			snprintf(err, errlen, "--%s: '%s' is not a number in [%lld, %lld]", o->name, val, (long long)o->min,
				 (long long)o->max);
			return -1;
		}
		*(double *)o->ptr = d;
		return 0;
	}
	case OPT_INT: {
		char *end;
		errno = 0;
		long long x = strtoll(val, &end, 10); /* decimal: "010" is ten, not eight */
		if (end == val || *end || errno) {
			snprintf(err, errlen, "--%s: '%s' is not an integer", o->name, val);
			return -1;
		}
		v = x;
		break;
	}
	case OPT_MS:
		if (opts_parse_ms(val, &v) != 0) {
			snprintf(err, errlen, "--%s: '%s' is not a duration (e.g. 250ms, 10s, 5m)", o->name, val);
			return -1;
		}
		break;
	case OPT_SIZE:
		if (opts_parse_size(val, &v) != 0) {
			snprintf(err, errlen, "--%s: '%s' is not a size (e.g. 4096, 64k, 1m)", o->name, val);
			return -1;
		}
		break;
	}
	if (v < o->min || v > o->max) {
		snprintf(err, errlen, "--%s: %s is out of range [%lld, %lld]%s", o->name, val, (long long)o->min,
			 (long long)o->max, o->type == OPT_MS ? " ms" : o->type == OPT_SIZE ? " bytes" : "");
		return -1;
	}
	*(int64_t *)o->ptr = v;
	return 0;
}

static void help(const struct opt *opts, size_t n, const char *usage)
{
	printf("%s\noptions (also settable in --config FILE as \"name = value\"):\n", usage);
	for (size_t i = 0; i < n; i++) {
		const struct opt *o = &opts[i];
		const char *arg = o->type == OPT_FLAG ? "" : o->type == OPT_MS ? "=DURATION" : o->type == OPT_SIZE ? "=SIZE"
			       : o->type == OPT_INT || o->type == OPT_DOUBLE ? "=N" : "=VALUE";
		char left[64];
		snprintf(left, sizeof left, "--%s%s", o->name, arg);
		printf("  %-30s %s", left, o->help);
		if (o->def && *o->def)
			printf(" [default: %s]", o->def);
		if (o->type == OPT_LIST)
			printf(" (repeatable)");
		if (o->flags & OPT_RELOAD)
			printf(" (SIGHUP reloads)");
		printf("\n");
	}
	printf("  %-30s %s\n  %-30s %s\n  %-30s %s\n", "--config=FILE", "read options from FILE first", "--help", "this text",
	       "--version", "print the version (" CHAT_VERSION ") and exit");
}

/* String values of config files, kept for the process's lifetime (a
 * config struct points at them, and a reload parses the file again while the
 * running config still points at the old ones): a list reachable from here.
 * Only the thread that parses options (main) touches it. */
struct kept {
	struct kept *next;
	char s[];
};
static struct kept *kept_strings;

static char *keep(const char *s)
{
	size_t n = strlen(s) + 1;
	struct kept *k = malloc(sizeof *k + n);
	if (!k)
		return NULL;
	memcpy(k->s, s, n);
	k->next = kept_strings;
	kept_strings = k;
	return k->s;
}

/* Read a config file into (name, value) pairs and apply those not given on
 * the command line. String values are kept (see keep). */
static int load_config(const struct opt *opts, size_t n, const char *path, unsigned char *from_cli,
		       unsigned char *given, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "--config: cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	char line[1024];
	int lineno = 0;
	while (fgets(line, sizeof line, f)) {
		lineno++;
		char *s = line;
		while (isspace((unsigned char)*s))
			s++;
		if (!*s || *s == '#')
			continue;
		char *eq = strchr(s, '=');
		char *nameend = eq ? eq : s + strlen(s);
		while (nameend > s && isspace((unsigned char)nameend[-1]))
			nameend--;
		const struct opt *o = find(opts, n, s, (size_t)(nameend - s));
		if (!o) {
			snprintf(err, errlen, "%s:%d: unknown option '%.*s'", path, lineno, (int)(nameend - s), s);
			fclose(f);
			return -1;
		}
		char *val = NULL;
		if (eq) {
			val = eq + 1;
			while (isspace((unsigned char)*val))
				val++;
			char *e = val + strlen(val);
			while (e > val && isspace((unsigned char)e[-1]))
				*--e = 0;
		} else if (o->type != OPT_FLAG) {
			snprintf(err, errlen, "%s:%d: '%s' needs a value", path, lineno, o->name);
			fclose(f);
			return -1;
		}
		size_t idx = (size_t)(o - opts);
		if (from_cli[idx])
			continue;
		/* strings are kept (the config points at them); numbers are parsed
		 * from the line */
		char *copy = val && (o->type == OPT_STR || o->type == OPT_LIST) ? keep(val) : val;
		if (val && !copy) {
			fclose(f);
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		char e2[256];
		if (set(o, copy, &given[idx], e2, sizeof e2) != 0) {
			snprintf(err, errlen, "%s:%d: %s", path, lineno, e2);
			fclose(f);
			return -1;
		}
	}
	fclose(f);
	return 0;
}

int opts_parse(const struct opt *opts, size_t n, int argc, char **argv, const char *usage, char *err, size_t errlen)
{
	unsigned char *given = calloc(n + 1, 2);
	if (!given) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	unsigned char *from_cli = given + n + 1;
	int rc = -1;
	const char *config = NULL;
	/* defaults first */
	for (size_t i = 0; i < n; i++) {
		if (opts[i].type == OPT_LIST) {
			struct opt_list *l = opts[i].ptr;
			l->n = 0;
			if (opts[i].def && *opts[i].def) {
				unsigned char g = 1;
				if (set(&opts[i], opts[i].def, &g, err, errlen) != 0)
					goto out;
			}
		} else if (opts[i].def && set(&opts[i], opts[i].def, &given[i], err, errlen) != 0) {
			goto out;
		}
	}
	for (int a = 1; a < argc; a++) {
		const char *arg = argv[a];
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			help(opts, n, usage);
			rc = 1;
			goto out;
		}
		if (strcmp(arg, "--version") == 0) {
			const char *prog = argc > 0 && argv[0] ? strrchr(argv[0], '/') : NULL;
			printf("%s %s\n", prog ? prog + 1 : argc > 0 && argv[0] ? argv[0] : "?", CHAT_VERSION);
			rc = 1;
			goto out;
		}
		if (strncmp(arg, "--", 2) != 0) {
			snprintf(err, errlen, "unexpected argument '%s' (see --help)", arg);
			goto out;
		}
		const char *name = arg + 2, *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		const char *val = eq ? eq + 1 : NULL;
		if (len == 6 && strncmp(name, "config", 6) == 0) {
			if (!val && a + 1 < argc)
				val = argv[++a];
			if (!val) {
				snprintf(err, errlen, "--config needs a file");
				goto out;
			}
			config = val;
			continue;
		}
		const struct opt *o = find(opts, n, name, len);
		if (!o) {
			snprintf(err, errlen, "unknown option '--%.*s' (see --help)", (int)len, name);
			goto out;
		}
		if (o->type != OPT_FLAG && !val) {
			if (a + 1 >= argc) {
				snprintf(err, errlen, "--%s needs a value", o->name);
				goto out;
			}
			val = argv[++a];
		}
		size_t idx = (size_t)(o - opts);
		from_cli[idx] = 1;
		if (set(o, val, &given[idx], err, errlen) != 0)
			goto out;
	}
	if (config && load_config(opts, n, config, from_cli, given, err, errlen) != 0)
		goto out;
	rc = 0;
out:
	free(given);
	return rc;
}

static int str_eq(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

int opts_differ(const struct opt *a, const struct opt *b)
{
	switch (a->type) {
	case OPT_FLAG: return *(const int *)a->ptr != *(const int *)b->ptr;
	case OPT_STR: return !str_eq(*(const char *const *)a->ptr, *(const char *const *)b->ptr);
	case OPT_DOUBLE: return *(const double *)a->ptr != *(const double *)b->ptr;
	case OPT_LIST: {
		const struct opt_list *x = a->ptr, *y = b->ptr;
		if (x->n != y->n)
			return 1;
		for (size_t i = 0; i < x->n; i++)
			if (!str_eq(x->v[i], y->v[i]))
				return 1;
		return 0;
	}
	default: return *(const int64_t *)a->ptr != *(const int64_t *)b->ptr;
	}
}

void opts_copy(const struct opt *a, const struct opt *b)
{
	switch (a->type) {
	case OPT_FLAG: *(int *)a->ptr = *(const int *)b->ptr; break;
	case OPT_STR: *(const char **)a->ptr = *(const char *const *)b->ptr; break;
	case OPT_DOUBLE: *(double *)a->ptr = *(const double *)b->ptr; break;
	case OPT_LIST: break; /* lists are not reloaded: their arrays belong to the parse that made them */
	default: *(int64_t *)a->ptr = *(const int64_t *)b->ptr; break;
	}
}

const char *opts_value_str(const struct opt *o, char *buf, size_t cap)
{
	switch (o->type) {
	case OPT_FLAG: return *(const int *)o->ptr ? "on" : "off";
	case OPT_STR: {
		const char *s = *(const char *const *)o->ptr;
		return s && *s ? s : "(none)";
	}
	case OPT_DOUBLE: snprintf(buf, cap, "%g", *(const double *)o->ptr); return buf;
	case OPT_LIST: {
		const struct opt_list *l = o->ptr;
		size_t k = 0;
		buf[0] = 0;
		for (size_t i = 0; i < l->n && k + 1 < cap; i++)
			k += (size_t)snprintf(buf + k, cap - k, "%s%s", i ? "," : "", l->v[i]);
		return buf;
	}
	case OPT_MS: snprintf(buf, cap, "%lldms", (long long)*(const int64_t *)o->ptr); return buf;
	default: snprintf(buf, cap, "%lld", (long long)*(const int64_t *)o->ptr); return buf;
	}
}

unsigned opts_reload(const struct opt *cur, const struct opt *next, const struct opt *dst, size_t n)
{
	unsigned changed = 0;
	char v1[256], v2[256];
	for (size_t i = 0; i < n; i++) {
		if (!opts_differ(&cur[i], &next[i]))
			continue;
		const char *was = opts_value_str(&cur[i], v1, sizeof v1), *now = opts_value_str(&next[i], v2, sizeof v2);
		if (cur[i].flags & OPT_RELOAD) {
			opts_copy(&dst[i], &next[i]);
			log_info("SIGHUP: --%s %s -> %s", cur[i].name, was, now);
			changed++;
		} else {
			log_warn("SIGHUP: --%s %s -> %s needs a restart; it stays %s until then", cur[i].name, was, now, was);
		}
	}
	return changed;
}
