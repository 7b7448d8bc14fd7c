#include "common/log.h"

#include <errno.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

_Atomic int kp_log_threshold = KP_LOG_LEVEL_INFO;

static const char *const level_names[] = {"trace", "debug", "info", "warning", "error", "off"};

static char log_ident[64] = "kinesis_producer";
static FILE *log_file;
static kp_log_sink_fn log_sink;
static void *log_sink_ud;

void kp_log_set_level(kp_log_level level) {
  if ((int)level < KP_LOG_LEVEL_TRACE)
    level = KP_LOG_LEVEL_TRACE;
  if ((int)level > KP_LOG_LEVEL_OFF)
    level = KP_LOG_LEVEL_OFF;
  atomic_store_explicit(&kp_log_threshold, (int)level, memory_order_relaxed);
}

kp_log_level kp_log_get_level(void) {
  return (kp_log_level)atomic_load_explicit(&kp_log_threshold, memory_order_relaxed);
}

int kp_log_level_from_string(const char *s, kp_log_level *out) {
  if (!s)
    return -1;
  for (int i = 0; i <= KP_LOG_LEVEL_OFF; i++) {
    if (strcasecmp(s, level_names[i]) == 0) {
      *out = (kp_log_level)i;
      return 0;
    }
  }
  if (strcasecmp(s, "warn") == 0) { /* common spelling; KPL uses "warning" */
    *out = KP_LOG_LEVEL_WARNING;
    return 0;
  }
  return -1;
}

const char *kp_log_level_name(kp_log_level level) {
  if ((int)level < 0 || (int)level > KP_LOG_LEVEL_OFF)
    return "?";
  return level_names[level];
}

void kp_log_set_ident(const char *ident) {
  if (!ident)
    ident = "kinesis_producer";
  size_t n = strlen(ident);
  if (n >= sizeof log_ident)
    n = sizeof log_ident - 1;
  memcpy(log_ident, ident, n);
  log_ident[n] = '\0';
}

void kp_log_set_file(FILE *f) {
  log_file = f;
}

void kp_log_set_sink(kp_log_sink_fn fn, void *ud) {
  log_sink = fn;
  log_sink_ud = ud;
}

/* Writes the whole line with as few write(2) calls as the kernel allows; one in
 * practice (lines are short), which is what keeps concurrent lines apart. */
static void write_fd(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return; /* nowhere left to report a logging failure */
    }
    p += w;
    n -= (size_t)w;
  }
}

/* Copies src into dst escaping control characters so an event stays on one line.
 * Returns the new length of dst (never beyond cap); *cut is set when src did not fit. */
static size_t escape_into(char *dst, size_t len, size_t cap, const char *src, int *cut) {
  const unsigned char *s = (const unsigned char *)src;
  for (; *s && len < cap; s++) {
    unsigned char ch = *s;
    if (ch >= 0x20 && ch != 0x7f) {
      dst[len++] = (char)ch;
      continue;
    }
    char esc = ch == '\n' ? 'n' : ch == '\r' ? 'r' : ch == '\t' ? 't' : 0;
    if (esc) {
      if (len + 2 > cap)
        break;
      dst[len++] = '\\';
      dst[len++] = esc;
    } else {
      if (len + 4 > cap)
        break;
      static const char hex[] = "0123456789abcdef";
      dst[len++] = '\\';
      dst[len++] = 'x';
      dst[len++] = hex[ch >> 4];
      dst[len++] = hex[ch & 15];
    }
  }
  if (*s)
    *cut = 1;
  return len;
}

void kp_log_vwrite(kp_log_level level, const char *fmt, va_list ap) {
  char line[KP_LOG_LINE_MAX];
  char msg[KP_LOG_LINE_MAX];
  struct timespec ts;
  struct tm tm;

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(line, sizeof line,
                   "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] %s[%ld]: ", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   ts.tv_nsec / 1000000L, kp_log_level_name(level), log_ident, (long)getpid());
  size_t len = n < 0 ? 0 : (size_t)n;
  if (len > sizeof line - 5)
    len = sizeof line - 5;

  int m = vsnprintf(msg, sizeof msg, fmt, ap);
  int truncated = m < 0 || (size_t)m >= sizeof msg;
  if (m < 0)
    msg[0] = '\0';
  /* Keep room for "...\n" and the NUL. */
  len = escape_into(line, len, sizeof line - 5, msg, &truncated);
  if (truncated) {
    memcpy(line + len, "...", 3);
    len += 3;
  }
  line[len++] = '\n';
  line[len] = '\0';

  if (log_sink)
    log_sink(level, line, len, log_sink_ud);
  else if (log_file)
    fwrite(line, 1, len, log_file); /* stdio locks the stream for the call */
  else
    write_fd(STDERR_FILENO, line, len);
}

void kp_log_write(kp_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  kp_log_vwrite(level, fmt, ap);
  va_end(ap);
}
