/* Helpers shared by kpl-bench and kp-bench-direct: time and CPU accounting (getrusage,
 * /proc), a log-bucket latency histogram, and a kp-sink child process (start, stats by
 * SIGUSR1, stop by PID). Header-only; everything is static inline. */
#ifndef KP_BENCH_COMMON_H
#define KP_BENCH_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- time, CPU, memory ------------------------------------------------------------ */

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline double tv_s(struct timeval tv) {
  return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6;
}

static inline double rusage_cpu(int who) {
  struct rusage ru;
  if (getrusage(who, &ru))
    return 0;
  return tv_s(ru.ru_utime) + tv_s(ru.ru_stime);
}

/* utime + stime of a whole process (every thread) from /proc/PID/stat; -1 if gone. */
static inline double proc_cpu(pid_t pid) {
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p)
    return -1;
  unsigned long long ut = 0, st = 0;
  /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
   * utime(14) stime(15) */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
    return -1;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* A "Name:  N kB" field of /proc/<pid or self>/status in MiB; -1 if unknown. */
static inline double proc_status_mib(pid_t pid, const char *field) {
  char path[64], line[256];
  size_t n = strlen(field);
  if (pid)
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  else
    snprintf(path, sizeof path, "/proc/self/status");
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  double v = -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, field, n)) {
      v = (double)strtoull(line + n, NULL, 10) / 1024.0;
      break;
    }
  fclose(f);
  return v;
}

/* VmHWM (peak RSS) in MiB of "self" or a pid; -1 if unknown. */
static inline double vm_hwm_mib(pid_t pid) {
  return proc_status_mib(pid, "VmHWM:");
}

/* RssShmem in MiB: the pages of the shared memory file (SharedMemory) the process has
 * touched, counted in the RSS of both processes; they stay mapped, so at the end of a
 * run this is their peak too. */
static inline double rss_shmem_mib(pid_t pid) {
  return proc_status_mib(pid, "RssShmem:");
}

/* Whole-machine CPU jiffies (busy, total) from /proc/stat. */
static inline void sys_cpu(unsigned long long *busy, unsigned long long *total) {
  unsigned long long v[10] = {0};
  *busy = *total = 0;
  FILE *f = fopen("/proc/stat", "r");
  if (!f)
    return;
  int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                 &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
  fclose(f);
  for (int i = 0; i < n && i < 8; i++) /* guest time is already in user */
    *total += v[i];
  *busy = *total - v[3] - v[4];
}

static inline double loadavg1(void) {
  double l = -1;
  FILE *f = fopen("/proc/loadavg", "r");
  if (f) {
    if (fscanf(f, "%lf", &l) != 1)
      l = -1;
    fclose(f);
  }
  return l;
}

/* ---- latency histogram: log buckets, 16 per power of two ------------------------------ */

#define HIST_BUCKETS 1024
typedef struct hist {
  uint64_t b[HIST_BUCKETS];
  uint64_t n, max;
} hist;

static inline unsigned hist_index(uint64_t v) {
  if (v < 32)
    return (unsigned)v;
  unsigned msb = 63u - (unsigned)__builtin_clzll(v);
  unsigned shift = msb - 4;
  return 16u * shift + (unsigned)(v >> shift);
}

static inline double hist_lower(unsigned i) {
  if (i < 32)
    return (double)i;
  unsigned shift = i / 16 - 1;
  return (double)((uint64_t)(i % 16 + 16) << shift);
}

static inline double hist_upper(unsigned i) {
  return i < 32 ? (double)i + 1 : hist_lower(i) + (double)(1ull << (i / 16 - 1));
}

static inline void hist_add(hist *h, uint64_t v) {
  h->b[hist_index(v)]++;
  h->n++;
  if (v > h->max)
    h->max = v;
}

/* Value (midpoint of its bucket) at quantile q. */
static inline double hist_quantile(const hist *h, double q) {
  if (!h->n)
    return 0;
  uint64_t want = (uint64_t)(q * (double)h->n);
  if (want >= h->n)
    want = h->n - 1;
  uint64_t seen = 0;
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    seen += h->b[i];
    if (seen > want) {
      double mid = (hist_lower(i) + hist_upper(i)) / 2;
      return mid > (double)h->max ? (double)h->max : mid;
    }
  }
  return (double)h->max;
}

static inline uint64_t xorshift(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Waits for pid up to ms; returns its status or -1 if still running. */
static inline int wait_pid_ms(pid_t pid, int ms) {
  for (int i = 0; i <= ms / 10; i++) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid)
      return st;
    if (r < 0)
      return 0;
    usleep(10000);
  }
  return -1;
}

/* ---- the sink ------------------------------------------------------------------------- */

/* One kp-sink child per process: started with sink_start, stopped by PID. */
typedef struct sink_proc {
  pid_t pid;
  FILE *out;
} sink_proc;
static sink_proc g_sink;

/* Starts `path` --shards N --latency-ms X --threads T on an ephemeral port; waits up to
 * 10 s for READY and writes http://127.0.0.1:PORT into url. The child gets SIGTERM if
 * we die (PR_SET_PDEATHSIG). Returns 0 or -1 with err set. */
static inline int sink_start(const char *path, int n_shards, double latency_ms, int n_threads,
                             char *url, size_t urlsz, char *err, size_t errsz) {
  int pfd[2];
  if (pipe2(pfd, O_CLOEXEC)) {
    snprintf(err, errsz, "pipe: %s", strerror(errno));
    return -1;
  }
  char shards[16], lat[32], thr[16];
  snprintf(shards, sizeof shards, "%d", n_shards);
  snprintf(lat, sizeof lat, "%g", latency_ms);
  snprintf(thr, sizeof thr, "%d", n_threads);
  char *argv[] = {(char *)path, "--shards", shards, "--latency-ms", lat, "--threads", thr, NULL};
  pid_t parent = getpid();
  g_sink.pid = fork();
  if (g_sink.pid < 0) {
    snprintf(err, errsz, "fork: %s", strerror(errno));
    return -1;
  }
  if (g_sink.pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
      _exit(127);
    dup2(pfd[1], 1);
    execv(path, argv);
    fprintf(stderr, "kp-sink child: exec %s: %s\n", path, strerror(errno));
    _exit(127);
  }
  close(pfd[1]);
  /* Raw reads until READY (stdio would buffer READY behind PORT and poll() would then
   * wait for nothing); the FILE is made afterwards, for the stats lines. */
  char got[1024];
  size_t have = 0;
  uint64_t end = now_ns() + 10000000000ull;
  while (now_ns() < end && have < sizeof got - 1) {
    struct pollfd p = {pfd[0], POLLIN, 0};
    if (poll(&p, 1, 100) <= 0)
      continue;
    ssize_t n = read(pfd[0], got + have, sizeof got - 1 - have);
    if (n <= 0)
      break;
    have += (size_t)n;
    got[have] = 0;
    if (strstr(got, "READY\n"))
      break;
  }
  got[have] = 0;
  const char *pl = strstr(got, "PORT ");
  int port = pl && strstr(got, "READY\n") ? atoi(pl + 5) : 0;
  g_sink.out = fdopen(pfd[0], "r");
  if (port <= 0) {
    snprintf(err, errsz, "kp-sink (%s) did not start", path);
    return -1;
  }
  snprintf(url, urlsz, "http://127.0.0.1:%d", port);
  return 0;
}

typedef struct sink_stats {
  bool valid;
  double cpu_s;
  unsigned long long user_records, misrouted, kinesis_records, requests, corrupt;
} sink_stats;

static inline unsigned long long json_u(const char *line, const char *key) {
  const char *p = strstr(line, key);
  return p ? strtoull(p + strlen(key), NULL, 10) : 0;
}

/* One stats line: SIGUSR1 (or SIGTERM when final), read with a 3 s bound. */
static inline sink_stats sink_read_stats(int sig) {
  sink_stats s = {0};
  if (g_sink.pid <= 0 || !g_sink.out)
    return s;
  kill(g_sink.pid, sig);
  char line[16384];
  uint64_t end = now_ns() + 3000000000ull;
  while (now_ns() < end) {
    struct pollfd p = {fileno(g_sink.out), POLLIN, 0};
    if (poll(&p, 1, 100) <= 0)
      continue;
    if (!fgets(line, sizeof line, g_sink.out))
      break;
    if (line[0] != '{')
      continue;
    s.valid = true;
    const char *c = strstr(line, "\"cpu_s\":");
    s.cpu_s = c ? strtod(c + 8, NULL) : 0;
    s.user_records = json_u(line, "\"user_records\":");
    s.misrouted = json_u(line, "\"misrouted\":");
    s.kinesis_records = json_u(line, "\"kinesis_records\":");
    s.requests = json_u(line, "\"put_records_requests\":");
    s.corrupt = json_u(line, "\"corrupt_aggregates\":");
    break;
  }
  return s;
}

static inline void sink_stop(void) {
  if (g_sink.pid <= 0)
    return;
  if (wait_pid_ms(g_sink.pid, 0) < 0) {
    kill(g_sink.pid, SIGTERM);
    if (wait_pid_ms(g_sink.pid, 5000) < 0) {
      kill(g_sink.pid, SIGKILL);
      wait_pid_ms(g_sink.pid, 5000);
    }
  }
  g_sink.pid = 0;
  if (g_sink.out)
    fclose(g_sink.out);
  g_sink.out = NULL;
}

static inline char *sibling(const char *argv0, const char *name) {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0)
    return NULL;
  self[n] = 0;
  char *slash = strrchr(self, '/');
  if (!slash)
    return NULL;
  *slash = 0;
  size_t len = strlen(self) + strlen(name) + 2;
  char *p = malloc(len);
  if (p)
    snprintf(p, len, "%s/%s", self, name);
  return p;
}

#endif
