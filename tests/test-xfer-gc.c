/* Removing snapshot versions and collecting the chunks nobody names: what
 * remains still pulls and checks out, numbers are never given twice, young
 * chunks stay, mostly dead packs are rewritten, and a gc running beside
 * pushes never leaves a committed snapshot without its chunks. */
#include "xfer-util.h"

#include <pthread.h>
#include <sys/wait.h>

static void tree(const char *dir, int first, int count, size_t size, uint64_t seed) {
  for (int i = first; i < first + count; i++) {
    char rel[48];
    snprintf(rel, sizeof rel, "f/f.%04d.bgeo", i);
    xu_make_file(dir, rel, size, seed + (uint64_t)i);
  }
}

static void push_ok(const char *src, const char *ref, br_xfer_opts *o, int64_t want) {
  br_xfer_result res;
  br_error err;
  br_error_clear(&err);
  int rc = br_xfer_push(src, ref, o, &res, &err);
  if (rc) br_test_fail(__FILE__, __LINE__, "push %s: %s", ref, err.msg);
  if (want) CHECK_EQ_INT(res.version, want);
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
  char *tmp = br_test_tmpdir("xfer-gc-basic");
  xu_depot x;
  xu_depot_start(&x, tmp);
  br_xfer_opts o;
  xu_opts(&o, tmp);
  char *a = xu_path(tmp, "a"), *b = xu_path(tmp, "b"), *dst = xu_path(tmp, "dst");
  char *ref = xu_ref(x.url, "shot/fx");
  o.chunk_size = 1024 * 1024; /* whole 1 MiB chunks are loose objects, smaller ones packed */
  /* a: 40 small files and a large one; b shares half the small files */
  tree(a, 0, 40, 20000, 1);
  xu_make_file(a, "big.0001.vdb", 2600000, 77);
  tree(b, 20, 40, 20000, 1);
  push_ok(a, ref, &o, 1);
  push_ok(b, ref, &o, 2);
  br_error err;
  br_depot_gc_result r;
  /* nothing is unnamed yet */
  CHECK_EQ_INT(br_depot_gc(x.root, 0, false, &r, &err), BR_OK);
  CHECK_EQ_INT(r.snapshots, 2);
  CHECK_EQ_INT(r.objects_removed, 0);
  /* v1 goes; a dry run counts, a gc inside the grace period keeps */
  CHECK_EQ_INT(br_depot_rm(x.root, "shot/fx", 1, &err), BR_OK);
  CHECK_EQ_INT(br_depot_rm(x.root, "shot/fx", 1, &err), BR_ENOTFOUND);
  CHECK_EQ_INT(br_depot_gc(x.root, 0, true, &r, &err), BR_OK);
  int64_t would = r.objects_removed;
  CHECK_EQ_INT(would, 20 + 3); /* 20 small files and the large file's 3 chunks */
  CHECK_EQ_INT(br_depot_gc(x.root, 3600, false, &r, &err), BR_OK);
  CHECK_EQ_INT(r.objects_removed, 0);
  CHECK(r.kept_young >= would);
  CHECK_EQ_INT(br_depot_gc(x.root, 0, false, &r, &err), BR_OK);
  CHECK_EQ_INT(r.objects_removed, would);
  CHECK_EQ_INT(r.bytes_freed, 20 * 20000 + 2600000);
  CHECK_EQ_INT(r.snapshots, 1);
  fsck_ok(x.root);
  /* what remains checks out; v1 is gone for good, by name and number */
  char *r2 = NULL, *r1 = NULL;
  if (asprintf(&r2, "%s@v2", ref) < 0 || asprintf(&r1, "%s@v1", ref) < 0) abort();
  pull_same(r2, dst, b, &o);
  pull_same(ref, dst, b, &o); /* latest is v2 */
  br_xfer_result res;
  CHECK_EQ_INT(br_xfer_pull(r1, dst, &o, &res, &err), BR_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "removed");
  CHECK_EQ_INT(br_depot_rm(x.root, "shot/fx", 2, &err), BR_OK);
  push_ok(a, ref, &o, 3); /* never v1 or v2 again; its chunks go up again */
  pull_same(ref, dst, a, &o);
  CHECK_EQ_INT(br_depot_gc(x.root, 0, false, &r, &err), BR_OK);
  fsck_ok(x.root);
  pull_same(ref, dst, a, &o);
  free(r1);
  free(r2);
  free(ref);
  free(a);
  free(b);
  free(dst);
  xu_depot_stop(&x);
  xu_done(tmp);
}

TEST(mostly_dead_packs_are_rewritten) {
  char *tmp = br_test_tmpdir("xfer-gc-repack");
  xu_depot x;
  xu_depot_start(&x, tmp);
  br_xfer_opts o;
  xu_opts(&o, tmp);
  o.bundle_bytes = 8 * 1024 * 1024; /* one pack for the whole tree */
  char *a = xu_path(tmp, "a"), *b = xu_path(tmp, "b"), *dst = xu_path(tmp, "dst");
  tree(a, 0, 60, 10000, 5);
  /* b keeps 10 of a's 60 files: their pack is mostly dead */
  tree(b, 0, 10, 10000, 5);
  char *ra = xu_ref(x.url, "a"), *rb = xu_ref(x.url, "b");
  push_ok(a, ra, &o, 1);
  push_ok(b, rb, &o, 1);
  br_error err;
  br_depot_gc_result r;
  CHECK_EQ_INT(br_depot_rm(x.root, "a", 1, &err), BR_OK);
  CHECK_EQ_INT(br_depot_gc(x.root, 0, false, &r, &err), BR_OK);
  CHECK(r.packs_rewritten >= 1);
  CHECK_EQ_INT(r.objects_removed, 50);
  fsck_ok(x.root);
  pull_same(rb, dst, b, &o);
  /* and a second gc has nothing left to do */
  CHECK_EQ_INT(br_depot_gc(x.root, 0, false, &r, &err), BR_OK);
  CHECK_EQ_INT(r.objects_removed, 0);
  CHECK_EQ_INT(r.packs_rewritten, 0);
  pull_same(rb, dst, b, &o);
  free(ra);
  free(rb);
  free(a);
  free(b);
  free(dst);
  xu_depot_stop(&x);
  xu_done(tmp);
}

typedef struct gcloop {
  const char *root;
  int64_t grace;
  volatile int stop;
  int runs, failures;
  char msg[1024];
} gcloop;

static void *gc_thread(void *arg) {
  gcloop *g = arg;
  while (!g->stop) {
    br_error err;
    br_error_clear(&err);
    br_depot_gc_result r;
    if (br_depot_gc(g->root, g->grace, false, &r, &err) != BR_OK) {
      g->failures++;
      snprintf(g->msg, sizeof g->msg, "%s", err.msg);
    }
    g->runs++;
    usleep(20000); /* often enough to land between pushes' steps, not so often they starve */
  }
  return NULL;
}

/* Pushes that reuse chunks of removed versions while a gc keeps running
 * with the given grace; every committed version must pull complete. */
static void pushes_beside_gc(const char *name, int64_t grace, bool expect_clean) {
  char *tmp = br_test_tmpdir(name);
  xu_depot x;
  xu_depot_start(&x, tmp);
  br_xfer_opts o;
  xu_opts(&o, tmp);
  o.chunk_size = 1024 * 1024;
  char *src = xu_path(tmp, "src"), *dst = xu_path(tmp, "dst");
  char *ref = xu_ref(x.url, "loop");
  gcloop g = {.root = x.root, .grace = grace};
  pthread_t th;
  CHECK_EQ_INT(pthread_create(&th, NULL, gc_thread, &g), 0);
  int committed = 0, refused = 0;
  for (int round = 0; round < 12; round++) {
    /* each round: half the files of the last round, half new; the last
     * version is removed first, so its chunks are unnamed meanwhile */
    char *cmd = NULL;
    if (asprintf(&cmd, "rm -rf '%s'", src) < 0 || system(cmd) != 0) abort();
    free(cmd);
    tree(src, round * 10, 20, 30000, 99);
    xu_make_file(src, "big.0001.vdb", 2200000 + (size_t)round, 3); /* loose objects too */
    br_error err;
    if (committed) {
      br_depot_rm(x.root, "loop", committed, &err);
    }
    br_xfer_result res;
    br_error_clear(&err);
    int rc = br_xfer_push(src, ref, &o, &res, &err);
    if (rc != BR_OK) {
      /* the only acceptable failure: chunks kept vanishing before the commit */
      CHECK_CONTAINS(err.msg, "kept losing chunks");
      refused++;
      continue;
    }
    committed = (int)res.version;
    char *rv = NULL;
    if (asprintf(&rv, "%s@v%d", ref, committed) < 0) abort();
    pull_same(rv, dst, src, &o);
    free(rv);
  }
  g.stop = 1;
  pthread_join(th, NULL);
  if (g.failures) br_test_fail(__FILE__, __LINE__, "gc failed %d times: %s", g.failures, g.msg);
  CHECK(g.runs > 0);
  CHECK(committed > 0);
  if (expect_clean) CHECK_EQ_INT(refused, 0);
  fsck_ok(x.root);
  free(ref);
  free(src);
  free(dst);
  xu_depot_stop(&x);
  xu_done(tmp);
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
  char *tmp = br_test_tmpdir("xfer-gc-cli");
  xu_depot x;
  xu_depot_start(&x, tmp);
  br_xfer_opts o;
  xu_opts(&o, tmp);
  char *a = xu_path(tmp, "a");
  tree(a, 0, 5, 1000, 8);
  char *ref = xu_ref(x.url, "cli/t");
  push_ok(a, ref, &o, 1);
  push_ok(a, ref, &o, 2);
  const char *bin = getenv("BRAID_BIN");
  CHECK(bin != NULL);
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "'%s' depot rm --root '%s' cli/t@v1 > '%s/out' 2>&1", bin, x.root, tmp);
  CHECK_EQ_INT(system(cmd), 0);
  snprintf(cmd, sizeof cmd, "'%s' depot rm --root '%s' cli/t@v1 >> '%s/out' 2>&1", bin, x.root, tmp);
  CHECK(system(cmd) != 0);
  snprintf(cmd, sizeof cmd, "'%s' depot rm --root '%s' cli/t >> '%s/out' 2>&1", bin, x.root, tmp);
  CHECK(WEXITSTATUS(system(cmd)) == 2);
  snprintf(cmd, sizeof cmd, "'%s' depot gc --root '%s' --grace 0 --dry-run >> '%s/out' 2>&1",
           bin, x.root, tmp);
  CHECK_EQ_INT(system(cmd), 0);
  snprintf(cmd, sizeof cmd, "'%s' depot gc --root '%s' --grace 2h >> '%s/out' 2>&1", bin, x.root,
           tmp);
  CHECK_EQ_INT(system(cmd), 0);
  snprintf(cmd, sizeof cmd, "'%s' depot gc --root '%s' --grace soon >> '%s/out' 2>&1", bin,
           x.root, tmp);
  CHECK(WEXITSTATUS(system(cmd)) == 2);
  char *outp = xu_path(tmp, "out");
  char *out = xu_read_file(outp, NULL);
  CHECK_CONTAINS(out, "removed cli/t@v1");
  CHECK_CONTAINS(out, "no version 1 of 'cli/t'");
  CHECK_CONTAINS(out, "is not NAME@vN");
  CHECK_CONTAINS(out, "dry run: 1 snapshots name");
  CHECK_CONTAINS(out, "--grace wants a duration");
  free(out);
  free(outp);
  free(ref);
  free(a);
  xu_depot_stop(&x);
  xu_done(tmp);
}
