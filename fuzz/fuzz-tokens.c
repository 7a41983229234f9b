/* Token files, as the braid server (http/auth.c) and the depot
 * (xfer/token.c) read them: any bytes load without a crash or a leak, a
 * line the loaders skip never takes another line's token with it, and a
 * check answers. The input is the file (a memfd, named by /proc/self/fd).
 * Each skipped line is told through the warning callback, as one line of
 * printable text. */
#include "fuzz.h"
#include "xfer/xfer_int.h"

#include <braid/http.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define INPUT_MAX (256 * 1024)
/* A token the depot takes on a line of its own, and one the server and the
 * depot both take from the server's line for it (the corpus holds both). */
#define PLAIN "fuzz-token"
#define SERVER "brt_fuzz"

/* A skipped line's report: one line, no control bytes; counted. */
static void told(void *ud, const char *msg) {
  for (const char *p = msg; *p; p++) FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
  FUZZ_CHECK(strstr(msg, "; line skipped") != NULL);
  (*(size_t *)ud)++;
}

/* Whether one line of data (split at "\n", a "\r" before it ignored) is text. */
static bool has_line(const uint8_t *data, size_t size, const char *text) {
  size_t n = strlen(text);
  for (size_t at = 0; at < size;) {
    const uint8_t *nl = memchr(data + at, '\n', size - at);
    size_t end = nl ? (size_t)(nl - data) : size, len = end - at;
    if (len && data[end - 1] == '\r') len--;
    if (len == n && memcmp(data + at, text, n) == 0) return true;
    at = end + 1;
  }
  return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > INPUT_MAX) return 0;
  static char server_line[200];
  if (!server_line[0]) {
    char h[80];
    br_xfer_token_hash(SERVER, h, sizeof h);
    snprintf(server_line, sizeof server_line,
             "{\"id\":\"f1\",\"sha256\":\"%s\",\"role\":\"admin\",\"name\":\"fuzz\"}", h + 7);
  }
  int fd = memfd_create("tokens", MFD_CLOEXEC);
  FUZZ_CHECK(fd >= 0);
  for (size_t done = 0; done < size;) {
    ssize_t w = write(fd, data + done, size - done);
    FUZZ_CHECK(w > 0);
    done += (size_t)w;
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  size_t lines = 0;
  for (size_t i = 0; i < size; i++) lines += data[i] == '\n';
  lines += size && data[size - 1] != '\n';
  bool plain = has_line(data, size, PLAIN), server = has_line(data, size, server_line);

  br_error err;
  br_error_clear(&err);
  br_auth *a = NULL;
  size_t askipped = 0, dskipped = 0;
  int arc = br_auth_open_warn(path, told, &askipped, &a, &err);
  char id[17];
  br_role role = a ? br_auth_check_id(a, SERVER, id) : BR_ROLE_NONE;
  size_t count = a ? br_auth_count(a) : 0;
  br_auth_close(a);
  br_error derr;
  br_error_clear(&derr);
  br_xfer__tokens t;
  int drc = br_xfer__tokens_load(&t, path, told, &dskipped, &derr);
  bool dplain = drc == BR_OK && br_xfer__tokens_check(&t, PLAIN);
  bool dserver = drc == BR_OK && br_xfer__tokens_check(&t, SERVER);
  size_t dn = t.n;
  br_xfer__tokens_free(&t);
  close(fd);

  FUZZ_CHECK(arc == BR_OK); /* any bytes: the file is there */
  FUZZ_CHECK(count + askipped <= lines); /* a line is taken, told or quiet */
  FUZZ_CHECK(dn + dskipped <= lines);
  FUZZ_CHECK(role == BR_ROLE_NONE || strnlen(id, sizeof id) < sizeof id);
  if (server) FUZZ_CHECK(role != BR_ROLE_NONE && dserver);
  if (drc == BR_OK) {
    FUZZ_CHECK(dn >= 1 && dn <= lines);
  } else {
    FUZZ_CHECK(dn == 0 && derr.msg[0] != 0);
  }
  if (plain) FUZZ_CHECK(drc == BR_OK && dplain);
  return 0;
}
