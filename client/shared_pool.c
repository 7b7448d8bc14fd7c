#include "client/shared_pool.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Each allocation starts on its own cache line: the daemon reads a record while put
 * writes the next one, and a shared line would bounce between the two cores. */
#define KPC_POOL_ALIGN 64u
/* Far above any descriptor the daemon's spawn actions use (3 and 4). */
#define KPC_POOL_FD_MIN 10
#define KPC_POOL_PREFETCH_MAX 4096

typedef struct chunk {
  atomic_size_t refs; /* allocations live in it, + 1 while it is the current chunk */
  size_t next_free;   /* free list link (chunk index) */
} chunk;

struct kpc_pool {
  int fd;
  uint8_t *base;
  size_t size, chunk_size, n_chunks;
  unsigned chunk_shift;
  pthread_mutex_t lock;
  /* under lock */
  size_t cur;      /* current chunk; n_chunks = none */
  size_t cur_used; /* bytes handed out of it */
  size_t free_top; /* free list head; n_chunks = empty */
  size_t in_use;   /* chunks not on the free list */
  chunk *chunks;
};

kpc_pool *kpc_pool_new(size_t size, size_t chunk_size, char *errstr, size_t errstr_size) {
  long page = sysconf(_SC_PAGESIZE);
  if (chunk_size == 0 || (chunk_size & (chunk_size - 1)) || chunk_size % (size_t)page) {
    snprintf(errstr, errstr_size, "chunk size %zu is not a power of two of whole pages",
             chunk_size);
    return NULL;
  }
  size_t n = (size + chunk_size - 1) / chunk_size;
  if (n == 0)
    n = 1;
  kpc_pool *p = calloc(1, sizeof *p);
  chunk *c = calloc(n, sizeof *c);
  if (!p || !c) {
    free(p);
    free(c);
    snprintf(errstr, errstr_size, "out of memory");
    return NULL;
  }
  p->chunks = c;
  p->n_chunks = n;
  p->chunk_size = chunk_size;
  p->size = n * chunk_size;
  while (((size_t)1 << p->chunk_shift) < chunk_size)
    p->chunk_shift++;
  p->fd = -1;
  int fd = memfd_create("kinesis_producer-data", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  const char *what = "memfd_create";
  if (fd >= 0) {
    /* Out of the way of the descriptors the daemon is spawned with. */
    p->fd = fcntl(fd, F_DUPFD_CLOEXEC, KPC_POOL_FD_MIN);
    close(fd);
    what = "fcntl";
  }
  /* Pages are allocated as they are first written, so the size is only a ceiling. */
  if (p->fd < 0 || (what = "ftruncate", ftruncate(p->fd, (off_t)p->size) != 0) ||
      (what = "sealing", fcntl(p->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) ||
      (what = "mmap", (p->base = mmap(NULL, p->size, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd,
                                      0)) == MAP_FAILED)) {
    snprintf(errstr, errstr_size, "shared data file: %s: %s", what, strerror(errno));
    p->base = NULL;
    kpc_pool_destroy(p);
    return NULL;
  }
  pthread_mutex_init(&p->lock, NULL);
  for (size_t i = 0; i < n; i++)
    c[i].next_free = i + 1; /* n, the last one's, ends the list */
  p->free_top = 0;
  p->cur = n;
  return p;
}

int kpc_pool_fd(const kpc_pool *pool) {
  return pool->fd;
}

size_t kpc_pool_size(const kpc_pool *pool) {
  return pool->size;
}

/* Under lock: chunk i holds nothing any more. */
static void push_free(kpc_pool *p, size_t i) {
  p->chunks[i].next_free = p->free_top;
  p->free_top = i;
  p->in_use--;
}

uint64_t kpc_pool_alloc(kpc_pool *p, size_t len) {
  size_t need = (len + KPC_POOL_ALIGN - 1) & ~(size_t)(KPC_POOL_ALIGN - 1);
  if (need == 0)
    need = KPC_POOL_ALIGN;
  if (need > p->chunk_size)
    return KPC_POOL_NONE;
  pthread_mutex_lock(&p->lock);
  if (p->cur == p->n_chunks || p->chunk_size - p->cur_used < need) {
    if (p->cur != p->n_chunks && atomic_fetch_sub(&p->chunks[p->cur].refs, 1) == 1)
      push_free(p, p->cur); /* its records were all freed while it was current */
    p->cur = p->n_chunks;
    if (p->free_top == p->n_chunks) {
      pthread_mutex_unlock(&p->lock);
      return KPC_POOL_NONE;
    }
    p->cur = p->free_top;
    p->free_top = p->chunks[p->cur].next_free;
    p->in_use++;
    p->cur_used = 0;
    atomic_store(&p->chunks[p->cur].refs, 1);
  }
  uint64_t off = ((uint64_t)p->cur << p->chunk_shift) + p->cur_used;
  p->cur_used += need;
  /* The file cycles through MaxOutstandingBytes, so the bytes put is about to write were
   * last touched long ago, often by the daemon's core: ask for them (and for the next
   * record's, if it is as big) now, so the copy and the lock after it do not wait. */
  if (need <= KPC_POOL_PREFETCH_MAX) { /* bigger copies stream; the wait is amortised */
    size_t ahead = p->chunk_size - p->cur_used < need ? 0 : need;
    const uint8_t *at = p->base + off;
    for (size_t k = 0; k < need + ahead; k += 64)
      __builtin_prefetch(at + k, 1, 3);
  }
  atomic_fetch_add_explicit(&p->chunks[p->cur].refs, 1, memory_order_relaxed);
  pthread_mutex_unlock(&p->lock);
  return off;
}

uint8_t *kpc_pool_at(kpc_pool *p, uint64_t offset) {
  return p->base + offset;
}

void kpc_pool_free(kpc_pool *p, uint64_t offset) {
  size_t i = (size_t)(offset >> p->chunk_shift);
  /* acq_rel: the chunk's bytes are done with before anyone can be handed them again */
  if (atomic_fetch_sub_explicit(&p->chunks[i].refs, 1, memory_order_acq_rel) != 1)
    return;
  pthread_mutex_lock(&p->lock);
  push_free(p, i);
  pthread_mutex_unlock(&p->lock);
}

size_t kpc_pool_chunks_used(kpc_pool *p) {
  pthread_mutex_lock(&p->lock);
  size_t n = p->in_use;
  pthread_mutex_unlock(&p->lock);
  return n;
}

void kpc_pool_destroy(kpc_pool *p) {
  if (!p)
    return;
  if (p->base) {
    munmap(p->base, p->size);
    pthread_mutex_destroy(&p->lock);
  }
  if (p->fd >= 0)
    close(p->fd);
  free(p->chunks);
  free(p);
}
