/* The client's request engine: one libcurl multi handle, a FIFO of requests
 * of which at most max_running are in flight (the memory bound), retries
 * with exponential backoff and jitter for what may pass (connection errors,
 * timeouts, 5xx, 429, a corrupted or mismatched response), clear final
 * errors for what will not (401, 403, 404, 400, 413), a token bucket shared
 * by every transfer (pausing curl's read and write callbacks), cancel within
 * the current callback, and Range checking before a byte is accepted. */
#include "client_int.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

void br_xfer_opts_init(br_xfer_opts *o) {
  memset(o, 0, sizeof *o);
  o->parallel = 0; /* push 16, pull 4 (BR_XFER_PUSH_PARALLEL, BR_XFER_PULL_PARALLEL) */
  o->max_memory = 256 * 1024 * 1024;
  o->bundle_bytes = 8 * 1024 * 1024;
  o->small_file = 1024 * 1024;
  o->chunk_size = BR_XFER_CHUNK_SIZE;
  o->retries = 6;
  o->backoff_ms = 200;
  o->timeout_s = 30;
  o->compress = 1;
  o->direct_io = 1;
  o->progress_interval = 0.5;
}

bool br_xfer__cancelled(const br_xfer__engine *e) {
  return e->o->cancel && __atomic_load_n(e->o->cancel, __ATOMIC_ACQUIRE);
}

static void global_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

int br_xfer__engine_init(br_xfer__engine *e, const br_xfer_opts *o, int64_t per_request,
                         int parallel, br_error *err) {
  memset(e, 0, sizeof *e);
  e->o = o;
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, global_init);
  e->multi = curl_multi_init();
  if (!e->multi) return br_error_set(err, BR_ENOMEM, "curl_multi_init failed");
  int par = o->parallel > 0 ? o->parallel : parallel;
  int64_t mem = o->max_memory > 0 ? o->max_memory : 256 * 1024 * 1024;
  /* Each request in flight holds a body or a response of up to per_request. */
  int64_t by_mem = per_request > 0 ? mem / per_request : par;
  e->max_running = (int)(by_mem < par ? by_mem : par);
  if (e->max_running < 1) e->max_running = 1;
  e->running = calloc((size_t)e->max_running, sizeof *e->running);
  if (!e->running) return br_error_set(err, BR_ENOMEM, "out of memory");
  curl_multi_setopt(e->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)e->max_running);
  if (o->token && *o->token)
    snprintf(e->auth, sizeof e->auth, "Authorization: Bearer %s", o->token);
  br_xfer__bucket_init(&e->bucket, o->bwlimit);
  e->rng = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull ^ (uint64_t)(br_xfer__now() * 1e9);
  e->start = e->last_progress = br_xfer__now();
  return BR_OK;
}

void br_xfer__req_free(br_xfer__req *r) {
  if (!r) return;
  if (r->easy) curl_easy_cleanup(r->easy);
  curl_slist_free_all(r->hdrs);
  br_xfer__buf_free(&r->body);
  free(r->segs);
  br_xfer__buf_free(&r->resp);
  if (r->destroy) r->destroy(r);
  free(r->url);
  free(r);
}

void br_xfer__engine_free(br_xfer__engine *e) {
  for (int i = 0; i < e->nrunning; i++) {
    curl_multi_remove_handle(e->multi, e->running[i]->easy);
    br_xfer__req_free(e->running[i]);
  }
  e->nrunning = 0;
  while (e->head) {
    br_xfer__req *n = e->head->next;
    br_xfer__req_free(e->head);
    e->head = n;
  }
  free(e->running);
  if (e->multi) curl_multi_cleanup(e->multi);
  br_xfer__bucket_destroy(&e->bucket);
  e->multi = NULL;
}

br_xfer__req *br_xfer__req_new(const char *base, const char *path_and_query) {
  br_xfer__req *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  if (asprintf(&r->url, "%s%s", base, path_and_query) < 0) {
    free(r);
    return NULL;
  }
  r->range_from = -1;
  r->resp_limit = 64 * 1024 * 1024;
  return r;
}

void br_xfer__engine_submit(br_xfer__engine *e, br_xfer__req *r) {
  r->eng = e;
  r->next = NULL;
  if (e->tail) e->tail->next = r;
  else e->head = r;
  e->tail = r;
  e->submitted++;
}

void br_xfer__engine_wake(br_xfer__engine *e) { curl_multi_wakeup(e->multi); }

int br_xfer__engine_fail(br_xfer__engine *e, const br_error *err) {
  if (!e->fatal) {
    e->fatal = err->code ? err->code : BR_EIO;
    e->err = *err;
    e->err.code = e->fatal;
  }
  return e->fatal;
}

void br_xfer__engine_progress(br_xfer__engine *e, bool force) {
  double now = br_xfer__now();
  double every = e->o->progress_interval > 0 ? e->o->progress_interval : 0.5;
  if (!e->o->progress || (!force && now - e->last_progress < every)) return;
  e->last_progress = now;
  e->prog.elapsed = now - e->start;
  br_xfer_progress shown = e->prog;
  if (e->sent_is_done) {
    int64_t d = shown.bytes_done + e->unanswered;
    if (d > shown.bytes_total) d = shown.bytes_total;
    if (d > shown.bytes_done) shown.bytes_done = d;
  }
  if (shown.bytes_done < e->shown_bytes) shown.bytes_done = e->shown_bytes;
  if (shown.files_done < e->shown_files) shown.files_done = e->shown_files;
  e->shown_bytes = shown.bytes_done;
  e->shown_files = shown.files_done;
  e->o->progress(&shown, e->o->progress_ud);
}

int64_t br_xfer__engine_bundle_bytes(const br_xfer__engine *e, int64_t small_bytes) {
  int64_t bundle = e->o->bundle_bytes > 0 ? e->o->bundle_bytes : 8 * 1024 * 1024;
  int64_t spread = small_bytes / (2 * (int64_t)e->max_running);
  if (spread < bundle) bundle = spread > 256 * 1024 ? spread : 256 * 1024;
  return bundle;
}

void br_xfer__engine_phase(br_xfer__engine *e, const char *phase) {
  if (e->prog.phase && strcmp(e->prog.phase, phase) == 0) return;
  e->prog.phase = phase;
  br_xfer__engine_progress(e, true); /* a phase change always shows */
}

/* ---- curl callbacks ---- */

/* Whether the header line buf (len bytes) is name's ("Content-Range:"):
 * then *v, *vl its value, blanks and the line's end trimmed. */
static bool header_is(const char *buf, size_t len, const char *name, const char **v,
                      size_t *vl) {
  size_t k = strlen(name);
  if (len <= k || strncasecmp(buf, name, k) != 0) return false;
  *v = buf + k;
  *vl = len - k;
  while (*vl && (**v == ' ' || **v == '\t')) (*v)++, (*vl)--;
  while (*vl && ((*v)[*vl - 1] == '\r' || (*v)[*vl - 1] == '\n' || (*v)[*vl - 1] == ' ')) (*vl)--;
  return true;
}

static size_t on_header(char *buf, size_t size, size_t n, void *ud) {
  br_xfer__req *r = ud;
  size_t len = size * n, vl;
  const char *v;
  if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
    r->content_range[0] = 0; /* a new response (after a 100 Continue) */
    r->zstd_body = false;
  } else if (header_is(buf, len, "Content-Encoding:", &v, &vl)) {
    r->zstd_body = vl == 4 && strncasecmp(v, "zstd", 4) == 0;
  } else if (header_is(buf, len, "Content-Range:", &v, &vl)) {
    if (vl >= sizeof r->content_range) vl = sizeof r->content_range - 1;
    memcpy(r->content_range, v, vl);
    r->content_range[vl] = 0;
  } else if (len > 16 && strncasecmp(buf, "X-Braid-Version:", 16) == 0) {
    r->braid_version = strtoll(buf + 16, NULL, 10);
  }
  return len;
}

static size_t on_write(char *buf, size_t size, size_t n, void *ud) {
  br_xfer__req *r = ud;
  br_xfer__engine *e = r->eng;
  size_t len = size * n;
  if (br_xfer__cancelled(e)) return 0;
  if (!r->checked) {
    r->checked = true;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
    /* The whole object as a zstd frame, where one was offered: checked
     * once inflated. Any other encoding is an error, never data. */
    bool framed = r->zstd_body && r->accept_zstd && r->resume == 0 && r->status == 200;
    if (r->status / 100 == 2 && r->zstd_body && !framed) {
      r->bad_range = true;
      snprintf(r->last_error, sizeof r->last_error,
               "an answer in zstd that was not asked for (status %ld)", r->status);
      return 0;
    }
    if (r->range_from >= 0 && r->status / 100 == 2 && !framed) {
      /* A ranged answer must be exactly the range asked for: a 200 with the
       * whole object, or another range, is an error and never data. */
      char want[128];
      snprintf(want, sizeof want, "bytes %lld-%lld/%lld",
               (long long)(r->range_from + r->resume),
               (long long)r->range_to, (long long)r->range_total);
      if (r->status != 206 || strcmp(r->content_range, want) != 0) {
        r->bad_range = true;
        snprintf(r->last_error, sizeof r->last_error,
                 "range response mismatch: asked %.70s, got status %ld, Content-Range '%.70s'",
                 want + 6, r->status, r->content_range);
        return 0;
      }
      r->range_ok = true;
    }
    /* A body kept whole gets its room at once: grown as it comes, it
     * would be copied into each larger buffer on the way (as many bytes
     * again as the body). */
    curl_off_t cl = -1;
    if ((!r->sink || r->zstd_body) && r->status / 100 == 2 &&
        curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK &&
        cl > 0 && (uint64_t)cl <= r->resp_limit && (size_t)cl > r->resp.len)
      br_xfer__buf_reserve(&r->resp, (size_t)cl - r->resp.len);
  }
  if (e->bucket.rate > 0) {
    if (br_xfer__bucket_wait(&e->bucket) > 0) {
      r->paused = true;
      return CURL_WRITEFUNC_PAUSE;
    }
    br_xfer__bucket_charge(&e->bucket, len);
  }
  if (r->sink && r->status / 100 == 2 && !r->zstd_body) {
    if ((size_t)r->received + len > r->resp_limit) {
      r->too_big = true;
      return 0;
    }
    if (r->sink(r, (const uint8_t *)buf, len)) {
      r->sink_failed = true;
      return 0;
    }
    r->received += (int64_t)len;
    e->prog.bytes_moved += (int64_t)len;
    return len;
  }
  size_t limit = r->status / 100 == 2 ? r->resp_limit : 65536;
  if (r->resp.len + len > limit) {
    if (r->status / 100 != 2) return len; /* error pages: keep the start */
    r->too_big = true;
    return 0;
  }
  if (br_xfer__buf_append(&r->resp, buf, len)) return 0;
  r->received = (int64_t)r->resp.len;
  if (r->status / 100 == 2) e->prog.bytes_moved += (int64_t)len;
  return len;
}

size_t br_xfer__req_body_len(const br_xfer__req *r) { return r->body.len + r->seg_bytes; }

size_t br_xfer__req_body_read(br_xfer__req *r, void *dst, size_t room) {
  uint8_t *out = dst;
  size_t n = 0;
  while (n < room) {
    size_t at = r->seg < r->nsegs ? r->segs[r->seg].at : r->body.len;
    size_t k;
    if (r->sent_buf < at) {
      k = at - r->sent_buf < room - n ? at - r->sent_buf : room - n;
      memcpy(out + n, r->body.data + r->sent_buf, k);
      r->sent_buf += k;
    } else if (r->seg < r->nsegs) {
      const br_xfer__ref_seg *s = &r->segs[r->seg];
      k = s->len - r->sent_seg < room - n ? s->len - r->sent_seg : room - n;
      memcpy(out + n, s->data + r->sent_seg, k);
      if ((r->sent_seg += k) == s->len) r->seg++, r->sent_seg = 0;
    } else {
      break;
    }
    n += k;
  }
  r->sent += n;
  return n;
}

int br_xfer__req_ref(br_xfer__req *r, const void *data, size_t len) {
  if (!len) return BR_OK;
  if (r->nsegs == r->segs_cap) {
    size_t cap = r->segs_cap ? r->segs_cap * 2 : 64;
    br_xfer__ref_seg *v = realloc(r->segs, cap * sizeof *v);
    if (!v) return BR_ENOMEM;
    r->segs = v;
    r->segs_cap = cap;
  }
  r->segs[r->nsegs++] = (br_xfer__ref_seg){data, r->body.len, len};
  r->seg_bytes += len;
  return BR_OK;
}

static size_t on_read(char *buf, size_t size, size_t n, void *ud) {
  br_xfer__req *r = ud;
  br_xfer__engine *e = r->eng;
  if (br_xfer__cancelled(e)) return CURL_READFUNC_ABORT;
  size_t want = br_xfer__req_body_len(r) - r->sent;
  if (want > size * n) want = size * n;
  if (want && e->bucket.rate > 0) {
    want = br_xfer__bucket_take(&e->bucket, want);
    if (!want) {
      r->paused = true;
      return CURL_READFUNC_PAUSE;
    }
  }
  want = br_xfer__req_body_read(r, buf, want);
  e->prog.bytes_moved += (int64_t)want;
  e->unanswered += (int64_t)want;
  if (r->body_sent && !r->told_sent && r->sent == br_xfer__req_body_len(r)) {
    r->told_sent = true; /* curl copied the last byte: it never reads again */
    r->body_sent(r);
  }
  return want;
}

static int on_xferinfo(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
  br_xfer__req *r = ud;
  return br_xfer__cancelled(r->eng) ? 1 : 0;
}

/* ---- running ---- */

static int start(br_xfer__engine *e, br_xfer__req *r, br_error *err) {
  r->checked = r->bad_range = r->range_ok = r->too_big = r->paused = r->told_sent = false;
  r->zstd_body = false;
  r->status = 0;
  r->content_range[0] = 0;
  r->sent = r->sent_buf = r->sent_seg = r->seg = 0;
  r->body.len = 0;
  r->nsegs = r->seg_bytes = 0;
  if (r->build) {
    int rc = r->build(r, &r->body, err);
    if (rc) return rc;
  }
  /* Only a ranged request that failed mid-body keeps its bytes. */
  if (!r->keep_resp) {
    r->resp.len = 0;
    r->received = 0;
    if (r->restart) r->restart(r);
  }
  r->keep_resp = false;
  r->resume = r->received;
  if (r->resp_hint && br_xfer__buf_reserve(&r->resp, r->resp_hint))
    return br_error_set(err, BR_ENOMEM, "out of memory");
  CURL *c = r->easy = curl_easy_init();
  if (!c) return br_error_set(err, BR_ENOMEM, "curl_easy_init failed");
  curl_easy_setopt(c, CURLOPT_URL, r->url);
  curl_easy_setopt(c, CURLOPT_PRIVATE, r);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, r);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
  long timeout = e->o->timeout_s > 0 ? e->o->timeout_s : 30;
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, timeout);
  curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
  /* larger reads: a quarter of the system calls for chunks and bundles */
  curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 256L * 1024);
  /* and larger sends: with curl's 64 KiB, each send of a body went
   * through the loopback's whole path on its own (a push of 10,000 small
   * files took about a tenth longer) */
  curl_easy_setopt(c, CURLOPT_UPLOAD_BUFFERSIZE, 1024L * 1024);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  if (e->o->ca_file && *e->o->ca_file) curl_easy_setopt(c, CURLOPT_CAINFO, e->o->ca_file);
  r->hdrs = curl_slist_append(NULL, "Expect:");
  if (e->auth[0]) r->hdrs = curl_slist_append(r->hdrs, e->auth);
  if (r->content_type) {
    char ct[128];
    snprintf(ct, sizeof ct, "Content-Type: %s", r->content_type);
    r->hdrs = curl_slist_append(r->hdrs, ct);
  }
  if (r->range_from >= 0) {
    /* A resumed range starts after the bytes already received. */
    char range[96];
    snprintf(range, sizeof range, "Range: bytes=%lld-%lld",
             (long long)(r->range_from + r->resume), (long long)r->range_to);
    r->hdrs = curl_slist_append(r->hdrs, range);
  }
  /* curl is not asked to decode (CURLOPT_ACCEPT_ENCODING): the frame comes
   * to the callbacks as it was sent. */
  if (r->accept_zstd && r->resume == 0)
    r->hdrs = curl_slist_append(r->hdrs, "Accept-Encoding: zstd");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->hdrs);
  if (r->post) {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(c, CURLOPT_READDATA, r);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)br_xfer__req_body_len(r));
  }
  if (curl_multi_add_handle(e->multi, c) != CURLM_OK)
    return br_error_set(err, BR_ENET, "curl_multi_add_handle failed");
  e->running[e->nrunning++] = r;
  return BR_OK;
}

static double backoff(br_xfer__engine *e, int attempt) {
  double base = (e->o->backoff_ms > 0 ? e->o->backoff_ms : 200) / 1000.0;
  double d = base;
  for (int i = 1; i < attempt && d < 10; i++) d *= 2;
  if (d > 10) d = 10;
  /* Full jitter between half and one and a half of the delay, so clients
   * cut by the same outage do not come back in step. */
  e->rng ^= e->rng << 13;
  e->rng ^= e->rng >> 7;
  e->rng ^= e->rng << 17;
  double u = (double)(e->rng >> 11) / (double)(1ull << 53);
  return d * (0.5 + u);
}

/* The server's {"error": "..."} text, if any. */
static void server_message(br_xfer__req *r, char *out, size_t size) {
  out[0] = 0;
  json_t *o = json_loadb((const char *)r->resp.data, r->resp.len, 0, NULL);
  const char *m = o ? json_string_value(json_object_get(o, "error")) : NULL;
  if (m) snprintf(out, size, ": %s", m);
  json_decref(o);
}

int br_xfer__engine_retries(const br_xfer__engine *e) {
  return e->o->retries >= 0 ? e->o->retries : 6;
}

static void retry_or_fail(br_xfer__engine *e, br_xfer__req *r) {
  r->attempts++;
  e->prog.retries++;
  int max = br_xfer__engine_retries(e);
  if (r->attempts > max) {
    br_error err;
    br_error_clear(&err);
    const char *path = strstr(r->url, "://");
    path = path ? strchr(path + 3, '/') : NULL;
    if (!r->status) /* never an answer: say which depot, not which request */
      br_error_set(&err, BR_ENET, "cannot reach the depot at %.*s: %s (gave up after %d attempt%s)",
                   path ? (int)(path - r->url) : (int)strlen(r->url), r->url, r->last_error,
                   r->attempts, r->attempts == 1 ? "" : "s");
    else
      br_error_set(&err, BR_ENET, "%s: giving up after %d attempts: %s", r->url, r->attempts,
                   r->last_error);
    br_xfer__engine_fail(e, &err);
    br_xfer__req_free(r);
    return;
  }
  r->not_before = br_xfer__now() + backoff(e, r->attempts);
  br_xfer__engine_submit(e, r);
}

static void finish(br_xfer__engine *e, br_xfer__req *r, CURLcode cc) {
  e->unanswered -= (int64_t)r->sent; /* its bytes are done now, or to send again */
  for (int i = 0; i < e->nrunning; i++)
    if (e->running[i] == r) {
      e->running[i] = e->running[--e->nrunning];
      break;
    }
  curl_multi_remove_handle(e->multi, r->easy);
  if (!r->status) curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
  curl_easy_cleanup(r->easy);
  r->easy = NULL;
  curl_slist_free_all(r->hdrs);
  r->hdrs = NULL;
  br_xfer__buf_free(&r->body);
  r->nsegs = r->seg_bytes = 0; /* the referenced bytes may go from now */
  if (br_xfer__cancelled(e)) {
    br_xfer__req_free(r);
    return;
  }
  br_error err;
  br_error_clear(&err);
  if (r->sink_failed) {
    br_xfer__engine_fail(e, &r->sink_err);
    br_xfer__req_free(r);
    return;
  }
  if (r->bad_range) {
    retry_or_fail(e, r);
    return;
  }
  if (cc != CURLE_OK) {
    if (r->too_big) {
      br_error_set(&err, BR_EINVAL, "%s: response larger than %zu bytes", r->url,
                   r->resp_limit);
      br_xfer__engine_fail(e, &err);
      br_xfer__req_free(r);
      return;
    }
    if (cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CACERT_BADFILE) {
      /* the same certificate fails the same way: no retry */
      br_error_set(&err, BR_EINVAL, "the depot's certificate was refused (%s): give its CA "
                   "with --ca or BRAID_CA", curl_easy_strerror(cc));
      br_xfer__engine_fail(e, &err);
      br_xfer__req_free(r);
      return;
    }
    snprintf(r->last_error, sizeof r->last_error, "%s", curl_easy_strerror(cc));
    if (r->status / 100 == 2) {
      if (r->range_ok) r->keep_resp = true; /* resume after the bytes we have */
      else if (r->salvage) r->salvage(r);
    }
    retry_or_fail(e, r);
    return;
  }
  long st = r->status;
  if (st / 100 == 2) {
    int rc = r->done(r, &err);
    if (rc == BR_XFER__RETRY) {
      snprintf(r->last_error, sizeof r->last_error, "%.200s",
               err.msg[0] ? err.msg : "response failed verification");
      retry_or_fail(e, r);
      return;
    }
    if (rc < 0) br_xfer__engine_fail(e, &err);
    br_xfer__req_free(r);
    return;
  }
  char msg[600];
  server_message(r, msg, sizeof msg);
  if (st >= 500 || st == 429 || st == 408 || st == 422) {
    snprintf(r->last_error, sizeof r->last_error, "HTTP %ld%.200s", st, msg);
    retry_or_fail(e, r);
    return;
  }
  if (r->refused && st / 100 == 4 && r->refused(r, st, &err) == BR_OK) {
    br_xfer__req_free(r);
    return;
  }
  br_error_clear(&err);
  int code = st == 401 || st == 403 ? BR_EAUTH : st == 404 ? BR_ENOTFOUND
                                                            : st == 413 || st / 100 == 4
                                                                  ? BR_EINVAL
                                                                  : BR_ENET;
  if (st == 401 && !(e->o->token && *e->o->token))
    br_error_set(&err, code, "the depot wants a token and none was given (HTTP 401%s)", msg);
  else if (st == 401)
    br_error_set(&err, code, "the depot refused the token (HTTP 401%s)", msg);
  else if (st == 413)
    br_error_set(&err, code, "%s: HTTP 413%s: the depot takes smaller requests (its "
                 "--max-request); a push with a smaller chunk size (--chunk-size) fits",
                 r->url, msg);
  else if (st == 403)
    br_error_set(&err, code, "the depot forbids this (HTTP 403%s)", msg);
  else
    br_error_set(&err, code, "%s: HTTP %ld%s", r->url, st, msg);
  br_xfer__engine_fail(e, &err);
  br_xfer__req_free(r);
}

int br_xfer__engine_run(br_xfer__engine *e, br_error *err) {
  for (;;) {
    if (e->fatal) break;
    if (br_xfer__cancelled(e)) {
      br_error ce;
      br_error_clear(&ce);
      br_error_set(&ce, BR_ECANCEL, "cancelled");
      br_xfer__engine_fail(e, &ce);
      break;
    }
    double now = br_xfer__now(), wake = now + 0.1;
    /* Start what may start: FIFO order, skipping those backing off. */
    br_xfer__req *prev = NULL, *r = e->head;
    while (r && e->nrunning < e->max_running) {
      br_xfer__req *next = r->next;
      if (r->not_before <= now) {
        if (prev) prev->next = next;
        else e->head = next;
        if (e->tail == r) e->tail = prev;
        r->next = NULL;
        br_error se;
        br_error_clear(&se);
        if (start(e, r, &se)) {
          br_xfer__engine_fail(e, &se);
          if (r->easy) {
            curl_easy_cleanup(r->easy);
            r->easy = NULL;
          }
          br_xfer__req_free(r);
          break;
        }
      } else {
        if (r->not_before < wake) wake = r->not_before;
        prev = r;
      }
      r = next;
    }
    if (e->fatal) break;
    if (!e->nrunning && !e->head && !(e->more && e->more(e, e->tick_ud))) break;
    int still = 0;
    curl_multi_perform(e->multi, &still);
    CURLMsg *m;
    int left, finished = 0;
    while ((m = curl_multi_info_read(e->multi, &left))) {
      finished++;
      if (m->msg != CURLMSG_DONE) continue;
      br_xfer__req *done = NULL;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&done);
      CURLcode cc = m->data.result;
      finish(e, done, cc);
    }
    /* Unpause what the bandwidth bucket paused, once tokens are back. */
    double bw = br_xfer__bucket_wait(&e->bucket);
    if (bw <= 0) {
      for (int i = 0; i < e->nrunning; i++)
        if (e->running[i]->paused) {
          e->running[i]->paused = false;
          curl_easy_pause(e->running[i]->easy, CURLPAUSE_CONT);
        }
    } else if (now + bw < wake) {
      wake = now + bw;
    }
    uint64_t before = e->submitted;
    if (e->tick) e->tick(e, e->tick_ud);
    br_xfer__engine_progress(e, false);
    /* start what can start now, without waiting */
    if (finished || (e->submitted != before && e->nrunning < e->max_running)) continue;
    int ms = (int)((wake - br_xfer__now()) * 1000);
    if (ms < 1) ms = 1;
    /* with nothing running it still waits: for the timeout or a wake */
    curl_multi_poll(e->multi, NULL, 0, ms, NULL);
  }
  if (e->fatal) {
    /* Stop everything in flight; partial results stay for a resume. */
    for (int i = 0; i < e->nrunning; i++) {
      curl_multi_remove_handle(e->multi, e->running[i]->easy);
      br_xfer__req_free(e->running[i]);
    }
    e->nrunning = 0;
    while (e->head) {
      br_xfer__req *n = e->head->next;
      br_xfer__req_free(e->head);
      e->head = n;
    }
    e->tail = NULL;
    if (err) *err = e->err;
    return e->fatal;
  }
  return BR_OK;
}
