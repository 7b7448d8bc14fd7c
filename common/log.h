/* Leveled logging to stderr, one line per event:
 *
 *     2026-11-22T03:11:39.123Z [info] kinesis_producer[4242]: message
 *
 * UTC timestamp with milliseconds, level in brackets, the ident (default
 * "kinesis_producer", see kp_log_set_ident) and the pid. Control characters in the
 * message are escaped ("\n" becomes the two characters \ n) so one event is always one
 * line and a message cannot forge another line. A line longer than KP_LOG_LINE_MAX is
 * cut and ends with "...".
 *
 * Thread safety: each line is formatted into a local buffer and emitted with a single
 * write(2) (or one fwrite / one sink call), so concurrent threads never interleave
 * within a line. The level may be changed at any time; the ident and the output
 * (kp_log_set_file / kp_log_set_sink) are meant to be set at start-up or in tests,
 * before other threads log.
 *
 * Secrets: callers must never pass credentials (secret keys, session tokens, proxy
 * passwords, signatures, Authorization headers) to these functions; the logger cannot
 * tell them apart from other text. */
#ifndef KP_COMMON_LOG_H
#define KP_COMMON_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>

/* Ordered by severity; the values index the names "trace".."error" and match the
 * LogLevel setting (common/config.h). */
typedef enum kp_log_level {
  KP_LOG_LEVEL_TRACE = 0,
  KP_LOG_LEVEL_DEBUG = 1,
  KP_LOG_LEVEL_INFO = 2,
  KP_LOG_LEVEL_WARNING = 3,
  KP_LOG_LEVEL_ERROR = 4,
  KP_LOG_LEVEL_OFF = 5 /* threshold only: nothing is logged */
} kp_log_level;

/* Longest line emitted, including the prefix and the trailing newline. */
#define KP_LOG_LINE_MAX 4096

/* Current threshold; read by the macros so disabled levels cost one relaxed load and
 * a compare. Atomic because any thread may change it. Use kp_log_set_level. */
extern _Atomic int kp_log_threshold;

/* Sets the threshold: events below `level` are dropped. Default KP_LOG_LEVEL_INFO. */
void kp_log_set_level(kp_log_level level);
kp_log_level kp_log_get_level(void);

/* Parses "trace", "debug", "info", "warning" (or "warn"), "error", "off"; ASCII
 * case-insensitive. Returns 0 and sets *out, or -1 (out untouched). */
int kp_log_level_from_string(const char *s, kp_log_level *out);

/* Lower-case name of a level ("info"); "?" for values out of range. */
const char *kp_log_level_name(kp_log_level level);

/* Name shown before [pid]; copied (truncated to 63 bytes). NULL restores the default. */
void kp_log_set_ident(const char *ident);

/* Sends lines to `f` (one fwrite each) instead of stderr; NULL restores stderr. */
void kp_log_set_file(FILE *f);

/* Sends each complete line (with its trailing '\n', NUL-terminated, len excludes the
 * NUL) to `fn` instead; for tests and embedding. NULL restores stderr. Overrides
 * kp_log_set_file while set. */
typedef void (*kp_log_sink_fn)(kp_log_level level, const char *line, size_t len, void *ud);
void kp_log_set_sink(kp_log_sink_fn fn, void *ud);

/* Formats and emits one event regardless of the threshold (the macros check it). */
void kp_log_write(kp_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kp_log_vwrite(kp_log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

#define KP_LOG_ENABLED(level)                                                                      \
  ((int)(level) >= atomic_load_explicit(&kp_log_threshold, memory_order_relaxed))

/* The arguments are not evaluated when the level is disabled. */
#define KP_LOG(level, ...)                                                                         \
  do {                                                                                             \
    if (KP_LOG_ENABLED(level))                                                                     \
      kp_log_write((level), __VA_ARGS__);                                                          \
  } while (0)

#define KP_LOG_TRACE(...) KP_LOG(KP_LOG_LEVEL_TRACE, __VA_ARGS__)
#define KP_LOG_DEBUG(...) KP_LOG(KP_LOG_LEVEL_DEBUG, __VA_ARGS__)
#define KP_LOG_INFO(...) KP_LOG(KP_LOG_LEVEL_INFO, __VA_ARGS__)
#define KP_LOG_WARNING(...) KP_LOG(KP_LOG_LEVEL_WARNING, __VA_ARGS__)
#define KP_LOG_ERROR(...) KP_LOG(KP_LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
