/* The job runtime channel: how a running job talks back to braid.
 *
 * A job gets BRAID_TASK_ID, BRAID_INVOCATION_ID, BRAID_NODE, BRAID_CORES (the
 * slots it holds: use it for a renderer's thread count), BRAID_ATTR_<NAME> for
 * each scalar attribute, BRAID_ATTRS_FILE (all attributes as JSON), BRAID_EXE
 * (the braid binary; its folder is appended to PATH when PATH has no braid),
 * and a control channel: BRAID_CTL (a unix socket path) and BRAID_CTL_TOKEN
 * (a secret that names the invocation, so one job cannot act for another).
 *
 * Protocol: one JSON object per line, each answered by one JSON object line.
 *
 *   {"op":"set",      "token":T, "attrs":{"k":v,...}}
 *   {"op":"spawn",    "token":T, "name":"N" (optional), "attrs":{...}}
 *   {"op":"progress", "token":T, "value":0.42}          (0..1)
 *   -> {"ok":true} | {"ok":false, "error":"message"}
 *
 * An optional "id" member of a request is echoed in its response. The answer
 * is written only after braid has acted on the request (a spawn has been
 * handed to on_spawn), so a job that spawns and exits loses nothing.
 *
 * The message handling (br_runtime_handle) is separate from the transport:
 * the unix socket server here is one transport; a remote agent can forward
 * the same request objects over HTTP and call br_runtime_handle itself.
 *
 * Threading: a br_runtime lives on one libuv loop; all calls and callbacks
 * happen on that loop's thread. */
#ifndef BRAID_RUNTIME_H
#define BRAID_RUNTIME_H

#include <braid/error.h>
#include <braid/exec.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Length of a control token in hex characters (128 random bits). */
#define BR_RUNTIME_TOKEN_LEN 32

typedef struct br_runtime br_runtime;

/* Creates a runtime whose requests call ev->on_spawn and ev->on_progress
 * (ev is copied; other members are unused). Free with br_runtime_destroy. */
int br_runtime_create(const br_exec_events *ev, br_runtime **out, br_error *err);

/* Frees the runtime. When it listens, its handles are closed and the memory
 * is released by their close callbacks: run the loop afterwards. */
void br_runtime_destroy(br_runtime *rt);

/* Registers a running invocation and fills token (NUL-terminated hex). */
int br_runtime_register(br_runtime *rt, int64_t invocation_id, int64_t task_id,
                        char token[BR_RUNTIME_TOKEN_LEN + 1], br_error *err);

/* Forgets an invocation; later requests with its token are refused. Returns
 * the attributes it set (a new reference to an object, possibly empty), or
 * NULL when it was not registered. */
json_t *br_runtime_unregister(br_runtime *rt, int64_t invocation_id);

/* Handles one request object and returns the response object (new
 * reference, never NULL unless out of memory). Transport independent. */
json_t *br_runtime_handle(br_runtime *rt, const json_t *request);

/* Serves the protocol on a unix domain socket on loop. dir is created when
 * missing (mode 0700); the socket is dir/ctl-PID.sock, or a private folder
 * under $TMPDIR when that path is too long for a socket address. */
int br_runtime_listen(br_runtime *rt, uv_loop_t *loop, const char *dir, br_error *err);

/* The socket path (valid after br_runtime_listen), or NULL. */
const char *br_runtime_socket_path(const br_runtime *rt);

/* ---- helpers shared by executors and the `braid ctl` client ---- */

/* "BRAID_ATTR_" + the name uppercased, every other character than A-Z and
 * 0-9 replaced by '_'. Returns a malloc'd string (caller frees). */
char *br_runtime_attr_env_name(const char *attr);

/* The environment text of a scalar attribute: strings as they are, numbers
 * and booleans as JSON, null as "". NULL for lists and objects (not
 * scalars). Returns a malloc'd string (caller frees). */
char *br_runtime_attr_env_value(const json_t *value);

/* Writes data to path atomically (a temporary file in the same folder, then
 * rename), so a reader never sees a partial file. */
int br_runtime_write_file(const char *path, const char *data, size_t len, br_error *err);

/* Parses a command line assignment:
 *   k=v    v as JSON when it parses as JSON (42, 1.5, true, null, [1,2],
 *          {"a":1}, "\"quoted\""), otherwise v as a string;
 *   k:=v   v must be JSON (an error otherwise).
 * On success *key (malloc'd) and *value (new reference) belong to the caller. */
int br_runtime_parse_assign(const char *arg, char **key, json_t **value, br_error *err);

/* Client side: connects to socket_path, sends request (one line), waits for
 * the response line and returns it in *response (new reference). Returns
 * BR_OK when a response was received (check its "ok" member), BR_ENET when
 * the channel failed. Blocking; for jobs and the `braid ctl` command. */
int br_runtime_call(const char *socket_path, const json_t *request, json_t **response,
                    br_error *err);

#ifdef __cplusplus
}
#endif
#endif
