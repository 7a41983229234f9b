/* Removing snapshot versions and collecting the chunks nobody names: what
 * remains still pulls and checks out, numbers are never given twice, young
 * chunks stay, mostly dead packs are rewritten, and a gc running beside
 * pushes never leaves a committed snapshot without its chunks; rm and gc
 * also run remotely, over HTTP, with an admin token. */
#include "farm-util.h"
#include "xfer-util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/wait.h>

/* f/f.NNNN.bgeo for NNNN from first; frame i's bytes drawn from seed + i. */
static void tree(const char *dir, int first, int count, size_t size, uint64_t seed) {
  xu_make_frames(dir, "f/f.%04d.bgeo", first, count, size, seed + (uint64_t)first);
}

static void pull_same(const char *ref, const char *dst, const char *src, br_xfer_opts *o) {
  br_xfer_result res;
  br_error err;
  br_error_clear(&err);
  char *cmd = NULL;
  if (asprintf(&cmd, "rm -rf '%s'", dst) < 0 || system(cmd) != 0) abort();
  free(cmd);
  int rc = br_xfer_pull(ref, dst, o, &res, &err);
  if (rc) br_test_fail(__FILE__, __LINE__, "pull %s: %s", ref, err.msg);
  CHECK_EQ_INT(xu_tree_diff(src, dst), 0);
}

static void fsck_ok(const char *root) {
  br_error err;
  int64_t n = 0;
  if (br_depot_fsck(root, &n, &err)) br_test_fail(__FILE__, __LINE__, "fsck: %s", err.msg);
}

TEST(rm_then_gc_frees_only_what_nobody_names) {
  xu_case tc;
  xu_case_start(&tc, "xfer-gc-basic", "shot/fx");
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  char *a = xu_path(tc.tmp, "a"), *b = xu_path(tc.tmp, "b");
  o.chunk_size = 1024 * 1024; /* whole 1 MiB chunks are loose objects, smaller ones packed */
  /* a: 40 small files and a large one; b shares half the small files */
  tree(a, 0, 40, 20000, 1);
  xu_make_file(a, "big.0001.vdb", 2600000, 77);
  tree(b, 20, 40, 20000, 1);
  /* The shared half goes up first, on its own, under a name removed below:
   * how push cuts a tree into bundles (so packs) depends on timing, and a
   * pack mixing v1's own chunks with shared ones is kept while half of it
   * is named. So v1's own chunks are in packs of their own. */
  char *seed = xu_path(tc.tmp, "seed"), *rs = xu_ref(tc.x.url, "seed/x");
  tree(seed, 20, 20, 20000, 1);
  CHECK_EQ_INT(xu_push_ok(seed, rs, &o, NULL), 1);
  CHECK_EQ_INT(xu_push_ok(a, tc.ref, &o, NULL), 1);
  CHECK_EQ_INT(xu_push_ok(b, tc.ref, &o, NULL), 2);
  br_error err;
  CHECK_EQ_INT(br_depot_rm(tc.x.root, "seed/x", 1, &err), BR_OK);
  br_depot_gc_result r;
  /* nothing is unnamed yet */
  CHECK_EQ_INT(br_depot_gc(tc.x.root, 0, false, &r, &err), BR_OK);
  CHECK_EQ_INT(r.snapshots, 2);
  CHECK_EQ_INT(r.objects_removed, 0);
  /* v1 goes; a dry run counts, a gc inside the grace period keeps */
  CHECK_EQ_INT(br_depot_rm(tc.x.root, "shot/fx", 1, &err), BR_OK);
  CHECK_EQ_INT(br_depot_rm(tc.x.root, "shot/fx", 1, &err), BR_ENOTFOUND);
  CHECK_EQ_INT(br_depot_gc(tc.x.root, 0, true, &r, &err), BR_OK);
  int64_t would = r.objects_removed;
  CHECK_EQ_INT(would, 20 + 3); /* 20 small files and the large file's 3 chunks */
  CHECK_EQ_INT(br_depot_gc(tc.x.root, 3600, false, &r, &err), BR_OK);
  CHECK_EQ_INT(r.objects_removed, 0);
  CHECK(r.kept_young >= would);
  CHECK_EQ_INT(br_depot_gc(tc.x.root, 0, false, &r, &err), BR_OK);
  CHECK_EQ_INT(r.objects_removed, would);
  CHECK_EQ_INT(r.bytes_freed, 20 * 20000 + 2600000);
  CHECK_EQ_INT(r.snapshots, 1);
  fsck_ok(tc.x.root);
  /* what remains checks out; v1 is gone for good, by name and number */
  char *r2 = NULL, *r1 = NULL;
  if (asprintf(&r2, "%s@v2", tc.ref) < 0 || asprintf(&r1, "%s@v1", tc.ref) < 0) abort();
  pull_same(r2, tc.dst, b, &o);
  pull_same(tc.ref, tc.dst, b, &o); /* latest is v2 */
  br_xfer_result res;
  CHECK_EQ_INT(br_xfer_pull(r1, tc.dst, &o, &res, &err), BR_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "removed");
  CHECK_EQ_INT(br_depot_rm(tc.x.root, "shot/fx", 2, &err), BR_OK);
  /* never v1 or v2 again; its chunks go up again */
  CHECK_EQ_INT(xu_push_ok(a, tc.ref, &o, NULL), 3);
  pull_same(tc.ref, tc.dst, a, &o);
  CHECK_EQ_INT(br_depot_gc(tc.x.root, 0, false, &r, &err), BR_OK);
  fsck_ok(tc.x.root);
  pull_same(tc.ref, tc.dst, a, &o);
  free(r1);
  free(r2);
  free(rs);
  free(seed);
  free(a);
  free(b);
  xu_case_done(&tc);
}

/* Files of text (zstd shrinks them: they travel and are kept compressed). */
static void text_tree(const char *dir, int first, int count, size_t size, unsigned seed) {
  char *buf = malloc(size);
  for (int i = first; i < first + count; i++) {
    size_t at = 0;
    for (unsigned line = 0; at < size; line++) {
      char l[80];
      int n = snprintf(l, sizeof l, "file %d line %u value %u\n", i, line, (line * seed) % 1000);
      size_t k = (size_t)n < size - at ? (size_t)n : size - at;
      memcpy(buf + at, l, k);
      at += k;
    }
    char rel[48];
    snprintf(rel, sizeof rel, "f/f.%04d.obj", i);
    char *sub = xu_path(dir, "f"), *p = xu_path(dir, rel);
    mkdir(dir, 0755);
    mkdir(sub, 0755);
    xu_write_file(p, buf, size);
    free(sub);
    free(p);
  }
  free(buf);
}

/* The packed objects of the depot at root stored compressed. */
static int compressed_objects(const char *root) {
  char *cmd = NULL;
  if (asprintf(&cmd, "sqlite3 '%s/index.db' 'SELECT count(*) FROM objects WHERE raw > 0'",
               root) < 0)
    abort();
  FILE *f = popen(cmd, "r");
  int n = -1;
  if (!f || fscanf(f, "%d", &n) != 1) n = -1;
  if (f) pclose(f);
  free(cmd);
  return n;
}

static void repack_case(const char *name, bool text) {
  xu_case tc;
  xu_case_start(&tc, name, NULL);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  char *a = xu_path(tc.tmp, "a"), *b = xu_path(tc.tmp, "b");
  if (text) text_tree(a, 0, 60, 10000, 5);
  else tree(a, 0, 60, 10000, 5);
  /* b keeps every sixth of a's 60 files. How push cuts a into bundles (so
   * packs) depends on timing, but bundles are runs of files in order: any
   * pack of three or more files that holds a kept one is mostly dead. (b
   * keeping a's first ten failed when those ten went as a bundle alone.) */
  for (int i = 0; i < 60; i += 6) {
    if (text) text_tree(b, i, 1, 10000, 5);
    else tree(b, i, 1, 10000, 5);
  }
  char *ra = xu_ref(tc.x.url, "a"), *rb = xu_ref(tc.x.url, "b");
  CHECK_EQ_INT(xu_push_ok(a, ra, &o, NULL), 1);
  CHECK_EQ_INT(xu_push_ok(b, rb, &o, NULL), 1);
  CHECK_EQ_INT(compressed_objects(tc.x.root), text ? 60 : 0);
  br_error err;
  br_depot_gc_result r;
  CHECK_EQ_INT(br_depot_rm(tc.x.root, "a", 1, &err), BR_OK);
  CHECK_EQ_INT(br_depot_gc(tc.x.root, 0, false, &r, &err), BR_OK);
  CHECK(r.packs_rewritten >= 1);
  CHECK_EQ_INT(r.objects_removed, 50);
  /* moved as they were kept */
  CHECK_EQ_INT(compressed_objects(tc.x.root), text ? 10 : 0);
  fsck_ok(tc.x.root);
  pull_same(rb, tc.dst, b, &o);
  if (text) { /* a pull that does not ask for zstd gets them inflated */
    br_xfer_opts plain = o;
    plain.compress = false;
    pull_same(rb, tc.dst, b, &plain);
  }
  /* and a second gc has nothing left to do */
  CHECK_EQ_INT(br_depot_gc(tc.x.root, 0, false, &r, &err), BR_OK);
  CHECK_EQ_INT(r.objects_removed, 0);
  CHECK_EQ_INT(r.packs_rewritten, 0);
  pull_same(rb, tc.dst, b, &o);
  free(ra);
  free(rb);
  free(a);
  free(b);
  xu_case_done(&tc);
}

TEST(mostly_dead_packs_are_rewritten) { repack_case("xfer-gc-repack", false); }

TEST(mostly_dead_packs_of_compressed_chunks_are_rewritten) {
  repack_case("xfer-gc-repack-z", true);
}

typedef struct gcloop {
  const char *root;
  int64_t grace;
  int stop; /* atomic loads and stores: the test's thread stops the gc's */
  int runs, failures; /* the gc thread's, read after the join */
  char msg[1024];
} gcloop;

static void *gc_thread(void *arg) {
  gcloop *g = arg;
  while (!__atomic_load_n(&g->stop, __ATOMIC_ACQUIRE)) {
    double t0 = farm_now();
    br_error err;
    br_error_clear(&err);
    br_depot_gc_result r;
    if (br_depot_gc(g->root, g->grace, false, &r, &err) != BR_OK) {
      g->failures++;
      snprintf(g->msg, sizeof g->msg, "%s", err.msg);
    }
    g->runs++;
    /* Often enough to land between pushes' steps, not so often they
     * starve: a pause of at least 20 ms and of 4 times the gc's own run,
     * so the gc is busy at most a fifth of the time and a slower build or
     * machine (ThreadSanitizer, a busy CI host) slows its pace with the
     * pushes'. Under ThreadSanitizer a fixed 20 ms starved every push of
     * the no-grace case (3 runs in 4); 3-7 commits a run are still
     * refused once and sent again under ASan. */
    double took = farm_now() - t0;
    usleep((useconds_t)(took * 4e6 > 20000 ? took * 4e6 : 20000));
  }
  return NULL;
}

/* Pushes that reuse chunks of removed versions while a gc keeps running
 * with the given grace; every committed version must pull complete. */
static void pushes_beside_gc(const char *name, int64_t grace, bool expect_clean) {
  xu_case tc;
  xu_case_start(&tc, name, "loop");
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  o.chunk_size = 1024 * 1024;
  gcloop g = {.root = tc.x.root, .grace = grace};
  pthread_t th;
  CHECK_EQ_INT(pthread_create(&th, NULL, gc_thread, &g), 0);
  int committed = 0, refused = 0;
  for (int round = 0; round < 12; round++) {
    /* each round: half the files of the last round, half new; the last
     * version is removed first, so its chunks are unnamed meanwhile */
    char *cmd = NULL;
    if (asprintf(&cmd, "rm -rf '%s'", tc.src) < 0 || system(cmd) != 0) abort();
    free(cmd);
    tree(tc.src, round * 10, 20, 30000, 99);
    xu_make_file(tc.src, "big.0001.vdb", 2200000 + (size_t)round, 3); /* loose objects too */
    br_error err;
    if (committed) {
      br_depot_rm(tc.x.root, "loop", committed, &err);
    }
    br_xfer_result res;
    br_error_clear(&err);
    int rc = br_xfer_push(tc.src, tc.ref, &o, &res, &err);
    if (rc != BR_OK) {
      /* the only acceptable failure: chunks kept vanishing before the commit */
      CHECK_CONTAINS(err.msg, "kept losing chunks");
      refused++;
      continue;
    }
    committed = (int)res.version;
    char *rv = NULL;
    if (asprintf(&rv, "%s@v%d", tc.ref, committed) < 0) abort();
    pull_same(rv, tc.dst, tc.src, &o);
    free(rv);
  }
  __atomic_store_n(&g.stop, 1, __ATOMIC_RELEASE);
  pthread_join(th, NULL);
  if (g.failures) br_test_fail(__FILE__, __LINE__, "gc failed %d times: %s", g.failures, g.msg);
  CHECK(g.runs > 0);
  CHECK(committed > 0);
  if (expect_clean) CHECK_EQ_INT(refused, 0);
  fsck_ok(tc.x.root);
  xu_case_done(&tc);
}

TEST(gc_with_a_grace_never_touches_a_push_in_progress) {
  pushes_beside_gc("xfer-gc-grace", 3600, true);
}

TEST(gc_without_grace_beside_pushes_never_breaks_a_snapshot) {
  /* No grace at all: chunks of a push not yet committed may go; the
   * commit is then refused, the push sends them again. */
  pushes_beside_gc("xfer-gc-nograce", 0, false);
}

TEST(gc_and_rm_from_the_command_line) {
  xu_case tc;
  xu_case_start(&tc, "xfer-gc-cli", "cli/t");
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  char *a = xu_path(tc.tmp, "a");
  tree(a, 0, 5, 1000, 8);
  CHECK_EQ_INT(xu_push_ok(a, tc.ref, &o, NULL), 1);
  CHECK_EQ_INT(xu_push_ok(a, tc.ref, &o, NULL), 2);
  const char *bin = getenv("BRAID_BIN");
  CHECK(bin != NULL);
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "'%s' depot rm --root '%s' cli/t@v1 > '%s/out' 2>&1", bin,
           tc.x.root, tc.tmp);
  CHECK_EQ_INT(system(cmd), 0);
  snprintf(cmd, sizeof cmd, "'%s' depot rm --root '%s' cli/t@v1 >> '%s/out' 2>&1", bin,
           tc.x.root, tc.tmp);
  CHECK(system(cmd) != 0);
  snprintf(cmd, sizeof cmd, "'%s' depot rm --root '%s' cli/t >> '%s/out' 2>&1", bin,
           tc.x.root, tc.tmp);
  CHECK(WEXITSTATUS(system(cmd)) == 2);
  snprintf(cmd, sizeof cmd, "'%s' depot gc --root '%s' --grace 0 --dry-run >> '%s/out' 2>&1",
           bin, tc.x.root, tc.tmp);
  CHECK_EQ_INT(system(cmd), 0);
  snprintf(cmd, sizeof cmd, "'%s' depot gc --root '%s' --grace 2h >> '%s/out' 2>&1", bin,
           tc.x.root, tc.tmp);
  CHECK_EQ_INT(system(cmd), 0);
  snprintf(cmd, sizeof cmd, "'%s' depot gc --root '%s' --grace soon >> '%s/out' 2>&1", bin,
           tc.x.root, tc.tmp);
  CHECK(WEXITSTATUS(system(cmd)) == 2);
  char *outp = xu_path(tc.tmp, "out");
  char *out = br__read_file(outp, NULL);
  CHECK_CONTAINS(out, "removed cli/t@v1");
  CHECK_CONTAINS(out, "no version 1 of 'cli/t'");
  CHECK_CONTAINS(out, "is not NAME@vN");
  CHECK_CONTAINS(out, "dry run: 1 snapshots name");
  CHECK_CONTAINS(out, "--grace wants a duration");
  free(out);
  free(outp);
  free(a);
  xu_case_done(&tc);
}

/* Runs `braid ARGS` (a shell line after the binary) in tmp; its exit
 * status, and stdout+stderr in *out (the caller frees it). */
static int braid(const char *tmp, char **out, const char *fmt, ...) {
  char args[4096], cmd[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s > cmd.out 2>&1", tmp, farm_bin(), args);
  int st = system(cmd);
  char *p = xu_path(tmp, "cmd.out");
  *out = br__read_file(p, NULL);
  free(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The status of GET /v1/chunk/HEX of the chunk holding the whole of file
 * rel (smaller than a chunk) under dir. */
static int chunk_status(const char *base, const char *dir, const char *rel) {
  char *p = xu_path(dir, rel);
  size_t len = 0;
  char *data = br__read_file(p, &len);
  br_xfer_digest d;
  br_xfer_sha256(data, len, &d);
  char hex[BR_XFER_HEX_LEN + 1], path[128];
  br_xfer_digest_hex(&d, hex);
  snprintf(path, sizeof path, "/v1/chunk/%s", hex);
  br_http_client *c = NULL;
  br_error err;
  CHECK_EQ_INT(br_http_client_open(base, XU_TOKEN, &c, &err), BR_OK);
  char *body = NULL;
  size_t blen = 0;
  int st = br_http_client_get_text(c, path, &body, &blen, NULL, &err);
  br_http_client_close(c);
  free(body);
  free(data);
  free(p);
  return st;
}

#define ADMIN_TOKEN "admin-token-9876543210"

TEST(gc_and_rm_over_http_with_an_admin_token) {
  char *tmp = br_test_tmpdir("xfer-gc-remote");
  setenv("BRAID_CACHE_DIR", tmp, 1);
  /* `braid depot` with an admin token file beside its token file */
  char *tokens = xu_token_file(tmp, "tokens", XU_TOKEN);
  char *admins = xu_token_file(tmp, "admins", ADMIN_TOKEN);
  char *admin_tok = xu_path(tmp, "admin-token");
  xu_write_file(admin_tok, ADMIN_TOKEN "\n", strlen(ADMIN_TOKEN) + 1);
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "exec '%s' depot --root depot --token-file tokens --admin-token-file admins "
           "--listen 127.0.0.1:0",
           farm_bin());
  pid_t depot = farm_spawn(tmp, "depot.out", cmd);
  char *outp = xu_path(tmp, "depot.out");
  int port = 0;
  for (int i = 0; i < 200 && !port; i++) {
    usleep(50000);
    char *o = br_test_slurp(outp);
    const char *c = strstr(o, "127.0.0.1:");
    if (c) port = atoi(c + 10);
    free(o);
  }
  CHECK(port > 0);
  char url[64], base[64];
  snprintf(url, sizeof url, "depot://127.0.0.1:%d", port);
  snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
  /* v1 has files 0..9, v2 files 7..16: files 0..6 are v1's alone. The
   * shared 7..9 go up first under a name removed at once, so v1's own
   * chunks are packed apart from them whatever bundles push cuts (a pack
   * of both would be kept while half named). */
  br_xfer_opts o;
  xu_opts(&o, tmp);
  char *a = xu_path(tmp, "a"), *b = xu_path(tmp, "b"), *dst = xu_path(tmp, "dst");
  char *seed = xu_path(tmp, "seed"), *rs = xu_ref(url, "seed/x"), *droot = xu_path(tmp, "depot");
  tree(a, 0, 10, 3000, 4);
  tree(b, 7, 10, 3000, 4);
  tree(seed, 7, 3, 3000, 4);
  char *ref = xu_ref(url, "remote/fx");
  CHECK_EQ_INT(xu_push_ok(seed, rs, &o, NULL), 1);
  CHECK_EQ_INT(xu_push_ok(a, ref, &o, NULL), 1);
  CHECK_EQ_INT(xu_push_ok(b, ref, &o, NULL), 2);
  br_error serr;
  CHECK_EQ_INT(br_depot_rm(droot, "seed/x", 1, &serr), BR_OK);
  free(seed);
  free(rs);
  free(droot);
  CHECK_EQ_INT(chunk_status(base, a, "f/f.0000.bgeo"), 200);
  char *out = NULL;
  /* a plain token may not: 403, and what to do about it */
  CHECK_EQ_INT(braid(tmp, &out, "depot rm %s remote/fx@v1 --token %s", url, XU_TOKEN), 1);
  CHECK_CONTAINS(out, "HTTP 403");
  CHECK_CONTAINS(out, "--admin-token-file");
  free(out);
  CHECK_EQ_INT(braid(tmp, &out, "depot gc %s --grace 0 --token %s", url, XU_TOKEN), 1);
  CHECK_CONTAINS(out, "HTTP 403");
  free(out);
  CHECK_EQ_INT(braid(tmp, &out, "depot gc %s --token wrong-token", url), 1);
  CHECK_CONTAINS(out, "HTTP 401");
  free(out);
  /* an unknown version is named, and nothing else changes */
  CHECK_EQ_INT(braid(tmp, &out, "depot rm %s remote/fx@v7 --token-file admin-token", url), 1);
  CHECK_CONTAINS(out, "no version 7 of 'remote/fx'");
  free(out);
  CHECK_EQ_INT(braid(tmp, &out, "depot rm %s nosuch@v1 --token-file admin-token", url), 1);
  CHECK_CONTAINS(out, "nosuch");
  free(out);
  CHECK_EQ_INT(braid(tmp, &out, "depot rm %s remote/fx --token-file admin-token", url), 2);
  CHECK_CONTAINS(out, "is not NAME@vN");
  free(out);
  /* the admin token removes v1; a dry run counts, the gc frees v1's own chunks */
  CHECK_EQ_INT(braid(tmp, &out, "depot rm %s remote/fx@v1 --token-file admin-token", url), 0);
  CHECK_CONTAINS(out, "removed remote/fx@v1");
  free(out);
  CHECK_EQ_INT(
      braid(tmp, &out, "depot gc %s --grace 0 --dry-run --token-file admin-token", url), 0);
  CHECK_CONTAINS(out, "dry run: 1 snapshots name 10 chunks; would remove 7 chunks");
  free(out);
  CHECK_EQ_INT(chunk_status(base, a, "f/f.0000.bgeo"), 200);
  CHECK_EQ_INT(braid(tmp, &out, "depot gc http://127.0.0.1:%d/ --grace 0", port), 1); /* no token */
  CHECK_CONTAINS(out, "HTTP 401");
  free(out);
  setenv("BRAID_TOKEN", ADMIN_TOKEN, 1);
  CHECK_EQ_INT(braid(tmp, &out, "depot gc %s --grace 0", url), 0);
  unsetenv("BRAID_TOKEN");
  CHECK_CONTAINS(out, "1 snapshots name 10 chunks; removed 7 chunks");
  free(out);
  for (int i = 0; i < 7; i++) {
    char rel[48];
    snprintf(rel, sizeof rel, "f/f.%04d.bgeo", i);
    CHECK_EQ_INT(chunk_status(base, a, rel), 404); /* v1's alone: gone */
  }
  CHECK_EQ_INT(chunk_status(base, a, "f/f.0007.bgeo"), 200); /* v2 names it too */
  char *r2 = NULL;
  if (asprintf(&r2, "%s@v2", ref) < 0) abort();
  pull_same(r2, dst, b, &o);
  char *root = xu_path(tmp, "depot");
  fsck_ok(root);
  /* --root still works on the depot's machine; a depot that is not there: 75 */
  CHECK_EQ_INT(braid(tmp, &out, "depot gc --root depot --grace 0"), 0);
  CHECK_CONTAINS(out, "removed 0 chunks");
  free(out);
  CHECK_EQ_INT(braid(tmp, &out, "depot gc depot://127.0.0.1:1 --token-file admin-token"), 75);
  free(out);
  CHECK_EQ_INT(braid(tmp, &out, "depot gc depot://127.0.0.1:1/x --token-file admin-token"), 2);
  CHECK_CONTAINS(out, "unexpected 'x' (gc works on the whole depot");
  free(out);
  CHECK_EQ_INT(braid(tmp, &out, "depot gc depot://127.0.0.1:abc --token-file admin-token"), 2);
  CHECK_CONTAINS(out, "not a depot's address");
  free(out);
  CHECK_EQ_INT(braid(tmp, &out, "depot gc --grace 0"), 2);
  CHECK_CONTAINS(out, "needs a depot");
  free(out);
  kill(depot, SIGTERM);
  CHECK_EQ_INT(farm_wait(depot), 0);
  /* a depot without an admin token file takes no admin requests */
  xu_depot x;
  xu_depot_start(&x, tmp);
  CHECK_EQ_INT(braid(tmp, &out, "depot gc %s --token %s", x.url, XU_TOKEN), 1);
  CHECK_CONTAINS(out, "start it with --admin-token-file");
  free(out);
  xu_depot_stop(&x);
  unsetenv("BRAID_CACHE_DIR");
  free(r2);
  free(root);
  free(ref);
  free(a);
  free(b);
  free(dst);
  free(outp);
  free(admin_tok);
  free(tokens);
  free(admins);
  xu_done(tmp);
}

/* Counts of a gc equal field by field (a remote gc fills what a local one does). */
static void gc_same(const br_depot_gc_result *a, const br_depot_gc_result *b) {
  CHECK_EQ_INT(a->snapshots, b->snapshots);
  CHECK_EQ_INT(a->live_chunks, b->live_chunks);
  CHECK_EQ_INT(a->objects_removed, b->objects_removed);
  CHECK_EQ_INT(a->packs_removed, b->packs_removed);
  CHECK_EQ_INT(a->packs_rewritten, b->packs_rewritten);
  CHECK_EQ_INT(a->bytes_freed, b->bytes_freed);
  CHECK_EQ_INT(a->kept_young, b->kept_young);
}

static void *cancel_later(void *arg) {
  usleep(200000);
  __atomic_store_n((volatile sig_atomic_t *)arg, 1, __ATOMIC_RELEASE);
  return NULL;
}

/* The listing's versions, "name@vN" each followed by a space. */
static char *listed(const br_depot_entry *v, size_t n) {
  char *s = calloc(1, 4096);
  if (!s) abort();
  for (size_t i = 0; i < n; i++)
    snprintf(s + strlen(s), 4096 - strlen(s), "%s@v%lld ", v[i].name, (long long)v[i].version);
  return s;
}

TEST(depot_lists_its_versions_on_its_root_and_over_http) {
  xu_case tc;
  xu_case_start(&tc, "xfer-gc-list", NULL);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  xu_make_file(tc.src, "a/one.0001.bgeo", 3000, 1);
  xu_make_file(tc.src, "a/two.0001.bgeo", 5000, 2);
  int64_t t0 = (int64_t)time(NULL);
  const char *names[] = {"shot/a", "shot/a", "shot/b", "shotx", "other"};
  for (size_t i = 0; i < 5; i++) {
    char *r = xu_ref(tc.x.url, names[i]);
    CHECK_EQ_INT(xu_push_ok(tc.src, r, &o, NULL), i == 1 ? 2 : 1);
    free(r);
  }
  br_depot_entry *v = NULL, *w = NULL;
  size_t n = 0, m = 0;
  br_error err;
  br_error_clear(&err);
  /* all, by name then version; a name and those below it, not its siblings */
  CHECK_EQ_INT(br_depot_list(tc.x.root, NULL, false, &v, &n, &err), BR_OK);
  char *s = listed(v, n);
  CHECK_EQ_STR(s, "other@v1 shot/a@v1 shot/a@v2 shot/b@v1 shotx@v1 ");
  free(s);
  CHECK(v[0].time >= t0 - 5 && v[0].time <= (int64_t)time(NULL) + 5);
  CHECK_EQ_INT(v[0].files, -1);
  /* over HTTP, with a token that may only read and write: the same */
  CHECK_EQ_INT(br_xfer_depot_list(tc.x.url, "", false, &o, &w, &m, &err), BR_OK);
  CHECK_EQ_INT(m, n);
  for (size_t i = 0; i < n && i < m; i++) {
    CHECK_EQ_STR(w[i].name, v[i].name);
    CHECK_EQ_INT(w[i].version, v[i].version);
    CHECK_EQ_INT(w[i].time, v[i].time);
  }
  br_depot_list_free(v, n);
  br_depot_list_free(w, m);
  CHECK_EQ_INT(br_xfer_depot_list(tc.x.url, "shot", true, &o, &v, &n, &err), BR_OK);
  s = listed(v, n);
  CHECK_EQ_STR(s, "shot/a@v1 shot/a@v2 shot/b@v1 ");
  free(s);
  CHECK_EQ_INT(v[0].files, 2);
  CHECK_EQ_INT(v[0].bytes, 8000);
  br_depot_list_free(v, n);
  /* a removed version is not listed; an unknown name lists nothing */
  CHECK_EQ_INT(br_depot_rm(tc.x.root, "shot/a", 1, &err), BR_OK);
  CHECK_EQ_INT(br_depot_list(tc.x.root, "shot/a", true, &v, &n, &err), BR_OK);
  s = listed(v, n);
  CHECK_EQ_STR(s, "shot/a@v2 ");
  free(s);
  br_depot_list_free(v, n);
  CHECK_EQ_INT(br_xfer_depot_list(tc.x.url, "nosuch", false, &o, &v, &n, &err), BR_OK);
  CHECK_EQ_INT(n, 0);
  /* no way out of the snapshots, no listing without a token */
  CHECK_EQ_INT(br_depot_list(tc.x.root, "../objects", false, &v, &n, &err), BR_EINVAL);
  CHECK_EQ_INT(br_xfer_depot_list(tc.x.url, "shot/../..", false, &o, &v, &n, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "HTTP 400");
  o.token = "not-a-token";
  CHECK_EQ_INT(br_xfer_depot_list(tc.x.url, NULL, false, &o, &v, &n, &err), BR_EAUTH);
  CHECK_CONTAINS(err.msg, "HTTP 401");
  CHECK_EQ_INT(br_depot_list("/nonexistent-depot", NULL, false, &v, &n, &err), BR_ENOTFOUND);
  xu_case_done(&tc);
}

TEST(depot_rm_and_gc_from_the_library_over_http) {
  char *tmp = br_test_tmpdir("xfer-gc-library");
  xu_depot x;
  xu_depot_start_with(&x, tmp, 0, ADMIN_TOKEN);
  const char *root = x.root, *url = x.url;
  br_error err;
  br_error_clear(&err);
  /* v1 has files 0..9; then 0..6 go and 10..16 come: v2 and v3. The
   * shared 7..9 go up first, alone, under a name removed at once: v1's own
   * chunks are then packed apart from them, whatever bundles push cuts. */
  br_xfer_opts o;
  xu_opts(&o, tmp);
  char *src = xu_path(tmp, "src"), *dst = xu_path(tmp, "dst");
  char *ref = xu_ref(url, "lib/fx");
  char *seed = xu_path(tmp, "seed"), *rs = xu_ref(url, "seed/x");
  tree(seed, 7, 3, 3000, 6);
  CHECK_EQ_INT(xu_push_ok(seed, rs, &o, NULL), 1);
  CHECK_EQ_INT(br_depot_rm(root, "seed/x", 1, &err), BR_OK);
  free(seed);
  free(rs);
  tree(src, 0, 10, 3000, 6);
  CHECK_EQ_INT(xu_push_ok(src, ref, &o, NULL), 1);
  for (int i = 0; i < 7; i++) {
    char rel[48];
    snprintf(rel, sizeof rel, "f/f.%04d.bgeo", i);
    char *p = xu_path(src, rel);
    CHECK_EQ_INT(unlink(p), 0);
    free(p);
  }
  tree(src, 10, 7, 3000, 6);
  for (int v = 2; v <= 3; v++) CHECK_EQ_INT(xu_push_ok(src, ref, &o, NULL), v);
  br_xfer_version v1[] = {{"lib/fx", 1}}, v1_v9[] = {{"lib/fx", 1}, {"lib/fx", 9}},
                  v3[] = {{"lib/fx", 3}};
  bool removed[2] = {true, true};
  br_depot_gc_result r, local;
  /* a plain token may not: 403, and nothing goes */
  CHECK_EQ_INT(br_xfer_depot_rm(url, v1, 1, &o, removed, &err), BR_EAUTH);
  CHECK_CONTAINS(err.msg, "HTTP 403");
  CHECK_CONTAINS(err.msg, "--admin-token-file");
  CHECK(!removed[0]);
  CHECK_EQ_INT(br_xfer_depot_gc(url, 0, true, &o, &r, &err), BR_EAUTH);
  CHECK_CONTAINS(err.msg, "HTTP 403");
  o.token = "not-a-token";
  CHECK_EQ_INT(br_xfer_depot_gc(url, 0, true, &o, &r, &err), BR_EAUTH);
  CHECK_CONTAINS(err.msg, "HTTP 401");
  /* the admin token: an unknown version is named, the others still go */
  o.token = ADMIN_TOKEN;
  CHECK_EQ_INT(br_xfer_depot_rm(url, v1_v9, 2, &o, removed, &err), BR_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "no version 9 of 'lib/fx'");
  CHECK_CONTAINS(err.msg, "HTTP 404");
  CHECK(removed[0]);
  CHECK(!removed[1]);
  CHECK_EQ_INT(br_xfer_depot_rm(url, v1, 1, &o, removed, &err), BR_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "no version 1 of 'lib/fx'");
  CHECK(!removed[0]);
  CHECK_EQ_INT(br_xfer_depot_rm(url, v3, 1, &o, removed, &err), BR_OK);
  CHECK(removed[0]);
  /* a dry run counts what the local one counts; the gc frees v1's own chunks */
  CHECK_EQ_INT(br_xfer_depot_gc(url, 0, true, &o, &r, &err), BR_OK);
  CHECK_EQ_INT(r.snapshots, 1);
  CHECK_EQ_INT(r.live_chunks, 10);
  CHECK_EQ_INT(r.objects_removed, 7);
  CHECK_EQ_INT(br_depot_gc(root, 0, true, &local, &err), BR_OK);
  gc_same(&r, &local);
  CHECK_EQ_INT(br_xfer_depot_gc(url, 3600, false, &o, &r, &err), BR_OK);
  CHECK_EQ_INT(r.objects_removed, 0); /* all young */
  CHECK(r.kept_young >= 7);
  CHECK_EQ_INT(br_xfer_depot_gc(url, 0, false, &o, &r, &err), BR_OK);
  CHECK_EQ_INT(r.objects_removed, 7);
  CHECK_EQ_INT(r.bytes_freed, 7 * 3000);
  CHECK_EQ_INT(br_xfer_depot_gc(url, 0, true, &o, &r, &err), BR_OK);
  CHECK_EQ_INT(r.objects_removed, 0);
  fsck_ok(root);
  /* the depot's log has a line for each change, with the client's address */
  char *log = xu_depot_log(&x);
  CHECK_CONTAINS(log, "lib/fx@v1 committed: 10 files, 30000 bytes (from 127.0.0.1)\n");
  CHECK_CONTAINS(log, "lib/fx@v3 committed: the same as v2 (nothing changed) (from 127.0.0.1)\n");
  CHECK_CONTAINS(log, "lib/fx@v1 removed (from 127.0.0.1)\n");
  CHECK_CONTAINS(log, "lib/fx@v3 removed (from 127.0.0.1)\n");
  CHECK(!strstr(log, "lib/fx@v9"));
  CHECK_CONTAINS(log, "gc --dry-run (grace 0 s), nothing removed: it would remove 7 objects and "
                      "free 21000 bytes; ");
  CHECK_CONTAINS(log, "gc (grace 3600 s): 0 objects removed, 0 bytes freed; packs: 0 removed, 0 "
                      "rewritten; 7 unnamed kept as younger than the grace (from 127.0.0.1)\n");
  /* v1's 7 chunks: in one pack, or two when its first question went
   * before all 10 files were hashed (ASK_WAIT, on a busy machine) */
  CHECK_CONTAINS(log, "gc (grace 0 s): 7 objects removed, 21000 bytes freed; packs: ");
  CHECK_CONTAINS(log, " removed, 0 rewritten; 0 unnamed kept as younger than the grace (from "
                      "127.0.0.1)\n");
  free(log);
  /* a cancel before the call sends nothing: v2 stays (pulled below) */
  volatile sig_atomic_t stop = 1;
  o.cancel = &stop;
  br_xfer_version v2[] = {{"lib/fx", 2}};
  CHECK_EQ_INT(br_xfer_depot_rm(url, v2, 1, &o, removed, &err), BR_ECANCEL);
  CHECK(!removed[0]);
  CHECK_EQ_INT(br_xfer_depot_gc(url, 0, false, &o, &r, &err), BR_ECANCEL);
  o.cancel = NULL;
  char *r2 = NULL;
  if (asprintf(&r2, "%s@v2", ref) < 0) abort();
  pull_same(r2, dst, src, &o);
  /* a cancel during the call: a gc has no time limit, and this "depot"
   * never answers; the call stops waiting at once */
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  CHECK(ls >= 0 && bind(ls, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(ls, 4) == 0 &&
        getsockname(ls, (struct sockaddr *)&sa, &sl) == 0);
  char mute[64];
  snprintf(mute, sizeof mute, "depot://127.0.0.1:%d", ntohs(sa.sin_port));
  stop = 0;
  o.cancel = &stop;
  pthread_t th;
  CHECK_EQ_INT(pthread_create(&th, NULL, cancel_later, (void *)&stop), 0);
  double t0 = farm_now();
  CHECK_EQ_INT(br_xfer_depot_gc(mute, 0, false, &o, &r, &err), BR_ECANCEL);
  CHECK(farm_now() - t0 < 20); /* not the no-limit wait */
  pthread_join(th, NULL);
  close(ls);
  o.cancel = NULL;
  /* refused before asking: not a depot's address, a negative grace */
  CHECK_EQ_INT(br_xfer_depot_gc("depot://127.0.0.1:1/x", 0, true, &o, &r, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "not a depot's address");
  CHECK_EQ_INT(br_xfer_depot_gc(url, -1, true, &o, &r, &err), BR_EINVAL);
  /* a depot that is not there: BR_ENET, try again later */
  xu_depot_stop(&x); /* x.url stays: the address it served */
  CHECK_EQ_INT(br_xfer_depot_rm(url, v1, 1, &o, removed, &err), BR_ENET);
  CHECK(!removed[0]);
  CHECK_EQ_INT(br_xfer_depot_gc(url, 0, false, &o, &r, &err), BR_ENET);
  CHECK_EQ_INT(r.objects_removed, 0);
  free(r2);
  free(ref);
  free(src);
  free(dst);
  xu_done(tmp);
}

TEST(packs_a_crash_left_unindexed_are_collected) {
  /* A crash between a pack's sync and its index commit leaves a pack no
   * entry names. gc removes it once it is an hour old (a depot only looks
   * when it starts); a younger one may be a commit on its way, and stays. */
  xu_case tc;
  xu_case_start(&tc, "xfer-gc-unindexed", "shot/cache");
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  tree(tc.src, 0, 30, 5000, 9);
  CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, NULL), 1);
  char *packs = xu_path(tc.x.root, "packs");
  char *old = xu_path(packs, "cutoffbyacrashaaaaaa.pack");
  char *young = xu_path(packs, "onitswaytoitsindexaa.pack");
  xu_make_file(packs, "cutoffbyacrashaaaaaa.pack", 7000, 1);
  xu_make_file(packs, "onitswaytoitsindexaa.pack", 3000, 2);
  struct timespec two_hours[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
  CHECK(utimensat(AT_FDCWD, old, two_hours, 0) == 0);
  br_error err;
  br_depot_gc_result r;
  CHECK_EQ_INT(br_depot_gc(tc.x.root, 0, true, &r, &err), BR_OK);
  CHECK_EQ_INT(r.packs_removed, 1);
  CHECK_EQ_INT(r.bytes_freed, 7000);
  CHECK(access(old, F_OK) == 0); /* a dry run only counts */
  CHECK_EQ_INT(br_depot_gc(tc.x.root, 0, false, &r, &err), BR_OK);
  CHECK_EQ_INT(r.packs_removed, 1);
  CHECK_EQ_INT(r.objects_removed, 0);
  CHECK(access(old, F_OK) != 0 && errno == ENOENT);
  CHECK(access(young, F_OK) == 0);
  fsck_ok(tc.x.root);
  pull_same(tc.ref, tc.dst, tc.src, &o);
  free(young);
  free(old);
  free(packs);
  xu_case_done(&tc);
}
