/* braid movie: the worker side of the ffmpeg node. Turns one image sequence
 * into a movie, or several into an N-up mosaic (xstack), with real ffmpeg.
 * It writes ffmpeg's input lists in a temporary folder beside the output,
 * renders to a temporary name there, and renames it into place, so the movie
 * never exists half-written under its final name. The folder of the output
 * must exist (a typo makes no new folders) unless --mkdirs says to make it:
 * the ffmpeg node does. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "nodes/movie.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: braid movie --output PATH --sequences JSON [--fps N] [--crf N]\n"
          "                   [--codec C] [--tile COLSxROWS] [--ffmpeg PROGRAM] [--mkdirs]\n\n"
          "Makes a movie from a sequence of images (JSON: a list of paths), or an N-up\n"
          "mosaic from several (a list of lists), in frame order. The grid is the\n"
          "smallest near-square that holds them unless --tile says otherwise.\n\n"
          "  --fps N           frames per second, 1 to %d (default 24)\n"
          "  --crf N           x264 quality, 0 (lossless) to %d (default 20)\n"
          "  --tile COLSxROWS  the mosaic's grid, each 1 to %d\n"
          "  --mkdirs          make the output's folder if it does not exist (otherwise\n"
          "                    that is an error)\n",
          BR_MOVIE_MAX_FPS, BR_MOVIE_MAX_CRF, BR_MOVIE_MAX_TILE);
}

/* ffmpeg's concat list quoting: 'path' with ' written as '\'' */
static int write_list(const char *path, json_t *seq) {
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  for (size_t i = 0; i < json_array_size(seq); i++) {
    /* ffmpeg resolves relative names against the list's folder: make them absolute */
    char *abs = realpath(json_string_value(json_array_get(seq, i)), NULL);
    if (!abs) {
      fclose(f);
      return -1;
    }
    fputs("file '", f);
    for (const char *p = abs; *p; p++) {
      if (*p == '\'') fputs("'\\''", f);
      else fputc(*p, f);
    }
    fputs("'\n", f);
    free(abs);
  }
  return fclose(f);
}

static void rmtree_simple(const char *dir, int nlists) {
  char p[PATH_MAX];
  for (int i = 0; i < nlists; i++) {
    snprintf(p, sizeof p, "%s/list%d.txt", dir, i);
    unlink(p);
  }
  rmdir(dir);
}

int br_cli_movie(int argc, char **argv) {
  static const struct option opts[] = {
      {"output", required_argument, NULL, 'o'}, {"sequences", required_argument, NULL, 's'},
      {"fps", required_argument, NULL, 'f'},    {"crf", required_argument, NULL, 'c'},
      {"codec", required_argument, NULL, 'C'},  {"tile", required_argument, NULL, 't'},
      {"ffmpeg", required_argument, NULL, 'F'}, {"help", no_argument, NULL, 'h'},
      {"mkdirs", no_argument, NULL, 'm'},       {NULL, 0, NULL, 0},
  };
  const char *output = NULL, *seqs = NULL, *codec = "libx264", *tile = NULL, *ffmpeg = "ffmpeg";
  int fps = 24, crf = 20, c, mkdirs = 0, cols = 0, rows = 0;
  long long v;
  while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
    switch (c) {
    case 'o': output = optarg; break;
    case 's': seqs = optarg; break;
    case 'f':
      if (br_cli_parse_int(optarg, 1, BR_MOVIE_MAX_FPS, &v)) {
        br_cli_errorf("--fps: '%s' is not a whole number from 1 to %d", optarg, BR_MOVIE_MAX_FPS);
        return BR_EXIT_USAGE;
      }
      fps = (int)v;
      break;
    case 'c':
      if (br_cli_parse_int(optarg, 0, BR_MOVIE_MAX_CRF, &v)) {
        br_cli_errorf("--crf: '%s' is not a whole number from 0 to %d", optarg, BR_MOVIE_MAX_CRF);
        return BR_EXIT_USAGE;
      }
      crf = (int)v;
      break;
    case 'C': codec = optarg; break;
    case 't': {
      tile = optarg;
      if (br_movie_parse_tile(optarg, &cols, &rows)) {
        br_cli_errorf("--tile: '%s' is not COLSxROWS (whole numbers from 1 to %d, e.g. 2x2)",
                      optarg, BR_MOVIE_MAX_TILE);
        return BR_EXIT_USAGE;
      }
      break;
    }
    case 'F': ffmpeg = optarg; break;
    case 'm': mkdirs = 1; break;
    case 'h': usage(stdout); return BR_EXIT_OK;
    default: usage(stderr); return BR_EXIT_USAGE;
    }
  }
  if (!output || !seqs || optind < argc) {
    if (optind < argc) br_cli_errorf("unexpected argument '%s'", argv[optind]);
    else br_cli_errorf("give --output and --sequences");
    usage(stderr);
    return BR_EXIT_USAGE;
  }
  json_error_t jerr;
  json_t *all = json_loads(seqs, 0, &jerr);
  if (!json_is_array(all) || !json_array_size(all)) {
    br_cli_errorf("--sequences must be a JSON list of paths, or of lists of paths");
    json_decref(all);
    return BR_EXIT_USAGE;
  }
  if (json_is_string(json_array_get(all, 0))) { /* one sequence */
    json_t *wrap = json_array();
    json_array_append_new(wrap, all);
    all = wrap;
  }
  size_t n = json_array_size(all);
  for (size_t i = 0; i < n; i++) {
    json_t *s = json_array_get(all, i);
    if (!json_is_array(s) || !json_array_size(s)) {
      br_cli_errorf("sequence %zu is not a non-empty list of paths", i);
      json_decref(all);
      return BR_EXIT_USAGE;
    }
    for (size_t k = 0; k < json_array_size(s); k++) {
      const char *p = json_string_value(json_array_get(s, k));
      struct stat sb;
      if (!p || stat(p, &sb) != 0) {
        br_cli_errorf("sequence %zu, frame %zu: %s: %s", i, k, p ? p : "(not a string)",
                      p ? strerror(errno) : "bad entry");
        json_decref(all);
        return BR_EXIT_FAILED;
      }
    }
  }
  if (tile) {
    if ((size_t)cols * (size_t)rows < n) {
      br_cli_errorf("--tile %s holds %d sequences, and there are %zu", tile, cols * rows, n);
      json_decref(all);
      return BR_EXIT_USAGE;
    }
  } else {
    cols = (int)ceil(sqrt((double)n));
    rows = (int)((n + (size_t)cols - 1) / (size_t)cols);
  }
  /* a temporary folder beside the output (same file system: rename works) */
  char dir[PATH_MAX], tmpl[PATH_MAX + 32];
  snprintf(dir, sizeof dir, "%s", output);
  char *slash = strrchr(dir, '/');
  if (slash) *slash = '\0';
  else snprintf(dir, sizeof dir, ".");
  if (!*dir) snprintf(dir, sizeof dir, "/");
  struct stat dsb;
  if (mkdirs && br_cli_mkdirs_for(output) != 0) {
    br_cli_errorf("cannot make the folder %s: %s", dir, strerror(errno));
    json_decref(all);
    return BR_EXIT_FAILED;
  }
  int st_rc = stat(dir, &dsb);
  if (st_rc != 0 || !S_ISDIR(dsb.st_mode)) {
    if (st_rc != 0 && errno == ENOENT)
      br_cli_errorf("the folder of --output, %s, does not exist (--mkdirs makes it)", dir);
    else
      br_cli_errorf("the folder of --output, %s: %s", dir,
                    st_rc ? strerror(errno) : "not a folder");
    json_decref(all);
    return BR_EXIT_FAILED;
  }
  snprintf(tmpl, sizeof tmpl, "%s/.braid-movie-XXXXXX", dir);
  if (!mkdtemp(tmpl)) {
    br_cli_errorf("cannot make a temporary folder in %s: %s", dir, strerror(errno));
    json_decref(all);
    return BR_EXIT_FAILED;
  }
  const char *ext = strrchr(output, '.');
  char tmpout[PATH_MAX + 64];
  snprintf(tmpout, sizeof tmpout, "%s/partial%s", tmpl, ext && !strchr(ext, '/') ? ext : ".mp4");
  char **args = NULL;
  size_t na = 0;
  char buf[64];
  br_argv_push(&args, &na, strdup(ffmpeg));
  br_argv_push(&args, &na, strdup("-nostdin"));
  br_argv_push(&args, &na, strdup("-hide_banner"));
  br_argv_push(&args, &na, strdup("-y"));
  for (size_t i = 0; i < n; i++) {
    char list[PATH_MAX + 64];
    snprintf(list, sizeof list, "%s/list%zu.txt", tmpl, i);
    if (write_list(list, json_array_get(all, i))) {
      br_cli_errorf("cannot write %s: %s", list, strerror(errno));
      rmtree_simple(tmpl, (int)n);
      br_argv_free(args);
      json_decref(all);
      return BR_EXIT_FAILED;
    }
    snprintf(buf, sizeof buf, "%d", fps);
    const char *in[] = {"-r", buf, "-f", "concat", "-safe", "0", "-i", list};
    for (size_t k = 0; k < sizeof in / sizeof in[0]; k++) br_argv_push(&args, &na, strdup(in[k]));
  }
  if (n > 1) {
    /* xstack layout: tile (c, r) at x = c * w0, y = r * h0 */
    char *fc = NULL;
    size_t fclen = 0;
    FILE *m = open_memstream(&fc, &fclen);
    for (size_t i = 0; i < n; i++) fprintf(m, "[%zu:v]", i);
    fprintf(m, "xstack=inputs=%zu:layout=", n);
    for (size_t i = 0; i < n; i++) {
      int col = (int)(i % (size_t)cols), row = (int)(i / (size_t)cols);
      if (i) fputc('|', m);
      if (!col) fputc('0', m);
      for (int k = 0; k < col; k++) fprintf(m, "%sw0", k ? "+" : "");
      fputc('_', m);
      if (!row) fputc('0', m);
      for (int k = 0; k < row; k++) fprintf(m, "%sh0", k ? "+" : "");
    }
    if ((size_t)(cols * rows) > n) fprintf(m, ":fill=black");
    fprintf(m, "[v]");
    fclose(m);
    br_argv_push(&args, &na, strdup("-filter_complex"));
    br_argv_push(&args, &na, fc);
    br_argv_push(&args, &na, strdup("-map"));
    br_argv_push(&args, &na, strdup("[v]"));
  }
  snprintf(buf, sizeof buf, "%d", fps);
  const char *tail[] = {"-r", buf, "-c:v", codec, "-pix_fmt", "yuv420p"};
  for (size_t k = 0; k < sizeof tail / sizeof tail[0]; k++) br_argv_push(&args, &na, strdup(tail[k]));
  if (strcmp(codec, "libx264") == 0) {
    snprintf(buf, sizeof buf, "%d", crf);
    br_argv_push(&args, &na, strdup("-crf"));
    br_argv_push(&args, &na, strdup(buf));
  }
  br_argv_push(&args, &na, strdup(tmpout));
  fprintf(stderr, "braid movie: %zu sequence%s, grid %dx%d, %d fps -> %s\n", n, n == 1 ? "" : "s",
          cols, rows, fps, output);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    execvp(args[0], args);
    fprintf(stderr, "braid movie: cannot run %s: %s\n", args[0], strerror(errno));
    _exit(127);
  }
  int st = 0;
  while (pid > 0 && waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  int ok = pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
  int rc = BR_EXIT_OK;
  if (!ok) {
    br_cli_errorf("ffmpeg failed (%s %d)", WIFSIGNALED(st) ? "signal" : "exit",
                  WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    unlink(tmpout);
    rc = BR_EXIT_FAILED;
  } else if (rename(tmpout, output) != 0) {
    br_cli_errorf("cannot move the movie to %s: %s", output, strerror(errno));
    unlink(tmpout);
    rc = BR_EXIT_FAILED;
  }
  rmtree_simple(tmpl, (int)n);
  br_argv_free(args);
  json_decref(all);
  return rc;
}
