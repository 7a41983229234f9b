/* wait_children: the parent-children waiter. Parents arrive on input
 * "parents", children on "children" (in any order: a child may come first).
 * Both wait under the parent's id. A parent is released when as many of its
 * children have arrived as it has live (not dead) children; a parent that is
 * here creates no more. Children's attributes are promoted to the parent by
 * the "promote" rules, in the children's creation order (or "sort"); then the
 * parent leaves by "parents" and the children by "children" (where, if that
 * output is not wired, they stay as finished). */
#include <braid/node.h>

#include <stdio.h>
#include <stdlib.h>

#include "../promote.h"


static int process(br_node_ctx *ctx) {
  br_task *t = br_ctx_task(ctx);
  if (br_task_port(t) == 0) {
    br_ctx_block(ctx, br_task_id(t));
  } else {
    if (!br_task_parent(t))
      return br_ctx_fail(ctx, "task arrived at input 'children' but has no parent");
    br_ctx_block(ctx, br_task_parent(t));
  }
  return 0;
}

static int cmp_id(const void *a, const void *b) {
  int64_t x = br_task_id(*(br_task *const *)a), y = br_task_id(*(br_task *const *)b);
  return x < y ? -1 : x > y;
}

/* Runs each time a task joins the group: it decides from the parent (found
 * by id) and the group's size, and goes through the group only to release
 * it; going through it on every arrival made a parent of N children cost
 * N^2 (40,000 children: 8 s). */
static int release(br_node_ctx *ctx) {
  size_t n = br_ctx_group_size(ctx);
  br_task *parent = br_ctx_group_member(ctx, br_ctx_group_key(ctx));
  if (!parent || br_task_port(parent) != 0) return 0;
  size_t nchildren = n - 1; /* the others are children: they wait under their parent's id */
  if ((int64_t)nchildren < br_task_live_children(parent)) return 0;
  br_task **children = calloc(nchildren + 1, sizeof *children);
  if (!children) return br_ctx_fail(ctx, "out of memory");
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    br_task *t = br_ctx_group_task(ctx, i);
    if (t != parent) children[k++] = t;
  }
  qsort(children, k, sizeof *children, cmp_id); /* creation order */
  char msg[512];
  int rc = br_promote_apply(br_ctx_node_state(ctx), children, k, br_ctx_attrs(ctx, parent), msg,
                            sizeof msg);
  if (rc) {
    free(children);
    return br_ctx_fail(ctx, "%s", msg);
  }
  br_ctx_release(ctx, parent, 0);
  for (size_t i = 0; i < k; i++) br_ctx_release(ctx, children[i], 1);
  free(children);
  return 0;
}

static const char *const ports[] = {"parents", "children", NULL};

static const br_param_spec params[] = {
    BR_PROMOTE_PARAM,
    {NULL, 0, NULL, false, NULL},
};

const br_node_type br_node_wait_children = {
    .name = "wait_children",
    .help = "hold parents until all their children arrive; merge the children's attributes",
    .inputs = ports,
    .outputs = ports,
    .children_port = -1,
    .params = params,
    .init = br_promote_node_init,
    .fini = br_promote_node_fini,
    .process = process,
    .release = release,
};
