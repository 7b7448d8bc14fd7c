#include "format/cbor_walk.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <cbor.h>

/* libcbor's streaming decoder reports one item head (or whole definite string) per call
 * through callbacks that cannot return a status, so each callback only records what it
 * saw in `ev`; the loop in kp_cbor_walk then does the bookkeeping and error checks. */
enum ev_kind { EV_NONE, EV_ITEM, EV_BREAK, EV_TAG, EV_BAD };

struct level_state {
  bool is_map;
  bool indef;
  bool want_key; /* maps: the next item is a key */
  uint64_t left; /* definite: children (arrays) or pairs (maps) still to come */
};

struct walk {
  enum ev_kind ev;
  kp_cbor_item it;
  const char *bad; /* EV_BAD: why */
  int depth;       /* containers open */
  struct level_state st[KP_CBOR_MAX_DEPTH];
  kp_cbor_level lv[KP_CBOR_MAX_DEPTH];
};

static void item(struct walk *w, kp_cbor_type t, const uint8_t *p, size_t len, uint64_t u) {
  w->ev = EV_ITEM;
  w->it = (kp_cbor_item){.type = t, .p = p, .len = len, .u = u};
}

static void on_u8(void *c, uint8_t v) {
  item(c, KP_CBOR_UINT, NULL, 0, v);
}
static void on_u16(void *c, uint16_t v) {
  item(c, KP_CBOR_UINT, NULL, 0, v);
}
static void on_u32(void *c, uint32_t v) {
  item(c, KP_CBOR_UINT, NULL, 0, v);
}
static void on_u64(void *c, uint64_t v) {
  item(c, KP_CBOR_UINT, NULL, 0, v);
}
static void on_n8(void *c, uint8_t v) {
  item(c, KP_CBOR_NEGINT, NULL, 0, v);
}
static void on_n16(void *c, uint16_t v) {
  item(c, KP_CBOR_NEGINT, NULL, 0, v);
}
static void on_n32(void *c, uint32_t v) {
  item(c, KP_CBOR_NEGINT, NULL, 0, v);
}
static void on_n64(void *c, uint64_t v) {
  item(c, KP_CBOR_NEGINT, NULL, 0, v);
}
static void on_bytes(void *c, cbor_data p, size_t n) {
  item(c, KP_CBOR_BYTES, p, n, 0);
}
static void on_text(void *c, cbor_data p, size_t n) {
  item(c, KP_CBOR_TEXT, p, n, 0);
}
static void on_indef_string(void *c) {
  struct walk *w = c;
  w->ev = EV_BAD;
  w->bad = "indefinite-length string";
}
static void on_array(void *c, size_t n) {
  item(c, KP_CBOR_ARRAY, NULL, 0, n);
}
static void on_indef_array(void *c) {
  item(c, KP_CBOR_ARRAY, NULL, 0, UINT64_MAX);
}
static void on_map(void *c, size_t n) {
  item(c, KP_CBOR_MAP, NULL, 0, n);
}
static void on_indef_map(void *c) {
  item(c, KP_CBOR_MAP, NULL, 0, UINT64_MAX);
}
static void on_tag(void *c, uint64_t v) {
  ((struct walk *)c)->ev = EV_TAG;
}
static void on_f(void *c, float v) {
  item(c, KP_CBOR_OTHER, NULL, 0, 0);
}
static void on_d(void *c, double v) {
  item(c, KP_CBOR_OTHER, NULL, 0, 0);
}
static void on_simple(void *c) {
  item(c, KP_CBOR_OTHER, NULL, 0, 0);
}
static void on_bool(void *c, bool v) {
  item(c, KP_CBOR_OTHER, NULL, 0, v);
}
static void on_break(void *c) {
  ((struct walk *)c)->ev = EV_BREAK;
}

static const struct cbor_callbacks callbacks = {
    .uint8 = on_u8,
    .uint16 = on_u16,
    .uint32 = on_u32,
    .uint64 = on_u64,
    .negint8 = on_n8,
    .negint16 = on_n16,
    .negint32 = on_n32,
    .negint64 = on_n64,
    .byte_string = on_bytes,
    .byte_string_start = on_indef_string,
    .string = on_text,
    .string_start = on_indef_string,
    .array_start = on_array,
    .indef_array_start = on_indef_array,
    .map_start = on_map,
    .indef_map_start = on_indef_map,
    .tag = on_tag,
    .float2 = on_f,
    .float4 = on_f,
    .float8 = on_d,
    .undefined = on_simple,
    .null = on_simple,
    .boolean = on_bool,
    .indef_break = on_break,
};

static int fail(char *errstr, size_t errlen, const char *fmt, ...) {
  if (errstr && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, errlen, fmt, ap);
    va_end(ap);
  }
  return -EBADMSG;
}

/* A value at the current depth is complete: advance the parent, closing every definite
 * container that this completes. Returns the callback's non-zero value, else 0. */
static int complete(struct walk *w, kp_cbor_fn fn, void *ud) {
  while (w->depth > 0) {
    int d = w->depth - 1;
    struct level_state *s = &w->st[d];
    w->lv[d].index++;
    if (s->is_map) {
      s->want_key = true;
      w->lv[d].key = NULL;
      w->lv[d].key_len = 0;
    }
    if (s->indef || --s->left > 0)
      return 0;
    w->depth--;
    kp_cbor_item end = {.type = KP_CBOR_END, .depth = d};
    int rc = fn(ud, &end, w->lv);
    if (rc)
      return rc;
  }
  return 0;
}

bool kp_cbor_key_is(const kp_cbor_level *level, int d, const char *lit) {
  size_t n = strlen(lit);
  return level[d].key && level[d].key_len == n && memcmp(level[d].key, lit, n) == 0;
}

int kp_cbor_walk(const uint8_t *buf, size_t len, kp_cbor_fn fn, void *ud, char *errstr,
                 size_t errlen) {
  struct walk w = {.depth = 0};
  size_t off = 0;
  bool done = false;
  if (!len)
    return fail(errstr, errlen, "empty CBOR body");
  while (!done) {
    if (off >= len)
      return fail(errstr, errlen, "CBOR truncated at byte %zu", off);
    w.ev = EV_NONE;
    struct cbor_decoder_result r = cbor_stream_decode(buf + off, len - off, &callbacks, &w);
    if (r.status == CBOR_DECODER_NEDATA)
      return fail(errstr, errlen, "CBOR truncated at byte %zu", off);
    if (r.status != CBOR_DECODER_FINISHED || w.ev == EV_NONE)
      return fail(errstr, errlen, "malformed CBOR at byte %zu", off);
    size_t at = off;
    off += r.read;
    if (w.ev == EV_BAD)
      return fail(errstr, errlen, "%s at byte %zu (not supported)", w.bad, at);
    if (w.ev == EV_TAG)
      continue;
    int d = w.depth;
    if (w.ev == EV_BREAK) {
      if (d == 0 || !w.st[d - 1].indef || (w.st[d - 1].is_map && !w.st[d - 1].want_key))
        return fail(errstr, errlen, "unexpected CBOR break at byte %zu", at);
      w.depth--;
      kp_cbor_item end = {.type = KP_CBOR_END, .depth = d - 1};
      int rc = fn(ud, &end, w.lv);
      if (!rc)
        rc = complete(&w, fn, ud);
      if (rc)
        return rc;
      done = w.depth == 0;
      continue;
    }
    if (d > 0 && w.st[d - 1].is_map && w.st[d - 1].want_key) {
      if (w.it.type != KP_CBOR_TEXT)
        return fail(errstr, errlen, "CBOR map key at byte %zu is not a text string", at);
      w.lv[d - 1].key = w.it.p;
      w.lv[d - 1].key_len = w.it.len;
      w.st[d - 1].want_key = false;
      continue;
    }
    w.it.depth = d;
    int rc = fn(ud, &w.it, w.lv);
    if (rc)
      return rc;
    if (w.it.type == KP_CBOR_ARRAY || w.it.type == KP_CBOR_MAP) {
      bool indef = w.it.u == UINT64_MAX;
      if (!indef && w.it.u == 0) {
        kp_cbor_item end = {.type = KP_CBOR_END, .depth = d};
        if ((rc = fn(ud, &end, w.lv)) || (rc = complete(&w, fn, ud)))
          return rc;
        done = w.depth == 0;
        continue;
      }
      if (d >= KP_CBOR_MAX_DEPTH)
        return fail(errstr, errlen, "CBOR nested deeper than %d at byte %zu", KP_CBOR_MAX_DEPTH,
                    at);
      bool is_map = w.it.type == KP_CBOR_MAP;
      w.st[d] = (struct level_state){
          .is_map = is_map, .indef = indef, .want_key = is_map, .left = w.it.u};
      w.lv[d] = (kp_cbor_level){.is_map = is_map};
      w.depth++;
      continue;
    }
    if ((rc = complete(&w, fn, ud)))
      return rc;
    done = w.depth == 0;
  }
  if (off != len)
    return fail(errstr, errlen, "%zu trailing bytes after the CBOR item", len - off);
  return 0;
}
