/* The client's side of the shared data file: a sealed memfd, mapped read-write here and
 * read-only by the daemon (producer/shared_data.h), cut into chunks from which records'
 * data get their space. A record sent as PutRecordRef keeps its bytes here from put to
 * result, so they cross no socket and are copied once, by put.
 *
 * Space is taken in 64-byte steps from the current chunk; a chunk goes back to the free
 * list when the last record in it is freed, and the free list is LIFO so the chunk
 * reused next is the one most recently in the caches. A record that outlives its
 * neighbours (retries) holds one chunk, not the whole file. When no chunk is free the
 * caller sends the record through the pipe instead: nothing waits for this pool.
 *
 * Thread safety: alloc and free may be called from any thread (put threads, the I/O
 * thread, the callback thread); alloc takes a mutex, free an atomic decrement (and the
 * mutex only when it empties a chunk). */
#ifndef KP_CLIENT_SHARED_POOL_H
#define KP_CLIENT_SHARED_POOL_H

#include <stddef.h>
#include <stdint.h>

#define KPC_POOL_NONE UINT64_MAX

typedef struct kpc_pool kpc_pool;

/* A pool of at least `size` bytes in chunks of `chunk` bytes (a power of two, a multiple
 * of the page size). The file is sealed against shrinking and growing. Returns NULL with
 * the reason in errstr (no memfd, out of memory). */
kpc_pool *kpc_pool_new(size_t size, size_t chunk, char *errstr, size_t errstr_size);

/* The file's descriptor (close-on-exec; the daemon gets a dup of it) and its size. */
int kpc_pool_fd(const kpc_pool *pool);
size_t kpc_pool_size(const kpc_pool *pool);

/* Space for len bytes (len <= chunk size): its offset in the file, or KPC_POOL_NONE. */
uint64_t kpc_pool_alloc(kpc_pool *pool, size_t len);

/* Where offset is in this process. */
uint8_t *kpc_pool_at(kpc_pool *pool, uint64_t offset);

/* Gives back the space at offset (as returned by kpc_pool_alloc). */
void kpc_pool_free(kpc_pool *pool, uint64_t offset);

/* Chunks in use (holding a record or current), for tests and stats. */
size_t kpc_pool_chunks_used(kpc_pool *pool);

/* Unmaps and closes. Nothing may be allocated from it any more. NULL is a no-op. */
void kpc_pool_destroy(kpc_pool *pool);

#endif
