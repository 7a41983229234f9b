/* The farm: the server side of braid agents. The "agent" executor
 * (br_exec_agent) holds the engine's queued invocations and gives them to
 * agents that ask for work (a long poll), matching cores, memory, GPUs and
 * tags; priority first, then fair share between the submissions (groups) of
 * one priority; per-node limits and named farm-wide limits (licences).
 * Agents report starts, output, progress, spawns and results; a report is
 * answered once what it changed is committed, and a repeated one changes
 * nothing. An agent that stops polling is lost after a timeout and its
 * invocations run elsewhere; an agent on which a submission keeps failing is
 * avoided for that submission.
 *
 * The wire protocol (JSON; see docs/openapi.yaml, "agents"):
 *   register {id, host, cores, slots, memory_mb, gpus, tags, version,
 *             held: [{id, task, group, limits, node_key}]}
 *     -> {session, poll_wait_s, lost_after_s, cancel: [ids]}
 *   poll     {session, free: {slots, cores, memory_mb, gpus}, wait_ms}
 *     -> {work: [item...], cancel: [ids]}   (waits up to wait_ms for work)
 *   report   {session, events: [{seq, inv, task, type: start | progress |
 *             output | spawn | done, ...}]} -> {ack: seq}
 *   leave    {session} -> {left: id}   (a stopping agent, after its reports)
 * register also carries "instance" (random, one per agent process) and the
 * server adds "address" (where the request came from): another live
 * instance's id is refused (409).
 *
 * News (br_exec_config.notify): "worker" (a worker's state changed: the
 * worker as in br_farm_workers), "progress" ({task, invocation, value}),
 * "output" ({inv, task, size}: a log grew).
 *
 * Everything here runs on the engine's thread: call it from a function
 * handed over with br_engine_post. Answers go to a callback, at once or
 * later (after the engine's next commit), on the same thread. */
#ifndef BRAID_FARM_H
#define BRAID_FARM_H

#include <braid/error.h>
#include <braid/exec.h>
#include <jansson.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Options (br_exec_config.options) of the agent executor:
 *   poll_wait     seconds an agent's poll waits for work (default 15)
 *   lost_after    seconds without a poll or report before an agent is lost
 *                 (default 30); its invocations then run elsewhere
 *   avoid_after   failures of one submission's jobs on one agent before the
 *                 agent is avoided for that submission (default 3)
 *   recover       seconds after a restart during which nothing new is
 *                 dispatched while agents that held work reconnect
 *                 (default: lost_after)
 *   limits        {"name": max, ...} named farm-wide limits
 *   max_pending   invocations held waiting for an agent (default 1000000) */

/* An answer: HTTP-like status and a JSON body (stolen). */
typedef void (*br_farm_reply)(void *ud, unsigned status, json_t *body);

/* Is this executor the farm's? */
bool br_farm_is(const br_executor_ops *ops);
/* The farm inside an executor: itself for the agent executor, the farm a
 * slurm executor runs its jobs' agents on, or NULL. */
br_executor *br_farm_of(const br_executor_ops *ops, br_executor *ex);

/* Ends an invocation the farm holds as if its agent had reported it (the
 * agent is gone, e.g. its Slurm job ended): on_done with this status and
 * message, and the agent, if it is still there, is told to cancel it.
 * BR_ENOTFOUND when the farm does not hold it. */
int br_farm_end(br_executor *ex, int64_t invocation_id, br_inv_status status, const char *msg);
/* Has the invocation been given to an agent? (false: still pending, or unknown) */
bool br_farm_assigned(br_executor *ex, int64_t invocation_id);

void br_farm_register(br_executor *ex, const json_t *req, br_farm_reply fn, void *ud);
void br_farm_poll(br_executor *ex, const char *agent, const json_t *req, br_farm_reply fn,
                  void *ud);
void br_farm_report(br_executor *ex, const char *agent, const json_t *req, br_farm_reply fn,
                    void *ud);
/* The agent stops: its jobs not reported yet run elsewhere at once, it is
 * offline (not lost) and gets nothing more. */
void br_farm_leave(br_executor *ex, const char *agent, const json_t *req, br_farm_reply fn,
                   void *ud);

/* Has the asker of a waiting request (the ud of the poll's reply) gone?
 * The farm asks before it gives a waiting poll work, before the answer
 * goes, and once a second for lost agents (so a killed agent is lost
 * lost_after from its death, not from its poll's deadline). */
typedef bool (*br_farm_gone)(void *reply_ud);
void br_farm_set_gone_check(br_executor *ex, br_farm_gone gone);
/* An answer did not reach its agent (the connection failed while it was
 * sent): of its "work" list (objects with "id"), the invocations the agent
 * never had are reported lost now, and run again at once. */
void br_farm_undelivered(br_executor *ex, const json_t *work);

/* The workers as JSON: [{id, host, state, cores, slots, memory_mb, gpus,
 * tags, drain, running: [ids], free: {...}, last_seen_ms}]. */
json_t *br_farm_workers(br_executor *ex);
/* Drains (or undrains: drain 0) a worker, and/or replaces its tags (tags
 * NULL: keep). Works for workers not connected yet (kept for when they
 * come). drain -1: keep. */
int br_farm_worker_set(br_executor *ex, const char *id, int drain, const json_t *tags,
                       br_error *err);
/* Settings made with br_farm_worker_set, to keep across restarts:
 * {"id": {"drain": bool, "tags": [...]}}. */
json_t *br_farm_worker_settings(br_executor *ex);
/* Named limits: {"name": {"max": N, "used": N}}. */
json_t *br_farm_limits(br_executor *ex);
/* The names of the limits set (with a max), as "a, b", or "none" (caller
 * frees; NULL: out of memory). */
char *br_farm_limits_set_names(br_executor *ex);
/* Sets a limit (max < 0 removes it). */
int br_farm_limit_set(br_executor *ex, const char *name, int max, br_error *err);

typedef struct br_farm_stats {
  int agents_online, agents_lost, agents_draining;
  int64_t pending, running;
  uint64_t dispatched, reported, lost_invocations;
  /* ready-to-assigned latency: count, sum (ms), and counts per bucket of
   * br_farm_latency_buckets (the last one is +Inf) */
  uint64_t lat_count;
  double lat_sum_ms;
  uint64_t lat_buckets[12];
} br_farm_stats;
extern const double br_farm_latency_buckets[12];
void br_farm_get_stats(br_executor *ex, br_farm_stats *out);

#ifdef __cplusplus
}
#endif
#endif
