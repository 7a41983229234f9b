/* The depot's HTTP surface, spoken to with plain libcurl: tokens (401
 * without one or with a wrong one), verification of uploads, commits that
 * name missing chunks, Range answers, size limits, bad names and manifests,
 * and concurrent commits getting consecutive versions. */
#include "xfer-util.h"

#include <curl/curl.h>
#include <dirent.h>
#include <microhttpd.h>
#include <pthread.h>
#include <sqlite3.h>
#include <strings.h>
#include <zstd.h>

#include "xfer/xfer_int.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#define D64 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" /* file digest of no chunks */

typedef struct http_res {
  long status;
  char body[65536];
  size_t len;
  char content_range[128];
  char version[32];
} http_res;

static size_t wcb(char *b, size_t s, size_t n, void *ud) {
  http_res *r = ud;
  size_t len = s * n, room = sizeof r->body - 1 - r->len;
  memcpy(r->body + r->len, b, len < room ? len : room);
  r->len += len < room ? len : room;
  r->body[r->len] = 0;
  return len;
}

static size_t hcb(char *b, size_t s, size_t n, void *ud) {
  http_res *r = ud;
  size_t len = s * n;
  if (len > 15 && strncasecmp(b, "Content-Range: ", 15) == 0)
    snprintf(r->content_range, sizeof r->content_range, "%.*s", (int)(len - 17), b + 15);
  if (len > 17 && strncasecmp(b, "X-Braid-Version: ", 17) == 0)
    snprintf(r->version, sizeof r->version, "%.*s", (int)(len - 19), b + 17);
  return len;
}

/* One request; token NULL = no Authorization header. */
static void http(const xu_depot *x, const char *method, const char *path, const char *token,
                 const void *body, size_t blen, const char *range, http_res *r) {
  memset(r, 0, sizeof *r);
  CURL *c = curl_easy_init();
  char url[512];
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", x->port, path);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, wcb);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, hcb);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
  struct curl_slist *h = curl_slist_append(NULL, "Expect:");
  char auth[256];
  if (token) {
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    h = curl_slist_append(h, auth);
  }
  if (range) {
    char rh[128];
    snprintf(rh, sizeof rh, "Range: %s", range);
    h = curl_slist_append(h, rh);
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  if (strcmp(method, "POST") == 0) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
  }
  CURLcode cc = curl_easy_perform(c);
  if (cc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
}

static void upload(const xu_depot *x, const void *data, size_t len, br_xfer_digest *d) {
  br_xfer_sha256(data, len, d);
  br_xfer__buf b = {0};
  br_xfer__bundle_begin(&b);
  br_xfer__bundle_add(&b, d, data, len, false, NULL);
  http_res r;
  http(x, "POST", "/v1/chunks", XU_TOKEN, b.data, b.len, NULL, &r);
  CHECK_EQ_INT(r.status, 200);
  br_xfer__buf_free(&b);
}

TEST(token_required) {
  xu_case tc;
  xu_case_start(&tc, "xfer-depot-token", NULL);
  http_res r;
  http(&tc.x, "GET", "/v1/snapshot?name=a", NULL, NULL, 0, NULL, &r);
  CHECK_EQ_INT(r.status, 401);
  http(&tc.x, "GET", "/v1/snapshot?name=a", "wrong-token", NULL, 0, NULL, &r);
  CHECK_EQ_INT(r.status, 401);
  CHECK_CONTAINS(r.body, "token");
  http(&tc.x, "POST", "/v1/missing", "wrong", "{\"chunks\":[]}", 13, NULL, &r);
  CHECK_EQ_INT(r.status, 401);
  http(&tc.x, "GET", "/v1/snapshot?name=a", XU_TOKEN, NULL, 0, NULL, &r);
  CHECK_EQ_INT(r.status, 404);
  http(&tc.x, "GET", "/nope", XU_TOKEN, NULL, 0, NULL, &r);
  CHECK_EQ_INT(r.status, 404);
  /* The token file holds hashes, not the token. */
  char *content = br__read_file(tc.x.tokens, NULL);
  CHECK(strstr(content, XU_TOKEN) == NULL);
  free(content);
  xu_case_done(&tc);
}

/* Sends a POST /v1/chunks announcing all of body but only its first n
 * bytes, then closes: an upload cut short. */
static void upload_cut(const xu_depot *x, const br_xfer__buf *body, size_t n) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)x->port)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  CHECK(connect(s, (struct sockaddr *)&sa, sizeof sa) == 0);
  char head[512];
  int hl = snprintf(head, sizeof head,
                    "POST /v1/chunks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                    "Content-Length: %zu\r\n\r\n",
                    XU_TOKEN, body->len);
  CHECK(send(s, head, (size_t)hl, MSG_NOSIGNAL) == hl);
  for (size_t off = 0; off < n;) {
    ssize_t k = send(s, body->data + off, n - off, MSG_NOSIGNAL);
    CHECK(k > 0);
    off += (size_t)k;
  }
  close(s);
}

/* Whether the depot has the chunk d (asked with /v1/missing). */
static bool depot_has(const xu_depot *x, const br_xfer_digest *d) {
  char hex[65], body[200];
  br_xfer_digest_hex(d, hex);
  snprintf(body, sizeof body, "{\"chunks\":[\"%s\"]}", hex);
  http_res r;
  http(x, "POST", "/v1/missing", XU_TOKEN, body, strlen(body), NULL, &r);
  CHECK_EQ_INT(r.status, 200);
  return strstr(r.body, hex) == NULL;
}

/* A push cancelled or cut mid-upload loses at most the chunk each request
 * was sending: the depot keeps the complete, verified entries of a cut
 * bundle, small ones (a pack) and large ones (loose objects) alike; the
 * cut entry is not stored. */
TEST(cut_upload_keeps_its_complete_chunks) {
  xu_case tc;
  xu_case_start(&tc, "xfer-depot-cut", NULL);
  for (int pass = 0; pass < 2; pass++) {
    size_t size = pass ? 1536 * 1024 : 5000; /* loose objects, then a pack */
    uint8_t *data[4];
    br_xfer_digest d[4];
    br_xfer__buf b = {0};
    br_xfer__bundle_begin(&b);
    size_t ends[4];
    for (int i = 0; i < 4; i++) {
      data[i] = malloc(size);
      xu_fill(data[i], size, (uint64_t)(10 * pass + i + 1));
      br_xfer_sha256(data[i], size, &d[i]);
      br_xfer__bundle_add(&b, &d[i], data[i], size, false, NULL);
      ends[i] = b.len;
    }
    upload_cut(&tc.x, &b, ends[2] + size / 2); /* cut inside the fourth */
    /* the depot notices the cut when the connection closes */
    for (int t = 0; t < 500 && !depot_has(&tc.x, &d[2]); t++) usleep(10000);
    CHECK(depot_has(&tc.x, &d[0]));
    CHECK(depot_has(&tc.x, &d[1]));
    CHECK(depot_has(&tc.x, &d[2]));
    CHECK(!depot_has(&tc.x, &d[3]));
    br_xfer__buf_free(&b);
    for (int i = 0; i < 4; i++) free(data[i]);
  }
  int64_t checked = 0;
  br_error err;
  br_error_clear(&err);
  CHECK_EQ_INT(br_depot_fsck(tc.x.root, &checked, &err), BR_OK);
  CHECK_EQ_INT(checked, 6);
  xu_case_done(&tc);
}

/* A large chunk alone in its upload is written from the request's body, which
 * the depot placed so that the chunk's bytes are aligned for direct I/O: the
 * write is padded to 4 KiB and the object truncated back. Objects of sizes
 * that are not multiples of 4 KiB come back whole and exact, as do large
 * chunks that share a bundle (the first one not last in the body) and a
 * compressed one (written from the inflated copy). */
TEST(large_chunks_of_any_size_are_stored_whole) {
  xu_case tc;
  xu_case_start(&tc, "xfer-depot-large", NULL);
  static const size_t sizes[] = {1024 * 1024 + 1, 1024 * 1024 + 4095, 1536 * 1024 + 100,
                                 2 * 1024 * 1024 - 1, 1024 * 1024 + 333, 1024 * 1024 + 7};
  enum { N = sizeof sizes / sizeof sizes[0] };
  uint8_t *data[N];
  br_xfer_digest d[N];
  for (int i = 0; i < N; i++) {
    data[i] = malloc(sizes[i]);
    xu_fill(data[i], sizes[i], (uint64_t)(40 + i));
    if (i == N - 1) memset(data[i], 'z', sizes[i] - 100); /* compresses */
    br_xfer_sha256(data[i], sizes[i], &d[i]);
  }
  /* one per upload, then two in one, then one compressed */
  const int bundles[][2] = {{0, -1}, {1, -1}, {2, -1}, {3, 4}, {5, -1}};
  for (size_t k = 0; k < sizeof bundles / sizeof bundles[0]; k++) {
    br_xfer__buf b = {0};
    br_xfer__bundle_begin(&b);
    for (int j = 0; j < 2 && bundles[k][j] >= 0; j++) {
      int i = bundles[k][j];
      bool saved = false;
      br_xfer__bundle_add(&b, &d[i], data[i], sizes[i], i == N - 1, &saved);
      CHECK(saved == (i == N - 1));
    }
    http_res r;
    http(&tc.x, "POST", "/v1/chunks", XU_TOKEN, b.data, b.len, NULL, &r);
    CHECK_EQ_INT(r.status, 200);
    br_xfer__buf_free(&b);
  }
  for (int i = 0; i < N; i++) {
    char hex[65], path[128], range[64], total[96];
    br_xfer_digest_hex(&d[i], hex);
    snprintf(path, sizeof path, "/v1/chunk/%s", hex);
    snprintf(range, sizeof range, "bytes=%zu-", sizes[i] - 5000);
    snprintf(total, sizeof total, "bytes %zu-%zu/%zu", sizes[i] - 5000, sizes[i] - 1, sizes[i]);
    http_res r;
    http(&tc.x, "GET", path, XU_TOKEN, NULL, 0, range, &r);
    CHECK_EQ_INT(r.status, 206);
    CHECK_EQ_STR(r.content_range, total);
    CHECK_EQ_INT(r.len, 5000);
    CHECK(memcmp(r.body, data[i] + sizes[i] - 5000, 5000) == 0);
    free(data[i]);
  }
  int64_t checked = 0;
  br_error err;
  br_error_clear(&err);
  CHECK_EQ_INT(br_depot_fsck(tc.x.root, &checked, &err), BR_OK);
  CHECK_EQ_INT(checked, N);
  xu_case_done(&tc);
}

TEST(upload_verified_missing_and_range) {
  xu_case tc;
  xu_case_start(&tc, "xfer-depot-range", NULL);
  uint8_t data[5000];
  xu_fill(data, sizeof data, 3);
  br_xfer_digest d;
  char hex[65], body[200], path[128];
  br_xfer_sha256(data, sizeof data, &d);
  br_xfer_digest_hex(&d, hex);
  snprintf(body, sizeof body, "{\"chunks\":[\"%s\"]}", hex);
  http_res r;
  http(&tc.x, "POST", "/v1/missing", XU_TOKEN, body, strlen(body), NULL, &r);
  CHECK_EQ_INT(r.status, 200);
  CHECK_CONTAINS(r.body, hex);
  /* A chunk whose bytes do not match its digest is refused. */
  br_xfer__buf b = {0};
  br_xfer__bundle_begin(&b);
  br_xfer__bundle_add(&b, &d, data, sizeof data, false, NULL);
  b.data[100] ^= 1;
  http(&tc.x, "POST", "/v1/chunks", XU_TOKEN, b.data, b.len, NULL, &r);
  CHECK_EQ_INT(r.status, 422);
  http(&tc.x, "POST", "/v1/chunks", XU_TOKEN, "<html>", 6, NULL, &r);
  CHECK_EQ_INT(r.status, 400);
  br_xfer__buf_free(&b);
  upload(&tc.x, data, sizeof data, &d);
  http(&tc.x, "POST", "/v1/missing", XU_TOKEN, body, strlen(body), NULL, &r);
  CHECK(strstr(r.body, hex) == NULL);
  /* Ranges: exact Content-Range, 416 outside, whole object without one. */
  snprintf(path, sizeof path, "/v1/chunk/%s", hex);
  http(&tc.x, "GET", path, XU_TOKEN, NULL, 0, "bytes=100-199", &r);
  CHECK_EQ_INT(r.status, 206);
  CHECK_EQ_INT(r.len, 100);
  CHECK(memcmp(r.body, data + 100, 100) == 0);
  CHECK_EQ_STR(r.content_range, "bytes 100-199/5000");
  http(&tc.x, "GET", path, XU_TOKEN, NULL, 0, "bytes=4990-", &r);
  CHECK_EQ_INT(r.status, 206);
  CHECK_EQ_INT(r.len, 10);
  http(&tc.x, "GET", path, XU_TOKEN, NULL, 0, "bytes=6000-7000", &r);
  CHECK_EQ_INT(r.status, 416);
  http(&tc.x, "GET", path, XU_TOKEN, NULL, 0, "bytes=junk", &r);
  CHECK_EQ_INT(r.status, 416);
  http(&tc.x, "GET", path, XU_TOKEN, NULL, 0, NULL, &r);
  CHECK_EQ_INT(r.status, 200);
  CHECK_EQ_INT(r.len, 5000);
  http(&tc.x, "GET", "/v1/chunk/nothex", XU_TOKEN, NULL, 0, NULL, &r);
  CHECK_EQ_INT(r.status, 400);
  /* The object is stored (a small chunk: in a pack) and checks out. */
  br_xfer__store st;
  CHECK_EQ_INT(br_xfer__store_open(&st, tc.x.root, NULL), BR_OK);
  int fd;
  int64_t off, olen, raw;
  CHECK_EQ_INT(br_xfer__store_open_object(&st, &d, &fd, &off, &olen, &raw), BR_OK);
  CHECK_EQ_INT(olen, sizeof data);
  CHECK_EQ_INT(raw, 0); /* it came plain */
  uint8_t back[sizeof data];
  CHECK_EQ_INT(br_xfer__pread_all(fd, back, sizeof back, off), 0);
  CHECK(memcmp(back, data, sizeof data) == 0);
  close(fd);
  int64_t checked = 0;
  CHECK_EQ_INT(br_xfer__store_fsck(&st, &checked, NULL), BR_OK);
  CHECK_EQ_INT(checked, 1);
  br_xfer__store_close(&st);
  xu_case_done(&tc);
}

/* Fetches the chunks ds[idx[0..n)] in one bundle (zstd: compressed where
 * that saves) and checks every entry, and with want_z (not NULL) whether
 * the i-th came compressed; the body's length. */
static size_t fetch_check_zw(const xu_depot *x, const br_xfer_digest *ds, uint8_t *const *data,
                             const size_t *len, const size_t *idx, size_t n, bool zstd,
                             const bool *want_z) {
  char body[4096] = "{\"chunks\":[", hex[65];
  for (size_t i = 0; i < n; i++) {
    br_xfer_digest_hex(&ds[idx[i]], hex);
    snprintf(body + strlen(body), sizeof body - strlen(body), "%s\"%s\"", i ? "," : "", hex);
  }
  snprintf(body + strlen(body), sizeof body - strlen(body), "]%s}", zstd ? ",\"zstd\":true" : "");
  http_res *r = malloc(sizeof *r);
  http(x, "POST", "/v1/fetch", XU_TOKEN, body, strlen(body), NULL, r);
  CHECK_EQ_INT(r->status, 200);
  br_xfer__bundle_iter it;
  br_error err = {0};
  CHECK_EQ_INT(br_xfer__bundle_open(&it, r->body, r->len, &err), BR_OK);
  br_xfer_digest d;
  const uint8_t *got;
  size_t glen, i = 0;
  while (br_xfer__bundle_next(&it, &d, &got, &glen, &err) == 1 && i < n) {
    CHECK(br_xfer__digest_cmp(&d, &ds[idx[i]]) == 0);
    CHECK_EQ_INT(glen, len[idx[i]]);
    CHECK(memcmp(got, data[idx[i]], glen) == 0);
    if (want_z) CHECK_EQ_INT(it.zstd, want_z[i]);
    i++;
  }
  CHECK_EQ_INT(i, n);
  br_xfer__bundle_close(&it);
  size_t got_len = r->len;
  free(r);
  return got_len;
}

static size_t fetch_check_z(const xu_depot *x, const br_xfer_digest *ds, uint8_t *const *data,
                            const size_t *len, const size_t *idx, size_t n, bool zstd) {
  return fetch_check_zw(x, ds, data, len, idx, n, zstd, NULL);
}

static void fetch_check(const xu_depot *x, const br_xfer_digest *ds, uint8_t *const *data,
                        const size_t *len, const size_t *idx, size_t n) {
  fetch_check_z(x, ds, data, len, idx, n, false);
}

/* The ways a depot serves a pack, a pass each: 0 kept as the upload wrote
 * it (the depot as the test started it), 1 from the disk (no cache), 2
 * read whole into the cache by the first fetch. */
static void depot_pass(xu_depot *x, const char *tmp, int pass) {
  if (!pass) return;
  xu_depot_stop(x);
  xu_depot_start_cache(x, tmp, pass == 1 ? -1 : 0);
}

TEST(plain_bundle_is_its_own_pack) {
  /* An upload of plain chunks is written as it came, entry headers and
   * all: the pack is the body, and fetches read its chunks from between
   * the headers, also mixed with a pack put together the other way (a
   * compressed upload) and in any order. */
  xu_case tc;
  xu_case_start(&tc, "xfer-depot-wholepack", NULL);
  enum { N = 6 };
  size_t len[N] = {5000, 1, 20000, 4096, 12345, 9000};
  uint8_t *data[N];
  br_xfer_digest ds[N];
  br_xfer__buf b = {0};
  br_xfer__bundle_begin(&b);
  for (int i = 0; i < N; i++) {
    data[i] = malloc(len[i]);
    if (i < N - 1) xu_fill(data[i], len[i], 40 + (uint64_t)i);
    else memset(data[i], 'z', len[i]); /* compresses */
    br_xfer_sha256(data[i], len[i], &ds[i]);
    if (i < N - 1) CHECK_EQ_INT(br_xfer__bundle_add(&b, &ds[i], data[i], len[i], false, NULL), 0);
  }
  http_res *r = malloc(sizeof *r);
  http(&tc.x, "POST", "/v1/chunks", XU_TOKEN, b.data, b.len, NULL, r);
  CHECK_EQ_INT(r->status, 200);
  /* one pack so far, and it is the body byte for byte */
  char *packs = xu_path(tc.x.root, "packs");
  DIR *dir = opendir(packs);
  struct dirent *de;
  int npacks = 0;
  while (dir && (de = readdir(dir))) {
    if (de->d_name[0] == '.') continue;
    npacks++;
    char *p = xu_path(packs, de->d_name);
    size_t plen = 0;
    char *pd = br__read_file(p, &plen);
    CHECK_EQ_INT(plen, b.len);
    CHECK(pd && memcmp(pd, b.data, b.len) == 0);
    free(pd);
    free(p);
  }
  if (dir) closedir(dir);
  CHECK_EQ_INT(npacks, 1);
  free(packs);
  br_xfer__buf_free(&b);
  br_xfer__bundle_begin(&b);
  bool saved = false;
  CHECK_EQ_INT(br_xfer__bundle_add(&b, &ds[N - 1], data[N - 1], len[N - 1], true, &saved), 0);
  CHECK(saved);
  http(&tc.x, "POST", "/v1/chunks", XU_TOKEN, b.data, b.len, NULL, r);
  CHECK_EQ_INT(r->status, 200);
  br_xfer__buf_free(&b);
  size_t all[N] = {0, 1, 2, 3, 4, 5}, back[N] = {5, 4, 3, 2, 1, 0}, gaps[3] = {0, 2, 4},
         tail[2] = {3, 4};
  /* From the pack cache (both packs were kept as written), then from the
   * disk (no cache), then read whole into the cache by the first fetch. */
  for (int pass = 0; pass < 3; pass++) {
    depot_pass(&tc.x, tc.tmp, pass);
    fetch_check(&tc.x, ds, data, len, all, N);
    fetch_check(&tc.x, ds, data, len, back, N);
    fetch_check(&tc.x, ds, data, len, gaps, 3);
    fetch_check(&tc.x, ds, data, len, tail, 2);
    /* Compressed where asked: the last one (of 'z's) shrinks, the others
     * go as they are (from a kept pack: straight from its bytes). */
    size_t plain = 4;
    for (int i = 0; i < N; i++) plain += BR_XFER__BUNDLE_HDR + len[i];
    CHECK(fetch_check_z(&tc.x, ds, data, len, all, N, true) < plain - len[N - 1] / 2);
    CHECK(fetch_check_z(&tc.x, ds, data, len, back, N, true) < plain - len[N - 1] / 2);
    br_depot_cache_stats cs;
    br_depot_cache_stats_get(tc.x.d, &cs);
    CHECK_EQ_INT(cs.max, pass == 1 ? 0 : BR_DEPOT_CACHE_DEFAULT);
    CHECK_EQ_INT(cs.kept, pass == 0 ? 2 : 0);
    CHECK_EQ_INT(cs.loaded, pass == 2 ? 2 : 0);
    CHECK_EQ_INT(cs.packs, pass == 1 ? 0 : 2);
    CHECK_EQ_INT(cs.hits, pass == 0 ? 10 : pass == 1 ? 0 : 8);
    CHECK_EQ_INT(cs.misses, pass == 2 ? 2 : 0);
  }
  br_xfer__store st;
  CHECK_EQ_INT(br_xfer__store_open(&st, tc.x.root, NULL), BR_OK);
  int64_t checked = 0;
  CHECK_EQ_INT(br_xfer__store_fsck(&st, &checked, NULL), BR_OK);
  CHECK_EQ_INT(checked, N);
  br_xfer__store_close(&st);
  for (int i = 0; i < N; i++) free(data[i]);
  free(r);
  xu_case_done(&tc);
}

/* Text that zstd shrinks, different for each seed. */
static void fill_text(uint8_t *buf, size_t len, unsigned seed) {
  size_t at = 0;
  for (unsigned line = 0; at < len; line++) {
    char l[96];
    int n = snprintf(l, sizeof l, "frame %u point %u P %.3f %.3f %.3f\n", seed, line,
                     (double)(line % 97) * 0.25, (double)(line % 13) * 1.5, (double)seed);
    size_t k = (size_t)n < len - at ? (size_t)n : len - at;
    memcpy(buf + at, l, k);
    at += k;
  }
}

static char *pack_path(const char *root) {
  char *packs = xu_path(root, "packs"), *out = NULL;
  DIR *dir = opendir(packs);
  struct dirent *de;
  while (dir && (de = readdir(dir)))
    if (de->d_name[0] != '.') {
      free(out);
      out = xu_path(packs, de->d_name);
    }
  if (dir) closedir(dir);
  free(packs);
  return out;
}

TEST(compressed_chunks_are_kept_as_they_came) {
  /* Chunks that came compressed are stored so: the pack holds their zstd
   * frames, a fetch that asks for zstd gets those frames as they are, and
   * one that does not gets the chunks inflated, from the pack cache and
   * from the disk alike, whole or in ranges. fsck inflates and checks
   * them; a damaged frame is an error, never data. */
  char *tmp = br_test_tmpdir("xfer-depot-zstore");
  char *root = xu_path(tmp, "depot");
  xu_depot x;
  xu_depot_start(&x, tmp);
  enum { N = 5 };
  size_t len[N] = {12000, 9000, 20000, 6000, 700}; /* a fetch of all fits http_res */
  bool text[N] = {true, false, true, true, false};
  uint8_t *data[N];
  br_xfer_digest ds[N];
  br_xfer__buf b = {0};
  br_xfer__bundle_begin(&b);
  size_t raw_total = 0;
  for (int i = 0; i < N; i++) {
    data[i] = malloc(len[i]);
    if (text[i]) fill_text(data[i], len[i], (unsigned)i);
    else xu_fill(data[i], len[i], 70 + (uint64_t)i);
    br_xfer_sha256(data[i], len[i], &ds[i]);
    bool saved = false;
    CHECK_EQ_INT(br_xfer__bundle_add(&b, &ds[i], data[i], len[i], true, &saved), 0);
    CHECK_EQ_INT(saved, text[i]);
    raw_total += len[i];
  }
  http_res *r = malloc(sizeof *r);
  http(&x, "POST", "/v1/chunks", XU_TOKEN, b.data, b.len, NULL, r);
  CHECK_EQ_INT(r->status, 200);
  /* one pack, the body as it came: the text is in it compressed */
  char *pack = pack_path(root);
  struct stat pst;
  CHECK(pack && stat(pack, &pst) == 0);
  CHECK_EQ_INT(pst.st_size, b.len);
  CHECK((size_t)pst.st_size < raw_total / 2);
  br_xfer__store st;
  CHECK_EQ_INT(br_xfer__store_open(&st, root, NULL), BR_OK);
  for (int i = 0; i < N; i++) {
    int fd;
    int64_t off, olen, raw;
    CHECK_EQ_INT(br_xfer__store_open_object(&st, &ds[i], &fd, &off, &olen, &raw), BR_OK);
    close(fd);
    CHECK_EQ_INT(raw, text[i] ? (int64_t)len[i] : 0);
    CHECK(text[i] ? olen < (int64_t)len[i] / 4 : olen == (int64_t)len[i]);
  }
  br_xfer__store_close(&st);
  size_t all[N] = {0, 1, 2, 3, 4}, back[N] = {4, 3, 2, 1, 0}, one[1] = {2};
  char path[128], hex[BR_XFER_HEX_LEN + 1];
  br_xfer_digest_hex(&ds[0], hex);
  snprintf(path, sizeof path, "/v1/chunk/%s", hex);
  for (int pass = 0; pass < 3; pass++) {
    depot_pass(&x, tmp, pass);
    fetch_check(&x, ds, data, len, all, N);
    fetch_check(&x, ds, data, len, back, N);
    fetch_check(&x, ds, data, len, one, 1);
    /* with zstd: the stored frames, byte for byte the upload's body */
    CHECK_EQ_INT(fetch_check_z(&x, ds, data, len, all, N, true), b.len);
    CHECK_EQ_INT(fetch_check_z(&x, ds, data, len, back, N, true), b.len);
    http(&x, "GET", path, XU_TOKEN, NULL, 0, NULL, r);
    CHECK_EQ_INT(r->status, 200);
    CHECK_EQ_INT(r->len, len[0]);
    CHECK(memcmp(r->body, data[0], len[0]) == 0);
    http(&x, "GET", path, XU_TOKEN, NULL, 0, "bytes=11900-", r);
    CHECK_EQ_INT(r->status, 206);
    CHECK_EQ_INT(r->len, 100);
    CHECK(memcmp(r->body, data[0] + 11900, 100) == 0);
    CHECK_EQ_STR(r->content_range, "bytes 11900-11999/12000");
    http(&x, "GET", path, XU_TOKEN, NULL, 0, "bytes=12000-", r);
    CHECK_EQ_INT(r->status, 416);
  }
  xu_depot_stop(&x);
  CHECK_EQ_INT(br_xfer__store_open(&st, root, NULL), BR_OK);
  int64_t checked = 0;
  CHECK_EQ_INT(br_xfer__store_fsck(&st, &checked, NULL), BR_OK);
  CHECK_EQ_INT(checked, N);
  /* Damage the frame of chunk 2 (its magic number): fsck names it, and a
   * fetch of it fails, with zstd or not. */
  int fd;
  int64_t off, olen, raw;
  CHECK_EQ_INT(br_xfer__store_open_object(&st, &ds[2], &fd, &off, &olen, &raw), BR_OK);
  close(fd);
  fd = open(pack, O_WRONLY);
  CHECK(fd >= 0 && pwrite(fd, "X", 1, off) == 1);
  close(fd);
  br_error err = {0};
  CHECK_EQ_INT(br_xfer__store_fsck(&st, &checked, &err), BR_EIO);
  CHECK_CONTAINS(err.msg, "do not match");
  br_xfer__store_close(&st);
  for (int pass = 0; pass < 2; pass++) {
    xu_depot_start_cache(&x, tmp, pass == 0 ? -1 : 0);
    char body[200];
    br_xfer_digest_hex(&ds[2], hex);
    snprintf(body, sizeof body, "{\"chunks\":[\"%s\"]}", hex);
    http(&x, "POST", "/v1/fetch", XU_TOKEN, body, strlen(body), NULL, r);
    CHECK_EQ_INT(r->status, 500);
    snprintf(path, sizeof path, "/v1/chunk/%s", hex);
    http(&x, "GET", path, XU_TOKEN, NULL, 0, NULL, r);
    CHECK_EQ_INT(r->status, 500);
    /* with zstd the frame goes as it is, and does not inflate at the client */
    snprintf(body, sizeof body, "{\"chunks\":[\"%s\"],\"zstd\":true}", hex);
    http(&x, "POST", "/v1/fetch", XU_TOKEN, body, strlen(body), NULL, r);
    CHECK_EQ_INT(r->status, 200);
    br_xfer__bundle_iter it;
    CHECK_EQ_INT(br_xfer__bundle_open(&it, r->body, r->len, &err), BR_OK);
    br_xfer_digest d;
    const uint8_t *got;
    size_t glen;
    CHECK(br_xfer__bundle_next(&it, &d, &got, &glen, &err) < 0);
    br_xfer__bundle_close(&it);
    xu_depot_stop(&x);
  }
  for (int i = 0; i < N; i++) free(data[i]);
  br_xfer__buf_free(&b);
  free(pack);
  free(root);
  free(r);
  xu_done(tmp);
}

/* raw as the depot's index at root has it for d. */
static int64_t stored_raw(const char *root, const br_xfer_digest *d) {
  br_xfer__store st;
  CHECK_EQ_INT(br_xfer__store_open(&st, root, NULL), BR_OK);
  int fd;
  int64_t off, olen, raw = 99;
  CHECK_EQ_INT(br_xfer__store_open_object(&st, d, &fd, &off, &olen, &raw), BR_OK);
  close(fd);
  br_xfer__store_close(&st);
  return raw;
}

TEST(plain_chunks_that_did_not_compress_are_not_tried_again) {
  /* A client with compression on sends a chunk plain because it did not
   * compress, and says so (?plain=incompressible): the index marks it
   * (raw < 0) and a fetch that asks for zstd sends it as it is, without
   * trying. A chunk that came plain without the word (a push with
   * --no-compress, or an older braid) is still tried: here text, which
   * then goes compressed. The real push says it only with compression
   * on. */
  char *tmp = br_test_tmpdir("xfer-depot-plainmark");
  char *root = xu_path(tmp, "depot");
  xu_depot x;
  xu_depot_start(&x, tmp);
  enum { N = 3 };
  size_t len[N] = {12000, 9000, 6000};
  uint8_t *data[N];
  br_xfer_digest ds[N];
  br_xfer__buf a = {0}, b = {0};
  br_xfer__bundle_begin(&a);
  br_xfer__bundle_begin(&b);
  for (int i = 0; i < N; i++) {
    data[i] = malloc(len[i]);
    if (i < 2) fill_text(data[i], len[i], 40 + (unsigned)i);
    else xu_fill(data[i], len[i], 41);
    br_xfer_sha256(data[i], len[i], &ds[i]);
    CHECK_EQ_INT(br_xfer__bundle_add(i ? &b : &a, &ds[i], data[i], len[i], false, NULL), 0);
  }
  http_res *r = malloc(sizeof *r);
  http(&x, "POST", "/v1/chunks", XU_TOKEN, a.data, a.len, NULL, r);
  CHECK_EQ_INT(r->status, 200);
  http(&x, "POST", "/v1/chunks?plain=incompressible", XU_TOKEN, b.data, b.len, NULL, r);
  CHECK_EQ_INT(r->status, 200);
  CHECK_EQ_INT(stored_raw(root, &ds[0]), 0);
  CHECK_EQ_INT(stored_raw(root, &ds[1]), -1);
  CHECK_EQ_INT(stored_raw(root, &ds[2]), -1);
  size_t all[N] = {0, 1, 2};
  const bool want_z[N] = {true, false, false};
  for (int pass = 0; pass < 3; pass++) {
    depot_pass(&x, tmp, pass);
    fetch_check(&x, ds, data, len, all, N);
    fetch_check_zw(&x, ds, data, len, all, N, true, want_z);
  }
  /* The real push: with compression, a random file is marked and a text
   * file goes compressed; without, a random file is not marked. */
  char *src = xu_path(tmp, "src"), *src2 = xu_path(tmp, "src2"), *dst = xu_path(tmp, "dst");
  uint8_t text[30000];
  fill_text(text, sizeof text, 7);
  char *tp = xu_path(src, "notes.txt");
  xu_write_file(tp, text, sizeof text);
  xu_make_file(src, "f.0001.bgeo", 20000, 8);
  xu_make_file(src2, "f.0002.bgeo", 20000, 9);
  br_xfer_opts xo;
  xu_opts(&xo, tmp);
  char *ref = xu_ref(x.url, "marks"), *ref2 = xu_ref(x.url, "plain");
  xu_push_ok(src, ref, &xo, NULL);
  xo.compress = false;
  xu_push_ok(src2, ref2, &xo, NULL);
  xo.compress = true;
  xu_pull_ok(ref, dst, &xo, NULL);
  CHECK_EQ_INT(xu_tree_diff(src, dst), 0);
  uint8_t rnd[20000];
  br_xfer_digest dt, d1, d2;
  br_xfer_sha256(text, sizeof text, &dt);
  xu_fill(rnd, sizeof rnd, 8);
  br_xfer_sha256(rnd, sizeof rnd, &d1);
  xu_fill(rnd, sizeof rnd, 9);
  br_xfer_sha256(rnd, sizeof rnd, &d2);
  xu_depot_stop(&x);
  CHECK(stored_raw(root, &dt) == (int64_t)sizeof text);
  CHECK_EQ_INT(stored_raw(root, &d1), -1);
  CHECK_EQ_INT(stored_raw(root, &d2), 0);
  br_xfer__store st;
  CHECK_EQ_INT(br_xfer__store_open(&st, root, NULL), BR_OK);
  int64_t checked = 0;
  CHECK_EQ_INT(br_xfer__store_fsck(&st, &checked, NULL), BR_OK);
  CHECK_EQ_INT(checked, N + 3);
  br_xfer__store_close(&st);
  for (int i = 0; i < N; i++) free(data[i]);
  br_xfer__buf_free(&a);
  br_xfer__buf_free(&b);
  free(src), free(src2), free(dst), free(tp), free(ref), free(ref2), free(root), free(r);
  xu_done(tmp);
}

TEST(push_tries_zstd_again_after_a_run_of_files_that_did_not) {
  /* A push stops trying zstd on every one-chunk file after a run of them
   * did not compress (it tries one in 16), and tries each again once one
   * compresses: 20 random files, then 60 text files, in one push. The
   * random ones are marked incompressible; of the text files, those sent
   * untried right after the run are fewer than 16, the rest go
   * compressed. */
  char *tmp = br_test_tmpdir("xfer-depot-zguess");
  char *root = xu_path(tmp, "depot");
  xu_depot x;
  xu_depot_start(&x, tmp);
  char *src = xu_path(tmp, "src"), *dst = xu_path(tmp, "dst");
  enum { NR = 20, NT = 60, LEN = 20000 };
  br_xfer_digest dr[NR], dt[NT];
  uint8_t buf[LEN];
  char name[64];
  for (int i = 0; i < NR; i++) {
    snprintf(name, sizeof name, "a.%04d.bgeo", i);
    xu_make_file(src, name, LEN, 100 + (unsigned)i);
    xu_fill(buf, LEN, 100 + (unsigned)i);
    br_xfer_sha256(buf, LEN, &dr[i]);
  }
  for (int i = 0; i < NT; i++) {
    snprintf(name, sizeof name, "b.%04d.txt", i);
    fill_text(buf, LEN, 200 + (unsigned)i);
    char *fp = xu_path(src, name);
    xu_write_file(fp, buf, LEN);
    free(fp);
    br_xfer_sha256(buf, LEN, &dt[i]);
  }
  br_xfer_opts xo;
  xu_opts(&xo, tmp);
  char *ref = xu_ref(x.url, "run");
  xu_push_ok(src, ref, &xo, NULL);
  xu_pull_ok(ref, dst, &xo, NULL);
  CHECK_EQ_INT(xu_tree_diff(src, dst), 0);
  xu_depot_stop(&x);
  for (int i = 0; i < NR; i++) CHECK_EQ_INT(stored_raw(root, &dr[i]), -1);
  int compressed = 0;
  for (int i = 0; i < NT; i++) {
    int64_t raw = stored_raw(root, &dt[i]);
    CHECK(raw == LEN || raw == -1);
    compressed += raw == LEN;
  }
  CHECK(compressed > NT - 16);
  free(src), free(dst), free(ref), free(root);
  xu_done(tmp);
}

TEST(empty_chunk_sent_compressed_is_kept_empty) {
  /* No client compresses an empty chunk, but one may arrive so (a zstd
   * frame of nothing): it is kept as the empty chunk it is, at a place in
   * the pack, and fetches of it work from the cache and from the disk. */
  char *tmp = br_test_tmpdir("xfer-depot-zempty");
  xu_depot x;
  xu_depot_start(&x, tmp);
  uint8_t none[1], some[5000];
  xu_fill(some, sizeof some, 93);
  uint8_t *data[2] = {none, some};
  size_t len[2] = {0, sizeof some}, both[2] = {0, 1}, back[2] = {1, 0};
  br_xfer_digest ds[2];
  br_xfer_sha256(none, 0, &ds[0]);
  br_xfer_sha256(some, sizeof some, &ds[1]);
  uint8_t frame[64];
  size_t fl = ZSTD_compress(frame, sizeof frame, none, 0, 1);
  CHECK(!ZSTD_isError(fl));
  br_xfer__buf b = {0};
  br_xfer__bundle_begin(&b);
  uint8_t h[BR_XFER__BUNDLE_HDR] = {0};
  memcpy(h, ds[0].b, BR_XFER_DIGEST_LEN);
  h[32] = 1;                       /* zstd */
  h[40] = (uint8_t)fl;             /* wire length; raw is 0 */
  CHECK_EQ_INT(br_xfer__buf_append(&b, h, sizeof h), 0);
  CHECK_EQ_INT(br_xfer__buf_append(&b, frame, fl), 0);
  CHECK_EQ_INT(br_xfer__bundle_add(&b, &ds[1], some, sizeof some, false, NULL), 0);
  http_res *r = malloc(sizeof *r);
  http(&x, "POST", "/v1/chunks", XU_TOKEN, b.data, b.len, NULL, r);
  CHECK_EQ_INT(r->status, 200);
  for (int pass = 0; pass < 3; pass++) {
    depot_pass(&x, tmp, pass);
    fetch_check(&x, ds, data, len, both, 2);
    fetch_check(&x, ds, data, len, back, 2);
    fetch_check_z(&x, ds, data, len, both, 2, true);
  }
  xu_depot_stop(&x);
  char *root = xu_path(tmp, "depot");
  br_xfer__store st;
  CHECK_EQ_INT(br_xfer__store_open(&st, root, NULL), BR_OK);
  int fd;
  int64_t off, olen, raw;
  CHECK_EQ_INT(br_xfer__store_open_object(&st, &ds[0], &fd, &off, &olen, &raw), BR_OK);
  close(fd);
  CHECK(off >= 0 && off <= (int64_t)b.len);
  CHECK_EQ_INT(olen, 0);
  CHECK_EQ_INT(raw, 0);
  int64_t checked = 0;
  CHECK_EQ_INT(br_xfer__store_fsck(&st, &checked, NULL), BR_OK);
  CHECK_EQ_INT(checked, 2);
  br_xfer__store_close(&st);
  br_xfer__buf_free(&b);
  free(root);
  free(r);
  xu_done(tmp);
}

TEST(index_of_an_older_depot_is_read_and_extended) {
  /* A depot root from before compressed chunks (an objects table without
   * its raw column) opens: its chunks are read as raw, and new ones go
   * in beside them. */
  char *tmp = br_test_tmpdir("xfer-depot-oldindex");
  char *root = xu_path(tmp, "depot");
  CHECK_EQ_INT(mkdir(root, 0755), 0);
  char *db = xu_path(root, "index.db"), *cmd = NULL;
  uint8_t old[5000], fresh[8000];
  xu_fill(old, sizeof old, 91);
  fill_text(fresh, sizeof fresh, 92);
  br_xfer_digest dold, dfresh;
  br_xfer_sha256(old, sizeof old, &dold);
  br_xfer_sha256(fresh, sizeof fresh, &dfresh);
  char *packs = xu_path(root, "packs"), *pk = xu_path(packs, "oldoldoldoldoldoldol.pack");
  CHECK_EQ_INT(mkdir(packs, 0755), 0);
  xu_write_file(pk, old, sizeof old);
  char hex[BR_XFER_HEX_LEN + 1];
  br_xfer_digest_hex(&dold, hex);
  if (asprintf(&cmd,
               "sqlite3 '%s' \"CREATE TABLE packs (id INTEGER PRIMARY KEY, name TEXT NOT NULL "
               "UNIQUE); CREATE TABLE objects (digest BLOB PRIMARY KEY, pack INTEGER NOT NULL, "
               "off INTEGER NOT NULL, len INTEGER NOT NULL) WITHOUT ROWID; INSERT INTO packs "
               "VALUES (1, 'oldoldoldoldoldoldol.pack'); INSERT INTO objects VALUES "
               "(X'%s', 1, 0, %zu);\"",
               db, hex, sizeof old) < 0)
    abort();
  CHECK_EQ_INT(system(cmd), 0);
  free(cmd);
  xu_depot x;
  xu_depot_start(&x, tmp);
  br_xfer__buf b = {0};
  br_xfer__bundle_begin(&b);
  CHECK_EQ_INT(br_xfer__bundle_add(&b, &dfresh, fresh, sizeof fresh, true, NULL), 0);
  http_res *r = malloc(sizeof *r);
  http(&x, "POST", "/v1/chunks", XU_TOKEN, b.data, b.len, NULL, r);
  CHECK_EQ_INT(r->status, 200);
  uint8_t *data[2] = {old, fresh};
  br_xfer_digest ds[2] = {dold, dfresh};
  size_t len[2] = {sizeof old, sizeof fresh}, both[2] = {0, 1};
  fetch_check(&x, ds, data, len, both, 2);
  fetch_check_z(&x, ds, data, len, both, 2, true);
  xu_depot_stop(&x);
  br_xfer__store st;
  CHECK_EQ_INT(br_xfer__store_open(&st, root, NULL), BR_OK);
  int64_t checked = 0;
  CHECK_EQ_INT(br_xfer__store_fsck(&st, &checked, NULL), BR_OK);
  CHECK_EQ_INT(checked, 2);
  br_xfer__store_close(&st);
  /* now of format 1; one of a newer braid's format is refused, not misread */
  if (asprintf(&cmd, "test \"$(sqlite3 '%s' 'PRAGMA user_version')\" = 1 && "
                     "sqlite3 '%s' 'PRAGMA user_version = 2'", db, db) < 0)
    abort();
  CHECK_EQ_INT(system(cmd), 0);
  free(cmd);
  br_error err = {0};
  CHECK_EQ_INT(br_xfer__store_open(&st, root, &err), BR_EIO);
  CHECK_CONTAINS(err.msg, "newer braid");
  br_xfer__buf_free(&b);
  free(r);
  free(pk);
  free(packs);
  free(db);
  free(root);
  xu_done(tmp);
}

/* One upload of m chunks of len bytes (data from seed on): one pack. */
static void upload_pack(const xu_depot *x, size_t m, size_t len, uint64_t seed, uint8_t **data,
                        br_xfer_digest *ds) {
  br_xfer__buf b = {0};
  br_xfer__bundle_begin(&b);
  for (size_t i = 0; i < m; i++) {
    data[i] = malloc(len);
    xu_fill(data[i], len, seed + i);
    br_xfer_sha256(data[i], len, &ds[i]);
    CHECK_EQ_INT(br_xfer__bundle_add(&b, &ds[i], data[i], len, false, NULL), 0);
  }
  http_res *r = malloc(sizeof *r);
  http(x, "POST", "/v1/chunks", XU_TOKEN, b.data, b.len, NULL, r);
  CHECK_EQ_INT(r->status, 200);
  free(r);
  br_xfer__buf_free(&b);
}

enum { PC_PACKS = 12, PC_M = 4, PC_LEN = 12000 }; /* a body of ~48 KB: a 64 KiB buffer */

typedef struct pc_fetch {
  const xu_depot *x;
  const br_xfer_digest *ds;
  uint8_t *const *data;
  const size_t *len;
  const size_t *idx;
} pc_fetch;

static void *pc_fetch_thread(void *arg) {
  pc_fetch *f = arg;
  fetch_check(f->x, f->ds, f->data, f->len, f->idx, PC_M);
  return NULL;
}

static size_t grow_cb(char *b, size_t s, size_t n, void *ud) {
  return br_xfer__buf_append(ud, b, s * n) == 0 ? s * n : 0;
}

TEST(fetch_of_thousands_of_tiny_chunks_from_a_kept_pack) {
  /* Sent from the kept pack piece by piece (a header, then the chunk's
   * bytes): far more pieces than one sendmsg takes (IOV_MAX, 1024). */
  xu_case tc;
  xu_case_start(&tc, "xfer-depot-tiny", NULL);
  enum { M = 3000, LEN = 16 };
  uint8_t **data = calloc(M, sizeof *data);
  br_xfer_digest *ds = calloc(M, sizeof *ds);
  upload_pack(&tc.x, M, LEN, 900, data, ds);
  br_xfer__buf req = {0}, resp = {0};
  char hex[65];
  br_xfer__buf_append(&req, "{\"chunks\":[", 11);
  for (int i = 0; i < M; i++) {
    br_xfer_digest_hex(&ds[i], hex);
    br_xfer__buf_append(&req, i ? ",\"" : "\"", i ? 2 : 1);
    br_xfer__buf_append(&req, hex, 64);
    br_xfer__buf_append(&req, "\"", 1);
  }
  br_xfer__buf_append(&req, "]}", 2);
  CURL *c = curl_easy_init();
  char url[128], auth[256];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/fetch", tc.x.port);
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", XU_TOKEN);
  struct curl_slist *h = curl_slist_append(curl_slist_append(NULL, "Expect:"), auth);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, req.data);
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req.len);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, grow_cb);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
  CHECK_EQ_INT(curl_easy_perform(c), CURLE_OK);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  CHECK_EQ_INT(status, 200);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  CHECK_EQ_INT(resp.len, 4 + (size_t)M * (BR_XFER__BUNDLE_HDR + LEN));
  br_xfer__bundle_iter it;
  br_error err = {0};
  CHECK_EQ_INT(br_xfer__bundle_open(&it, resp.data, resp.len, &err), BR_OK);
  br_xfer_digest d;
  const uint8_t *got;
  size_t glen;
  int i = 0;
  while (i < M && br_xfer__bundle_next(&it, &d, &got, &glen, &err) == 1) {
    CHECK(br_xfer__digest_cmp(&d, &ds[i]) == 0);
    CHECK_EQ_INT(glen, LEN);
    CHECK(memcmp(got, data[i], LEN) == 0);
    i++;
  }
  CHECK_EQ_INT(i, M);
  br_xfer__bundle_close(&it);
  br_depot_cache_stats cs;
  br_depot_cache_stats_get(tc.x.d, &cs);
  CHECK_EQ_INT(cs.kept, 1); /* the upload's pack, kept as written */
  CHECK(cs.hits >= 1);      /* and the fetch was served from it */
  for (int k = 0; k < M; k++) free(data[k]);
  free(data);
  free(ds);
  br_xfer__buf_free(&req);
  br_xfer__buf_free(&resp);
  xu_case_done(&tc);
}

TEST(pack_cache_keeps_what_was_pushed_within_its_bound) {
  /* Packs just written are kept, least recently used dropped first; a
   * fetch of a dropped one reads the disk and does not push the kept ones
   * out; a fetch of most of a pack reads it whole, once, however many
   * fetch it at the same time; one of a small part of it does not. */
  xu_case tc;
  xu_case_start_cache(&tc, "xfer-depot-pcache", NULL, 512 * 1024); /* 8 packs' buffers */
  enum { N = PC_PACKS * PC_M };
  uint8_t *data[N];
  br_xfer_digest ds[N];
  size_t len[N], idx[PC_PACKS][PC_M];
  for (int i = 0; i < N; i++) len[i] = PC_LEN;
  for (int p = 0; p < PC_PACKS; p++) {
    upload_pack(&tc.x, PC_M, PC_LEN, 1000 + (uint64_t)p * PC_M, &data[p * PC_M], &ds[p * PC_M]);
    for (int m = 0; m < PC_M; m++) idx[p][m] = (size_t)(p * PC_M + m);
  }
  br_depot_cache_stats cs;
  br_depot_cache_stats_get(tc.x.d, &cs);
  CHECK_EQ_INT(cs.kept, PC_PACKS);
  CHECK_EQ_INT(cs.evicted, PC_PACKS - 8);
  CHECK_EQ_INT(cs.packs, 8);
  CHECK_EQ_INT(cs.bytes, 8 * 64 * 1024);
  fetch_check(&tc.x, ds, data, len, idx[0], PC_M); /* dropped: from the disk */
  fetch_check(&tc.x, ds, data, len, idx[PC_PACKS - 1], PC_M); /* kept */
  br_depot_cache_stats_get(tc.x.d, &cs);
  CHECK_EQ_INT(cs.misses, 1);
  CHECK_EQ_INT(cs.loaded, 0);
  CHECK_EQ_INT(cs.hits, 1);
  CHECK_EQ_INT(cs.packs, 8);
  xu_depot_stop(&tc.x);

  xu_depot_start_cache(&tc.x, tc.tmp, 0); /* empty */
  size_t one[1] = {idx[5][1]};
  fetch_check(&tc.x, ds, data, len, one, 1); /* a quarter of a pack: read in part */
  br_depot_cache_stats_get(tc.x.d, &cs);
  CHECK_EQ_INT(cs.loaded, 0);
  fetch_check(&tc.x, ds, data, len, idx[5], PC_M); /* all of it: read whole */
  fetch_check(&tc.x, ds, data, len, idx[5], PC_M); /* then from memory */
  br_depot_cache_stats_get(tc.x.d, &cs);
  CHECK_EQ_INT(cs.loaded, 1);
  CHECK_EQ_INT(cs.hits, 1);
  /* four fetches of one pack at once: one read */
  pthread_t th[4];
  pc_fetch f = {&tc.x, ds, data, len, idx[7]};
  for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, pc_fetch_thread, &f);
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  br_depot_cache_stats_get(tc.x.d, &cs);
  CHECK_EQ_INT(cs.loaded, 2);
  CHECK_EQ_INT(cs.hits, 1 + 3);
  for (int i = 0; i < N; i++) free(data[i]);
  xu_case_done(&tc);
}

#define PC_PACK 40000 /* the pack size of the unit tests: a 64 KiB buffer */

/* Keeps a pack of PC_PACK bytes ch under name, as a push would. */
static void pc_put(br_xfer__pcache *c, const char *name, int ch) {
  uint8_t fill[PC_PACK];
  memset(fill, ch, sizeof fill);
  br_xfer__buf b = {0};
  CHECK_EQ_INT(br_xfer__buf_append(&b, fill, sizeof fill), BR_OK);
  br_xfer__pcache_put(c, name, &b);
  CHECK(b.data == NULL); /* taken, or freed */
}

/* A pack file of PC_PACK bytes 'f' in tmp, open for reading. */
static int pc_file(const char *tmp) {
  uint8_t fill[PC_PACK];
  memset(fill, 'f', sizeof fill);
  char *path = xu_path(tmp, "p");
  xu_write_file(path, (const char *)fill, sizeof fill);
  int fd = open(path, O_RDONLY);
  CHECK(fd >= 0);
  free(path);
  return fd;
}

TEST(pack_cache_frees_a_dropped_pack_after_its_last_reader) {
  /* packs up to 64 KiB */
  br_xfer__pcache *c = br_xfer__pcache_new(256 * 1024, BR_XFER__PCACHE_IDLE);
  CHECK(c != NULL);
  CHECK(br_xfer__pcache_new(0, BR_XFER__PCACHE_IDLE) == NULL);
  pc_put(c, "packs/a", 'a');
  const br_xfer__pcpack *pa = br_xfer__pcache_get(c, "packs/a", -1, 0, false);
  CHECK(pa != NULL);
  const char *names[4] = {"packs/b", "packs/c", "packs/d", "packs/e"};
  for (int i = 0; i < 4; i++) pc_put(c, names[i], 'b' + i);
  br_xfer__pcache_stats cs;
  br_xfer__pcache_stats_get(c, &cs);
  CHECK_EQ_INT(cs.evicted, 1); /* a, the least recently used, though in use */
  CHECK_EQ_INT(cs.packs, 4);
  CHECK(br_xfer__pcache_get(c, "packs/a", -1, 0, false) == NULL);
  size_t n;
  const uint8_t *bytes = br_xfer__pcpack_bytes(pa, &n);
  CHECK_EQ_INT(n, PC_PACK);
  CHECK(bytes[0] == 'a' && bytes[n - 1] == 'a'); /* still readable by its reader */
  br_xfer__pcache_release(c, pa);                /* freed now (ASan would tell) */
  /* too big for this cache: not kept */
  uint8_t big[70000] = {0};
  br_xfer__buf b = {0};
  CHECK_EQ_INT(br_xfer__buf_append(&b, big, sizeof big), BR_OK);
  br_xfer__pcache_put(c, "packs/big", &b);
  CHECK(br_xfer__pcache_get(c, "packs/big", -1, 0, false) == NULL);
  br_xfer__pcache_free(c);
  /* read whole from a file; a file shorter than said is not kept */
  c = br_xfer__pcache_new(256 * 1024, BR_XFER__PCACHE_IDLE);
  char *tmp = br_test_tmpdir("xfer-pcache-unit");
  int fd = pc_file(tmp);
  CHECK(br_xfer__pcache_get(c, "packs/f", fd, PC_PACK + 4096, true) == NULL);
  const br_xfer__pcpack *pf = br_xfer__pcache_get(c, "packs/f", fd, PC_PACK, true);
  CHECK(pf != NULL);
  bytes = br_xfer__pcpack_bytes(pf, &n);
  CHECK_EQ_INT(n, PC_PACK);
  for (size_t i = 0; i < n; i++) CHECK(bytes[i] == 'f');
  br_xfer__pcache_release(c, pf);
  close(fd);
  br_xfer__pcache_stats_get(c, &cs);
  CHECK_EQ_INT(cs.loaded, 1);
  CHECK_EQ_INT(cs.packs, 1);
  br_xfer__pcache_free(c);
  xu_done(tmp);
}

/* A pull's whole read may push out only packs nobody used for the idle
 * time (the depot's is a minute; here it is IDLE seconds): a snapshot
 * bigger than the cache, pulled in order, would otherwise drop each pack
 * just before it is wanted. A push's new pack takes the least recently
 * used one's place whatever its age. */
TEST(pack_cache_reads_push_out_only_idle_packs) {
  const double IDLE = 2.0; /* far above the few microseconds between the steps */
  br_xfer__pcache *c = br_xfer__pcache_new(256 * 1024, IDLE); /* four 64 KiB buffers */
  CHECK(c != NULL);
  const char *names[4] = {"packs/a", "packs/b", "packs/c", "packs/d"};
  for (int i = 0; i < 4; i++) pc_put(c, names[i], 'a' + i);
  char *tmp = br_test_tmpdir("xfer-pcache-idle");
  int fd = pc_file(tmp);
  /* full, and every pack used just now: the read is not kept */
  CHECK(br_xfer__pcache_get(c, "packs/f", fd, PC_PACK, true) == NULL);
  br_xfer__pcache_stats cs;
  br_xfer__pcache_stats_get(c, &cs);
  CHECK_EQ_INT(cs.loaded, 0);
  CHECK_EQ_INT(cs.evicted, 0);
  CHECK_EQ_INT(cs.packs, 4);
  /* once they are idle, the least recently used one makes room; b, used
   * again meanwhile, is the oldest by insertion but not by use */
  usleep((useconds_t)(IDLE * 1e6) + 100000);
  const br_xfer__pcpack *pb = br_xfer__pcache_get(c, "packs/b", -1, 0, false);
  CHECK(pb != NULL);
  br_xfer__pcache_release(c, pb);
  const br_xfer__pcpack *pa = br_xfer__pcache_get(c, "packs/a", -1, 0, false);
  CHECK(pa != NULL);
  br_xfer__pcache_release(c, pa);
  const br_xfer__pcpack *pf = br_xfer__pcache_get(c, "packs/f", fd, PC_PACK, true);
  CHECK(pf != NULL);
  size_t n;
  const uint8_t *bytes = br_xfer__pcpack_bytes(pf, &n);
  CHECK_EQ_INT(n, PC_PACK);
  for (size_t i = 0; i < n; i++) CHECK(bytes[i] == 'f');
  br_xfer__pcache_release(c, pf);
  br_xfer__pcache_stats_get(c, &cs);
  CHECK_EQ_INT(cs.loaded, 1);
  CHECK_EQ_INT(cs.evicted, 1);
  CHECK_EQ_INT(cs.packs, 4);
  CHECK(br_xfer__pcache_get(c, "packs/c", -1, 0, false) == NULL); /* c went: idle longest */
  const char *stay[3] = {"packs/a", "packs/b", "packs/d"};
  for (int i = 0; i < 3; i++) {
    const br_xfer__pcpack *p = br_xfer__pcache_get(c, stay[i], -1, 0, false);
    CHECK(p != NULL);
    br_xfer__pcache_release(c, p);
  }
  /* a push's pack pushes out the least recently used (f now, just read:
   * a, b and d were used after it), idle or not */
  pc_put(c, "packs/g", 'g');
  br_xfer__pcache_stats_get(c, &cs);
  CHECK_EQ_INT(cs.kept, 5);
  CHECK_EQ_INT(cs.evicted, 2);
  CHECK(br_xfer__pcache_get(c, "packs/f", -1, 0, false) == NULL);
  close(fd);
  br_xfer__pcache_free(c);
  xu_done(tmp);
}

typedef struct big_res {
  uint8_t *buf;
  size_t cap, len;
  http_res h; /* status and Content-Range */
} big_res;

static size_t big_wcb(char *b, size_t s, size_t n, void *ud) {
  big_res *r = ud;
  size_t len = s * n;
  if (len > r->cap - r->len) return 0;
  memcpy(r->buf + r->len, b, len);
  r->len += len;
  return len;
}

/* A GET of a chunk too large for http_res. */
static void get_big(const xu_depot *x, const char *path, const char *range, big_res *r) {
  r->len = 0;
  memset(&r->h, 0, sizeof r->h);
  CURL *c = curl_easy_init();
  char url[512], rh[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", x->port, path);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, big_wcb);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, hcb);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r->h);
  struct curl_slist *h = curl_slist_append(NULL, "Authorization: Bearer " XU_TOKEN);
  if (range) {
    snprintf(rh, sizeof rh, "Range: %s", range);
    h = curl_slist_append(h, rh);
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->h.status);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
}

/* The ranges asked of a large chunk: whole, from an unaligned byte across
 * the depot's reads (256 KiB from the chunk's start), the tail, one byte. */
static void big_ranges(const xu_depot *x, const char *path, const uint8_t *data, size_t size,
                       big_res *r) {
  get_big(x, path, NULL, r);
  CHECK_EQ_INT(r->h.status, 200);
  CHECK_EQ_INT(r->len, size);
  CHECK(memcmp(r->buf, data, size) == 0);
  static const long long ranges[][2] = {
      {4097, 2500000}, {1048575, 1048577}, {3000000, -1}, {0, 0}, {1, 1048576}};
  for (size_t i = 0; i < sizeof ranges / sizeof *ranges; i++) {
    long long a = ranges[i][0], b = ranges[i][1] < 0 ? (long long)size - 1 : ranges[i][1];
    char range[64], want[96];
    if (ranges[i][1] < 0) snprintf(range, sizeof range, "bytes=%lld-", a);
    else snprintf(range, sizeof range, "bytes=%lld-%lld", a, b);
    snprintf(want, sizeof want, "bytes %lld-%lld/%zu", a, b, size);
    get_big(x, path, range, r);
    CHECK_EQ_INT(r->h.status, 206);
    CHECK_EQ_STR(r->h.content_range, want);
    CHECK_EQ_INT(r->len, (size_t)(b - a + 1));
    CHECK(memcmp(r->buf, data + a, r->len) == 0);
  }
}

/* Whether fd's first len bytes leave the page cache within 10 s, dropped
 * (by the depot behind its reads, the last ones when MHD lets go of the
 * response), not taken by the kernel's reclaim: a reclaimed page leaves a shadow entry,
 * counted as evicted; a dropped one leaves none. */
static bool dropped_from_cache(int fd, size_t len) {
  br_xfer__pages ps;
  for (int i = 0; i < 1000; i++) {
    if (br_xfer__page_stat(fd, 0, (int64_t)len, &ps)) return false;
    if (ps.cached == 0) return ps.evicted == 0;
    usleep(10000);
  }
  return false;
}

TEST(large_chunk_served_cold_and_cached) {
  /* A loose chunk not in the page cache is read through it and leaves it
   * once sent: a pull of cold caches does not push the depot's hot objects
   * out. One that was cached goes with sendfile and stays. Both give the
   * same bytes and ranges. */
  xu_case tc;
  xu_case_start(&tc, "xfer-depot-big", NULL);
  size_t size = 3 * 1024 * 1024 + 12345;
  uint8_t *data = malloc(size);
  big_res r = {.buf = malloc(size), .cap = size};
  CHECK(data && r.buf);
  xu_fill(data, size, 9);
  br_xfer_digest d;
  upload(&tc.x, data, size, &d);
  char hex[65], path[128], *obj = NULL;
  br_xfer_digest_hex(&d, hex);
  snprintf(path, sizeof path, "/v1/chunk/%s", hex);
  if (asprintf(&obj, "%s/objects/%.2s/%s", tc.x.root, hex, hex) < 0) abort();
  int fd = open(obj, O_RDONLY);
  CHECK(fd >= 0);
  CHECK(fsync(fd) == 0); /* a dirty page would stay */
  CHECK_EQ_INT(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0); /* cold */
  br_xfer__pages ps;
  bool known = br_xfer__page_stat(fd, 0, (int64_t)size, &ps) == 0; /* cachestat: Linux 6.5 */
  if (known) CHECK_EQ_INT(ps.cached, 0);
  get_big(&tc.x, path, NULL, &r);
  CHECK(r.h.status == 200 && r.len == size && memcmp(r.buf, data, size) == 0);
  if (known) CHECK(dropped_from_cache(fd, size));
  /* (a range asked while an earlier request is still ending may find the
   * bytes cached, and leave them so) */
  big_ranges(&tc.x, path, data, size, &r);
  uint8_t *back = malloc(size);
  CHECK(back && br_xfer__pread_all(fd, back, size, 0) == 0); /* now cached */
  big_ranges(&tc.x, path, data, size, &r);
  if (known) CHECK_EQ_INT(br_xfer__cached(fd, 0, (int64_t)size), 1);
  close(fd);
  free(back);
  free(obj);
  free(data);
  free(r.buf);
  xu_case_done(&tc);
}

TEST(commit_rules) {
  xu_case tc;
  xu_case_start(&tc, "xfer-depot-commit", NULL);
  uint8_t data[3000];
  xu_fill(data, sizeof data, 4);
  br_xfer_digest d;
  br_xfer_sha256(data, sizeof data, &d);
  char hex[65], fhex[65], m[1024];
  br_xfer_digest fd_;
  br_xfer_file_digest(&d, 1, &fd_);
  br_xfer_digest_hex(&d, hex);
  br_xfer_digest_hex(&fd_, fhex);
  snprintf(m, sizeof m,
           "{\"format\":1,\"chunk_size\":65536,\"files\":[{\"path\":\"f.0001.exr\","
           "\"size\":3000,\"mode\":420,\"digest\":\"%s\",\"chunks\":[\"%s\"]}]}",
           fhex, hex);
  http_res r;
  http(&tc.x, "POST", "/v1/snapshot?name=shot/a", XU_TOKEN, m, strlen(m), NULL, &r);
  CHECK_EQ_INT(r.status, 409); /* the chunk is not there yet */
  CHECK_CONTAINS(r.body, hex);
  upload(&tc.x, data, sizeof data, &d);
  http(&tc.x, "POST", "/v1/snapshot?name=shot/a", XU_TOKEN, m, strlen(m), NULL, &r);
  CHECK_EQ_INT(r.status, 200);
  CHECK_CONTAINS(r.body, "\"version\":1");
  http(&tc.x, "POST", "/v1/snapshot?name=shot/a", XU_TOKEN, m, strlen(m), NULL, &r);
  CHECK_CONTAINS(r.body, "\"version\":2");
  http(&tc.x, "GET", "/v1/snapshot?name=shot/a", XU_TOKEN, NULL, 0, NULL, &r);
  CHECK_EQ_INT(r.status, 200);
  CHECK_EQ_STR(r.version, "2");
  http(&tc.x, "GET", "/v1/snapshot?name=shot/a&version=1", XU_TOKEN, NULL, 0, NULL, &r);
  CHECK_EQ_STR(r.version, "1");
  http(&tc.x, "GET", "/v1/snapshot?name=shot/a&version=9", XU_TOKEN, NULL, 0, NULL, &r);
  CHECK_EQ_INT(r.status, 404);
  /* v2 was v1 byte for byte, taken without a second check. With no version
   * left to name the chunk and a gc past, the same manifest is checked
   * again, and refused. */
  br_error err;
  br_depot_gc_result g;
  CHECK_EQ_INT(br_depot_rm(tc.x.root, "shot/a", 2, &err), BR_OK);
  http(&tc.x, "POST", "/v1/snapshot?name=shot/a", XU_TOKEN, m, strlen(m), NULL, &r);
  CHECK_CONTAINS(r.body, "\"version\":3"); /* v1 is the latest now, and the same */
  CHECK_EQ_INT(br_depot_rm(tc.x.root, "shot/a", 1, &err), BR_OK);
  CHECK_EQ_INT(br_depot_rm(tc.x.root, "shot/a", 3, &err), BR_OK);
  CHECK_EQ_INT(br_depot_gc(tc.x.root, 0, false, &g, &err), BR_OK);
  CHECK_EQ_INT(g.objects_removed, 1);
  http(&tc.x, "POST", "/v1/snapshot?name=shot/a", XU_TOKEN, m, strlen(m), NULL, &r);
  CHECK_EQ_INT(r.status, 409);
  CHECK_CONTAINS(r.body, hex);
  /* Bad names and hostile manifests. */
  http(&tc.x, "POST", "/v1/snapshot?name=../etc", XU_TOKEN, m, strlen(m), NULL, &r);
  CHECK_EQ_INT(r.status, 400);
  http(&tc.x, "GET", "/v1/snapshot?name=../../etc/passwd", XU_TOKEN, NULL, 0, NULL, &r);
  CHECK_EQ_INT(r.status, 400);
  const char *evil =
      "{\"format\":1,\"chunk_size\":65536,\"files\":[{\"path\":\"../../x\",\"size\":0,"
      "\"digest\":\"" D64 "\",\"chunks\":[]}]}";
  http(&tc.x, "POST", "/v1/snapshot?name=evil", XU_TOKEN, evil, strlen(evil), NULL, &r);
  CHECK_EQ_INT(r.status, 400);
  CHECK_CONTAINS(r.body, "unsafe path");
  http(&tc.x, "POST", "/v1/snapshot?name=evil", XU_TOKEN, "{", 1, NULL, &r);
  CHECK_EQ_INT(r.status, 400);
  xu_case_done(&tc);
}

TEST(request_size_limits) {
  char *tmp = br_test_tmpdir("xfer-depot-limits");
  xu_depot x;
  memset(&x, 0, sizeof x);
  x.root = xu_path(tmp, "depot");
  x.tokens = xu_path(tmp, "tokens");
  xu_write_file(x.tokens, XU_TOKEN "\n", strlen(XU_TOKEN) + 1);
  br_depot_opts o = {0};
  o.root = x.root;
  o.listen = "127.0.0.1:0";
  o.token_file = x.tokens;
  o.max_request = 100000;
  o.max_manifest = 50000;
  CHECK_EQ_INT(br_depot_start(&o, &x.d, NULL), BR_OK);
  x.port = br_depot_port(x.d);
  size_t big = 300000;
  char *junk = malloc(big);
  memset(junk, 'x', big);
  http_res r;
  http(&x, "POST", "/v1/chunks", XU_TOKEN, junk, big, NULL, &r);
  CHECK_EQ_INT(r.status, 413);
  http(&x, "POST", "/v1/snapshot?name=huge", XU_TOKEN, junk, 60000, NULL, &r);
  CHECK_EQ_INT(r.status, 413);
  /* Junk in place of a digest list is refused. */
  http(&x, "POST", "/v1/missing", XU_TOKEN, junk, 99000, NULL, &r);
  CHECK_EQ_INT(r.status, 400);
  /* The depot still works after refusals. */
  http(&x, "POST", "/v1/missing", XU_TOKEN, "{\"chunks\":[]}", 13, NULL, &r);
  CHECK_EQ_INT(r.status, 200);
  free(junk);
  xu_depot_stop(&x);
  xu_done(tmp);
}

typedef struct committer {
  xu_depot *x;
  const char *m;
  int version;
} committer;

static void *commit_thread(void *arg) {
  committer *c = arg;
  http_res r;
  http(c->x, "POST", "/v1/snapshot?name=race", XU_TOKEN, c->m, strlen(c->m), NULL, &r);
  if (r.status == 200) sscanf(strstr(r.body, "\"version\":") + 10, "%d", &c->version);
  return NULL;
}

TEST(concurrent_commits_take_consecutive_versions) {
  xu_case tc;
  xu_case_start(&tc, "xfer-depot-race", NULL);
  const char *m = "{\"format\":1,\"chunk_size\":65536,\"files\":[]}";
  enum { N = 8 };
  committer c[N];
  pthread_t th[N];
  for (int i = 0; i < N; i++) {
    c[i].x = &tc.x;
    c[i].m = m;
    c[i].version = 0;
    pthread_create(&th[i], NULL, commit_thread, &c[i]);
  }
  int seen[N + 1] = {0};
  for (int i = 0; i < N; i++) {
    pthread_join(th[i], NULL);
    CHECK(c[i].version >= 1 && c[i].version <= N);
    seen[c[i].version]++;
  }
  for (int v = 1; v <= N; v++) CHECK_EQ_INT(seen[v], 1);
  xu_case_done(&tc);
}

TEST(bad_listen_and_missing_token_file) {
  char *tmp = br_test_tmpdir("xfer-depot-bad");
  br_depot_opts o = {0};
  br_depot *d = NULL;
  br_error err;
  br_error_clear(&err);
  o.root = tmp;
  o.listen = "127.0.0.1:0";
  CHECK(br_depot_start(&o, &d, &err) != BR_OK); /* no token file */
  o.token_file = "/nonexistent/tokens";
  CHECK(br_depot_start(&o, &d, &err) != BR_OK);
  o.listen = "nohost";
  CHECK(br_depot_start(&o, &d, &err) != BR_OK);
  CHECK(d == NULL);
  /* a port in use is refused, not shared (SO_REUSEPORT would split clients
   * between two depots with different roots) */
  o.token_file = xu_token_file(tmp, "tokens", XU_TOKEN);
  o.listen = "127.0.0.1:0";
  br_depot *first = NULL;
  CHECK_EQ_INT(br_depot_start(&o, &first, &err), BR_OK);
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", br_depot_port(first));
  o.listen = listen;
  br_error_clear(&err);
  CHECK(br_depot_start(&o, &d, &err) != BR_OK);
  CHECK(d == NULL);
  CHECK(strstr(err.msg, "Address already in use") != NULL);
  br_depot_stop(first);
  free((char *)o.token_file);
  xu_done(tmp);
}

/* A host server of its own (as braid server would be) that mounts the depot. */
typedef struct host {
  br_depot *d;
} host;

static enum MHD_Result host_handler(void *cls, struct MHD_Connection *c, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls) {
  host *h = cls;
  if (br_depot_owns_url(url))
    return br_depot_handle(h->d, c, url, method, upload_data, upload_data_size, con_cls)
               ? MHD_YES
               : MHD_NO;
  static char hello[] = "host server";
  struct MHD_Response *r =
      MHD_create_response_from_buffer(strlen(hello), hello, MHD_RESPMEM_PERSISTENT);
  enum MHD_Result ret = MHD_queue_response(c, 200, r);
  MHD_destroy_response(r);
  return ret;
}

static void host_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                           enum MHD_RequestTerminationCode toe) {
  br_depot_request_done(con_cls);
}

TEST(depot_mounted_in_another_server) {
  char *tmp = br_test_tmpdir("xfer-depot-mount");
  char *root = xu_path(tmp, "depot"), *tokens = xu_path(tmp, "tokens");
  xu_write_file(tokens, XU_TOKEN "\n", strlen(XU_TOKEN) + 1);
  br_depot_opts o = {0};
  o.root = root;
  o.token_file = tokens;
  host h = {NULL};
  CHECK_EQ_INT(br_depot_open(&o, &h.d, NULL), BR_OK);
  CHECK_EQ_INT(br_depot_port(h.d), 0);
  struct MHD_Daemon *mhd = MHD_start_daemon(
      MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL,
      host_handler, &h, MHD_OPTION_NOTIFY_COMPLETED, host_completed, NULL, MHD_OPTION_END);
  CHECK(mhd != NULL);
  xu_depot x;
  memset(&x, 0, sizeof x);
  x.port = MHD_get_daemon_info(mhd, MHD_DAEMON_INFO_BIND_PORT)->port;
  http_res r;
  http(&x, "GET", "/", NULL, NULL, 0, NULL, &r);
  CHECK_CONTAINS(r.body, "host server");
  http(&x, "GET", "/v1/snapshot?name=a", NULL, NULL, 0, NULL, &r);
  CHECK_EQ_INT(r.status, 401);
  char *src = xu_path(tmp, "src"), *dst = xu_path(tmp, "dst"), *ref = NULL;
  xu_make_file(src, "f.0001.exr", 50000, 1);
  if (asprintf(&ref, "depot://127.0.0.1:%d/mounted/x", x.port) < 0) abort();
  br_xfer_opts xo;
  xu_opts(&xo, tmp);
  xu_push_ok(src, ref, &xo, NULL);
  xu_pull_ok(ref, dst, &xo, NULL);
  CHECK_EQ_INT(xu_tree_diff(src, dst), 0);
  MHD_stop_daemon(mhd);
  br_depot_stop(h.d);
  free(src), free(dst), free(ref), free(root), free(tokens);
  xu_done(tmp);
}

TEST(fsck_finds_corrupt_objects) {
  char *tmp = br_test_tmpdir("xfer-depot-fsck");
  xu_depot x;
  xu_depot_start(&x, tmp);
  uint8_t small[3000], big[1200 * 1024];
  xu_fill(small, sizeof small, 1);
  xu_fill(big, sizeof big, 2);
  br_xfer_digest ds, db;
  upload(&x, small, sizeof small, &ds); /* packed */
  upload(&x, big, sizeof big, &db);     /* loose */
  xu_depot_stop(&x);
  char *root = xu_path(tmp, "depot");
  br_xfer__store st;
  CHECK_EQ_INT(br_xfer__store_open(&st, root, NULL), BR_OK);
  int64_t n = 0;
  CHECK_EQ_INT(br_xfer__store_fsck(&st, &n, NULL), BR_OK);
  CHECK_EQ_INT(n, 2);
  /* Flip a byte of the packed chunk: fsck names it. */
  int fd;
  int64_t off, len, raw;
  CHECK_EQ_INT(br_xfer__store_open_object(&st, &ds, &fd, &off, &len, &raw), BR_OK);
  close(fd);
  br_error err;
  br_error_clear(&err);
  char *cmd = NULL;
  if (asprintf(&cmd, "f=$(ls '%s'/packs/*.pack) && printf 'X' | dd of=\"$f\" bs=1 seek=%lld "
                     "conv=notrunc status=none",
               root, (long long)off + 10) < 0)
    abort();
  CHECK_EQ_INT(system(cmd), 0);
  free(cmd);
  CHECK_EQ_INT(br_xfer__store_fsck(&st, &n, &err), BR_EIO);
  CHECK_CONTAINS(err.msg, "do not match");
  br_xfer__store_close(&st);
  /* The command says the same. */
  const char *bin = getenv("BRAID_BIN");
  if (asprintf(&cmd, "'%s' depot fsck --root '%s' 2>&1 | grep -q 'do not match'", bin, root) <
      0)
    abort();
  CHECK_EQ_INT(system(cmd), 0);
  free(cmd);
  free(root);
  xu_done(tmp);
}

typedef struct packer {
  br_xfer__store *st;
  pthread_barrier_t *go; /* the threads write each round's packs together */
  int id;
  br_xfer_digest ds[10][8];
  int rc[10];
  br_error err[10];
} packer;

enum { PACKERS = 6, POISON_OFF = 12345, ROLLBACK_OFF = 54321 };

/* Ten packs of eight chunks; the third pack of odd threads is poisoned: its
 * first entry says offset POISON_OFF, which the test's trigger refuses. In
 * the sixth round, the last thread's pack says ROLLBACK_OFF, on which a
 * trigger rolls back the whole transaction (as a full disk may). */
static void *packer_main(void *arg) {
  packer *p = arg;
  for (int k = 0; k < 10; k++) {
    uint8_t data[8 * 100];
    br_xfer__packed objs[8];
    xu_fill(data, sizeof data, (uint64_t)(p->id * 100 + k));
    for (int i = 0; i < 8; i++) {
      br_xfer_sha256(data + i * 100, 100, &p->ds[k][i]);
      objs[i] = (br_xfer__packed){p->ds[k][i], i * 100, 100, 0};
    }
    if (k == 2 && p->id % 2) objs[0].off = POISON_OFF;
    if (k == 5 && p->id == PACKERS - 1) objs[0].off = ROLLBACK_OFF;
    br_xfer__buf pack = {0};
    CHECK_EQ_INT(br_xfer__buf_append(&pack, data, sizeof data), 0);
    br_error_clear(&p->err[k]);
    pthread_barrier_wait(p->go);
    p->rc[k] = br_xfer__pack_write(p->st, &pack, objs, 8, NULL, &p->err[k]);
    br_xfer__buf_free(&pack);
    /* what was just indexed is found at once, by the lookups' connection */
    if (p->rc[k] == BR_OK)
      for (int i = 0; i < 8; i++) CHECK(br_xfer__store_has(p->st, &p->ds[k][i]));
  }
  return NULL;
}

TEST(packs_written_at_once_are_indexed_together) {
  /* Uploads that end at the same time share an index commit (one sync for
   * all); a pack whose indexing fails takes only itself back, and the
   * others of its commit stay. Every pack indexed is found at once. */
  char *tmp = br_test_tmpdir("xfer-depot-group");
  char *root = xu_path(tmp, "depot");
  br_xfer__store st;
  CHECK_EQ_INT(br_xfer__store_open(&st, root, NULL), BR_OK);
  char *db = xu_path(root, "index.db");
  sqlite3 *t = NULL;
  CHECK_EQ_INT(sqlite3_open(db, &t), SQLITE_OK);
  CHECK_EQ_INT(sqlite3_exec(t,
                            "CREATE TRIGGER poison BEFORE INSERT ON objects WHEN NEW.off = "
                            "12345 BEGIN SELECT RAISE(ABORT, 'poisoned by the test'); END;"
                            "CREATE TRIGGER undo BEFORE INSERT ON objects WHEN NEW.off = "
                            "54321 BEGIN SELECT RAISE(ROLLBACK, 'rolled back by the test'); END",
                            NULL, NULL, NULL),
               SQLITE_OK);
  sqlite3_close(t);
  packer *ps = calloc(PACKERS, sizeof *ps);
  pthread_t th[PACKERS];
  pthread_barrier_t go;
  pthread_barrier_init(&go, NULL, PACKERS);
  for (int i = 0; i < PACKERS; i++) {
    ps[i] = (packer){.st = &st, .go = &go, .id = i};
    pthread_create(&th[i], NULL, packer_main, &ps[i]);
  }
  for (int i = 0; i < PACKERS; i++) pthread_join(th[i], NULL);
  pthread_barrier_destroy(&go);
  /* A pack said indexed is, with its bytes; one that failed is not. The
   * packs that shared the rolled-back transaction failed with it. */
  int failed = 0;
  for (int i = 0; i < PACKERS; i++)
    for (int k = 0; k < 10; k++) {
      bool poisoned = k == 2 && i % 2, undone = k == 5 && i == PACKERS - 1;
      if (poisoned) CHECK_CONTAINS(ps[i].err[k].msg, "poisoned by the test");
      if (undone) CHECK_CONTAINS(ps[i].err[k].msg, "rolled back by the test");
      if (poisoned || undone) CHECK_EQ_INT(ps[i].rc[k], BR_EIO);
      else if (ps[i].rc[k] != BR_OK) CHECK_CONTAINS(ps[i].err[k].msg, "rolled back by the test");
      bool ok = ps[i].rc[k] == BR_OK;
      failed += !ok;
      for (int c = 0; c < 8; c++) {
        int fd;
        int64_t off, len, raw;
        int rc = br_xfer__store_open_object(&st, &ps[i].ds[k][c], &fd, &off, &len, &raw);
        CHECK_EQ_INT(rc, ok ? BR_OK : BR_ENOTFOUND);
        if (rc != BR_OK) continue;
        uint8_t back[100], want[8 * 100];
        xu_fill(want, sizeof want, (uint64_t)(i * 100 + k));
        CHECK_EQ_INT(len, 100);
        CHECK_EQ_INT(br_xfer__pread_all(fd, back, 100, off), 0);
        CHECK(memcmp(back, want + c * 100, 100) == 0);
        close(fd);
      }
    }
  CHECK(failed >= PACKERS / 2 + 1);
  /* a failed pack's file is gone: one file per pack indexed */
  char *packs = xu_path(root, "packs");
  CHECK_EQ_INT(xu_count_prefix(packs, ""), PACKERS * 10 - failed);
  int64_t n = 0;
  CHECK_EQ_INT(br_xfer__store_fsck(&st, &n, NULL), BR_OK);
  CHECK_EQ_INT(n, (PACKERS * 10 - failed) * 8);
  br_xfer__store_close(&st);
  free(packs);
  free(ps);
  free(db);
  free(root);
  xu_done(tmp);
}
