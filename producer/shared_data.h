/* The shared data file: a memfd made by our client library and inherited by the daemon,
 * where records sent as PutRecordRef keep their data until their result. The daemon
 * maps it read-only and reads each record's bytes in place, so record data crosses
 * neither the socket nor a copy into the daemon's own record (docs/design.md).
 *
 * Only the client writes it, and only into space no outstanding record holds; the
 * daemon stops reading a record's data before it sends the record's result. */
#ifndef KP_PRODUCER_SHARED_DATA_H
#define KP_PRODUCER_SHARED_DATA_H

#include <stddef.h>
#include <stdint.h>

typedef struct kp_shared_data {
  const uint8_t *base; /* NULL: nothing mapped */
  size_t size;
} kp_shared_data;

/* Maps fd read-only and closes it. The file must be sealed against shrinking
 * (F_SEAL_SHRINK): a client that could truncate it would make a later read of a page
 * past the new end kill the daemon with SIGBUS. Returns 0, or -1 with the reason in
 * errstr; sd is then left unmapped and fd open (the number came from the client: it
 * may be any of the daemon's own descriptors). */
int kp_shared_data_map(kp_shared_data *sd, int fd, char *errstr, size_t errstr_size);

/* The data_len bytes at offset, or NULL when they are not all inside the mapping
 * (or nothing is mapped). */
static inline const uint8_t *kp_shared_data_at(const kp_shared_data *sd, uint64_t offset,
                                               uint64_t data_len) {
  if (!sd->base || offset > sd->size || data_len > sd->size - offset)
    return NULL;
  return sd->base + offset;
}

void kp_shared_data_unmap(kp_shared_data *sd);

#endif
