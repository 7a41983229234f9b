/* gather_split: the split gatherer. Every element of the innermost split a
 * task belongs to waits here (under the split's id) until all live elements
 * have arrived. Then the original (element 0, or the lowest one left) goes
 * on with the promoted attributes, in element order (or "sort"), and leaves
 * the split: its membership becomes the one it had before the split, so a
 * second gather_split gathers the next split out (lists of lists). The other
 * elements become dead. A task in no split passes through. */
#include <braid/node.h>

#include <stdlib.h>

#include "../promote.h"


static int process(br_node_ctx *ctx) {
  int64_t split;
  br_task_split(br_ctx_task(ctx), &split, NULL, NULL);
  if (split) br_ctx_block(ctx, split);
  else br_ctx_route(ctx, 0);
  return 0;
}

static int cmp_elem(const void *a, const void *b) {
  int32_t x, y;
  br_task_split(*(br_task *const *)a, NULL, &x, NULL);
  br_task_split(*(br_task *const *)b, NULL, &y, NULL);
  return x < y ? -1 : x > y;
}

static int release(br_node_ctx *ctx) {
  br_split sp;
  size_t n = br_ctx_group_size(ctx);
  if (!br_ctx_split_info(ctx, br_ctx_group_key(ctx), &sp))
    return br_ctx_fail(ctx, "split %lld is unknown", (long long)br_ctx_group_key(ctx));
  if ((int64_t)n < sp.live) return 0;
  br_task **el = calloc(n + 1, sizeof *el);
  if (!el) return br_ctx_fail(ctx, "out of memory");
  for (size_t i = 0; i < n; i++) el[i] = br_ctx_group_task(ctx, i);
  qsort(el, n, sizeof *el, cmp_elem);
  char msg[512];
  if (br_promote_apply(br_ctx_node_state(ctx), el, n, br_ctx_attrs(ctx, el[0]), msg, sizeof msg)) {
    free(el);
    return br_ctx_fail(ctx, "%s", msg);
  }
  br_task *survivor = el[0];
  for (size_t i = 1; i < n; i++) br_ctx_release_kill(ctx, el[i]);
  br_ctx_unsplit(ctx, survivor);
  br_ctx_release(ctx, survivor, 0);
  free(el);
  return 0;
}

static const br_param_spec params[] = {
    BR_PROMOTE_PARAM,
    {NULL, 0, NULL, false, NULL},
};

const br_node_type br_node_gather_split = {
    .name = "gather_split",
    .help = "wait for every element of a split; the original goes on with merged attributes",
    .children_port = -1,
    .params = params,
    .init = br_promote_node_init,
    .fini = br_promote_node_fini,
    .process = process,
    .release = release,
};
