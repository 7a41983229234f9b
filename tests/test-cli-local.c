/* The local commands through the real braid binary (run, validate, status,
 * tasks, show, log, movie): what they print, where, and their exit status,
 * on small graphs written by each test. */
#include <braid/store.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static const char *braid_bin(void) {
  const char *b = getenv("BRAID_BIN");
  return b ? b : "braid";
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return strdup("");
  char *buf = calloc(1, 1 << 20);
  size_t n = fread(buf, 1, (1 << 20) - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

static void put(const char *dir, const char *name, const char *text) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  fputs(text, f);
  fclose(f);
}

/* What one braid command did. */
typedef struct cres {
  int code;
  char *out, *err;
} cres;

static void cres_free(cres *r) {
  free(r->out);
  free(r->err);
}

/* Runs `braid ARGS` (ARGS as printf makes them, shell words) in dir, stdin
 * from /dev/null; its stdout and stderr are kept in dir/.out and dir/.err. */
static cres braid(const char *dir, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static cres braid(const char *dir, const char *fmt, ...) {
  char args[4096], cmd[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(cmd, sizeof cmd, "cd '%s' && exec '%s' %s </dev/null >.out 2>.err", dir,
           braid_bin(), args);
  cres r = {0};
  int st = system(cmd);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  char path[1024];
  snprintf(path, sizeof path, "%s/.out", dir);
  r.out = slurp(path);
  snprintf(path, sizeof path, "%s/.err", dir);
  r.err = slurp(path);
  return r;
}

/* ---- error messages ---- */

TEST(missing_task_error_has_no_stale_location) {
  char *dir = br_test_tmpdir("cli-show-missing");
  put(dir, "g.json", "{\"name\":\"g\",\"nodes\":[{\"name\":\"a\",\"type\":\"null\"}]}");
  cres r = braid(dir, "run g.json --quiet");
  CHECK_EQ_INT(r.code, 0);
  cres_free(&r);
  r = braid(dir, "show 999 --json");
  CHECK_EQ_INT(r.code, 1);
  CHECK_EQ_STR(r.err, "braid: no task 999\n");
  cres_free(&r);
  r = braid(dir, "show 999");
  CHECK_EQ_STR(r.err, "braid: no task 999\n");
  cres_free(&r);
  free(dir);
}
