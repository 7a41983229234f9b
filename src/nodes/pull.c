/* pull: checks snapshots out of a depot into a folder, as a job on the
 * worker that needs the files: the invocation runs `braid pull` there
 * (local slots, an agent or Slurm alike), so a render on a remote artist's
 * machine first fetches its task's assets. `snapshots` is one snapshot or a
 * list (NAME, NAME@vN, or a whole depot://HOST:PORT/NAME@vN, such as a push
 * node's `snapshot` attribute); the list is fetched together, with one bound
 * on parallel work. With `cache`, files already fetched on this host for
 * another task are hard-linked from that local content cache, not fetched
 * again (treat pulled files as read-only then). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xfer_node.h"

/* The snapshot's name in a reference: after the host, before any @. */
static char *ref_name(const char *ref) {
  const char *s = strstr(ref, "://");
  s = s ? strchr(s + 3, '/') : ref;
  if (!s) return NULL;
  while (*s == '/') s++;
  const char *at = strchr(s, '@');
  return strndup(s, at ? (size_t)(at - s) : strlen(s));
}

static int process(br_node_ctx *ctx) {
  const json_t *attrs = br_task_attrs(br_ctx_task(ctx));
  char **argv = NULL, **env = NULL, msg[1024];
  size_t n = 0;
  char *dest = NULL, *depot = NULL, *cache = NULL;
  int rc = -1;
  json_t *snaps = br_ctx_param(ctx, "snapshots");
  if (!snaps) return -1; /* an expression failed: the task is in error */
  json_t *list = json_is_array(snaps) ? json_incref(snaps) : json_pack("[O]", snaps);
  const char *layout = br_ctx_param_str(ctx, "layout", "auto");
  bool by_name;
  if (strcmp(layout, "auto") == 0) by_name = json_is_array(snaps) && json_array_size(snaps) > 1;
  else if (strcmp(layout, "name") == 0) by_name = true;
  else if (strcmp(layout, "merge") == 0) by_name = false;
  else {
    br_ctx_fail(ctx, "layout must be auto, name or merge, not '%s'", layout);
    goto out;
  }
  if (!json_array_size(list)) {
    br_ctx_fail(ctx, "parameter 'snapshots' is empty");
    goto out;
  }
  if (!(dest = br_xfer_node_str(ctx, "dest"))) goto out;
  if (*br_ctx_param_str(ctx, "depot", "") && !(depot = br_xfer_node_str(ctx, "depot"))) goto out;
  if (*br_ctx_param_str(ctx, "cache", "") && !(cache = br_xfer_node_str(ctx, "cache"))) goto out;
  if (br_xfer_node_begin(ctx, "pull", &argv, &n, &env)) goto out;
  if (cache) {
    br_argv_push(&argv, &n, strdup("--content-cache"));
    br_argv_push(&argv, &n, cache);
    cache = NULL;
  }
  br_argv_push(&argv, &n, strdup("--"));
  for (size_t i = 0; i < json_array_size(list); i++) {
    json_t *s = json_array_get(list, i);
    if (!json_is_string(s) || !json_string_length(s)) {
      br_ctx_fail(ctx, "snapshots[%zu] must be a snapshot name or location", i);
      goto out;
    }
    char *one = br_invoke_subst(attrs, json_string_value(s), msg, sizeof msg);
    if (!one) {
      br_ctx_fail(ctx, "snapshots[%zu]: %s", i, msg);
      goto out;
    }
    if (!strstr(one, "://") && !depot) {
      br_ctx_fail(ctx, "snapshot '%s' has no depot: give the parameter depot "
                  "(depot://HOST:PORT) or a whole depot://HOST:PORT/NAME", one);
      free(one);
      goto out;
    }
    char *ref = br_xfer_node_ref(depot ? depot : "", one);
    char *dir = NULL;
    free(one);
    if (by_name) {
      char *name = ref_name(ref);
      if (!name || !*name || asprintf(&dir, "%s/%s", dest, name) < 0) dir = NULL;
      free(name);
      if (!dir) {
        br_ctx_fail(ctx, "'%s' names no snapshot", ref);
        free(ref);
        goto out;
      }
    }
    br_argv_push(&argv, &n, ref);
    br_argv_push(&argv, &n, dir ? dir : strdup(dest));
  }
  rc = br_invoke_run_env(ctx, argv, env);
out:
  json_decref(list);
  br_argv_free(argv);
  br_argv_free(env);
  free(dest);
  free(depot);
  free(cache);
  return rc;
}

static int postprocess(br_node_ctx *ctx) { return br_xfer_node_post(ctx, "pull", process); }

static const br_param_spec params[] = {
    {"snapshots", BR_PARAM_ANY, NULL, false,
     "a snapshot or a list: NAME, NAME@vN, NAME@latest or depot://HOST:PORT/NAME@vN "
     "({attr} substituted)"},
    {"dest", BR_PARAM_STRING, NULL, false, "the folder on the worker ({attr} substituted)"},
    {"depot", BR_PARAM_STRING, "\"\"", false,
     "the depot of snapshots given by name: depot://HOST:PORT (or http(s)://)"},
    {"layout", BR_PARAM_STRING, "\"auto\"", false,
     "name: each snapshot into DEST/NAME; merge: all into DEST (a path two of them name is "
     "written once if they agree, else the task fails); auto: one snapshot into DEST, a list "
     "by name"},
    {"cache", BR_PARAM_STRING, "\"\"", false,
     "a content cache folder on the worker, shared by the pulls of that host: files it holds "
     "are hard-linked, not fetched again (pulled files are then read-only by contract)"},
    BR_XFER_NODE_PARAMS,
    {NULL, 0, NULL, false, NULL},
};

const br_node_type br_node_pull = {
    .name = "pull",
    .help = "check snapshots out of a depot into a folder (a job on the worker)",
    .children_port = -1,
    .params = params,
    .init = br_xfer_node_init,
    .process = process,
    .postprocess = postprocess,
};
