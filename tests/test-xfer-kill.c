/* Crashes and races, with the real `braid` binary: SIGKILL of the client
 * (pull and push) and of the depot at seeded random points, then a resume,
 * and the trees compare equal; at every kill, each file present under its
 * final name is complete and right, and every object in the depot matches
 * its digest. Two pushes to one name at once get consecutive versions. A
 * disk that fills up mid-pull (a small tmpfs) ends in a clear error and
 * succeeds once there is room. */
#include "xfer-util.h"

#include "xfer/xfer_int.h"

#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>

#define NFILES 30

typedef struct kx {
  char *tmp, *src, *dst, *tokfile, *cache, *log;
  const char *bin;
  char *paths[NFILES + 2];
  br_xfer_digest want[NFILES + 2];
  int npaths;
} kx;

static void kx_tree(kx *k, const char *name) {
  memset(k, 0, sizeof *k);
  k->tmp = br_test_tmpdir(name);
  setenv("BRAID_CACHE_DIR", k->tmp, 1); /* children keep no cache in $HOME */
  k->bin = getenv("BRAID_BIN");
  CHECK(k->bin != NULL);
  k->src = xu_path(k->tmp, "src");
  k->dst = xu_path(k->tmp, "dst");
  k->tokfile = xu_path(k->tmp, "client-token");
  k->cache = xu_path(k->tmp, "client-cache.db");
  k->log = xu_path(k->tmp, "log");
  xu_write_file(k->tokfile, XU_TOKEN "\n", strlen(XU_TOKEN) + 1);
  char rel[64];
  for (int i = 0; i < NFILES; i++) {
    snprintf(rel, sizeof rel, "sim/s.%04d.bgeo", i + 1);
    xu_make_file(k->src, rel, 20000 + (size_t)i * 100, 500 + (uint64_t)i);
    k->paths[k->npaths++] = strdup(rel);
  }
  xu_make_file(k->src, "sim/big.0001.vdb", 1536 * 1024, 1);
  k->paths[k->npaths++] = strdup("sim/big.0001.vdb");
  xu_make_file(k->src, "sim/big.0002.vdb", 1536 * 1024 + 99, 2);
  k->paths[k->npaths++] = strdup("sim/big.0002.vdb");
  for (int i = 0; i < k->npaths; i++) {
    char *p = xu_path(k->src, k->paths[i]);
    size_t len = 0;
    char *d = br__read_file(p, &len);
    br_xfer_sha256(d, len, &k->want[i]);
    free(d);
    free(p);
  }
}

static void kx_free(kx *k) {
  for (int i = 0; i < k->npaths; i++) free(k->paths[i]);
  free(k->src), free(k->dst), free(k->tokfile), free(k->cache), free(k->log);
  xu_done(k->tmp);
}

/* Every file under its final name is complete and right. */
static void check_visible(kx *k, const char *dir) {
  for (int i = 0; i < k->npaths; i++) {
    char *p = xu_path(dir, k->paths[i]);
    size_t len = 0;
    char *d = br__read_file(p, &len);
    if (d) {
      br_xfer_digest got;
      br_xfer_sha256(d, len, &got);
      if (memcmp(got.b, k->want[i].b, 32) != 0)
        br_test_fail(__FILE__, __LINE__, "%s is visible but wrong (%zu bytes)", p, len);
      free(d);
    }
    free(p);
  }
}

static pid_t spawn(kx *k, char **argv, int out_fd) {
  pid_t pid = fork();
  if (pid == 0) {
    int lf = open(k->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (lf >= 0) dup2(lf, 2);
    dup2(out_fd >= 0 ? out_fd : lf, 1);
    execv(argv[0], argv);
    _exit(127);
  }
  return pid;
}

static int wait_exit(pid_t pid) {
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void sleep_ms(int ms) { usleep((useconds_t)ms * 1000); }

static int run_pull(kx *k, const char *ref, const char *dst, const char *bw) {
  char *argv[] = {(char *)k->bin, "pull", "-q", "--token-file", k->tokfile, "--cache",
                  k->cache, "--bwlimit", (char *)bw, (char *)ref, (char *)dst, NULL};
  return wait_exit(spawn(k, argv, -1));
}

TEST(sigkill_client_pull_then_resume) {
  kx k;
  kx_tree(&k, "xfer-kill-pull");
  xu_depot x;
  xu_depot_start(&x, k.tmp);
  char *ref = xu_ref(x.url, "shot/kill");
  br_xfer_opts o;
  xu_opts(&o, k.tmp);
  xu_push_ok(k.src, ref, &o, NULL);
  unsigned seed = 42;
  for (int round = 0; round < 8; round++) {
    char *argv[] = {(char *)k.bin, "pull",   "-q",      "--token-file", k.tokfile, "--cache",
                    k.cache,       "--bwlimit", "3M",   ref,            k.dst,     NULL};
    pid_t pid = spawn(&k, argv, -1);
    sleep_ms(50 + (int)(rand_r(&seed) % 400));
    kill(pid, SIGKILL);
    wait_exit(pid);
    check_visible(&k, k.dst);
  }
  CHECK_EQ_INT(run_pull(&k, ref, k.dst, "0"), 0);
  CHECK_EQ_INT(xu_tree_diff(k.src, k.dst), 0);
  CHECK_EQ_INT(xu_count_prefix(k.dst, ".braid-partial-"), 0);
  free(ref);
  xu_depot_stop(&x);
  kx_free(&k);
}

TEST(sigkill_client_push_then_resume) {
  kx k;
  kx_tree(&k, "xfer-kill-push");
  xu_depot x;
  xu_depot_start(&x, k.tmp);
  char *ref = xu_ref(x.url, "shot/kpush");
  unsigned seed = 7;
  for (int round = 0; round < 6; round++) {
    char *argv[] = {(char *)k.bin, "push", "-q", "--token-file", k.tokfile, "--cache", k.cache,
                    "--chunk-size", "256K", "--bwlimit", "3M", k.src, ref, NULL};
    pid_t pid = spawn(&k, argv, -1);
    sleep_ms(50 + (int)(rand_r(&seed) % 400));
    kill(pid, SIGKILL);
    wait_exit(pid);
  }
  char *argv[] = {(char *)k.bin, "push", "-q", "--token-file", k.tokfile, "--cache", k.cache,
                  "--chunk-size", "256K", k.src, ref, NULL};
  CHECK_EQ_INT(wait_exit(spawn(&k, argv, -1)), 0);
  CHECK_EQ_INT(run_pull(&k, ref, k.dst, "0"), 0);
  CHECK_EQ_INT(xu_tree_diff(k.src, k.dst), 0);
  free(ref);
  xu_depot_stop(&x);
  kx_free(&k);
}

/* Starts `braid depot` as a child; returns its pid and port. */
static pid_t start_depot(kx *k, const char *root, const char *tokens, int port, int *out_port) {
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
  int fds[2];
  CHECK(pipe(fds) == 0);
  char *argv[] = {(char *)k->bin, "depot", "--root", (char *)root, "--token-file",
                  (char *)tokens, "--listen", listen, NULL};
  pid_t pid = spawn(k, argv, fds[1]);
  close(fds[1]);
  char line[256] = {0};
  size_t n = 0;
  while (n < sizeof line - 1) {
    ssize_t r = read(fds[0], line + n, 1);
    if (r <= 0 || line[n] == '\n') break;
    n++;
  }
  close(fds[0]);
  const char *colon = strstr(line, "127.0.0.1:");
  if (!colon) br_test_fail(__FILE__, __LINE__, "depot did not start: '%s'", line);
  *out_port = atoi(colon + 10);
  return pid;
}

/* Every object in the store (packed or loose) holds the bytes of its digest. */
static void check_objects(const char *root, bool some) {
  br_xfer__store st;
  br_error err;
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer__store_open(&st, root, &err), BR_OK);
  int64_t n = 0;
  int rc = br_xfer__store_fsck(&st, &n, &err);
  if (rc) br_test_fail(__FILE__, __LINE__, "depot store: %s", err.msg);
  br_xfer__store_close(&st);
  if (some) CHECK(n > 0);
}

typedef struct pusher {
  const char *src, *ref;
  br_xfer_opts *o;
  int rc;
  br_error err;
} pusher;

static void *push_thread(void *arg) {
  pusher *p = arg;
  br_xfer_result res;
  br_error_clear(&p->err);
  p->rc = br_xfer_push(p->src, p->ref, p->o, &res, &p->err);
  return NULL;
}

TEST(sigkill_depot_during_push_then_resume) {
  kx k;
  kx_tree(&k, "xfer-kill-depot");
  char *root = xu_path(k.tmp, "depot"), *tokens = xu_path(k.tmp, "tokens");
  xu_write_file(tokens, XU_TOKEN "\n", strlen(XU_TOKEN) + 1);
  int port = 0;
  pid_t depot = start_depot(&k, root, tokens, 0, &port);
  char url[128];
  snprintf(url, sizeof url, "depot://127.0.0.1:%d/shot/kdepot", port);
  br_xfer_opts o;
  xu_opts(&o, k.tmp);
  o.bwlimit = 3 * 1024 * 1024;
  o.retries = 40;
  o.backoff_ms = 20;
  o.timeout_s = 2;
  unsigned seed = 99;
  for (int round = 0; round < 4; round++) {
    /* Each round changes a file so there is something to send. */
    char rel[64];
    snprintf(rel, sizeof rel, "sim/s.%04d.bgeo", round + 1);
    xu_make_file(k.src, rel, 30000, 7000 + (uint64_t)round);
    xu_make_file(k.src, "sim/big.0001.vdb", 1536 * 1024, 50 + (uint64_t)round);
    pusher p = {k.src, url, &o, 0, {0}};
    pthread_t th;
    pthread_create(&th, NULL, push_thread, &p);
    sleep_ms(30 + (int)(rand_r(&seed) % 300));
    kill(depot, SIGKILL);
    wait_exit(depot);
    check_objects(root, false);
    sleep_ms(100);
    int again = 0;
    depot = start_depot(&k, root, tokens, port, &again);
    CHECK_EQ_INT(again, port);
    pthread_join(th, NULL);
    if (p.rc) br_test_fail(__FILE__, __LINE__, "push after depot restart: %s", p.err.msg);
  }
  check_objects(root, true);
  /* The latest version is the tree as it is now. */
  xu_opts(&o, k.tmp);
  xu_pull_ok(url, k.dst, &o, NULL);
  CHECK_EQ_INT(xu_tree_diff(k.src, k.dst), 0);
  kill(depot, SIGTERM);
  CHECK_EQ_INT(wait_exit(depot), 0);
  free(root);
  free(tokens);
  kx_free(&k);
}

TEST(two_pushes_to_one_name_at_once) {
  kx k;
  kx_tree(&k, "xfer-kill-race");
  xu_depot x;
  xu_depot_start(&x, k.tmp);
  char *ref = xu_ref(x.url, "shot/race");
  char *src2 = xu_path(k.tmp, "src2");
  xu_make_file(src2, "other.0001.exr", 50000, 3);
  int out[2][2];
  pid_t pids[2];
  const char *srcs[2] = {k.src, src2};
  for (int i = 0; i < 2; i++) {
    CHECK(pipe(out[i]) == 0);
    char *argv[] = {(char *)k.bin, "push", "-q", "--token-file", k.tokfile, "--no-cache",
                    (char *)srcs[i], ref, NULL};
    pids[i] = spawn(&k, argv, out[i][1]);
    close(out[i][1]);
  }
  int seen[3] = {0};
  for (int i = 0; i < 2; i++) {
    char line[128] = {0};
    ssize_t n = read(out[i][0], line, sizeof line - 1);
    close(out[i][0]);
    CHECK_EQ_INT(wait_exit(pids[i]), 0);
    CHECK(n > 0);
    const char *at = strstr(line, "@v");
    CHECK(at != NULL);
    int v = atoi(at + 2);
    CHECK(v == 1 || v == 2);
    seen[v]++;
  }
  CHECK_EQ_INT(seen[1], 1);
  CHECK_EQ_INT(seen[2], 1);
  free(src2);
  free(ref);
  xu_depot_stop(&x);
  kx_free(&k);
}

/* A small tmpfs mounted at dir (made first), for a disk that fills up;
 * false, said, where this machine cannot mount one. */
static bool small_disk(const char *dir, const char *size) {
  mkdir(dir, 0755);
  char opt[32];
  snprintf(opt, sizeof opt, "size=%s", size);
  if (mount("tmpfs", dir, "tmpfs", 0, opt) == 0) return true;
  printf("skipped: cannot mount a small tmpfs here (%s)\n", strerror(errno));
  return false;
}

TEST(disk_full_mid_pull) {
  kx k;
  kx_tree(&k, "xfer-kill-diskfull");
  xu_depot x;
  xu_depot_start(&x, k.tmp);
  char *ref = xu_ref(x.url, "shot/full");
  br_xfer_opts o;
  xu_opts(&o, k.tmp);
  br_xfer_result res;
  br_error err;
  br_error_clear(&err);
  xu_push_ok(k.src, ref, &o, &res);
  if (!small_disk(k.dst, "1m")) {
    xu_depot_stop(&x);
    kx_free(&k);
    return;
  }
  br_error_clear(&err);
  int rc = br_xfer_pull(ref, k.dst, &o, &res, &err);
  CHECK_EQ_INT(rc, BR_EIO);
  CHECK_CONTAINS(err.msg, "disk full");
  check_visible(&k, k.dst); /* what is there is whole; the rest is not there */
  CHECK(mount("tmpfs", k.dst, "tmpfs", MS_REMOUNT, "size=16m") == 0);
  xu_pull_ok(ref, k.dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(k.src, k.dst), 0);
  umount(k.dst);
  free(ref);
  xu_depot_stop(&x);
  kx_free(&k);
}

TEST(disk_full_with_small_files_only) {
  /* Small files are written by installer threads: their errors must stop
   * the pull as clearly, and never put a file in place. */
  xu_case tc;
  xu_case_start(&tc, "xfer-kill-diskfull-small", "small");
  setenv("BRAID_CACHE_DIR", tc.tmp, 1);
  xu_make_frames(tc.src, "f.%04d.exr", 0, 120, 20000, 0);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  br_error err;
  br_error_clear(&err);
  xu_push_ok(tc.src, tc.ref, &o, &res);
  if (small_disk(tc.dst, "1m")) {
    br_error_clear(&err);
    CHECK_EQ_INT(br_xfer_pull(tc.ref, tc.dst, &o, &res, &err), BR_EIO);
    CHECK_CONTAINS(err.msg, "disk full");
    /* Whatever is visible is whole and right. */
    CHECK(xu_tree_diff(tc.src, tc.dst) != 0);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && for f in *.exr; do [ -e \"$f\" ] || continue; "
             "cmp -s \"$f\" '%s'/\"$f\" || exit 1; done",
             tc.dst, tc.src);
    CHECK_EQ_INT(system(cmd), 0);
    CHECK(mount("tmpfs", tc.dst, "tmpfs", MS_REMOUNT, "size=16m") == 0);
    xu_pull_ok(tc.ref, tc.dst, &o, &res);
    CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
    umount(tc.dst);
  }
  xu_case_done(&tc);
}

/* A sparse file (a cache of 64 MiB, 2 chunks of it data, the rest zeros)
 * pulls onto a disk with room for its data but not its size: only the
 * chunks of data are reserved, and it takes no more than their room
 * there. Before, the new partial was reserved at its whole size first,
 * and the pull failed "disk full" on an 8 MiB disk. */
TEST(a_sparse_file_needs_the_room_of_its_data) {
  xu_case tc;
  xu_case_start(&tc, "xfer-kill-sparse-room", "sparse");
  setenv("BRAID_CACHE_DIR", tc.tmp, 1);
  xu_make_file(tc.src, "sim.vdb", 0, 0);
  char *p = xu_path(tc.src, "sim.vdb");
  int fd = open(p, O_WRONLY);
  CHECK(fd >= 0);
  CHECK(ftruncate(fd, 64 << 20) == 0);
  uint8_t data[256 * 1024]; /* one chunk of xu_opts */
  for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 7 + 1);
  CHECK(pwrite(fd, data, sizeof data, 0) == (ssize_t)sizeof data);
  CHECK(pwrite(fd, data, sizeof data - 100, 40 << 20) == (ssize_t)sizeof data - 100);
  close(fd);
  free(p);
  br_xfer_opts o;
  xu_opts(&o, tc.tmp);
  br_xfer_result res;
  xu_push_ok(tc.src, tc.ref, &o, &res);
  if (small_disk(tc.dst, "8m")) {
    xu_pull_ok(tc.ref, tc.dst, &o, &res);
    CHECK_EQ_INT(res.chunks_moved, 2);
    CHECK_EQ_INT(xu_tree_diff(tc.src, tc.dst), 0);
    struct stat st;
    p = xu_path(tc.dst, "sim.vdb");
    CHECK(stat(p, &st) == 0);
    CHECK_EQ_INT(st.st_size, 64 << 20);
    CHECK((int64_t)st.st_blocks * 512 <= 2 * (int64_t)sizeof data + 64 * 1024);
    free(p);
    umount(tc.dst);
  }
  xu_case_done(&tc);
}
