#include "producer/record.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Quotes user input in an error message: bounded, and printable ASCII only so a log
 * line cannot be broken by it. */
static void quote(char *out, size_t out_size, const char *s, size_t len) {
  size_t max = out_size - 4; /* room for "..." and NUL */
  size_t n = len < max ? len : max;
  for (size_t i = 0; i < n; i++)
    out[i] = (s[i] >= 0x20 && s[i] < 0x7F) ? s[i] : '?';
  if (n < len) {
    memcpy(out + n, "...", 3);
    n += 3;
  }
  out[n] = 0;
}

/* The header is most of a small record's memory: keep it from growing unnoticed. */
_Static_assert(sizeof(kp_record) <= 120, "kp_record header grew past 120 bytes");

static void set_err(char *errstr, size_t size, const char *msg) {
  if (errstr && size)
    snprintf(errstr, size, "%s", msg);
}

/* Bytes after the header: key, hash key, and the data or (shared) a pointer to it. */
static size_t payload_size(size_t pk_len, const char *ehk, size_t ehk_len, size_t data_len,
                           bool shared) {
  return pk_len + 1 + (ehk ? ehk_len + 1 : 0) + (shared ? sizeof(const void *) : data_len);
}

/* Sets the lengths, then copies key, hash key (NULL: none) and data (or, shared, the
 * pointer to it) after the header, where the accessors in record.h say each part
 * lives. */
static void write_payload(kp_record *r, const char *pk, size_t pk_len, const char *ehk,
                          size_t ehk_len, const void *data, size_t data_len, bool shared) {
  r->shed = false;
  r->shared = shared;
  r->pk_len = (uint32_t)pk_len;
  r->has_ehk = ehk != NULL;
  r->ehk_len = ehk ? (uint32_t)ehk_len : 0;
  r->data_len = (uint32_t)data_len;
  char *p = (char *)kp_record_pk(r);
  memcpy(p, pk, pk_len);
  p[pk_len] = 0;
  if (ehk) {
    p = (char *)kp_record_ehk(r);
    memcpy(p, ehk, ehk_len);
    p[ehk_len] = 0;
  }
  uint8_t *after = (uint8_t *)kp_record_pk(r) + pk_len + 1 + (ehk ? ehk_len + 1 : 0);
  if (shared)
    memcpy(after, &data, sizeof data);
  else if (data_len)
    memcpy(after, data, data_len);
}

static kp_record *record_new(uint64_t source_id, uint32_t stream, const char *pk, size_t pk_len,
                             const char *ehk, size_t ehk_len, const void *data, size_t data_len,
                             bool shared, size_t max_data, double now, double max_buffered_s,
                             double ttl_s, char *errstr, size_t errstr_size) {
  char msg[160];
  if (!pk || pk_len == 0) {
    set_err(errstr, errstr_size, "partition key is empty, must be 1 to 256 characters");
    return NULL;
  }
  /* Counted in full (the frame is already in memory) so the message gives the length. */
  size_t bad = 0;
  long chars = kp_utf8_count(pk, pk_len, &bad);
  if (chars < 0) {
    snprintf(msg, sizeof msg, "partition key is not valid UTF-8 (byte %zu)", bad);
    set_err(errstr, errstr_size, msg);
    return NULL;
  }
  if (chars > KP_RECORD_PK_MAX_CHARS) {
    snprintf(msg, sizeof msg, "partition key is %ld characters, limit is %d", chars,
             KP_RECORD_PK_MAX_CHARS);
    set_err(errstr, errstr_size, msg);
    return NULL;
  }
  kp_hash_key hk = {{0}};
  if (ehk) {
    if (kp_hash_key_parse(ehk, ehk_len, &hk) != 0) {
      char q[48];
      quote(q, sizeof q, ehk, ehk_len);
      snprintf(msg, sizeof msg, "explicit hash key \"%s\" is not a decimal integer in 0..2^128-1",
               q);
      set_err(errstr, errstr_size, msg);
      return NULL;
    }
  } else {
    ehk_len = 0; /* MD5(pk) later, if needed: kp_record_hash_key */
  }
  if (data_len > max_data || data_len > UINT32_MAX) {
    snprintf(msg, sizeof msg, "data is %zu bytes, limit is %zu", data_len,
             max_data < UINT32_MAX ? max_data : (size_t)UINT32_MAX);
    set_err(errstr, errstr_size, msg);
    return NULL;
  }
  if (data_len && !data) {
    set_err(errstr, errstr_size, "data is NULL");
    return NULL;
  }

  kp_record *r = malloc(sizeof(kp_record) + payload_size(pk_len, ehk, ehk_len, data_len, shared));
  if (!r) {
    set_err(errstr, errstr_size, "out of memory");
    return NULL;
  }
  memset(r, 0, sizeof *r);
  r->attempts = &r->first_attempt;
  r->cap_attempts = 1;
  write_payload(r, pk, pk_len, ehk, ehk_len, data, data_len, shared);
  r->source_id = source_id;
  r->stream = stream;
  r->hash_key = hk;
  r->hash_known = ehk != NULL;
  r->arrival = now;
  r->last_attempt_end = now;
  r->expiry = now + ttl_s;
  r->deadline = now + max_buffered_s;
  if (r->expiry < r->deadline)
    r->deadline = r->expiry;
  return r;
}

kp_record *kp_record_new(uint64_t source_id, uint32_t stream, const char *pk, size_t pk_len,
                         const char *ehk, size_t ehk_len, const void *data, size_t data_len,
                         size_t max_data, double now, double max_buffered_s, double ttl_s,
                         char *errstr, size_t errstr_size) {
  return record_new(source_id, stream, pk, pk_len, ehk, ehk_len, data, data_len, false, max_data,
                    now, max_buffered_s, ttl_s, errstr, errstr_size);
}

kp_record *kp_record_new_shared(uint64_t source_id, uint32_t stream, const char *pk, size_t pk_len,
                                const char *ehk, size_t ehk_len, const void *data, size_t data_len,
                                size_t max_data, double now, double max_buffered_s, double ttl_s,
                                char *errstr, size_t errstr_size) {
  return record_new(source_id, stream, pk, pk_len, ehk, ehk_len, data, data_len, true, max_data,
                    now, max_buffered_s, ttl_s, errstr, errstr_size);
}

struct kp_record_arena {
  size_t live; /* records not yet freed or unshed */
  kp_record recs[];
};

/* A header copied to `to`: its inline attempt moves with it. */
static void move_header(kp_record *to, const kp_record *from) {
  memcpy(to, from, sizeof *to);
  if (from->attempts == &from->first_attempt)
    to->attempts = &to->first_attempt;
}

/* Frees the record's block (or its arena share), not its attempts. */
static void release(kp_record *r) {
  if (!r->shed) {
    free(r);
    return;
  }
  kp_record_arena *a = r->arena;
  if (--a->live == 0)
    free(a);
}

kp_record *kp_record_shed_list(kp_record *head, size_t n, kp_record **tail) {
  kp_record_arena *a = n ? malloc(sizeof *a + n * sizeof(kp_record)) : NULL;
  if (!a)
    return head;
  a->live = n;
  kp_record *r = head;
  for (size_t i = 0; i < n; i++) {
    kp_record *next = r->next, *to = &a->recs[i];
    move_header(to, r);
    to->shed = true;
    to->hash_known = false; /* the arena pointer takes the hash key's place */
    to->arena = a;
    to->next = i + 1 < n ? &a->recs[i + 1] : NULL;
    release(r);
    r = next;
  }
  *tail = &a->recs[n - 1];
  return &a->recs[0];
}

kp_record *kp_record_unshed(kp_record *s, const char *pk, size_t pk_len, const char *ehk,
                            size_t ehk_len, const void *data, size_t data_len) {
  kp_record *r = malloc(sizeof *r + payload_size(pk_len, ehk, ehk_len, data_len, false));
  if (!r)
    return NULL;
  move_header(r, s);
  r->next = NULL;
  write_payload(r, pk, pk_len, ehk, ehk_len, data, data_len, false);
  /* The arena pointer took the hash key's place: parsed again from the EHK (valid: it
   * was at arrival, and a strict de-aggregation checks it), else MD5(pk) when needed. */
  r->hash_known = ehk && kp_hash_key_parse(ehk, ehk_len, &r->hash_key) == 0;
  release(s);
  return r;
}

void kp_record_free(kp_record *r) {
  if (!r)
    return;
  for (uint16_t i = 0; i < r->n_attempts; i++) {
    free(r->attempts[i].error_code);
    free(r->attempts[i].error_message);
  }
  if (r->attempts != &r->first_attempt)
    free(r->attempts);
  release(r);
}

void kp_record_free_list(kp_record *head) {
  while (head) {
    kp_record *next = head->next;
    kp_record_free(head);
    head = next;
  }
}

int kp_record_add_attempt(kp_record *r, uint32_t delay_ms, uint32_t duration_ms, bool success,
                          const char *code, const char *message) {
  if (r->n_attempts == UINT16_MAX)
    return -EOVERFLOW;
  if (r->n_attempts == r->cap_attempts) {
    uint32_t cap = r->cap_attempts ? 2u * r->cap_attempts : 2u;
    if (cap > UINT16_MAX)
      cap = UINT16_MAX;
    bool inline_now = r->attempts == &r->first_attempt;
    kp_attempt *a = realloc(inline_now ? NULL : r->attempts, cap * sizeof *a);
    if (!a)
      return -ENOMEM;
    if (inline_now)
      memcpy(a, &r->first_attempt, r->n_attempts * sizeof *a);
    r->attempts = a;
    r->cap_attempts = (uint16_t)cap;
  }
  char *c = code ? strdup(code) : NULL;
  char *m = message ? strdup(message) : NULL;
  if ((code && !c) || (message && !m)) {
    free(c);
    free(m);
    return -ENOMEM;
  }
  kp_attempt *a = &r->attempts[r->n_attempts++];
  a->delay_ms = delay_ms;
  a->duration_ms = duration_ms < (1u << 31) ? duration_ms : (1u << 31) - 1;
  a->success = success;
  a->error_code = c;
  a->error_message = m;
  return 0;
}
