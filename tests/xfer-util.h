/* Helpers shared by the tests/test-xfer-*.c files (header only: the test
 * build compiles one .c per test). A real depot on 127.0.0.1 with an
 * ephemeral port, real files in a temporary directory, tree comparison. */
#ifndef BR_TEST_XFER_UTIL_H
#define BR_TEST_XFER_UTIL_H

#include "fs.h"
#include "harness.h"

#include <braid/xfer.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define XU_UNUSED __attribute__((unused))
#define XU_TOKEN "test-token-0123456789"

typedef struct xu_depot {
  br_depot *d;
  char *root;
  char *tokens;
  char *admins;  /* its admin token file, or NULL */
  char url[128]; /* "depot://127.0.0.1:PORT" */
  int port;
  pthread_mutex_t log_mu; /* the depot's change log (br_depot_opts.log): */
  char log[16384];        /* its lines, as long as they fit (xu_depot_log) */
  size_t log_len;
} xu_depot;

XU_UNUSED static char *xu_path(const char *a, const char *b) {
  char *p = NULL;
  if (asprintf(&p, "%s/%s", a, b) < 0) abort();
  return p;
}

XU_UNUSED static void xu_write_file(const char *path, const void *data, size_t len) {
  char *dir = strdup(path);
  char *slash = strrchr(dir, '/');
  if (slash) {
    *slash = 0;
    char *cmd = NULL;
    if (asprintf(&cmd, "mkdir -p '%s'", dir) < 0) abort();
    if (system(cmd) != 0) abort();
    free(cmd);
  }
  free(dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  CHECK(fd >= 0);
  CHECK(write(fd, data, len) == (ssize_t)len);
  close(fd);
}

/* Deterministic pseudo-random bytes (xorshift), so trees are reproducible. */
XU_UNUSED static void xu_fill(uint8_t *buf, size_t len, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    buf[i] = (uint8_t)(x >> 24);
  }
}

XU_UNUSED static void xu_make_file(const char *dir, const char *rel, size_t len,
                                   uint64_t seed) {
  uint8_t *b = malloc(len ? len : 1);
  xu_fill(b, len, seed);
  char *p = xu_path(dir, rel);
  xu_write_file(p, b, len);
  free(p);
  free(b);
}

/* A file of len bytes that compresses (about 3 to 1 with zstd): words of
 * a small vocabulary, drawn from seed, as a cache's ASCII would be. */
XU_UNUSED static void xu_make_text_file(const char *dir, const char *rel, size_t len,
                                        uint64_t seed) {
  static const char *const words[] = {"point", "prim", "vertex", "detail", "P", "Cd",
                                      "v", "pscale", "id", "age", "life", "N"};
  uint8_t *b = malloc(len ? len : 1);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < len;) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const char *w = words[(x >> 20) % 12];
    char num[24];
    int k = snprintf(num, sizeof num, " %s %u.%u\n", w, (unsigned)(x >> 40) % 1000,
                     (unsigned)(x >> 8) % 100);
    for (int j = 0; j < k && i < len; j++) b[i++] = (uint8_t)num[j];
  }
  char *p = xu_path(dir, rel);
  xu_write_file(p, b, len);
  free(p);
  free(b);
}

/* n files of len bytes under dir named by pattern (a printf format of one
 * int) for first, first + 1, ...; file k's bytes drawn from seed + k. */
XU_UNUSED static void xu_make_frames(const char *dir, const char *pattern, int first, int n,
                                     size_t len, uint64_t seed) {
  for (int i = 0; i < n; i++) {
    char rel[256];
    snprintf(rel, sizeof rel, pattern, first + i);
    xu_make_file(dir, rel, len, seed + (uint64_t)i);
  }
}

/* Frees a test's directory name; the harness removes the directory when
 * the test passes (a failed one's files are kept to look at). */
XU_UNUSED static void xu_done(char *tmp) { free(tmp); /* the harness removes it */ }

/* A depot's token file dir/name: token's hash (a depot keeps no tokens). */
XU_UNUSED static char *xu_token_file(const char *dir, const char *name, const char *token) {
  char line[128];
  br_xfer_token_hash(token, line, sizeof line);
  strcat(line, "\n");
  char *p = xu_path(dir, name);
  xu_write_file(p, line, strlen(line));
  return p;
}

/* A depot on tmp/depot taking XU_TOKEN; cache: its pack cache's size (0:
 * the default, negative: none); admin: a token that may also rm and gc
 * over HTTP (NULL: none). */
XU_UNUSED static void xu_depot_logged(void *ud, const char *msg) {
  xu_depot *x = ud;
  pthread_mutex_lock(&x->log_mu);
  x->log_len += (size_t)snprintf(x->log + x->log_len, sizeof x->log - x->log_len, "%s\n", msg);
  if (x->log_len >= sizeof x->log) x->log_len = sizeof x->log - 1;
  pthread_mutex_unlock(&x->log_mu);
}

/* A copy of the depot's change log so far (the caller frees it). */
XU_UNUSED static char *xu_depot_log(xu_depot *x) {
  pthread_mutex_lock(&x->log_mu);
  char *s = strndup(x->log, x->log_len);
  pthread_mutex_unlock(&x->log_mu);
  if (!s) abort();
  return s;
}

XU_UNUSED static void xu_depot_start_with(xu_depot *x, const char *tmp, int64_t cache,
                                          const char *admin) {
  memset(x, 0, sizeof *x);
  pthread_mutex_init(&x->log_mu, NULL);
  x->root = xu_path(tmp, "depot");
  x->tokens = xu_token_file(tmp, "tokens", XU_TOKEN);
  if (admin) x->admins = xu_token_file(tmp, "admins", admin);
  br_depot_opts o;
  memset(&o, 0, sizeof o);
  o.root = x->root;
  o.listen = "127.0.0.1:0";
  o.token_file = x->tokens;
  o.admin_token_file = x->admins;
  o.cache = cache;
  o.log = xu_depot_logged;
  o.log_ud = x;
  br_error err;
  br_error_clear(&err);
  int rc = br_depot_start(&o, &x->d, &err);
  if (rc) fprintf(stderr, "depot: %s\n", err.msg);
  CHECK_EQ_INT(rc, BR_OK);
  x->port = br_depot_port(x->d);
  snprintf(x->url, sizeof x->url, "depot://127.0.0.1:%d", x->port);
}

XU_UNUSED static void xu_depot_start_cache(xu_depot *x, const char *tmp, int64_t cache) {
  xu_depot_start_with(x, tmp, cache, NULL);
}

XU_UNUSED static void xu_depot_start(xu_depot *x, const char *tmp) {
  xu_depot_start_with(x, tmp, 0, NULL);
}

XU_UNUSED static void xu_depot_stop(xu_depot *x) {
  br_depot_stop(x->d);
  pthread_mutex_destroy(&x->log_mu);
  free(x->root);
  free(x->tokens);
  free(x->admins);
}

XU_UNUSED static char *xu_ref(const char *base, const char *name) {
  char *p = NULL;
  if (asprintf(&p, "%s/%s", base, name) < 0) abort();
  return p;
}

/* What most tests start with and end with, made and undone in one call
 * each: the test's temporary folder, a depot in it, and the paths a push
 * goes from and a pull goes to. */
typedef struct xu_case {
  char *tmp;       /* br_test_tmpdir's folder (the harness removes it) */
  xu_depot x;      /* on tmp/depot */
  char *src, *dst; /* tmp/src and tmp/dst, not made */
  char *ref;       /* x.url/refname, or NULL when given no refname */
} xu_case;

/* cache: the depot's pack cache, as xu_depot_start_cache takes it. */
XU_UNUSED static void xu_case_start_cache(xu_case *c, const char *tmpname, const char *refname,
                                          int64_t cache) {
  c->tmp = br_test_tmpdir(tmpname);
  xu_depot_start_cache(&c->x, c->tmp, cache);
  c->src = xu_path(c->tmp, "src");
  c->dst = xu_path(c->tmp, "dst");
  c->ref = refname ? xu_ref(c->x.url, refname) : NULL;
}

XU_UNUSED static void xu_case_start(xu_case *c, const char *tmpname, const char *refname) {
  xu_case_start_cache(c, tmpname, refname, 0);
}

XU_UNUSED static void xu_case_done(xu_case *c) {
  free(c->src), free(c->dst), free(c->ref);
  xu_depot_stop(&c->x);
  xu_done(c->tmp);
}

/* Options for tests: a private hash cache, small chunks, quick retries. */
XU_UNUSED static void xu_opts(br_xfer_opts *o, const char *tmp) {
  br_xfer_opts_init(o);
  o->token = XU_TOKEN;
  static char cache[600];
  snprintf(cache, sizeof cache, "%s/hashcache.db", tmp);
  o->cache_path = cache;
  o->chunk_size = 256 * 1024;
  o->small_file = 64 * 1024;
  o->bundle_bytes = 256 * 1024;
  o->backoff_ms = 10;
  o->retries = 8;
  o->timeout_s = 5;
}

/* A push (src to ref) or a pull (ref into dst) that must succeed: else the
 * test fails at the caller's line with the error's message. res may be
 * NULL. Returns the version committed or checked out. */
#define xu_push_ok(src, ref, o, res) \
  xu_xfer_ok_at(__FILE__, __LINE__, "push", br_xfer_push, src, ref, ref, o, res)
#define xu_pull_ok(ref, dst, o, res) \
  xu_xfer_ok_at(__FILE__, __LINE__, "pull", br_xfer_pull, ref, dst, ref, o, res)
XU_UNUSED static int64_t xu_xfer_ok_at(const char *file, int line, const char *what,
                                       int (*run)(const char *, const char *,
                                                  const br_xfer_opts *, br_xfer_result *,
                                                  br_error *),
                                       const char *from, const char *to, const char *ref,
                                       const br_xfer_opts *o, br_xfer_result *res) {
  br_xfer_result own;
  if (!res) res = &own;
  br_error err;
  br_error_clear(&err);
  if (run(from, to, o, res, &err) != BR_OK) br_test_fail(file, line, "%s %s: %s", what, ref, err.msg);
  return res->version;
}

/* 0 when the trees hold the same regular files (content and mode), dirs and
 * symlinks; ignores braid's partial files. Prints the first difference. */
XU_UNUSED static int xu_tree_diff(const char *a, const char *b) {
  char *cmd = NULL;
  if (asprintf(&cmd, "diff -r --no-dereference -x '.braid-partial-*' '%s' '%s' >&2", a, b) < 0)
    abort();
  int rc = system(cmd);
  free(cmd);
  return rc;
}

/* Counts entries under dir whose name starts with prefix (recursively). */
XU_UNUSED static int xu_count_prefix(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    if (!strncmp(de->d_name, prefix, strlen(prefix))) n++;
    char *p = xu_path(dir, de->d_name);
    struct stat st;
    if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) n += xu_count_prefix(p, prefix);
    free(p);
  }
  closedir(d);
  return n;
}

#endif
