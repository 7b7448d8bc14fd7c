// KP_TEST_LIBS: kp_format OpenSSL::Crypto
/* The per-byte floor on this machine: what MD5, SHA-256 (OpenSSL EVP), base64 encode
 * and decode (EVP_EncodeBlock / EVP_DecodeBlock), memcpy, and MD5 of 16 messages at
 * once (kp_md5_many, how the daemon hashes a request's aggregates) cost per byte at the sizes
 * the producer handles (100 B user record, 1 KiB, 50 KiB aggregate, 1 MiB record), plus
 * MD5 of a 16-byte partition key per call. Every cost a producer or sink pays per byte
 * is at least one of these, so they bound what any design can reach.
 *
 * Rates are per CPU second of this thread (the machine is shared); base64 rates count
 * binary bytes (the encoder's input, the decoder's output). Each cell runs ~0.5 s by
 * default. Usage: bench_floor [seconds per cell]. Prints markdown tables.
 *
 * A second table gives the kernel's per-byte cost of moving data through a socket, the
 * sender's and the receiver's CPU apart: a Unix stream socket (the client -> daemon
 * pipe) and loopback TCP (daemon -> sink). No producer that hands records to another
 * process and sends them over TCP can spend less than these either.
 *
 * A third gives what reading bytes another thread has just written costs: how the
 * client's I/O thread meets each record its putting thread encoded, and the daemon
 * each byte the client wrote. At the client's queue depth under full load (64 MiB)
 * the bytes have left the caches; in a 256 KiB queue they have not. And one line
 * gives the CPU cost of a system call that does nothing (getppid). */
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <semaphore.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "format/hash_key.h"
#include "format/md5_many.h"

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct ctx {
  uint8_t *src;
  uint8_t *dst;
  uint8_t *b64; /* base64 of src */
  size_t len;
  size_t b64_len;
  EVP_MD_CTX *md;
  const EVP_MD *md5;
  const EVP_MD *sha256;
} ctx;

static volatile unsigned g_sink;

static void op_memcpy(ctx *c) {
  memcpy(c->dst, c->src, c->len);
  g_sink += c->dst[c->len - 1];
}

/* MD5 of 16 messages of c->len bytes at once (the aggregates of one request): counted
 * as 16 * c->len bytes (MANY_SCALE). */
enum { MANY_SCALE = 16 };
static void op_md5_many(ctx *c) {
  kp_md5_job jobs[MANY_SCALE];
  uint8_t out[MANY_SCALE][16];
  for (int i = 0; i < MANY_SCALE; i++)
    jobs[i] = (kp_md5_job){.data = c->src, .len = c->len, .out = out[i]};
  kp_md5_many(jobs, MANY_SCALE);
  g_sink += out[MANY_SCALE - 1][0];
}

static void digest(ctx *c, const EVP_MD *md) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  if (!EVP_DigestInit_ex2(c->md, md, NULL) || !EVP_DigestUpdate(c->md, c->src, c->len) ||
      !EVP_DigestFinal_ex(c->md, out, &n))
    abort();
  g_sink += out[0];
}

static void op_md5(ctx *c) {
  digest(c, c->md5);
}

static void op_sha256(ctx *c) {
  digest(c, c->sha256);
}

static void op_b64enc(ctx *c) {
  int n = EVP_EncodeBlock(c->dst, c->src, (int)c->len);
  g_sink += c->dst[n - 1];
}

static void op_b64dec(ctx *c) {
  int n = EVP_DecodeBlock(c->dst, c->b64, (int)c->b64_len);
  if (n < (int)c->len)
    abort();
  g_sink += c->dst[0];
}

static void op_kp_md5(ctx *c) {
  uint8_t out[16];
  kp_md5(c->src, c->len, out);
  g_sink += out[0];
}

static void op_evp_digest_oneshot(ctx *c) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  if (!EVP_Digest(c->src, c->len, out, &n, c->md5, NULL))
    abort();
  g_sink += out[0];
}

static void op_syscall(ctx *c) {
  (void)c;
  g_sink += (unsigned)syscall(SYS_getppid);
}

/* Runs op for about `secs` CPU seconds (checking the clock every `batch` calls, batch
 * sized to ~1 ms) and returns seconds per call. Bounded: at most 2^34 calls. */
static double run(void (*op)(ctx *), ctx *c, double secs) {
  for (int i = 0; i < 16; i++) /* warm up caches and lazy init */
    op(c);
  uint64_t batch = 1;
  double t0 = cpu_now(), t = t0;
  for (; batch < (1u << 24); batch *= 2) {
    for (uint64_t i = 0; i < batch; i++)
      op(c);
    t = cpu_now();
    if (t - t0 > 1e-3)
      break;
  }
  uint64_t calls = 0;
  t0 = cpu_now();
  for (uint64_t guard = 0; guard < (1ull << 34) / batch; guard++) {
    for (uint64_t i = 0; i < batch; i++)
      op(c);
    calls += batch;
    t = cpu_now();
    if (t - t0 >= secs)
      break;
  }
  return (t - t0) / (double)calls;
}

/* ---- Socket copies ---------------------------------------------------------------- */

typedef struct reader {
  int fd;
  uint64_t bytes;
  double cpu;
} reader;

static void *read_all(void *arg) {
  reader *r = arg;
  static uint8_t buf[256 * 1024];
  double t0 = cpu_now();
  for (;;) {
    ssize_t n = read(r->fd, buf, sizeof buf);
    if (n <= 0)
      break; /* EOF once the writer shuts down; an error ends the cell too */
    r->bytes += (uint64_t)n;
  }
  r->cpu = cpu_now() - t0;
  return NULL;
}

/* A connected pair: a Unix stream socketpair, or loopback TCP (127.0.0.1, ephemeral
 * port). Returns 0 or -1. */
static int socket_pair(int tcp, int fds[2]) {
  if (!tcp)
    return socketpair(AF_UNIX, SOCK_STREAM, 0, fds);
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  fds[0] = fds[1] = -1;
  if (l >= 0 && !bind(l, (struct sockaddr *)&a, sizeof a) && !listen(l, 1) &&
      !getsockname(l, (struct sockaddr *)&a, &al) &&
      (fds[0] = socket(AF_INET, SOCK_STREAM, 0)) >= 0 &&
      !connect(fds[0], (struct sockaddr *)&a, sizeof a))
    fds[1] = accept(l, NULL, NULL);
  if (l >= 0)
    close(l);
  if (fds[1] < 0 && fds[0] >= 0)
    close(fds[0]);
  return fds[1] < 0 ? -1 : 0;
}

/* Writes `chunk`-byte writes for ~secs of the writer's CPU (at most 16 GiB) while a
 * thread reads them; gives both sides' CPU ns per byte. Returns 0 or -1. */
static int socket_cost(int tcp, size_t chunk, double secs, double *send_ns, double *recv_ns) {
  int fds[2];
  if (socket_pair(tcp, fds))
    return -1;
  reader r = {.fd = fds[1]};
  pthread_t th;
  if (pthread_create(&th, NULL, read_all, &r)) {
    close(fds[0]);
    close(fds[1]);
    return -1;
  }
  uint8_t *buf = calloc(1, chunk);
  uint64_t sent = 0;
  double t0 = cpu_now();
  while (buf && sent < (16ull << 30)) {
    ssize_t n = write(fds[0], buf, chunk);
    if (n <= 0)
      break;
    sent += (uint64_t)n;
    if ((sent / chunk) % 64 == 0 && cpu_now() - t0 >= secs)
      break;
  }
  double cpu = cpu_now() - t0;
  shutdown(fds[0], SHUT_WR);
  pthread_join(th, NULL);
  close(fds[0]);
  close(fds[1]);
  free(buf);
  if (!sent || r.bytes != sent)
    return -1;
  *send_ns = cpu * 1e9 / (double)sent;
  *recv_ns = r.cpu * 1e9 / (double)r.bytes;
  return 0;
}

/* ---- Bytes written by another thread ---------------------------------------------- */

typedef struct handoff {
  uint8_t *region;
  size_t len, block;
  const uint8_t *src;
  sem_t filled, drained;
  int stop;
} handoff;

/* The writer: fills the region block by block (as puts fill record blocks), then hands
 * it over and waits for it back. */
static void *fill_region(void *arg) {
  handoff *h = arg;
  for (;;) {
    sem_wait(&h->drained);
    if (h->stop)
      break;
    for (size_t o = 0; o + h->block <= h->len; o += h->block)
      memcpy(h->region + o, h->src, h->block);
    sem_post(&h->filled);
  }
  return NULL;
}

/* Reader CPU ns per byte to copy, block by block, a region of `len` bytes that another
 * thread has just written. Bounded: ~secs of reader CPU, at most 4096 rounds. Returns
 * a negative value on failure. */
static double handoff_cost(size_t len, size_t block, const uint8_t *src, double secs) {
  handoff h = {.len = len, .block = block, .src = src};
  uint8_t *dst = malloc(block);
  h.region = malloc(len);
  pthread_t th;
  if (!dst || !h.region || sem_init(&h.filled, 0, 0) || sem_init(&h.drained, 0, 0) ||
      pthread_create(&th, NULL, fill_region, &h)) {
    free(dst);
    free(h.region);
    return -1;
  }
  double cpu = 0;
  uint64_t bytes = 0;
  for (int round = 0; round < 4096 && (round < 3 || cpu < secs); round++) {
    sem_post(&h.drained);
    sem_wait(&h.filled);
    double t0 = cpu_now();
    for (size_t o = 0; o + block <= len; o += block) {
      memcpy(dst, h.region + o, block);
      g_sink += dst[block - 1];
    }
    if (round >= 2) { /* the first rounds fault the region in */
      cpu += cpu_now() - t0;
      bytes += len / block * block;
    }
  }
  h.stop = 1;
  sem_post(&h.drained);
  pthread_join(th, NULL);
  sem_destroy(&h.filled);
  sem_destroy(&h.drained);
  free(dst);
  free(h.region);
  return cpu * 1e9 / (double)bytes;
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 0.5;
  if (!(secs > 0 && secs < 60)) {
    fprintf(stderr, "usage: %s [seconds per cell, 0..60]\n", argv[0]);
    return 2;
  }
  static const size_t sizes[] = {100, 1024, 51200, 1048576};
  static const char *size_names[] = {"100 B", "1 KiB", "50 KiB", "1 MiB"};
  enum { NSIZES = 4 };
  struct {
    const char *name;
    void (*op)(ctx *);
    int scale; /* messages of c.len bytes per op */
  } rows[] = {
      {"memcpy", op_memcpy, 1},
      {"MD5 (EVP, reused ctx)", op_md5, 1},
      {kp_md5_many_vectorised() ? "MD5, 16 messages side by side (kp_md5_many, AVX-512)"
                                : "MD5, 16 messages side by side (kp_md5_many: no AVX-512F, "
                                  "OpenSSL one by one)",
       op_md5_many, MANY_SCALE},
      {"SHA-256 (EVP, reused ctx)", op_sha256, 1},
      {"base64 encode (EVP_EncodeBlock)", op_b64enc, 1},
      {"base64 decode (EVP_DecodeBlock)", op_b64dec, 1},
  };
  enum { NROWS = sizeof rows / sizeof rows[0] };

  ctx c = {0};
  size_t max = sizes[NSIZES - 1];
  c.src = malloc(max);
  c.dst = malloc(max / 3 * 4 + 8);
  c.b64 = malloc(max / 3 * 4 + 8);
  c.md = EVP_MD_CTX_new();
  c.md5 = EVP_MD_fetch(NULL, "MD5", NULL);
  c.sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
  if (!c.src || !c.dst || !c.b64 || !c.md || !c.md5 || !c.sha256) {
    fprintf(stderr, "setup failed\n");
    return 1;
  }
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (size_t i = 0; i < max; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    c.src[i] = (uint8_t)x;
  }

  printf("| operation |");
  for (int s = 0; s < NSIZES; s++)
    printf(" %s MB/s | %s ns/B |", size_names[s], size_names[s]);
  printf("\n|---|");
  for (int s = 0; s < NSIZES; s++)
    printf("--:|--:|");
  printf("\n");
  fflush(stdout);
  for (int r = 0; r < NROWS; r++) {
    printf("| %s |", rows[r].name);
    for (int s = 0; s < NSIZES; s++) {
      c.len = sizes[s];
      c.b64_len = (size_t)EVP_EncodeBlock(c.b64, c.src, (int)c.len);
      double per = run(rows[r].op, &c, secs) / rows[r].scale;
      printf(" %.0f | %.3f |", (double)c.len / per / 1e6, per * 1e9 / (double)c.len);
      fflush(stdout);
    }
    printf("\n");
  }

  /* Per-call cost of hashing one 16-byte partition key. */
  struct {
    const char *name;
    void (*op)(ctx *);
  } small[] = {
      {"MD5 16 B key: EVP_DigestInit_ex2/Update/Final, reused ctx", op_md5},
      {"MD5 16 B key: EVP_Digest one-shot (fetched MD)", op_evp_digest_oneshot},
      {"MD5 16 B key: kp_md5 (format/hash_key.c, MD5_Init/Update/Final)", op_kp_md5},
      {"system call that does nothing (getppid)", op_syscall},
  };
  printf("\n| per-call operation | ns/op |\n|---|--:|\n");
  c.len = 16;
  for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
    double per = run(small[i].op, &c, secs);
    printf("| %s | %.1f |\n", small[i].name, per * 1e9);
    fflush(stdout);
  }

  /* The kernel's share: the same bytes through a socket to another thread. */
  static const size_t chunks[] = {1024, 51200, 262144};
  printf("\n| socket (writer and reader threads) | write size | send ns/B | recv ns/B |\n"
         "|---|--:|--:|--:|\n");
  for (int tcp = 0; tcp <= 1; tcp++) {
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
      double sn, rn;
      const char *name = tcp ? "loopback TCP" : "Unix stream";
      if (socket_cost(tcp, chunks[i], secs, &sn, &rn) == 0)
        printf("| %s | %zu | %.3f | %.3f |\n", name, chunks[i], sn, rn);
      else
        printf("| %s | %zu | failed | failed |\n", name, chunks[i]);
      fflush(stdout);
    }
  }

  /* Another thread's fresh bytes, against memcpy's warm ones above. */
  static const size_t regions[] = {256u << 10, 64u << 20};
  printf("\n| copy of 1 KiB blocks another thread has just written | queue | ns/B |\n"
         "|---|--:|--:|\n");
  for (size_t i = 0; i < sizeof regions / sizeof regions[0]; i++) {
    double ns = handoff_cost(regions[i], 1024, c.src, secs);
    if (ns >= 0)
      printf("| the reader's CPU | %zu KiB | %.3f |\n", regions[i] >> 10, ns);
    else
      printf("| the reader's CPU | %zu KiB | failed |\n", regions[i] >> 10);
    fflush(stdout);
  }

  EVP_MD_free((EVP_MD *)c.md5);
  EVP_MD_free((EVP_MD *)c.sha256);
  EVP_MD_CTX_free(c.md);
  free(c.src);
  free(c.dst);
  free(c.b64);
  return g_sink == 0xFFFFFFFFu ? 1 : 0;
}
