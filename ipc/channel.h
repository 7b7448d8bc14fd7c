/* A bidirectional framed channel (ipc/frame.h framing) over non-blocking fds on a
 * libev loop: one fd to read, one to write. They may be the same fd (a socketpair end)
 * or two (the KPL's pair of FIFOs).
 *
 * Threading: every function must be called on the thread that runs `loop`, and every
 * callback runs on that thread, from inside ev_run. Callbacks may call any kp_channel_*
 * function on their channel, including kp_channel_free (the free is deferred until the
 * channel's own code has unwound).
 *
 * Writes are batched: kp_channel_send only appends a framed copy to the output buffer;
 * the buffer is written just before the loop next polls (an ev_prepare watcher), or at
 * once when a large amount has piled up. An ev_io write watcher runs only while the fd
 * is full. So a burst of small frames sent within one loop iteration costs one write().
 *
 * SIGPIPE: when the write fd is a socket the channel uses send(MSG_NOSIGNAL). For a
 * pipe or FIFO write() would raise SIGPIPE if the reader is gone, so the owning process
 * must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)); the write then fails with EPIPE and
 * the channel reports on_close(-EPIPE). */
#ifndef KP_IPC_CHANNEL_H
#define KP_IPC_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

struct ProtobufCMessage;

typedef struct kp_channel kp_channel;

/* One decoded frame. `payload` is borrowed: valid only during the call (copy it to keep
 * it). Runs on the loop thread. May pause reading, send, shut down or free. */
typedef void (*kp_channel_frame_cb)(kp_channel *ch, const uint8_t *payload, size_t len, void *ud);

/* The channel has stopped, exactly once per channel, on the loop thread. err is 0 for
 * a clean end (peer EOF on a frame boundary, or kp_channel_shutdown finished flushing),
 * a negative kp_frame_err (KP_FRAME_E_TOO_LARGE, KP_FRAME_E_TRUNCATED, ...), or -errno
 * from read/write (-EPIPE, -ECONNRESET, -ENOMEM, ...); see kp_channel_strerror. After
 * it no other callback runs and unsent output is dropped; the owner still calls
 * kp_channel_free (from inside the callback is fine). */
typedef void (*kp_channel_close_cb)(kp_channel *ch, int err, void *ud);

/* Pending output, having exceeded high_watermark, has drained to low_watermark or
 * below: a producer that paused its input may resume. Loop thread. */
typedef void (*kp_channel_drain_cb)(kp_channel *ch, void *ud);

/* Optional. When set, a frame over max_frame does not close the channel: it is
 * reported here with its claimed length (on the loop thread) and its payload is
 * discarded unread. */
typedef void (*kp_channel_oversized_cb)(kp_channel *ch, size_t claimed_len, void *ud);

typedef struct kp_channel_opts {
  int rfd, wfd;                         /* made non-blocking; owned by the channel from now on */
  uint32_t max_frame;                   /* largest payload in either direction; 0 = 11 MiB */
  size_t read_chunk;                    /* bytes per read(); 0 = 64 KiB */
  size_t high_watermark;                /* pending bytes that set the congestion flag; 0 = 8 MiB */
  size_t low_watermark;                 /* drain point for on_drain; 0 = high_watermark / 4 */
  kp_channel_frame_cb on_frame;         /* required */
  kp_channel_close_cb on_close;         /* required */
  kp_channel_drain_cb on_drain;         /* optional */
  kp_channel_oversized_cb on_oversized; /* optional: skip oversized frames */
  void *ud;                             /* passed to every callback, never touched */
} kp_channel_opts;

/* Creates the channel and starts reading. Returns 0 and *out, or -EINVAL (bad fd,
 * missing callback, low > high watermark), -ENOMEM, or -errno from fcntl. On failure
 * the fds are left open and belong to the caller again. */
int kp_channel_new(struct ev_loop *loop, const kp_channel_opts *opts, kp_channel **out);

/* Stops all watchers, closes the fds (once if rfd == wfd), drops unsent output and
 * frees. Never calls a callback. NULL is a no-op. */
void kp_channel_free(kp_channel *ch);

/* Queues one frame (a copy of payload). Returns 0; KP_FRAME_E_TOO_LARGE if len >
 * max_frame; -EPIPE if the channel is closed or shutting down; -ENOMEM. Never blocks
 * and never calls a callback; a write error found here is reported via on_close from
 * the loop. */
int kp_channel_send(kp_channel *ch, const void *payload, size_t len);

/* Same, serializing a protobuf-c message directly into the output buffer. */
int kp_channel_send_pb(kp_channel *ch, const struct ProtobufCMessage *msg);

/* Zero-copy send, for a payload built in place: kp_channel_reserve returns room for up
 * to max_len payload bytes at the end of the output buffer (NULL with *err = -EPIPE as
 * kp_channel_send, or -ENOMEM); the caller writes the payload there and
 * kp_channel_commit(ch, len) frames and queues its first len bytes. The pointer is
 * valid until the commit or the next call on the channel. Every commit ends the
 * reservation; one never committed queues nothing. Commit returns 0, -EINVAL (no
 * reservation, or len > max_len), KP_FRAME_E_TOO_LARGE (len > max_frame: nothing
 * queued) or -EPIPE. */
uint8_t *kp_channel_reserve(kp_channel *ch, size_t max_len, int *err);
int kp_channel_commit(kp_channel *ch, size_t len);

/* Bytes queued but not yet written (headers included). */
size_t kp_channel_pending_bytes(const kp_channel *ch);

/* 1 from the moment pending bytes exceed high_watermark until they drain to
 * low_watermark (when on_drain runs), else 0. Check it after sending to apply
 * backpressure, e.g. kp_channel_pause_read on the channel feeding you. */
int kp_channel_congested(const kp_channel *ch);

/* Stops / restarts delivering frames. Pausing inside on_frame takes effect before the
 * next frame; frames already read stay queued and are delivered after resume. */
void kp_channel_pause_read(kp_channel *ch);
void kp_channel_resume_read(kp_channel *ch);

/* Graceful close: stops reading, writes everything queued, then ends the write side
 * (shutdown(SHUT_WR) on a socket, close() of a separate write fd) so the peer sees EOF
 * after the last frame, then calls on_close(ch, 0) (or with the write error).
 * Returns 0, or -EPIPE if already closed. */
int kp_channel_shutdown(kp_channel *ch);

/* 1 once on_close has run or is about to (the channel is inert), else 0. */
int kp_channel_closed(const kp_channel *ch);

/* Text for any error passed to on_close or returned here: kp_frame_err or -errno. */
const char *kp_channel_strerror(int err);

#endif
