// KP_TEST_LIBS: kp_producer_core
/* The daemon's side of the shared data file (producer/shared_data.c): only a memfd
 * sealed against shrinking is mapped, and kp_shared_data_at never hands out a byte
 * outside the mapping, whatever offset and length a PutRecordRef claims. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "producer/shared_data.h"

static int memfd_of(size_t size, int seals) {
  int fd = memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, (off_t)size), 0);
  if (seals)
    assert_int_equal(fcntl(fd, F_ADD_SEALS, seals), 0);
  return fd;
}

static void maps_a_sealed_memfd_and_bounds_every_reference(void **state) {
  int fd = memfd_of(8192, F_SEAL_SHRINK | F_SEAL_GROW);
  assert_int_equal(pwrite(fd, "abc", 3, 8189), 3);
  kp_shared_data sd;
  char err[256] = "";
  assert_int_equal(kp_shared_data_map(&sd, fd, err, sizeof err), 0);
  assert_int_equal(fcntl(fd, F_GETFD), -1); /* closed: the mapping keeps the file */
  assert_int_equal(sd.size, 8192);
  const uint8_t *d = kp_shared_data_at(&sd, 8189, 3);
  assert_non_null(d);
  assert_memory_equal(d, "abc", 3);
  assert_non_null(kp_shared_data_at(&sd, 8192, 0)); /* empty, at the very end */
  assert_null(kp_shared_data_at(&sd, 8190, 3));
  assert_null(kp_shared_data_at(&sd, 8193, 0));
  assert_null(kp_shared_data_at(&sd, 1, UINT64_MAX)); /* offset + length wraps */
  assert_null(kp_shared_data_at(&sd, UINT64_MAX, 2));
  kp_shared_data_unmap(&sd);
  assert_null(sd.base);
  assert_null(kp_shared_data_at(&sd, 0, 0)); /* nothing mapped */
}

static void refuses_what_could_shrink_or_is_no_memfd(void **state) {
  kp_shared_data sd;
  char err[256] = "";
  int fd = memfd_of(4096, 0); /* unsealed: the client could truncate it under us */
  assert_int_equal(kp_shared_data_map(&sd, fd, err, sizeof err), -1);
  assert_non_null(strstr(err, "not sealed against shrinking"));
  assert_null(sd.base);
  assert_true(fcntl(fd, F_GETFD) >= 0); /* left open: the caller's to close */
  close(fd);

  int pipefd[2];
  assert_int_equal(pipe(pipefd), 0);
  assert_int_equal(kp_shared_data_map(&sd, pipefd[0], err, sizeof err), -1);
  assert_non_null(strstr(err, "not a sealable memory file"));
  assert_true(fcntl(pipefd[0], F_GETFD) >= 0);
  close(pipefd[0]);
  close(pipefd[1]);

  fd = memfd_of(0, F_SEAL_SHRINK);
  assert_int_equal(kp_shared_data_map(&sd, fd, err, sizeof err), -1);
  assert_non_null(strstr(err, "non-empty"));
  close(fd);
  assert_int_equal(kp_shared_data_map(&sd, 12345, err, sizeof err), -1); /* not open */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(maps_a_sealed_memfd_and_bounds_every_reference),
      cmocka_unit_test(refuses_what_could_shrink_or_is_no_memfd),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
