/* kill: consumes every task that arrives (it becomes dead, and no longer
 * holds back a parent or a split gather). */
#include <braid/node.h>

static int process(br_node_ctx *ctx) {
  br_ctx_kill(ctx);
  return 0;
}

static const char *const outputs[] = {NULL};
static const br_param_spec params[] = {{NULL, 0, NULL, false, NULL}};

const br_node_type br_node_kill = {
    .name = "kill",
    .help = "consume tasks (they become dead)",
    .outputs = outputs,
    .children_port = -1,
    .params = params,
    .process = process,
};
