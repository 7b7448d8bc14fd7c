// KP_TEST_LIBS: kp_ipc kp_proto kp_libev
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc/channel.h"
#include "ipc/frame.h"
#include "proto/messages.pb-c.h"

/* One end of a conversation: what it received and how its channel ended. */
typedef struct side {
  kp_channel *ch;
  struct ev_loop *loop;
  uint32_t next_seq; /* frames must arrive in order: seq 0, 1, 2, ... */
  int bad;           /* a frame arrived with the wrong length or content */
  uint64_t bytes;
  int closed, close_err;
  int pause_after; /* pause reading after this many frames (0: never) */
  int drains;
  int free_on_frame; /* kp_channel_free from inside on_frame after this many frames */
  int free_on_close;
  uint8_t *last; /* copy of the last frame, for the protobuf test */
  size_t last_len;
} side;

/* Frame seq's length: mostly small, some zero, every 25th larger than the socket buffer
 * so writes come back partial. */
static size_t len_of(uint32_t seq, size_t big) {
  if (seq % 25 == 24)
    return big + seq;
  if (seq % 11 == 5)
    return 0;
  if (seq % 11 == 6)
    return 3; /* shorter than the sequence number: content check only */
  return 4 + (seq * 37u) % 700;
}

static uint8_t byte_of(uint32_t seq, size_t i) {
  return (uint8_t)(seq * 31u + i * 7u);
}

static void fill(uint8_t *p, uint32_t seq, size_t len) {
  for (size_t i = 0; i < len; i++)
    p[i] = byte_of(seq, i);
  for (size_t i = 0; len >= 4 && i < 4; i++)
    p[i] = (uint8_t)(seq >> (8 * i));
}

static size_t g_big = 1u << 20;

static void on_frame(kp_channel *ch, const uint8_t *p, size_t len, void *ud) {
  side *s = ud;
  ev_break(s->loop, EVBREAK_ONE);
  uint32_t seq = s->next_seq++;
  if (len != len_of(seq, g_big)) {
    s->bad = 1;
  } else {
    for (size_t i = 0; i < len; i++) {
      uint8_t want = i < 4 && len >= 4 ? (uint8_t)(seq >> (8 * i)) : byte_of(seq, i);
      if (p[i] != want) {
        s->bad = 1;
        break;
      }
    }
  }
  s->bytes += len;
  free(s->last);
  s->last = malloc(len ? len : 1);
  memcpy(s->last, p, len);
  s->last_len = len;
  if (s->pause_after && s->next_seq == (uint32_t)s->pause_after)
    kp_channel_pause_read(ch);
  if (s->free_on_frame && s->next_seq == (uint32_t)s->free_on_frame) {
    kp_channel_free(ch);
    s->ch = NULL;
  }
}

static void on_close(kp_channel *ch, int err, void *ud) {
  side *s = ud;
  ev_break(s->loop, EVBREAK_ONE);
  s->closed++;
  s->close_err = err;
  if (s->free_on_close) {
    kp_channel_free(ch);
    s->ch = NULL;
  }
}

static void on_drain(kp_channel *ch, void *ud) {
  side *s = ud;
  ev_break(s->loop, EVBREAK_ONE);
  s->drains++;
}

static kp_channel *open_side(struct ev_loop *loop, int rfd, int wfd, side *s, uint32_t max,
                             size_t high) {
  kp_channel_opts o = {.rfd = rfd,
                       .wfd = wfd,
                       .max_frame = max,
                       .high_watermark = high,
                       .on_frame = on_frame,
                       .on_close = on_close,
                       .on_drain = on_drain,
                       .ud = s};
  kp_channel *ch = NULL;
  assert_int_equal(kp_channel_new(loop, &o, &ch), 0);
  assert_non_null(ch);
  s->ch = ch;
  s->loop = loop;
  return ch;
}

static void small_socketpair(int sv[2]) {
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  int sz = 8192; /* small buffers so that large frames need many partial writes */
  for (int i = 0; i < 2; i++) {
    assert_int_equal(setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz), 0);
    assert_int_equal(setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz), 0);
  }
}

/* Runs the loop until pred holds; a watchdog timer turns a hang into a failure. The
 * callbacks above call ev_break so that an event handled before the loop polls (the
 * channel flushes from an ev_prepare) does not leave EVRUN_ONCE blocked in poll. */
static int g_timed_out;
static void watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  g_timed_out = 1;
  ev_break(loop, EVBREAK_ONE);
}

static void run_until(struct ev_loop *loop, int (*pred)(void *), void *arg) {
  ev_timer wd;
  g_timed_out = 0;
  ev_timer_init(&wd, watchdog_cb, 20.0, 0);
  ev_timer_start(loop, &wd);
  while (!pred(arg) && !g_timed_out)
    ev_run(loop, EVRUN_ONCE);
  ev_timer_stop(loop, &wd);
  assert_false(g_timed_out);
}

typedef struct {
  side *a, *b;
  uint32_t na, nb; /* frames each side must receive */
} pair_goal;

static int both_received(void *arg) {
  pair_goal *g = arg;
  return g->a->next_seq >= g->na && g->b->next_seq >= g->nb;
}

static int both_closed(void *arg) {
  pair_goal *g = arg;
  return g->a->closed && g->b->closed;
}

static void send_seq(kp_channel *ch, uint32_t from, uint32_t to) {
  for (uint32_t seq = from; seq < to; seq++) {
    size_t len = len_of(seq, g_big);
    uint8_t *p = malloc(len ? len : 1);
    assert_non_null(p);
    fill(p, seq, len);
    assert_int_equal(kp_channel_send(ch, p, len), 0);
    free(p);
  }
}

static void exchange_both_ways(struct ev_loop *loop, int afd_r, int afd_w, int bfd_r, int bfd_w) {
  side a = {0}, b = {0};
  open_side(loop, afd_r, afd_w, &a, 0, 0);
  open_side(loop, bfd_r, bfd_w, &b, 0, 0);
  const uint32_t N = 200, M = 130;
  send_seq(a.ch, 0, N);
  send_seq(b.ch, 0, M);
  /* Frames over 256 KiB are written at once; with an 8 KiB socket buffer the write is
   * partial, so data must still be queued here. */
  assert_true(kp_channel_pending_bytes(a.ch) > 0);
  assert_true(kp_channel_pending_bytes(b.ch) > 0);
  pair_goal g = {&a, &b, M, N};
  run_until(loop, both_received, &g);
  assert_int_equal(a.bad, 0);
  assert_int_equal(b.bad, 0);
  assert_int_equal(a.next_seq, M);
  assert_int_equal(b.next_seq, N);
  assert_int_equal(a.closed + b.closed, 0);
  assert_int_equal(kp_channel_pending_bytes(a.ch), 0);
  assert_int_equal(kp_channel_pending_bytes(b.ch), 0);

  /* Graceful close of one side: the other sees EOF on a frame boundary. */
  send_seq(a.ch, N, N + 3);
  assert_int_equal(kp_channel_shutdown(a.ch), 0);
  assert_int_equal(kp_channel_send(a.ch, "x", 1), -EPIPE);
  assert_int_equal(kp_channel_shutdown(a.ch), -EPIPE);
  run_until(loop, both_closed, &g);
  assert_int_equal(b.next_seq, N + 3);
  assert_int_equal(b.bad, 0);
  assert_int_equal(a.close_err, 0);
  assert_int_equal(b.close_err, 0);
  assert_int_equal(a.closed, 1);
  assert_int_equal(b.closed, 1);
  assert_true(kp_channel_closed(a.ch));
  kp_channel_free(a.ch);
  kp_channel_free(b.ch);
  free(a.last);
  free(b.last);
}

static void socketpair_both_ways_on_new_loop(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  assert_non_null(loop);
  int sv[2];
  small_socketpair(sv);
  exchange_both_ways(loop, sv[0], sv[0], sv[1], sv[1]);
  ev_loop_destroy(loop);
}

static void socketpair_both_ways_on_default_loop(void **state) {
  struct ev_loop *loop = EV_DEFAULT;
  int sv[2];
  small_socketpair(sv);
  exchange_both_ways(loop, sv[0], sv[0], sv[1], sv[1]);
}

static int closed1(void *arg) {
  return ((side *)arg)->closed != 0;
}

static void eof_on_frame_boundary_is_clean(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  int sv[2];
  small_socketpair(sv);
  side a = {0};
  open_side(loop, sv[0], sv[0], &a, 0, 0);
  uint8_t f[4 + 4];
  kp_frame_put_header(f, 4);
  /* len_of(0) is 4; write it raw, then hang up. */
  assert_int_equal(len_of(0, g_big), 4);
  fill(f + 4, 0, 4);
  assert_int_equal(write(sv[1], f, sizeof f), (ssize_t)sizeof f);
  close(sv[1]);
  run_until(loop, closed1, &a);
  assert_int_equal(a.next_seq, 1);
  assert_int_equal(a.bad, 0);
  assert_int_equal(a.close_err, 0);
  kp_channel_free(a.ch);
  free(a.last);
  ev_loop_destroy(loop);
}

static void eof_inside_frame_is_truncation(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  int sv[2];
  small_socketpair(sv);
  side a = {0};
  open_side(loop, sv[0], sv[0], &a, 0, 0);
  uint8_t f[6] = {0, 0, 0, 10, 1, 2};
  assert_int_equal(write(sv[1], f, sizeof f), (ssize_t)sizeof f);
  close(sv[1]);
  run_until(loop, closed1, &a);
  assert_int_equal(a.next_seq, 0);
  assert_int_equal(a.close_err, KP_FRAME_E_TRUNCATED);
  assert_string_equal(kp_channel_strerror(a.close_err), kp_frame_strerror(KP_FRAME_E_TRUNCATED));
  kp_channel_free(a.ch);
  ev_loop_destroy(loop);
}

static void oversized_frame_closes_with_error(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  int sv[2];
  small_socketpair(sv);
  side a = {0};
  a.free_on_close = 1; /* also exercises freeing from inside on_close */
  open_side(loop, sv[0], sv[0], &a, 1u << 20, 0);
  uint8_t f[8];
  kp_frame_put_header(f, (1u << 20) + 1);
  memset(f + 4, 0, 4);
  assert_int_equal(write(sv[1], f, sizeof f), (ssize_t)sizeof f);
  run_until(loop, closed1, &a);
  assert_int_equal(a.closed, 1);
  assert_int_equal(a.close_err, KP_FRAME_E_TOO_LARGE);
  assert_null(a.ch);
  /* The channel closed its fd: the peer now sees EOF. */
  char c;
  assert_int_equal(read(sv[1], &c, 1), 0);
  close(sv[1]);
  ev_loop_destroy(loop);
}

static void send_rejects_frames_over_max(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  int sv[2];
  small_socketpair(sv);
  side a = {0};
  open_side(loop, sv[0], sv[0], &a, 16, 0);
  uint8_t p[17] = {0};
  assert_int_equal(kp_channel_send(a.ch, p, 17), KP_FRAME_E_TOO_LARGE);
  assert_int_equal(kp_channel_pending_bytes(a.ch), 0);
  assert_int_equal(kp_channel_send(a.ch, p, 16), 0);
  assert_int_equal(kp_channel_pending_bytes(a.ch), 20);
  kp_channel_free(a.ch);
  close(sv[1]);
  ev_loop_destroy(loop);
}

/* Writing to a socket whose peer is gone must report EPIPE, not raise SIGPIPE (this
 * test leaves SIGPIPE at its default action, which would kill the process). */
static void peer_gone_reports_epipe_without_sigpipe(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  int sv[2];
  small_socketpair(sv);
  side a = {0};
  open_side(loop, sv[0], sv[0], &a, 0, 0);
  /* The peer stops reading but keeps its write side open, so our read side sees no
   * EOF and the write is what fails. */
  assert_int_equal(shutdown(sv[1], SHUT_RD), 0);
  send_seq(a.ch, 0, 5);
  run_until(loop, closed1, &a);
  assert_int_equal(a.close_err, -EPIPE);
  assert_int_equal(kp_channel_send(a.ch, "x", 1), -EPIPE);
  kp_channel_free(a.ch);
  close(sv[1]);
  ev_loop_destroy(loop);
}

static void write_error_found_by_eager_write_is_reported(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  int p1[2], p2[2];
  assert_int_equal(pipe(p1), 0);
  assert_int_equal(pipe(p2), 0);
  side a = {0};
  /* Read from p1 (kept open), write to p2 whose reader is closed. Read side stays quiet
   * so the only way to close is the write error. SIGPIPE is ignored: pipes need it. */
  signal(SIGPIPE, SIG_IGN);
  close(p2[0]);
  open_side(loop, p1[0], p2[1], &a, 0, 0);
  uint8_t *big = calloc(1, 512 * 1024);
  assert_int_equal(kp_channel_send(a.ch, big, 512 * 1024), 0); /* eager write fails */
  assert_int_equal(kp_channel_send(a.ch, big, 1), -EPIPE);
  free(big);
  run_until(loop, closed1, &a);
  assert_int_equal(a.close_err, -EPIPE);
  kp_channel_free(a.ch);
  close(p1[1]);
  ev_loop_destroy(loop);
}

static void two_fifos_style_pipes_both_ways(void **state) {
  signal(SIGPIPE, SIG_IGN); /* required for pipes, see channel.h */
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  int p1[2], p2[2];
  assert_int_equal(pipe(p1), 0);
  assert_int_equal(pipe(p2), 0);
  /* a reads p1, writes p2; b reads p2, writes p1. */
  exchange_both_ways(loop, p1[0], p2[1], p2[0], p1[1]);
  ev_loop_destroy(loop);
}

typedef struct {
  side *s;
  uint32_t n;
} one_goal;

static int received_n(void *arg) {
  one_goal *g = arg;
  return g->s->next_seq >= g->n;
}

static void pause_stops_delivery_and_resume_delivers_the_rest(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  side a = {0};
  a.pause_after = 2;
  open_side(loop, sv[0], sv[0], &a, 0, 0);
  /* Ten frames in one write, so they arrive in one read: the pause must hold the rest
   * back even though they are already in the channel's buffer. */
  kp_buf b = KP_BUF_INIT;
  for (uint32_t seq = 0; seq < 10; seq++) {
    uint8_t tmp[800];
    size_t len = len_of(seq, g_big);
    assert_true(len <= sizeof tmp);
    fill(tmp, seq, len);
    assert_int_equal(kp_frame_append(&b, tmp, len, 0), 0);
  }
  assert_int_equal(write(sv[1], b.data, b.len), (ssize_t)b.len);
  one_goal g = {&a, 2};
  run_until(loop, received_n, &g);
  for (int i = 0; i < 5; i++)
    ev_run(loop, EVRUN_NOWAIT);
  assert_int_equal(a.next_seq, 2);
  kp_channel_resume_read(a.ch);
  g.n = 10;
  run_until(loop, received_n, &g);
  assert_int_equal(a.next_seq, 10);
  assert_int_equal(a.bad, 0);
  assert_int_equal(a.closed, 0);
  kp_buf_free(&b);
  kp_channel_free(a.ch);
  close(sv[1]);
  free(a.last);
  ev_loop_destroy(loop);
}

static int drained(void *arg) {
  return ((side *)arg)->drains > 0;
}

static void congestion_flag_and_drain_callback(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  int sv[2];
  small_socketpair(sv);
  side a = {0}, b = {0};
  open_side(loop, sv[0], sv[0], &a, 0, 64 * 1024);
  open_side(loop, sv[1], sv[1], &b, 0, 0);
  uint32_t seq = 0;
  while (!kp_channel_congested(a.ch) && seq < 1000) {
    send_seq(a.ch, seq, seq + 1);
    seq++;
  }
  assert_true(kp_channel_congested(a.ch));
  assert_true(kp_channel_pending_bytes(a.ch) > 64 * 1024);
  run_until(loop, drained, &a);
  assert_int_equal(a.drains, 1);
  assert_false(kp_channel_congested(a.ch));
  assert_true(kp_channel_pending_bytes(a.ch) <= 16 * 1024);
  one_goal g = {&b, seq};
  run_until(loop, received_n, &g);
  assert_int_equal(b.bad, 0);
  kp_channel_free(a.ch);
  kp_channel_free(b.ch);
  free(b.last);
  ev_loop_destroy(loop);
}

static void free_inside_on_frame_is_deferred(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  side a = {0};
  a.free_on_frame = 3;
  open_side(loop, sv[0], sv[0], &a, 0, 0);
  kp_buf b = KP_BUF_INIT;
  for (uint32_t seq = 0; seq < 6; seq++) {
    uint8_t tmp[800];
    size_t len = len_of(seq, g_big);
    fill(tmp, seq, len);
    assert_int_equal(kp_frame_append(&b, tmp, len, 0), 0);
  }
  assert_int_equal(write(sv[1], b.data, b.len), (ssize_t)b.len);
  one_goal g = {&a, 3};
  run_until(loop, received_n, &g);
  for (int i = 0; i < 3; i++)
    ev_run(loop, EVRUN_NOWAIT);
  assert_int_equal(a.next_seq, 3); /* nothing delivered after the free */
  assert_int_equal(a.closed, 0);   /* and no on_close either */
  assert_null(a.ch);
  kp_buf_free(&b);
  close(sv[1]);
  free(a.last);
  ev_loop_destroy(loop);
}

static void protobuf_message_round_trip(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  side a = {0}, b = {0};
  open_side(loop, sv[0], sv[0], &a, 0, 0);
  open_side(loop, sv[1], sv[1], &b, 0, 0);
  Kpl__Flush fl = KPL__FLUSH__INIT;
  fl.stream_name = "stream";
  Kpl__Message m = KPL__MESSAGE__INIT;
  m.id = 7;
  m.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_FLUSH;
  m.flush = &fl;
  assert_int_equal(kp_channel_send_pb(a.ch, &m.base), 0);
  one_goal g = {&b, 1};
  run_until(loop, received_n, &g);
  Kpl__Message *u = kpl__message__unpack(NULL, b.last_len, b.last);
  assert_non_null(u);
  assert_int_equal(u->id, 7);
  assert_int_equal(u->actual_message_case, KPL__MESSAGE__ACTUAL_MESSAGE_FLUSH);
  assert_string_equal(u->flush->stream_name, "stream");
  kpl__message__free_unpacked(u, NULL);
  kp_channel_free(a.ch);
  kp_channel_free(b.ch);
  free(b.last);
  ev_loop_destroy(loop);
}

/* Frames built in place with reserve/commit arrive like kp_channel_send's, in order
 * with frames sent the other ways; misuse queues nothing. */
static void reserve_commit_builds_frames_in_place(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  int sv[2];
  small_socketpair(sv);
  side a = {0}, b = {0};
  open_side(loop, sv[0], sv[0], &a, 1u << 21, 0);
  open_side(loop, sv[1], sv[1], &b, 1u << 21, 0);
  int err = 0;
  assert_int_equal(kp_channel_commit(a.ch, 0), -EINVAL); /* no reservation */
  const uint32_t N = 120;
  for (uint32_t seq = 0; seq < N; seq++) {
    size_t len = len_of(seq, g_big);
    if (seq % 3 == 1) { /* mixed with ordinary sends */
      uint8_t *p = malloc(len ? len : 1);
      assert_non_null(p);
      fill(p, seq, len);
      assert_int_equal(kp_channel_send(a.ch, p, len), 0);
      free(p);
      continue;
    }
    uint8_t *p = kp_channel_reserve(a.ch, len + 16, &err);
    assert_non_null(p);
    fill(p, seq, len);
    memset(p + len, 0xee, 16); /* reserved but not committed: never sent */
    assert_int_equal(kp_channel_commit(a.ch, len + 17), -EINVAL);
    assert_int_equal(kp_channel_commit(a.ch, len), -EINVAL); /* the failed commit ended it */
    p = kp_channel_reserve(a.ch, len + 16, &err);
    assert_non_null(p);
    fill(p, seq, len);
    assert_int_equal(kp_channel_commit(a.ch, len), 0);
    assert_int_equal(kp_channel_commit(a.ch, len), -EINVAL); /* one commit per reservation */
  }
  /* Over max_frame: nothing queued. A reservation superseded by a send is void. */
  size_t before = kp_channel_pending_bytes(a.ch);
  uint8_t *p = kp_channel_reserve(a.ch, (1u << 21) + 1, &err);
  assert_non_null(p);
  assert_int_equal(kp_channel_commit(a.ch, (1u << 21) + 1), KP_FRAME_E_TOO_LARGE);
  assert_int_equal(kp_channel_pending_bytes(a.ch), before);
  assert_non_null(kp_channel_reserve(a.ch, 10, &err));
  uint8_t tmp[800];
  size_t len = len_of(N, g_big);
  fill(tmp, N, len);
  assert_int_equal(kp_channel_send(a.ch, tmp, len), 0);
  assert_int_equal(kp_channel_commit(a.ch, 0), -EINVAL);
  pair_goal g = {&a, &b, 0, N + 1};
  run_until(loop, both_received, &g);
  assert_int_equal(b.bad, 0);
  assert_int_equal(b.next_seq, N + 1);
  /* After shutdown: -EPIPE, like kp_channel_send. */
  assert_int_equal(kp_channel_shutdown(a.ch), 0);
  err = 0;
  assert_null(kp_channel_reserve(a.ch, 10, &err));
  assert_int_equal(err, -EPIPE);
  kp_channel_free(a.ch);
  kp_channel_free(b.ch);
  free(a.last);
  free(b.last);
  ev_loop_destroy(loop);
}

static void new_rejects_bad_arguments(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  side s = {0};
  kp_channel *ch = NULL;
  kp_channel_opts o = {.rfd = -1, .wfd = -1, .on_frame = on_frame, .on_close = on_close, .ud = &s};
  assert_int_equal(kp_channel_new(loop, &o, &ch), -EINVAL);
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  o.rfd = o.wfd = sv[0];
  o.on_close = NULL;
  assert_int_equal(kp_channel_new(loop, &o, &ch), -EINVAL);
  o.on_close = on_close;
  o.high_watermark = 10;
  o.low_watermark = 11;
  assert_int_equal(kp_channel_new(loop, &o, &ch), -EINVAL);
  assert_null(ch);
  /* On failure the fds still belong to us. */
  assert_true(fcntl(sv[0], F_GETFD) >= 0);
  kp_channel_free(NULL);
  close(sv[0]);
  close(sv[1]);
  ev_loop_destroy(loop);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(socketpair_both_ways_on_new_loop),
      cmocka_unit_test(socketpair_both_ways_on_default_loop),
      cmocka_unit_test(eof_on_frame_boundary_is_clean),
      cmocka_unit_test(eof_inside_frame_is_truncation),
      cmocka_unit_test(oversized_frame_closes_with_error),
      cmocka_unit_test(send_rejects_frames_over_max),
      cmocka_unit_test(peer_gone_reports_epipe_without_sigpipe),
      cmocka_unit_test(pause_stops_delivery_and_resume_delivers_the_rest),
      cmocka_unit_test(congestion_flag_and_drain_callback),
      cmocka_unit_test(free_inside_on_frame_is_deferred),
      cmocka_unit_test(protobuf_message_round_trip),
      cmocka_unit_test(reserve_commit_builds_frames_in_place),
      cmocka_unit_test(new_rejects_bad_arguments),
      /* These ignore SIGPIPE process-wide, so they run last. */
      cmocka_unit_test(write_error_found_by_eager_write_is_reported),
      cmocka_unit_test(two_fifos_style_pipes_both_ways),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
