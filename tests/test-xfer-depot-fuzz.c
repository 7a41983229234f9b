/* The depot's HTTP surface under damaged input: seeded mutations of valid
 * requests to every endpoint (the missing and fetch lists, a snapshot
 * commit, an upload bundle, the admin rm and gc bodies, chunk GETs with
 * odd ranges, snapshot GETs with odd names), sent with the tokens allowed
 * to make them. The depot runs in this process, so ASan and UBSan watch
 * it. Every answer must be a success or a client error, never a 5xx or a
 * dropped connection; afterwards the depot still checks clean (fsck) and
 * serves a pull of the snapshot it held. BRAID_FUZZ_SEED repeats a run. */
#include "xfer-util.h"

#include "json-mutate.h"
#include "xfer/xfer_int.h"

#define ADMIN "fuzz-admin-token"
#define D64_ZERO "0000000000000000000000000000000000000000000000000000000000000000"

static char base[64]; /* "http://127.0.0.1:PORT" */
static int by_class[6];

/* A request to the depot: a POST with a body, else a GET. */
static long call(const char *token, const char *path, const void *body, size_t len,
                 const char *range, jm_answer *a) {
  return jm_call(base, token, NULL, path, body, len, NULL, range, a);
}

/* Mutations of a JSON body posted to path. */
static void storm_json(const char *token, const char *path, const char *seed_text, long expect,
                       int count) {
  jm_answer a;
  long st = call(token, path, seed_text, strlen(seed_text), NULL, &a);
  if (st != expect) fprintf(stderr, "seed %s: %ld %s\n", path, st, a.buf);
  CHECK_EQ_INT(st, expect);
  json_t *seed = json_loads(seed_text, 0, NULL);
  CHECK(seed != NULL);
  for (int i = 0; i < count; i++) {
    size_t len;
    char *text = jm_mutated_text(seed, &len);
    st = call(token, path, text, len, NULL, &a);
    jm_check(st, "POST", path, text, len, &a, by_class);
    free(text);
  }
  json_decref(seed);
}

/* Byte-level damage to a binary body: cut, flipped, a run overwritten,
 * lengths in headers made huge. */
static void storm_bytes(const char *token, const char *path, const uint8_t *seed, size_t len,
                        long expect, int count) {
  jm_answer a;
  long st = call(token, path, seed, len, NULL, &a);
  if (st != expect) fprintf(stderr, "seed %s: %ld %s\n", path, st, a.buf);
  CHECK_EQ_INT(st, expect);
  uint8_t *b = malloc(len + 64);
  for (int i = 0; i < count; i++) {
    memcpy(b, seed, len);
    size_t n = len;
    switch (jm_pick(4)) {
    case 0: n = jm_pick(len); break;
    case 1:
      for (int k = 0; k < 1 + (int)jm_pick(8); k++) b[jm_pick(n)] ^= (uint8_t)(1u << jm_pick(8));
      break;
    case 2: {
      size_t at = jm_pick(n), run = 1 + jm_pick(16);
      for (size_t k = at; k < n && k < at + run; k++) b[k] = (uint8_t)(jm_pick(2) ? 0xff : 0);
      break;
    }
    default: /* a few bytes more */
      for (int k = 0; k < 1 + (int)jm_pick(60); k++) b[n++] = (uint8_t)jm_next();
      break;
    }
    st = call(token, path, b, n, NULL, &a);
    jm_check(st, "POST", path, NULL, 0, &a, by_class);
  }
  free(b);
}

TEST(depot_api_survives_mutated_requests) {
  jm_start(0xdeb07f00dULL);
  char *tmp = br_test_tmpdir("xfer-depot-fuzz");
  xu_depot x;
  xu_depot_start_with(&x, tmp, 0, ADMIN);
  snprintf(base, sizeof base, "http://127.0.0.1:%d", x.port);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  br_error err;
  br_error_clear(&err);
  /* a snapshot to work on: small files (packed) and one of two chunks */
  char *src = xu_path(tmp, "src");
  for (int i = 0; i < 6; i++) {
    char rel[32];
    snprintf(rel, sizeof rel, "f.%04d.bgeo", i + 1);
    xu_make_file(src, rel, 3000 + (size_t)i * 1000, (uint64_t)i + 1);
  }
  xu_make_file(src, "big.vdb", 70000, 99);
  br_xfer_opts xo;
  xu_opts(&xo, tmp);
  xo.chunk_size = 65536;
  char *ref = xu_ref(x.url, "shot/fz");
  xu_push_ok(src, ref, &xo, NULL);
  jm_answer a;
  CHECK_EQ_INT(call(XU_TOKEN, "/v1/snapshot?name=shot/fz", NULL, 0, NULL, &a), 200);
  char *manifest = strdup(a.buf);
  br_xfer_manifest *m = NULL;
  CHECK_EQ_INT(br_xfer_manifest_parse(manifest, strlen(manifest), &m, &err), BR_OK);
  CHECK(m->nentries >= 7);
  /* the digests of two chunks: a small file's, and the big file's first */
  char h1[BR_XFER_HEX_LEN + 1] = "", h2[BR_XFER_HEX_LEN + 1] = "";
  for (size_t i = 0; i < m->nentries; i++) {
    if (!m->entries[i].nchunks) continue;
    if (m->entries[i].size > 65536) br_xfer_digest_hex(&m->entries[i].chunks[0], h2);
    else if (!h1[0]) br_xfer_digest_hex(&m->entries[i].chunks[0], h1);
  }
  CHECK(h1[0] && h2[0]);
  char list[400], fetch[400];
  snprintf(list, sizeof list, "{\"chunks\":[\"%s\",\"%s\",\"%s\"]}", h1, h2, D64_ZERO);
  snprintf(fetch, sizeof fetch, "{\"chunks\":[\"%s\",\"%s\"],\"zstd\":true}", h1, h1);
  int N = 600;
  storm_json(XU_TOKEN, "/v1/missing", list, 200, N);
  storm_json(XU_TOKEN, "/v1/fetch", fetch, 200, N);
  storm_json(XU_TOKEN, "/v1/snapshot?name=shot/fz2", manifest, 200, N);
  storm_json(ADMIN, "/v1/admin/rm", "{\"versions\":[{\"name\":\"nothing/here\",\"version\":1}]}",
             404, N / 2);
  storm_json(ADMIN, "/v1/admin/gc", "{\"grace_s\":86400,\"dry_run\":true}", 200, N / 4);
  storm_json(XU_TOKEN, "/v1/list", "{\"name\":\"shot\",\"detail\":true}", 200, N / 2);
  /* an upload: a bundle of three chunks, one compressible */
  br_xfer__buf bundle = {0};
  CHECK_EQ_INT(br_xfer__bundle_begin(&bundle), BR_OK);
  uint8_t data[3][5000];
  for (int i = 0; i < 3; i++) {
    xu_fill(data[i], sizeof data[i], 1000 + (uint64_t)i);
    if (i == 2) memset(data[i], 'z', sizeof data[i]);
    br_xfer_digest dg;
    br_xfer_sha256(data[i], sizeof data[i], &dg);
    CHECK_EQ_INT(br_xfer__bundle_add(&bundle, &dg, data[i], sizeof data[i], true, NULL), BR_OK);
  }
  storm_bytes(XU_TOKEN, "/v1/chunks", bundle.data, bundle.len, 200, N);
  br_xfer__buf_free(&bundle);
  /* chunk GETs: odd ranges, odd digests */
  static const char *ranges[] = {"bytes=0-10", "bytes=-5", "bytes=999999999-", "bytes=5-1",
                                 "bytes=0-0,2-3", "bytes=", "bytes=-", "items=0-1",
                                 "bytes=18446744073709551615-", "bytes=-0", "bytes=1-2-3",
                                 "bytes=0-9223372036854775807", " bytes = 1 - 2 "};
  char path[300];
  for (int i = 0; i < N; i++) {
    const char *h = jm_pick(2) ? h1 : h2;
    char hex[BR_XFER_HEX_LEN + 8];
    snprintf(hex, sizeof hex, "%s", h);
    if (jm_pick(3) == 0) hex[jm_pick(BR_XFER_HEX_LEN)] = "gG/.Z0-_"[jm_pick(8)];
    if (jm_pick(5) == 0) hex[jm_pick(BR_XFER_HEX_LEN)] = 0;
    snprintf(path, sizeof path, "/v1/chunk/%s", hex);
    const char *r = jm_pick(4) ? ranges[jm_pick(sizeof ranges / sizeof *ranges)] : NULL;
    long st = call(XU_TOKEN, path, NULL, 0, r, &a);
    jm_check(st, "GET", path, r, r ? strlen(r) : 0, &a, by_class);
  }
  /* snapshot GETs: odd names and versions */
  static const char *names[] = {"shot/fz",   "shot/fz@v1", "shot/fz@v0", "shot/fz@v-1",
                                "../etc",    "/abs",       "",           "a//b",
                                "shot/fz@latest", "shot/fz@v99999999999999999999",
                                "con",       "a%00b",      "%2e%2e/x"};
  for (int i = 0; i < N; i++) {
    const char *nm = names[jm_pick(sizeof names / sizeof *names)];
    const char *at = strchr(nm, '@');
    if (at)
      snprintf(path, sizeof path, "/v1/snapshot?name=%.*s&version=%s", (int)(at - nm), nm,
               at + 2);
    else snprintf(path, sizeof path, "/v1/snapshot?name=%s", nm);
    long st = call(XU_TOKEN, path, NULL, 0, NULL, &a);
    jm_check(st, "GET", path, NULL, 0, &a, by_class);
  }
  printf("%d requests: %d answered 2xx, %d 4xx\n", by_class[2] + by_class[4], by_class[2],
         by_class[4]);
  CHECK(by_class[2] > 0 && by_class[4] > 0);
  /* every version a mutated commit made is one a pull can check out */
  char *ref2 = xu_ref(x.url, "shot/fz2");
  int64_t latest = 0;
  CHECK_EQ_INT(call(XU_TOKEN, "/v1/snapshot?name=shot/fz2", NULL, 0, NULL, &a), 200);
  for (int64_t v = 1;; v++) {
    snprintf(path, sizeof path, "/v1/snapshot?name=shot/fz2&version=%lld", (long long)v);
    if (call(XU_TOKEN, path, NULL, 0, NULL, &a) != 200) break;
    latest = v;
    char vref[300], vdir[64];
    snprintf(vref, sizeof vref, "%s@v%lld", ref2, (long long)v);
    snprintf(vdir, sizeof vdir, "fz2-v%lld", (long long)v);
    char *dir = xu_path(tmp, vdir);
    xu_pull_ok(vref, dir, &xo, NULL);
    free(dir);
  }
  printf("%lld versions committed from mutated manifests, all pulled\n", (long long)latest);
  CHECK(latest >= 1);
  free(ref2);
  /* still whole: the snapshot pulls back equal, and the store checks clean */
  char *dst = xu_path(tmp, "dst");
  xu_pull_ok(ref, dst, &xo, NULL);
  CHECK_EQ_INT(xu_tree_diff(src, dst), 0);
  char *root = strdup(x.root);
  xu_depot_stop(&x);
  int64_t checked = 0;
  CHECK_EQ_INT(br_depot_fsck(root, &checked, &err), BR_OK);
  CHECK(checked > 0);
  curl_global_cleanup();
  br_xfer_manifest_free(m);
  free(manifest), free(ref), free(src), free(dst), free(root);
  xu_done(tmp);
}
