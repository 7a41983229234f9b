/* The depot: an HTTP server (libmicrohttpd, a thread per connection so one
 * client's fsync never holds up another's) over the store of store.c.
 *
 *   POST /v1/missing            {"chunks":[hex...]} -> {"missing":[hex...]}
 *   POST /v1/chunks[?plain=incompressible]  bundle  -> {"stored":n}  (each verified;
 *                               plain=: its plain entries were found not to compress)
 *   POST /v1/fetch              {"chunks":[hex...],"zstd":b} -> bundle
 *   GET  /v1/chunk/HEX          one chunk, with Range (206 + Content-Range); with
 *                               Accept-Encoding: zstd, a chunk kept as a zstd frame
 *                               comes whole as the frame (200, Content-Encoding: zstd)
 *   POST /v1/snapshot?name=N    manifest            -> {"version":v}, with "same_as":u
 *                                                      when it holds the tree vu holds
 *   GET  /v1/snapshot?name=N[&version=V]            -> manifest, X-Braid-Version
 *   POST /v1/admin/rm  {"versions":[{"name":N,"version":V}...]} -> {"removed":[...]}
 *   POST /v1/admin/gc  {"grace_s":S,"dry_run":b}    -> br_depot_gc_result's fields
 *   POST /v1/list      {"name":N,"detail":b}        -> {"versions":[{"name","version",
 *                      "time","files","bytes"}...]}  (br_depot_list; any token)
 *
 * Every request needs "Authorization: Bearer TOKEN" with a token whose hash
 * is in the token file; /v1/admin/ requests need one from the admin token
 * file (or, mounted in braid server, an admin role). Bodies are bounded
 * before they are read. A gc may take long: it holds only its connection's
 * thread. */
#include "xfer_int.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAX_REQUEST (BR_XFER__MAX_CHUNK + 1024 * 1024) /* a largest chunk fits */
#define MAX_LIST 100000 /* digests in one missing/fetch question */
#define FETCH_RUN 256                     /* chunks read from a pack at once, at most */
#define FETCH_RUN_BYTES (8 * 1024 * 1024) /* ... and bytes */
#define MAX_ADMIN_REQUEST (4 * 1024 * 1024) /* an rm's list of versions */

struct br_depot {
  struct MHD_Daemon *mhd;
  br_xfer__store store;
  br_xfer__tokens tokens;
  br_xfer__tokens admin_tokens; /* loaded when has_admin */
  bool has_admin;
  int (*authorize)(void *ud, const char *token, br_depot_access access);
  void *authorize_ud;
  int64_t max_request, max_manifest;
  int port;
  /* The memory bound: bytes of request and response bodies held at once. */
  pthread_mutex_t mem_mu;
  int64_t buffered, max_buffered;
  br_xfer__pcache *cache; /* packs in memory (pcache.c); NULL: none */
  br_warn_fn *log;        /* opts->log: a line per change */
  void *log_ud;
};

/* A line for the operator's log: what changed, and from which address. */
__attribute__((format(printf, 3, 4))) static void note_change(br_depot *d, struct MHD_Connection *c,
                                                              const char *fmt, ...) {
  if (!d->log) return;
  char msg[1024], addr[INET6_ADDRSTRLEN] = "?";
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const union MHD_ConnectionInfo *ci =
      c ? MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS) : NULL;
  const struct sockaddr *sa = ci ? ci->client_addr : NULL;
  if (sa && sa->sa_family == AF_INET)
    inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, addr,
              sizeof addr);
  else if (sa && sa->sa_family == AF_INET6)
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, addr,
              sizeof addr);
  char line[1200];
  snprintf(line, sizeof line, "%s (from %s)", msg, addr);
  d->log(d->log_ud, line);
}

typedef struct request {
  br_depot *d;
  int64_t charged; /* bytes counted against the depot's memory bound */
  br_xfer__buf body;
  size_t skew;     /* body.data is this far into its (pooled) buffer: see rq_body_align */
  size_t expect;   /* the body's Content-Length; 0: not given */
  int reject; /* HTTP status decided before the body was read */
  const char *reject_msg;
  int64_t limit;
  bool upload;        /* POST /v1/chunks */
  bool handled;       /* its whole body came and was answered */
  int64_t plain_raw;  /* -1: ?plain=incompressible (the index says so) */
} request;

static enum MHD_Result reply(struct MHD_Connection *c, unsigned int status, const char *type,
                             void *data, size_t len, const char *hname, const char *hval) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
  if (!r) {
    free(data);
    return MHD_NO;
  }
  MHD_add_response_header(r, "Content-Type", type);
  if (hname) MHD_add_response_header(r, hname, hval);
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

/* A body from the buffer pool goes back to it once sent (freed, its pages
 * would be faulted in and cleared again for the next body). */
typedef struct pooled {
  void *data;
  size_t cap;
} pooled;

static void pooled_free(void *cls) {
  pooled *p = cls;
  br_xfer__mem_put(p->data, p->cap);
  free(p);
}

/* Queues r, a body of bytes, as a 200 and lets go of it. */
static enum MHD_Result queue_octets(struct MHD_Connection *c, struct MHD_Response *r) {
  MHD_add_response_header(r, "Content-Type", "application/octet-stream");
  enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
  MHD_destroy_response(r);
  return ret;
}

/* A response of b's bytes from off on, that takes b (its buffer goes back
 * to the pool once sent): nothing is copied. NULL (b freed) when MHD has
 * no memory. */
static struct MHD_Response *pooled_response(br_xfer__buf *b, size_t off) {
  pooled *p = malloc(sizeof *p);
  struct MHD_Response *r = p ? MHD_create_response_from_buffer_with_free_callback_cls(
                                   b->len - off, b->data + off, pooled_free, p)
                             : NULL;
  if (!r) {
    free(p);
    br_xfer__buf_free(b);
    return NULL;
  }
  p->data = b->data;
  p->cap = b->cap;
  memset(b, 0, sizeof *b);
  return r;
}

static enum MHD_Result reply_buf(struct MHD_Connection *c, br_xfer__buf *b) {
  struct MHD_Response *r = pooled_response(b, 0);
  return r ? queue_octets(c, r) : MHD_NO;
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned int status, json_t *o) {
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  if (!s) return MHD_NO;
  return reply(c, status, "application/json", s, strlen(s), NULL, NULL);
}

static enum MHD_Result reply_error(struct MHD_Connection *c, unsigned int status,
                                   const char *msg) {
  return reply_json(c, status, json_pack("{ss}", "error", msg));
}

static int status_of(int code) {
  switch (code) {
  case BR_ENOTFOUND: return MHD_HTTP_NOT_FOUND;
  case BR_EINVAL: return MHD_HTTP_BAD_REQUEST;
  case BR_ENOMEM: return MHD_HTTP_SERVICE_UNAVAILABLE;
  default: return MHD_HTTP_INTERNAL_SERVER_ERROR;
  }
}

/* Counts n more bytes against the memory bound; false when over it. */
static bool charge(br_depot *d, request *rq, int64_t n) {
  pthread_mutex_lock(&d->mem_mu);
  bool ok = d->buffered + n <= d->max_buffered || d->buffered == 0;
  if (ok) {
    d->buffered += n;
    rq->charged += n;
  }
  pthread_mutex_unlock(&d->mem_mu);
  return ok;
}

/* What a request does: /v1/admin/ administers, uploads and commits store
 * something, the rest only read. */
static br_depot_access access_of(const char *url, const char *method) {
  if (strncmp(url, "/v1/admin/", 10) == 0) return BR_DEPOT_ADMIN;
  if (strcmp(method, "POST") == 0 &&
      (strcmp(url, "/v1/chunks") == 0 || strcmp(url, "/v1/snapshot") == 0))
    return BR_DEPOT_WRITE;
  return BR_DEPOT_READ;
}

/* 0 when the request may go on, else the HTTP status that refuses it. A
 * token of the admin token file may do everything; one of the token file
 * anything but administer. */
static unsigned authorised(br_depot *d, struct MHD_Connection *c, br_depot_access access) {
  const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
  const char *tok = h && strncasecmp(h, "Bearer ", 7) == 0 ? h + 7 : NULL;
  while (tok && *tok == ' ') tok++;
  if (d->authorize) return (unsigned)d->authorize(d->authorize_ud, tok, access);
  if (!tok) return MHD_HTTP_UNAUTHORIZED;
  if (d->has_admin && br_xfer__tokens_check(&d->admin_tokens, tok)) return 0;
  if (!br_xfer__tokens_check(&d->tokens, tok)) return MHD_HTTP_UNAUTHORIZED;
  return access == BR_DEPOT_ADMIN ? MHD_HTTP_FORBIDDEN : 0;
}

/* Why a 403: the message tells an admin what to do. */
static const char *forbidden_msg(const br_depot *d, br_depot_access access) {
  if (access != BR_DEPOT_ADMIN) return "this token may only read from the depot";
  if (d->authorize) return "removing versions and gc need an admin token (this token's role may not)";
  if (d->has_admin)
    return "removing versions and gc need a token from the depot's --admin-token-file";
  return "this depot takes no admin requests: start it with --admin-token-file FILE "
         "(or use braid server's depot with an admin token)";
}

/* Parses {"chunks":[hex...]} into a digest array (and "zstd", when asked). */
static int parse_list(const request *rq, br_xfer_digest **out, size_t *n, bool *zstd,
                      br_error *err) {
  return br_xfer__digest_list_parse((const char *)rq->body.data, rq->body.len, "chunks",
                                    MAX_LIST, out, n, zstd ? "zstd" : NULL, zstd, err);
}

static enum MHD_Result do_missing(br_depot *d, struct MHD_Connection *c, request *rq) {
  br_error err = {0};
  br_xfer_digest *ds = NULL;
  size_t n = 0, k = 0;
  if (parse_list(rq, &ds, &n, NULL, &err))
    return reply_error(c, (unsigned)status_of(err.code), err.msg);
  br_xfer__index_batch_begin(&d->store);
  for (size_t i = 0; i < n; i++)
    if (!br_xfer__store_has(&d->store, &ds[i])) ds[k++] = ds[i];
  br_xfer__index_batch_end(&d->store);
  size_t len = 0;
  char *body = br_xfer__digest_list_json("missing", ds, k, &len);
  free(ds);
  if (!body) return reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
  return reply(c, MHD_HTTP_OK, "application/json", body, len, NULL, NULL);
}

/* A client whose received bytes kept failing verification asks whether
 * the depot's own copies are sound: each is read back and checked, and a
 * damaged one is taken out of the store (br_xfer__store_verify), so that
 * pulls say it is missing and the next push that holds it sends it again.
 * Answers the damaged ones. At most MAX_VERIFY a request: each may be a
 * large chunk to read and hash. */
#define MAX_VERIFY 8
static enum MHD_Result do_verify(br_depot *d, struct MHD_Connection *c, request *rq) {
  br_error err = {0};
  br_xfer_digest *ds = NULL;
  size_t n = 0, k = 0;
  if (parse_list(rq, &ds, &n, NULL, &err))
    return reply_error(c, (unsigned)status_of(err.code), err.msg);
  if (n > MAX_VERIFY) {
    free(ds);
    return reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "at most 8 chunks to verify at once");
  }
  for (size_t i = 0; i < n; i++) {
    br_error_clear(&err);
    if (br_xfer__store_verify(&d->store, &ds[i], true, &err) != BR_EIO) continue;
    note_change(d, c, "damaged %s, found as a client's bytes failed verification", err.msg);
    ds[k++] = ds[i];
  }
  size_t len = 0;
  char *body = br_xfer__digest_list_json("damaged", ds, k, &len);
  free(ds);
  if (!body) return reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
  return reply(c, MHD_HTTP_OK, "application/json", body, len, NULL, NULL);
}

/* An upload that starts with a large plain chunk (as a client sends each
 * chunk of a large file, one per request) gets a body placed so that the
 * chunk's bytes start 4 KiB aligned, with room after them for a direct
 * write's padding: the store writes them from there, not through an aligned
 * copy (which cost the depot a tenth of its time taking large files). The
 * buffer starts rq->skew bytes before body.data. Called with the body's
 * first bytes, before they are appended. */
static void rq_body_align(request *rq, const char *first, size_t n) {
  if (!rq->upload || rq->body.len || rq->skew || !rq->expect) return;
  size_t at = br_xfer__bundle_first_plain(first, n, BR_XFER__PACK_MAX_ENTRY);
  if (!at) return;
  size_t skew = BR_XFER__DIO_ALIGN - at % BR_XFER__DIO_ALIGN, cap;
  uint8_t *base = br_xfer__mem_get(skew + rq->expect + BR_XFER__DIO_ALIGN, &cap);
  if (!base) return; /* copied when written, then */
  br_xfer__mem_put(rq->body.data, rq->body.cap);
  rq->body.data = base + skew;
  rq->body.cap = cap - skew;
  rq->skew = skew;
}

static void rq_body_free(request *rq) {
  if (rq->skew) {
    br_xfer__mem_put(rq->body.data - rq->skew, rq->body.cap + rq->skew);
    memset(&rq->body, 0, sizeof rq->body);
    rq->skew = 0;
  }
  br_xfer__buf_free(&rq->body);
}

/* More of the body; one longer than its Content-Length said leaves the
 * aligned buffer for a plain one. */
static int rq_body_append(request *rq, const char *data, size_t n) {
  if (rq->skew && rq->body.len + n > rq->body.cap) {
    br_xfer__buf b = {0};
    if (br_xfer__buf_append(&b, rq->body.data, rq->body.len)) return BR_ENOMEM;
    rq_body_free(rq);
    rq->body = b;
  }
  return br_xfer__buf_append(&rq->body, data, n);
}

/* Stores the verified chunks of an upload's bundle: 0 and *stored, or the
 * HTTP status and err of the failure (nothing of it is indexed). Called
 * for a whole body, and for what complete entries a cut one holds. */
static unsigned store_upload(br_depot *d, request *rq, br_error *err, int *stored) {
  br_xfer__bundle_iter it;
  *stored = 0;
  if (br_xfer__bundle_open(&it, rq->body.data, rq->body.len, err)) {
    br_error_set(err, BR_EINVAL, "not a chunk bundle (bad magic)");
    return MHD_HTTP_BAD_REQUEST;
  }
  /* Small chunks go into one new pack (one file, one sync); large ones are
   * written as loose objects first and synced together afterwards. */
  br_xfer__staged *st = NULL;
  br_xfer__packed *pk = NULL;
  br_xfer__buf pack = {0};
  size_t n = 0, cap = 0, npk = 0;
  int64_t plain_raw = rq->plain_raw;
  /* Small chunks are kept as they came, compressed or not (the index
   * says which). A bundle whose chunks all go into the pack is the pack:
   * it is written as it came, its entries' headers between the chunks
   * (the index says where each chunk is), and nothing is copied.
   * Otherwise the pack is put together in aligned memory that holds it
   * whole, padding included, and written as it is with direct I/O. */
  bool whole;
  size_t need =
      br_xfer__bundle_pack_need(rq->body.data, rq->body.len, BR_XFER__PACK_MAX_ENTRY, &whole);
  if (whole) pack = rq->body;
  else if (need) {
    pack.data = br_xfer__mem_get(need, &pack.cap);
    if (!pack.data) pack.cap = 0;
  }
  int r;
  unsigned status = 0; /* a failure's, with err */
  br_xfer_digest dg, got;
  const uint8_t *data;
  size_t len;
  while ((r = br_xfer__bundle_next(&it, &dg, &data, &len, err)) == 1) {
    br_xfer_sha256(data, len, &got);
    if (br_xfer__digest_cmp(&dg, &got) != 0) {
      /* 422: the client retries; a corrupted upload is never stored. */
      status = MHD_HTTP_UNPROCESSABLE_CONTENT;
      br_error_set(err, BR_EINVAL, "chunk digest mismatch");
      break;
    }
    if (n == cap || npk == cap) { /* both arrays have cap entries */
      cap = cap ? cap * 2 : 64;
      void *p1 = realloc(st, cap * sizeof *st), *p2 = p1 ? realloc(pk, cap * sizeof *pk) : NULL;
      if (p1) st = p1;
      if (p2) pk = p2;
      if (!p1 || !p2) {
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        br_error_set(err, BR_ENOMEM, "out of memory");
        break;
      }
    }
    /* A large chunk that came as a zstd frame is kept so too, in the
     * pack: a pull that takes zstd gets the frame (do_chunk). */
    bool framed = it.zstd && len >= BR_XFER__PACK_MAX_ENTRY;
    if (framed && br_xfer__store_has(&d->store, &dg)) continue;
    if (len < BR_XFER__PACK_MAX_ENTRY || framed) {
      /* No lookup for small ones: the client sends what "missing" said is
       * missing; one another client stored meanwhile is indexed once (the
       * first copy wins) and its bytes here stay unused. */
      bool dup = false; /* the same chunk twice in one bundle */
      for (size_t i = npk; i-- > 0 && !dup && npk - i <= 64;)
        dup = br_xfer__digest_cmp(&pk[i].d, &dg) == 0;
      if (dup) continue;
      /* as it came: a zstd frame stays one (verified above once inflated),
       * but an empty chunk is kept empty however it came; either way its
       * place is in the body, which may be the pack */
      bool z = it.zstd && len > 0;
      const uint8_t *keep = it.wire;
      size_t klen = z ? it.wire_len : len;
      pk[npk].d = dg;
      pk[npk].off = whole ? (int64_t)(keep - rq->body.data) : (int64_t)pack.len;
      pk[npk].len = (int64_t)klen;
      pk[npk].raw = z ? (int64_t)len : plain_raw;
      if (!whole && br_xfer__buf_append(&pack, keep, klen)) {
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        br_error_set(err, BR_ENOMEM, "out of memory");
        break;
      }
      npk++;
      continue;
    }
    if (br_xfer__store_has(&d->store, &dg)) continue;
    bool dup = false; /* the same chunk twice in one bundle */
    for (size_t i = 0; i < n && !dup; i++) dup = br_xfer__digest_cmp(&st[i].d, &dg) == 0;
    if (dup) continue;
    /* the bytes past the chunk's that the write may pad over: the body's
     * own when it is the last entry, the scratch's when it was inflated */
    size_t room = len;
    if (data == it.scratch) room = it.scratch_cap;
    else if (data + len == rq->body.data + rq->body.len)
      room = (size_t)(rq->body.data + rq->body.cap - data);
    if (br_xfer__store_stage(&d->store, &dg, data, len, room, &st[n], err)) {
      status = MHD_HTTP_INSUFFICIENT_STORAGE;
      break;
    }
    n++;
  }
  br_xfer__bundle_close(&it);
  if (!status && r < 0) status = MHD_HTTP_BAD_REQUEST;
  char rel[64] = "";
  if (!status && br_xfer__pack_write(&d->store, &pack, pk, npk, rel, err))
    status = MHD_HTTP_INSUFFICIENT_STORAGE;
  /* What was just pushed is what gets pulled next: the pack's bytes stay
   * in memory (the request's body, when it is the pack). */
  if (!status && rel[0]) br_xfer__pcache_put(d->cache, rel, whole ? &rq->body : &pack);
  if (!whole) br_xfer__buf_free(&pack); /* else the request's body, freed with it */
  free(pk);
  if (status) {
    for (size_t i = 0; i < n; i++)
      if (st[i].fd >= 0) {
        close(st[i].fd);
        unlinkat(d->store.rootfd, st[i].tmp, 0);
      }
    free(st);
    return status;
  }
  int rc = br_xfer__store_commit_staged(&d->store, st, n, err);
  free(st);
  if (rc) return MHD_HTTP_INSUFFICIENT_STORAGE;
  *stored = (int)(n + npk);
  return 0;
}

static enum MHD_Result do_upload(br_depot *d, struct MHD_Connection *c, request *rq) {
  br_error err;
  br_error_clear(&err);
  int stored;
  rq->handled = true;
  unsigned status = store_upload(d, rq, &err, &stored);
  if (status) return reply_error(c, status, err.msg);
  return reply_json(c, MHD_HTTP_OK, json_pack("{si}", "stored", stored));
}

/* An upload cut short (the client cancelled, the link dropped, it timed
 * out): the complete entries it holds are verified and stored all the
 * same, so a cancelled or cut push loses at most the chunk each of its
 * requests was sending; the next push finds the others there. */
static void salvage_upload(br_depot *d, request *rq) {
  size_t keep = br_xfer__bundle_complete_len(rq->body.data, rq->body.len);
  if (keep <= 4) return; /* not even one entry */
  rq->body.len = keep;
  br_error err;
  br_error_clear(&err);
  int stored;
  store_upload(d, rq, &err, &stored); /* nobody to tell; a failure stores nothing */
}

/* Where a packed chunk is; raw > 0: its len bytes are a zstd frame of
 * raw bytes. */
typedef struct loc {
  char rel[64];
  int64_t off, len, raw;
} loc;

/* The bytes a chunk puts in a fetch's response: a stored zstd frame goes
 * as it is where zstd was asked for, else inflated. */
static int64_t out_bytes(const loc *l, bool zstd) {
  return l->raw > 0 && !zstd ? l->raw : l->len;
}

/* The places of n entries' stored bytes from the end of out on, laid out as
 * if none compressed (the room is reserved). */
static void places(const br_xfer__buf *out, const loc *l, size_t n, struct iovec *iov) {
  uint8_t *at = out->data + out->len + BR_XFER__BUNDLE_HDR;
  for (size_t m = 0; m < n; m++) {
    iov[m] = (struct iovec){at, (size_t)l[m].len};
    at += l[m].len + BR_XFER__BUNDLE_HDR;
  }
}

/* Reads the aligned span of n neighbours with direct I/O past their
 * entries' places (pool buffers are aligned); iov says where each chunk's
 * bytes are. 0, -EINVAL if the file refuses direct I/O, or -errno. */
static int read_direct(br_xfer__buf *out, int dfd, const loc *l, size_t n, struct iovec *iov) {
  const int64_t A = BR_XFER__DIO_ALIGN;
  int64_t a0 = l[0].off & ~(A - 1), need = l[n - 1].off + l[n - 1].len - a0,
          span = (need + A - 1) & ~(A - 1);
  size_t pos = (out->len + n * BR_XFER__BUNDLE_HDR + (size_t)A - 1) & ~(size_t)(A - 1);
  if (br_xfer__buf_reserve(out, pos - out->len + (size_t)span)) return -ENOMEM;
  uint8_t *dst = out->data + pos;
  for (int64_t got = 0; got < need;) {
    ssize_t r = pread(dfd, dst + got, (size_t)(span - got), a0 + got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -errno;
    if (r == 0) return -ENODATA;
    got += r;
  }
  for (size_t m = 0; m < n; m++) iov[m] = (struct iovec){dst + (l[m].off - a0), (size_t)l[m].len};
  return 0;
}

/* Puts n entries whose stored bytes are where iov says. */
static int put_run(br_xfer__buf *out, const struct iovec *iov, const loc *l,
                   const br_xfer_digest *ds, size_t n, bool zstd) {
  for (size_t m = 0; m < n; m++)
    if (br_xfer__bundle_put_stored(out, &ds[m], iov[m].iov_base, iov[m].iov_len, l[m].raw, zstd,
                                   NULL))
      return -EIO;
  return 0;
}

/* One chunk stored compressed, read from fd (as read_run reads) into out:
 * inflated unless zstd. 0 or -errno. */
static int read_stored(br_xfer__buf *out, int fd, bool *direct, const loc *l,
                       const br_xfer_digest *d, bool zstd) {
  br_xfer__buf tmp = {0};
  struct iovec iov = {0};
  int rc = *direct ? read_direct(&tmp, fd, l, 1, &iov) : -EINVAL;
  if (rc == -EINVAL) {
    if (*direct) br_xfer__direct_off(fd); /* the file system refuses direct I/O */
    *direct = false;
    rc = br_xfer__buf_reserve(&tmp, (size_t)l->len) ? -ENOMEM
                                                    : br_xfer__pread_all(fd, tmp.data,
                                                                         (size_t)l->len, l->off);
    iov = (struct iovec){tmp.data, (size_t)l->len};
  }
  if (rc == 0 && br_xfer__bundle_add_stored(out, d, iov.iov_base, iov.iov_len, l->raw, zstd))
    rc = -EIO;
  br_xfer__buf_free(&tmp);
  return rc;
}

/* Reads n chunks that are neighbours in one pack (fd), bytes in all, into
 * out as bundle entries: with direct I/O while *direct (fd has O_DIRECT),
 * as packs are written, since filling the page cache costs more than the
 * copy here and a depot's packs are mostly cold; otherwise one preadv into
 * the entries' places (one pread each when entry headers lie between them:
 * a pack written as its upload came). A run of one chunk stored compressed
 * that goes out inflated is read_stored's. 0 or -errno. */
static int read_run(br_xfer__buf *out, int fd, bool *direct, const loc *l,
                    const br_xfer_digest *ds, size_t n, int64_t bytes, bool zstd) {
  struct iovec iov[FETCH_RUN], v[FETCH_RUN];
  if (n == 1 && l[0].raw > 0 && !zstd) return read_stored(out, fd, direct, l, ds, false);
  if (*direct) {
    int rc = read_direct(out, fd, l, n, iov);
    if (rc == 0) return put_run(out, iov, l, ds, n, zstd);
    if (rc != -EINVAL) return rc;
    br_xfer__direct_off(fd); /* the file system refuses direct I/O */
    *direct = false;
  }
  if (br_xfer__buf_reserve(out, n * BR_XFER__BUNDLE_HDR + (size_t)bytes)) return -ENOMEM;
  places(out, l, n, iov);
  int rc = 0;
  if (l[n - 1].off + l[n - 1].len - l[0].off == bytes) {
    memcpy(v, iov, n * sizeof *iov); /* preadv_all moves along v */
    rc = br_xfer__preadv_all(fd, v, (int)n, l[0].off);
  } else {
    for (size_t m = 0; m < n && !rc; m++)
      rc = br_xfer__pread_all(fd, iov[m].iov_base, iov[m].iov_len, l[m].off);
  }
  return rc ? rc : put_run(out, iov, l, ds, n, zstd);
}

/* A fetch's response body: the bundle's own bytes in out (entry headers,
 * chunks read from the disk or compressed) and, between them, chunks sent
 * straight from packs kept in memory (an iovec response: no copy). */
typedef struct piece {
  const uint8_t *at; /* a pack's bytes, or NULL: out's bytes from off */
  size_t off, len;
} piece;

typedef struct fbody {
  br_xfer__buf out;
  piece *pc;
  size_t npc, pccap;
  size_t mark;   /* out's bytes before mark are in pieces already */
  size_t by_ref; /* bytes of the pieces in packs */
  const br_xfer__pcpack **held; /* the packs pieces point into, released when sent */
  size_t nheld, heldcap;
  br_xfer__pcache *cache;
} fbody;

static int body_piece(fbody *b, const uint8_t *at, size_t off, size_t len) {
  if (b->npc == b->pccap) {
    size_t cap = b->pccap ? 2 * b->pccap : 64;
    piece *pc = realloc(b->pc, cap * sizeof *pc);
    if (!pc) return -ENOMEM;
    b->pc = pc;
    b->pccap = cap;
  }
  b->pc[b->npc++] = (piece){at, off, len};
  return 0;
}

/* Sends len bytes at at (in a held pack) next, after out's bytes so far. */
static int body_ref(fbody *b, const uint8_t *at, size_t len) {
  if (b->out.len > b->mark && body_piece(b, NULL, b->mark, b->out.len - b->mark)) return -ENOMEM;
  b->mark = b->out.len;
  b->by_ref += len;
  return body_piece(b, at, 0, len);
}

/* Keeps p (one fetch's reference to it) until the body is sent. */
static int body_hold(fbody *b, const br_xfer__pcpack *p) {
  if (b->nheld == b->heldcap) {
    size_t cap = b->heldcap ? 2 * b->heldcap : 4;
    const br_xfer__pcpack **h = realloc(b->held, cap * sizeof *h);
    if (!h) return -ENOMEM;
    b->held = h;
    b->heldcap = cap;
  }
  b->held[b->nheld++] = p;
  return 0;
}

/* The fetch is done with pack p: held by the body if a piece points into
 * it (used), else released. -ENOMEM (p released: the body must not be
 * sent) when it cannot be held. */
static int body_done_with(fbody *b, const br_xfer__pcpack *p, bool used) {
  if (used && body_hold(b, p) == 0) return 0;
  br_xfer__pcache_release(b->cache, p);
  return used ? -ENOMEM : 0;
}

static void body_free(void *cls) {
  fbody *b = cls;
  for (size_t i = 0; i < b->nheld; i++) br_xfer__pcache_release(b->cache, b->held[i]);
  br_xfer__buf_free(&b->out);
  free(b->held);
  free(b->pc);
  free(b);
}

/* read_run for a pack in memory (p): n chunks that go out from it as they
 * are, or compressed into out. *used: a chunk points into p. */
static int copy_run(fbody *b, const br_xfer__pcpack *p, const loc *l, const br_xfer_digest *ds,
                    size_t n, bool zstd, bool *used) {
  size_t plen;
  const uint8_t *pb = br_xfer__pcpack_bytes(p, &plen);
  for (size_t m = 0; m < n; m++) {
    if (l[m].off < 0 || (uint64_t)l[m].off + (uint64_t)l[m].len > plen) return -EIO;
    bool by_ref;
    int rc = br_xfer__bundle_put_ref_stored(&b->out, &ds[m], pb + l[m].off, (size_t)l[m].len,
                                            l[m].raw, zstd, NULL, &by_ref);
    if (rc) return rc == BR_ENOMEM ? -ENOMEM : -EIO;
    if (by_ref) {
      if (body_ref(b, pb + l[m].off, (size_t)l[m].len)) return -ENOMEM;
      *used = true;
    }
  }
  return 0;
}

/* Queues b as the response: one buffer when no chunk points into a pack. */
static enum MHD_Result reply_body(struct MHD_Connection *c, fbody *b) {
  if (!b->npc) {
    enum MHD_Result ret = reply_buf(c, &b->out);
    body_free(b);
    return ret;
  }
  struct MHD_IoVec *iov = NULL;
  struct MHD_Response *r = NULL;
  if (b->out.len == b->mark || body_piece(b, NULL, b->mark, b->out.len - b->mark) == 0)
    iov = malloc(b->npc * sizeof *iov);
  if (iov && b->npc <= UINT_MAX) {
    for (size_t i = 0; i < b->npc; i++)
      iov[i] = (struct MHD_IoVec){b->pc[i].at ? b->pc[i].at : b->out.data + b->pc[i].off,
                                  b->pc[i].len};
    r = MHD_create_response_from_iovec(iov, (unsigned)b->npc, body_free, b);
  }
  free(iov);
  if (!r) {
    body_free(b);
    return MHD_NO;
  }
  return queue_octets(c, r);
}

/* The pack of locs[i] for a fetch: from the cache, else open (pfd, with
 * O_DIRECT when it takes it); read whole into the cache when the fetch
 * wants a quarter of it or more from this point on (a pull of a snapshot
 * wants it all; a pull of one file does not need 8 MiB read). */
static void open_pack(br_depot *d, const loc *locs, size_t i, size_t n, int *pfd,
                      bool *direct, const br_xfer__pcpack **hot) {
  *pfd = -1;
  *hot = br_xfer__pcache_get(d->cache, locs[i].rel, -1, 0, false);
  if (*hot) return;
  *pfd = openat(d->store.rootfd, locs[i].rel, O_RDONLY | O_CLOEXEC);
  *direct = *pfd >= 0 && br_xfer__direct_on(*pfd) == 0;
  struct stat st;
  if (!d->cache || *pfd < 0 || fstat(*pfd, &st) != 0) return;
  int64_t want = 0;
  for (size_t k = i; k < n && strcmp(locs[k].rel, locs[i].rel) == 0; k++) want += locs[k].len;
  if (want * 4 < (int64_t)st.st_size) return;
  *hot = br_xfer__pcache_get(d->cache, locs[i].rel, *pfd, (int64_t)st.st_size, true);
  if (*hot) {
    close(*pfd);
    *pfd = -1;
  }
}

static enum MHD_Result do_fetch(br_depot *d, struct MHD_Connection *c, request *rq) {
  br_error err = {0};
  br_xfer_digest *ds = NULL;
  size_t n = 0;
  bool zstd = false;
  if (parse_list(rq, &ds, &n, &zstd, &err))
    return reply_error(c, (unsigned)status_of(err.code), err.msg);
  fbody *bd = calloc(1, sizeof *bd);
  if (!bd) {
    free(ds);
    return reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
  }
  bd->cache = d->cache;
  br_xfer__buf *out = &bd->out;
  br_xfer__bundle_begin(out);
  int64_t total = 0;
  size_t left = 0; /* bytes of the entries from i on that are in packs */
  unsigned status = MHD_HTTP_OK;
  const char *msg = NULL;
  /* Where the packed ones are, in one read transaction; then read, with
   * the pack of the last one still open (a bundle's chunks are mostly
   * neighbours in one pack). */
  loc *locs = calloc(n ? n : 1, sizeof *locs);
  if (locs) {
    br_xfer__index_batch_begin(&d->store);
    for (size_t i = 0; i < n; i++)
      br_xfer__index_locate(&d->store, &ds[i], locs[i].rel, sizeof locs[i].rel, &locs[i].off,
                            &locs[i].len, &locs[i].raw);
    br_xfer__index_batch_end(&d->store);
    for (size_t i = 0; i < n; i++)
      if (locs[i].rel[0] && locs[i].len > 0 && locs[i].len <= BR_XFER__MAX_CHUNK)
        left += (size_t)out_bytes(&locs[i], zstd);
    if (left > (size_t)d->max_request) left = 0;
    br_xfer__bundle_reserve(out, n, 0); /* the chunks read go in when one is */
  }
  char open_rel[64] = "";
  int pfd = -1;
  bool direct = false;             /* pfd has O_DIRECT */
  const br_xfer__pcpack *hot = NULL; /* or the pack is in memory */
  bool hot_used = false;             /* the body points into hot */
  for (size_t i = 0; i < n && !msg;) {
    if (locs && locs[i].rel[0] && strcmp(locs[i].rel, open_rel) != 0) {
      if (pfd >= 0) close(pfd);
      pfd = -1;
      int held = body_done_with(bd, hot, hot_used);
      hot = NULL;
      hot_used = false;
      if (held) {
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        msg = "out of memory";
        break;
      }
      open_pack(d, locs, i, n, &pfd, &direct, &hot);
      snprintf(open_rel, sizeof open_rel, "%s", pfd >= 0 || hot ? locs[i].rel : "");
    }
    if (locs && locs[i].rel[0] && (pfd >= 0 || hot)) {
      /* Neighbours in one pack (a bundle's chunks mostly are; in a pack
       * written as its upload came, an entry header lies between two):
       * one read for a run of them, into their entries as if none
       * compressed. A chunk stored compressed that goes out inflated
       * grows, so from the disk it is a run of its own. */
      size_t k = i;
      int64_t end = locs[i].off, bytes = 0, sent = 0;
      bool lone = !hot && !zstd && locs[i].raw > 0;
      while (k < n && (k == i || !lone) && k - i < FETCH_RUN &&
             strcmp(locs[k].rel, open_rel) == 0 &&
             (locs[k].off == end || (k > i && locs[k].off == end + BR_XFER__BUNDLE_HDR)) &&
             locs[k].len >= 0 && locs[k].len <= BR_XFER__MAX_CHUNK &&
             locs[k].raw <= BR_XFER__MAX_CHUNK &&
             (k == i || zstd || hot || locs[k].raw <= 0) &&
             (k == i || bytes + locs[k].len <= FETCH_RUN_BYTES) &&
             total + out_bytes(&locs[k], zstd) <= d->max_request) {
        total += out_bytes(&locs[k], zstd);
        sent += out_bytes(&locs[k], zstd);
        bytes += locs[k].len;
        end = locs[k].off + locs[k].len;
        k++;
      }
      if (k == i) {
        status = MHD_HTTP_CONTENT_TOO_LARGE;
        msg = "fetch asks for too many bytes at once";
        break;
      }
      /* Room for all the rest at the first read from the disk: what goes
       * out from kept packs is never copied, so a fetch served from them
       * only needs room for the entry headers. */
      if (!hot && out->cap - out->len < (size_t)bytes + (k - i) * BR_XFER__BUNDLE_HDR)
        br_xfer__bundle_reserve(out, n - i, left + 2 * BR_XFER__DIO_ALIGN);
      left -= left < (size_t)sent ? left : (size_t)sent;
      if (hot ? copy_run(bd, hot, &locs[i], &ds[i], k - i, zstd, &hot_used)
              : read_run(out, pfd, &direct, &locs[i], &ds[i], k - i, bytes, zstd)) {
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        msg = "reading a chunk failed";
      }
      i = k;
      continue;
    }
    int fd;
    loc one = {.rel = ""};
    if (br_xfer__store_open_object(&d->store, &ds[i], &fd, &one.off, &one.len, &one.raw)) {
      status = MHD_HTTP_NOT_FOUND;
      msg = "chunk not in the depot";
      break;
    }
    total += out_bytes(&one, zstd);
    if (total > d->max_request || one.len > BR_XFER__MAX_CHUNK || one.raw > BR_XFER__MAX_CHUNK) {
      close(fd);
      status = MHD_HTTP_CONTENT_TOO_LARGE;
      msg = "fetch asks for too many bytes at once";
      break;
    }
    bool no_direct = false;
    uint8_t *slot = one.raw > 0 ? NULL : br_xfer__bundle_slot(out, (size_t)one.len);
    if (one.raw > 0 ? read_stored(out, fd, &no_direct, &one, &ds[i], zstd) != 0
                    : !slot || br_xfer__pread_all(fd, slot, (size_t)one.len, one.off) ||
                          br_xfer__bundle_put(out, &ds[i], (size_t)one.len, zstd, NULL)) {
      status = MHD_HTTP_INTERNAL_SERVER_ERROR;
      msg = "reading a chunk failed";
    }
    close(fd);
    i++;
  }
  if (pfd >= 0) close(pfd);
  if (body_done_with(bd, hot, hot_used)) {
    status = MHD_HTTP_SERVICE_UNAVAILABLE;
    msg = "out of memory";
  }
  free(locs);
  free(ds);
  /* Counted as if copied: a pack dropped from the cache while its bytes
   * are sent stays in memory until then. */
  if (!msg && !charge(d, rq, (int64_t)(out->len + bd->by_ref))) {
    status = MHD_HTTP_SERVICE_UNAVAILABLE;
    msg = "depot busy: too much data in flight";
  }
  if (msg) {
    body_free(bd);
    return reply_error(c, status, msg);
  }
  return reply_body(c, bd);
}

/* Whether every page of fd's bytes [off, off + len) is in the page cache
 * (cachestat, else mincore on a mapping: reading a byte to find out would
 * start a read-ahead). Unknown counts as cached. */
static bool cached(int fd, int64_t off, uint64_t len) {
  int known = br_xfer__cached(fd, off, (int64_t)len);
  if (known >= 0) return known;
  long pg = sysconf(_SC_PAGESIZE);
  int64_t a = off & ~(int64_t)(pg - 1);
  size_t span = (size_t)(off - a) + (size_t)len, npages = (span + (size_t)pg - 1) / (size_t)pg;
  void *m = mmap(NULL, span, PROT_READ, MAP_SHARED, fd, a);
  if (m == MAP_FAILED) return true;
  unsigned char vec[2048], *v = npages <= sizeof vec ? vec : malloc(npages);
  bool all = true;
  if (v && mincore(m, span, v) == 0) {
    for (size_t i = 0; i < npages && all; i++) all = v[i] & 1;
  }
  if (v != vec) free(v);
  munmap(m, span);
  return all;
}

/* A chunk not in the page cache is read through it all the same, with
 * the kernel's read-ahead: on this VM's disk that took cold chunks 2.5
 * times as fast as direct reads (of 1 MiB or 16 MiB, one or eight in
 * flight), and a pull of 2 x 2 GiB from a cold depot took 4.3-4.8 s in
 * place of 4.9-6.6 s. Each read goes straight into MHD's send buffer, and
 * its pages leave the cache behind it, as a direct read would have left
 * them: a pull of a show's caches must not push the depot's hot objects
 * out, and pages given back at once are what the next read takes, where
 * fresh ones each cost a fault in the VM's host (free page reporting).
 * (sendfile would copy nothing, but its pages are held by the socket, the
 * last few MiB of every chunk, and cannot be dropped when it ends.) A
 * cached chunk goes out with sendfile. */
#define COLD_BLOCK (256 * 1024) /* MHD's send buffer for a cold chunk */

typedef struct cold {
  int fd;
  int64_t base, len; /* the body: the file's bytes [base, base + len) */
} cold;

/* The whole pages of the body before the file's byte end leave the cache.
 * From the body's first byte each time: the page cache holds large folios
 * (16 KiB and more), and one is dropped only when the range holds all of
 * it, so a folio cut by the last drop's end goes with a later one. */
static void cold_drop(const cold *s, int64_t end) {
  posix_fadvise(s->fd, s->base, end - s->base, POSIX_FADV_DONTNEED);
}

static ssize_t cold_read(void *cls, uint64_t pos, char *out, size_t max) {
  cold *s = cls;
  int64_t f = s->base + (int64_t)pos;
  ssize_t r;
  do r = pread(s->fd, out, max, f);
  while (r < 0 && errno == EINTR);
  if (r <= 0) return MHD_CONTENT_READER_END_WITH_ERROR;
  cold_drop(s, f + r);
  return r;
}

static void cold_free(void *cls) {
  cold *s = cls;
  cold_drop(s, s->base + s->len);
  close(s->fd);
  free(s);
}

/* The body: len bytes of fd from off (fd is closed with the response);
 * NULL when MHD has no memory. */
static struct MHD_Response *chunk_body(int fd, int64_t off, uint64_t len) {
  if (len >= COLD_BLOCK && !cached(fd, off, len)) {
    cold *s = malloc(sizeof *s);
    struct MHD_Response *r =
        s ? MHD_create_response_from_callback(len, COLD_BLOCK, cold_read, s, cold_free) : NULL;
    if (r) {
      *s = (cold){fd, off, (int64_t)len};
      posix_fadvise(fd, off, (off_t)len, POSIX_FADV_SEQUENTIAL);
      return r;
    }
    free(s);
  }
  struct MHD_Response *r = MHD_create_response_from_fd_at_offset64(len, fd, (uint64_t)off);
  if (!r) close(fd);
  return r;
}

/* Whether the request's Accept-Encoding names zstd (with no q=0). */
static bool takes_zstd(struct MHD_Connection *c) {
  const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept-Encoding");
  while (v && *v) {
    while (*v == ' ' || *v == '\t' || *v == ',') v++;
    size_t n = strcspn(v, ",");
    size_t name = strcspn(v, ";, \t");
    if (name == 4 && strncasecmp(v, "zstd", 4) == 0) {
      const char *q = memchr(v, ';', n);
      if (!q) return true;
      q++;
      while (*q == ' ') q++;
      return !(strncasecmp(q, "q=0", 3) == 0 && strspn(q + 3, ".0") == strcspn(q + 3, ", \t"));
    }
    v += n;
  }
  return false;
}

/* Whether the request has no Range, or one from byte 0. */
static bool range_from_start(struct MHD_Connection *c) {
  const char *range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range");
  return !range || strncmp(range, "bytes=0-", 8) == 0;
}

static enum MHD_Result do_chunk(br_depot *d, struct MHD_Connection *c, request *rq,
                                const char *hex) {
  br_xfer_digest dg;
  if (br_xfer_digest_parse(hex, &dg)) return reply_error(c, MHD_HTTP_BAD_REQUEST, "bad digest");
  int fd;
  loc one = {.rel = ""};
  if (br_xfer__store_open_object(&d->store, &dg, &fd, &one.off, &one.len, &one.raw))
    return reply_error(c, MHD_HTTP_NOT_FOUND, "chunk not in the depot");
  /* A chunk stored compressed is answered from its raw bytes, or as its
   * frame to a client that takes zstd and asks from the first byte. */
  br_xfer__buf raw = {0};
  bool framed = one.raw > 0 && one.len < one.raw && takes_zstd(c) && range_from_start(c);
  if (one.raw > 0) {
    bool no_direct = false;
    int rc = one.raw > BR_XFER__MAX_CHUNK || !charge(d, rq, one.raw + one.len)
                 ? -ENOMEM
                 : read_stored(&raw, fd, &no_direct, &one, &dg, framed);
    close(fd);
    fd = -1;
    if (rc) {
      br_xfer__buf_free(&raw);
      return reply_error(c,
                         rc == -ENOMEM ? MHD_HTTP_SERVICE_UNAVAILABLE
                                       : MHD_HTTP_INTERNAL_SERVER_ERROR,
                         rc == -ENOMEM ? "depot busy: too much data in flight"
                                       : "reading a chunk failed");
    }
  }
  if (framed) { /* raw holds one bundle entry: its header, then the frame */
    struct MHD_Response *r = pooled_response(&raw, BR_XFER__BUNDLE_HDR);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Encoding", "zstd");
    MHD_add_response_header(r, "Vary", "Accept-Encoding");
    return queue_octets(c, r);
  }
  int64_t off = one.off, size = one.raw > 0 ? one.raw : one.len;
  const char *range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range");
  int64_t from = 0, to = size - 1;
  unsigned status = MHD_HTTP_OK;
  if (range) {
    long long a = -1, b = -1;
    char tail = 0;
    int k = sscanf(range, "bytes=%lld-%lld%c", &a, &b, &tail);
    if (k == 1 && range[strlen(range) - 1] == '-') b = size - 1;
    if (k < 1 || k > 2 || a < 0 || b < a || a >= size) {
      if (fd >= 0) close(fd);
      br_xfer__buf_free(&raw);
      char *cr = NULL;
      if (asprintf(&cr, "bytes */%lld", (long long)size) < 0) return MHD_NO;
      struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
      MHD_add_response_header(r, "Content-Range", cr);
      free(cr);
      enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_RANGE_NOT_SATISFIABLE, r);
      MHD_destroy_response(r);
      return ret;
    }
    if (b >= size) b = size - 1;
    from = a;
    to = b;
    status = MHD_HTTP_PARTIAL_CONTENT;
  }
  uint64_t len = size ? (uint64_t)(to - from + 1) : 0;
  struct MHD_Response *r;
  if (one.raw > 0) { /* raw holds one bundle entry: its header, then the bytes */
    r = MHD_create_response_from_buffer((size_t)len,
                                        raw.data + BR_XFER__BUNDLE_HDR + (size_t)from,
                                        MHD_RESPMEM_MUST_COPY);
    br_xfer__buf_free(&raw);
  } else {
    r = chunk_body(fd, off + from, len);
  }
  if (!r) return MHD_NO;
  MHD_add_response_header(r, "Content-Type", "application/octet-stream");
  MHD_add_response_header(r, "Accept-Ranges", "bytes");
  if (status == MHD_HTTP_PARTIAL_CONTENT) {
    char cr[96];
    snprintf(cr, sizeof cr, "bytes %lld-%lld/%lld", (long long)from, (long long)to,
             (long long)size);
    MHD_add_response_header(r, "Content-Range", cr);
  }
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

/* A manifest byte for byte the latest version's (a push where nothing
 * changed) is committed as it is: that version was checked when it came,
 * and its chunks are still there (a gc removes none while the lock is held
 * here). Parsing and checking 10,000 entries again is most of what such a
 * push costs. 1 committed (*version; *prev the version it repeats), 0 not
 * the same (or unknown: the caller checks it the long way), or an error. */
static int commit_if_same(br_depot *d, const char *name, const char *body, size_t len,
                          int64_t *version, int64_t *prev, br_error *err) {
  int lock = br_xfer__store_lock(&d->store, false);
  if (lock < 0) return 0;
  char *old = NULL;
  size_t olen = 0;
  int64_t found = 0;
  br_error gerr = {0};
  int rc = 0;
  if (br_xfer__store_get(&d->store, name, 0, &old, &olen, &found, &gerr) == BR_OK &&
      olen == len && memcmp(old, body, len) == 0) {
    rc = br_xfer__store_commit(&d->store, name, body, len, version, err);
    if (rc == BR_OK) rc = 1;
    *prev = found;
  }
  free(old);
  br_xfer__store_unlock(lock);
  return rc;
}

static enum MHD_Result do_commit(br_depot *d, struct MHD_Connection *c, request *rq,
                                 const char *name) {
  br_error err = {0};
  if (!name || br_xfer_name_check(name, &err))
    return reply_error(c, MHD_HTTP_BAD_REQUEST, name ? err.msg : "no name");
  if ((int64_t)rq->body.len > d->max_manifest)
    return reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "manifest too large");
  int64_t same_v = 0, prev_v = 0;
  int same = commit_if_same(d, name, (const char *)rq->body.data, rq->body.len, &same_v, &prev_v,
                            &err);
  if (same < 0) return reply_error(c, (unsigned)status_of(err.code), err.msg);
  if (same) {
    note_change(d, c, "%s@v%lld committed: the same as v%lld (nothing changed)", name,
                (long long)same_v, (long long)prev_v);
    return reply_json(c, MHD_HTTP_OK, json_pack("{sIsI}", "version", (json_int_t)same_v, "same_as",
                                                (json_int_t)prev_v));
  }
  br_xfer_manifest *m = NULL;
  if (br_xfer_manifest_parse((const char *)rq->body.data, rq->body.len, &m, &err))
    return reply_error(c, MHD_HTTP_BAD_REQUEST, err.msg);
  int64_t nfiles, bytes;
  br_xfer__manifest_totals(m, &nfiles, &bytes);
  /* A snapshot must never name a chunk the depot lacks: the check and the
   * commit hold the gc lock, so no gc removes a chunk between them. */
  int lock = br_xfer__store_lock(&d->store, false);
  if (lock < 0) {
    br_xfer_manifest_free(m);
    return reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "depot lock unavailable");
  }
  json_t *missing = json_array();
  char hex[BR_XFER_HEX_LEN + 1];
  br_xfer__index_batch_begin(&d->store);
  for (size_t i = 0; i < m->nentries && json_array_size(missing) < 1000; i++)
    for (size_t k = 0; k < m->entries[i].nchunks; k++)
      if (!br_xfer__store_has(&d->store, &m->entries[i].chunks[k])) {
        br_xfer_digest_hex(&m->entries[i].chunks[k], hex);
        json_array_append_new(missing, json_string(hex));
      }
  br_xfer__index_batch_end(&d->store);
  br_xfer_manifest_free(m);
  if (json_array_size(missing)) {
    br_xfer__store_unlock(lock);
    return reply_json(c, MHD_HTTP_CONFLICT,
                      json_pack("{ss so}", "error", "snapshot names missing chunks",
                                "missing", missing));
  }
  json_decref(missing);
  int64_t v = 0;
  int rc = br_xfer__store_commit(&d->store, name, (const char *)rq->body.data, rq->body.len, &v,
                                 &err);
  br_xfer__store_unlock(lock);
  if (rc) return reply_error(c, (unsigned)status_of(err.code), err.msg);
  note_change(d, c, "%s@v%lld committed: %lld files, %lld bytes", name, (long long)v,
              (long long)nfiles, (long long)bytes);
  return reply_json(c, MHD_HTTP_OK, json_pack("{sI}", "version", (json_int_t)v));
}

static enum MHD_Result do_get(br_depot *d, struct MHD_Connection *c, const char *name) {
  br_error err = {0};
  if (!name) return reply_error(c, MHD_HTTP_BAD_REQUEST, "no name");
  const char *vs = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "version");
  int64_t v = 0;
  if (vs && strcmp(vs, "latest") != 0) {
    char *end;
    v = strtoll(vs, &end, 10);
    if (*end || v <= 0) return reply_error(c, MHD_HTTP_BAD_REQUEST, "bad version");
  }
  char *json;
  size_t len;
  int64_t found;
  if (br_xfer__store_get(&d->store, name, v, &json, &len, &found, &err))
    return reply_error(c, (unsigned)status_of(err.code), err.msg);
  char vbuf[32];
  snprintf(vbuf, sizeof vbuf, "%lld", (long long)found);
  return reply(c, MHD_HTTP_OK, "application/json", json, len, "X-Braid-Version", vbuf);
}

/* {"versions":[{"name":N,"version":V}...]}: removes each; those removed are
 * listed even when another fails (the first failure gives the status, every
 * failure is named in the error). */
static enum MHD_Result do_admin_rm(br_depot *d, struct MHD_Connection *c, request *rq) {
  json_t *root = json_loadb((const char *)rq->body.data, rq->body.len, 0, NULL);
  json_t *list = json_object_get(root, "versions");
  size_t n = json_array_size(list);
  bool ok = json_is_array(list) && n > 0;
  for (size_t i = 0; ok && i < n; i++) {
    json_t *e = json_array_get(list, i);
    json_t *v = json_object_get(e, "version");
    ok = json_is_string(json_object_get(e, "name")) && json_is_integer(v) &&
         json_integer_value(v) > 0;
  }
  if (!ok) {
    json_decref(root);
    return reply_error(c, MHD_HTTP_BAD_REQUEST,
                       "expected {\"versions\":[{\"name\":NAME,\"version\":N},...]}");
  }
  json_t *removed = json_array();
  br_xfer__buf errs = {0};
  unsigned status = 0;
  for (size_t i = 0; i < n; i++) {
    json_t *e = json_array_get(list, i);
    const char *name = json_string_value(json_object_get(e, "name"));
    int64_t v = (int64_t)json_integer_value(json_object_get(e, "version"));
    br_error err;
    br_error_clear(&err);
    /* br_depot_rm's work on the depot's open store */
    if (br_xfer__store_rm(&d->store, name, v, &err) == BR_OK) {
      note_change(d, c, "%s@v%lld removed", name, (long long)v);
      json_array_append_new(removed, json_pack("{ss sI}", "name", name, "version", (json_int_t)v));
      continue;
    }
    if (!status) status = (unsigned)status_of(err.code);
    if (errs.len) br_xfer__buf_append(&errs, "; ", 2);
    br_xfer__buf_append(&errs, err.msg, strlen(err.msg));
  }
  json_decref(root);
  if (!status) return reply_json(c, MHD_HTTP_OK, json_pack("{so}", "removed", removed));
  json_t *o = json_pack("{s:s%, s:o}", "error", errs.len ? (const char *)errs.data : "",
                        errs.len, "removed", removed);
  br_xfer__buf_free(&errs);
  return reply_json(c, status, o);
}

/* A body whose members are all optional: parsed, an empty object when
 * there is none, NULL when it is not JSON. */
static json_t *body_or_empty(const request *rq) {
  return rq->body.len ? json_loadb((const char *)rq->body.data, rq->body.len, 0, NULL)
                      : json_object();
}

/* {"grace_s":S,"dry_run":b} (both optional: a day, false): br_depot_gc on
 * the depot's root, in this connection's thread however long it takes. */
static enum MHD_Result do_admin_gc(br_depot *d, struct MHD_Connection *c, request *rq) {
  json_t *root = body_or_empty(rq);
  json_t *g = json_object_get(root, "grace_s"), *dry = json_object_get(root, "dry_run");
  const char *bad = NULL;
  if (!json_is_object(root)) bad = "expected {\"grace_s\":SECONDS,\"dry_run\":BOOL}";
  else if (g && (!json_is_integer(g) || json_integer_value(g) < 0))
    bad = "grace_s must be a number of seconds, 0 or more";
  else if (dry && !json_is_boolean(dry)) bad = "dry_run must be true or false";
  int64_t grace = g ? (int64_t)json_integer_value(g) : 86400;
  bool dry_run = json_is_true(dry);
  json_decref(root);
  if (bad) return reply_error(c, MHD_HTTP_BAD_REQUEST, bad);
  br_error err;
  br_error_clear(&err);
  br_depot_gc_result r;
  if (br_depot_gc(d->store.root, grace, dry_run, &r, &err))
    return reply_error(c, (unsigned)status_of(err.code), err.msg);
  if (dry_run)
    note_change(d, c,
                "gc --dry-run (grace %lld s), nothing removed: it would remove %lld objects and "
                "free %lld bytes; packs: %lld to remove, %lld to rewrite; %lld unnamed younger "
                "than the grace",
                (long long)grace, (long long)r.objects_removed, (long long)r.bytes_freed,
                (long long)r.packs_removed, (long long)r.packs_rewritten, (long long)r.kept_young);
  else
    note_change(d, c,
                "gc (grace %lld s): %lld objects removed, %lld bytes freed; packs: %lld "
                "removed, %lld rewritten; %lld unnamed kept as younger than the grace",
                (long long)grace, (long long)r.objects_removed, (long long)r.bytes_freed,
                (long long)r.packs_removed, (long long)r.packs_rewritten, (long long)r.kept_young);
  return reply_json(c, MHD_HTTP_OK,
                    json_pack("{sb sI sI sI sI sI sI sI}", "dry_run", dry_run, "snapshots",
                              (json_int_t)r.snapshots, "live_chunks", (json_int_t)r.live_chunks,
                              "objects_removed", (json_int_t)r.objects_removed, "packs_removed",
                              (json_int_t)r.packs_removed, "packs_rewritten",
                              (json_int_t)r.packs_rewritten, "bytes_freed",
                              (json_int_t)r.bytes_freed, "kept_young", (json_int_t)r.kept_young));
}

/* {"name":N,"detail":b} (both optional: all names, no detail):
 * br_depot_list on the depot's root. */
static enum MHD_Result do_list(br_depot *d, struct MHD_Connection *c, request *rq) {
  json_t *root = body_or_empty(rq);
  json_t *nm = json_object_get(root, "name"), *det = json_object_get(root, "detail");
  const char *bad = NULL;
  if (!json_is_object(root)) bad = "expected {\"name\":NAME,\"detail\":BOOL}";
  else if (nm && !json_is_string(nm)) bad = "name must be a string";
  else if (det && !json_is_boolean(det)) bad = "detail must be true or false";
  if (bad) {
    json_decref(root);
    return reply_error(c, MHD_HTTP_BAD_REQUEST, bad);
  }
  br_error err;
  br_error_clear(&err);
  br_depot_entry *v = NULL;
  size_t n = 0;
  int rc = br_depot_list(d->store.root, json_string_value(nm), json_is_true(det), &v, &n, &err);
  json_decref(root);
  if (rc) return reply_error(c, (unsigned)status_of(err.code), err.msg);
  json_t *arr = json_array();
  for (size_t i = 0; arr && i < n; i++)
    if (json_array_append_new(arr, json_pack("{ss sI sI sI sI}", "name", v[i].name, "version",
                                             (json_int_t)v[i].version, "time",
                                             (json_int_t)v[i].time, "files",
                                             (json_int_t)v[i].files, "bytes",
                                             (json_int_t)v[i].bytes)) != 0) {
      json_decref(arr);
      arr = NULL;
    }
  br_depot_list_free(v, n);
  if (!arr) return reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
  return reply_json(c, MHD_HTTP_OK, json_pack("{so}", "versions", arr));
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version,
                               const char *upload_data, size_t *upload_data_size,
                               void **con_cls) {
  br_depot *d = cls;
  request *rq = *con_cls;
  if (!rq) {
    rq = calloc(1, sizeof *rq);
    if (!rq) return MHD_NO;
    *con_cls = rq;
    rq->d = d;
    br_depot_access access = access_of(url, method);
    rq->limit = strcmp(url, "/v1/snapshot") == 0 ? d->max_manifest
                : access == BR_DEPOT_ADMIN       ? MAX_ADMIN_REQUEST
                                                 : d->max_request;
    rq->upload = strcmp(method, "POST") == 0 && strcmp(url, "/v1/chunks") == 0;
    /* The sender found that its plain chunks do not compress: the index
     * says so (raw < 0), and fetches that ask for zstd do not try again. */
    const char *plain = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "plain");
    rq->plain_raw = plain && strcmp(plain, "incompressible") == 0 ? -1 : 0;
    unsigned refused = authorised(d, c, access);
    if (refused) {
      rq->reject = (int)refused;
      rq->reject_msg = refused == MHD_HTTP_FORBIDDEN ? forbidden_msg(d, access)
                                                     : "missing or wrong token";
    } else {
      const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
      long long n = cl ? strtoll(cl, NULL, 10) : 0;
      if (n > rq->limit) {
        rq->reject = MHD_HTTP_CONTENT_TOO_LARGE;
        rq->reject_msg = "request body too large";
      } else if (n > 0 && !charge(d, rq, n)) {
        rq->reject = MHD_HTTP_SERVICE_UNAVAILABLE; /* clients retry later */
        rq->reject_msg = "depot busy: too much data in flight";
      } else if (n > 0 && br_xfer__buf_reserve(&rq->body, (size_t)n)) {
        rq->reject = MHD_HTTP_SERVICE_UNAVAILABLE;
        rq->reject_msg = "out of memory";
      }
      rq->expect = n > 0 ? (size_t)n : 0;
    }
    /* Refuse before reading a body we will not use. */
    if (rq->reject) return reply_error(c, (unsigned)rq->reject, rq->reject_msg);
    return MHD_YES;
  }
  if (*upload_data_size) {
    if (!rq->reject) {
      int64_t beyond = (int64_t)(rq->body.len + *upload_data_size) - rq->charged;
      if ((int64_t)(rq->body.len + *upload_data_size) > rq->limit) {
        rq->reject = MHD_HTTP_CONTENT_TOO_LARGE;
        rq->reject_msg = "request body too large";
        rq_body_free(rq);
      } else if (beyond > 0 && !charge(d, rq, beyond)) { /* no Content-Length */
        rq->reject = MHD_HTTP_SERVICE_UNAVAILABLE;
        rq->reject_msg = "depot busy: too much data in flight";
        rq_body_free(rq);
      } else {
        rq_body_align(rq, upload_data, *upload_data_size);
        if (rq_body_append(rq, upload_data, *upload_data_size)) {
          rq->reject = MHD_HTTP_SERVICE_UNAVAILABLE;
          rq->reject_msg = "out of memory";
          rq_body_free(rq);
        }
      }
    }
    *upload_data_size = 0;
    return MHD_YES;
  }
  if (rq->reject) return reply_error(c, (unsigned)rq->reject, rq->reject_msg);
  bool post = strcmp(method, "POST") == 0, get = strcmp(method, "GET") == 0;
  const char *name = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "name");
  if (post && strcmp(url, "/v1/missing") == 0) return do_missing(d, c, rq);
  if (post && strcmp(url, "/v1/verify") == 0) return do_verify(d, c, rq);
  if (post && strcmp(url, "/v1/chunks") == 0) return do_upload(d, c, rq);
  if (post && strcmp(url, "/v1/fetch") == 0) return do_fetch(d, c, rq);
  if (get && strncmp(url, "/v1/chunk/", 10) == 0) return do_chunk(d, c, rq, url + 10);
  if (post && strcmp(url, "/v1/snapshot") == 0) return do_commit(d, c, rq, name);
  if (get && strcmp(url, "/v1/snapshot") == 0) return do_get(d, c, name);
  if (post && strcmp(url, "/v1/admin/rm") == 0) return do_admin_rm(d, c, rq);
  if (post && strcmp(url, "/v1/admin/gc") == 0) return do_admin_gc(d, c, rq);
  if (post && strcmp(url, "/v1/list") == 0) return do_list(d, c, rq);
  return reply_error(c, MHD_HTTP_NOT_FOUND, "no such endpoint");
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe) {
  br_depot_request_done(con_cls);
}

int br_depot_owns_url(const char *url) {
  return url && (strcmp(url, "/v1/missing") == 0 || strcmp(url, "/v1/verify") == 0 ||
                 strcmp(url, "/v1/chunks") == 0 ||
                 strcmp(url, "/v1/fetch") == 0 || strcmp(url, "/v1/snapshot") == 0 ||
                 strncmp(url, "/v1/chunk/", 10) == 0 || strcmp(url, "/v1/admin/rm") == 0 ||
                 strcmp(url, "/v1/admin/gc") == 0 || strcmp(url, "/v1/list") == 0);
}

int br_depot_handle(br_depot *d, struct MHD_Connection *c, const char *url, const char *method,
                    const char *upload_data, size_t *upload_data_size, void **con_cls) {
  return handler(d, c, url, method, "HTTP/1.1", upload_data, upload_data_size, con_cls) ==
                 MHD_YES
             ? 1
             : 0;
}

void br_depot_request_done(void **con_cls) {
  request *rq = *con_cls;
  if (!rq) return;
  if (rq->upload && !rq->handled && !rq->reject && rq->body.len) salvage_upload(rq->d, rq);
  if (rq->charged) {
    pthread_mutex_lock(&rq->d->mem_mu);
    rq->d->buffered -= rq->charged;
    pthread_mutex_unlock(&rq->d->mem_mu);
  }
  rq_body_free(rq);
  free(rq);
  *con_cls = NULL;
}

/* Temporary files older than an hour are left-overs of a crash: no write
 * takes that long. Younger ones may belong to another depot on this root. */
static void clean_tmp(br_xfer__store *s) {
  int fd = openat(s->rootfd, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  DIR *dir = fdopendir(fd);
  if (!dir) {
    close(fd);
    return;
  }
  time_t now = time(NULL);
  struct dirent *de;
  while ((de = readdir(dir))) {
    struct stat st;
    if (de->d_name[0] == '.') continue;
    if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
        now - st.st_mtime > 3600)
      unlinkat(fd, de->d_name, 0);
  }
  closedir(dir);
}

int br_depot_open(const br_depot_opts *opts, br_depot **out, br_error *err) {
  *out = NULL;
  if (!opts->root || !*opts->root) return br_error_set(err, BR_EINVAL, "depot: no --root");
  if ((!opts->token_file || !*opts->token_file) && !opts->authorize)
    return br_error_set(err, BR_EINVAL, "depot: a token file is required");
  br_depot *d = calloc(1, sizeof *d);
  if (!d) return br_error_set(err, BR_ENOMEM, "out of memory");
  d->max_request = opts->max_request > 0 ? opts->max_request : DEFAULT_MAX_REQUEST;
  d->max_manifest = opts->max_manifest > 0 ? opts->max_manifest : BR_XFER_MAX_MANIFEST_BYTES;
  d->max_buffered = opts->max_memory > 0 ? opts->max_memory : (int64_t)1 << 30;
  pthread_mutex_init(&d->mem_mu, NULL);
  d->authorize = opts->authorize;
  d->authorize_ud = opts->authorize_ud;
  d->log = opts->log;
  d->log_ud = opts->log_ud;
  int rc = d->authorize ? BR_OK : br_xfer__tokens_load(&d->tokens, opts->token_file, opts->warn,
                                                                 opts->warn_ud, err);
  if (rc) {
    free(d);
    return rc;
  }
  if (!d->authorize && opts->admin_token_file && *opts->admin_token_file) {
    rc = br_xfer__tokens_load(&d->admin_tokens, opts->admin_token_file, opts->warn,
                              opts->warn_ud, err);
    if (rc) {
      br_xfer__tokens_free(&d->tokens);
      free(d);
      return rc;
    }
    d->has_admin = true;
  }
  rc = br_xfer__store_open(&d->store, opts->root, err);
  if (rc) {
    br_xfer__tokens_free(&d->tokens);
    br_xfer__tokens_free(&d->admin_tokens);
    free(d);
    return rc;
  }
  clean_tmp(&d->store);
  br_xfer__pack_clean(&d->store, false, NULL);
  d->cache = br_xfer__pcache_new(opts->cache ? opts->cache : BR_DEPOT_CACHE_DEFAULT,
                                 BR_XFER__PCACHE_IDLE);
  *out = d;
  return BR_OK;
}

int br_depot_start(const br_depot_opts *opts, br_depot **out, br_error *err) {
  *out = NULL;
  char deflt[32];
  snprintf(deflt, sizeof deflt, "127.0.0.1:%d", BR_XFER_DEPOT_PORT);
  const char *listen = opts->listen && *opts->listen ? opts->listen : deflt;
  char host[64];
  const char *colon = strrchr(listen, ':');
  if (!colon || (size_t)(colon - listen) >= sizeof host)
    return br_error_set(err, BR_EINVAL, "depot: --listen wants HOST:PORT, got '%s'", listen);
  memcpy(host, listen, (size_t)(colon - listen));
  host[colon - listen] = 0;
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || colon[1] == 0 || port < 0 || port > 65535)
    return br_error_set(err, BR_EINVAL, "depot: bad port in '%s'", listen);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
    return br_error_set(err, BR_EINVAL, "depot: '%s' is not an IPv4 address", host);
  /* The address tried before the root is opened: a depot that cannot
   * listen makes no depot where there was none (the real bind follows). */
  int probe = port ? socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) : -1, one = 1;
  if (probe >= 0) {
    setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int bound = bind(probe, (struct sockaddr *)&sa, sizeof sa), e = errno;
    close(probe);
    if (bound != 0)
      return br_error_set(err, BR_ENET, "depot: cannot listen on %s: %s", listen, strerror(e));
  }
  br_depot *d = NULL;
  int rc = br_depot_open(opts, &d, err);
  if (rc) return rc;
  d->mhd = MHD_start_daemon(
      MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL,
      (uint16_t)port, NULL, NULL, handler, d, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
      MHD_OPTION_NOTIFY_COMPLETED, completed, d, MHD_OPTION_CONNECTION_TIMEOUT,
      (unsigned int)120, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)512,
      /* bodies arrive in large reads, not 16 KiB ones */
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(512 * 1024),
      MHD_OPTION_END);
  if (!d->mhd) {
    int e = errno;
    br_depot_stop(d);
    return br_error_set(err, BR_ENET, "depot: cannot listen on %s%s%s", listen, e ? ": " : "",
                        e ? strerror(e) : "");
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(d->mhd, MHD_DAEMON_INFO_BIND_PORT);
  d->port = info ? info->port : (int)port;
  *out = d;
  return BR_OK;
}

int br_depot_port(const br_depot *d) { return d->port; }

void br_depot_stop(br_depot *d) {
  if (!d) return;
  if (d->mhd) MHD_stop_daemon(d->mhd);
  br_xfer__store_close(&d->store);
  br_xfer__tokens_free(&d->tokens);
  br_xfer__tokens_free(&d->admin_tokens);
  pthread_mutex_destroy(&d->mem_mu);
  br_xfer__pcache_free(d->cache);
  free(d);
}

void br_depot_cache_stats_get(br_depot *d, br_depot_cache_stats *st) {
  br_xfer__pcache_stats_get(d->cache, st);
}

int br_depot_fsck(const char *root, int64_t *checked, br_error *err) {
  int64_t damaged = 0;
  return br_depot_fsck_ex(root, false, NULL, NULL, checked, &damaged, err);
}

int br_depot_fsck_ex(const char *root, bool set_aside, void (*each)(void *ud, const char *what),
                     void *ud, int64_t *checked, int64_t *damaged, br_error *err) {
  br_xfer__store s;
  *checked = 0;
  *damaged = 0;
  if (br_xfer__depot_root_check(root, err)) return BR_ENOTFOUND;
  int rc = br_xfer__store_open(&s, root, err);
  if (rc) return rc;
  rc = br_xfer__store_fsck_ex(&s, set_aside, each, ud, checked, damaged, err);
  br_xfer__store_close(&s);
  return rc;
}
