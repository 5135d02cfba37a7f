/* log.h: one line per event on stderr, with time, program, thread and level.
 *
 *   2026-11-26T22:30:01.123Z gateway[w3] warn: accept: too many open files
 *
 * Each line is written with one write(2), so lines from threads never
 * interleave. The level is set once at start-up (log_init) and only read
 * afterwards. Nothing on the message path logs at the default level (info);
 * repeated events use log_rl_*(), which prints at most one line per second per
 * call site and thread and says how many it held back.
 */
#ifndef RUNTIME_LOG_H
#define RUNTIME_LOG_H

#include <stdint.h>

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

extern enum log_level log_level_max; /* log_init, log_set_level; read with LOG_LEVEL() */
#define LOG_LEVEL() ((int)__atomic_load_n(&log_level_max, __ATOMIC_RELAXED))

/* Set the program name and the most verbose level printed. Call once, before
 * threads start. Under journald (JOURNAL_STREAM names stderr) lines carry a
 * syslog priority prefix ("<3>" for errors...) and no timestamp of their
 * own, so `journalctl -p err` works and the journal's time is the one shown. */
void log_init(const char *prog, enum log_level max);

/* Change the level at run time (SIGHUP reload); any thread. */
void log_set_level(enum log_level max);

/* Name this thread in log lines ("main", "w3"); at most 15 characters. */
void log_thread(const char *name);

/* Parse "error", "warn", "info", "debug"; returns -1 for anything else. */
int log_level_parse(const char *s);

/* Write one line (no trailing newline needed). */
void log_write(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_info(...)                                                                                                  \
	do {                                                                                                           \
		if (LOG_LEVEL() >= LOG_INFO)                                                                         \
			log_write(LOG_INFO, __VA_ARGS__);                                                              \
	} while (0)
#define log_debug(...)                                                                                                 \
	do {                                                                                                           \
		if (LOG_LEVEL() >= LOG_DEBUG)                                                                        \
			log_write(LOG_DEBUG, __VA_ARGS__);                                                             \
	} while (0)

/* Rate limit state of one call site in one thread. */
struct log_rl {
	uint64_t second;
	uint64_t held;
};

/* Returns 1 when the call site may print now (and how many it held back since
 * the last line in *held), 0 when it should stay quiet. */
int log_rl_allow(struct log_rl *rl, uint64_t *held);

#define log_rl(lvl, ...)                                                                                               \
	do {                                                                                                           \
		static __thread struct log_rl rl_;                                                                     \
		uint64_t held_;                                                                                        \
		if (LOG_LEVEL() >= (lvl) && log_rl_allow(&rl_, &held_)) {                                           \
			log_write((lvl), __VA_ARGS__);                                                                 \
			if (held_)                                                                                     \
				log_write((lvl), "(%llu similar lines held back in the last second)",                 \
					  (unsigned long long)held_);                                                  \
		}                                                                                                      \
	} while (0)

#endif
