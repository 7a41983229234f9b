/* null: passes every task through unchanged (a junction, a parking place). */
#include <braid/node.h>

static int process(br_node_ctx *ctx) {
  br_ctx_route(ctx, 0);
  return 0;
}

static const br_param_spec params[] = {{NULL, 0, NULL, false, NULL}};

const br_node_type br_node_null = {
    .name = "null",
    .help = "pass tasks through unchanged",
    .children_port = -1,
    .params = params,
    .process = process,
};
