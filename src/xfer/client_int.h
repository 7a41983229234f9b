/* The client's request engine (client.c), shared by push.c and pull.c: a
 * libcurl multi handle with a queue of requests, a bound on requests in
 * flight, retries with exponential backoff and jitter for transient errors,
 * a shared bandwidth bucket, Range checking, cancel and progress. */
#ifndef BR_XFER_CLIENT_INT_H
#define BR_XFER_CLIENT_INT_H

#include "xfer_int.h"

#include <curl/curl.h>

/* Returned by a done callback when the response was wrong in a way a new
 * attempt may fix (digest mismatch, bad bundle): the request is retried. */
#define BR_XFER__RETRY 1

typedef struct br_xfer__req br_xfer__req;
typedef struct br_xfer__engine br_xfer__engine;

/* Bytes kept elsewhere that a request body takes in by reference, inserted
 * at offset at of the body buffer (see br_xfer__req_ref). */
typedef struct br_xfer__ref_seg {
  const uint8_t *data;
  size_t at, len;
} br_xfer__ref_seg;

struct br_xfer__req {
  /* Set by the submitter. */
  char *url;              /* owned, freed with the request */
  bool post;
  const char *content_type;
  /* Builds the body at launch, so a request holds memory only in flight. */
  int (*build)(br_xfer__req *r, br_xfer__buf *body, br_error *err);
  /* 2xx response: BR_OK (request done), BR_XFER__RETRY, or a negative code. */
  int (*done)(br_xfer__req *r, br_error *err);
  /* A transfer failed mid-body: keep what verified (may be NULL). */
  void (*salvage)(br_xfer__req *r);
  void (*destroy)(br_xfer__req *r); /* frees ctx (may be NULL) */
  /* A 4xx answer that is not retried: BR_OK takes it as handled (the
   * request is done), anything else fails the run as usual (may be NULL). */
  int (*refused)(br_xfer__req *r, long status, br_error *err);
  /* Streams a 2xx body instead of keeping it in resp (may be NULL); a
   * non-zero return (with sink_err filled) fails the whole run. */
  int (*sink)(br_xfer__req *r, const uint8_t *data, size_t len);
  /* A new attempt starts from the first byte again (may be NULL). */
  void (*restart)(br_xfer__req *r);
  /* The whole body is with curl, so the bytes it took by reference may go
   * (may be NULL); a new attempt builds the body again. */
  void (*body_sent)(br_xfer__req *r);
  br_error sink_err;
  bool sink_failed;
  int64_t received; /* body bytes accepted, over attempts that resume */
  void *ctx;
  int64_t range_from, range_to, range_total; /* range_from < 0: no Range */
  /* A ranged request from its first byte that takes, in place of the
   * range, the whole object as one zstd frame (a 200 with Content-Encoding:
   * zstd): such a body is kept in resp, not streamed, and zstd_body says
   * that it came so. */
  bool accept_zstd, zstd_body;
  size_t resp_limit;
  size_t resp_hint; /* expected response size: reserved up front */
  /* Response, for the callbacks. */
  br_xfer__buf resp;
  long status;
  char content_range[128];
  int64_t braid_version;
  /* Engine state. */
  br_xfer__engine *eng;
  CURL *easy;
  struct curl_slist *hdrs;
  br_xfer__buf body;
  br_xfer__ref_seg *segs; /* the body's bytes by reference, by offset */
  size_t nsegs, segs_cap, seg_bytes;
  size_t sent;                /* body bytes sent in all... */
  size_t sent_buf, sent_seg;  /* ...of them from the buffer, from segs[seg] */
  size_t seg;
  int attempts;
  double not_before;
  bool checked, bad_range, range_ok, too_big, paused, keep_resp, told_sent;
  int64_t resume; /* bytes of the range already received before this attempt */
  char last_error[256];
  br_xfer__req *next;
};

struct br_xfer__engine {
  CURLM *multi;
  const br_xfer_opts *o;
  char auth[600];
  br_xfer__req *head, *tail; /* waiting to start */
  br_xfer__req **running;
  int nrunning, max_running;
  br_xfer__bucket bucket;
  uint64_t rng;
  int fatal;
  br_error err;
  br_xfer_progress prog;
  double start, last_progress;
  /* the most shown so far: a retry or a refetch takes work back, but what
   * a user was shown never goes backwards (it waits until passed again) */
  int64_t shown_bytes, shown_files;
  /* Called on every turn of the loop (may be NULL); it may submit. */
  void (*tick)(br_xfer__engine *e, void *ud);
  /* While it returns true, run goes on with nothing queued or running:
   * more work is coming (another thread calls br_xfer__engine_wake when
   * it has some). May be NULL. */
  bool (*more)(br_xfer__engine *e, void *ud);
  void *tick_ud;
  uint64_t submitted; /* requests ever submitted */
  /* Progress counts the body bytes of requests not answered yet as done
   * (a push: its data goes in bodies, and an answer may be many MiB
   * away); unanswered is those bytes. */
  bool sent_is_done;
  int64_t unanswered;
};

/* parallel: requests in flight when o->parallel is 0 (the default). */
int br_xfer__engine_init(br_xfer__engine *e, const br_xfer_opts *o, int64_t per_request,
                         int parallel, br_error *err);
void br_xfer__engine_free(br_xfer__engine *e);
/* A new request (calloc'd, range_from = -1); the engine owns it once submitted. */
br_xfer__req *br_xfer__req_new(const char *base, const char *path_and_query);
/* Frees a request never submitted (or done with): its handles, bodies, ctx
 * (through destroy, if set), url. */
void br_xfer__req_free(br_xfer__req *r);
void br_xfer__engine_submit(br_xfer__engine *e, br_xfer__req *r);
/* From a build callback: len bytes at data go into the body here (after
 * what the body buffer holds so far) without a copy. They must stay as
 * they are until the request is done or freed, or its body_sent is called. */
int br_xfer__req_ref(br_xfer__req *r, const void *data, size_t len);
/* The body's length: its buffer's bytes and those it takes by reference. */
size_t br_xfer__req_body_len(const br_xfer__req *r);
/* Copies up to room bytes of the body from where the last read stopped
 * (the buffer's bytes, with the referenced ones at their offsets); gives
 * how many. A new attempt starts again from the first byte. */
size_t br_xfer__req_body_read(br_xfer__req *r, void *dst, size_t room);
/* From any thread: the loop runs its tick now instead of waiting. */
void br_xfer__engine_wake(br_xfer__engine *e);
/* Runs until nothing is queued or running; the first fatal error or a
 * cancel stops everything (BR_ECANCEL). */
int br_xfer__engine_run(br_xfer__engine *e, br_error *err);
/* Records a fatal error from a callback (the first one wins). */
int br_xfer__engine_fail(br_xfer__engine *e, const br_error *err);
void br_xfer__engine_progress(br_xfer__engine *e, bool force);
/* The small files' bytes per bundle when small_bytes of them are to move:
 * the bundle_bytes option (8 MiB by default), or less, so that there are
 * enough bundles to keep every connection busy twice over (but not below
 * 256 KiB). Push and pull cut their bundles by it. */
int64_t br_xfer__engine_bundle_bytes(const br_xfer__engine *e, int64_t small_bytes);
/* Attempts after the first for a transient failure: the retries option,
 * or 6 by default. */
int br_xfer__engine_retries(const br_xfer__engine *e);
/* Enters a phase (scan, hash, send...): a progress line shows it at once. */
void br_xfer__engine_phase(br_xfer__engine *e, const char *phase);
bool br_xfer__cancelled(const br_xfer__engine *e);

#endif
