/* The job runtime channel (see include/braid/runtime.h).
 *
 * Three layers, kept apart so a remote agent can reuse the middle one:
 *   - the registry of running invocations, each known by a random token;
 *   - br_runtime_handle: one request object in, one response object out;
 *   - a transport: a unix domain socket on the libuv loop, one JSON object
 *     per line in each direction. br_runtime_call is its blocking client.
 * Everything runs on the loop thread; a request is fully handled (spawn
 * reported, attributes recorded) before its response is written. */
#include <braid/runtime.h>

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "fs.h"
#include "jsonpos.h"

/* Longest request line accepted; a longer one is answered with an error and
 * the connection is closed. */
#define MAX_LINE (4 * 1024 * 1024)

typedef struct rt_inv {
  struct rt_inv *next, *prev;
  int64_t id, task_id;
  char token[BR_RUNTIME_TOKEN_LEN + 1];
  json_t *set_attrs;
} rt_inv;

typedef struct rt_conn {
  uv_pipe_t pipe; /* first: the handle's address is the connection's */
  struct rt_conn *next, *prev;
  br_runtime *rt;
  char *buf;
  size_t len, cap;
  int writes;   /* uv_write requests in flight */
  bool closing; /* uv_close called */
  bool eof;     /* peer finished sending */
} rt_conn;

struct br_runtime {
  br_exec_events ev;
  rt_inv *invs;
  uv_loop_t *loop;
  uv_pipe_t server;
  bool listening;
  char *sock_path;
  char *own_dir; /* fallback folder we created for the socket; removed at the end */
  rt_conn *conns;
  int handles; /* open handles (server + connections) */
  bool destroyed;
  char rbuf[64 * 1024];
};

/* ---- registry ---- */

static rt_inv *find_token(br_runtime *rt, const char *token) {
  size_t n = strlen(token);
  if (n != BR_RUNTIME_TOKEN_LEN) return NULL;
  for (rt_inv *i = rt->invs; i; i = i->next) {
    unsigned char diff = 0; /* constant time per candidate */
    for (size_t k = 0; k < BR_RUNTIME_TOKEN_LEN; k++)
      diff |= (unsigned char)(i->token[k] ^ token[k]);
    if (diff == 0) return i;
  }
  return NULL;
}

int br_runtime_create(const br_exec_events *ev, br_runtime **out, br_error *err) {
  br_runtime *rt = calloc(1, sizeof *rt);
  if (!rt) return br_error_set(err, BR_ENOMEM, "out of memory");
  if (ev) rt->ev = *ev;
  *out = rt;
  return BR_OK;
}

int br_runtime_register(br_runtime *rt, int64_t invocation_id, int64_t task_id,
                        char token[BR_RUNTIME_TOKEN_LEN + 1], br_error *err) {
  unsigned char raw[BR_RUNTIME_TOKEN_LEN / 2];
  size_t got = 0;
  while (got < sizeof raw) {
    ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return br_error_set(err, BR_EIO, "cannot get random bytes: %s", strerror(errno));
    }
    got += (size_t)n;
  }
  rt_inv *i = calloc(1, sizeof *i);
  if (!i) return br_error_set(err, BR_ENOMEM, "out of memory");
  static const char hex[] = "0123456789abcdef";
  for (size_t k = 0; k < sizeof raw; k++) {
    i->token[2 * k] = hex[raw[k] >> 4];
    i->token[2 * k + 1] = hex[raw[k] & 15];
  }
  i->id = invocation_id;
  i->task_id = task_id;
  i->set_attrs = json_object();
  if (!i->set_attrs) {
    free(i);
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }
  i->next = rt->invs;
  if (rt->invs) rt->invs->prev = i;
  rt->invs = i;
  memcpy(token, i->token, sizeof i->token);
  return BR_OK;
}

json_t *br_runtime_unregister(br_runtime *rt, int64_t invocation_id) {
  for (rt_inv *i = rt->invs; i; i = i->next) {
    if (i->id != invocation_id) continue;
    if (i->prev) i->prev->next = i->next; else rt->invs = i->next;
    if (i->next) i->next->prev = i->prev;
    json_t *attrs = i->set_attrs;
    free(i);
    return attrs;
  }
  return NULL;
}

/* ---- message handling ---- */

static json_t *reply_error(const json_t *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static json_t *reply_error(const json_t *req, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  json_t *r = json_pack("{s:b, s:s}", "ok", 0, "error", msg);
  json_t *id = json_is_object(req) ? json_object_get(req, "id") : NULL;
  if (r && id) json_object_set(r, "id", id);
  return r;
}

static json_t *reply_ok(const json_t *req) {
  json_t *r = json_pack("{s:b}", "ok", 1);
  json_t *id = json_object_get(req, "id");
  if (r && id) json_object_set(r, "id", id);
  return r;
}

json_t *br_runtime_handle(br_runtime *rt, const json_t *req) {
  if (!json_is_object(req)) return reply_error(req, "a request must be a JSON object");
  const char *op = json_string_value(json_object_get(req, "op"));
  if (!op) return reply_error(req, "the request has no \"op\" (set, spawn or progress)");
  const char *token = json_string_value(json_object_get(req, "token"));
  if (!token) return reply_error(req, "the request has no \"token\"");
  rt_inv *inv = find_token(rt, token);
  if (!inv)
    return reply_error(req, "bad token: no running invocation has it (finished, or not "
                            "this job's BRAID_CTL_TOKEN)");

  if (strcmp(op, "set") == 0) {
    json_t *attrs = json_object_get(req, "attrs");
    if (!json_is_object(attrs)) return reply_error(req, "set: \"attrs\" must be an object");
    if (json_object_update(inv->set_attrs, attrs) != 0) return reply_error(req, "set: failed");
    return reply_ok(req);
  }
  if (strcmp(op, "spawn") == 0) {
    json_t *attrs = json_object_get(req, "attrs");
    json_t *name = json_object_get(req, "name");
    if (attrs && !json_is_object(attrs))
      return reply_error(req, "spawn: \"attrs\" must be an object");
    if (name && !json_is_string(name) && !json_is_null(name))
      return reply_error(req, "spawn: \"name\" must be a string");
    json_t *copy = attrs ? json_deep_copy(attrs) : json_object();
    if (!copy) return reply_error(req, "spawn: out of memory");
    if (rt->ev.on_spawn)
      rt->ev.on_spawn(rt->ev.ud, inv->id, inv->task_id, json_string_value(name), copy);
    else
      json_decref(copy);
    return reply_ok(req);
  }
  if (strcmp(op, "progress") == 0) {
    json_t *v = json_object_get(req, "value");
    if (!json_is_number(v)) return reply_error(req, "progress: \"value\" must be a number");
    double p = json_number_value(v);
    if (!(p >= 0.0 && p <= 1.0))
      return reply_error(req, "progress: %g is not between 0 and 1", p);
    if (rt->ev.on_progress) rt->ev.on_progress(rt->ev.ud, inv->id, inv->task_id, p);
    return reply_ok(req);
  }
  return reply_error(req, "unknown op '%s' (expected set, spawn or progress)", op);
}

/* ---- unix socket transport ---- */

typedef struct rt_write {
  uv_write_t req;
  rt_conn *conn;
  size_t len;
  char data[];
} rt_write;

static void maybe_free_runtime(br_runtime *rt) {
  if (rt->destroyed && rt->handles == 0) {
    free(rt->sock_path);
    free(rt->own_dir);
    free(rt);
  }
}

static void conn_closed(uv_handle_t *h) {
  rt_conn *c = (rt_conn *)h;
  br_runtime *rt = c->rt;
  if (c->prev) c->prev->next = c->next; else rt->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  free(c->buf);
  free(c);
  rt->handles--;
  maybe_free_runtime(rt);
}

static void conn_close(rt_conn *c) {
  if (c->closing) return;
  c->closing = true;
  uv_close((uv_handle_t *)&c->pipe, conn_closed);
}

static void write_done(uv_write_t *req, int status) {
  rt_write *w = (rt_write *)req;
  rt_conn *c = w->conn;
  free(w);
  c->writes--;
  if (status < 0 || (c->eof && c->writes == 0)) conn_close(c);
}

static void conn_send(rt_conn *c, json_t *resp) {
  char *text = resp ? json_dumps(resp, JSON_COMPACT) : NULL;
  json_decref(resp);
  const char *s = text ? text : "{\"ok\":false,\"error\":\"out of memory\"}";
  size_t n = strlen(s);
  rt_write *w = malloc(sizeof *w + n + 1);
  if (!w) {
    free(text);
    conn_close(c);
    return;
  }
  memcpy(w->data, s, n);
  w->data[n] = '\n';
  w->len = n + 1;
  w->conn = c;
  free(text);
  size_t off = 0;
  if (c->writes == 0) {
    /* Answer directly with MSG_NOSIGNAL: a job killed while it waits for
     * the answer must not SIGPIPE braid (libuv's write would). */
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0) {
      ssize_t k = send(fd, w->data, w->len, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        free(w);
        conn_close(c);
        return;
      }
      if (k > 0) off = (size_t)k;
    }
    if (off == w->len) {
      free(w);
      return;
    }
  }
  uv_buf_t b = uv_buf_init(w->data + off, (unsigned)(w->len - off));
  if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, write_done) != 0) {
    free(w);
    conn_close(c);
    return;
  }
  c->writes++;
}

static void conn_line(rt_conn *c, const char *line, size_t len) {
  while (len && (line[len - 1] == '\r' || line[len - 1] == ' ')) len--;
  if (len == 0) return;
  json_error_t jerr;
  json_t *req = json_loadb(line, len, 0, &jerr);
  if (!req) {
    char why[256];
    conn_send(c, reply_error(NULL, "malformed JSON request: %s (column %d)",
                             br__json_error_text(&jerr, why, sizeof why), jerr.column));
    return;
  }
  conn_send(c, br_runtime_handle(c->rt, req));
  json_decref(req);
}

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  rt_conn *c = (rt_conn *)h;
  buf->base = c->rt->rbuf;
  buf->len = sizeof c->rt->rbuf;
}

static void conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  rt_conn *c = (rt_conn *)s;
  if (nread < 0) {
    if (c->len) conn_line(c, c->buf, c->len); /* a last line without newline */
    c->len = 0;
    c->eof = true;
    uv_read_stop(s);
    if (c->writes == 0) conn_close(c);
    return;
  }
  size_t n = (size_t)nread;
  const char *p = buf->base;
  while (n && !c->closing) {
    const char *nl = memchr(p, '\n', n);
    size_t take = nl ? (size_t)(nl - p) : n;
    if (c->len + take > MAX_LINE) {
      conn_send(c, reply_error(NULL, "request line longer than %d bytes", MAX_LINE));
      c->eof = true;
      uv_read_stop(s);
      if (c->writes == 0) conn_close(c);
      return;
    }
    if (nl && c->len == 0) {
      conn_line(c, p, take); /* the whole line is in this read: no copy */
    } else {
      if (c->len + take > c->cap) {
        size_t cap = c->cap ? c->cap : 256;
        while (cap < c->len + take) cap *= 2;
        char *nb = realloc(c->buf, cap);
        if (!nb) {
          conn_close(c);
          return;
        }
        c->buf = nb;
        c->cap = cap;
      }
      memcpy(c->buf + c->len, p, take);
      c->len += take;
      if (nl) {
        conn_line(c, c->buf, c->len);
        c->len = 0;
      }
    }
    if (!nl) break;
    p = nl + 1;
    n -= take + 1;
  }
}

static void on_connection(uv_stream_t *server, int status) {
  br_runtime *rt = server->data;
  if (status < 0) return;
  rt_conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->rt = rt;
  if (uv_pipe_init(rt->loop, &c->pipe, 0) != 0) {
    free(c);
    return;
  }
  rt->handles++;
  c->next = rt->conns;
  if (rt->conns) rt->conns->prev = c;
  rt->conns = c;
  if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0 ||
      uv_read_start((uv_stream_t *)&c->pipe, conn_alloc, conn_read) != 0)
    conn_close(c);
}

static void server_closed(uv_handle_t *h) {
  br_runtime *rt = h->data;
  rt->handles--;
  maybe_free_runtime(rt);
}

int br_runtime_listen(br_runtime *rt, uv_loop_t *loop, const char *dir, br_error *err) {
  if (rt->listening) return br_error_set(err, BR_ESTATE, "the runtime already listens");
  if (br__mkdirs(dir, 0700) != 0)
    return br_error_set(err, BR_EIO, "cannot create runtime folder '%s': %s", dir,
                        strerror(errno));
  char *path = NULL;
  if (asprintf(&path, "%s/ctl-%d.sock", dir, (int)getpid()) < 0)
    return br_error_set(err, BR_ENOMEM, "out of memory");
  struct sockaddr_un sun;
  if (strlen(path) >= sizeof sun.sun_path) {
    /* Socket addresses are short (108 bytes); use a private folder instead. */
    free(path);
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    char *tdir = NULL;
    if (asprintf(&tdir, "%s/braid-ctl-XXXXXX", tmp) < 0)
      return br_error_set(err, BR_ENOMEM, "out of memory");
    if (!mkdtemp(tdir)) {
      int e = errno;
      free(tdir);
      return br_error_set(err, BR_EIO, "cannot create a socket folder in '%s': %s", tmp,
                          strerror(e));
    }
    if (asprintf(&path, "%s/ctl.sock", tdir) < 0 || strlen(path) >= sizeof sun.sun_path) {
      rmdir(tdir);
      free(tdir);
      free(path);
      return br_error_set(err, BR_EINVAL, "no short enough path for the control socket");
    }
    rt->own_dir = tdir;
  }
  unlink(path); /* a stale socket of an earlier process with our pid */
  rt->loop = loop;
  int rc = uv_pipe_init(loop, &rt->server, 0);
  if (rc == 0) {
    rt->server.data = rt;
    rt->handles++;
    rt->listening = true;
    rt->sock_path = path;
    mode_t old = umask(0077); /* the socket: only its owner connects */
    rc = uv_pipe_bind(&rt->server, path);
    umask(old);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&rt->server, 256, on_connection);
    /* Listening alone does not keep the loop running; a connection does. */
    uv_unref((uv_handle_t *)&rt->server);
  } else {
    free(path);
  }
  if (rc != 0)
    return br_error_set(err, BR_EIO, "cannot listen on control socket '%s': %s",
                        rt->sock_path ? rt->sock_path : dir, uv_strerror(rc));
  return BR_OK;
}

const char *br_runtime_socket_path(const br_runtime *rt) {
  return rt->listening ? rt->sock_path : NULL;
}

void br_runtime_destroy(br_runtime *rt) {
  if (!rt) return;
  while (rt->invs) json_decref(br_runtime_unregister(rt, rt->invs->id));
  rt->destroyed = true;
  if (rt->listening) {
    if (rt->sock_path) unlink(rt->sock_path);
    if (rt->own_dir) rmdir(rt->own_dir);
    uv_close((uv_handle_t *)&rt->server, server_closed);
    for (rt_conn *c = rt->conns; c; c = c->next) conn_close(c);
    return; /* freed by the last close callback */
  }
  maybe_free_runtime(rt);
}

/* ---- helpers ---- */

char *br_runtime_attr_env_name(const char *attr) {
  size_t n = strlen(attr);
  char *s = malloc(11 + n + 1);
  if (!s) return NULL;
  memcpy(s, "BRAID_ATTR_", 11);
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)attr[i];
    s[11 + i] = isalnum(ch) && ch < 128 ? (char)toupper(ch) : '_';
  }
  s[11 + n] = 0;
  return s;
}

char *br_runtime_attr_env_value(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_STRING: return strdup(json_string_value(v));
  case JSON_NULL: return strdup("");
  case JSON_TRUE: return strdup("true");
  case JSON_FALSE: return strdup("false");
  case JSON_INTEGER: {
    char *s = NULL;
    return asprintf(&s, "%" JSON_INTEGER_FORMAT, json_integer_value(v)) < 0 ? NULL : s;
  }
  case JSON_REAL: {
    /* The shortest text that reads back as the same double. */
    char buf[64];
    double d = json_real_value(v);
    for (int prec = 15; prec <= 17; prec++) {
      snprintf(buf, sizeof buf, "%.*g", prec, d);
      if (strtod(buf, NULL) == d) break;
    }
    return strdup(buf);
  }
  default: return NULL;
  }
}

int br_runtime_write_file(const char *path, const char *data, size_t len, br_error *err) {
  char *tmp = NULL;
  if (asprintf(&tmp, "%s.tmp%d", path, (int)getpid()) < 0)
    return br_error_set(err, BR_ENOMEM, "out of memory");
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    int e = errno;
    free(tmp);
    return br_error_set(err, BR_EIO, "cannot write '%s': %s", path, strerror(e));
  }
  size_t off = 0;
  while (off < len) {
    ssize_t n = write(fd, data + off, len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      unlink(tmp);
      free(tmp);
      return br_error_set(err, BR_EIO, "cannot write '%s': %s", path, strerror(e));
    }
    off += (size_t)n;
  }
  /* No fsync: these files live as long as one job and are rewritten after a
   * crash; rename alone keeps a reader from seeing a partial file. */
  if (close(fd) != 0 || rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    free(tmp);
    return br_error_set(err, BR_EIO, "cannot write '%s': %s", path, strerror(e));
  }
  free(tmp);
  return BR_OK;
}

int br_runtime_parse_assign(const char *arg, char **key, json_t **value, br_error *err) {
  const char *eq = strchr(arg, '=');
  if (!eq || eq == arg)
    return br_error_set(err, BR_EINVAL, "'%s' is not an assignment KEY=VALUE", arg);
  bool force = eq[-1] == ':';
  size_t klen = (size_t)(eq - arg) - (force ? 1 : 0);
  if (klen == 0) return br_error_set(err, BR_EINVAL, "'%s' has an empty key", arg);
  const char *v = eq + 1;
  json_error_t jerr;
  json_t *j = json_loads(v, JSON_DECODE_ANY, &jerr);
  char why[256];
  if (!j && force)
    return br_error_set(err, BR_EINVAL, "'%s': the value is not JSON: %s", arg,
                        br__json_error_text(&jerr, why, sizeof why));
  if (!j) j = json_string(v);
  if (!j) return br_error_set(err, BR_EINVAL, "'%s': the value is not valid UTF-8", arg);
  char *k = strndup(arg, klen);
  if (!k) {
    json_decref(j);
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }
  *key = k;
  *value = j;
  return BR_OK;
}

int br_runtime_call(const char *socket_path, const json_t *request, json_t **response,
                    br_error *err) {
  struct sockaddr_un sun;
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  if (strlen(socket_path) >= sizeof sun.sun_path)
    return br_error_set(err, BR_EINVAL, "control socket path too long: '%s'", socket_path);
  strcpy(sun.sun_path, socket_path);
  char *text = json_dumps(request, JSON_COMPACT);
  if (!text) return br_error_set(err, BR_EINVAL, "cannot encode the request");
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    free(text);
    return br_error_set(err, BR_ENET, "socket: %s", strerror(errno));
  }
  int rc;
  do rc = connect(fd, (struct sockaddr *)&sun, sizeof sun);
  while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int e = errno;
    close(fd);
    free(text);
    return br_error_set(err, BR_ENET,
                        "cannot reach braid at '%s': %s (is this job still running "
                        "under braid?)", socket_path, strerror(e));
  }
  size_t len = strlen(text);
  text[len] = '\n'; /* json_dumps' terminator becomes the line end */
  size_t off = 0;
  while (off < len + 1) {
    ssize_t n = send(fd, text + off, len + 1 - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      free(text);
      return br_error_set(err, BR_ENET, "sending to braid: %s", strerror(e));
    }
    off += (size_t)n;
  }
  free(text);
  shutdown(fd, SHUT_WR);
  size_t cap = 1024, got = 0;
  char *buf = malloc(cap);
  char *nl = NULL;
  while (buf) {
    if (got + 1 >= cap) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) break;
      buf = nb;
      cap *= 2;
    }
    ssize_t n = read(fd, buf + got, cap - 1 - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
    buf[got] = 0;
    if ((nl = memchr(buf, '\n', got)) != NULL) break;
  }
  close(fd);
  if (!buf) return br_error_set(err, BR_ENOMEM, "out of memory");
  if (!nl) {
    free(buf);
    return br_error_set(err, BR_ENET, "braid closed the control channel without answering");
  }
  json_error_t jerr;
  json_t *resp = json_loadb(buf, (size_t)(nl - buf), 0, &jerr);
  free(buf);
  if (!json_is_object(resp)) {
    json_decref(resp);
    return br_error_set(err, BR_ENET, "braid's answer is not a JSON object");
  }
  *response = resp;
  return BR_OK;
}
