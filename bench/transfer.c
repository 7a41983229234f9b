/* bench-transfer: braid push/pull over loopback against rsync to an rsync
 * daemon on loopback, in the same run, printed as ratios; large files also
 * against cp on the same disk; and small files through the test proxy with
 * added latency and a bandwidth cap (files per second against what the cap
 * allows).
 *
 *   bench-transfer [--quick] [--scale F] [--repeat N] [--dir DIR] [--keep] [--only CASE]
 *                  [--braid PATH] [--no-page-reporting]
 *   (CASE: small, medium, large, latency; or floors, the small files' floors alone)
 *
 * Full size (the cases): 10,000 x 64 KiB, 1,000 x 10 MB, 2 x 2 GiB,
 * an unchanged push of the 10,000, and 2,000 x 100 KiB pushed and pulled
 * at 30 ms RTT and 200 Mbit/s each way. --quick divides the counts and
 * sizes so a run takes minutes. --repeat N measures every row N times (a
 * fresh depot and rsync module each time, braid first and rsync first in
 * turn) and prints medians: on a shared machine one run says little.
 * Note: braid syncs every file it writes (depot and pull); rsync does not.
 * Many small files also print floors, measured in the run: the least a
 * verified, durable checkout and push of the tree cost on this disk, from
 * memory (floor_tree), and a bare program's push, with the reading of the
 * files and the loopback between its two ends (wire_floor). Large files
 * are also timed against cp with a sync, twice: the source in memory (as a
 * push reads it) and read from the disk (as a pull reads the depot's
 * objects, which the depot keeps out of the page cache); and the time
 * SHA-256 of their bytes takes on
 * every core (hash_floor). A ratio a floor already rules out is the
 * machine's, not the code's. On ext4 without a journal, each case starts
 * a minute after the last removal of files (fs_settle). */
#include <braid/xfer.h>

#include "../tests/xfer-proxy.h"
#include "xfer/xfer_int.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#define TOKEN "bench-token"

typedef struct bench {
  char dir[512];
  br_depot *depot;   /* in this process, without --braid */
  const char *braid; /* else the depot is `braid depot`, a process of its own */
  pid_t depot_pid;
  int dport, rport;
  pid_t rsyncd;
  char cache[600];
  char tokens[600];
  br_xfer_opts o;
  int repeat;
} bench;

static double now(void) { return xp_now(); }

static pid_t rsyncd_pid, depot_pid; /* stopped on the way out, even by die() */

static void die(const char *fmt, const char *arg) {
  if (rsyncd_pid > 0) kill(rsyncd_pid, SIGTERM);
  if (depot_pid > 0) kill(depot_pid, SIGTERM);
  fprintf(stderr, "bench-transfer: ");
  fprintf(stderr, fmt, arg);
  fputc('\n', stderr);
  exit(1);
}

/* ---- free page reporting ----
 * A virtual machine with virtio-balloon free page reporting hands the memory
 * its guest frees back to the host, and the guest's next use of it waits for
 * the host. rsync and cp write through the page cache and pay that on every
 * run; braid's depot and pull write with O_DIRECT and do not. On the VM these
 * figures were measured on, rsync's push of the small files took 2.6-3.7 s
 * with reporting on and 1.35-1.6 s with it off; braid's took 0.9 s either
 * way. --no-page-reporting (root) turns reporting off for the run: an order
 * above the largest block the kernel frees means no block is ever reported. */
#define REPORTING_ORDER "/sys/module/page_reporting/parameters/page_reporting_order"
#define REPORTING_OFF "11"

static char reporting_was[16]; /* the order to set back; "" when unchanged */

static bool read_line(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = read(fd, buf, cap - 1);
  close(fd);
  if (n <= 0) return false;
  buf[n] = 0;
  buf[strcspn(buf, "\n")] = 0;
  return true;
}

/* A balloon device that offered free page reporting (feature bit 5). */
static bool balloon_reports(void) {
  glob_t g;
  bool on = false;
  if (glob("/sys/bus/virtio/drivers/virtio_balloon/virtio*/features", 0, NULL, &g) != 0)
    return false;
  for (size_t i = 0; i < g.gl_pathc && !on; i++) {
    char f[128];
    on = read_line(g.gl_pathv[i], f, sizeof f) && strlen(f) > 5 && f[5] == '1';
  }
  globfree(&g);
  return on;
}

/* Async-signal-safe: also run from the SIGINT and SIGTERM handler. */
static void reporting_restore(void) {
  if (!reporting_was[0]) return;
  int fd = open(REPORTING_ORDER, O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (write(fd, reporting_was, strlen(reporting_was)) < 0) {}
    close(fd);
  }
  reporting_was[0] = 0;
}

/* Ctrl-C: the daemons stopped and reporting set back, as on the way out. */
static void on_stop_signal(int sig) {
  if (rsyncd_pid > 0) kill(rsyncd_pid, SIGTERM);
  if (depot_pid > 0) kill(depot_pid, SIGTERM);
  reporting_restore();
  signal(sig, SIG_DFL);
  raise(sig);
}

/* Says whether reporting is on; with off, turns it off until the end. */
static void reporting_setup(bool off) {
  char order[16];
  bool reports = balloon_reports() && read_line(REPORTING_ORDER, order, sizeof order);
  if (!reports) {
    if (off) printf("memory: no free page reporting here (--no-page-reporting changes nothing)\n");
    return;
  }
  if (!off) {
    printf("memory: this VM hands freed memory back to its host (free page reporting, order "
           "%s):\n        rsync's and cp's page-cache writes pay to get it back, braid's "
           "direct writes do not,\n        so the ratios against them read high; "
           "--no-page-reporting (root) turns it off for the run\n", order);
    return;
  }
  if (strcmp(order, REPORTING_OFF) == 0) {
    printf("memory: free page reporting already off (order %s)\n", order);
    return;
  }
  int fd = open(REPORTING_ORDER, O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write(fd, REPORTING_OFF, strlen(REPORTING_OFF)) < 0) {
    char why[300];
    snprintf(why, sizeof why, "%s (%s)", REPORTING_ORDER, strerror(errno));
    if (fd >= 0) close(fd);
    die("--no-page-reporting: cannot write %s; it needs root", why);
  }
  close(fd);
  snprintf(reporting_was, sizeof reporting_was, "%s", order);
  atexit(reporting_restore);
  printf("memory: free page reporting off for this run (order %s -> %s, set back at the end)\n",
         order, REPORTING_OFF);
}

/* ext4 without a journal does not give out an inode again within 60 s of
 * its deletion (up to 6 minutes while the inode table is unsynced): each
 * file created meanwhile first steps over the recently deleted inodes of
 * its block group, which costs braid and rsync alike and far more than
 * the files' writes. Such a file system makes every ratio depend on what
 * was deleted in the minutes before. Seen on the VM of the figures in the
 * README: 10,000 creations took 0.5 s or 1.7 s by that alone. */
#define SETTLE_S 61
static bool fs_nojournal;
static double fs_deleted_at; /* when the bench last removed many files */

static bool ext4_without_journal(const char *dir) {
  struct statfs sf;
  struct stat st;
  if (statfs(dir, &sf) != 0 || sf.f_type != 0xEF53 || stat(dir, &st) != 0) return false;
  char link[128], target[512];
  snprintf(link, sizeof link, "/sys/dev/block/%u:%u", major(st.st_dev), minor(st.st_dev));
  ssize_t n = readlink(link, target, sizeof target - 1);
  if (n <= 0) return false;
  target[n] = 0;
  const char *dev = strrchr(target, '/') ? strrchr(target, '/') + 1 : target;
  char ext4[700];
  snprintf(ext4, sizeof ext4, "/proc/fs/ext4/%s", dev);
  DIR *d = access(ext4, F_OK) == 0 ? opendir("/proc/fs/jbd2") : NULL;
  if (!d) return false; /* not this device's ext4, or no jbd2 at all: cannot tell */
  bool journal = false;
  size_t len = strlen(dev);
  for (struct dirent *e; (e = readdir(d));)
    if (strncmp(e->d_name, dev, len) == 0 && e->d_name[len] == '-') journal = true;
  closedir(d);
  return !journal;
}

/* On such a file system: syncs, then waits out the minute after the
 * bench's last removal of many files (at the start: after any removal). */
static void fs_settle(void) {
  if (!fs_nojournal) return;
  sync();
  double wait = fs_deleted_at + SETTLE_S - xp_now();
  if (wait <= 0) return;
  printf("  (waiting %.0fs for the file system, see above)\n", wait);
  fflush(stdout);
  usleep((useconds_t)(wait * 1e6));
}

static void sh(const char *cmd) {
  int rc = system(cmd);
  if (rc != 0) die("command failed: %s", cmd);
}

/* Every timed step starts with nothing dirty in the page cache, so no step
 * pays for the write-back of the one before. */
static double timed_sh(const char *cmd) {
  sync();
  double t = now();
  sh(cmd);
  return now() - t;
}

static int drop_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
  (void)st, (void)ftw;
  if (type != FTW_F) return 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("cannot open %s", path);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
  return 0;
}

/* The page cache lets go of the files under dir (synced first, so none is
 * dirty): a copy of them then reads them from the disk. */
static void drop_cached(const char *dir) {
  sync();
  if (nftw(dir, drop_one, 16, FTW_PHYS) != 0) die("cannot walk %s", dir);
}

/* cp of the tree src to a copy beside it, with a final sync, as braid syncs
 * what it writes: its time (the copy is removed after). */
static double timed_cp(bench *b, const char *src, const char *name) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "cp -r '%s' '%s/%s-cp' && sync", src, b->dir, name);
  double t = timed_sh(cmd);
  snprintf(cmd, sizeof cmd, "rm -rf '%s/%s-cp'", b->dir, name);
  sh(cmd);
  return t;
}

static void write_random(const char *path, int64_t size, uint64_t seed) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) die("cannot create %s", path);
  size_t bs = 1 << 20;
  uint64_t *buf = malloc(bs);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t off = 0; off < size; off += (int64_t)bs) {
    for (size_t i = 0; i < bs / 8; i++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      buf[i] = x;
    }
    size_t n = size - off < (int64_t)bs ? (size_t)(size - off) : bs;
    if (write(fd, buf, n) != (ssize_t)n) die("write %s failed", path);
  }
  free(buf);
  close(fd);
}

static void make_tree(const char *dir, int n, int64_t size, uint64_t seed) {
  char cmd[8192], path[1024];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
  sh(cmd);
  for (int i = 0; i < n; i++) {
    snprintf(path, sizeof path, "%s/f.%05d.bgeo", dir, i + 1);
    write_random(path, size, seed + (uint64_t)i);
  }
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, (struct sockaddr *)&sa, sizeof sa);
  socklen_t sl = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  close(fd);
  return ntohs(sa.sin_port);
}

/* A depot on a fresh root (the last one stops). */
static void depot_stop(bench *b) {
  if (b->depot) br_depot_stop(b->depot);
  b->depot = NULL;
  if (b->depot_pid > 0) {
    kill(b->depot_pid, SIGTERM);
    waitpid(b->depot_pid, NULL, 0);
  }
  b->depot_pid = depot_pid = 0;
}

/* A fresh depot on DIR/name: `braid depot` in a process of its own, as a
 * studio runs it (with --braid), or a depot in this process. */
static void depot_at(bench *b, const char *name) {
  depot_stop(b);
  char root[1024];
  snprintf(root, sizeof root, "%s/%s", b->dir, name);
  if (b->braid) {
    char listen[64], log[1100];
    b->dport = free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", b->dport);
    snprintf(log, sizeof log, "%s.log", root);
    b->depot_pid = depot_pid = fork();
    if (b->depot_pid == 0) {
      int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
      execl(b->braid, b->braid, "depot", "--root", root, "--listen", listen, "--token-file",
            b->tokens, (char *)NULL);
      _exit(127);
    }
    /* ready once it accepts a connection */
    for (int i = 0;; i++) {
      int fd = socket(AF_INET, SOCK_STREAM, 0);
      struct sockaddr_in sa = {0};
      sa.sin_family = AF_INET;
      sa.sin_port = htons((uint16_t)b->dport);
      sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
      close(fd);
      if (ok) break;
      if (i == 500 || waitpid(b->depot_pid, NULL, WNOHANG) != 0)
        die("braid depot did not start: see %s", log);
      usleep(10000);
    }
    return;
  }
  br_depot_opts o = {0};
  o.root = root;
  o.listen = "127.0.0.1:0";
  o.token_file = b->tokens;
  br_error err;
  br_error_clear(&err);
  if (br_depot_start(&o, &b->depot, &err)) die("depot: %s", err.msg);
  b->dport = br_depot_port(b->depot);
}

static void start(bench *b) {
  char path[1024], cmd[2048];
  snprintf(b->tokens, sizeof b->tokens, "%s/tokens", b->dir);
  FILE *f = fopen(b->tokens, "w");
  fprintf(f, "%s\n", TOKEN);
  fclose(f);
  depot_at(b, "depot");
  /* rsync daemon on loopback */
  snprintf(cmd, sizeof cmd, "mkdir -p '%s/rsyncd'", b->dir);
  sh(cmd);
  snprintf(path, sizeof path, "%s/rsyncd.conf", b->dir);
  f = fopen(path, "w");
  fprintf(f, "use chroot = no\npid file = %s/rsyncd.pid\n%s[bench]\n  path = %s/rsyncd\n"
             "  read only = false\n",
          b->dir, getuid() == 0 ? "uid = root\ngid = root\n" : "", b->dir);
  fclose(f);
  b->rport = free_port();
  b->rsyncd = fork();
  if (b->rsyncd == 0) {
    char port[16], conf[1100];
    snprintf(port, sizeof port, "--port=%d", b->rport);
    snprintf(conf, sizeof conf, "--config=%s", path);
    int dn = open("/dev/null", O_WRONLY);
    dup2(dn, 1);
    execlp("rsync", "rsync", "--daemon", "--no-detach", "--address=127.0.0.1", port, conf,
           (char *)NULL);
    _exit(127);
  }
  rsyncd_pid = b->rsyncd;
  usleep(300000);
  snprintf(b->cache, sizeof b->cache, "%s/hashcache.db", b->dir);
  br_xfer_opts_init(&b->o);
  b->o.token = TOKEN;
  b->o.cache_path = b->cache;
}

static void stop(bench *b) {
  depot_stop(b);
  if (b->rsyncd > 0) {
    kill(b->rsyncd, SIGTERM);
    waitpid(b->rsyncd, NULL, 0);
  }
}

/* Removes every version of name from the depot at DIR/sub, and the
 * chunks they named (no grace): the depot is as empty as a new one, but
 * its process goes on. */
static void depot_empty(bench *b, const char *sub, const char *name) {
  char root[1024];
  snprintf(root, sizeof root, "%s/%s", b->dir, sub);
  br_error err;
  br_error_clear(&err);
  for (int64_t v = 1; br_depot_rm(root, name, v, &err) == BR_OK; v++) br_error_clear(&err);
  br_depot_gc_result gr;
  br_error_clear(&err);
  if (br_depot_gc(root, 0, false, &gr, &err)) die("gc: %s", err.msg);
}

/* With --braid, push and pull run as `braid push` and `braid pull`, the
 * commands an artist or a job runs (and as rsync runs: a process each time,
 * its start counted). Runs with options of their own (the latency case
 * through the proxy) call the library in this process. */
static double braid_cli(bench *b, const char *verb, const char *a1, const char *a2) {
  char log[700];
  snprintf(log, sizeof log, "%s/braid-cli.log", b->dir);
  sync();
  double t = now();
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
    execl(b->braid, b->braid, verb, "--token", TOKEN, "--cache", b->cache, a1, a2,
          (char *)NULL);
    _exit(127);
  }
  int st = 0;
  if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    char cmd[800];
    snprintf(cmd, sizeof cmd, "tail -5 '%s' >&2", log);
    if (system(cmd)) {}
    die("braid %s failed", verb);
  }
  return now() - t;
}

static double braid_push(bench *b, const char *src, const char *name, br_xfer_opts *o,
                         int port) {
  char ref[512];
  snprintf(ref, sizeof ref, "depot://127.0.0.1:%d/%s", port ? port : b->dport, name);
  if (b->braid && !o && !port) return braid_cli(b, "push", src, ref);
  br_xfer_result res;
  br_error err;
  br_error_clear(&err);
  sync();
  double t = now();
  if (br_xfer_push(src, ref, o ? o : &b->o, &res, &err)) die("push: %s", err.msg);
  return now() - t;
}

static double braid_pull(bench *b, const char *name, const char *dst, br_xfer_opts *o,
                         int port) {
  char ref[512];
  snprintf(ref, sizeof ref, "depot://127.0.0.1:%d/%s", port ? port : b->dport, name);
  if (b->braid && !o && !port) return braid_cli(b, "pull", ref, dst);
  br_xfer_result res;
  br_error err;
  br_error_clear(&err);
  sync();
  double t = now();
  if (br_xfer_pull(ref, dst, o ? o : &b->o, &res, &err)) die("pull: %s", err.msg);
  return now() - t;
}

/* rsync leaves its writes in the page cache; braid syncs what it writes.
 * Both ratios are printed: against rsync as it is, and against rsync plus
 * the sync that makes its copy as durable as braid's. */
static double last_sync;

static double timed_rsync(const char *cmd) {
  double t = timed_sh(cmd);
  double s = now();
  sync();
  last_sync = now() - s;
  return t;
}

static void row(const char *what, double braid, double other, double other_sync,
                const char *vs) {
  printf("  %-24s braid %7.2fs  %s %7.2fs  ratio %5.2fx  (%s+sync %7.2fs: %5.2fx)\n", what,
         braid, vs, other, other / braid, vs, other_sync, other_sync / braid);
  fflush(stdout);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define MAX_REPEAT 15

/* The least any verified, durable checkout of n files of size bytes costs
 * on this disk, with no network and no depot: hash each file's bytes
 * (from memory), then write it as braid's writers do at best: an unnamed
 * file (O_TMPFILE) written with direct I/O and linked in under its name,
 * FLOOR_THREADS at once, then one syncfs. Where the file system refuses
 * either, a named temporary written through the page cache and renamed.
 * Both braid pull and rsync pay these creations; when they dominate, no
 * client can be many times faster than another.
 * A push's floor (pack): each file hashed twice, as a verified push must
 * (the client, to name what it sends and ask what is missing; the depot,
 * to check what it stores: SHA-256, as the issue names), and the bytes
 * written as the depot stores small chunks at best: packs of PACK_BYTES
 * (a bundle), direct I/O, one syncfs. Reading the files, the network and
 * the index are left out, so braid's push cannot beat it. */
#define FLOOR_THREADS 16 /* braid's writers (WRITERS in src/xfer/pull.c) */
#define PACK_BYTES (8 << 20) /* a push's bundle (br_xfer__engine_bundle_bytes) */

typedef struct floor_arg {
  int dfd, n, step, first;
  int64_t size;
  bool pack;
} floor_arg;

/* Writes len bytes of buf (4 KiB aligned, with room to pad) as a new file
 * name in dfd: unnamed, direct and linked; else named and renamed. */
static void floor_write(int dfd, const char *name, uint8_t *buf, size_t len) {
  size_t padded = (len + 4095) & ~(size_t)4095;
  int fd = openat(dfd, ".", O_WRONLY | O_TMPFILE | O_DIRECT | O_CLOEXEC, 0644);
  if (fd >= 0) {
    if (write(fd, buf, padded) != (ssize_t)padded || ftruncate(fd, (off_t)len) != 0)
      die("%s", "floor: write failed");
    if (br_xfer__link_fd(fd, dfd, name) != 0) die("%s", "floor: link failed");
    close(fd);
    return;
  }
  char tmp[96];
  snprintf(tmp, sizeof tmp, ".partial-%s", name);
  fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0 || write(fd, buf, len) != (ssize_t)len) die("%s", "floor: write failed");
  close(fd);
  if (renameat(dfd, tmp, dfd, name) != 0) die("%s", "floor: rename failed");
}

static void *floor_worker(void *arg) {
  floor_arg *a = arg;
  uint8_t *buf = NULL, *pack = NULL;
  if (posix_memalign((void **)&buf, 4096, (size_t)a->size + 4096) != 0 ||
      (a->pack && posix_memalign((void **)&pack, 4096, PACK_BYTES + (size_t)a->size + 4096)))
    die("%s", "floor: no memory");
  for (int64_t i = 0; i < a->size; i++) buf[i] = (uint8_t)(i * 2654435761u >> 13);
  char name[64];
  size_t used = 0;
  int packs = 0;
  for (int i = a->first; i < a->n; i += a->step) {
    br_xfer_digest d;
    buf[0] = (uint8_t)i;
    br_xfer_sha256(buf, (size_t)a->size, &d);
    if (!a->pack) {
      snprintf(name, sizeof name, "f.%05d.bgeo", i + 1);
      floor_write(a->dfd, name, buf, (size_t)a->size);
      continue;
    }
    memcpy(pack + used, buf, (size_t)a->size); /* the depot's receive */
    br_xfer_sha256(pack + used, (size_t)a->size, &d);
    used += (size_t)a->size;
    if (used >= PACK_BYTES || i + a->step >= a->n) {
      snprintf(name, sizeof name, "pack-%d-%d", a->first, packs++);
      floor_write(a->dfd, name, pack, used);
      used = 0;
    }
  }
  free(buf);
  free(pack);
  return NULL;
}

static double floor_tree(const char *dir, int n, int64_t size, bool pack) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
  sh(cmd);
  pthread_t th[FLOOR_THREADS];
  floor_arg args[FLOOR_THREADS];
  sync();
  double t = now();
  int dfd = open(dir, O_RDONLY | O_DIRECTORY);
  if (dfd < 0) die("cannot open %s", dir);
  for (int i = 0; i < FLOOR_THREADS; i++) {
    args[i] = (floor_arg){dfd, n, FLOOR_THREADS, i, size, pack};
    pthread_create(&th[i], NULL, floor_worker, &args[i]);
  }
  for (int i = 0; i < FLOOR_THREADS; i++) pthread_join(th[i], NULL);
  syncfs(dfd);
  close(dfd);
  return now() - t;
}

/* A bare push (wire_floor): a plain program that does only what a push
 * cannot do without, from the tree on disk to packs on disk, with the two
 * ends on this machine as the bench runs them. Not a floor in the strict
 * sense (a cleverer program may do better), but what the simplest honest
 * pipeline of that work costs here. WIRE_PAIRS senders each read their
 * share of the files (page cache), hash each, and send digest and bytes
 * over a loopback TCP connection of their own; a receiver for each reads
 * them, hashes each again, gathers them into packs of PACK_BYTES written
 * as floor_write does, and a syncfs ends it. No HTTP, no index, no
 * manifest, no hash cache and no process start: braid's push pays all of
 * those on top. */
#define WIRE_PAIRS 8

typedef struct wire_arg {
  const char *src;
  int fd, dfd, n, first;
  int64_t size;
} wire_arg;

static void *wire_send(void *arg) {
  wire_arg *a = arg;
  uint8_t *buf = malloc((size_t)a->size + BR_XFER_DIGEST_LEN);
  if (!buf) die("%s", "wire floor: no memory");
  char path[1200];
  for (int i = a->first; i < a->n; i += WIRE_PAIRS) {
    snprintf(path, sizeof path, "%s/f.%05d.bgeo", a->src, i + 1);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    uint8_t *data = buf + BR_XFER_DIGEST_LEN;
    if (fd < 0 || br_xfer__pread_all(fd, data, (size_t)a->size, 0) != 0)
      die("wire floor: cannot read %s", path);
    close(fd);
    br_xfer_sha256(data, (size_t)a->size, (br_xfer_digest *)buf);
    size_t len = (size_t)a->size + BR_XFER_DIGEST_LEN, off = 0;
    while (off < len) {
      ssize_t w = write(a->fd, buf + off, len - off);
      if (w <= 0) die("%s", "wire floor: send failed");
      off += (size_t)w;
    }
  }
  free(buf);
  shutdown(a->fd, SHUT_WR);
  return NULL;
}

static void *wire_recv(void *arg) {
  wire_arg *a = arg;
  size_t entry = (size_t)a->size + BR_XFER_DIGEST_LEN;
  uint8_t *pack = NULL;
  if (posix_memalign((void **)&pack, 4096, PACK_BYTES + entry + 4096) != 0)
    die("%s", "wire floor: no memory");
  size_t used = 0, got = 0; /* pack bytes kept; bytes of the entry being read */
  int packs = 0;
  char name[64];
  for (;;) {
    ssize_t r = read(a->fd, pack + used + got, entry - got);
    if (r < 0) die("%s", "wire floor: receive failed");
    got += (size_t)r;
    if (r > 0 && got < entry) continue;
    if (got == entry) {
      br_xfer_digest d;
      br_xfer_sha256(pack + used + BR_XFER_DIGEST_LEN, (size_t)a->size, &d);
      if (memcmp(d.b, pack + used, BR_XFER_DIGEST_LEN) != 0) die("%s", "wire floor: bad digest");
      used += entry;
      got = 0;
    }
    if (used && (used >= PACK_BYTES || r == 0)) {
      snprintf(name, sizeof name, "pack-%d-%d", a->first, packs++);
      floor_write(a->dfd, name, pack, used);
      used = 0;
    }
    if (r == 0) break;
  }
  free(pack);
  return NULL;
}

static double wire_floor(const char *src, const char *dir, int n, int64_t size) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
  sh(cmd);
  int dfd = open(dir, O_RDONLY | O_DIRECTORY);
  if (dfd < 0) die("cannot open %s", dir);
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 8) != 0 ||
      getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0)
    die("%s", "wire floor: no socket");
  wire_arg snd[WIRE_PAIRS], rcv[WIRE_PAIRS];
  for (int i = 0; i < WIRE_PAIRS; i++) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof sa) != 0)
      die("%s", "wire floor: connect");
    int one = 1; /* each file's short tail goes at once, as curl's do */
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int s2 = accept(lfd, NULL, NULL);
    if (s2 < 0) die("%s", "wire floor: accept");
    snd[i] = (wire_arg){src, c, -1, n, i, size};
    rcv[i] = (wire_arg){src, s2, dfd, n, i, size};
  }
  close(lfd);
  pthread_t th[2 * WIRE_PAIRS];
  sync();
  double t = now();
  for (int i = 0; i < WIRE_PAIRS; i++) {
    pthread_create(&th[2 * i], NULL, wire_send, &snd[i]);
    pthread_create(&th[2 * i + 1], NULL, wire_recv, &rcv[i]);
  }
  for (int i = 0; i < 2 * WIRE_PAIRS; i++) pthread_join(th[i], NULL);
  syncfs(dfd);
  double took = now() - t;
  for (int i = 0; i < WIRE_PAIRS; i++) close(snd[i].fd), close(rcv[i].fd);
  close(dfd);
  return took;
}

/* How long SHA-256 over bytes takes from memory, on every core at once
 * (8 MiB chunks, as braid cuts files). */
#define HASH_PIECE (8 << 20)
typedef struct hash_arg {
  int64_t pieces;
} hash_arg;

static void *hash_worker(void *arg) {
  hash_arg *a = arg;
  uint8_t *buf = malloc(HASH_PIECE);
  if (!buf) die("%s", "hash floor: no memory");
  for (size_t i = 0; i < HASH_PIECE; i++) buf[i] = (uint8_t)(i * 2654435761u >> 13);
  br_xfer_digest d;
  for (int64_t i = 0; i < a->pieces; i++) {
    buf[0] = (uint8_t)i;
    br_xfer_sha256(buf, HASH_PIECE, &d);
  }
  free(buf);
  return NULL;
}

static double hash_floor(int64_t bytes) {
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (cores < 1) cores = 1;
  if (cores > 64) cores = 64;
  pthread_t th[64];
  hash_arg args[64];
  int64_t pieces = (bytes + HASH_PIECE - 1) / HASH_PIECE;
  double t = now();
  for (long i = 0; i < cores; i++) {
    args[i].pieces = pieces / cores + (i < pieces % cores);
    pthread_create(&th[i], NULL, hash_worker, &args[i]);
  }
  for (long i = 0; i < cores; i++) pthread_join(th[i], NULL);
  return now() - t;
}

/* Repetition r of the small files' floors of the tree src (n files of
 * size bytes), in folders DIR/NAME-floor-*: checkout, push, bare push. */
static void measure_floors(bench *b, const char *src, const char *name, int r, int n,
                           int64_t size, double *checkout, double *push, double *bare) {
  char fdir[1100];
  snprintf(fdir, sizeof fdir, "%s/%s-floor-%d", b->dir, name, r);
  *checkout = floor_tree(fdir, n, size, false);
  snprintf(fdir, sizeof fdir, "%s/%s-floor-push-%d", b->dir, name, r);
  *push = floor_tree(fdir, n, size, true);
  snprintf(fdir, sizeof fdir, "%s/%s-floor-wire-%d", b->dir, name, r);
  *bare = wire_floor(src, fdir, n, size);
}

/* A floor's line: its time, and braid's and rsync's against it. */
static void floor_row(const char *label, const char *what, const char *verb, double floor,
                      double braid, double rsync) {
  printf("  %-24s %7.2fs  (%s)\n"
         "  %-24s braid %s %.2fx of it, rsync %s %.2fx; a %s 3x faster than rsync would take "
         "%.2fs\n",
         label, floor, what, "", verb, braid / floor, verb, rsync / floor, verb, rsync / 3.0);
}

/* One measurement of each row per repetition; braid goes first on even
 * repetitions, rsync on odd. The depot runs through all of them, as a
 * studio's does (and as the rsync daemon does): each repetition pushes to
 * a name of its own, which is removed and collected (br_depot_rm, gc with
 * no grace) afterwards, so the next push finds an empty depot again. The
 * first repetition meets a depot just started (its memory not yet touched,
 * its pack cache empty); the medians are of warm and cold together. */
static void case_files(bench *b, const char *label, const char *name, int n, int64_t size,
                       bool unchanged) {
  char src[1024], dst[1024], cmd[8192], sub[300];
  double bp[MAX_REPEAT], rp[MAX_REPEAT], rps[MAX_REPEAT], bl[MAX_REPEAT], rl[MAX_REPEAT],
      rls[MAX_REPEAT], bu[MAX_REPEAT], ru[MAX_REPEAT], rus[MAX_REPEAT], cp[MAX_REPEAT],
      cpd[MAX_REPEAT],
      fl[MAX_REPEAT], fp[MAX_REPEAT], fw[MAX_REPEAT], hf[MAX_REPEAT];
  int reps = b->repeat;
  bool with_floor = n >= 100 && size <= 1024 * 1024; /* many small files: their checkout floor too */
  /* trees of many small files are kept until the end: removing 10,000
   * files makes the next creations slower on some file systems */
  bool keep = (int64_t)n * size < (int64_t)4 << 30 && n >= 100;
  snprintf(src, sizeof src, "%s/%s-src", b->dir, name);
  make_tree(src, n, size, (uint64_t)n * 7 + (uint64_t)size);
  sh("sync");
  fs_settle();
  printf("%s (%d files of %lld bytes%s)\n", label, n, (long long)size,
         reps > 1 ? ", medians" : "");
  snprintf(sub, sizeof sub, "depot-%s", name);
  depot_at(b, sub);
  for (int r = 0; r < reps; r++) {
    bool rsync_first = r % 2 == 1;
    char rname[300];
    snprintf(rname, sizeof rname, "%s-%d", name, r);
    unlink(b->cache); /* cold hash cache: the first push reads everything, as rsync does */
    char rpush[2048], rpull[2048];
    snprintf(rpush, sizeof rpush, "rsync -a '%s/' rsync://127.0.0.1:%d/bench/%s-%d/", src,
             b->rport, name, r);
    snprintf(rpull, sizeof rpull, "rsync -a rsync://127.0.0.1:%d/bench/%s-%d/ '%s/%s-rsyncpull-%d/'",
             b->rport, name, r, b->dir, name, r);
    snprintf(dst, sizeof dst, "%s/%s-pull-%d", b->dir, name, r);
    if (rsync_first) rp[r] = timed_rsync(rpush), rps[r] = rp[r] + last_sync;
    bp[r] = braid_push(b, src, rname, NULL, 0);
    if (!rsync_first) rp[r] = timed_rsync(rpush), rps[r] = rp[r] + last_sync;
    if (rsync_first) rl[r] = timed_rsync(rpull), rls[r] = rl[r] + last_sync;
    bl[r] = braid_pull(b, rname, dst, NULL, 0);
    if (!rsync_first) rl[r] = timed_rsync(rpull), rls[r] = rl[r] + last_sync;
    if (unchanged) {
      if (rsync_first) ru[r] = timed_rsync(rpush), rus[r] = ru[r] + last_sync;
      bu[r] = braid_push(b, src, rname, NULL, 0);
      if (!rsync_first) ru[r] = timed_rsync(rpush), rus[r] = ru[r] + last_sync;
    }
    depot_empty(b, sub, rname);
    if (with_floor) measure_floors(b, src, name, r, n, size, &fl[r], &fp[r], &fw[r]);
    if (size >= 100 * 1000 * 1000) {
      /* cp, twice: from the source in memory (as a push reads it, just
       * made), then read from the disk (as a pull reads the depot's
       * objects: it writes them with direct I/O, and drops what it read
       * of them from the page cache as it sends them) */
      cp[r] = timed_cp(b, src, name);
      drop_cached(src);
      cpd[r] = timed_cp(b, src, name);
      hf[r] = hash_floor((int64_t)n * size);
    }
    if (reps > 1)
      printf("    run %d: push %.2fs / rsync %.2fs, pull %.2fs / rsync %.2fs\n", r + 1, bp[r],
             rp[r], bl[r], rl[r]);
    if (!keep) {
      snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s/%s-rsyncpull-%d' '%s/rsyncd/%s-%d'", dst,
               b->dir, name, r, b->dir, name, r);
      sh(cmd);
    }
  }
  double mbp = median(bp, reps), mbl = median(bl, reps);
  row("push", mbp, median(rp, reps), median(rps, reps), "rsync");
  row("pull", mbl, median(rl, reps), median(rls, reps), "rsync");
  if (unchanged) row("push, nothing changed", median(bu, reps), median(ru, reps), median(rus, reps), "rsync");
  if (with_floor) {
    floor_row("checkout floor", "hash, create unnamed, direct write, link, syncfs from memory: "
              "no network", "pull", median(fl, reps), mbl, median(rl, reps));
    floor_row("push floor", "hash twice: client and depot; 8 MiB packs, direct, syncfs", "push",
              median(fp, reps), mbp, median(rp, reps));
    floor_row("bare push", "a bare program: read the files, hash, loopback TCP, hash, packs",
              "push", median(fw, reps), mbp, median(rp, reps));
  }
  if (size >= 100 * 1000 * 1000) {
    double mb = (double)n * (double)size / 1e6, mcp = median(cp, reps), mcd = median(cpd, reps);
    printf("  %-24s braid %7.0f MB/s  cp+sync %7.0f MB/s  ratio %5.2f (pull/cp, the source in "
           "memory)\n", "large-file throughput", mb / mbl, mb / mcp, mcp / mbl);
    printf("  %-24s braid %7.0f MB/s  cp+sync %7.0f MB/s  ratio %5.2f (pull/cp, the source read "
           "from the disk, as a pull reads the depot's)\n", "", mb / mbl, mb / mcd, mcd / mbl);
    printf("  %-24s braid %7.0f MB/s  cp+sync %7.0f MB/s  ratio %5.2f (push/cp, the source in "
           "memory, as a push reads it)\n", "", mb / mbp, mb / mcp, mcp / mbp);
    double mhf = median(hf, reps);
    printf("  %-24s %7.2fs  (SHA-256 of these bytes from memory, once, on all %ld cores)\n"
           "  %-24s 80%% of cp+sync allows a push %.2fs (it hashes twice), a pull %.2fs "
           "(once)\n",
           "hash floor", mhf, sysconf(_SC_NPROCESSORS_ONLN), "", mcp / 0.8, mcd / 0.8);
  }
  depot_at(b, "depot");
  snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'/%s-pull-* '%s'/%s-rsyncpull-* '%s'/rsyncd/%s-* '%s'/depot-%s* '%s'/%s-floor-*",
           src, b->dir, name, b->dir, name, b->dir, name, b->dir, name, b->dir, name);
  sh(cmd);
  fs_deleted_at = now();
}

/* The small files' floors alone (--only floors), to study them: no braid,
 * no rsync. */
static void case_floors(bench *b, int n, int64_t size) {
  char src[1024], cmd[4200];
  double fl[MAX_REPEAT], fp[MAX_REPEAT], fw[MAX_REPEAT];
  snprintf(src, sizeof src, "%s/floors-src", b->dir);
  make_tree(src, n, size, (uint64_t)n * 7 + (uint64_t)size);
  sh("sync");
  fs_settle();
  printf("floors of small files (%d files of %lld bytes)\n", n, (long long)size);
  for (int r = 0; r < b->repeat; r++) {
    measure_floors(b, src, "floors", r, n, size, &fl[r], &fp[r], &fw[r]);
    printf("    run %d: checkout %.2fs, push %.2fs, bare push %.2fs\n", r + 1, fl[r],
           fp[r], fw[r]);
  }
  printf("  medians: checkout %.2fs, push %.2fs, bare push %.2fs\n",
         median(fl, b->repeat), median(fp, b->repeat), median(fw, b->repeat));
  snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'/floors-*", src, b->dir);
  sh(cmd);
  fs_deleted_at = now();
}

static void case_latency(bench *b, int n, int64_t size) {
  char src[1024], dst[1024], name[] = "latency";
  snprintf(src, sizeof src, "%s/%s-src", b->dir, name);
  make_tree(src, n, size, 4242);
  xproxy p;
  if (xp_start(&p, b->dport, 1)) die("%s", "proxy failed");
  p.delay_ms = 15;                  /* 30 ms round trip */
  p.rate = 200e6 / 8;               /* 200 Mbit/s, each way */
  br_xfer_opts o = b->o;
  o.parallel = 16;
  o.bundle_bytes = 4 * 1024 * 1024;
  /* a remote artist's check-in (every chunk new to the depot, a cold hash
   * cache), then a check-out of it, both through the proxy */
  unlink(b->cache);
  double tp = braid_push(b, src, name, &o, p.port);
  snprintf(dst, sizeof dst, "%s/%s-pull", b->dir, name);
  double t = braid_pull(b, name, dst, &o, p.port);
  xp_stop(&p);
  double allowed = p.rate / (double)size;
  printf("small files at 30 ms RTT, 200 Mbit/s cap (%d x %lld bytes)\n", n, (long long)size);
  printf("  push: %.0f files/s, the cap allows %.0f files/s: %.0f%% of the cap\n", n / tp,
         allowed, 100 * (n / tp) / allowed);
  printf("  pull: %.0f files/s, the cap allows %.0f files/s: %.0f%% of the cap\n", n / t,
         allowed, 100 * (n / t) / allowed);
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", src, dst);
  sh(cmd);
}

int main(int argc, char **argv) {
  double scale = 1;
  int repeat = 1;
  bool keep = false, no_reporting = false;
  const char *dir = NULL, *only = NULL, *braid = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick")) scale = 0.1;
    else if (!strcmp(argv[i], "--scale") && i + 1 < argc) scale = atof(argv[++i]);
    else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
    else if (!strcmp(argv[i], "--keep")) keep = true;
    else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    else if (!strcmp(argv[i], "--braid") && i + 1 < argc) braid = argv[++i];
    else if (!strcmp(argv[i], "--no-page-reporting")) no_reporting = true;
    else {
      printf("usage: bench-transfer [--quick] [--scale F] [--repeat N] [--dir DIR] [--keep]\n"
             "                      [--only small|medium|large|latency|floors] [--braid PATH]\n"
             "                      [--no-page-reporting]\n"
             "  --braid PATH: the depot is `PATH depot`, a process of its own (as deployed);\n"
             "                without it, a depot in this process\n"
             "  --no-page-reporting: on a VM whose balloon takes freed memory back, turn\n"
             "                that off for the run (root; set back at the end): figures\n"
             "                nearer a bare machine's\n");
      return strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
  }
  if (scale <= 0 || scale > 1) scale = 1;
  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, on_stop_signal);
  signal(SIGTERM, on_stop_signal);
  bench b;
  memset(&b, 0, sizeof b);
  b.repeat = repeat < 1 ? 1 : repeat > MAX_REPEAT ? MAX_REPEAT : repeat;
  b.braid = braid;
  if (dir) snprintf(b.dir, sizeof b.dir, "%s", dir);
  else snprintf(b.dir, sizeof b.dir, "/var/tmp/braid-bench-%d", (int)getpid());
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", b.dir, b.dir);
  sh(cmd);
  start(&b);
  printf("bench-transfer: scale %.2f, work dir %s, ratio = rsync time / braid time\n", scale,
         b.dir);
  printf("depot: %s\n", braid ? "braid depot, a process of its own" : "in the bench's process");
  if (b.repeat > 1) printf("each row: the median of %d runs\n", b.repeat);
  reporting_setup(no_reporting);
  fs_nojournal = ext4_without_journal(b.dir);
  fs_deleted_at = now();
  if (fs_nojournal)
    printf("file system: ext4 without a journal: an inode deleted in the last minute (six,\n"
           "        unsynced) makes every creation near it slower, braid's and rsync's; the\n"
           "        bench syncs and waits that out before each case\n");
  int n1 = (int)(10000 * scale), n2 = (int)(1000 * scale), n4 = (int)(2000 * scale);
  int64_t big = (int64_t)(2048.0 * 1024 * 1024 * scale);
#define WANT(c) (!only || !strcmp(only, c))
  if (WANT("small")) case_files(&b, "small files", "small", n1 < 10 ? 10 : n1, 64 * 1024, true);
  if (WANT("medium"))
    case_files(&b, "medium files", "medium", n2 < 2 ? 2 : n2, 10 * 1000 * 1000, false);
  if (WANT("large")) case_files(&b, "large files", "large", 2, big, false);
  if (WANT("latency")) case_latency(&b, n4 < 50 ? 50 : n4, 100 * 1024);
  if (only && !strcmp(only, "floors")) case_floors(&b, n1 < 10 ? 10 : n1, 64 * 1024);
  stop(&b);
  if (!keep) {
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", b.dir);
    sh(cmd);
  }
  return 0;
}
