/* The ctest side of a fuzz target (see fuzz.h): runs every file of the
 * corpus directories given, then MUTATIONS seeded mutations of them (byte
 * flips, insertions of bytes that matter to the parsers, cuts, splices of
 * two seeds), the same ones on every run. No clang needed; a crash or a
 * failed property aborts the test with the input's seed and number. */
#include "fuzz.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REPLAY_MAX (1 << 20)

typedef struct seed {
  uint8_t *data;
  size_t len;
} seed;

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static int load_dir(const char *dir, seed **v, size_t *n) {
  DIR *d = opendir(dir);
  if (!d) {
    fprintf(stderr, "replay: cannot open corpus %s\n", dir);
    return -1;
  }
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    FILE *f = fopen(path, "rb");
    if (!f) continue;
    uint8_t *buf = malloc(REPLAY_MAX);
    size_t len = buf ? fread(buf, 1, REPLAY_MAX, f) : 0;
    fclose(f);
    seed *nv = buf ? realloc(*v, (*n + 1) * sizeof **v) : NULL;
    if (!nv) {
      free(buf);
      closedir(d);
      return -1;
    }
    *v = nv;
    (*v)[(*n)++] = (seed){buf, len};
  }
  closedir(d);
  return 0;
}

static const uint8_t *current; /* the input being run, for on_abort */
static size_t current_len;

/* A failed property or a sanitizer's report: the input goes to a file
 * (replay-failure.bin in the working directory) to run again alone. */
static void on_abort(int sig) {
  int fd = open("replay-failure.bin", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    if (write(fd, current, current_len) < 0) (void)0;
    close(fd);
  }
  static const char msg[] = "replay: the failing input is in replay-failure.bin\n";
  if (write(2, msg, sizeof msg - 1) < 0) (void)0;
  signal(sig, SIG_DFL);
  raise(sig);
}

static void run(const uint8_t *data, size_t len) {
  /* a copy of exactly len bytes, so a read past the end is caught */
  uint8_t *copy = malloc(len ? len : 1);
  if (!copy) abort();
  memcpy(copy, data, len);
  current = copy;
  current_len = len;
  LLVMFuzzerTestOneInput(copy, len);
  free(copy);
}

int main(int argc, char **argv) {
  seed *v = NULL;
  size_t n = 0;
  long mutations = 20000;
  const char *env = getenv("BRAID_FUZZ_MUTATIONS");
  if (env) mutations = atol(env);
  signal(SIGABRT, on_abort);
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) == 0 && S_ISREG(st.st_mode)) { /* one input, run alone */
      seed one = {NULL, 0};
      FILE *f = fopen(argv[i], "rb");
      one.data = malloc(REPLAY_MAX);
      one.len = f && one.data ? fread(one.data, 1, REPLAY_MAX, f) : 0;
      if (f) fclose(f);
      run(one.data, one.len);
      free(one.data);
      printf("replay: %s ran, no failure\n", argv[i]);
      return 0;
    }
    if (load_dir(argv[i], &v, &n)) return 2;
  }
  if (n == 0) {
    fprintf(stderr, "replay: no seeds\n");
    return 2;
  }
  for (size_t i = 0; i < n; i++) run(v[i].data, v[i].len);
  static const char bytes[] = "{}[],:\"\\0123456789.-+eE/ \n\t\x00\x01\x7f\x80\xc3\xa9\xff$.u";
  uint8_t *buf = malloc(REPLAY_MAX + 64);
  if (!buf) return 2;
  for (long m = 0; m < mutations; m++) {
    const seed *s = &v[next() % n];
    size_t len = s->len < REPLAY_MAX ? s->len : REPLAY_MAX;
    memcpy(buf, s->data, len);
    int edits = 1 + (int)(next() % 4);
    for (int k = 0; k < edits; k++) {
      size_t at = len ? next() % (len + 1) : 0;
      uint8_t c = (uint8_t)bytes[next() % (sizeof bytes - 1)];
      switch (next() % 6) {
      case 0: /* flip a bit */
        if (at < len) buf[at] ^= (uint8_t)(1u << (next() % 8));
        break;
      case 1: /* overwrite */
        if (at < len) buf[at] = c;
        break;
      case 2: /* insert */
        if (len < REPLAY_MAX) {
          memmove(buf + at + 1, buf + at, len - at);
          buf[at] = c;
          len++;
        }
        break;
      case 3: /* delete */
        if (at < len) {
          memmove(buf + at, buf + at + 1, len - at - 1);
          len--;
        }
        break;
      case 4: /* cut */
        len = at;
        break;
      default: { /* splice: the tail of another seed */
        const seed *o = &v[next() % n];
        size_t from = o->len ? next() % o->len : 0, take = o->len - from;
        if (at + take > REPLAY_MAX) take = REPLAY_MAX - at;
        memcpy(buf + at, o->data + from, take);
        len = at + take;
      }
      }
    }
    run(buf, len);
  }
  printf("replay: %zu seeds and %ld mutations, no failure\n", n, mutations);
  free(buf);
  for (size_t i = 0; i < n; i++) free(v[i].data);
  free(v);
  return 0;
}
