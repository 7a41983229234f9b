/* The HTTP client (see http.h): blocking JSON calls over one libcurl easy
 * handle, which keeps its connection alive between calls. For the command
 * line and the agent's worker threads. */
#include <braid/http.h>

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct br_http_client {
  CURL *easy;
  char *base;
  char *auth; /* "Authorization: Bearer ..." */
  char *ca;
  long timeout_ms;
  const volatile int *abort_flag;
};

typedef struct sink {
  char *p;
  size_t n, cap;
  json_t *headers;
  int (*fn)(void *ud, const char *data, size_t len);
  void *ud;
  int stopped;
} sink;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static void global_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static size_t on_write(char *data, size_t size, size_t nmemb, void *ud) {
  sink *s = ud;
  size_t n = size * nmemb;
  if (s->fn) {
    if (s->fn(s->ud, data, n)) {
      s->stopped = 1;
      return 0; /* aborts the transfer */
    }
    return n;
  }
  if (s->n + n + 1 > s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 4096;
    while (cap < s->n + n + 1) cap *= 2;
    char *b = realloc(s->p, cap);
    if (!b) return 0;
    s->p = b;
    s->cap = cap;
  }
  memcpy(s->p + s->n, data, n);
  s->n += n;
  s->p[s->n] = 0;
  return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud) {
  sink *s = ud;
  size_t n = size * nmemb;
  if (!s->headers) return n;
  if (n > 5 && memcmp(data, "HTTP/", 5) == 0) { /* a new answer (after a redirect or 100) */
    json_object_clear(s->headers);
    return n;
  }
  const char *colon = memchr(data, ':', n);
  if (!colon) return n;
  char name[128];
  size_t nl = (size_t)(colon - data);
  if (nl >= sizeof name) return n;
  for (size_t i = 0; i < nl; i++) name[i] = (char)(data[i] >= 'A' && data[i] <= 'Z' ? data[i] + 32 : data[i]);
  name[nl] = 0;
  const char *v = colon + 1, *end = data + n;
  while (v < end && (*v == ' ' || *v == '\t')) v++;
  while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
  json_t *js = json_stringn(v, (size_t)(end - v));
  if (js) json_object_set_new(s->headers, name, js);
  return n;
}

int br_http_client_open(const char *base_url, const char *token, br_http_client **out,
                        br_error *err) {
  *out = NULL;
  pthread_once(&once, global_init);
  if (!base_url || (strncmp(base_url, "http://", 7) != 0 && strncmp(base_url, "https://", 8) != 0))
    return br_error_set(err, BR_EINVAL, "server URL must start with http:// or https://, got '%s'",
                        base_url ? base_url : "");
  br_http_client *c = calloc(1, sizeof *c);
  if (!c) return br_error_set(err, BR_ENOMEM, "out of memory");
  c->easy = curl_easy_init();
  c->base = strdup(base_url);
  size_t bl = c->base ? strlen(c->base) : 0;
  while (bl && c->base[bl - 1] == '/') c->base[--bl] = 0;
  if (token && *token && asprintf(&c->auth, "Authorization: Bearer %s", token) < 0) c->auth = NULL;
  c->timeout_ms = 60000;
  if (!c->easy || !c->base || (token && *token && !c->auth)) {
    br_http_client_close(c);
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }
  *out = c;
  return BR_OK;
}

void br_http_client_close(br_http_client *c) {
  if (!c) return;
  if (c->easy) curl_easy_cleanup(c->easy);
  free(c->base);
  free(c->auth);
  free(c->ca);
  free(c);
}

void br_http_client_set_timeout(br_http_client *c, double seconds) {
  c->timeout_ms = seconds > 0 ? (long)(seconds * 1000) : 0;
}

void br_http_client_set_abort(br_http_client *c, const volatile int *flag) { c->abort_flag = flag; }

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
  br_http_client *c = ud;
  (void)dt;
  (void)dn;
  (void)ut;
  (void)un;
  return c->abort_flag && __atomic_load_n(c->abort_flag, __ATOMIC_ACQUIRE) ? 1 : 0;
}

void br_http_client_set_ca(br_http_client *c, const char *ca_file) {
  free(c->ca);
  c->ca = ca_file ? strdup(ca_file) : NULL;
}

static int perform(br_http_client *c, const char *method, const char *path, const char *body,
                   size_t body_len, sink *s, br_error *err) {
  CURL *e = c->easy;
  curl_easy_reset(e);
  char *url = NULL;
  if (asprintf(&url, "%s%s", c->base, path) < 0) return br_error_set(err, BR_ENOMEM, "out of memory");
  struct curl_slist *h = curl_slist_append(NULL, "Expect:");
  if (c->auth) h = curl_slist_append(h, c->auth);
  if (body) h = curl_slist_append(h, "Content-Type: application/json");
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
  if (s->headers) {
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
  }
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  if (c->ca) curl_easy_setopt(e, CURLOPT_CAINFO, c->ca);
  if (c->abort_flag) {
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, c);
  }
  curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  if (body) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
  } else if (strcmp(method, "GET") == 0) {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
  }
  CURLcode rc = curl_easy_perform(e);
  long status = 0;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(h);
  free(url);
  if (rc == CURLE_ABORTED_BY_CALLBACK) return br_error_set(err, BR_ECANCEL, "cancelled");
  if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE)
    /* the same certificate fails the same way: not a transient failure */
    return br_error_set(err, BR_EINVAL, "%s: the certificate was refused (%s): give its CA "
                        "with --ca or BRAID_CA", c->base, curl_easy_strerror(rc));
  if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && s->stopped))
    return br_error_set(err, BR_ENET, "%s%s: %s", c->base, path, curl_easy_strerror(rc));
  return (int)status;
}

int br_http_client_call(br_http_client *c, const char *method, const char *path,
                        const json_t *body, json_t **out, br_error *err) {
  if (out) *out = NULL;
  char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
  if (body && !text) return br_error_set(err, BR_ENOMEM, "out of memory");
  sink s = {0};
  int status = perform(c, method, path, text, text ? strlen(text) : 0, &s, err);
  free(text);
  if (status > 0 && out && s.n) *out = json_loadb(s.p, s.n, 0, NULL);
  free(s.p);
  return status;
}

int br_http_client_get_stream(br_http_client *c, const char *path,
                              int (*fn)(void *ud, const char *data, size_t len), void *ud,
                              br_error *err) {
  sink s = {.fn = fn, .ud = ud};
  return perform(c, "GET", path, NULL, 0, &s, err);
}

int br_http_client_get_text(br_http_client *c, const char *path, char **body, size_t *len,
                            json_t **headers, br_error *err) {
  sink s = {.headers = headers ? json_object() : NULL};
  int st = perform(c, "GET", path, NULL, 0, &s, err);
  if (st < 0) {
    free(s.p);
    json_decref(s.headers);
    *body = NULL;
    *len = 0;
    if (headers) *headers = NULL;
    return st;
  }
  *body = s.p ? s.p : strdup("");
  *len = s.n;
  if (headers) *headers = s.headers;
  return st;
}

const char *br_http_error_message(const json_t *answer, int status) {
  const char *m = json_string_value(json_object_get(answer, "error"));
  if (m) return m;
  switch (status) {
  case 400: return "bad request";
  case 401: return "missing or unknown token";
  case 403: return "not allowed for this token's role";
  case 404: return "not found";
  case 409: return "conflict";
  case 413: return "request too large";
  case 503: return "server unavailable";
  default: return "server error";
  }
}
