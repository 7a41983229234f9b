/* Pulls and pushes through the fault-injecting proxy (xfer-proxy.h): cuts at
 * a random byte and at chunk boundaries, a stall, a flipped bit, a short
 * body, a 200 in place of a 206, a wrong Content-Range, an HTML error page
 * in place of data. Each case must end with a correct tree (or, when the
 * fault never stops, a clear error), and a watcher thread that keeps
 * opening the final paths during the pull must never see a file that is
 * incomplete or wrong. */
#include "xfer-util.h"
#include "xfer-proxy.h"

#include "xfer/xfer_int.h"

#define NSMALL 24
#define SMALL 16384
#define BIG (1024 * 1024 + 123)
#define ENTRY (BR_XFER_DIGEST_LEN + 12 + SMALL) /* a bundle entry of a small file */

typedef struct fx {
  char *tmp, *src, *dst, *ref;
  xu_depot depot;
  xproxy proxy;
  br_xfer_opts o;
  /* watcher */
  pthread_t th;
  atomic_int stop;
  atomic_int seen, violations;
  char bad[256];
  char *paths[NSMALL + 2];
  br_xfer_digest want[NSMALL + 2];
  int npaths;
  /* progress as shown: it never goes backwards, whatever is retried */
  int64_t shown_bytes, shown_files;
  char backwards[160];
} fx;

/* A new transfer starts its progress from nothing. */
static void watch_progress(const br_xfer_progress *p, void *ud) {
  fx *f = ud;
  if (strcmp(p->phase, "scan") == 0 || strcmp(p->phase, "manifest") == 0)
    f->shown_bytes = f->shown_files = 0;
  if ((p->bytes_done < f->shown_bytes || p->files_done < f->shown_files) && !f->backwards[0])
    snprintf(f->backwards, sizeof f->backwards, "%s: %lld bytes and %lld files after %lld and %lld",
             p->phase, (long long)p->bytes_done, (long long)p->files_done,
             (long long)f->shown_bytes, (long long)f->shown_files);
  f->shown_bytes = p->bytes_done;
  f->shown_files = p->files_done;
}

static void no_backwards(fx *f) {
  if (f->backwards[0]) br_test_fail(__FILE__, __LINE__, "progress went back: %s", f->backwards);
}

/* text: the two big files compress, so their chunks come as zstd frames. */
static void fx_setup_as(fx *f, const char *name, unsigned seed, bool text) {
  memset(f, 0, sizeof *f);
  f->tmp = br_test_tmpdir(name);
  xu_depot_start(&f->depot, f->tmp);
  f->src = xu_path(f->tmp, "src");
  f->dst = xu_path(f->tmp, "dst");
  char rel[64];
  for (int i = 0; i < NSMALL; i++) {
    snprintf(rel, sizeof rel, "frames/f.%04d.exr", i + 1);
    xu_make_file(f->src, rel, SMALL, 100 + (uint64_t)i);
    f->paths[f->npaths++] = strdup(rel);
  }
  void (*make)(const char *, const char *, size_t, uint64_t) =
      text ? xu_make_text_file : xu_make_file;
  make(f->src, "cache/big.0001.vdb", BIG, 7);
  f->paths[f->npaths++] = strdup("cache/big.0001.vdb");
  make(f->src, "cache/big.0002.vdb", BIG, 8);
  f->paths[f->npaths++] = strdup("cache/big.0002.vdb");
  for (int i = 0; i < f->npaths; i++) {
    char *p = xu_path(f->src, f->paths[i]);
    size_t len = 0;
    char *d = br__read_file(p, &len);
    br_xfer_sha256(d, len, &f->want[i]);
    free(d);
    free(p);
  }
  xu_opts(&f->o, f->tmp);
  f->o.timeout_s = 1;
  f->o.retries = 10;
  f->o.parallel = 4;
  f->o.progress = watch_progress;
  f->o.progress_ud = f;
  f->o.progress_interval = 0.0001;
  /* Push straight to the depot, then pull through the proxy. */
  char *direct = xu_ref(f->depot.url, "shot/fx");
  xu_push_ok(f->src, direct, &f->o, NULL);
  free(direct);
  CHECK_EQ_INT(xp_start(&f->proxy, f->depot.port, seed), 0);
  char url[128];
  snprintf(url, sizeof url, "depot://127.0.0.1:%d/shot/fx", f->proxy.port);
  f->ref = strdup(url);
}

static void fx_setup(fx *f, const char *name, unsigned seed) { fx_setup_as(f, name, seed, false); }

static void *watcher(void *arg) {
  fx *f = arg;
  while (!atomic_load(&f->stop)) {
    for (int i = 0; i < f->npaths; i++) {
      char *p = xu_path(f->dst, f->paths[i]);
      size_t len = 0;
      char *d = br__read_file(p, &len);
      if (d) {
        br_xfer_digest got;
        br_xfer_sha256(d, len, &got);
        atomic_fetch_add(&f->seen, 1);
        if (memcmp(got.b, f->want[i].b, 32) != 0) {
          atomic_fetch_add(&f->violations, 1);
          snprintf(f->bad, sizeof f->bad, "%s (%zu bytes)", f->paths[i], len);
        }
        free(d);
      }
      free(p);
    }
  }
  return NULL;
}

/* Pulls through the proxy with the fault set, the watcher running. */
static int fx_pull(fx *f, xp_fault fault, br_error *err) {
  xp_set(&f->proxy, fault);
  atomic_store(&f->stop, 0);
  pthread_create(&f->th, NULL, watcher, f);
  br_xfer_result res;
  br_error_clear(err);
  int rc = br_xfer_pull(f->ref, f->dst, &f->o, &res, err);
  atomic_store(&f->stop, 1);
  pthread_join(f->th, NULL);
  if (atomic_load(&f->violations))
    br_test_fail(__FILE__, __LINE__, "watcher saw a wrong file: %s", f->bad);
  no_backwards(f);
  return rc;
}

static void fx_teardown(fx *f) {
  xp_stop(&f->proxy);
  xu_depot_stop(&f->depot);
  for (int i = 0; i < f->npaths; i++) free(f->paths[i]);
  free(f->src);
  free(f->dst);
  free(f->ref);
  xu_done(f->tmp);
}

/* The case passes when the pull succeeds, the fault fired, the tree is right. */
static void recovery(const char *name, xp_fault fault, unsigned seed, bool text) {
  fx f;
  fx_setup_as(&f, name, seed, text);
  br_error err;
  int rc = fx_pull(&f, fault, &err);
  if (rc) br_test_fail(__FILE__, __LINE__, "%s: pull failed: %s", name, err.msg);
  CHECK(xp_hits(&f.proxy) >= 1);
  CHECK_EQ_INT(xu_tree_diff(f.src, f.dst), 0);
  CHECK_EQ_INT(xu_count_prefix(f.dst, ".braid-partial-"), 0);
  fx_teardown(&f);
}

static void expect_recovery(const char *name, xp_fault fault, unsigned seed) {
  recovery(name, fault, seed, false);
}

#define CHUNKS "Content-Range"          /* ranged chunk GETs */
#define BUNDLES "application/octet-stream" /* ...with nomatch CHUNKS: bundles */

TEST(cut_at_random_bytes) {
  for (unsigned seed = 1; seed <= 3; seed++) {
    xp_fault f = {XP_CUT, "octet-stream", NULL, 0, 3, -1, 0, 0, 0};
    expect_recovery("xfer-fx-cut-random", f, seed);
  }
}

TEST(cut_at_chunk_boundaries) {
  xp_fault a = {XP_CUT, CHUNKS, NULL, 0, 2, 0, 0, 0, 0}; /* right after the headers */
  expect_recovery("xfer-fx-cut-head", a, 1);
  xp_fault b = {XP_CUT, CHUNKS, NULL, 1, 2, -2, 0, 0, 0}; /* right after a whole chunk */
  expect_recovery("xfer-fx-cut-tail", b, 2);
  /* between bundle entries */
  xp_fault c = {XP_CUT, BUNDLES, CHUNKS, 0, 1, 4 + 5 * ENTRY, 0, 0, 0};
  expect_recovery("xfer-fx-cut-bundle", c, 3);
}

TEST(stall_longer_than_the_timeout) {
  xp_fault f = {XP_STALL, CHUNKS, NULL, 0, 1, 1000, 2500, 0, 0};
  expect_recovery("xfer-fx-stall", f, 4);
}

TEST(flipped_bit_is_fetched_again) {
  xp_fault a = {XP_FLIP, CHUNKS, NULL, 0, 2, -1, 0, 0, 0};
  expect_recovery("xfer-fx-flip-chunk", a, 5);
  xp_fault b = {XP_FLIP, BUNDLES, CHUNKS, 0, 1, 4 + 3 * ENTRY + 100, 0, 0, 0};
  expect_recovery("xfer-fx-flip-bundle", b, 6);
}

TEST(short_body) {
  xp_fault a = {XP_SHORT, CHUNKS, NULL, 0, 2, 10, 0, 0, 0};
  expect_recovery("xfer-fx-short-chunk", a, 7);
  xp_fault b = {XP_SHORT, BUNDLES, CHUNKS, 0, 1, 10, 0, 0, 0};
  expect_recovery("xfer-fx-short-bundle", b, 8);
}

TEST(status_200_in_place_of_206) {
  xp_fault f = {XP_200, CHUNKS, NULL, 0, 3, 0, 0, 0, 0};
  expect_recovery("xfer-fx-200", f, 9);
}

TEST(wrong_content_range) {
  xp_fault f = {XP_BADRANGE, CHUNKS, NULL, 0, 3, 0, 0, 0, 0};
  expect_recovery("xfer-fx-badrange", f, 10);
}

TEST(html_error_page_in_place_of_data) {
  xp_fault a = {XP_HTML, CHUNKS, NULL, 0, 2, 0, 0, 0, 0};
  expect_recovery("xfer-fx-html-chunk", a, 11);
  xp_fault b = {XP_HTML, BUNDLES, CHUNKS, 0, 2, 0, 0, 0, 0};
  expect_recovery("xfer-fx-html-bundle", b, 12);
}

/* Chunks of large files that compress come whole as zstd frames, not as
 * ranges: through a cut anywhere (a frame is fetched again from its first
 * byte, never resumed), a flipped bit, a short body and an HTML page. */
#define FRAMES "Content-Encoding: zstd"
TEST(compressed_chunks_through_faults) {
  xp_fault a = {XP_CUT, FRAMES, NULL, 0, 3, -1, 0, 0, 0};
  recovery("xfer-fx-z-cut", a, 21, true);
  xp_fault b = {XP_CUT, FRAMES, NULL, 1, 1, -2, 0, 0, 0};
  recovery("xfer-fx-z-cut-tail", b, 22, true);
  xp_fault c = {XP_FLIP, FRAMES, NULL, 0, 2, -1, 0, 0, 0};
  recovery("xfer-fx-z-flip", c, 23, true);
  xp_fault d = {XP_SHORT, FRAMES, NULL, 0, 2, 10, 0, 0, 0};
  recovery("xfer-fx-z-short", d, 24, true);
  xp_fault e = {XP_HTML, FRAMES, NULL, 0, 2, 0, 0, 0, 0};
  recovery("xfer-fx-z-html", e, 25, true);
}

TEST(fault_that_never_stops_gives_a_clear_error) {
  fx f;
  fx_setup(&f, "xfer-fx-forever", 13);
  f.o.retries = 2;
  xp_fault fault = {XP_HTML, CHUNKS, NULL, 0, 1000000, 0, 0, 0, 0};
  br_error err;
  int rc = fx_pull(&f, fault, &err);
  CHECK_EQ_INT(rc, BR_ENET);
  CHECK_CONTAINS(err.msg, "giving up after 3 attempts");
  CHECK_CONTAINS(err.msg, "range response mismatch");
  /* The large files never appeared; a later pull without the fault completes. */
  char *big = xu_path(f.dst, "cache/big.0001.vdb");
  struct stat st;
  CHECK(stat(big, &st) != 0);
  free(big);
  f.o.retries = 6;
  xp_fault none = {XP_NONE, NULL, NULL, 0, 0, 0, 0, 0, 0};
  CHECK_EQ_INT(fx_pull(&f, none, &err), BR_OK);
  CHECK_EQ_INT(xu_tree_diff(f.src, f.dst), 0);
  fx_teardown(&f);
}

TEST(bundle_entry_corrupt_every_time_gives_a_clear_error) {
  /* The first entry's bytes (not its header) are flipped in every
   * bundle: each such file fails the writer's check and is fetched again
   * (alone, so again first), and past the retries the pull stops with the
   * file's name; that file never appears, and no partial is left. */
  fx f;
  fx_setup(&f, "xfer-fx-corrupt-forever", 19);
  f.o.retries = 2;
  xp_fault fault = {XP_FLIP, BUNDLES, CHUNKS, 0, 1000000, 4 + BR_XFER_DIGEST_LEN + 12 + 50,
                    0, 0, 0};
  br_error err;
  int rc = fx_pull(&f, fault, &err);
  CHECK_EQ_INT(rc, BR_ENET);
  CHECK_CONTAINS(err.msg, "failed verification 3 times");
  char bad[64] = "";
  CHECK_EQ_INT(sscanf(err.msg, "frames/%40[^: ]", bad), 1);
  char rel[80];
  snprintf(rel, sizeof rel, "frames/%s", bad);
  char *path = xu_path(f.dst, rel);
  struct stat st;
  CHECK(stat(path, &st) != 0);
  free(path);
  CHECK_EQ_INT(xu_count_prefix(f.dst, ".braid-partial-"), 0);
  xp_fault none = {XP_NONE, NULL, NULL, 0, 0, 0, 0, 0, 0};
  CHECK_EQ_INT(fx_pull(&f, none, &err), BR_OK);
  CHECK_EQ_INT(xu_tree_diff(f.src, f.dst), 0);
  fx_teardown(&f);
}

TEST(push_through_cuts) {
  /* Upload bodies cut on the way in (the connection dies mid-request) and
   * answers cut on the way out: the push still commits a complete snapshot. */
  fx f;
  fx_setup(&f, "xfer-fx-push", 14);
  char *src2 = xu_path(f.tmp, "src2");
  xu_make_file(src2, "new/a.0001.exr", 40000, 99);
  xu_make_file(src2, "new/b.0001.vdb", 600 * 1024, 98);
  xp_fault fault = {XP_CUT, "application/json", NULL, 0, 3, -1, 0, 0, 0};
  xp_set(&f.proxy, fault);
  char url[128];
  snprintf(url, sizeof url, "depot://127.0.0.1:%d/shot/push", f.proxy.port);
  xu_push_ok(src2, url, &f.o, NULL);
  CHECK(xp_hits(&f.proxy) >= 1);
  no_backwards(&f);
  xp_fault none = {XP_NONE, NULL, NULL, 0, 0, 0, 0, 0, 0};
  xp_set(&f.proxy, none);
  char *d2 = xu_path(f.tmp, "d2");
  xu_pull_ok(url, d2, &f.o, NULL);
  CHECK_EQ_INT(xu_tree_diff(src2, d2), 0);
  free(d2);
  free(src2);
  fx_teardown(&f);
}

/* NSMALL small files under sent/ in dir, their bytes drawn from seed. */
static void make_sent_files(const char *dir, uint64_t seed) {
  xu_make_frames(dir, "sent/s.%04d.exr", 1, NSMALL, SMALL, seed);
}

/* A push through the proxy of NSMALL small files of src2, whose first
 * `times` upload answers ({"stored":n}, the only short JSON bodies) are
 * cut: the depot stored the bundle, the client never heard. hook runs as
 * the first is cut. */
static int push_cut_uploads(fx *f, const char *src2, int times, void (*hook)(void *),
                            br_error *err) {
  make_sent_files(src2, 500);
  f->proxy.on_hit = hook;
  f->proxy.on_hit_ud = (void *)src2;
  xp_fault fault = {XP_CUT, "application/json", "X-Braid-Version", 0, times, 0, 0, 0, 32};
  xp_set(&f->proxy, fault);
  br_xfer_result res;
  br_error_clear(err);
  char url[128];
  snprintf(url, sizeof url, "depot://127.0.0.1:%d/shot/sent", f->proxy.port);
  int rc = br_xfer_push(src2, url, &f->o, &res, err);
  CHECK_EQ_INT(xp_hits(&f->proxy), times);
  no_backwards(f);
  xp_fault none = {XP_NONE, NULL, NULL, 0, 0, 0, 0, 0, 0};
  xp_set(&f->proxy, none);
  f->proxy.on_hit = NULL;
  return rc;
}

/* Pulls what push_cut_uploads committed straight from the depot; when it
 * is there, it must be src2's tree. */
static int pull_sent(fx *f, const char *src2, br_error *err) {
  char *url = xu_ref(f->depot.url, "shot/sent"), *d2 = xu_path(f->tmp, "d2");
  br_xfer_result res;
  int rc = br_xfer_pull(url, d2, &f->o, &res, err);
  if (rc == BR_OK) CHECK_EQ_INT(xu_tree_diff(src2, d2), 0);
  free(url);
  free(d2);
  return rc;
}

TEST(push_retry_reads_sent_files_again) {
  /* A small file's bytes are let go once its bundle is with curl; a retry
   * of the bundle reads the files again and the snapshot is whole. */
  fx f;
  fx_setup(&f, "xfer-fx-resend", 21);
  char *src2 = xu_path(f.tmp, "src2");
  br_error err;
  CHECK_EQ_INT(push_cut_uploads(&f, src2, 2, NULL, &err), BR_OK);
  CHECK_EQ_INT(pull_sent(&f, src2, &err), BR_OK);
  free(src2);
  fx_teardown(&f);
}

static void rewrite_sent_files(void *ud) { make_sent_files(ud, 900); }

TEST(push_retry_finds_files_changed_after_they_were_sent) {
  /* The files change between a bundle's sending and its retry: the push
   * says so and commits nothing, neither the old bytes nor the new. */
  fx f;
  fx_setup(&f, "xfer-fx-resend-changed", 22);
  char *src2 = xu_path(f.tmp, "src2");
  br_error err;
  CHECK_EQ_INT(push_cut_uploads(&f, src2, 1, rewrite_sent_files, &err), BR_EIO);
  CHECK_CONTAINS(err.msg, "changed while it was pushed");
  CHECK_CONTAINS(err.msg, "sent/s.");
  CHECK_EQ_INT(pull_sent(&f, src2, &err), BR_ENOTFOUND);
  free(src2);
  fx_teardown(&f);
}

TEST(transient_statuses_are_retried) {
  xp_fault a = {XP_STATUS, CHUNKS, NULL, 0, 2, 0, 0, 503, 0};
  expect_recovery("xfer-fx-503", a, 15);
  xp_fault b = {XP_STATUS, BUNDLES, CHUNKS, 0, 2, 0, 0, 429, 0};
  expect_recovery("xfer-fx-429", b, 16);
  xp_fault c = {XP_STATUS, "application/json", NULL, 0, 1, 0, 0, 500, 0}; /* the manifest */
  expect_recovery("xfer-fx-500", c, 17);
}

TEST(permanent_statuses_fail_clearly) {
  struct {
    int status, code;
    const char *text;
  } cases[] = {{403, BR_EAUTH, "forbids"}, {404, BR_ENOTFOUND, "404"},
               {401, BR_EAUTH, "token"}, {400, BR_EINVAL, "400"}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    fx f;
    fx_setup(&f, "xfer-fx-permanent", 18);
    xp_fault fault = {XP_STATUS, CHUNKS, NULL, 0, 1, 0, 0, cases[i].status, 0};
    br_error err;
    int rc = fx_pull(&f, fault, &err);
    if (rc != cases[i].code)
      br_test_fail(__FILE__, __LINE__, "status %d: rc %d (%s)", cases[i].status, rc, err.msg);
    CHECK_CONTAINS(err.msg, cases[i].text);
    CHECK_EQ_INT(xp_hits(&f.proxy), 1); /* not retried */
    fx_teardown(&f);
  }
}

typedef struct puller {
  const char *ref, *dst;
  br_xfer_opts *o;
  int rc;
} puller;

static void *pull_thread(void *arg) {
  puller *pl = arg;
  br_xfer_result res;
  br_error err;
  br_error_clear(&err);
  pl->rc = br_xfer_pull(pl->ref, pl->dst, pl->o, &res, &err);
  if (pl->rc) fprintf(stderr, "pull: %s\n", err.msg);
  return NULL;
}

TEST(two_pulls_into_one_directory_at_once) {
  /* Two tasks on one host fetch the same asset into the same place: both
   * succeed, and the watcher never sees a wrong file. */
  fx f;
  fx_setup(&f, "xfer-fx-twopulls", 19);
  f.o.bwlimit = 8 * 1024 * 1024; /* long enough to overlap */
  xp_fault none = {XP_NONE, NULL, NULL, 0, 0, 0, 0, 0, 0};
  xp_set(&f.proxy, none);
  atomic_store(&f.stop, 0);
  pthread_create(&f.th, NULL, watcher, &f);
  br_xfer_opts o2 = f.o;
  puller a = {f.ref, f.dst, &f.o, -1}, b = {f.ref, f.dst, &o2, -1};
  pthread_t ta, tb;
  pthread_create(&ta, NULL, pull_thread, &a);
  pthread_create(&tb, NULL, pull_thread, &b);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  atomic_store(&f.stop, 1);
  pthread_join(f.th, NULL);
  if (atomic_load(&f.violations))
    br_test_fail(__FILE__, __LINE__, "watcher saw a wrong file: %s", f.bad);
  CHECK_EQ_INT(a.rc, BR_OK);
  CHECK_EQ_INT(b.rc, BR_OK);
  CHECK_EQ_INT(xu_tree_diff(f.src, f.dst), 0);
  CHECK_EQ_INT(xu_count_prefix(f.dst, ".braid-partial-"), 0);
  fx_teardown(&f);
}
