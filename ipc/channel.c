#include "ipc/channel.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "ipc/frame.h"

#define KP_CHANNEL_READ_CHUNK (64u * 1024u)
#define KP_CHANNEL_HIGH_WM (8u * 1024u * 1024u)
/* Reads per readiness event: enough to amortise the poll, few enough to stay fair to
 * the loop's other watchers. */
#define KP_CHANNEL_READS_PER_EVENT 16
/* Pending output at which send() writes at once instead of waiting for the end of the
 * loop iteration, so a long burst streams out instead of piling up. */
#define KP_CHANNEL_EAGER_WRITE (256u * 1024u)
/* Output capacity kept after a full drain; more is returned to the allocator. */
#define KP_CHANNEL_KEEP_OUT (1u * 1024u * 1024u)

struct kp_channel {
  struct ev_loop *loop;
  int rfd, wfd;
  int wsock; /* wfd is a socket: send(MSG_NOSIGNAL) instead of write() */
  uint32_t max_frame;
  size_t read_chunk, high_wm, low_wm;
  kp_channel_frame_cb on_frame;
  kp_channel_close_cb on_close;
  kp_channel_drain_cb on_drain;
  kp_channel_oversized_cb on_oversized;
  void *ud;

  ev_io rio, wio;
  ev_prepare flush_w; /* writes queued output just before the loop blocks */
  kp_frame_decoder dec;
  uint8_t *rbuf;
  kp_buf out;
  size_t out_off; /* bytes of `out` already written */
  int werr;       /* write error found inside send(), reported from the loop */
  size_t rsv;     /* payload bytes reserved by kp_channel_reserve */
  int rsv_active; /* a reservation awaits its commit */

  int depth; /* nesting of our own callbacks; free is deferred while > 0 */
  unsigned paused : 1, shutting : 1, closed : 1, dead : 1, congested : 1;
};

const char *kp_channel_strerror(int err) {
  if (err == 0)
    return "success";
  if (err <= -4000 && err > -5000)
    return kp_frame_strerror(err);
  return strerror(-err);
}

static int set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0))
    return -errno;
  return 0;
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void write_cb(struct ev_loop *loop, ev_io *w, int revents);
static void prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents);

int kp_channel_new(struct ev_loop *loop, const kp_channel_opts *o, kp_channel **out) {
  if (!loop || !o || !out || o->rfd < 0 || o->wfd < 0 || !o->on_frame || !o->on_close)
    return -EINVAL;
  size_t high = o->high_watermark ? o->high_watermark : KP_CHANNEL_HIGH_WM;
  size_t low = o->low_watermark ? o->low_watermark : high / 4;
  if (low > high)
    return -EINVAL;
  int rc = set_nonblock(o->rfd);
  if (!rc && o->wfd != o->rfd)
    rc = set_nonblock(o->wfd);
  if (rc)
    return rc;
  struct stat st;
  if (fstat(o->wfd, &st) < 0)
    return -errno;

  kp_channel *ch = calloc(1, sizeof *ch);
  if (!ch)
    return -ENOMEM;
  ch->read_chunk = o->read_chunk ? o->read_chunk : KP_CHANNEL_READ_CHUNK;
  ch->rbuf = malloc(ch->read_chunk);
  if (!ch->rbuf) {
    free(ch);
    return -ENOMEM;
  }
  ch->loop = loop;
  ch->rfd = o->rfd;
  ch->wfd = o->wfd;
  ch->wsock = S_ISSOCK(st.st_mode);
  ch->max_frame = o->max_frame ? o->max_frame : KP_FRAME_MAX_DEFAULT;
  ch->high_wm = high;
  ch->low_wm = low;
  ch->on_frame = o->on_frame;
  ch->on_close = o->on_close;
  ch->on_drain = o->on_drain;
  ch->on_oversized = o->on_oversized;
  ch->ud = o->ud;
  kp_frame_decoder_init(&ch->dec, ch->max_frame);
  kp_frame_decoder_set_skip_oversized(&ch->dec, o->on_oversized != NULL);
  ev_io_init(&ch->rio, read_cb, ch->rfd, EV_READ);
  ev_io_init(&ch->wio, write_cb, ch->wfd, EV_WRITE);
  ev_prepare_init(&ch->flush_w, prepare_cb);
  ch->rio.data = ch->wio.data = ch->flush_w.data = ch;
  ev_io_start(loop, &ch->rio);
  *out = ch;
  return 0;
}

static void stop_watchers(kp_channel *ch) {
  ev_io_stop(ch->loop, &ch->rio);
  ev_io_stop(ch->loop, &ch->wio);
  ev_prepare_stop(ch->loop, &ch->flush_w);
}

static void destroy(kp_channel *ch) {
  kp_frame_decoder_free(&ch->dec);
  kp_buf_free(&ch->out);
  free(ch->rbuf);
  free(ch);
}

void kp_channel_free(kp_channel *ch) {
  if (!ch)
    return;
  if (!ch->dead) {
    ch->dead = 1;
    ch->closed = 1;
    stop_watchers(ch);
    if (ch->wfd >= 0 && ch->wfd != ch->rfd)
      close(ch->wfd);
    if (ch->rfd >= 0)
      close(ch->rfd);
    ch->rfd = ch->wfd = -1;
  }
  if (ch->depth == 0)
    destroy(ch);
}

/* Brackets every watcher callback so that a kp_channel_free from a user callback only
 * marks the channel, and the memory goes when the outermost frame unwinds. */
static void enter(kp_channel *ch) {
  ch->depth++;
}
static void leave(kp_channel *ch) {
  if (--ch->depth == 0 && ch->dead)
    destroy(ch);
}

static int stopped(const kp_channel *ch) {
  return ch->closed || ch->dead;
}

static void close_with(kp_channel *ch, int err) {
  if (stopped(ch))
    return;
  ch->closed = 1;
  stop_watchers(ch);
  ch->on_close(ch, err, ch->ud);
}

size_t kp_channel_pending_bytes(const kp_channel *ch) {
  return ch->out.len - ch->out_off;
}

int kp_channel_congested(const kp_channel *ch) {
  return ch->congested;
}

int kp_channel_closed(const kp_channel *ch) {
  return stopped(ch);
}

/* ---- Read side ------------------------------------------------------------------ */

/* Delivers the frames already fed. Returns 1 if the caller may read more, 0 if it must
 * stop (paused, shutting down, closed or freed by a callback). */
static int dispatch(kp_channel *ch) {
  while (!ch->paused && !ch->shutting && !stopped(ch)) {
    const uint8_t *p;
    size_t len;
    int rc = kp_frame_decoder_next(&ch->dec, &p, &len);
    if (rc == 0)
      return 1;
    if (rc < 0) {
      close_with(ch, rc);
      return 0;
    }
    if (rc == KP_FRAME_SKIPPED) {
      ch->on_oversized(ch, len, ch->ud);
      continue;
    }
    ch->on_frame(ch, p, len, ch->ud);
  }
  return 0;
}

static void pump_read(kp_channel *ch) {
  if (!dispatch(ch)) /* frames left over from before a pause come first */
    return;
  for (int i = 0; i < KP_CHANNEL_READS_PER_EVENT; i++) {
    ssize_t n = read(ch->rfd, ch->rbuf, ch->read_chunk);
    if (n > 0) {
      /* Cannot be BUSY: dispatch() returned 1, so the last chunk is used up. */
      kp_frame_decoder_feed(&ch->dec, ch->rbuf, (size_t)n);
      if (!dispatch(ch) || (size_t)n < ch->read_chunk)
        return; /* a short read means the fd is (nearly) drained; libev will call again */
    } else if (n == 0) {
      close_with(ch, kp_frame_decoder_finish(&ch->dec)); /* 0 or KP_FRAME_E_TRUNCATED */
      return;
    } else if (errno != EINTR) {
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        close_with(ch, -errno);
      return;
    }
  }
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents) {
  kp_channel *ch = w->data;
  enter(ch);
  pump_read(ch);
  leave(ch);
}

void kp_channel_pause_read(kp_channel *ch) {
  if (stopped(ch))
    return;
  ch->paused = 1;
  ev_io_stop(ch->loop, &ch->rio);
}

void kp_channel_resume_read(kp_channel *ch) {
  if (stopped(ch) || ch->shutting || !ch->paused)
    return;
  ch->paused = 0;
  ev_io_start(ch->loop, &ch->rio);
  /* Frames already read will not make the fd readable again: deliver them from the
   * loop rather than from inside this call, which may itself be inside a callback. */
  if (kp_frame_decoder_unread(&ch->dec))
    ev_feed_event(ch->loop, &ch->rio, EV_READ);
}

/* ---- Write side ----------------------------------------------------------------- */

/* Writes as much queued output as the fd takes. Returns 0 when all is written, 1 when
 * the fd is full, or -errno. */
static int write_some(kp_channel *ch) {
  while (ch->out_off < ch->out.len) {
    const uint8_t *p = ch->out.data + ch->out_off;
    size_t n = ch->out.len - ch->out_off;
    ssize_t w = ch->wsock ? send(ch->wfd, p, n, MSG_NOSIGNAL) : write(ch->wfd, p, n);
    if (w > 0) {
      ch->out_off += (size_t)w;
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return 1;
    } else {
      return w < 0 ? -errno : -EIO;
    }
  }
  ch->out.len = ch->out_off = 0;
  if (ch->out.cap > KP_CHANNEL_KEEP_OUT && ch->out.cap > ch->high_wm)
    kp_buf_free(&ch->out);
  return 0;
}

static void finish_shutdown(kp_channel *ch) {
  if (ch->wsock) {
    shutdown(ch->wfd, SHUT_WR);
  } else if (ch->wfd != ch->rfd) {
    close(ch->wfd);
    ch->wfd = -1;
  }
  close_with(ch, 0);
}

/* Loop-side flush: write, arm the write watcher if the fd is full, tell a congested
 * producer when the backlog has drained, and finish a shutdown. */
static void flush(kp_channel *ch) {
  if (ch->werr) {
    close_with(ch, ch->werr);
    return;
  }
  int rc = write_some(ch);
  if (rc < 0) {
    close_with(ch, rc);
    return;
  }
  ev_prepare_stop(ch->loop, &ch->flush_w);
  if (rc == 1)
    ev_io_start(ch->loop, &ch->wio);
  else
    ev_io_stop(ch->loop, &ch->wio);
  if (ch->congested && kp_channel_pending_bytes(ch) <= ch->low_wm) {
    ch->congested = 0;
    if (ch->on_drain) {
      ch->on_drain(ch, ch->ud);
      if (stopped(ch))
        return;
    }
  }
  if (ch->shutting && kp_channel_pending_bytes(ch) == 0)
    finish_shutdown(ch);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents) {
  kp_channel *ch = w->data;
  enter(ch);
  flush(ch);
  leave(ch);
}

static void prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
  kp_channel *ch = w->data;
  enter(ch);
  flush(ch);
  leave(ch);
}

/* Moves the unwritten tail to the front once it is no longer than what was written,
 * so each byte is moved at most once on average and the buffer does not creep. */
static void compact(kp_channel *ch) {
  size_t rest = ch->out.len - ch->out_off;
  if (ch->out_off && rest <= ch->out_off) {
    memmove(ch->out.data, ch->out.data + ch->out_off, rest);
    ch->out.len = rest;
    ch->out_off = 0;
  }
}

static void after_append(kp_channel *ch) {
  if (!ev_is_active(&ch->wio) && kp_channel_pending_bytes(ch) >= KP_CHANNEL_EAGER_WRITE) {
    int rc = write_some(ch);
    if (rc < 0)
      ch->werr = rc; /* no callbacks from inside send(): report from the loop */
    else if (rc == 1)
      ev_io_start(ch->loop, &ch->wio);
  }
  if (kp_channel_pending_bytes(ch) > ch->high_wm)
    ch->congested = 1;
  /* The prepare watcher flushes what is left, reports a write error, or tells a
   * congested producer that an eager write drained everything. */
  if (!ev_is_active(&ch->wio) && !ev_is_active(&ch->flush_w))
    ev_prepare_start(ch->loop, &ch->flush_w);
}

static int send_check(const kp_channel *ch) {
  return stopped(ch) || ch->shutting || ch->werr ? -EPIPE : 0;
}

static int map_frame_err(int rc) {
  if (rc == KP_FRAME_E_NOMEM)
    return -ENOMEM;
  if (rc == KP_FRAME_E_INVAL)
    return -EINVAL;
  return rc;
}

int kp_channel_send(kp_channel *ch, const void *payload, size_t len) {
  ch->rsv_active = 0;
  int rc = send_check(ch);
  if (rc)
    return rc;
  compact(ch);
  rc = kp_frame_append(&ch->out, payload, len, ch->max_frame);
  if (rc)
    return map_frame_err(rc);
  after_append(ch);
  return 0;
}

int kp_channel_send_pb(kp_channel *ch, const struct ProtobufCMessage *msg) {
  ch->rsv_active = 0;
  int rc = send_check(ch);
  if (rc)
    return rc;
  compact(ch);
  rc = kp_frame_append_pb(&ch->out, msg, ch->max_frame);
  if (rc)
    return map_frame_err(rc);
  after_append(ch);
  return 0;
}

uint8_t *kp_channel_reserve(kp_channel *ch, size_t max_len, int *err) {
  ch->rsv_active = 0;
  int rc = send_check(ch);
  if (!rc) {
    compact(ch);
    if (max_len > SIZE_MAX - KP_FRAME_HEADER_SIZE ||
        kp_buf_reserve(&ch->out, KP_FRAME_HEADER_SIZE + max_len))
      rc = -ENOMEM;
  }
  if (rc) {
    if (err)
      *err = rc;
    return NULL;
  }
  ch->rsv = max_len;
  ch->rsv_active = 1;
  return ch->out.data + ch->out.len + KP_FRAME_HEADER_SIZE;
}

int kp_channel_commit(kp_channel *ch, size_t len) {
  int active = ch->rsv_active;
  ch->rsv_active = 0; /* a commit ends the reservation, successful or not */
  if (!active || len > ch->rsv)
    return -EINVAL;
  int rc = send_check(ch);
  if (rc)
    return rc;
  if (len > ch->max_frame)
    return KP_FRAME_E_TOO_LARGE;
  kp_frame_put_header(ch->out.data + ch->out.len, (uint32_t)len);
  ch->out.len += KP_FRAME_HEADER_SIZE + len;
  after_append(ch);
  return 0;
}

int kp_channel_shutdown(kp_channel *ch) {
  if (stopped(ch) || ch->shutting)
    return -EPIPE;
  ch->shutting = 1;
  ev_io_stop(ch->loop, &ch->rio);
  /* flush() from the loop ends the write side once the queue is empty. */
  if (!ev_is_active(&ch->wio))
    ev_prepare_start(ch->loop, &ch->flush_w);
  return 0;
}
