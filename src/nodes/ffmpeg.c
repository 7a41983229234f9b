/* ffmpeg: makes a movie from the task's image sequence (a list of paths), or
 * an N-up mosaic from a list of sequences (a list of lists: the grid is the
 * smallest near-square that holds them, or `tile`). It runs `braid movie` as
 * a job on the worker, which writes ffmpeg's input lists there, renders to a
 * temporary name and renames, so a movie is never seen half-written. The
 * output path is set on the task as `movie_attr`. */
#include <braid/script.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "invoke.h"
#include "movie.h"

/* Digits only: a sign or a space, which strtol and sscanf take, is refused. */
static int tile_side(const char *s, size_t len, int *out) {
  int v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9' || v > BR_MOVIE_MAX_TILE) return -1;
    v = v * 10 + (s[i] - '0');
  }
  if (!len || v < 1 || v > BR_MOVIE_MAX_TILE) return -1;
  *out = v;
  return 0;
}

int br_movie_parse_tile(const char *s, int *cols, int *rows) {
  const char *x = strchr(s, 'x');
  if (!x || tile_side(s, (size_t)(x - s), cols) || tile_side(x + 1, strlen(x + 1), rows))
    return -1;
  return 0;
}

static int init(br_node *node, void **state, br_error *err) {
  (void)state;
  json_t *p = br_node_params(node);
  /* what `braid movie` would refuse on the worker, said when the graph loads */
  json_t *fps = json_object_get(p, "fps"), *crf = json_object_get(p, "crf");
  json_t *tile = json_object_get(p, "tile");
  const char *bad = NULL, *why = NULL;
  int lim = 0;
  int cols, rows;
  if (json_is_integer(fps) &&
      (json_integer_value(fps) < 1 || json_integer_value(fps) > BR_MOVIE_MAX_FPS))
    bad = "fps", why = "frames per second are from 1 to %d", lim = BR_MOVIE_MAX_FPS;
  else if (json_is_integer(crf) &&
           (json_integer_value(crf) < 0 || json_integer_value(crf) > BR_MOVIE_MAX_CRF))
    bad = "crf", why = "x264 quality is from 0 to %d", lim = BR_MOVIE_MAX_CRF;
  else if (json_is_string(tile) && *json_string_value(tile) && !br_script_is_expr(tile) &&
           br_movie_parse_tile(json_string_value(tile), &cols, &rows))
    bad = "tile", why = "the grid is COLSxROWS, each from 1 to %d (e.g. 2x2)",
    lim = BR_MOVIE_MAX_TILE;
  if (bad) {
    char msg[128];
    snprintf(msg, sizeof msg, why, lim);
    return br_node_fail_at_param(node, err, bad, NULL, "parameter '%s': %s", bad, msg);
  }
  static const char *const substituted[] = {"output", NULL};
  br_invoke_lint_params(node, substituted);
  return br_invoke_check(node, err);
}

static int process(br_node_ctx *ctx) {
  br_task *t = br_ctx_task(ctx);
  const char *input = br_ctx_param_str(ctx, "input", "images");
  json_t *seq = json_object_get(br_task_attrs(t), input);
  if (!json_is_array(seq) || json_array_size(seq) == 0)
    return br_ctx_fail(ctx, "ffmpeg needs a non-empty list attribute '%s' (image paths, or lists of them)",
                       input);
  int nested = json_is_array(json_array_get(seq, 0));
  for (size_t i = 0; i < json_array_size(seq); i++) {
    json_t *s = json_array_get(seq, i);
    if (nested ? !json_is_array(s) : !json_is_string(s))
      return br_ctx_fail(ctx, "attribute '%s' must be a list of paths or a list of lists of paths (item %zu is not)",
                         input, i);
  }
  char msg[1024];
  char *out = br_invoke_subst(br_task_attrs(t), br_ctx_param_str(ctx, "output", ""), msg, sizeof msg);
  if (!out || !*out) {
    free(out);
    return br_ctx_fail(ctx, "output: %s", out ? "empty path" : msg);
  }
  char **argv = NULL;
  size_t n = 0;
  char num[32];
  br_argv_push(&argv, &n, strdup(br_ctx_param_str(ctx, "braid", "braid")));
  br_argv_push(&argv, &n, strdup("movie"));
  br_argv_push(&argv, &n, strdup("--mkdirs")); /* a graph's output folders are made as needed */
  br_argv_push(&argv, &n, strdup("--output"));
  br_argv_push(&argv, &n, strdup(out));
  snprintf(num, sizeof num, "%lld", (long long)br_ctx_param_int(ctx, "fps", 24));
  br_argv_push(&argv, &n, strdup("--fps"));
  br_argv_push(&argv, &n, strdup(num));
  snprintf(num, sizeof num, "%lld", (long long)br_ctx_param_int(ctx, "crf", 20));
  br_argv_push(&argv, &n, strdup("--crf"));
  br_argv_push(&argv, &n, strdup(num));
  br_argv_push(&argv, &n, strdup("--codec"));
  br_argv_push(&argv, &n, strdup(br_ctx_param_str(ctx, "codec", "libx264")));
  const char *tile = br_ctx_param_str(ctx, "tile", "");
  if (*tile) {
    br_argv_push(&argv, &n, strdup("--tile"));
    br_argv_push(&argv, &n, strdup(tile));
  }
  br_argv_push(&argv, &n, strdup("--sequences"));
  br_argv_push(&argv, &n, json_dumps(seq, JSON_COMPACT));
  const char *movie_attr = br_ctx_param_str(ctx, "movie_attr", "movie");
  if (*movie_attr) json_object_set_new(br_ctx_attrs(ctx, t), movie_attr, json_string(out));
  free(out);
  int rc = br_invoke_run(ctx, argv);
  br_argv_free(argv);
  return rc;
}

static const br_param_spec params[] = {
    {"input", BR_PARAM_STRING, "\"images\"", false, "attribute with the sequence(s)"},
    {"output", BR_PARAM_STRING, NULL, false,
     "the movie's path ({attr} and ${} substituted; its folder is made if missing)"},
    {"fps", BR_PARAM_INT, "24", false, "frames per second"},
    {"crf", BR_PARAM_INT, "20", false, "quality (x264 CRF; lower is better)"},
    {"codec", BR_PARAM_STRING, "\"libx264\"", false, "video codec"},
    {"tile", BR_PARAM_STRING, "\"\"", false, "mosaic grid COLSxROWS (default: automatic)"},
    {"movie_attr", BR_PARAM_STRING, "\"movie\"", false, "attribute that receives the output path"},
    {"braid", BR_PARAM_STRING, "\"braid\"", false, "the braid program on the worker"},
    BR_INVOKE_PARAMS,
    {NULL, 0, NULL, false, NULL},
};

const br_node_type br_node_ffmpeg = {
    .name = "ffmpeg",
    .help = "make a movie (or an N-up mosaic) from image sequences",
    .children_port = -1,
    .params = params,
    .init = init,
    .process = process,
};
