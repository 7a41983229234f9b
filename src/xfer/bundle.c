/* Bundles: many chunks in one request or response body, so thousands of
 * small files cost a few round trips rather than one each. Every entry names
 * its digest, so the receiver verifies each on its own and keeps the good
 * ones when a body is cut or corrupted. Entries may be zstd-compressed. */
#include "xfer_int.h"

#include <pthread.h>
#include <sys/mman.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define MAGIC "BRB1"
#define HDR BR_XFER__BUNDLE_HDR
#define PROBE 4096 /* bytes compressed to guess whether a chunk compresses */

/* ---- buffers: request and response bodies, packs, push's kept files ----
 * Fresh memory costs a page fault and a page clear per 4 KiB, and glibc
 * gives big blocks back to the kernel when they are freed; bodies of a
 * few MiB, and small files' bytes, come and go by the thousand. So every
 * buffer has a power-of-two capacity from 4 KiB, is 4 KiB aligned (for
 * direct I/O), and is kept for reuse when it is given back, up to
 * POOL_KEEP bytes per process. A full pool makes room for a size asked
 * for now by letting go of sizes asked for longer ago: a process that
 * pushed, then pulls (a depot, a worker), would otherwise keep the push's
 * sizes and take every buffer of the pull fresh from the kernel. */
#define POOL_MIN ((size_t)4096)
#define POOL_CLASSES 16 /* 4 KiB .. 128 MiB */
#define POOL_KEEP ((size_t)128 << 20)
/* From this size, buffers are 2 MiB aligned, so that where the system
 * gives transparent huge pages to all (THP "always") they can have them.
 * They do not ask for them (MADV_HUGEPAGE) where the system leaves it to
 * programs: on a VM whose free memory goes back to the host (free page
 * reporting, as on the machine this was measured on), a huge page is
 * taken from memory the host has to give again, and its first touch cost
 * 4 times more than small pages' (104 MiB: 0.21-0.29 s against
 * 0.05-0.07 s, touched 2 s after the last program let go of its memory);
 * pulls of 10,000 small files were 0.25 s faster without. Memory that
 * stays in the process is what avoids first touches: the pool. */
#define POOL_HUGE ((size_t)2 << 20)

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static void *pool[POOL_CLASSES]; /* a list through the buffers' first bytes */
static size_t pooled;
static uint64_t pool_gets;               /* buffers asked for, all sizes */
static uint64_t last_get[POOL_CLASSES]; /* pool_gets at a size's last ask */

static int pool_class(size_t cap) {
  int k = 0;
  while (k < POOL_CLASSES && (POOL_MIN << k) != cap) k++;
  return k < POOL_CLASSES ? k : -1;
}

size_t br_xfer__mem_cap(size_t size) {
  size_t c = POOL_MIN;
  while (c < size) c *= 2;
  return c;
}

void *br_xfer__mem_get(size_t size, size_t *cap) {
  size_t c = br_xfer__mem_cap(size);
  int k = pool_class(c);
  void *b = NULL;
  if (k >= 0) {
    pthread_mutex_lock(&pool_mu);
    last_get[k] = ++pool_gets;
    if (pool[k]) {
      b = pool[k];
      memcpy(&pool[k], b, sizeof b);
      pooled -= c;
    }
    pthread_mutex_unlock(&pool_mu);
  }
  if (!b) {
    size_t align = c >= POOL_HUGE ? POOL_HUGE : POOL_MIN;
    if (posix_memalign(&b, align, c) != 0) b = NULL;
    /* its pages at once, as many as asked for: one call, not a fault a page
     * as the buffer is filled (about 5% less of the depot's CPU taking
     * 10,000 small files; failing, they fault in as before) */
    if (b && c >= POOL_HUGE)
      madvise(b, (size + POOL_MIN - 1) & ~(POOL_MIN - 1), MADV_POPULATE_WRITE);
  }
  *cap = c;
  return b;
}

void br_xfer__mem_put(void *b, size_t cap) {
  if (!b) return;
  int k = pool_class(cap);
  if (k >= 0) {
    void *let_go = NULL; /* freed after the lock */
    pthread_mutex_lock(&pool_mu);
    while (pooled + cap > POOL_KEEP) { /* room from the size asked for longest ago */
      int v = -1;
      for (int j = 0; j < POOL_CLASSES; j++)
        if (j != k && pool[j] && (v < 0 || last_get[j] < last_get[v])) v = j;
      if (v < 0 || last_get[v] >= last_get[k]) break; /* none older than this one */
      void *x = pool[v];
      memcpy(&pool[v], x, sizeof x);
      pooled -= POOL_MIN << v;
      memcpy(x, &let_go, sizeof x);
      let_go = x;
    }
    bool keep = pooled + cap <= POOL_KEEP;
    if (keep) {
      memcpy(b, &pool[k], sizeof b);
      pool[k] = b;
      pooled += cap;
    }
    pthread_mutex_unlock(&pool_mu);
    while (let_go) {
      void *x = let_go;
      memcpy(&let_go, x, sizeof x);
      free(x);
    }
    if (keep) return;
  }
  free(b);
}

int br_xfer__buf_reserve(br_xfer__buf *b, size_t extra) {
  if (b->len + extra <= b->cap) return BR_OK;
  size_t got;
  uint8_t *p = br_xfer__mem_get(b->len + extra, &got);
  if (!p) return BR_ENOMEM;
  if (b->len) memcpy(p, b->data, b->len);
  br_xfer__mem_put(b->data, b->cap);
  b->data = p;
  b->cap = got;
  return BR_OK;
}

int br_xfer__buf_append(br_xfer__buf *b, const void *data, size_t len) {
  if (br_xfer__buf_reserve(b, len)) return BR_ENOMEM;
  if (len) memcpy(b->data + b->len, data, len);
  b->len += len;
  return BR_OK;
}

void br_xfer__buf_free(br_xfer__buf *b) {
  br_xfer__mem_put(b->data, b->cap);
  memset(b, 0, sizeof *b);
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- zstd contexts, one of each per thread ----
 * ZSTD_compress and ZSTD_decompress make and free a context on every call,
 * and making one runs CPUID, which in a virtual machine traps to the
 * hypervisor: a probe of every small file cost more than its compression.
 * A thread keeps its contexts until it exits. */
typedef struct zctx {
  ZSTD_CCtx *c;
  ZSTD_DCtx *d;
} zctx;

static pthread_key_t zkey;
static pthread_once_t zonce = PTHREAD_ONCE_INIT;
static bool zkey_ok;

static void zctx_free(void *p) {
  zctx *z = p;
  ZSTD_freeCCtx(z->c);
  ZSTD_freeDCtx(z->d);
  free(z);
}

static void zkey_make(void) { zkey_ok = pthread_key_create(&zkey, zctx_free) == 0; }

static zctx *zctx_get(void) {
  pthread_once(&zonce, zkey_make);
  if (!zkey_ok) return NULL;
  zctx *z = pthread_getspecific(zkey);
  if (!z && (z = calloc(1, sizeof *z)) && pthread_setspecific(zkey, z) != 0) {
    free(z);
    z = NULL;
  }
  return z;
}

static size_t zcompress(void *dst, size_t cap, const void *src, size_t len) {
  zctx *z = zctx_get();
  if (z && !z->c) z->c = ZSTD_createCCtx();
  if (!z || !z->c) return ZSTD_compress(dst, cap, src, len, 1);
  return ZSTD_compressCCtx(z->c, dst, cap, src, len, 1);
}

static size_t zdecompress(void *dst, size_t cap, const void *src, size_t len) {
  zctx *z = zctx_get();
  if (z && !z->d) z->d = ZSTD_createDCtx();
  if (!z || !z->d) return ZSTD_decompress(dst, cap, src, len);
  return ZSTD_decompressDCtx(z->d, dst, cap, src, len);
}

int br_xfer__bundle_begin(br_xfer__buf *b) {
  b->len = 0;
  return br_xfer__buf_append(b, MAGIC, 4);
}

int br_xfer__bundle_reserve(br_xfer__buf *b, size_t entries, size_t bytes) {
  if (entries > SIZE_MAX / 2 / HDR || bytes > SIZE_MAX / 2) return BR_ENOMEM;
  return br_xfer__buf_reserve(b, entries * HDR + bytes);
}

uint8_t *br_xfer__bundle_slot(br_xfer__buf *b, size_t len) {
  if (len > BR_XFER__MAX_CHUNK || br_xfer__buf_reserve(b, HDR + len)) return NULL;
  return b->data + b->len + HDR;
}

int br_xfer__bundle_put(br_xfer__buf *b, const br_xfer_digest *d, size_t len, bool compress,
                        bool *saved) {
  return br_xfer__bundle_put_at(b, d, b->data ? b->data + b->len + HDR : NULL, len, compress,
                                saved);
}

/* zstd of len bytes at src, kept only when it saves at least a tenth: then
 * *z (a buffer of capacity *zcap, to give back) holds *zl bytes; else *z
 * is NULL. */
static int compress_entry(const uint8_t *src, size_t len, uint8_t **z, size_t *zcap,
                          size_t *zl) {
  *z = NULL;
  if (len < 512) return BR_OK;
  size_t cap;
  uint8_t *buf = br_xfer__mem_get(ZSTD_compressBound(len), &cap);
  if (!buf) return BR_ENOMEM;
  /* A sample first: data that does not compress (most caches are stored
   * compressed already) then costs one small compression, not a whole one. */
  size_t n = 0;
  bool go = true;
  if (len >= 4 * PROBE) {
    n = zcompress(buf, cap, src, PROBE);
    go = !ZSTD_isError(n) && n < PROBE - PROBE / 10;
  }
  if (go) n = zcompress(buf, cap, src, len);
  if (!go || ZSTD_isError(n) || n >= len - len / 10) {
    br_xfer__mem_put(buf, cap);
    return BR_OK;
  }
  *z = buf;
  *zcap = cap;
  *zl = n;
  return BR_OK;
}

static void put_header(uint8_t *h, const br_xfer_digest *d, uint32_t flags, size_t raw,
                       size_t wire) {
  memcpy(h, d->b, BR_XFER_DIGEST_LEN);
  put32(h + 32, flags);
  put32(h + 36, (uint32_t)raw);
  put32(h + 40, (uint32_t)wire);
}

/* The next entry's payload place in b when len bytes at at lie in b's
 * room from there on (put_at moves them there), else NULL. */
static uint8_t *payload_for(const br_xfer__buf *b, const uint8_t *at, size_t len) {
  if (len > BR_XFER__MAX_CHUNK || b->len + HDR + len > b->cap) return NULL;
  uint8_t *payload = b->data + b->len + HDR;
  return at < payload || at + len > b->data + b->cap ? NULL : payload;
}

int br_xfer__bundle_put_at(br_xfer__buf *b, const br_xfer_digest *d, const uint8_t *at,
                           size_t len, bool compress, bool *saved) {
  if (saved) *saved = false;
  uint8_t *payload = payload_for(b, at, len);
  if (!payload) return BR_EINVAL;
  uint8_t *z = NULL;
  size_t zcap = 0, wire = len;
  if (compress && compress_entry(at, len, &z, &zcap, &wire)) return BR_ENOMEM;
  if (z) {
    memcpy(payload, z, wire);
    br_xfer__mem_put(z, zcap);
    if (saved) *saved = true;
  } else if (at != payload) {
    memmove(payload, at, len);
  }
  put_header(payload - HDR, d, z ? 1 : 0, len, wire);
  b->len += HDR + wire;
  return BR_OK;
}

int br_xfer__bundle_put_ref(br_xfer__buf *b, const br_xfer_digest *d, const uint8_t *data,
                            size_t len, bool compress, bool *saved, bool *by_ref) {
  if (saved) *saved = false;
  *by_ref = false;
  if (len > BR_XFER__MAX_CHUNK) return BR_EINVAL;
  uint8_t *z = NULL;
  size_t zcap = 0, wire = len;
  if (compress && compress_entry(data, len, &z, &zcap, &wire)) return BR_ENOMEM;
  if (br_xfer__buf_reserve(b, HDR + (z ? wire : 0))) {
    br_xfer__mem_put(z, zcap);
    return BR_ENOMEM;
  }
  put_header(b->data + b->len, d, z ? 1 : 0, len, wire);
  b->len += HDR;
  if (z) {
    memcpy(b->data + b->len, z, wire);
    b->len += wire;
    br_xfer__mem_put(z, zcap);
    if (saved) *saved = true;
  } else {
    *by_ref = true;
  }
  return BR_OK;
}

int br_xfer__bundle_add(br_xfer__buf *b, const br_xfer_digest *d, const void *data,
                        size_t len, bool compress, bool *saved) {
  uint8_t *slot = br_xfer__bundle_slot(b, len);
  if (!slot) return len > BR_XFER__MAX_CHUNK ? BR_EINVAL : BR_ENOMEM;
  if (len) memcpy(slot, data, len);
  return br_xfer__bundle_put(b, d, len, compress, saved);
}

size_t br_xfer__bundle_complete_len(const void *data, size_t len) {
  if (len < 4 || memcmp(data, MAGIC, 4) != 0) return 0;
  const uint8_t *p = (const uint8_t *)data + 4, *end = (const uint8_t *)data + len;
  while ((size_t)(end - p) >= HDR) {
    uint32_t wire = get32(p + 40);
    if ((size_t)(end - p) - HDR < wire) break;
    p += HDR + wire;
  }
  return (size_t)(p - (const uint8_t *)data);
}

size_t br_xfer__bundle_pack_need(const void *data, size_t len, size_t limit, bool *whole) {
  *whole = false;
  if (len < 4 || memcmp(data, MAGIC, 4) != 0) return 0;
  const uint8_t *p = (const uint8_t *)data + 4, *end = (const uint8_t *)data + len;
  size_t total = 0;
  bool all = true;
  while ((size_t)(end - p) >= HDR) {
    uint32_t flags = get32(p + 32), raw = get32(p + 36), wire = get32(p + 40);
    if ((size_t)(end - p) - HDR < wire) break;
    bool packed = raw < limit || flags == 1; /* small, or a zstd frame */
    if (packed) total += wire;
    if (flags > 1 || (!flags && raw != wire) || !packed) all = false;
    p += HDR + wire;
  }
  *whole = all && p == end;
  return total;
}

size_t br_xfer__bundle_first_plain(const void *data, size_t len, size_t limit) {
  const uint8_t *p = (const uint8_t *)data + 4;
  if (len < 4 + HDR || memcmp(data, MAGIC, 4) != 0) return 0;
  uint32_t flags = get32(p + 32), raw = get32(p + 36), wire = get32(p + 40);
  return !flags && raw == wire && raw >= limit ? 4 + HDR : 0;
}

/* ---- chunks as a depot stores them: raw, or (raw > 0) a zstd frame of
 * len bytes that holds raw bytes ---- */

int br_xfer__inflate(const uint8_t *frame, size_t len, uint8_t *out, size_t raw) {
  size_t n = zdecompress(out, raw, frame, len);
  return !ZSTD_isError(n) && n == raw ? BR_OK : BR_EINVAL;
}

bool br_xfer__stored_matches(const uint8_t *stored, size_t len, int64_t raw,
                             const br_xfer_digest *want, uint8_t **scratch, size_t *cap) {
  br_xfer_digest got;
  if (raw <= 0) {
    br_xfer_sha256(stored, len, &got);
    return br_xfer__digest_cmp(want, &got) == 0;
  }
  if (raw > BR_XFER__MAX_CHUNK) return false;
  if (*cap < (size_t)raw) {
    br_xfer__mem_put(*scratch, *cap);
    *scratch = br_xfer__mem_get((size_t)raw, cap);
    if (!*scratch) {
      *cap = 0;
      return false;
    }
  }
  if (br_xfer__inflate(stored, len, *scratch, (size_t)raw)) return false;
  br_xfer_sha256(*scratch, (size_t)raw, &got);
  return br_xfer__digest_cmp(want, &got) == 0;
}

/* The entry of a stored zstd frame of raw bytes: decompressed into b (src
 * is not in b). */
static int put_inflated(br_xfer__buf *b, const br_xfer_digest *d, const uint8_t *src,
                        size_t len, size_t raw) {
  if (raw > BR_XFER__MAX_CHUNK) return BR_EINVAL;
  if (br_xfer__buf_reserve(b, HDR + raw)) return BR_ENOMEM;
  uint8_t *h = b->data + b->len;
  if (br_xfer__inflate(src, len, h + HDR, raw)) return BR_EIO;
  put_header(h, d, 0, raw, raw);
  b->len += HDR + raw;
  return BR_OK;
}

int br_xfer__bundle_put_stored(br_xfer__buf *b, const br_xfer_digest *d, const uint8_t *at,
                               size_t len, int64_t raw, bool compress, bool *saved) {
  if (raw <= 0) return br_xfer__bundle_put_at(b, d, at, len, compress && raw == 0, saved);
  if (saved) *saved = false;
  uint8_t *payload = payload_for(b, at, len);
  if (!compress || raw > BR_XFER__MAX_CHUNK || !payload) return BR_EINVAL;
  if (at != payload) memmove(payload, at, len);
  put_header(payload - HDR, d, 1, (size_t)raw, len);
  b->len += HDR + len;
  if (saved) *saved = true;
  return BR_OK;
}

int br_xfer__bundle_put_ref_stored(br_xfer__buf *b, const br_xfer_digest *d,
                                   const uint8_t *data, size_t len, int64_t raw, bool compress,
                                   bool *saved, bool *by_ref) {
  if (raw <= 0)
    return br_xfer__bundle_put_ref(b, d, data, len, compress && raw == 0, saved, by_ref);
  if (saved) *saved = false;
  *by_ref = false;
  if (len > BR_XFER__MAX_CHUNK) return BR_EINVAL;
  if (!compress) return put_inflated(b, d, data, len, (size_t)raw);
  if (raw > BR_XFER__MAX_CHUNK) return BR_EINVAL;
  if (br_xfer__buf_reserve(b, HDR)) return BR_ENOMEM;
  put_header(b->data + b->len, d, 1, (size_t)raw, len);
  b->len += HDR;
  *by_ref = true;
  if (saved) *saved = true;
  return BR_OK;
}

int br_xfer__bundle_add_stored(br_xfer__buf *b, const br_xfer_digest *d, const uint8_t *data,
                               size_t len, int64_t raw, bool compress) {
  if (raw > 0 && !compress) return put_inflated(b, d, data, len, (size_t)raw);
  uint8_t *slot = br_xfer__bundle_slot(b, len);
  if (!slot) return len > BR_XFER__MAX_CHUNK ? BR_EINVAL : BR_ENOMEM;
  if (len) memcpy(slot, data, len);
  return br_xfer__bundle_put_stored(b, d, slot, len, raw, compress, NULL);
}

int br_xfer__bundle_open(br_xfer__bundle_iter *it, const void *data, size_t len,
                         br_error *err) {
  memset(it, 0, sizeof *it);
  if (len < 4 || memcmp(data, MAGIC, 4) != 0)
    return br_error_set(err, BR_ENET, "not a chunk bundle (bad magic)");
  it->p = (const uint8_t *)data + 4;
  it->end = (const uint8_t *)data + len;
  return BR_OK;
}

int br_xfer__bundle_next(br_xfer__bundle_iter *it, br_xfer_digest *d, const uint8_t **data,
                         size_t *len, br_error *err) {
  if (it->p == it->end) return 0;
  if ((size_t)(it->end - it->p) < HDR)
    return br_error_set(err, BR_ENET, "bundle cut inside an entry header");
  memcpy(d->b, it->p, BR_XFER_DIGEST_LEN);
  uint32_t flags = get32(it->p + 32), raw = get32(it->p + 36), wire = get32(it->p + 40);
  if (flags > 1 || raw > BR_XFER__MAX_CHUNK || wire > BR_XFER__MAX_CHUNK ||
      (!flags && wire != raw))
    return br_error_set(err, BR_ENET, "malformed bundle entry");
  if ((size_t)(it->end - it->p) - HDR < wire)
    return br_error_set(err, BR_ENET, "bundle cut inside an entry");
  const uint8_t *payload = it->p + HDR;
  it->p += HDR + wire;
  it->wire = payload;
  it->wire_len = wire;
  it->zstd = flags == 1;
  if (!flags) {
    *data = payload;
    *len = raw;
    return 1;
  }
  if (it->scratch_cap < raw || !it->scratch) { /* pooled: no page faults per large entry */
    br_xfer__mem_put(it->scratch, it->scratch_cap);
    it->scratch = br_xfer__mem_get(raw ? raw : 1, &it->scratch_cap);
    if (!it->scratch) {
      it->scratch_cap = 0;
      return br_error_set(err, BR_ENOMEM, "out of memory");
    }
  }
  if (br_xfer__inflate(payload, wire, it->scratch, raw))
    return br_error_set(err, BR_ENET, "bundle entry does not decompress");
  *data = it->scratch;
  *len = raw;
  return 1;
}

void br_xfer__bundle_close(br_xfer__bundle_iter *it) {
  br_xfer__mem_put(it->scratch, it->scratch_cap);
  it->scratch = NULL;
  it->scratch_cap = 0;
}
