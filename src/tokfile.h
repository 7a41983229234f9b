/* Token files, line by line: the server's (src/http/auth.c) and the depot's
 * (src/xfer/token.c) share how a line is read and how a line that cannot be
 * used is told; each decides what a line means. Inside libbraid only. */
#ifndef BR_TOKFILE_H
#define BR_TOKFILE_H

#include <braid/error.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>

#define BR_TOKFILE_LINE_MAX 65536 /* bytes in a line, without its end */
#define BR_TOKFILE_TOKEN_MAX 512  /* bytes in a token a check takes */

/* One line that is not blank nor a # comment. */
typedef struct br_tokfile_line {
  const char *path;
  size_t no;        /* 1-based */
  const char *text; /* NUL-terminated, holds no other NUL; its end ("\n",
                     * "\r", trailing blanks) cut off */
  size_t len;
  const char *rest; /* text after its leading blanks */
  br_warn_fn *warn; /* may be NULL: nobody is told */
  void *warn_ud;
} br_tokfile_line;

/* Reads path and calls each for every line that is not blank nor a comment.
 * A line over BR_TOKFILE_LINE_MAX bytes (never held in memory) or holding a
 * NUL byte is told through warn and skipped. each returns BR_OK, or an error
 * code that stops the read (out of memory, say). seen (may be NULL) gets the
 * file's stat as opened. */
int br_tokfile_read(const char *path, br_warn_fn *warn, void *warn_ud,
                    int (*each)(void *ctx, const br_tokfile_line *l), void *ctx,
                    struct stat *seen, br_error *err);

/* Tells, through l->warn, "token file PATH:LINE[:COLUMN]: WHY; line
 * skipped" (column 0: none). Control bytes in WHY become '?', so the report
 * is one line whatever the file holds. */
void br_tokfile_skip(const br_tokfile_line *l, int column, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* False when h is 64 hex digits; else true, with why it is not in why. */
bool br_tokfile_bad_hex64(const char *h, char *why, size_t size);

#endif
