#include "producer/shared_data.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int kp_shared_data_map(kp_shared_data *sd, int fd, char *errstr, size_t errstr_size) {
  sd->base = NULL;
  sd->size = 0;
  struct stat st;
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0) {
    snprintf(errstr, errstr_size, "fd %d is not a sealable memory file: %s", fd, strerror(errno));
  } else if (!(seals & F_SEAL_SHRINK)) {
    snprintf(errstr, errstr_size, "fd %d is not sealed against shrinking", fd);
  } else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
    snprintf(errstr, errstr_size, "fd %d is not a non-empty regular file", fd);
  } else {
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
      snprintf(errstr, errstr_size, "mmap of %lld bytes: %s", (long long)st.st_size,
               strerror(errno));
    } else {
      sd->base = m;
      sd->size = (size_t)st.st_size;
      close(fd); /* the mapping keeps the file */
      return 0;
    }
  }
  return -1;
}

void kp_shared_data_unmap(kp_shared_data *sd) {
  if (sd->base)
    munmap((void *)sd->base, sd->size);
  sd->base = NULL;
  sd->size = 0;
}
