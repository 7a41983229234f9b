/* The registry of compiled-in executors: adding one is one file in src/exec/
 * and one line in the table below. */
#include <braid/exec.h>

#include <string.h>

static const br_executor_ops *const executors[] = {
    &br_exec_local,
    &br_exec_agent,
    &br_exec_slurm,
    NULL,
};

const br_executor_ops *br_executor_find(const char *name) {
  if (!name) return NULL;
  for (const br_executor_ops *const *e = executors; *e; e++)
    if (strcmp((*e)->name, name) == 0) return *e;
  return NULL;
}

const char *br_inv_status_name(br_inv_status s) {
  switch (s) {
  case BR_INV_OK: return "ok";
  case BR_INV_FAILED: return "failed";
  case BR_INV_RETRY: return "retry";
  case BR_INV_TIMEOUT: return "timeout";
  case BR_INV_CANCELLED: return "cancelled";
  case BR_INV_LOST: return "lost";
  case BR_INV_SPAWN_ERROR: return "spawn_error";
  }
  return "unknown";
}
