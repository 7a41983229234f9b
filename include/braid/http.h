/* HTTP: a small JSON-over-HTTP server (libmicrohttpd), bearer-token
 * authentication with roles, and a blocking JSON client (libcurl). The farm
 * server's API (br_api_*), the agent and the command line are built on it.
 *
 * Server threading: requests are parsed on libmicrohttpd's threads (an
 * internal thread pool over epoll). A handler may answer at once, or keep
 * the request and answer later from any thread (an engine callback, say):
 * the connection is suspended meanwhile, so no thread waits for it.
 * Every request carries a token ("Authorization: Bearer TOKEN"); a missing
 * or unknown token gets 401, a role the route does not allow gets 403, and
 * both are decided before the body is read. Bodies are bounded (413 past the
 * limit); a body that is not JSON gets 400. */
#ifndef BRAID_HTTP_H
#define BRAID_HTTP_H

#include <braid/error.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- roles and tokens ---- */

typedef enum br_role {
  BR_ROLE_NONE = 0,  /* no or unknown token */
  BR_ROLE_AGENT = 1, /* a farm agent: takes work, reports results */
  BR_ROLE_USER = 2,  /* submits, reads and edits graphs and tasks */
  BR_ROLE_ADMIN = 3, /* everything, tokens and limits too */
} br_role;

/* Route permissions are sets of roles. */
#define BR_ROLES(r) (1u << (r))
#define BR_ROLES_AGENT (BR_ROLES(BR_ROLE_AGENT) | BR_ROLES(BR_ROLE_ADMIN))
#define BR_ROLES_USER (BR_ROLES(BR_ROLE_USER) | BR_ROLES(BR_ROLE_ADMIN))
#define BR_ROLES_ADMIN BR_ROLES(BR_ROLE_ADMIN)
#define BR_ROLES_ANY (BR_ROLES(BR_ROLE_AGENT) | BR_ROLES_USER)
/* No token needed (the web UI's files, which hold no data). */
#define BR_ROLES_PUBLIC (BR_ROLES(BR_ROLE_NONE) | BR_ROLES_ANY)

const char *br_role_name(br_role r);
/* "agent", "user", "admin"; BR_ROLE_NONE when unknown. */
br_role br_role_parse(const char *s);

/* A token file: one JSON object per line,
 *   {"id":"...","role":"agent","name":"...","sha256":"<hex>","created_ms":N}
 * Only hashes are kept, so the file does not leak tokens. The file is read
 * again when it changes (tokens made by `braid token create` while the
 * server runs work at once). Thread safe. */
typedef struct br_auth br_auth;

/* Opens (creates when missing, mode 0600) a token file. A line that cannot
 * be used is skipped (one typo must not lock everyone out) and told through
 * warn, with its file and line, at each read; br_auth_open tells nobody. */
int br_auth_open(const char *path, br_auth **out, br_error *err);
int br_auth_open_warn(const char *path, br_warn_fn *warn, void *warn_ud, br_auth **out,
                      br_error *err);
void br_auth_close(br_auth *a);
/* The role of a token (constant-time comparison of hashes). */
br_role br_auth_check(br_auth *a, const char *token);
/* The same, and the token's id in id (17 bytes; "" when unknown). */
br_role br_auth_check_id(br_auth *a, const char *token, char *id);
/* How many tokens the file holds. */
size_t br_auth_count(br_auth *a);
/* Makes a token of this role, appends its hash to the file, and returns the
 * token (malloc'd, caller frees; it is not stored anywhere). id (may be
 * NULL) gets the token's id (17 bytes). */
int br_auth_create(br_auth *a, br_role role, const char *name, char **token, char *id,
                   br_error *err);
/* The tokens (without secrets): [{"id","role","name","created_ms"}]. */
json_t *br_auth_list(br_auth *a);
/* Removes a token by id. */
int br_auth_revoke(br_auth *a, const char *id, br_error *err);

/* ---- server ---- */

typedef struct br_http_server br_http_server;
typedef struct br_http_req br_http_req;

typedef struct br_http_route {
  const char *method;  /* "GET", "POST", "PUT", "DELETE" */
  const char *pattern; /* "/api/v1/tasks/{}/cancel": each {} matches one path segment */
  unsigned roles;      /* BR_ROLES_* allowed */
  void (*fn)(void *ud, br_http_req *rq);
  size_t max_body;     /* bytes; 0 = the server's default */
  bool raw_body;       /* do not parse the body as JSON */
} br_http_route;

/* A whole other handler mounted beside the routes (the depot inside braid
 * server, see br_depot_handle): every request whose path `owns` accepts
 * goes to it from its first callback on, token check included, with
 * libmicrohttpd's own arguments; `done` runs when such a request ends. */
struct MHD_Connection;
typedef struct br_http_mount {
  int (*owns)(const char *url);
  int (*handle)(void *ud, struct MHD_Connection *c, const char *url, const char *method,
                const char *upload_data, size_t *upload_data_size, void **con_cls);
  void (*done)(void **con_cls);
  void *ud;
} br_http_mount;

typedef struct br_http_opts {
  const char *listen;   /* "HOST:PORT" ("[v6]:PORT"); port 0 picks a free one */
  const char *tls_cert; /* PEM certificate and key files: serve HTTPS */
  const char *tls_key;
  int threads;          /* worker threads (0: 2) */
  size_t max_body;      /* default body limit (0: 1 MiB) */
  unsigned max_connections; /* 0: 8192 */
  br_auth *auth;        /* required */
  const br_http_route *routes; /* terminated by a route with fn == NULL */
  void *ud;             /* handed to every handler */
  const br_http_mount *mount; /* may be NULL; copied */
} br_http_opts;

int br_http_start(const br_http_opts *opts, br_http_server **out, br_error *err);
/* The port it listens on. */
int br_http_port(const br_http_server *s);
/* Requests answered so far, and those waiting for a deferred answer. */
void br_http_counts(br_http_server *s, uint64_t *requests, uint64_t *pending);
/* Stops: answers every request still waiting with 503, ends event streams,
 * and joins the threads. Whoever kept a request must not answer it after
 * this (stop them first). */
void br_http_stop(br_http_server *s);

/* Request accessors, valid until the request is answered. */
const char *br_http_req_method(const br_http_req *rq);
const char *br_http_req_path(const br_http_req *rq);
/* The i-th {} segment of the route's pattern (0-based), or NULL. */
const char *br_http_req_arg(const br_http_req *rq, int i);
/* A query-string argument, or NULL (only valid inside the handler call). */
const char *br_http_req_query(br_http_req *rq, const char *name);
/* A request header, or NULL (only valid inside the handler call). */
const char *br_http_req_header(br_http_req *rq, const char *name);
/* The body parsed as JSON (borrowed), or NULL when the body is empty. */
json_t *br_http_req_json(const br_http_req *rq);
/* The raw body. */
const char *br_http_req_body(const br_http_req *rq, size_t *len);
br_role br_http_req_role(const br_http_req *rq);
/* The id of the token that made the request ("" when none). */
const char *br_http_req_token_id(const br_http_req *rq);
/* The client's address, "IP:PORT" ("[IPv6]:PORT"), in buf ("" when unknown).
 * Only inside the handler call. Returns buf. */
const char *br_http_req_peer(br_http_req *rq, char *buf, size_t size);
/* Has the client gone (closed or broken its connection) while its request
 * waits for a deferred answer? A long poll's client may die meanwhile:
 * whoever holds the request asks before giving it something that must not
 * be lost. False while the handler runs or once answered (unknown then).
 * Any thread, until the request is answered. */
bool br_http_req_gone(br_http_req *rq);
/* fn runs once when the request ends (on a libmicrohttpd thread):
 * delivered is true when the answer was sent in full, false when the
 * connection failed first (the client cannot have read all of it). Set it
 * before answering. */
void br_http_req_on_end(br_http_req *rq, void (*fn)(void *ud, bool delivered), void *ud);

/* Answers. Exactly one per request, from any thread, during the handler or
 * later (the connection waits, suspended, meanwhile). */
void br_http_reply_json(br_http_req *rq, unsigned status, json_t *body /* stolen */);
void br_http_reply_error(br_http_req *rq, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void br_http_reply_data(br_http_req *rq, unsigned status, const char *content_type,
                        char *data /* malloc'd, stolen */, size_t len);
/* The same with extra headers: NULL-terminated name, value pairs. */
void br_http_reply_data_headers(br_http_req *rq, unsigned status, const char *content_type,
                                char *data, size_t len, const char *const *headers);
/* HTTP status for a braid error code (404 for BR_ENOTFOUND, 400, 409 ...). */
unsigned br_http_status_of(int code);

/* A streamed answer (server-sent events): data is written as it comes, from
 * any thread. Only inside the handler call. The stream holds one reference
 * for the caller: drop it with br_http_stream_release. */
typedef struct br_http_stream br_http_stream;
br_http_stream *br_http_reply_stream(br_http_req *rq, const char *content_type);
/* Queues data; -1 when the client has gone or more than the stream's
 * buffer (4 MiB) waits (the stream is then closed). */
int br_http_stream_write(br_http_stream *s, const char *data, size_t len);
/* Ends the stream (after what was queued). */
void br_http_stream_end(br_http_stream *s);
void br_http_stream_release(br_http_stream *s);

/* ---- client ---- */

typedef struct br_http_client br_http_client;

/* A client of base_url ("http://host:port"); token may be NULL. Keeps its
 * connection between calls. Not thread safe: one per thread. */
int br_http_client_open(const char *base_url, const char *token, br_http_client **out,
                        br_error *err);
void br_http_client_close(br_http_client *c);
/* Seconds a call may take (0: no limit; the default is 60). */
void br_http_client_set_timeout(br_http_client *c, double seconds);
/* Calls give up as soon as *flag becomes non-zero (another thread sets it
 * to stop a long poll); they then return BR_ECANCEL. */
void br_http_client_set_abort(br_http_client *c, const volatile int *flag);
/* Verify the server against this CA file (HTTPS with a private CA). */
void br_http_client_set_ca(br_http_client *c, const char *ca_file);
/* A JSON call: body may be NULL. Returns the HTTP status (> 0), or a
 * negative code when no answer came (err filled). *out (may be NULL) gets
 * the answer parsed as JSON (new reference) or NULL. */
int br_http_client_call(br_http_client *c, const char *method, const char *path,
                        const json_t *body, json_t **out, br_error *err);
/* A GET whose answer goes to fn as it arrives (logs, event streams); fn
 * returns non-zero to stop. Returns the HTTP status or a negative code. */
int br_http_client_get_stream(br_http_client *c, const char *path,
                              int (*fn)(void *ud, const char *data, size_t len), void *ud,
                              br_error *err);
/* A GET whose whole answer comes back as text (*body, malloc'd, NUL
 * terminated; *len) with its headers (*headers: {"lower-case-name": value},
 * new reference; may be NULL). Returns the status or a negative code. */
int br_http_client_get_text(br_http_client *c, const char *path, char **body, size_t *len,
                            json_t **headers, br_error *err);
/* The message of an error answer ({"error": "..."}), or a generic one. */
const char *br_http_error_message(const json_t *answer, int status);

#ifdef __cplusplus
}
#endif
#endif
