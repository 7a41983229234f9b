/* push and pull end to end against a real depot on loopback: round trips,
 * only missing chunks moving, the hash cache, versions, resume from a
 * partial, cancel, bandwidth limit, compression, many snapshots at once,
 * and the attacks (symlinks out of the tree, device files, hostile
 * manifests served by the depot, symlinks planted in the destination). */
#include "xfer-util.h"
#include "xfer-proxy.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "xfer/xfer_int.h"

#define D64 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" /* file digest of no chunks */

/* A small cache tree: frames of a few KiB (bundled), two multi-chunk files,
 * an empty file, an empty dir, a relative symlink. */
static void make_tree(const char *dir, uint64_t seed) {
  char rel[128];
  for (int i = 1; i <= 40; i++) {
    snprintf(rel, sizeof rel, "cloth/cloth.%04d.bgeo", i);
    xu_make_file(dir, rel, 1000 + (size_t)i * 300, seed + (uint64_t)i);
  }
  xu_make_file(dir, "hair/big.0001.vdb", 700 * 1024, seed + 100);
  xu_make_file(dir, "hair/big.0002.vdb", 300 * 1024 + 17, seed + 101);
  xu_make_file(dir, "empty.txt", 0, 0);
  char *p = xu_path(dir, "emptydir");
  mkdir(p, 0755);
  free(p);
  p = xu_path(dir, "cloth/latest");
  CHECK(symlink("cloth.0040.bgeo", p) == 0);
  free(p);
  p = xu_path(dir, "hair/big.0002.vdb");
  chmod(p, 0600);
  free(p);
}

TEST(roundtrip_and_nothing_moves_twice) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-roundtrip", "shot010/cloth");
  make_tree(tc.src, 1);
  /* in the root before and after the folders' files: a pull lists the
   * root twice */
  xu_make_file(tc.src, "b.first", 4000, 8);
  xu_make_file(tc.src, "zz.last", 5000, 9);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, &res), 1);
  CHECK_EQ_INT(res.files, 45);
  CHECK(res.chunks_moved > 40);
  CHECK(res.hashed_bytes > 0);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(res.version, 1);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  CHECK_EQ_INT(xu_count_prefix(tc.dst, ".braid-partial-"), 0);
  struct stat st;
  char *p = xu_path(tc.dst, "hair/big.0002.vdb");
  CHECK(stat(p, &st) == 0);
  CHECK_EQ_INT(st.st_mode & 0777, 0600);
  char *q = xu_path(tc.src, "hair/big.0002.vdb");
  struct stat sst;
  CHECK(stat(q, &sst) == 0);
  CHECK_EQ_INT(st.st_mtim.tv_sec, sst.st_mtim.tv_sec);
  free(p);
  free(q);
  /* Unchanged tree: nothing hashed (cache), nothing sent, a new version. */
  CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, &res), 2);
  CHECK_EQ_INT(res.chunks_moved, 0);
  CHECK_EQ_INT(res.hashed_bytes, 0);
  /* Pull again: every file verified in place, nothing fetched. */
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(res.chunks_moved, 0);
  CHECK_EQ_INT(res.files_moved, 0);
  xu_case_done(&tc);
}

TEST(resim_uploads_only_changed_files) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-resim", "shot010/cloth");
  make_tree(tc.src, 1);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  /* A re-sim changes 3 of 40 frames. */
  xu_make_file(tc.src, "cloth/cloth.0003.bgeo", 2000, 9001);
  xu_make_file(tc.src, "cloth/cloth.0010.bgeo", 2000, 9002);
  xu_make_file(tc.src, "cloth/cloth.0020.bgeo", 2000, 9003);
  CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, &res), 2);
  CHECK_EQ_INT(res.chunks_moved, 3);
  CHECK_EQ_INT(res.files_moved, 3);
  CHECK_EQ_INT(res.hashed_bytes, 6000);
  /* v1 is still there and differs from v2. */
  char *d1 = xu_path(tc.tmp, "d1"), *d2 = xu_path(tc.tmp, "d2"), *r1 = NULL;
  if (asprintf(&r1, "%s@v1", tc.ref) < 0) abort();
  xu_pull_ok(r1, d1, &o, &res);
  CHECK_EQ_INT(res.version, 1);
  xu_pull_ok(tc.ref, d2, &o, &res);
  CHECK_EQ_INT(res.version, 2);
  CHECK_EQ_INT(xu_tree_diff(tc.src, d2), 0);
  CHECK(xu_tree_diff(tc.src, d1) != 0);
  /* Pulling v2 over v1's tree fetches the 3 changed files only. */
  xu_pull_ok(tc.ref, d1, &o, &res);
  CHECK_EQ_INT(res.files_moved, 3);
  CHECK_EQ_INT(xu_tree_diff(tc.src, d1), 0);
  /* v3 changes only a frame's mode and another's mtime: pulled over v2's
   * tree, nothing moves and both files take v3's metadata; v2 pulled back
   * over it gives v2's again. */
  char *f5 = xu_path(tc.src, "cloth/cloth.0005.bgeo"),
       *f6 = xu_path(tc.src, "cloth/cloth.0006.bgeo");
  char *g5 = xu_path(d1, "cloth/cloth.0005.bgeo"), *g6 = xu_path(d1, "cloth/cloth.0006.bgeo");
  struct stat s5, s6, st;
  CHECK(stat(f5, &s5) == 0 && stat(f6, &s6) == 0);
  CHECK(chmod(f5, 0750) == 0);
  struct timespec old[2] = {{0, UTIME_OMIT}, {1577836800, 123456789}}; /* 2020-01-01 */
  CHECK(utimensat(AT_FDCWD, f6, old, 0) == 0);
  CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, &res), 3);
  xu_pull_ok(tc.ref, d1, &o, &res);
  CHECK_EQ_INT(res.files_moved, 0);
  CHECK(stat(g5, &st) == 0);
  CHECK_EQ_INT(st.st_mode & 0777, 0750);
  CHECK(stat(g6, &st) == 0);
  CHECK_EQ_INT(st.st_mtim.tv_sec, 1577836800);
  CHECK_EQ_INT(st.st_mtim.tv_nsec, 123456789);
  char *r2 = NULL;
  if (asprintf(&r2, "%s@v2", tc.ref) < 0) abort();
  xu_pull_ok(r2, d1, &o, &res);
  CHECK_EQ_INT(res.files_moved, 0);
  CHECK(stat(g5, &st) == 0);
  CHECK_EQ_INT(st.st_mode & 0777, s5.st_mode & 0777);
  CHECK(stat(g6, &st) == 0);
  CHECK_EQ_INT(st.st_mtim.tv_sec, s6.st_mtim.tv_sec);
  CHECK_EQ_INT(st.st_mtim.tv_nsec, s6.st_mtim.tv_nsec);
  free(r2);
  free(f5);
  free(f6);
  free(g5);
  free(g6);
  free(r1);
  free(d1);
  free(d2);
  xu_case_done(&tc);
}

TEST(resume_keeps_verified_chunks_of_a_partial) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-resume", "r");
  xu_make_file(tc.src, "big.0001.vdb", 1024 * 1024 + 5, 77); /* 5 chunks of 256 KiB */
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  /* A partial as a cut pull leaves it: chunks 0 and 1 good, chunk 2 torn. */
  size_t len;
  char *sp = xu_path(tc.src, "big.0001.vdb");
  char *data = br__read_file(sp, &len);
  char pn[64];
  br_xfer__partial_name("big.0001.vdb", pn, sizeof pn); /* derived from the name */
  char *pp = xu_path(tc.dst, pn);
  mkdir(tc.dst, 0755);
  xu_write_file(pp, data, 2 * 256 * 1024 + 1000);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(res.chunks_skipped, 2);
  CHECK_EQ_INT(res.chunks_moved, 3);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  CHECK_EQ_INT(xu_count_prefix(tc.dst, ".braid-partial-"), 0);
  free(data);
  free(sp);
  free(pp);
  xu_case_done(&tc);
}

/* What a push's progress showed while it sent. */
typedef struct seen_progress {
  int64_t total, between; /* bytes_total; a bytes_done seen strictly inside (0, total) */
  int64_t last;           /* the last bytes_done shown */
  bool backwards;         /* bytes_done went down */
} seen_progress;

static void note_progress(const br_xfer_progress *p, void *ud) {
  seen_progress *s = ud;
  s->total = p->bytes_total;
  if (p->bytes_done > 0 && p->bytes_done < p->bytes_total) s->between = p->bytes_done;
  if (p->bytes_done < s->last) s->backwards = true;
  s->last = p->bytes_done;
}

TEST(push_progress_moves_while_a_bundle_is_sent) {
  /* bytes were done only once their bundle was answered: a slow push of
   * small files showed 0 B done for its first bundles (here its only one) */
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-progress", "prog");
  for (int i = 0; i < 4; i++) {
    char name[32];
    snprintf(name, sizeof name, "f%02d.bin", i);
    xu_make_file(tc.src, name, 60 * 1024, 100 + i);
  }
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  o.bundle_bytes = 4 * 1024 * 1024; /* one bundle (of at least 256 KiB) for the 240 KiB */
  o.bwlimit = 100 * 1024;
  o.compress = 0;
  seen_progress seen = {0};
  o.progress = note_progress;
  o.progress_ud = &seen;
  o.progress_interval = 0.05;
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  CHECK_EQ_INT(res.files_moved, 4);
  CHECK_EQ_INT(res.chunks_moved, 4);
  CHECK_EQ_INT(seen.total, 4 * 60 * 1024);
  CHECK(seen.between > 0);
  CHECK_EQ_INT(seen.last, seen.total);
  CHECK(!seen.backwards);
  xu_case_done(&tc);
}

static volatile sig_atomic_t cancel_now;

static void cancel_after_some(const br_xfer_progress *p, void *ud) {
  (void)ud;
  if (p->bytes_done >= 512 * 1024 && strcmp(p->phase, "fetch") == 0) cancel_now = 1;
}

TEST(cancel_then_resume) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-cancel", "c");
  xu_make_file(tc.src, "a.bin", 3 * 1024 * 1024, 5);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  o.progress = cancel_after_some;
  o.progress_interval = 0.001;
  o.cancel = &cancel_now;
  o.bwlimit = 1024 * 1024; /* slow enough to cancel midway */
  o.parallel = 2;
  br_error err;
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_pull(tc.ref, tc.dst, &o, &res, &err), BR_ECANCEL);
  char *final = xu_path(tc.dst, "a.bin");
  struct stat st;
  CHECK(stat(final, &st) != 0); /* nothing under the final name */
  cancel_now = 0;
  o.progress = NULL;
  o.bwlimit = 0;
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK(res.chunks_skipped >= 1); /* what arrived before the cancel is kept */
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  free(final);
  xu_case_done(&tc);
}

TEST(bandwidth_limit_and_compression) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-bw", "bw");
  /* Compressible (zeros) and incompressible files. */
  uint8_t *zeros = calloc(1, 600 * 1024);
  char *zp = xu_path(tc.src, "zeros.bin");
  xu_write_file(zp, zeros, 600 * 1024);
  xu_make_file(tc.src, "random.bin", 300 * 1024, 3);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  o.bwlimit = 4 * 1024 * 1024;
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  /* zstd shrank the zeros: far fewer bytes went than the tree holds. */
  CHECK(res.bytes_moved < 300 * 1024 + 100 * 1024);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  o.compress = 0;
  char *dst2 = xu_path(tc.tmp, "dst2");
  xu_pull_ok(tc.ref, dst2, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, dst2), 0);
  free(dst2);
  free(zeros);
  free(zp);
  xu_case_done(&tc);
}

/* Large chunks that compress are kept by the depot as the zstd frames
 * they came as, and pulled so: a pull that takes zstd moves about what the
 * push moved, one that does not gets the bytes inflated, and both trees
 * are right. fsck reads the frames; a gc after a version goes keeps the
 * ones still named. */
TEST(large_chunks_that_compress_are_pulled_compressed) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-zlarge", "sim");
  const size_t text = 5 * 1024 * 1024 + 321, noise = 3 * 1024 * 1024;
  xu_make_text_file(tc.src, "cache/sim.0001.bgeo", text, 1);
  xu_make_text_file(tc.src, "cache/sim.0002.bgeo", text, 2);
  xu_make_file(tc.src, "cache/noise.0001.bgeo", noise, 3);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  o.chunk_size = 2 * 1024 * 1024; /* chunks a depot keeps apart from small ones */
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  int64_t pushed = res.bytes_moved;
  CHECK(pushed < (int64_t)(text + noise)); /* each text file shrank to under half */
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  CHECK(res.bytes_moved < pushed + 64 * 1024);
  o.compress = 0;
  char *plain = xu_path(tc.tmp, "plain");
  xu_pull_ok(tc.ref, plain, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, plain), 0);
  CHECK(res.bytes_moved >= (int64_t)(2 * text + noise));
  o.compress = 1;
  br_error err;
  br_error_clear(&err);
  int64_t n = 0;
  CHECK_EQ_INT(br_depot_fsck(tc.x.root, &n, &err), BR_OK);
  CHECK(n >= 8);
  /* v2 keeps one text file; v1 goes, and a gc takes the other's frames */
  char *gone = xu_path(tc.src, "cache/sim.0002.bgeo");
  CHECK_EQ_INT(unlink(gone), 0);
  xu_push_ok(tc.src, tc.ref, &o, &res);
  CHECK_EQ_INT(br_depot_rm(tc.x.root, "sim", 1, &err), BR_OK);
  br_depot_gc_result g;
  CHECK_EQ_INT(br_depot_gc(tc.x.root, 0, false, &g, &err), BR_OK);
  CHECK(g.objects_removed >= 3);
  char *after = xu_path(tc.tmp, "after");
  xu_pull_ok(tc.ref, after, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, after), 0);
  CHECK_EQ_INT(br_depot_fsck(tc.x.root, &n, &err), BR_OK);
  free(after), free(gone), free(plain);
  xu_case_done(&tc);
}

/* Whether the file system under dir punches holes: a scratch file of
 * written bytes, punched, must give its blocks back. Where it cannot, the
 * pull writes zeros instead, and the sparse tests check only the bytes
 * (saying why). */
static bool can_punch(const char *dir) {
  char *path = xu_path(dir, "punch-probe");
  uint8_t b[64 * 1024];
  xu_fill(b, sizeof b, 3);
  xu_write_file(path, b, sizeof b);
  int fd = open(path, O_RDWR);
  struct stat st;
  bool ok = fd >= 0 && fsync(fd) == 0 &&
            fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)sizeof b) == 0 &&
            fstat(fd, &st) == 0 && (int64_t)st.st_blocks * 512 < (int64_t)sizeof b;
  if (!ok)
    fprintf(stderr, "  (%s cannot punch holes: %s; sparseness not checked, only the bytes)\n",
            dir, fd < 0 ? strerror(errno) : "blocks kept");
  if (fd >= 0) close(fd);
  unlink(path);
  free(path);
  return ok;
}

/* Bytes the file at dir/rel takes on its disk. */
static int64_t disk_bytes(const char *dir, const char *rel) {
  char *path = xu_path(dir, rel);
  struct stat st;
  CHECK_EQ_INT(stat(path, &st), 0);
  free(path);
  return (int64_t)st.st_blocks * 512;
}

/* Chunks of zeros (a sparse file's holes, or zeros written out) are not
 * fetched: the pull leaves holes there, so a sparse file stays sparse. */
TEST(zero_chunks_are_holes_not_fetched) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-sparse", "vol");
  const int64_t hole = 4 * 1024 * 1024, edge = 256 * 1024;
  xu_make_file(tc.src, "vol/density.0001.vdb", (size_t)edge, 1);
  char *path = xu_path(tc.src, "vol/density.0001.vdb");
  int fd = open(path, O_WRONLY);
  CHECK(fd >= 0);
  uint8_t tail[300 * 1024];
  xu_fill(tail, sizeof tail, 2);
  CHECK(pwrite(fd, tail, sizeof tail, edge + hole) == (ssize_t)sizeof tail);
  close(fd);
  const int64_t size = edge + hole + (int64_t)sizeof tail;
  br_xfer_opts o;
  xu_opts(&o, tc.tmp); /* 256 KiB chunks: 16 of them zeros */
  o.compress = 0;      /* so the bytes moved show what was fetched */
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  CHECK(res.bytes_moved < size - hole + 64 * 1024);
  char *got = xu_path(tc.dst, "vol/density.0001.vdb");
  struct stat st;
  CHECK_EQ_INT(stat(got, &st), 0);
  CHECK_EQ_INT(st.st_size, size);
  if (can_punch(tc.tmp)) /* the holes are holes */
    CHECK((int64_t)st.st_blocks * 512 < size - hole / 2);
  free(got), free(path);
  xu_case_done(&tc);
}

/* A large file's last chunk, shorter than the others, all zeros (a sparse
 * file that ends in a hole) is not fetched either: a hole of its own
 * length. Before, only whole chunks of zeros were known from their digest,
 * and the last one came over the wire and was written out. */
TEST(a_last_shorter_chunk_of_zeros_is_a_hole_not_fetched) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-sparse-tail", "vol");
  const int64_t cs = 256 * 1024, tail = 100 * 1024 + 123; /* unaligned: a direct write pads */
  /* data, two chunks of zeros, then the short last chunk of zeros */
  xu_make_file(tc.src, "vol/a.0001.vdb", (size_t)cs, 1);
  char *a = xu_path(tc.src, "vol/a.0001.vdb");
  CHECK_EQ_INT(truncate(a, 3 * cs + tail), 0);
  /* one chunk, shorter than the chunk size, all zeros (above small_file:
   * fetched chunk by chunk, not bundled) */
  xu_make_file(tc.src, "vol/b.0001.vdb", 0, 0);
  char *b = xu_path(tc.src, "vol/b.0001.vdb");
  CHECK_EQ_INT(truncate(b, 200 * 1024 + 7), 0);
  /* the same last chunk length as a's (its zero digest then from the
   * pull's cache), not zeros: fetched */
  xu_make_file(tc.src, "vol/c.0001.vdb", (size_t)(cs + tail), 2);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp); /* 256 KiB chunks, small files up to 64 KiB */
  o.compress = 0;      /* so the bytes moved show what was fetched */
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  CHECK_EQ_INT(res.chunks_moved, 3);   /* a's first, c's two */
  const int64_t data = 2 * cs + tail; /* of those three */
  CHECK(res.bytes_moved >= data);
  CHECK(res.bytes_moved < data + 64 * 1024);
  if (can_punch(tc.tmp)) {
    CHECK(disk_bytes(tc.dst, "vol/a.0001.vdb") < cs + 64 * 1024);
    CHECK(disk_bytes(tc.dst, "vol/b.0001.vdb") < 64 * 1024);
  }
  free(a), free(b);
  xu_case_done(&tc);
}

static volatile sig_atomic_t cancel_sparse;

static void cancel_past(const br_xfer_progress *p, void *ud) {
  if (p->bytes_done >= *(const int64_t *)ud && strcmp(p->phase, "fetch") == 0) cancel_sparse = 1;
}

/* A pull cut midway leaves a partial with holes where its chunks of zeros
 * are; the pull that resumes it counts those holes as its verified zero
 * chunks and keeps them holes. Before, reopening the partial reserved the
 * whole file again (fallocate), which filled the holes: the file came
 * back whole but no longer sparse. */
TEST(a_resumed_partial_keeps_its_holes) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-sparse-resume", "vol");
  const int64_t cs = 256 * 1024, hole = 16 * cs, data = 8 * cs;
  /* a chunk of data, 16 of zeros, 8 of data */
  xu_make_file(tc.src, "vol/d.0001.vdb", (size_t)cs, 1);
  char *path = xu_path(tc.src, "vol/d.0001.vdb");
  int fd = open(path, O_WRONLY);
  CHECK(fd >= 0);
  uint8_t *tail = malloc((size_t)data);
  xu_fill(tail, (size_t)data, 2);
  CHECK(pwrite(fd, tail, (size_t)data, cs + hole) == (ssize_t)data);
  close(fd);
  const int64_t size = cs + hole + data;
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  o.compress = 0;
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  /* cut once some of the data came (the holes count as done at once) */
  int64_t past = hole + 2 * cs;
  o.progress = cancel_past;
  o.progress_ud = &past;
  o.progress_interval = 0.001;
  o.cancel = &cancel_sparse;
  o.bwlimit = 1024 * 1024; /* slow enough to cut midway */
  o.parallel = 2;
  br_error err;
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_pull(tc.ref, tc.dst, &o, &res, &err), BR_ECANCEL);
  char pn[64];
  br_xfer__partial_name("d.0001.vdb", pn, sizeof pn);
  char *prel = NULL;
  if (asprintf(&prel, "vol/%s", pn) < 0) abort();
  bool punch = can_punch(tc.tmp);
  if (punch) CHECK(disk_bytes(tc.dst, prel) < size - hole / 2); /* the cut pull's holes */
  cancel_sparse = 0;
  o.progress = NULL;
  o.cancel = NULL;
  o.bwlimit = 0;
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  CHECK_EQ_INT(xu_count_prefix(tc.dst, ".braid-partial-"), 0);
  /* the holes verified as zero chunks, and the two or more chunks of data
   * that came before the cut kept */
  CHECK(res.chunks_skipped >= 16 + 2);
  CHECK(res.chunks_moved <= 1 + 8 - 2);
  if (punch) CHECK(disk_bytes(tc.dst, "vol/d.0001.vdb") < size - hole / 2);
  free(prel), free(tail), free(path);
  xu_case_done(&tc);
}

TEST(many_snapshots_at_once) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-many", NULL);
  char *s1 = xu_path(tc.tmp, "s1"), *s2 = xu_path(tc.tmp, "s2");
  char *d1 = xu_path(tc.tmp, "d1"), *d2 = xu_path(tc.tmp, "d2");
  char *r1 = xu_ref(tc.x.url, "task/one"), *r2 = xu_ref(tc.x.url, "task/two");
  make_tree(s1, 10);
  xu_make_file(s2, "only.0001.exr", 5000, 11);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  const char *dirs[] = {s1, s2}, *refs[] = {r1, r2}, *dsts[] = {d1, d2};
  br_xfer_pair pairs[2] = {{0, 0}, {0, 0}};
  br_xfer_result res;
  br_error err;
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_push_many(dirs, refs, 2, &o, pairs, &res, &err), BR_OK);
  CHECK_EQ_INT(pairs[0].version, 1);
  CHECK_EQ_INT(pairs[1].version, 1);
  CHECK_EQ_INT(pairs[0].same_as + pairs[1].same_as, 0);
  /* again, the second tree changed: each pair says what it became */
  xu_make_file(s2, "only.0002.exr", 5000, 12);
  CHECK_EQ_INT(br_xfer_push_many(dirs, refs, 2, &o, pairs, &res, &err), BR_OK);
  CHECK_EQ_INT(pairs[0].version, 2);
  CHECK_EQ_INT(pairs[0].same_as, 1);
  CHECK_EQ_INT(res.same_as, 1);
  CHECK_EQ_INT(pairs[1].version, 2);
  CHECK_EQ_INT(pairs[1].same_as, 0);
  const char *olds[] = {r1, r2};
  char *r2v1 = NULL;
  if (asprintf(&r2v1, "%s@v1", r2) < 0) abort();
  olds[1] = r2v1;
  CHECK_EQ_INT(br_xfer_pull_many(olds, dsts, 2, &o, pairs, &res, &err), BR_OK);
  CHECK_EQ_INT(pairs[0].version, 2);
  CHECK_EQ_INT(pairs[1].version, 1);
  CHECK_EQ_INT(xu_tree_diff(s1, d1), 0);
  CHECK(xu_tree_diff(s2, d2) != 0); /* v1 lacks only.0002 */
  free(r2v1);
  free(s1), free(s2), free(d1), free(d2), free(r1), free(r2);
  xu_case_done(&tc);
}

/* Snapshots pulled into one folder (the pull node's layout merge) that
 * name one path: the same content there is written once; other contents,
 * or a file where another has a folder, refuse the pull before anything is
 * written, also when one destination lies inside the other. */
TEST(snapshots_into_one_folder_share_a_path_once_or_refuse) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-merge", NULL);
  char *s1 = xu_path(tc.tmp, "s1"), *s2 = xu_path(tc.tmp, "s2"), *s3 = xu_path(tc.tmp, "s3");
  char *s4 = xu_path(tc.tmp, "s4"), *s5 = xu_path(tc.tmp, "s5");
  xu_make_file(s1, "big", 1000 * 1000, 1); /* four chunks */
  xu_make_file(s1, "sub/x", 3000, 2);
  xu_make_file(s1, "one", 100, 3);
  xu_make_file(s2, "big", 1000 * 1000, 1); /* the same bytes */
  xu_make_file(s2, "sub/x", 3000, 2);
  xu_make_file(s2, "two", 200, 4);
  xu_make_file(s3, "big", 1000 * 1000, 5); /* other bytes */
  xu_make_file(s4, "x", 3000, 6);          /* for sub/x, through a nested destination */
  xu_make_file(s5, "sub", 10, 7);          /* a file where s1 has a folder */
  char *r[5];
  const char *names[] = {"m/1", "m/2", "m/3", "m/4", "m/5"}, *srcs[] = {s1, s2, s3, s4, s5};
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  for (int i = 0; i < 5; i++) {
    r[i] = xu_ref(tc.x.url, names[i]);
    xu_push_ok(srcs[i], r[i], &o, &res);
  }
  br_error err;
  br_error_clear(&err);
  char *m = xu_path(tc.tmp, "m"), *want = xu_path(tc.tmp, "want");
  const char *same[] = {r[0], r[1]}, *into[] = {m, m};
  CHECK_EQ_INT(br_xfer_pull_many(same, into, 2, &o, NULL, &res, &err), BR_OK);
  CHECK_EQ_INT(res.files, 6);
  CHECK_EQ_INT(res.files_moved, 4); /* big and sub/x once */
  xu_make_file(want, "big", 1000 * 1000, 1);
  xu_make_file(want, "sub/x", 3000, 2);
  xu_make_file(want, "one", 100, 3);
  xu_make_file(want, "two", 200, 4);
  CHECK_EQ_INT(xu_tree_diff(want, m), 0);

  char *m2 = xu_path(tc.tmp, "m2"), *m2sub = xu_path(tc.tmp, "m2/sub");
  const char *other[] = {r[0], r[2]}, *into2[] = {m2, m2};
  CHECK_EQ_INT(br_xfer_pull_many(other, into2, 2, &o, NULL, &res, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "m/1@v1 has big and m/3@v1 has big, both for ");
  CHECK_CONTAINS(err.msg, "/m2/big, as other contents: pull them into different folders");
  CHECK(access(m2, F_OK) != 0);
  const char *inside[] = {r[0], r[3]}, *into3[] = {m2, m2sub};
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_pull_many(inside, into3, 2, &o, NULL, &res, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "m/1@v1 has sub/x and m/4@v1 has x, both for ");
  CHECK_CONTAINS(err.msg, "/m2/sub/x, as other contents");
  CHECK(access(m2, F_OK) != 0);
  const char *kinds[] = {r[4], r[0]};
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_pull_many(kinds, into2, 2, &o, NULL, &res, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "m/5@v1 has sub and m/1@v1 has sub, both for ");
  CHECK_CONTAINS(err.msg, "/m2/sub, as a file and a folder");
  CHECK(access(m2, F_OK) != 0);
  for (int i = 0; i < 5; i++) free(r[i]);
  free(s1), free(s2), free(s3), free(s4), free(s5), free(m), free(want), free(m2), free(m2sub);
  xu_case_done(&tc);
}

static void count_damaged(void *ud, const char *what) {
  (void)what;
  (*(int *)ud)++;
}

static void damage(const char *path, int64_t off) {
  int fd = open(path, O_WRONLY);
  CHECK(fd >= 0 && pwrite(fd, "ZZZZ", 4, off) == 4);
  close(fd);
}

/* Objects damaged on the depot's disk, one loose and one packed: fsck
 * names both and leaves them; a pull that keeps receiving bad bytes asks
 * the depot, which reads its copies back and takes the damaged out, and
 * the pull fails as no network failure would (BR_EIO), saying what to do;
 * fsck with set_aside takes out the rest; a push of the tree then sends
 * them again and the pull works. A folder that is not a depot is left as
 * it was. */
TEST(damaged_depot_objects_are_taken_out_and_pushed_again) {
  xu_case tc;
  /* no packs in memory: the disk's bytes go */
  xu_case_start_cache(&tc, "xfer-pp-damaged", "dmg", -1);
  xu_make_file(tc.src, "big", 5 * 1024 * 1024, 1); /* chunks of 2, 2 and 1 MiB */
  uint8_t small[20000];
  for (size_t i = 0; i < sizeof small; i++) small[i] = (uint8_t)(i * 7 + 3);
  char *sp = xu_path(tc.src, "small");
  xu_write_file(sp, small, sizeof small);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  o.chunk_size = 2 * 1024 * 1024;
  o.retries = 2;
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  /* a 2 MiB chunk is a loose object: damage the first one found */
  char loose[400] = "", hex[80] = "";
  CHECK(strlen(tc.x.root) < 200);
  for (int i = 0; i < 256 && !loose[0]; i++) {
    char dir[300];
    snprintf(dir, sizeof dir, "%.200s/objects/%02x", tc.x.root, i);
    DIR *d = opendir(dir);
    for (struct dirent *de; d && (de = readdir(d));)
      if (strlen(de->d_name) == BR_XFER_HEX_LEN) {
        snprintf(hex, sizeof hex, "%.64s", de->d_name);
        snprintf(loose, sizeof loose, "%s/%.64s", dir, de->d_name);
        break;
      }
    if (d) closedir(d);
  }
  CHECK(loose[0]);
  damage(loose, 1000);
  /* and the small file's bytes in their pack */
  br_xfer_digest sd;
  br_xfer_sha256(small, sizeof small, &sd);
  br_xfer__store st;
  CHECK_EQ_INT(br_xfer__store_open(&st, tc.x.root, NULL), BR_OK);
  char rel[128], pack[400];
  int64_t off, len, raw;
  CHECK_EQ_INT(br_xfer__index_locate(&st, &sd, rel, sizeof rel, &off, &len, &raw), BR_OK);
  snprintf(pack, sizeof pack, "%s/%s", tc.x.root, rel);
  damage(pack, off + 100);
  br_xfer__store_close(&st);

  int told = 0;
  int64_t checked = 0, damaged = 0;
  br_error err;
  br_error_clear(&err);
  CHECK_EQ_INT(br_depot_fsck_ex(tc.x.root, false, count_damaged, &told, &checked, &damaged, &err),
               BR_EIO);
  CHECK_EQ_INT(damaged, 2);
  CHECK_EQ_INT(told, 2);
  CHECK_EQ_INT(checked, 2); /* the other chunks of big */
  CHECK_CONTAINS(err.msg, "2 damaged objects");
  CHECK(access(loose, F_OK) == 0); /* named, not moved */

  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_pull(tc.ref, tc.dst, &o, &res, &err), BR_EIO);
  CHECK_CONTAINS(err.msg, "found it damaged and took it out: push the tree that holds it again");
  char *log = xu_depot_log(&tc.x);
  CHECK_CONTAINS(log, "found as a client's bytes failed verification");
  free(log);
  br_error_clear(&err);
  CHECK_EQ_INT(br_depot_fsck_ex(tc.x.root, true, NULL, NULL, &checked, &damaged, &err),
               damaged ? BR_EIO : BR_OK);
  CHECK_EQ_INT(br_depot_fsck_ex(tc.x.root, false, NULL, NULL, &checked, &damaged, &err), BR_OK);
  CHECK_EQ_INT(damaged, 0);
  char *aside = NULL;
  if (asprintf(&aside, "%s/damaged/%s", tc.x.root, hex) < 0) abort();
  CHECK(access(loose, F_OK) != 0 && access(aside, F_OK) == 0);

  xu_push_ok(tc.src, tc.ref, &o, &res);
  CHECK_EQ_INT(res.chunks_moved, 2);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);

  char *plain = xu_path(tc.tmp, "plain");
  CHECK(mkdir(plain, 0755) == 0);
  br_error_clear(&err);
  CHECK_EQ_INT(br_depot_fsck(plain, &checked, &err), BR_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "is not a depot: it has no objects/ folder");
  br_depot_gc_result gr;
  CHECK_EQ_INT(br_depot_gc(plain, 0, false, &gr, &err), BR_ENOTFOUND);
  CHECK_EQ_INT(br_depot_rm(plain, "dmg", 1, &err), BR_ENOTFOUND);
  CHECK_EQ_INT(xu_count_prefix(plain, ""), 0);
  free(plain), free(aside), free(sp);
  xu_case_done(&tc);
}

/* The progress callback of a pull that changes a file in place as the
 * fetches start: the source of that pull's copies. */
typedef struct spoil {
  const char *path;
  bool done;
} spoil;

static void spoil_at_fetch(const br_xfer_progress *pr, void *ud) {
  spoil *s = ud;
  if (s->done || strcmp(pr->phase, "fetch") != 0) return;
  s->done = true;
  int fd = open(s->path, O_WRONLY);
  CHECK(fd >= 0 && pwrite(fd, "ZZZZ", 4, 0) == 4);
  close(fd);
}

/* A chunk named more than once is fetched once: files that repeat one
 * another, large or small, a file whose chunks repeat (a cache's zeros),
 * and a chunk of a file already in place is copied from it, not fetched. */
TEST(a_chunk_named_twice_is_fetched_once) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-twice", "twice");
  char *af = xu_path(tc.src, "a/f"), *bf = xu_path(tc.src, "b/f"), *z = xu_path(tc.src, "z");
  size_t len = 1024 * 1024; /* four chunks of 256 KiB */
  uint8_t *bytes = malloc(len);
  xu_fill(bytes, len, 1);
  xu_write_file(af, bytes, len);
  xu_write_file(bf, bytes, len);
  memcpy(bytes + 256 * 1024, bytes, 256 * 1024); /* one chunk four times, and a tail */
  memcpy(bytes + 512 * 1024, bytes, 256 * 1024);
  memcpy(bytes + 768 * 1024, bytes, 256 * 1024);
  xu_write_file(z, bytes, len - 1000);
  for (int i = 0; i < 20; i++) { /* small files, bundled: ten of one content, ten of another */
    char rel[64];
    snprintf(rel, sizeof rel, "frames/f.%04d.exr", i);
    xu_make_file(tc.src, rel, 3000, (uint64_t)(100 + i % 2));
  }
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  CHECK_EQ_INT(res.chunks_moved, 7); /* a/f's four, z's tail and two frames */
  char *dbf = xu_path(tc.dst, "b/f"), *dz = xu_path(tc.dst, "z");
  CHECK(unlink(dbf) == 0 && unlink(dz) == 0);
  for (int i = 2; i < 20; i++) {
    char rel[64];
    snprintf(rel, sizeof rel, "%s/frames/f.%04d.exr", tc.dst, i);
    CHECK(unlink(rel) == 0);
  }
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  CHECK_EQ_INT(res.chunks_moved, 1); /* z's tail; the rest from a/f and two frames, in place */
  CHECK_EQ_INT(res.files_moved, 20);
  /* a/f, the copies' source, changes after the pull found it in place:
   * each copy finds other bytes there, and is fetched after all */
  CHECK(unlink(dbf) == 0 && unlink(dz) == 0);
  char *daf = xu_path(tc.dst, "a/f");
  spoil sp = {daf, false};
  o.progress = spoil_at_fetch;
  o.progress_ud = &sp;
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK(sp.done);
  CHECK(res.chunks_moved >= 5); /* b/f's four, z's tail, and z's copies */
  char *cmp = NULL;
  if (asprintf(&cmp, "cmp -s '%s' '%s' && cmp -s '%s' '%s'", bf, dbf, z, dz) < 0) abort();
  CHECK_EQ_INT(system(cmp), 0);
  free(cmp);
  free(daf);
  free(bytes), free(af), free(bf), free(z), free(dbf), free(dz);
  xu_case_done(&tc);
}

/* A re-pull leaves a link that is already right alone (a folder the
 * puller may not write keeps working); a file where the snapshot has a
 * folder is named as such. */
TEST(links_in_place_stay_and_a_file_in_a_folders_place_is_named) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-inplace", "inplace");
  xu_make_file(tc.src, "d/f", 10, 1);
  char *link = xu_path(tc.src, "d/l"), *empty = xu_path(tc.src, "empty");
  CHECK(symlink("f", link) == 0);
  CHECK(mkdir(empty, 0755) == 0);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  char *dl = xu_path(tc.dst, "d/l"), *de = xu_path(tc.dst, "empty");
  struct stat a, b;
  CHECK(lstat(dl, &a) == 0 && S_ISLNK(a.st_mode));
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK(lstat(dl, &b) == 0 && b.st_ino == a.st_ino);
  CHECK(rmdir(de) == 0);
  xu_write_file(de, "x", 1);
  br_error err;
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_pull(tc.ref, tc.dst, &o, &res, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "/dst/empty exists and is not a folder, where the snapshot has a folder");
  free(link), free(empty), free(dl), free(de);
  xu_case_done(&tc);
}

TEST(clear_errors_for_auth_and_missing) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-errors", "e");
  xu_make_file(tc.src, "a", 10, 1);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  br_error err;
  br_error_clear(&err);
  o.token = "wrong";
  CHECK_EQ_INT(br_xfer_push(tc.src, tc.ref, &o, &res, &err), BR_EAUTH);
  CHECK_CONTAINS(err.msg, "401");
  o.token = NULL;
  CHECK_EQ_INT(br_xfer_pull(tc.ref, tc.dst, &o, &res, &err), BR_EAUTH);
  o.token = XU_TOKEN;
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_pull(tc.ref, tc.dst, &o, &res, &err), BR_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "no snapshot");
  xu_push_ok(tc.src, tc.ref, &o, &res);
  char *r9 = NULL;
  if (asprintf(&r9, "%s@v9", tc.ref) < 0) abort();
  CHECK_EQ_INT(br_xfer_pull(r9, tc.dst, &o, &res, &err), BR_ENOTFOUND);
  /* Nobody listening: retried, then a clear network error. */
  o.retries = 2;
  CHECK_EQ_INT(br_xfer_pull("depot://127.0.0.1:1/e", tc.dst, &o, &res, &err), BR_ENET);
  CHECK_CONTAINS(err.msg, "cannot reach the depot at http://127.0.0.1:1");
  CHECK(br_xfer_push("/nonexistent", tc.ref, &o, &res, &err) != BR_OK);
  CHECK(br_xfer_push(tc.src, "not a ref", &o, &res, &err) != BR_OK);
  free(r9);
  xu_case_done(&tc);
}

TEST(push_refuses_escaping_symlinks_and_devices) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-pushsafe", "s");
  xu_make_file(tc.src, "a/f", 10, 1);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  br_error err;
  br_error_clear(&err);
  char *l = xu_path(tc.src, "a/out");
  CHECK(symlink("../../../etc", l) == 0);
  CHECK_EQ_INT(br_xfer_push(tc.src, tc.ref, &o, &res, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "out of the tree");
  unlink(l);
  CHECK(symlink("/etc/passwd", l) == 0);
  CHECK_EQ_INT(br_xfer_push(tc.src, tc.ref, &o, &res, &err), BR_EINVAL);
  unlink(l);
  CHECK(mkfifo(l, 0644) == 0);
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_push(tc.src, tc.ref, &o, &res, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "fifo");
  unlink(l);
  char *bad = xu_path(tc.src, "a/CON");
  xu_write_file(bad, "x", 1);
  CHECK_EQ_INT(br_xfer_push(tc.src, tc.ref, &o, &res, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "'CON' is a reserved device name on Windows");
  /* one push names every refused path (the first four, then "and more"),
   * each with its reason, control bytes shown as \xNN */
  static const char *names[] = {"a/b:c", "a/del\x7f", "a/dot.", "a/q?"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char *p = xu_path(tc.src, names[i]);
    xu_write_file(p, "x", 1);
    free(p);
    if (i != 2) continue;
    br_error_clear(&err);
    CHECK_EQ_INT(br_xfer_push(tc.src, tc.ref, &o, &res, &err), BR_EINVAL);
    CHECK_CONTAINS(err.msg, ": 4 paths cannot be pushed: ");
    CHECK_CONTAINS(err.msg, "'a/CON': 'CON' is a reserved device name");
    CHECK_CONTAINS(err.msg, "'a/b:c': forbidden character ':'");
    CHECK_CONTAINS(err.msg, "'a/del\\x7f': control character \\x7f");
    CHECK_CONTAINS(err.msg, "'a/dot.': a name ends with a dot or a space");
    CHECK(strstr(err.msg, "and more") == NULL);
  }
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_push(tc.src, tc.ref, &o, &res, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, ": 5 paths cannot be pushed: ");
  CHECK_CONTAINS(err.msg, "; and more");
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char *p = xu_path(tc.src, names[i]);
    unlink(p);
    free(p);
  }
  unlink(bad);
  CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, &res), 1);
  free(bad);
  free(l);
  xu_case_done(&tc);
}

/* Writes a snapshot straight into the depot's store, past its checks, as a
 * compromised or buggy depot would serve it. */
static void plant_snapshot(xu_depot *x, const char *name, const char *json) {
  char rel[256];
  snprintf(rel, sizeof rel, "snapshots/%s/v1.json", name);
  char *p = xu_path(x->root, rel);
  xu_write_file(p, json, strlen(json));
  free(p);
}

TEST(pull_refuses_hostile_manifests) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-hostile", NULL);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  br_error err;
  struct {
    const char *name, *json;
  } cases[] = {
      {"dotdot", "{\"format\":1,\"chunk_size\":65536,\"files\":[{\"path\":\"../escaped\","
                 "\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[]}]}"},
      {"absolute", "{\"format\":1,\"chunk_size\":65536,\"files\":[{\"path\":\"/tmp/escaped\","
                   "\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[]}]}"},
      {"linkout", "{\"format\":1,\"chunk_size\":65536,\"files\":[{\"path\":\"l\","
                  "\"type\":\"symlink\",\"target\":\"../../../../etc\"}]}"},
      {"device", "{\"format\":1,\"chunk_size\":65536,\"files\":[{\"path\":\"d\","
                 "\"type\":\"chardev\"}]}"},
      {"reserved", "{\"format\":1,\"chunk_size\":65536,\"files\":[{\"path\":\"aux.txt\","
                   "\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[]}]}"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    plant_snapshot(&tc.x, cases[i].name, cases[i].json);
    char *ref = xu_ref(tc.x.url, cases[i].name);
    br_error_clear(&err);
    int rc = br_xfer_pull(ref, tc.dst, &o, &res, &err);
    if (rc != BR_EINVAL)
      br_test_fail(__FILE__, __LINE__, "case %s: rc %d (%s)", cases[i].name, rc, err.msg);
    CHECK_CONTAINS(err.msg, "refused");
    free(ref);
  }
  char *esc = xu_path(tc.tmp, "escaped");
  struct stat st;
  CHECK(stat(esc, &st) != 0);
  CHECK(stat("/tmp/escaped", &st) != 0);
  /* A huge manifest: refused by size, nothing allocated for it. */
  size_t big = 3 * 1024 * 1024;
  char *huge = malloc(big + 1);
  memset(huge, ' ', big);
  memcpy(huge, "{\"format\":1,\"chunk_size\":65536,\"files\":[", 40);
  memcpy(huge + big - 3, "]} ", 3);
  huge[big] = 0;
  plant_snapshot(&tc.x, "huge", huge);
  free(huge);
  /* The depot serves it; the client's limit (here lowered) refuses it. */
  char *ref = xu_ref(tc.x.url, "huge");
  xu_pull_ok(ref, tc.dst, &o, &res); /* within the default */
  o.max_manifest = 1024 * 1024;
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_pull(ref, tc.dst, &o, &res, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "larger than");
  free(ref);
  free(esc);
  xu_case_done(&tc);
}

TEST(pull_never_writes_through_planted_symlinks) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-planted", "p");
  char *outside = xu_path(tc.tmp, "outside");
  mkdir(outside, 0755);
  xu_make_file(tc.src, "sub/f.0001.exr", 100, 1);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  /* dst/sub is a symlink to a directory outside the tree. */
  mkdir(tc.dst, 0755);
  char *l = xu_path(tc.dst, "sub");
  CHECK(symlink(outside, l) == 0);
  br_error err;
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_pull(tc.ref, tc.dst, &o, &res, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "symlink");
  CHECK_EQ_INT(xu_count_prefix(outside, ""), 0);
  free(l);
  free(outside);
  xu_case_done(&tc);
}

/* A folder where the snapshot has a symlink: the pull fails naming it, and
 * leaves no temporary link behind. */
TEST(folder_in_a_links_place_fails_cleanly) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-linkdir", "l");
  xu_make_file(tc.src, "d/f", 10, 1);
  char *l = xu_path(tc.src, "dirlink");
  CHECK(symlink("d", l) == 0);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  xu_make_file(tc.dst, "dirlink/mine", 5, 2);
  br_error err;
  br_error_clear(&err);
  CHECK(br_xfer_pull(tc.ref, tc.dst, &o, &res, &err) != BR_OK);
  CHECK_CONTAINS(err.msg, "dst/dirlink exists and is a directory");
  CHECK_EQ_INT(xu_count_prefix(tc.dst, ".braid-partial-"), 0);
  free(l);
  xu_case_done(&tc);
}

TEST(content_cache_reuses_files_across_pulls) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-ccache", NULL);
  char *s1 = xu_path(tc.tmp, "s1"), *s2 = xu_path(tc.tmp, "s2"), *cc = xu_path(tc.tmp, "ccache");
  char *d1 = xu_path(tc.tmp, "task1"), *d2 = xu_path(tc.tmp, "task2"),
       *d3 = xu_path(tc.tmp, "task3");
  char *r1 = xu_ref(tc.x.url, "asset/one"), *r2 = xu_ref(tc.x.url, "asset/two");
  /* Two snapshots sharing 3 files (the same content under other names). */
  xu_make_file(s1, "tex/a.1001.exr", 30000, 1);
  xu_make_file(s1, "tex/b.1001.exr", 400000, 2);
  xu_make_file(s1, "geo/c.bgeo", 5000, 3);
  xu_make_file(s2, "a.exr", 30000, 1);
  xu_make_file(s2, "b.exr", 400000, 2);
  xu_make_file(s2, "c.bgeo", 5000, 3);
  xu_make_file(s2, "new.exr", 7000, 4);
  /* the same time too (a link shares it): as a file unchanged between two
   * versions of one asset has */
  const char *same[] = {"s1/tex/a.1001.exr", "s1/tex/b.1001.exr", "s1/geo/c.bgeo",
                        "s2/a.exr", "s2/b.exr", "s2/c.bgeo"};
  for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
    char *f = xu_path(tc.tmp, same[i]);
    struct timespec t[2] = {{0, UTIME_OMIT}, {1600000000, 123}};
    CHECK(utimensat(AT_FDCWD, f, t, 0) == 0);
    free(f);
  }
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  xu_push_ok(s1, r1, &o, &res);
  xu_push_ok(s2, r2, &o, &res);
  o.content_cache = cc;
  xu_pull_ok(r1, d1, &o, &res);
  CHECK_EQ_INT(res.files_reused, 0);
  xu_pull_ok(r2, d2, &o, &res);
  CHECK_EQ_INT(res.files_reused, 3);
  CHECK_EQ_INT(res.files_moved, 1); /* only new.exr came over the network */
  CHECK_EQ_INT(res.chunks_moved, 1);
  CHECK_EQ_INT(xu_tree_diff(s2, d2), 0);
  /* Hard links: one inode for task1's and task2's copy. */
  char *p1 = xu_path(d1, "tex/b.1001.exr"), *p2 = xu_path(d2, "b.exr");
  struct stat a, b;
  CHECK(stat(p1, &a) == 0 && stat(p2, &b) == 0);
  CHECK_EQ_INT(a.st_ino, b.st_ino);
  /* A cache entry changed behind braid's back is not used. */
  char *q = xu_path(d1, "geo/c.bgeo");
  xu_make_file(d1, "geo/c.bgeo", 5000, 99); /* rewrites the shared inode */
  xu_pull_ok(r2, d3, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(s2, d3), 0);
  CHECK_EQ_INT(res.files_reused, 3); /* a.exr, b.exr, and new.exr from task2 */
  /* A content cache that cannot be made (a file is in the way): the pull
   * goes on without it and says so. */
  char *d4 = xu_path(tc.tmp, "d4");
  o.content_cache = q;
  xu_pull_ok(r2, d4, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(s2, d4), 0);
  CHECK_EQ_INT(res.files_reused, 0);
  CHECK_CONTAINS(res.warning, "content cache: ");
  CHECK_CONTAINS(res.warning, "; pulled without it");
  free(d4);
  /* The same content with another mode is a copy, not a link: setting the
   * mode on a link would change it in the cache and in every checkout. */
  o.content_cache = cc;
  char *s3 = xu_path(tc.tmp, "s3"), *d5 = xu_path(tc.tmp, "task5"),
       *r3 = xu_ref(tc.x.url, "asset/x");
  xu_make_file(s3, "a.exr", 30000, 1);
  char *x3 = xu_path(s3, "a.exr"), *x5 = xu_path(d5, "a.exr"), *x2 = xu_path(d2, "a.exr");
  CHECK(chmod(x3, 0750) == 0);
  struct timespec t3[2] = {{0, UTIME_OMIT}, {1600000000, 123}}; /* only the mode differs */
  CHECK(utimensat(AT_FDCWD, x3, t3, 0) == 0);
  xu_push_ok(s3, r3, &o, &res);
  xu_pull_ok(r3, d5, &o, &res);
  struct stat s5, s2st, s1st;
  CHECK(stat(x5, &s5) == 0 && stat(x2, &s2st) == 0 && stat(p1, &s1st) == 0);
  CHECK_EQ_INT(s5.st_mode & 0777, 0750);
  CHECK_EQ_INT(s5.st_nlink, 1);
  CHECK_EQ_INT(s2st.st_mode & 0777, s1st.st_mode & 0777); /* untouched */
  CHECK(s2st.st_mode != s5.st_mode);
  /* pulled over task2's checkout, whose a.exr is a link: replaced by a copy */
  xu_pull_ok(r3, d2, &o, &res);
  CHECK(stat(x2, &s2st) == 0 && stat(p1, &s1st) == 0);
  CHECK_EQ_INT(s2st.st_mode & 0777, 0750);
  CHECK_EQ_INT(s2st.st_nlink, 1);
  CHECK(s1st.st_mode != s2st.st_mode); /* the cache's and task1's stay */
  /* The same content and mode with another time: a copy too, since a link
   * shares the time and setting it would change the cache's and task1's. */
  char *s4 = xu_path(tc.tmp, "s4"), *d6 = xu_path(tc.tmp, "task6"),
       *r4 = xu_ref(tc.x.url, "asset/t");
  xu_make_file(s4, "b.exr", 400000, 2);
  char *x4 = xu_path(s4, "b.exr"), *x6 = xu_path(d6, "b.exr");
  struct timespec old[2] = {{0, UTIME_OMIT}, {1500000000, 0}};
  CHECK(stat(p1, &s1st) == 0 && chmod(x4, s1st.st_mode & 0777) == 0);
  CHECK(utimensat(AT_FDCWD, x4, old, 0) == 0);
  xu_push_ok(s4, r4, &o, &res);
  xu_pull_ok(r4, d6, &o, &res);
  CHECK_EQ_INT(res.files_reused, 1);
  struct stat s6, s1now;
  CHECK(stat(x6, &s6) == 0 && stat(p1, &s1now) == 0);
  CHECK_EQ_INT(s6.st_mtim.tv_sec, 1500000000);
  CHECK_EQ_INT(s6.st_nlink, 1);
  CHECK_EQ_INT(s1now.st_mtim.tv_sec, s1st.st_mtim.tv_sec); /* untouched */
  CHECK_EQ_INT(s1now.st_mtim.tv_nsec, s1st.st_mtim.tv_nsec);
  CHECK_EQ_INT(xu_tree_diff(s4, d6), 0);
  /* pulled over task2's checkout, whose b.exr is a link: a copy there */
  char *x2b = xu_path(d2, "b.exr");
  xu_pull_ok(r4, d2, &o, &res);
  CHECK(stat(x2b, &s2st) == 0 && stat(p1, &s1now) == 0);
  CHECK_EQ_INT(s2st.st_mtim.tv_sec, 1500000000);
  CHECK_EQ_INT(s2st.st_nlink, 1);
  CHECK_EQ_INT(s1now.st_mtim.tv_sec, s1st.st_mtim.tv_sec);
  CHECK_EQ_INT(s1now.st_mtim.tv_nsec, s1st.st_mtim.tv_nsec);
  free(x2b);
  free(s4), free(d6), free(r4), free(x4), free(x6);
  free(s3), free(d5), free(r3), free(x3), free(x5), free(x2);
  free(q);
  free(p1), free(p2);
  free(s1), free(s2), free(cc), free(d1), free(d2), free(d3), free(r1), free(r2);
  xu_case_done(&tc);
}

TEST(tight_memory_bound_still_works) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-mem", "mem");
  make_tree(tc.src, 3);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  o.max_memory = 1; /* one request in flight */
  o.parallel = 32;
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  xu_case_done(&tc);
}

/* With the default options a push keeps 16 requests in flight and a pull
 * at most 4 (BR_XFER_PUSH_PARALLEL, BR_XFER_PULL_PARALLEL): through a proxy
 * that adds 40 ms to each round trip, one file to a request, each opens a
 * connection for each request in flight. */
TEST(push_keeps_16_requests_in_flight_and_pull_4) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-inflight", NULL);
  xproxy px;
  CHECK_EQ_INT(xp_start(&px, tc.x.port, 1), 0);
  px.delay_ms = 20;
  char url[64];
  snprintf(url, sizeof url, "depot://127.0.0.1:%d", px.port);
  char *ref = xu_ref(url, "inflight");
  xu_make_frames(tc.src, "f.%04d.bgeo", 0, 64, 20000, 0);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  o.bundle_bytes = 1; /* one file per request */
  br_xfer_result res;
  xu_push_ok(tc.src, ref, &o, &res);
  CHECK_EQ_INT(res.files_moved, 64);
  CHECK_EQ_INT(atomic_load(&px.max_conns), BR_XFER_PUSH_PARALLEL);
  CHECK_EQ_INT(xp_wait_closed(&px, 5.0), 0);
  atomic_store(&px.max_conns, 0);
  xu_pull_ok(ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  int pulled_by = atomic_load(&px.max_conns);
  CHECK(pulled_by > 1 && pulled_by <= BR_XFER_PULL_PARALLEL);
  xp_stop(&px);
  free(ref);
  xu_case_done(&tc);
}

/* Drops a file's pages from the page cache (written back first); true when
 * none is left there (false on a file system that keeps them, as tmpfs). */
static bool evict(const char *path) {
  int fd = open(path, O_RDONLY);
  CHECK(fd >= 0);
  struct stat st;
  CHECK(fstat(fd, &st) == 0);
  fdatasync(fd);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  bool gone = st.st_size > 0;
  void *m = st.st_size ? mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
  if (m != MAP_FAILED) {
    size_t pages = ((size_t)st.st_size + 4095) / 4096;
    unsigned char vec[64];
    CHECK(pages <= sizeof vec);
    CHECK(mincore(m, (size_t)st.st_size, vec) == 0);
    for (size_t i = 0; i < pages; i++) gone = gone && !(vec[i] & 1);
    munmap(m, (size_t)st.st_size);
  }
  close(fd);
  return gone;
}

TEST(a_tree_not_in_memory_is_read_ahead) {
  /* Small files whose bytes are not in the page cache are not read one at
   * a time: their reads are started and they are hashed after others
   * (more than a thread's ring of them here, on one thread). The tree goes
   * whole, and the next push finds nothing to hash or send. */
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-cold", "cold");
  make_tree(tc.src, 4);
  int cold = 0;
  char rel[128];
  for (int i = 1; i <= 40; i++) {
    snprintf(rel, sizeof rel, "cloth/cloth.%04d.bgeo", i);
    char *p = xu_path(tc.src, rel);
    cold += evict(p);
    free(p);
  }
  /* Where the page cache cannot be asked (no cachestat), the push tries a
   * read with RWF_NOWAIT, which starts the read itself: on a fast disk it
   * may find the bytes there and count no read ahead. */
  char *first = xu_path(tc.src, "cloth/cloth.0001.bgeo");
  int fd = open(first, O_RDONLY);
  CHECK(fd >= 0);
  bool asked = br_xfer__cached(fd, 0, 1300) >= 0;
  close(fd);
  free(first);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  o.hash_threads = 1;
  br_xfer_result res;
  CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, &res), 1);
  if (!cold) fprintf(stderr, "  (this file system keeps the pages: no read ahead seen)\n");
  else if (asked) CHECK_EQ_INT(res.files_read_ahead, cold);
  else fprintf(stderr, "  (no cachestat: %lld of %d read ahead)\n", (long long)res.files_read_ahead, cold);
  CHECK(res.files_read_ahead <= 40);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, &res), 2);
  CHECK_EQ_INT(res.files_moved, 0);
  xu_case_done(&tc);
}

TEST(depot_memory_bound_makes_clients_wait) {
  char *tmp = br_test_tmpdir("xfer-pp-depotmem");
  char *root = xu_path(tmp, "depot"), *tokens = xu_path(tmp, "tokens");
  xu_write_file(tokens, XU_TOKEN "\n", strlen(XU_TOKEN) + 1);
  br_depot_opts d = {0};
  d.root = root;
  d.listen = "127.0.0.1:0";
  d.token_file = tokens;
  d.max_memory = 300 * 1024; /* about one chunk at a time */
  br_depot *depot = NULL;
  CHECK_EQ_INT(br_depot_start(&d, &depot, NULL), BR_OK);
  char *src = xu_path(tmp, "src"), *dst = xu_path(tmp, "dst"), *ref = NULL;
  if (asprintf(&ref, "depot://127.0.0.1:%d/mem", br_depot_port(depot)) < 0) abort();
  xu_make_frames(src, "f.%04d.vdb", 0, 6, 600 * 1024, 0);
  br_xfer_opts o;
  xu_opts(&o, tmp);
  o.parallel = 8;
  o.retries = 30;
  br_xfer_result res;
  xu_push_ok(src, ref, &o, &res);
  xu_pull_ok(ref, dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(src, dst), 0);
  br_depot_stop(depot);
  free(src), free(dst), free(ref), free(root), free(tokens);
  xu_done(tmp);
}

static char *change_me;
static const void *change_with; /* NULL: "rewritten" */
static size_t change_len;

static void change_file_while_sending(const br_xfer_progress *p, void *ud) {
  (void)ud;
  if (change_me && strcmp(p->phase, "send") == 0) {
    if (change_with) xu_write_file(change_me, change_with, change_len);
    else xu_write_file(change_me, "rewritten", 9);
    free(change_me);
    change_me = NULL;
  }
}

/* 20 frames in src, and options under which f.0000.exr is rewritten when
 * the first upload starts: after it was hashed, before it is sent. */
static void frames_changed_while_sending(const char *tmp, const char *src, br_xfer_opts *o) {
  xu_make_frames(src, "f.%04d.exr", 0, 20, 20000, 0);
  xu_opts(o, tmp);
  o->parallel = 1;
  o->bundle_bytes = 1; /* one file per request */
  o->progress = change_file_while_sending;
  o->progress_interval = 0.000001;
  o->hash_threads = 1; /* f.0000 is hashed first, before anything is sent */
  change_me = xu_path(src, "f.0000.exr");
}

TEST(file_changed_during_push_is_reported) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-changed", "changed");
  br_xfer_opts o;
  frames_changed_while_sending(tc.tmp, tc.src, &o);
  o.small_file = 4096; /* not bundled: its chunk kept, the file looked at again as it goes */
  br_xfer_result res;
  br_error err;
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_push(tc.src, tc.ref, &o, &res, &err), BR_EIO);
  CHECK_CONTAINS(err.msg, "changed while it was pushed");
  /* Nothing was committed; pushing again takes the new content. */
  o.progress = NULL;
  CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, &res), 1);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  xu_case_done(&tc);
}

/* A file of many chunks is sent as it is hashed, its first chunks while
 * the rest is read. Rewritten once sending has started (with other bytes of
 * the same size), it is reported, whether the hashing or a later chunk's
 * read sees it first, and nothing is committed; the next push takes the
 * new bytes. */
TEST(large_file_changed_while_its_first_chunks_go_is_reported) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-grow-changed", "grow");
  size_t size = 64 * 65536 + 123;
  xu_make_file(tc.src, "cache.bgeo", size, 31);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  o.chunk_size = 65536;
  o.small_file = 4096;
  o.parallel = 1;
  o.hash_threads = 1;
  o.progress = change_file_while_sending;
  o.progress_interval = 0.000001;
  char *path = xu_path(tc.src, "cache.bgeo");
  uint8_t *other = malloc(size);
  xu_fill(other, size, 32);
  change_me = NULL;
  change_with = other;
  change_len = size;
  change_me = strdup(path);
  br_xfer_result res;
  br_error err;
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_push(tc.src, tc.ref, &o, &res, &err), BR_EIO);
  CHECK(strstr(err.msg, "changed while it was") != NULL);
  CHECK_CONTAINS(err.msg, "cache.bgeo");
  CHECK(change_me == NULL); /* it was rewritten */
  o.progress = NULL;
  CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, &res), 1);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  change_with = NULL;
  change_len = 0;
  free(other), free(path);
  xu_case_done(&tc);
}

/* Files of several chunks keep the chunks they hash while the memory bound
 * has room, and read the others again when they go: under a bound that
 * holds a few chunks, bodies mix the two, and chunks another file also
 * holds are let go unsent. The pulled tree is the pushed one. */
TEST(larger_files_kept_or_read_again_under_a_small_memory_bound) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-kept", "kept");
  xu_make_frames(tc.src, "sim/f.%04d.bgeo", 1, 40, 5 * 65536 + 77, 9);
  xu_make_frames(tc.src, "again/f.%04d.bgeo", 1, 3, 5 * 65536 + 77, 9); /* the same bytes */
  xu_make_frames(tc.src, "one/f.%04d.vdb", 1, 6, 65536 - 5, 10);        /* one chunk each */
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  o.chunk_size = 65536;
  o.small_file = 4096;
  o.bundle_bytes = 256 * 1024;
  o.max_memory = 1024 * 1024; /* about eight chunks kept at once */
  o.parallel = 2;
  o.hash_threads = 2;
  br_xfer_result res;
  CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, &res), 1);
  CHECK_EQ_INT((int)res.chunks_moved, 40 * 6 + 6);
  CHECK_EQ_INT(res.retries, 0); /* a body the depot refused would be sent again */
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  /* to another depot with room for all, no hash cache: every chunk kept */
  char *tmp2 = xu_path(tc.tmp, "second");
  CHECK(mkdir(tmp2, 0755) == 0);
  xu_depot y;
  xu_depot_start(&y, tmp2);
  o.max_memory = 0;
  o.cache_path = "";
  char *ref2 = xu_ref(y.url, "kept-all"), *dst2 = xu_path(tc.tmp, "dst2");
  CHECK_EQ_INT(xu_push_ok(tc.src, ref2, &o, &res), 1);
  CHECK_EQ_INT((int)res.chunks_moved, 40 * 6 + 6);
  CHECK_EQ_INT(res.retries, 0);
  xu_pull_ok(ref2, dst2, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, dst2), 0);
  free(dst2), free(ref2);
  xu_depot_stop(&y);
  free(tmp2);
  xu_case_done(&tc);
}

TEST(pull_with_an_fsync_per_file) {
  /* --sync files: every file and folder synced on its own, no syncfs; the
   * tree comes out the same, big files and small, in several folders. */
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-syncfiles", "sync");
  make_tree(tc.src, 3);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, &res), 1);
  o.sync_files = 1;
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  CHECK_EQ_INT(xu_count_prefix(tc.dst, ".braid-partial-"), 0);
  o.direct_io = 0; /* and through the page cache */
  char *dst2 = xu_path(tc.tmp, "dst2");
  xu_pull_ok(tc.ref, dst2, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, dst2), 0);
  free(dst2);
  xu_case_done(&tc);
}

/* Rewrites change_me with other bytes of the same size once a push has
 * asked the depot what it lacks (phase "compare": the hash cache knew
 * every file, so nothing was read yet). */
static void change_file_while_comparing(const br_xfer_progress *p, void *ud) {
  (void)ud;
  if (change_me && strcmp(p->phase, "compare") == 0) {
    char other[20000];
    memset(other, 'x', sizeof other);
    xu_write_file(change_me, other, sizeof other);
    free(change_me);
    change_me = NULL;
  }
}

/* Two depots, each in a folder of its own under tmp. */
static void two_depots_start(const char *tmp, xu_depot *x, xu_depot *y) {
  char *one = xu_path(tmp, "one"), *two = xu_path(tmp, "two");
  CHECK_EQ_INT(mkdir(one, 0755), 0);
  CHECK_EQ_INT(mkdir(two, 0755), 0);
  xu_depot_start(x, one);
  xu_depot_start(y, two);
  free(one), free(two);
}

TEST(file_known_to_the_hash_cache_changed_before_it_is_read_is_reported) {
  /* The hash cache knows every file (pushed to another depot before), so
   * the files are read only once this depot says it lacks them, by the
   * reading threads; one changed meanwhile, to other bytes of the same
   * size: the push says so and commits nothing. */
  char *tmp = br_test_tmpdir("xfer-pp-warm-changed");
  xu_depot x, y;
  two_depots_start(tmp, &x, &y);
  char *src = xu_path(tmp, "src"), *ref1 = xu_ref(x.url, "warm"), *ref2 = xu_ref(y.url, "warm");
  br_xfer_opts o;
  frames_changed_while_sending(tmp, src, &o);
  char *keep = change_me;
  change_me = NULL;
  br_xfer_result res;
  CHECK_EQ_INT(xu_push_ok(src, ref1, &o, &res), 1); /* the hash cache knows them now */
  change_me = keep;
  o.progress = change_file_while_comparing;
  br_error err;
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_push(src, ref2, &o, &res, &err), BR_EIO);
  CHECK(change_me == NULL);
  CHECK_CONTAINS(err.msg, "changed while it was pushed");
  CHECK_CONTAINS(err.msg, "f.0000.exr");
  CHECK_EQ_INT(res.retries, 0); /* caught as it was read, not by the depot */
  /* Nothing was committed; pushing again takes the new content. */
  o.progress = NULL;
  CHECK_EQ_INT(xu_push_ok(src, ref2, &o, &res), 1);
  char *dst = xu_path(tmp, "dst");
  xu_pull_ok(ref2, dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(src, dst), 0);
  free(dst), free(src), free(ref1), free(ref2);
  xu_depot_stop(&x);
  xu_depot_stop(&y);
  xu_done(tmp);
}

TEST(push_known_to_the_cache_asks_before_it_commits) {
  /* The hash cache knows every file. To a depot that has them all, the
   * commit goes at once; to one that lacks them (another depot here), a
   * question about a sample of chunks finds it out first, and no commit
   * of the whole manifest is sent to be refused (409). */
  char *tmp = br_test_tmpdir("xfer-pp-probe");
  xu_depot x, y;
  two_depots_start(tmp, &x, &y);
  xproxy px;
  CHECK_EQ_INT(xp_start(&px, y.port, 1), 0);
  /* counts the depot's 409s: cut once each is whole, which harms nothing */
  xp_set(&px, (xp_fault){XP_CUT, " 409 ", NULL, 0, 1000, -2, 0, 0, 0});
  char url[64];
  snprintf(url, sizeof url, "depot://127.0.0.1:%d", px.port);
  char *src = xu_path(tmp, "src"), *ref1 = xu_ref(x.url, "probe"), *ref2 = xu_ref(url, "probe");
  xu_make_frames(src, "f.%04d.bgeo", 0, 600, 3000, 0);
  br_xfer_opts o;
  xu_opts(&o, tmp);
  br_xfer_result res;
  CHECK_EQ_INT(xu_push_ok(src, ref1, &o, &res), 1);
  CHECK_EQ_INT(res.hashed_bytes, 600 * 3000);
  CHECK_EQ_INT(xu_push_ok(src, ref2, &o, &res), 1);
  CHECK_EQ_INT(res.hashed_bytes, 0); /* known to the hash cache */
  CHECK_EQ_INT(res.files_moved, 600);
  CHECK_EQ_INT(xp_hits(&px), 0);
  /* the depot has them all now: the commit goes first, and takes them */
  CHECK_EQ_INT(xu_push_ok(src, ref2, &o, &res), 2);
  CHECK_EQ_INT(res.files_moved, 0);
  CHECK_EQ_INT(xp_hits(&px), 0);
  char *dst = xu_path(tmp, "dst");
  xu_pull_ok(ref2, dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(src, dst), 0);
  xp_stop(&px);
  free(dst), free(src), free(ref1), free(ref2);
  xu_depot_stop(&x);
  xu_depot_stop(&y);
  xu_done(tmp);
}

TEST(small_file_changed_after_hashing_goes_as_hashed) {
  /* A small file's bytes are kept from its hashing to its upload: a change
   * after that is not in this version (which is consistent: the bytes it
   * names are the bytes hashed), and the next push takes it. */
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-kept", "kept");
  br_xfer_opts o;
  frames_changed_while_sending(tc.tmp, tc.src, &o);
  char *before = xu_path(tc.tmp, "before");
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "cp -a '%s' '%s'", tc.src, before);
  CHECK_EQ_INT(system(cmd), 0);
  br_xfer_result res;
  CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, &res), 1);
  CHECK(change_me == NULL); /* it did change during the push */
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(before, tc.dst), 0);
  o.progress = NULL;
  CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, &res), 2);
  CHECK_EQ_INT(res.files_moved, 1);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  free(before);
  xu_case_done(&tc);
}

TEST(many_small_files_in_big_bundles) {
  /* Hundreds of tiny files per request, both ways (bundles and packs). */
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-bigbundle", "tiny");
  char rel[64];
  for (int i = 0; i < 600; i++) {
    snprintf(rel, sizeof rel, "d%d/t.%04d.txt", i % 7, i);
    xu_make_file(tc.src, rel, 100 + (size_t)(i % 50) * 37, (uint64_t)i % 500); /* some dups */
  }
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  o.bundle_bytes = 8 * 1024 * 1024;
  o.parallel = 2;
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  br_depot_stop(tc.x.d);
  br_xfer__store st;
  CHECK_EQ_INT(br_xfer__store_open(&st, tc.x.root, NULL), BR_OK);
  int64_t n = 0;
  CHECK_EQ_INT(br_xfer__store_fsck(&st, &n, NULL), BR_OK);
  CHECK(n >= 500);
  br_xfer__store_close(&st);
  tc.x.d = NULL;
  xu_case_done(&tc);
}

TEST(default_sizes_round_trip) {
  /* The sizes braid uses by default: 8 MiB chunks, 1 MiB small files,
   * 8 MiB bundles. */
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-defaults", "def");
  xu_make_file(tc.src, "big.0001.vdb", 9 * 1024 * 1024 + 3, 1);
  xu_make_file(tc.src, "mid.0001.vdb", 1024 * 1024 + 1, 2);
  xu_make_frames(tc.src, "s/f.%04d.exr", 0, 150, 60000, 10);
  br_xfer_opts o;
  br_xfer_opts_init(&o);
  o.token = XU_TOKEN;
  char *cache = xu_path(tc.tmp, "cache.db");
  o.cache_path = cache;
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  CHECK_EQ_INT(res.chunks_moved, 2 + 1 + 150);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  free(cache);
  xu_case_done(&tc);
}

TEST(empty_trees_and_odd_names) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-odd", "odd");
  mkdir(tc.src, 0755);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, &res), 1); /* an empty tree is a snapshot too */
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(res.files, 0);
  /* Spaces and UTF-8 names travel; a name that is not UTF-8 is refused. */
  xu_make_file(tc.src, "plate v2/caf\xc3\xa9 \xe2\x80\x94 001.exr", 100, 1);
  CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, &res), 2);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
  xu_make_file(tc.src, "latin1-\xe9t\xe9.exr", 10, 2);
  br_error err;
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_push(tc.src, tc.ref, &o, &res, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "UTF-8");
  /* names that differ only in case are one file on macOS and Windows */
  char *latin1 = xu_path(tc.src, "latin1-\xe9t\xe9.exr");
  CHECK(unlink(latin1) == 0);
  free(latin1);
  xu_make_file(tc.src, "Shot/a.exr", 10, 3);
  xu_make_file(tc.src, "shot/b.exr", 10, 4);
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_push(tc.src, tc.ref, &o, &res, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "1 path cannot be pushed: unsafe path 'shot': 'Shot' differs from it "
                          "only in case (macOS and Windows keep one of the two)");
  xu_case_done(&tc);
}

/* Times before 1970 with a fraction of a second come back as they were;
 * a time past 2262-04-11 (the end of 64-bit nanoseconds) comes back as
 * that end, not wrapped and not the time of the pull; small and larger
 * files alike, and a second pull finds them in place. */
TEST(times_before_1970_and_past_2262) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-times", "times");
  const char *names[] = {"old", "far", "old-large", "far-large"};
  const struct timespec when[] = {{-157723200, 250000000}, {10413792000, 5}};
  for (int i = 0; i < 4; i++) {
    char *p = xu_path(tc.src, names[i]);
    xu_make_file(tc.src, names[i], i < 2 ? 10 : 600 * 1024, (uint64_t)i);
    struct timespec ts[2] = {when[i % 2], when[i % 2]};
    CHECK(utimensat(AT_FDCWD, p, ts, 0) == 0);
    free(p);
  }
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  for (int i = 0; i < 4; i++) {
    char *p = xu_path(tc.dst, names[i]);
    struct stat st;
    CHECK(stat(p, &st) == 0);
    if (i % 2 == 0) {
      CHECK_EQ_INT(st.st_mtim.tv_sec, -157723200);
      CHECK_EQ_INT(st.st_mtim.tv_nsec, 250000000);
    } else {
      CHECK_EQ_INT(st.st_mtim.tv_sec, INT64_MAX / 1000000000);
      CHECK_EQ_INT(st.st_mtim.tv_nsec, INT64_MAX % 1000000000);
    }
    free(p);
  }
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  CHECK_EQ_INT(res.files_moved, 0);
  xu_case_done(&tc);
}

/* Folders come back with their mode and mtime, set once all within them
 * is in place: a read-only folder too, and a pull of a new version into
 * it. A set-group-id bit a folder took from its parent (a shared show
 * folder) is kept. Before, folders were made 0755 less the umask, with the
 * time of the pull. */
TEST(folders_keep_their_mode_and_time) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-folders", "dirs");
  const char *dirs[] = {"a", "a/ro", "c", "c/empty"};
  const mode_t modes[] = {0750, 0555, 0775, 0700};
  xu_make_file(tc.src, "a/ro/frame.0001.bgeo", 3000, 1);
  xu_make_file(tc.src, "a/big.vdb", 600 * 1024, 2);
  xu_make_file(tc.src, "c/x", 10, 3);
  char *p = xu_path(tc.src, "c/latest");
  CHECK(symlink("x", p) == 0);
  free(p);
  p = xu_path(tc.src, "c/empty");
  CHECK(mkdir(p, 0755) == 0);
  free(p);
  for (int i = 3; i >= 0; i--) {
    p = xu_path(tc.src, dirs[i]);
    CHECK(chmod(p, modes[i]) == 0);
    struct timespec ts[2] = {{0, UTIME_OMIT}, {1500000000 + i * 1000, 1234 * i}};
    CHECK(utimensat(AT_FDCWD, p, ts, 0) == 0);
    free(p);
  }
  CHECK(mkdir(tc.dst, 0755) == 0 && chmod(tc.dst, 02775) == 0);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  for (int round = 0; round < 3; round++) {
    if (round == 2) { /* a new frame in the read-only folder, pulled over */
      p = xu_path(tc.src, "a/ro");
      CHECK(chmod(p, 0755) == 0);
      xu_make_file(tc.src, "a/ro/frame.0002.bgeo", 3000, 4);
      CHECK(chmod(p, 0555) == 0);
      struct timespec ts[2] = {{0, UTIME_OMIT}, {1500001000, 1234}};
      CHECK(utimensat(AT_FDCWD, p, ts, 0) == 0);
      free(p);
      CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, &res), 2);
    }
    xu_pull_ok(tc.ref, tc.dst, &o, &res);
    if (round == 1) CHECK_EQ_INT(res.files_moved, 0);
    if (round == 2) CHECK_EQ_INT(res.files_moved, 1);
    CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
    for (int i = 0; i < 4; i++) {
      p = xu_path(tc.dst, dirs[i]);
      struct stat st;
      CHECK(lstat(p, &st) == 0 && S_ISDIR(st.st_mode));
      CHECK_EQ_INT(st.st_mode & 07777, modes[i] | S_ISGID);
      CHECK_EQ_INT(st.st_mtim.tv_sec, 1500000000 + i * 1000);
      CHECK_EQ_INT(st.st_mtim.tv_nsec, 1234 * i);
      free(p);
    }
  }
  xu_case_done(&tc);
}

static void same_inode(const char *dir, const char *a, const char *b, bool same) {
  char *pa = xu_path(dir, a), *pb = xu_path(dir, b);
  struct stat sa, sb;
  CHECK(lstat(pa, &sa) == 0 && lstat(pb, &sb) == 0);
  if ((sa.st_ino == sb.st_ino) != same)
    br_test_fail(__FILE__, __LINE__, "%s and %s in %s: %s", a, b, dir,
                 same ? "not one file" : "one file");
  free(pa), free(pb);
}

/* Hard links come back as hard links: a small frame linked as latest, a
 * large cache under three names; a file whose other link is outside the
 * tree comes back alone. Only one of each is moved. A link the artist
 * broke in the destination is made again; a link broken at the source
 * comes back as two files. */
TEST(hard_links_come_back_as_links) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-hardlinks", "links");
  xu_make_file(tc.src, "cache/frame.0001.bgeo", 3000, 1);
  xu_make_file(tc.src, "big/sim.vdb", 700 * 1024, 2);
  xu_make_file(tc.src, "alone.txt", 10, 3);
  const char *links[][2] = {{"cache/frame.0001.bgeo", "latest.bgeo"},
                            {"big/sim.vdb", "a/sim-link.vdb"},
                            {"big/sim.vdb", "z.vdb"},
                            {"alone.txt", "../outside.txt"}};
  char *p = xu_path(tc.src, "a");
  CHECK(mkdir(p, 0755) == 0);
  free(p);
  for (int i = 0; i < 4; i++) {
    char *from = xu_path(tc.src, links[i][0]), *to = xu_path(tc.src, links[i][1]);
    CHECK(link(from, to) == 0);
    free(from), free(to);
  }
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  CHECK_EQ_INT(res.hashed_bytes, 3000 + 700 * 1024 + 10); /* each inode read once */
  for (int round = 0; round < 4; round++) {
    if (round == 2) { /* broken in the destination: a copy in the link's place */
      char *from = xu_path(tc.dst, "big/sim.vdb"), *to = xu_path(tc.dst, "z.vdb"), *tmpf;
      CHECK(asprintf(&tmpf, "%s.tmp", to) > 0);
      size_t len;
      char *b = br__read_file(from, &len);
      CHECK(b != NULL);
      xu_write_file(tmpf, b, len);
      CHECK(rename(tmpf, to) == 0);
      free(b), free(from), free(to), free(tmpf);
      same_inode(tc.dst, "big/sim.vdb", "z.vdb", false);
    }
    if (round == 3) { /* broken at the source: latest.bgeo is a file of its own */
      p = xu_path(tc.src, "latest.bgeo");
      CHECK(unlink(p) == 0);
      free(p);
      xu_make_file(tc.src, "latest.bgeo", 3000, 4);
      CHECK_EQ_INT(xu_push_ok(tc.src, tc.ref, &o, &res), 2);
    }
    xu_pull_ok(tc.ref, tc.dst, &o, &res);
    CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
    CHECK_EQ_INT(res.files_moved, round == 0 ? 3 : round == 3 ? 1 : 0);
    same_inode(tc.dst, "cache/frame.0001.bgeo", "latest.bgeo", round < 3);
    same_inode(tc.dst, "big/sim.vdb", "a/sim-link.vdb", true);
    same_inode(tc.dst, "big/sim.vdb", "z.vdb", true);
    p = xu_path(tc.dst, "alone.txt");
    struct stat st;
    CHECK(stat(p, &st) == 0);
    CHECK_EQ_INT(st.st_nlink, 1);
    free(p);
  }
  xu_case_done(&tc);
}

/* Where the file system will not make a hard link (here: the file has as
 * many links as ext4 allows, 65,000), the link's path gets a copy of the
 * file instead, with the snapshot's bytes, mode and time. */
TEST(a_hard_link_the_file_system_refuses_is_a_copy) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-emlink", "emlink");
  xu_make_file(tc.src, "f.bin", 3000, 1);
  char *f = xu_path(tc.src, "f.bin"), *g = xu_path(tc.src, "g.bin");
  CHECK(link(f, g) == 0);
  CHECK(chmod(f, 0640) == 0);
  struct timespec ts[2] = {{0, UTIME_OMIT}, {1600000000, 42}};
  CHECK(utimensat(AT_FDCWD, f, ts, 0) == 0);
  free(f), free(g);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  xu_pull_ok(tc.ref, tc.dst, &o, &res);
  same_inode(tc.dst, "f.bin", "g.bin", true);
  /* g.bin gone, and f.bin (kept in place by the next pull) at its most links */
  f = xu_path(tc.dst, "f.bin"), g = xu_path(tc.dst, "g.bin");
  CHECK(unlink(g) == 0);
  char *many = xu_path(tc.tmp, "many");
  CHECK(mkdir(many, 0755) == 0);
  bool full = false;
  for (int i = 0; i < 70000 && !full; i++) {
    char name[64];
    snprintf(name, sizeof name, "%s/%d", many, i);
    if (link(f, name) != 0) {
      CHECK_EQ_INT(errno, EMLINK);
      full = true;
    }
  }
  if (!full) {
    printf("skipped: this file system takes more than 70,000 links to a file\n");
  } else {
    xu_pull_ok(tc.ref, tc.dst, &o, &res);
    CHECK_EQ_INT(res.files_moved, 0);
    CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
    same_inode(tc.dst, "f.bin", "g.bin", false);
    struct stat st;
    CHECK(lstat(g, &st) == 0);
    CHECK_EQ_INT(st.st_nlink, 1);
    CHECK_EQ_INT(st.st_mode & 07777, 0640);
    CHECK_EQ_INT(st.st_mtim.tv_sec, 1600000000);
    CHECK_EQ_INT(st.st_mtim.tv_nsec, 42);
  }
  free(many), free(f), free(g);
  xu_case_done(&tc);
}

TEST(odd_sizes_direct_and_buffered) {
  /* Direct I/O writes whole aligned pieces and truncates a file back to its
   * size: sizes around the alignment and the chunk size, a chunk size that
   * is not aligned (those files are written buffered), and a pull that asks
   * for no direct I/O all give the same bytes. */
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-odd-sizes", NULL);
  static const size_t sizes[] = {1, 4095, 4096, 4097, 65537, 262144 * 3 + 1,
                                 1024 * 1024 + 5, 2621447};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    char rel[32];
    snprintf(rel, sizeof rel, "f.%04zu.bin", i);
    xu_make_file(tc.src, rel, sizes[i], 700 + i);
  }
  static const int64_t chunks[] = {256 * 1024, 100000};
  for (int c = 0; c < 2; c++)
    for (int direct = 0; direct < 2; direct++) {
      br_xfer_opts o;
      xu_opts(&o, tc.tmp);
      o.chunk_size = chunks[c];
      o.small_file = 4096; /* most files go as chunks, not bundles */
      o.direct_io = direct;
      char name[32], dname[32];
      snprintf(name, sizeof name, "odd%d", c);
      snprintf(dname, sizeof dname, "dst-%d-%d", c, direct);
      char *ref = xu_ref(tc.x.url, name), *dst = xu_path(tc.tmp, dname);
      br_xfer_result res;
      if (!direct) xu_push_ok(tc.src, ref, &o, &res);
      xu_pull_ok(ref, dst, &o, &res);
      CHECK_EQ_INT(xu_tree_diff(tc.src, dst), 0);
      free(ref);
      free(dst);
    }
  xu_case_done(&tc);
}

/* Modes and times of small files written through unnamed partials (each
 * file's own mode from its creation, chmod only when the umask takes bits
 * away), under a umask that takes some, and with so few fds that only some
 * partials can be unnamed; a destination that already holds older files
 * and a stale partial of one gets them replaced by name. */
static const mode_t modes[] = {0644, 0600, 0755, 0664, 0444, 0640, 0711};
#define NMODES (sizeof modes / sizeof modes[0])

static void check_modes(const char *src, const char *dst, int n) {
  for (int i = 0; i < n; i++) {
    char rel[64];
    snprintf(rel, sizeof rel, "m/f.%04d.bgeo", i);
    char *a = xu_path(src, rel), *b = xu_path(dst, rel);
    struct stat sa, sb;
    CHECK(stat(a, &sa) == 0 && stat(b, &sb) == 0);
    CHECK_EQ_INT(sb.st_mode & 0777, modes[i % NMODES]);
    CHECK_EQ_INT(sb.st_mtim.tv_sec, sa.st_mtim.tv_sec);
    CHECK_EQ_INT(sb.st_mtim.tv_nsec, sa.st_mtim.tv_nsec);
    free(a), free(b);
  }
}

TEST(small_files_keep_modes_through_unnamed_partials) {
  xu_case tc;
  xu_case_start(&tc, "xfer-pp-modes", "modes");
  enum { N = 300 };
  for (int i = 0; i < N; i++) {
    char rel[64];
    snprintf(rel, sizeof rel, "m/f.%04d.bgeo", i);
    xu_make_file(tc.src, rel, 500 + (size_t)i * 13, 4000 + (uint64_t)i);
    char *p = xu_path(tc.src, rel);
    struct timespec ts[2] = {{1700000000 + i, 123456789}, {1700000000 + i, 987654321}};
    CHECK(utimensat(AT_FDCWD, p, ts, 0) == 0);
    CHECK(chmod(p, modes[i % NMODES]) == 0);
    free(p);
  }
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  xu_pull_ok(tc.ref, tc.dst, &o, &res); /* a fresh destination */
  CHECK_EQ_INT(res.files_moved, N);
  check_modes(tc.src, tc.dst, N);
  CHECK_EQ_INT(xu_count_prefix(tc.dst, ".braid-partial-"), 0);
  xu_pull_ok(tc.ref, tc.dst, &o, &res); /* known to the hash cache: nothing moves */
  CHECK_EQ_INT(res.files_moved, 0);
  CHECK_EQ_INT(res.hashed_bytes, 0);

  mode_t old = umask(0027); /* takes bits from 0644, 0664, 0755 ... */
  struct rlimit rl, low;
  CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
  low = rl;
  low.rlim_cur = 530; /* room for a few unnamed partials at a time */
  CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
  char *dst2 = xu_path(tc.tmp, "dst2");
  xu_pull_ok(tc.ref, dst2, &o, &res);
  CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
  umask(old);
  CHECK_EQ_INT(res.files_moved, N);
  check_modes(tc.src, dst2, N);
  CHECK_EQ_INT(xu_tree_diff(tc.src, dst2), 0);

  /* Older content in place, and a stale partial beside one file. */
  char *dst3 = xu_path(tc.tmp, "dst3");
  for (int i = 0; i < N; i += 3) {
    char rel[64];
    snprintf(rel, sizeof rel, "m/f.%04d.bgeo", i);
    xu_make_file(dst3, rel, 77, 99 + (uint64_t)i);
  }
  char pn[64];
  br_xfer__partial_name("f.0001.bgeo", pn, sizeof pn);
  char prel[96];
  snprintf(prel, sizeof prel, "m/%s", pn);
  xu_make_file(dst3, prel, 10, 5);
  xu_pull_ok(tc.ref, dst3, &o, &res);
  CHECK_EQ_INT(res.files_moved, N);
  check_modes(tc.src, dst3, N);
  CHECK_EQ_INT(xu_tree_diff(tc.src, dst3), 0);
  CHECK_EQ_INT(xu_count_prefix(dst3, ".braid-partial-"), 0);
  free(dst3), free(dst2);
  xu_case_done(&tc);
}
