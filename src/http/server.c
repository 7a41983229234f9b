/* The HTTP server layer (see http.h) on libmicrohttpd: an internal thread
 * pool over epoll, connections suspended while an answer is pending.
 *
 * A request goes through: route match (404/405) and token check (401/403)
 * on its first callback, before any body is read; the body, bounded by the
 * route's limit (413); JSON parsing (400); the handler. The handler answers
 * at once or keeps the request; in that case the connection is suspended
 * (no thread waits) and whoever answers later resumes it. The answer is
 * stored under the request's lock, so "answered before the handler
 * returned" and "answered later" meet safely.
 *
 * Event streams use a content-reader callback that suspends its connection
 * when it has nothing to send; a write resumes it. */
#include <braid/http.h>

#include "../fs.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_ARGS 8
#define STREAM_MAX (4u << 20)
#define DEFAULT_MAX_BODY (1u << 20)

struct br_http_stream {
  pthread_mutex_t mu;
  int refs;
  struct MHD_Connection *conn;
  char *buf;
  size_t len, cap;
  bool suspended, ended, gone;
  br_http_stream *next, *prev; /* the server's list */
  br_http_server *srv;
};

struct br_http_req {
  br_http_server *srv;
  struct MHD_Connection *conn;
  const br_http_route *route;
  char method[8];
  char *path;
  char *args[MAX_ARGS];
  int nargs;
  br_role role;
  char token_id[17];
  char *body;
  size_t len, cap, limit;
  json_t *json;
  unsigned reject;
  char reject_msg[200];
  bool dispatched;
  bool in_handler;
  pthread_mutex_t mu;
  bool mounted;   /* the mount's request: mount_cls is its state */
  void *mount_cls;
  bool suspended; /* waiting for a deferred answer */
  bool answered;  /* an answer is stored (resp) */
  bool queued;    /* handed to libmicrohttpd */
  unsigned status;
  struct MHD_Response *resp;
  br_http_req *prev, *next; /* the server's list of suspended requests */
  void (*on_end)(void *ud, bool delivered);
  void *on_end_ud;
};

struct br_http_server {
  struct MHD_Daemon *mhd;
  br_auth *auth;
  const br_http_route *routes;
  void *ud;
  br_http_mount mount;
  size_t max_body;
  int port;
  char *cert, *key;
  pthread_mutex_t mu;
  br_http_req *waiting;
  br_http_stream *streams;
  bool stopping;
  atomic_uint_fast64_t requests;
  atomic_int open_reqs; /* begun and not yet completed (see br_http_stop) */
  atomic_uint_fast64_t pending;
};

/* ---- answers ---- */

static struct MHD_Response *json_response(json_t *body) {
  char *s = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
  json_decref(body);
  if (!s) s = strdup("{}");
  if (!s) return NULL;
  size_t n = strlen(s);
  struct MHD_Response *r = MHD_create_response_from_buffer(n, s, MHD_RESPMEM_MUST_FREE);
  if (!r) {
    free(s);
    return NULL;
  }
  MHD_add_response_header(r, "Content-Type", "application/json");
  return r;
}

/* Stores the answer; resumes the connection when it was suspended. */
static void set_answer(br_http_req *rq, unsigned status, struct MHD_Response *r) {
  pthread_mutex_lock(&rq->mu);
  if (rq->answered) { /* a second answer is a caller bug: keep the first */
    pthread_mutex_unlock(&rq->mu);
    if (r) MHD_destroy_response(r);
    return;
  }
  rq->answered = true;
  rq->status = status;
  rq->resp = r;
  struct MHD_Connection *resume = NULL;
  if (rq->suspended) {
    br_http_server *srv = rq->srv;
    rq->suspended = false;
    pthread_mutex_lock(&srv->mu);
    if (rq->prev) rq->prev->next = rq->next;
    else srv->waiting = rq->next;
    if (rq->next) rq->next->prev = rq->prev;
    rq->prev = rq->next = NULL;
    pthread_mutex_unlock(&srv->mu);
    atomic_fetch_sub(&srv->pending, 1);
    resume = rq->conn;
  }
  pthread_mutex_unlock(&rq->mu);
  /* after the unlock: once resumed, the request may be finished and freed
   * by a libmicrohttpd thread at any moment */
  if (resume) MHD_resume_connection(resume);
}

void br_http_reply_json(br_http_req *rq, unsigned status, json_t *body) {
  set_answer(rq, status, json_response(body));
}

void br_http_reply_error(br_http_req *rq, unsigned status, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  br_http_reply_json(rq, status, json_pack("{ss}", "error", msg));
}

void br_http_reply_data_headers(br_http_req *rq, unsigned status, const char *content_type,
                                char *data, size_t len, const char *const *headers) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(len, data ? data : (char *)"",
                                      data ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
  if (!r) {
    free(data);
  } else {
    if (content_type) MHD_add_response_header(r, "Content-Type", content_type);
    for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
      MHD_add_response_header(r, headers[i], headers[i + 1]);
  }
  set_answer(rq, status, r);
}

void br_http_reply_data(br_http_req *rq, unsigned status, const char *content_type, char *data,
                        size_t len) {
  br_http_reply_data_headers(rq, status, content_type, data, len, NULL);
}

unsigned br_http_status_of(int code) {
  switch (code) {
  case BR_OK: return MHD_HTTP_OK;
  case BR_EINVAL: return MHD_HTTP_BAD_REQUEST;
  case BR_ENOTFOUND: return MHD_HTTP_NOT_FOUND;
  case BR_ESTATE: return MHD_HTTP_CONFLICT;
  case BR_EAUTH: return MHD_HTTP_UNAUTHORIZED;
  case BR_ENOMEM: return MHD_HTTP_SERVICE_UNAVAILABLE;
  case BR_ECANCEL: return MHD_HTTP_SERVICE_UNAVAILABLE;
  case BR_ESCRIPT: return MHD_HTTP_UNPROCESSABLE_CONTENT;
  default: return MHD_HTTP_INTERNAL_SERVER_ERROR;
  }
}

/* ---- streams ---- */

static void stream_unref(br_http_stream *s) {
  pthread_mutex_lock(&s->mu);
  int left = --s->refs;
  pthread_mutex_unlock(&s->mu);
  if (left) return;
  pthread_mutex_destroy(&s->mu);
  free(s->buf);
  free(s);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
  br_http_stream *s = cls;
  (void)pos;
  pthread_mutex_lock(&s->mu);
  if (s->len) {
    size_t n = s->len < max ? s->len : max;
    memcpy(buf, s->buf, n);
    memmove(s->buf, s->buf + n, s->len - n);
    s->len -= n;
    pthread_mutex_unlock(&s->mu);
    return (ssize_t)n;
  }
  if (s->ended) {
    pthread_mutex_unlock(&s->mu);
    return MHD_CONTENT_READER_END_OF_STREAM;
  }
  /* nothing to send: park the connection until a write resumes it */
  s->suspended = true;
  MHD_suspend_connection(s->conn);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

static void stream_free(void *cls) {
  br_http_stream *s = cls;
  br_http_server *srv = s->srv;
  pthread_mutex_lock(&srv->mu);
  if (s->prev) s->prev->next = s->next;
  else if (srv->streams == s) srv->streams = s->next;
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = NULL;
  pthread_mutex_unlock(&srv->mu);
  pthread_mutex_lock(&s->mu);
  s->gone = true;
  s->conn = NULL;
  pthread_mutex_unlock(&s->mu);
  stream_unref(s);
}

br_http_stream *br_http_reply_stream(br_http_req *rq, const char *content_type) {
  if (!rq->in_handler) return NULL;
  br_http_stream *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  pthread_mutex_init(&s->mu, NULL);
  s->refs = 2; /* the response and the caller */
  s->conn = rq->conn;
  s->srv = rq->srv;
  struct MHD_Response *r =
      MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, s, stream_free);
  if (!r) {
    pthread_mutex_destroy(&s->mu);
    free(s);
    return NULL;
  }
  MHD_add_response_header(r, "Content-Type", content_type ? content_type : "text/event-stream");
  MHD_add_response_header(r, "Cache-Control", "no-cache");
  br_http_server *srv = rq->srv;
  pthread_mutex_lock(&srv->mu);
  s->next = srv->streams;
  if (s->next) s->next->prev = s;
  srv->streams = s;
  pthread_mutex_unlock(&srv->mu);
  set_answer(rq, MHD_HTTP_OK, r);
  return s;
}

static void stream_wake(br_http_stream *s) {
  if (s->suspended && !s->gone) {
    s->suspended = false;
    MHD_resume_connection(s->conn);
  }
}

int br_http_stream_write(br_http_stream *s, const char *data, size_t len) {
  pthread_mutex_lock(&s->mu);
  if (s->gone || s->ended) {
    pthread_mutex_unlock(&s->mu);
    return -1;
  }
  if (s->len + len > STREAM_MAX) { /* a reader that does not keep up: cut it off */
    s->ended = true;
    stream_wake(s);
    pthread_mutex_unlock(&s->mu);
    return -1;
  }
  if (s->len + len > s->cap) {
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < s->len + len) cap *= 2;
    char *b = realloc(s->buf, cap);
    if (!b) {
      pthread_mutex_unlock(&s->mu);
      return -1;
    }
    s->buf = b;
    s->cap = cap;
  }
  memcpy(s->buf + s->len, data, len);
  s->len += len;
  stream_wake(s);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

void br_http_stream_end(br_http_stream *s) {
  pthread_mutex_lock(&s->mu);
  s->ended = true;
  stream_wake(s);
  pthread_mutex_unlock(&s->mu);
}

void br_http_stream_release(br_http_stream *s) {
  if (s) stream_unref(s);
}

/* ---- accessors ---- */

const char *br_http_req_method(const br_http_req *rq) { return rq->method; }
const char *br_http_req_path(const br_http_req *rq) { return rq->path; }
const char *br_http_req_arg(const br_http_req *rq, int i) {
  return i >= 0 && i < rq->nargs ? rq->args[i] : NULL;
}
const char *br_http_req_query(br_http_req *rq, const char *name) {
  return rq->in_handler ? MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name) : NULL;
}
const char *br_http_req_header(br_http_req *rq, const char *name) {
  return rq->in_handler ? MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name) : NULL;
}
json_t *br_http_req_json(const br_http_req *rq) { return rq->json; }
const char *br_http_req_body(const br_http_req *rq, size_t *len) {
  if (len) *len = rq->len;
  return rq->body ? rq->body : "";
}
br_role br_http_req_role(const br_http_req *rq) { return rq->role; }
const char *br_http_req_token_id(const br_http_req *rq) { return rq->token_id; }

const char *br_http_req_peer(br_http_req *rq, char *buf, size_t size) {
  if (size) buf[0] = 0;
  const union MHD_ConnectionInfo *ci =
      rq->in_handler ? MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS)
                     : NULL;
  const struct sockaddr *sa = ci ? ci->client_addr : NULL;
  char ip[INET6_ADDRSTRLEN] = "";
  if (sa && sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
    snprintf(buf, size, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
  } else if (sa && sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
    snprintf(buf, size, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
  }
  return buf;
}

bool br_http_req_gone(br_http_req *rq) {
  bool gone = false;
  pthread_mutex_lock(&rq->mu);
  /* while suspended nothing else touches the connection, and libmicrohttpd
   * neither times it out nor closes it: its socket is ours to look at. The
   * client sends nothing more while it waits, so a hang-up or an error on
   * the socket can only mean it went away (a killed process's socket is
   * closed by its kernel: FIN or RST). */
  if (rq->suspended) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct pollfd pf = {.fd = ci ? ci->connect_fd : -1, .events = POLLIN | POLLRDHUP};
    if (pf.fd >= 0 && poll(&pf, 1, 0) > 0)
      gone = (pf.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
  }
  pthread_mutex_unlock(&rq->mu);
  return gone;
}

void br_http_req_on_end(br_http_req *rq, void (*fn)(void *ud, bool delivered), void *ud) {
  pthread_mutex_lock(&rq->mu);
  rq->on_end = fn;
  rq->on_end_ud = ud;
  pthread_mutex_unlock(&rq->mu);
}

void br_http_counts(br_http_server *s, uint64_t *requests, uint64_t *pending) {
  if (requests) *requests = atomic_load(&s->requests);
  if (pending) *pending = atomic_load(&s->pending);
}

/* ---- routing ---- */

/* Matches path against pattern, capturing {} segments. */
static bool match(const char *pattern, const char *path, br_http_req *rq) {
  const char *p = pattern, *u = path;
  int n = 0;
  char *args[MAX_ARGS];
  while (*p && *u) {
    if (p[0] == '{' && p[1] == '}') {
      const char *end = strchr(u, '/');
      size_t len = end ? (size_t)(end - u) : strlen(u);
      if (len == 0 || n == MAX_ARGS) goto no;
      args[n++] = strndup(u, len);
      p += 2;
      u += len;
    } else if (*p == *u) {
      p++;
      u++;
    } else {
      goto no;
    }
  }
  if (*p || *u) goto no;
  for (int i = 0; i < n; i++) rq->args[i] = args[i];
  rq->nargs = n;
  return true;
no:
  for (int i = 0; i < n; i++) free(args[i]);
  return false;
}

static void reject(br_http_req *rq, unsigned status, const char *msg) {
  rq->reject = status;
  snprintf(rq->reject_msg, sizeof rq->reject_msg, "%s", msg);
}

static enum MHD_Result queue(br_http_req *rq) {
  rq->queued = true;
  if (!rq->resp) return MHD_NO;
  if (rq->status == MHD_HTTP_UNAUTHORIZED)
    MHD_add_response_header(rq->resp, "WWW-Authenticate", "Bearer");
  enum MHD_Result ret = MHD_queue_response(rq->conn, rq->status, rq->resp);
  MHD_destroy_response(rq->resp);
  rq->resp = NULL;
  return ret;
}

static enum MHD_Result queue_reject(br_http_req *rq) {
  br_http_reply_error(rq, rq->reject, "%s", rq->reject_msg);
  return queue(rq);
}

/* Whether route r answers method. HEAD is GET without the body (which
 * libmicrohttpd leaves out) where GET needs no token: the web UI's files,
 * which a browser or a proxy's check may ask for so. */
static bool answers(const br_http_route *r, const char *method) {
  if (strcmp(r->method, method) == 0) return true;
  return strcmp(method, "HEAD") == 0 && strcmp(r->method, "GET") == 0 &&
         (r->roles & BR_ROLES(BR_ROLE_NONE));
}

static void first_call(br_http_server *srv, br_http_req *rq, const char *url, const char *method) {
  bool path_known = false;
  for (const br_http_route *r = srv->routes; r && r->fn; r++) {
    br_http_req probe;
    memset(&probe, 0, sizeof probe);
    if (!match(r->pattern, url, &probe)) continue;
    path_known = true;
    if (!answers(r, method)) {
      for (int i = 0; i < probe.nargs; i++) free(probe.args[i]);
      continue;
    }
    rq->route = r;
    memcpy(rq->args, probe.args, sizeof rq->args);
    rq->nargs = probe.nargs;
    break;
  }
  /* the token first: a caller without one learns nothing about the API */
  const char *h = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, "Authorization");
  const char *tok = h && strncasecmp(h, "Bearer ", 7) == 0 ? h + 7 : NULL;
  while (tok && *tok == ' ') tok++;
  rq->role = tok ? br_auth_check_id(srv->auth, tok, rq->token_id) : BR_ROLE_NONE;
  bool open = rq->route && (rq->route->roles & BR_ROLES(BR_ROLE_NONE));
  if (rq->role == BR_ROLE_NONE && !open) {
    reject(rq, MHD_HTTP_UNAUTHORIZED, tok ? "unknown token" : "this request needs a token");
    return;
  }
  if (!rq->route) {
    reject(rq, path_known ? MHD_HTTP_METHOD_NOT_ALLOWED : MHD_HTTP_NOT_FOUND,
           path_known ? "method not allowed here" : "no such endpoint");
    return;
  }
  if (!(rq->route->roles & BR_ROLES(rq->role))) {
    char msg[128];
    snprintf(msg, sizeof msg, "a token of role '%s' may not do this", br_role_name(rq->role));
    reject(rq, MHD_HTTP_FORBIDDEN, msg);
    return;
  }
  rq->limit = rq->route->max_body ? rq->route->max_body : srv->max_body;
  const char *cl = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, "Content-Length");
  if (cl) {
    char *end;
    errno = 0;
    unsigned long long n = strtoull(cl, &end, 10);
    if (errno || *end || n > rq->limit) reject(rq, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large");
  }
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **con_cls) {
  br_http_server *srv = cls;
  br_http_req *rq = *con_cls;
  (void)version;
  if (!rq) {
    rq = calloc(1, sizeof *rq);
    if (!rq) return MHD_NO;
    *con_cls = rq;
    pthread_mutex_init(&rq->mu, NULL);
    rq->srv = srv;
    rq->conn = c;
    snprintf(rq->method, sizeof rq->method, "%s", method);
    rq->path = strdup(url);
    atomic_fetch_add(&srv->requests, 1);
    atomic_fetch_add(&srv->open_reqs, 1);
    if (!rq->path) return MHD_NO;
    rq->mounted = srv->mount.owns && srv->mount.owns(url);
    if (rq->mounted)
      return srv->mount.handle(srv->mount.ud, c, url, method, upload_data, upload_data_size,
                               &rq->mount_cls)
                 ? MHD_YES
                 : MHD_NO;
    first_call(srv, rq, url, method);
    /* refuse before reading a body nobody will use */
    if (rq->reject) return queue_reject(rq);
    return MHD_YES;
  }
  if (rq->mounted)
    return srv->mount.handle(srv->mount.ud, c, url, method, upload_data, upload_data_size,
                             &rq->mount_cls)
               ? MHD_YES
               : MHD_NO;
  if (*upload_data_size) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (rq->reject) return MHD_YES;
    if (rq->len + n > rq->limit) {
      reject(rq, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large");
      free(rq->body);
      rq->body = NULL;
      rq->len = rq->cap = 0;
      return MHD_YES;
    }
    if (rq->len + n + 1 > rq->cap) {
      size_t cap = rq->cap ? rq->cap : 4096;
      while (cap < rq->len + n + 1) cap *= 2;
      char *b = realloc(rq->body, cap);
      if (!b) {
        reject(rq, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
        return MHD_YES;
      }
      rq->body = b;
      rq->cap = cap;
    }
    memcpy(rq->body + rq->len, upload_data, n);
    rq->len += n;
    rq->body[rq->len] = 0;
    return MHD_YES;
  }
  if (rq->queued) return MHD_YES;
  if (rq->reject) return queue_reject(rq);
  if (rq->dispatched) { /* resumed: the answer is there */
    pthread_mutex_lock(&rq->mu);
    bool ready = rq->answered;
    pthread_mutex_unlock(&rq->mu);
    return ready ? queue(rq) : MHD_YES;
  }
  rq->dispatched = true;
  if (rq->len && !rq->route->raw_body) {
    json_error_t jerr;
    rq->json = json_loadb(rq->body, rq->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!rq->json) {
      char msg[sizeof rq->reject_msg];
      snprintf(msg, sizeof msg, "malformed JSON at line %d, column %d: %s", jerr.line,
               jerr.column, jerr.text);
      reject(rq, MHD_HTTP_BAD_REQUEST, msg);
      return queue_reject(rq);
    }
  }
  pthread_mutex_lock(&srv->mu);
  bool stopping = srv->stopping;
  pthread_mutex_unlock(&srv->mu);
  if (stopping) {
    reject(rq, MHD_HTTP_SERVICE_UNAVAILABLE, "the server is stopping");
    return queue_reject(rq);
  }
  rq->in_handler = true;
  rq->route->fn(srv->ud, rq);
  rq->in_handler = false;
  pthread_mutex_lock(&rq->mu);
  if (rq->answered) {
    pthread_mutex_unlock(&rq->mu);
    return queue(rq);
  }
  /* the answer comes later, from another thread: wait without a thread */
  rq->suspended = true;
  pthread_mutex_lock(&srv->mu);
  rq->next = srv->waiting;
  if (rq->next) rq->next->prev = rq;
  srv->waiting = rq;
  pthread_mutex_unlock(&srv->mu);
  atomic_fetch_add(&srv->pending, 1);
  MHD_suspend_connection(c);
  pthread_mutex_unlock(&rq->mu);
  return MHD_YES;
}

static void srv_mount_done(void *cls, br_http_req *rq) {
  br_http_server *srv = cls;
  if (srv->mount.done) srv->mount.done(&rq->mount_cls);
}

static void completed_cb(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  br_http_req *rq = *con_cls;
  (void)cls;
  (void)c;
  if (!rq) return;
  *con_cls = NULL;
  atomic_fetch_sub(&rq->srv->open_reqs, 1);
  if (rq->on_end)
    rq->on_end(rq->on_end_ud, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK && rq->queued);
  if (rq->mounted) srv_mount_done(cls, rq);
  if (rq->resp) MHD_destroy_response(rq->resp);
  for (int i = 0; i < rq->nargs; i++) free(rq->args[i]);
  json_decref(rq->json);
  free(rq->body);
  free(rq->path);
  pthread_mutex_destroy(&rq->mu);
  free(rq);
}

/* ---- start / stop ---- */

static char *read_file(const char *path, br_error *err) {
  size_t len;
  char *buf = br__read_file(path, &len);
  if (!buf) {
    br_error_set(err, BR_EIO, "%s: %s", path, strerror(errno));
  } else if (!len) {
    free(buf);
    buf = NULL;
    br_error_set(err, BR_EIO, "%s is empty", path);
  }
  return buf;
}

static int parse_listen(const char *listen, struct sockaddr_storage *ss, br_error *err) {
  char host[256];
  const char *colon = strrchr(listen, ':');
  if (!colon || (size_t)(colon - listen) >= sizeof host)
    return br_error_set(err, BR_EINVAL, "listen address must be HOST:PORT, got '%s'", listen);
  memcpy(host, listen, (size_t)(colon - listen));
  host[colon - listen] = 0;
  char *h = host;
  size_t hl = strlen(h);
  if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
    h[hl - 1] = 0;
    h++;
  }
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || !colon[1] || port < 0 || port > 65535)
    return br_error_set(err, BR_EINVAL, "bad port in '%s'", listen);
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  int rc = getaddrinfo(*h ? h : NULL, colon + 1, &hints, &res);
  if (rc || !res) return br_error_set(err, BR_EINVAL, "cannot resolve '%s': %s", h, gai_strerror(rc));
  memset(ss, 0, sizeof *ss);
  memcpy(ss, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  return BR_OK;
}

int br_http_start(const br_http_opts *o, br_http_server **out, br_error *err) {
  *out = NULL;
  if (!o->auth) return br_error_set(err, BR_EINVAL, "http: no token file");
  struct sockaddr_storage ss;
  int rc = parse_listen(o->listen && *o->listen ? o->listen : "127.0.0.1:7870", &ss, err);
  if (rc) return rc;
  br_http_server *srv = calloc(1, sizeof *srv);
  if (!srv) return br_error_set(err, BR_ENOMEM, "out of memory");
  srv->auth = o->auth;
  srv->routes = o->routes;
  srv->ud = o->ud;
  if (o->mount) srv->mount = *o->mount;
  srv->max_body = o->max_body ? o->max_body : DEFAULT_MAX_BODY;
  pthread_mutex_init(&srv->mu, NULL);
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
  if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
  if (o->tls_cert || o->tls_key) {
    if (!o->tls_cert || !o->tls_key) {
      free(srv);
      return br_error_set(err, BR_EINVAL, "TLS needs both a certificate and a key");
    }
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
      free(srv);
      return br_error_set(err, BR_EINVAL, "this libmicrohttpd has no TLS support");
    }
    srv->cert = read_file(o->tls_cert, err);
    srv->key = srv->cert ? read_file(o->tls_key, err) : NULL;
    if (!srv->key) {
      free(srv->cert);
      free(srv);
      return err ? err->code : BR_EIO;
    }
    flags |= MHD_USE_TLS;
  }
  unsigned threads = o->threads > 0 ? (unsigned)o->threads : 2;
  struct MHD_OptionItem tls[] = {
      {MHD_OPTION_HTTPS_MEM_CERT, 0, srv->cert},
      {MHD_OPTION_HTTPS_MEM_KEY, 0, srv->key},
      {MHD_OPTION_END, 0, NULL},
  };
  srv->mhd = MHD_start_daemon(
      flags, 0, NULL, NULL, access_cb, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
      MHD_OPTION_NOTIFY_COMPLETED, completed_cb, srv, MHD_OPTION_THREAD_POOL_SIZE, threads,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120, MHD_OPTION_CONNECTION_LIMIT,
      o->max_connections ? o->max_connections : 8192u, MHD_OPTION_LISTEN_BACKLOG_SIZE,
      (unsigned int)1024,
      MHD_OPTION_ARRAY, srv->cert ? tls : tls + 2, MHD_OPTION_END);
  if (!srv->mhd) {
    int e = errno;
    free(srv->cert);
    free(srv->key);
    pthread_mutex_destroy(&srv->mu);
    free(srv);
    return br_error_set(err, BR_ENET, "cannot listen on %s%s%s", o->listen ? o->listen : "127.0.0.1:7870",
                        e ? ": " : "", e ? strerror(e) : "");
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
  srv->port = info ? info->port : 0;
  *out = srv;
  return BR_OK;
}

int br_http_port(const br_http_server *s) { return s->port; }

void br_http_stop(br_http_server *srv) {
  if (!srv) return;
  pthread_mutex_lock(&srv->mu);
  srv->stopping = true;
  pthread_mutex_unlock(&srv->mu);
  /* answer whatever still waits, end the streams: libmicrohttpd must not
   * be stopped with suspended connections */
  for (;;) {
    pthread_mutex_lock(&srv->mu);
    br_http_req *rq = srv->waiting;
    pthread_mutex_unlock(&srv->mu);
    if (!rq) break;
    br_http_reply_error(rq, MHD_HTTP_SERVICE_UNAVAILABLE, "the server is stopping");
  }
  pthread_mutex_lock(&srv->mu);
  for (br_http_stream *s = srv->streams; s; s = s->next) {
    pthread_mutex_lock(&s->mu);
    s->ended = true;
    stream_wake(s);
    pthread_mutex_unlock(&s->mu);
  }
  pthread_mutex_unlock(&srv->mu);
  /* the answers just queued (and those the engine gave as it ended: a 503
   * for a change it could not commit) go out before the connections close,
   * for up to 2 s */
  for (int i = 0; i < 200 && atomic_load(&srv->open_reqs) > 0; i++) usleep(10000);
  MHD_stop_daemon(srv->mhd);
  free(srv->cert);
  free(srv->key);
  pthread_mutex_destroy(&srv->mu);
  free(srv);
}
