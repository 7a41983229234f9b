/* Token files, line by line (see tokfile.h). A hand-edited file with a typo
 * must not lock everyone out, nor fail in silence: the other lines are used,
 * and the bad one is told with where it is. */
#include "tokfile.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* One line of f into *buf (grown as needed, up to BR_TOKFILE_LINE_MAX + 1
 * bytes, and NUL-terminated), without its "\n"; *len is its length, which a
 * NUL byte in the line does not end. 1 for a line, 0 at the end of the file,
 * -1 for a line longer than BR_TOKFILE_LINE_MAX (read to its end and dropped: a huge line costs
 * no memory), -2 when out of memory. */
static int read_line(FILE *f, char **buf, size_t *cap, size_t *len) {
  size_t n = 0;
  bool any = false, over = false;
  int c;
  while ((c = getc_unlocked(f)) != EOF) {
    any = true;
    if (c == '\n') break;
    if (n == BR_TOKFILE_LINE_MAX) {
      over = true;
      continue;
    }
    if (n + 1 >= *cap) {
      size_t ncap = *cap ? 2 * *cap : 256;
      if (ncap > BR_TOKFILE_LINE_MAX + 1) ncap = BR_TOKFILE_LINE_MAX + 1;
      char *grown = realloc(*buf, ncap);
      if (!grown) return -2;
      *buf = grown;
      *cap = ncap;
    }
    (*buf)[n++] = (char)c;
  }
  if (!any) return 0;
  if (over) return -1;
  if (!*buf) { /* a first line that is empty */
    if (!(*buf = malloc(256))) return -2;
    *cap = 256;
  }
  (*buf)[n] = 0;
  *len = n;
  return 1;
}

int br_tokfile_read(const char *path, br_warn_fn *warn, void *warn_ud,
                    int (*each)(void *ctx, const br_tokfile_line *l), void *ctx,
                    struct stat *seen, br_error *err) {
  FILE *f = fopen(path, "r");
  if (!f) return br_error_set(err, BR_EIO, "token file %s: %s", path, strerror(errno));
  if (seen && fstat(fileno(f), seen) != 0) memset(seen, 0, sizeof *seen);
  br_tokfile_line l = {.path = path, .warn = warn, .warn_ud = warn_ud};
  char *line = NULL;
  size_t cap = 0, len = 0;
  int r, rc = BR_OK;
  while (rc == BR_OK && (r = read_line(f, &line, &cap, &len)) != 0) {
    l.no++;
    const char *nul = r == 1 ? memchr(line, 0, len) : NULL;
    if (r == -2) {
      rc = br_error_set(err, BR_ENOMEM, "out of memory");
    } else if (r < 0) {
      br_tokfile_skip(&l, 0, "longer than %d bytes", BR_TOKFILE_LINE_MAX);
    } else if (nul) { /* as a C string, only its start would count */
      br_tokfile_skip(&l, (int)(nul - line) + 1, "holds a NUL byte");
    } else {
      while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
        line[--len] = 0;
      l.text = line;
      l.len = len;
      l.rest = line + strspn(line, " \t");
      if (*l.rest && *l.rest != '#') {
        rc = each(ctx, &l);
        if (rc) br_error_set(err, rc, "token file %s:%zu: %s", path, l.no, br_strerror(rc));
      }
    }
  }
  free(line);
  fclose(f);
  return rc;
}

void br_tokfile_skip(const br_tokfile_line *l, int column, const char *fmt, ...) {
  if (!l->warn) return;
  char why[256], at[16] = "", msg[sizeof why + 4200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  for (char *p = why; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
  if (column > 0) snprintf(at, sizeof at, ":%d", column);
  snprintf(msg, sizeof msg, "token file %.4000s:%zu%s: %s; line skipped", l->path, l->no, at,
           why);
  l->warn(l->warn_ud, msg);
}

bool br_tokfile_bad_hex64(const char *h, char *why, size_t size) {
  size_t n = strlen(h), ok = strspn(h, "0123456789abcdefABCDEF");
  unsigned char c = (unsigned char)h[ok];
  if (ok < n && c >= ' ' && c < 0x7f)
    snprintf(why, size, "sha256 is not 64 hex digits (holds '%c')", c);
  else if (ok < n)
    snprintf(why, size, "sha256 is not 64 hex digits (holds byte 0x%02x)", c);
  else if (n != 64)
    snprintf(why, size, "sha256 is not 64 hex digits (%zu of them)", n);
  return ok < n || n != 64;
}
