/* test_opts.c: criterion unit tests of the option parser (runtime/opts.h):
 * every option type, both "--name=value" and "--name value", the error
 * paths, --help, and --config FILE with the command line winning.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/opts.h"

/* ---- a program's option table ------------------------------------------------------ */

struct cfg {
	int64_t port, timeout, buf;
	const char *name;
	int verbose, quiet;
	struct opt_list peers;
	double ratio;
};

static struct cfg C;

#define NOPTS 8
static const struct opt OPTS[NOPTS] = {
	{"port", OPT_INT, &C.port, "8080", 1, 65535, "listen port", 0},
	{"timeout", OPT_MS, &C.timeout, "10s", 1, 3600000, "idle timeout", 0},
	{"buf", OPT_SIZE, &C.buf, "64k", 512, 1ll << 40, "buffer size", 0},
	{"name", OPT_STR, &C.name, "gw", 0, 0, "instance name", 0},
	{"verbose", OPT_FLAG, &C.verbose, NULL, 0, 0, "log more", 0},
	{"peer", OPT_LIST, &C.peers, "127.0.0.1:9000", 0, 0, "peer address", 0},
	{"ratio", OPT_DOUBLE, &C.ratio, "0.5", 0, 1, "a fraction", 0},
	{"quiet", OPT_FLAG, &C.quiet, "1", 0, 0, "log less", 0},
};

static char ERR[512];

/* opts_parse over a NULL-terminated list of arguments (argv[0] added). */
static int parse(const char *first, ...)
{
	char *argv[64];
	int argc = 0;
	argv[argc++] = (char *)"prog";
	va_list ap;
	va_start(ap, first);
	for (const char *a = first; a; a = va_arg(ap, const char *)) {
		cr_assert_lt(argc, 63);
		argv[argc++] = (char *)a;
	}
	va_end(ap);
	argv[argc] = NULL;
	ERR[0] = 0;
	return opts_parse(OPTS, NOPTS, argc, argv, "usage: prog [options]", ERR, sizeof ERR);
}

static void expect_error(int rc, const char *part)
{
	cr_assert_eq(rc, -1, "parse succeeded (err '%s'), want an error with '%s'", ERR, part);
	cr_assert_not_null(strstr(ERR, part), "error '%s' lacks '%s'", ERR, part);
}

static void expect_ok(int rc)
{
	cr_assert_eq(rc, 0, "parse failed: %s", ERR);
}

/* ---- defaults and each type --------------------------------------------------------- */

Test(opts, defaults)
{
	expect_ok(parse(NULL));
	cr_assert_eq(C.port, 8080);
	cr_assert_eq(C.timeout, 10000);
	cr_assert_eq(C.buf, 65536);
	cr_assert_str_eq(C.name, "gw");
	cr_assert_eq(C.verbose, 0); /* no default: left as it was */
	cr_assert_eq(C.quiet, 1);
	cr_assert_eq(C.peers.n, 1);
	cr_assert_str_eq(C.peers.v[0], "127.0.0.1:9000");
	cr_assert_float_eq(C.ratio, 0.5, 1e-12);
}

Test(opts, int_both_forms_and_bounds)
{
	expect_ok(parse("--port=80", NULL));
	cr_assert_eq(C.port, 80);
	expect_ok(parse("--port", "81", NULL));
	cr_assert_eq(C.port, 81);
	expect_ok(parse("--port=1", NULL));
	cr_assert_eq(C.port, 1);
	expect_ok(parse("--port=65535", NULL));
	cr_assert_eq(C.port, 65535);
	expect_ok(parse("--port=80", "--port=90", NULL)); /* last wins */
	cr_assert_eq(C.port, 90);
	expect_error(parse("--port=0", NULL), "out of range [1, 65535]");
	expect_error(parse("--port=65536", NULL), "out of range");
	expect_error(parse("--port", "-1", NULL), "out of range");
	expect_error(parse("--port=80x", NULL), "'80x' is not an integer");
	expect_error(parse("--port=", NULL), "is not an integer");
	expect_error(parse("--port=1.5", NULL), "is not an integer");
	expect_error(parse("--port=99999999999999999999", NULL), "is not an integer");
	cr_assert_not_null(strstr(ERR, "--port"), "error names the option: %s", ERR);
}

Test(opts, ms_units)
{
	expect_ok(parse("--timeout=250ms", NULL));
	cr_assert_eq(C.timeout, 250);
	expect_ok(parse("--timeout", "10s", NULL));
	cr_assert_eq(C.timeout, 10000);
	expect_ok(parse("--timeout=5m", NULL));
	cr_assert_eq(C.timeout, 300000);
	expect_ok(parse("--timeout=1h", NULL));
	cr_assert_eq(C.timeout, 3600000);
	expect_ok(parse("--timeout=7", NULL)); /* bare number: seconds */
	cr_assert_eq(C.timeout, 7000);
	expect_ok(parse("--timeout=1.5s", NULL));
	cr_assert_eq(C.timeout, 1500);
	/* bounds are in ms, after conversion */
	expect_error(parse("--timeout=2h", NULL), "out of range [1, 3600000] ms");
	expect_error(parse("--timeout=0", NULL), "out of range");
	expect_error(parse("--timeout=10x", NULL), "is not a duration");
	expect_error(parse("--timeout=-1s", NULL), "is not a duration");
}

Test(opts, size_units)
{
	const struct {
		const char *in;
		int64_t want;
	} ok[] = {{"4096", 4096}, {"64k", 65536}, {"1m", 1048576}, {"2g", 2147483648ll}, {"256KiB", 262144}, {"512b", 512}};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		char arg[64];
		snprintf(arg, sizeof arg, "--buf=%s", ok[i].in);
		expect_ok(parse(arg, NULL));
		cr_assert_eq(C.buf, ok[i].want, "%s: %lld", ok[i].in, (long long)C.buf);
	}
	expect_ok(parse("--buf", "1m", NULL));
	cr_assert_eq(C.buf, 1 << 20);
	expect_error(parse("--buf=511", NULL), "out of range [512, 1099511627776] bytes");
	expect_error(parse("--buf=2t", NULL), "is not a size");
}

Test(opts, str)
{
	expect_ok(parse("--name=alpha", NULL));
	cr_assert_str_eq(C.name, "alpha");
	expect_ok(parse("--name", "beta gamma", NULL));
	cr_assert_str_eq(C.name, "beta gamma");
	expect_ok(parse("--name=", NULL));
	cr_assert_str_eq(C.name, "");
	expect_ok(parse("--name=a=b", NULL)); /* only the first '=' splits */
	cr_assert_str_eq(C.name, "a=b");
	expect_ok(parse("--name", "--port", NULL)); /* the next argument is the value, whatever it looks like */
	cr_assert_str_eq(C.name, "--port");
}

Test(opts, flag)
{
	C.verbose = 0;
	expect_ok(parse("--verbose", NULL));
	cr_assert_eq(C.verbose, 1);
	/* a flag takes no separate value: the next argument is parsed on its own */
	C.verbose = 0;
	expect_ok(parse("--verbose", "--port", "99", NULL));
	cr_assert_eq(C.verbose, 1);
	cr_assert_eq(C.port, 99);
	C.verbose = 0;
	expect_error(parse("--verbose", "1", NULL), "unexpected argument '1'");
	const struct {
		const char *arg;
		int want;
	} v[] = {{"--verbose=0", 0}, {"--verbose=false", 0}, {"--verbose=FALSE", 0}, {"--verbose=no", 0},
		 {"--verbose=1", 1}, {"--verbose=yes", 1},   {"--verbose=true", 1}};
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
		C.verbose = !v[i].want;
		expect_ok(parse(v[i].arg, NULL));
		cr_assert_eq(C.verbose, v[i].want, "%s", v[i].arg);
	}
	/* a flag with a default of 1 can be turned off */
	expect_ok(parse("--quiet=no", NULL));
	cr_assert_eq(C.quiet, 0);
}

Test(opts, list_replaces_default)
{
	expect_ok(parse("--peer", "10.0.0.1:1", NULL));
	cr_assert_eq(C.peers.n, 1);
	cr_assert_str_eq(C.peers.v[0], "10.0.0.1:1");
	expect_ok(parse("--peer=a:1", "--port=5", "--peer", "b:2", "--peer=c:3", NULL));
	cr_assert_eq(C.peers.n, 3);
	cr_assert_str_eq(C.peers.v[0], "a:1");
	cr_assert_str_eq(C.peers.v[1], "b:2");
	cr_assert_str_eq(C.peers.v[2], "c:3");
	/* a later parse starts from the default again */
	expect_ok(parse(NULL));
	cr_assert_eq(C.peers.n, 1);
	cr_assert_str_eq(C.peers.v[0], "127.0.0.1:9000");
}

Test(opts, double)
{
	expect_ok(parse("--ratio=0.25", NULL));
	cr_assert_float_eq(C.ratio, 0.25, 1e-12);
	expect_ok(parse("--ratio", "1e-3", NULL));
	cr_assert_float_eq(C.ratio, 0.001, 1e-15);
	expect_ok(parse("--ratio=1", NULL));
	cr_assert_float_eq(C.ratio, 1.0, 1e-12);
	expect_ok(parse("--ratio=0", NULL));
	cr_assert_float_eq(C.ratio, 0.0, 1e-12);
	expect_error(parse("--ratio=1.01", NULL), "is not a number in [0, 1]");
	expect_error(parse("--ratio=-0.1", NULL), "is not a number in [0, 1]");
	expect_error(parse("--ratio=abc", NULL), "is not a number");
	expect_error(parse("--ratio=0.5x", NULL), "is not a number");
	expect_error(parse("--ratio=", NULL), "is not a number");
	expect_error(parse("--ratio=inf", NULL), "is not a number");
}

/* Regression (fixed; was a bug in runtime/opts.c set(), OPT_DOUBLE): "nan" passes the bounds check,
 * because every comparison with NaN is false, so --ratio=nan parses as NaN.
 * loadgen's --rate and --max-error-rate are OPT_DOUBLE; with NaN the error
 * rate check (rate > max) never trips. Disabled until opts.c rejects it. */
Test(opts, double_rejects_nan)
{
	expect_error(parse("--ratio=nan", NULL), "is not a number");
	expect_error(parse("--ratio=NAN", NULL), "is not a number");
}

/* ---- errors ----------------------------------------------------------------------- */

Test(opts, unknown_option)
{
	expect_error(parse("--nope", NULL), "unknown option '--nope'");
	expect_error(parse("--nope=3", NULL), "unknown option '--nope'");
	expect_error(parse("--por=80", NULL), "unknown option '--por'"); /* no prefix matching */
	expect_error(parse("--portx=80", NULL), "unknown option '--portx'");
	expect_error(parse("--", NULL), "unknown option '--'");
	expect_error(parse("-p", NULL), "unexpected argument '-p'");
	expect_error(parse("port=80", NULL), "unexpected argument 'port=80'");
	/* processing stops at the first error */
	expect_error(parse("--port=1", "--bogus", "--port=2", NULL), "unknown option '--bogus'");
}

Test(opts, missing_value)
{
	expect_error(parse("--port", NULL), "--port needs a value");
	expect_error(parse("--name", NULL), "--name needs a value");
	expect_error(parse("--peer", NULL), "--peer needs a value");
	expect_error(parse("--timeout", NULL), "--timeout needs a value");
	expect_error(parse("--port=80", "--ratio", NULL), "--ratio needs a value");
	expect_error(parse("--config", NULL), "--config needs a file");
}

Test(opts, bad_default_is_reported)
{
	int64_t v = 0;
	const struct opt o[] = {{"n", OPT_INT, &v, "100", 0, 10, "x", 0}};
	char *argv[] = {(char *)"prog", NULL};
	char err[256] = "";
	cr_assert_eq(opts_parse(o, 1, 1, argv, "u", err, sizeof err), -1);
	cr_assert_not_null(strstr(err, "out of range"), "%s", err);
}

/* ---- --help ------------------------------------------------------------------------ */

/* Run parse with stdout captured into buf. */
static int parse_captured(char *buf, size_t cap, const char *arg)
{
	fflush(stdout);
	int saved = dup(1);
	FILE *tmp = tmpfile();
	cr_assert_not_null(tmp);
	dup2(fileno(tmp), 1);
	int rc = parse(arg, "--port=notanumber", NULL);
	fflush(stdout);
	dup2(saved, 1);
	close(saved);
	rewind(tmp);
	size_t n = fread(buf, 1, cap - 1, tmp);
	buf[n] = 0;
	fclose(tmp);
	return rc;
}

Test(opts, help_returns_1_and_lists_everything)
{
	static char out[8192];
	int rc = parse_captured(out, sizeof out, "--help");
	cr_assert_eq(rc, 1, "--help returned %d (%s)", rc, ERR);
	cr_assert_eq(strncmp(out, "usage: prog [options]\n", 22), 0, "help starts: %.40s", out);
	const char *want[] = {"--port=N",
			      "listen port [default: 8080]",
			      "--timeout=DURATION",
			      "[default: 10s]",
			      "--buf=SIZE",
			      "[default: 64k]",
			      "--name=VALUE",
			      "--verbose ",
			      "--peer=VALUE",
			      "(repeatable)",
			      "--ratio=N",
			      "--config=FILE",
			      "--help"};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		cr_assert_not_null(strstr(out, want[i]), "help lacks '%s':\n%s", want[i], out);
	/* the flag without a default shows no "[default" */
	const char *v = strstr(out, "--verbose");
	cr_assert_not_null(v);
	const char *eol = strchr(v, '\n');
	cr_assert(!memmem(v, (size_t)(eol - v), "[default", 8), "verbose line: %.*s", (int)(eol - v), v);
	/* -h too */
	cr_assert_eq(parse_captured(out, sizeof out, "-h"), 1);
	cr_assert_not_null(strstr(out, "--port=N"));
}

/* ---- --config FILE ------------------------------------------------------------------- */

/* Every file a test writes, removed by the suite's fini. */
static char cfgpaths[8][32];
static size_t ncfg;

static const char *write_config(const char *text)
{
	cr_assert_lt(ncfg, sizeof cfgpaths / sizeof cfgpaths[0]);
	char *path = cfgpaths[ncfg];
	strcpy(path, "/tmp/test_opts.XXXXXX");
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	ncfg++;
	size_t n = strlen(text);
	cr_assert_eq(write(fd, text, n), (ssize_t)n);
	close(fd);
	return path;
}

static void unlink_config(void)
{
	for (size_t i = 0; i < ncfg; i++)
		unlink(cfgpaths[i]);
	ncfg = 0;
}

TestSuite(config, .fini = unlink_config);

Test(config, file_values_comments_blank_lines)
{
	const char *p = write_config("# a comment\n"
				     "\n"
				     "   \t\n"
				     "port = 9000\n"
				     "  timeout=250ms  \n"
				     "\t# indented comment\n"
				     "buf =1m\n"
				     "name = from the file\n"
				     "verbose\n"
				     "quiet = false\n"
				     "peer = x:1\n"
				     "peer = y:2\n"
				     "ratio = 0.125\n");
	char arg[128];
	snprintf(arg, sizeof arg, "--config=%s", p);
	C.verbose = 0;
	expect_ok(parse(arg, NULL));
	cr_assert_eq(C.port, 9000);
	cr_assert_eq(C.timeout, 250);
	cr_assert_eq(C.buf, 1 << 20);
	cr_assert_str_eq(C.name, "from the file");
	cr_assert_eq(C.verbose, 1, "a bare flag name in the file sets it");
	cr_assert_eq(C.quiet, 0);
	cr_assert_eq(C.peers.n, 2, "the file's list replaces the default");
	cr_assert_str_eq(C.peers.v[0], "x:1");
	cr_assert_str_eq(C.peers.v[1], "y:2");
	cr_assert_float_eq(C.ratio, 0.125, 1e-12);
	/* values outlive the file */
	unlink(p);
	cr_assert_str_eq(C.name, "from the file");
}

Test(config, command_line_wins)
{
	const char *p = write_config("port = 9000\nname = file\npeer = f:1\ntimeout = 3s\n");
	/* --config before and after the command-line values: same result */
	expect_ok(parse("--config", p, "--port=1234", "--peer", "c:1", NULL));
	cr_assert_eq(C.port, 1234);
	cr_assert_str_eq(C.name, "file");
	cr_assert_eq(C.timeout, 3000);
	cr_assert_eq(C.peers.n, 1);
	cr_assert_str_eq(C.peers.v[0], "c:1");
	expect_ok(parse("--name", "cli", "--config", p, NULL));
	cr_assert_str_eq(C.name, "cli");
	cr_assert_eq(C.port, 9000);
	cr_assert_eq(C.peers.n, 1);
	cr_assert_str_eq(C.peers.v[0], "f:1");
}

Test(config, unknown_key_in_file)
{
	const char *p = write_config("port = 1\n# ok\nbogus = 3\n");
	char arg[128];
	snprintf(arg, sizeof arg, "--config=%s", p);
	int rc = parse(arg, NULL);
	expect_error(rc, "unknown option 'bogus'");
	cr_assert_not_null(strstr(ERR, ":3:"), "error names the line: %s", ERR);
	cr_assert_not_null(strstr(ERR, p), "error names the file: %s", ERR);
	/* "--port" is not a file key */
	p = write_config("--port = 1\n");
	snprintf(arg, sizeof arg, "--config=%s", p);
	expect_error(parse(arg, NULL), "unknown option '--port'");
}

Test(config, bad_values_in_file)
{
	const char *p = write_config("\nport = 0\n");
	char arg[128];
	snprintf(arg, sizeof arg, "--config=%s", p);
	expect_error(parse(arg, NULL), ":2: --port: 0 is out of range");
	p = write_config("port\n");
	snprintf(arg, sizeof arg, "--config=%s", p);
	expect_error(parse(arg, NULL), ":1: 'port' needs a value");
	p = write_config("timeout = soon\n");
	snprintf(arg, sizeof arg, "--config=%s", p);
	expect_error(parse(arg, NULL), "is not a duration");
	/* a bad value for an option the command line sets is never looked at */
	p = write_config("port = 0\n");
	snprintf(arg, sizeof arg, "--config=%s", p);
	expect_ok(parse(arg, "--port=5", NULL));
	cr_assert_eq(C.port, 5);
}

Test(config, missing_file)
{
	expect_error(parse("--config=/nonexistent/opts.conf", NULL), "--config: cannot open /nonexistent/opts.conf");
}

/* ---- value parsers directly ----------------------------------------------------------- */

Test(parsers, parse_ms)
{
	const struct {
		const char *in;
		int64_t want;
	} ok[] = {{"250ms", 250},     {"10s", 10000},  {"5m", 300000},   {"1h", 3600000}, {"2min", 120000},
		  {"7", 7000},        {"0", 0},        {"0ms", 0},       {"1.5s", 1500},  {"0.5", 500},
		  {"1500us", 2},      {"100us", 0},    {"0.0005s", 1},   {"1e3", 1000000}, {"1.25h", 4500000},
		  {"9e12", 9000000000000000ll}};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		int64_t v = -7;
		cr_assert_eq(opts_parse_ms(ok[i].in, &v), 0, "'%s' rejected", ok[i].in);
		cr_assert_eq(v, ok[i].want, "'%s' -> %lld, want %lld", ok[i].in, (long long)v, (long long)ok[i].want);
	}
	const char *bad[] = {"", "ms", "s", "10x", "10 s", "10s ", "-1", "-1ms", "1d", "10S", "5mm", "inf", "1e15s", "1e300"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int64_t v = -7;
		cr_assert_eq(opts_parse_ms(bad[i], &v), -1, "'%s' accepted as %lld", bad[i], (long long)v);
		cr_assert_eq(v, -7, "'%s' wrote the output on failure", bad[i]);
	}
}

Test(parsers, parse_size)
{
	const struct {
		const char *in;
		int64_t want;
	} ok[] = {{"0", 0},
		  {"512", 512},
		  {"4096", 4096},
		  {"64k", 65536},
		  {"64K", 65536},
		  {"64kb", 65536},
		  {"64KB", 65536},
		  {"256KiB", 262144},
		  {"256kib", 262144},
		  {"1m", 1048576},
		  {"1MiB", 1048576},
		  {"2g", 2147483648ll},
		  {"2GiB", 2147483648ll},
		  {"1.5k", 1536},
		  {"7b", 7},
		  {"7B", 7},
		  {"8e15", 8000000000000000ll}};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		int64_t v = -7;
		cr_assert_eq(opts_parse_size(ok[i].in, &v), 0, "'%s' rejected", ok[i].in);
		cr_assert_eq(v, ok[i].want, "'%s' -> %lld, want %lld", ok[i].in, (long long)v, (long long)ok[i].want);
	}
	const char *bad[] = {"", "k", "-1", "-1k", "1t", "64kx", "1 k", "1kk", "4096KiBx", "1ki", "inf", "1e16", "1e300"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int64_t v = -7;
		cr_assert_eq(opts_parse_size(bad[i], &v), -1, "'%s' accepted as %lld", bad[i], (long long)v);
		cr_assert_eq(v, -7, "'%s' wrote the output on failure", bad[i]);
	}
}

/* Regression (fixed; was a bug in runtime/opts.c opts_parse_ms / opts_parse_size): strtod accepts "nan";
 * the checks (v < 0, r > 9e15) are all false for NaN, so both return 0 and
 * convert NaN to int64_t, which is undefined behaviour (x86-64 yields
 * INT64_MIN; clang -fsanitize=float-cast-overflow reports opts.c:34 and
 * opts.c:59). Through opts_parse the bounds check happens to reject INT64_MIN,
 * but callers of the exported parsers get 0 and a garbage value. Disabled
 * until opts.c rejects non-finite numbers. */
Test(parsers, nan_is_rejected)
{
	int64_t v = -7;
	cr_assert_eq(opts_parse_ms("nan", &v), -1, "opts_parse_ms(\"nan\") accepted as %lld", (long long)v);
	cr_assert_eq(opts_parse_ms("nanms", &v), -1);
	cr_assert_eq(opts_parse_size("nan", &v), -1, "opts_parse_size(\"nan\") accepted as %lld", (long long)v);
	cr_assert_eq(opts_parse_size("NANk", &v), -1);
}

/* ---- reloading (SIGHUP): compare and copy between two parses ------------------- */

static struct cfg D;
static const struct opt OPTS_D[NOPTS] = {
	{"port", OPT_INT, &D.port, "8080", 1, 65535, "listen port", 0},
	{"timeout", OPT_MS, &D.timeout, "10s", 1, 3600000, "idle timeout", 0},
	{"buf", OPT_SIZE, &D.buf, "64k", 512, 1ll << 40, "buffer size", 0},
	{"name", OPT_STR, &D.name, "gw", 0, 0, "instance name", 0},
	{"verbose", OPT_FLAG, &D.verbose, NULL, 0, 0, "log more", 0},
	{"peer", OPT_LIST, &D.peers, "127.0.0.1:9000", 0, 0, "peer address", 0},
	{"ratio", OPT_DOUBLE, &D.ratio, "0.5", 0, 1, "a fraction", 0},
	{"quiet", OPT_FLAG, &D.quiet, "1", 0, 0, "log less", 0},
};

Test(opts, differ_copy_and_show_for_a_reload)
{
	cr_assert_eq(parse("--port", "9000", "--name", "a", "--peer", "1.2.3.4:5", NULL), 0, "%s", ERR);
	char *argv[] = {(char *)"prog", (char *)"--port", (char *)"9000", (char *)"--name", (char *)"b",
			(char *)"--timeout", (char *)"250ms", (char *)"--verbose", NULL};
	cr_assert_eq(opts_parse(OPTS_D, NOPTS, 8, argv, "u", ERR, sizeof ERR), 0, "%s", ERR);
	static const int differs[NOPTS] = {0, 1, 0, 1, 1, 1, 0, 0};
	for (int i = 0; i < NOPTS; i++)
		cr_assert_eq(opts_differ(&OPTS[i], &OPTS_D[i]), differs[i], "--%s", OPTS[i].name);
	char b[64];
	cr_assert_str_eq(opts_value_str(&OPTS_D[1], b, sizeof b), "250ms");
	cr_assert_str_eq(opts_value_str(&OPTS_D[3], b, sizeof b), "b");
	cr_assert_str_eq(opts_value_str(&OPTS_D[4], b, sizeof b), "on");
	cr_assert_str_eq(opts_value_str(&OPTS[5], b, sizeof b), "1.2.3.4:5");
	cr_assert_str_eq(opts_value_str(&OPTS_D[0], b, sizeof b), "9000");
	for (int i = 0; i < NOPTS; i++)
		opts_copy(&OPTS[i], &OPTS_D[i]);
	for (int i = 0; i < NOPTS; i++)
		cr_assert_eq(opts_differ(&OPTS[i], &OPTS_D[i]), i == 5, "--%s after the copy", OPTS[i].name);
	cr_assert_eq(C.timeout, 250);
	cr_assert_str_eq(C.name, "b");
	const char *none = NULL;
	struct opt s = {"x", OPT_STR, &none, NULL, 0, 0, "x", OPT_RELOAD};
	cr_assert_str_eq(opts_value_str(&s, b, sizeof b), "(none)");
	free(C.peers.v);
	free(D.peers.v);
	C.peers = (struct opt_list){0};
	D.peers = (struct opt_list){0};
}
