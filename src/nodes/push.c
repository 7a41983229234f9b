/* push: checks a folder in to a depot as a new version of a snapshot, as a
 * job on the worker that has the folder: the invocation runs `braid push`
 * there (local slots, an agent or Slurm alike). The job reports what it
 * committed through the runtime channel, so the task leaves with
 * `snapshot_attr` = "DEPOT/NAME@vN" (what a pull node takes as it is) and
 * `version_attr` = N. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xfer_node.h"

static int process(br_node_ctx *ctx) {
  char **argv = NULL, **env = NULL;
  size_t n = 0;
  char *src = NULL, *depot = NULL, *name = NULL;
  int rc = -1;
  if (!(src = br_xfer_node_str(ctx, "src")) || !(name = br_xfer_node_str(ctx, "name")))
    goto out;
  if (!strstr(name, "://") && !(depot = br_xfer_node_str(ctx, "depot"))) goto out;
  if (strchr(strrchr(name, '/') ? strrchr(name, '/') : name, '@')) {
    br_ctx_fail(ctx, "name '%s': a push makes the next version; give the name without @", name);
    goto out;
  }
  if (br_xfer_node_begin(ctx, "push", &argv, &n, &env)) goto out;
  const char *sattr = br_ctx_param_str(ctx, "snapshot_attr", "snapshot");
  const char *vattr = br_ctx_param_str(ctx, "version_attr", "snapshot_version");
  if (*sattr) {
    br_argv_push(&argv, &n, strdup("--set-attr"));
    br_argv_push(&argv, &n, strdup(sattr));
  }
  if (*vattr) {
    br_argv_push(&argv, &n, strdup("--set-version-attr"));
    br_argv_push(&argv, &n, strdup(vattr));
  }
  br_argv_push(&argv, &n, strdup("--"));
  br_argv_push(&argv, &n, src);
  br_argv_push(&argv, &n, br_xfer_node_ref(depot ? depot : "", name));
  src = NULL;
  rc = br_invoke_run_env(ctx, argv, env);
out:
  br_argv_free(argv);
  br_argv_free(env);
  free(src);
  free(depot);
  free(name);
  return rc;
}

static int postprocess(br_node_ctx *ctx) { return br_xfer_node_post(ctx, "push", process); }

static const br_param_spec params[] = {
    {"src", BR_PARAM_STRING, NULL, false, "the folder to check in, on the worker ({attr} substituted)"},
    {"depot", BR_PARAM_STRING, "\"\"", false, "the depot: depot://HOST:PORT (or http(s)://)"},
    {"name", BR_PARAM_STRING, NULL, false,
     "the snapshot's name, e.g. shot010/cloth (or a whole depot://HOST:PORT/NAME)"},
    {"snapshot_attr", BR_PARAM_STRING, "\"snapshot\"", false,
     "attribute that receives DEPOT/NAME@vN (\"\": none)"},
    {"version_attr", BR_PARAM_STRING, "\"snapshot_version\"", false,
     "attribute that receives the version number N (\"\": none)"},
    BR_XFER_NODE_PARAMS,
    {NULL, 0, NULL, false, NULL},
};

const br_node_type br_node_push = {
    .name = "push",
    .help = "check a folder in to a depot as a new snapshot version (a job on the worker)",
    .children_port = -1,
    .params = params,
    .init = br_xfer_node_init,
    .process = process,
    .postprocess = postprocess,
};
