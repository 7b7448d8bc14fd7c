/* MD5 of many independent buffers at once.
 *
 * MD5 is one long dependency chain per message (~5 cycles per byte here), so one
 * message at a time leaves most of the core idle. Every aggregate carries its own MD5
 * and a PutRecords request holds up to 500 of them: hashed side by side in the 16
 * 32-bit lanes of AVX-512, they cost a fraction of that. OpenSSL has no multi-buffer
 * MD5; where the CPU lacks AVX-512F each buffer goes through OpenSSL in turn.
 * Pure computation, no I/O, safe from any thread. */
#ifndef KP_FORMAT_MD5_MANY_H
#define KP_FORMAT_MD5_MANY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* One message: `len` bytes at `data`; the digest goes to `out`. Or, with `iov` set (and
 * `data` NULL), the `len` bytes that start `skip` bytes into iov[0] and run on through
 * the pieces that follow it: an aggregate whose records' data stays where it is. */
typedef struct kp_md5_job {
  const uint8_t *data;
  size_t len;
  uint8_t *out; /* 16 bytes */
  const struct iovec *iov;
  size_t skip;
} kp_md5_job;

/* Hashes every job; equal to kp_md5 on each. */
void kp_md5_many(const kp_md5_job *jobs, size_t n);

/* Whether kp_md5_many runs its lanes on this CPU (else it runs OpenSSL per job). */
bool kp_md5_many_vectorised(void);

/* For tests and benchmarks: the lanes regardless of n, or OpenSSL per job. Calling
 * the lanes where kp_md5_many_vectorised() is false is undefined. */
void kp_md5_many_lanes(const kp_md5_job *jobs, size_t n);
void kp_md5_many_scalar(const kp_md5_job *jobs, size_t n);

#endif
