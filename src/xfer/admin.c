/* Administering a running depot over HTTP (the client of depot.c's
 * /v1/admin/rm and /v1/admin/gc): one blocking JSON call each, with the
 * HTTP client of src/http, for tools that remove versions or collect
 * garbage without the command line (which is built on these).
 *
 * No retries: an admin acts once and sees the outcome. Errors carry the
 * depot's message and the HTTP status; a depot that could not be reached,
 * or was too busy (503), is BR_ENET, so a caller can tell "try again
 * later" from "this will fail again". */
#include "xfer_int.h"

#include <braid/http.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An rm of many versions may wait on the disk a while; a gc takes as long
 * as the depot's size asks, so it has no limit. */
#define RM_TIMEOUT_S 600.0
#define GC_TIMEOUT_S 0.0
/* the depot reads back and hashes up to 8 chunks of up to 64 MiB */
#define VERIFY_TIMEOUT_S 120.0

/* A refusal's code: what the caller may do about it. */
static int code_of_status(int st) {
  if (st == 401 || st == 403) return BR_EAUTH;
  if (st == 404) return BR_ENOTFOUND;
  if (st == 503) return BR_ENET; /* busy: later may do */
  if (st / 100 == 4) return BR_EINVAL;
  return BR_EIO;
}

/* POSTs body to path on the depot: BR_OK and *out (an object, new
 * reference) on a 2xx answer; else a negative code with err filled, *out
 * still holding the answer when one came (the caller drops it). */
static int admin_call(const char *depot, const br_xfer_opts *opts, const char *path,
                      const json_t *body, double timeout_s, json_t **out, br_error *err) {
  *out = NULL;
  if (opts && opts->cancel && __atomic_load_n(opts->cancel, __ATOMIC_ACQUIRE))
    return br_error_set(err, BR_ECANCEL, "cancelled");
  char *base = br_xfer_depot_base(depot);
  if (!base)
    return br_error_set(err, BR_EINVAL, "'%s' is not a depot's address (want depot://HOST:PORT)",
                        depot ? depot : "");
  const char *token = opts && opts->token && *opts->token ? opts->token : NULL;
  br_http_client *c = NULL;
  int rc = br_http_client_open(base, token, &c, err);
  free(base);
  if (rc) return rc;
  if (opts && opts->ca_file && *opts->ca_file) br_http_client_set_ca(c, opts->ca_file);
  br_http_client_set_timeout(c, timeout_s);
  if (opts && opts->cancel) br_http_client_set_abort(c, opts->cancel);
  int st = br_http_client_call(c, "POST", path, body, out, err);
  br_http_client_close(c);
  if (st < 0) return st;
  if (st < 200 || st >= 300)
    return br_error_set(err, code_of_status(st), "%s (HTTP %d)", br_http_error_message(*out, st),
                        st);
  if (!json_is_object(*out))
    return br_error_set(err, BR_ENET, "the depot's answer to %s is not a JSON object", path);
  return BR_OK;
}

/* Marks in removed[] the versions the depot's answer lists, each once (a
 * version asked twice is removed once: the second asking failed). */
static void mark_removed(const json_t *answer, const br_xfer_version *versions, size_t n,
                         bool *removed) {
  const json_t *list = json_object_get(answer, "removed");
  for (size_t k = 0; k < json_array_size(list); k++) {
    const json_t *e = json_array_get(list, k);
    const char *name = json_string_value(json_object_get(e, "name"));
    int64_t v = (int64_t)json_integer_value(json_object_get(e, "version"));
    for (size_t i = 0; name && i < n; i++)
      if (!removed[i] && versions[i].version == v && strcmp(versions[i].name, name) == 0) {
        removed[i] = true;
        break;
      }
  }
}

int br_xfer_depot_rm(const char *depot, const br_xfer_version *versions, size_t n,
                     const br_xfer_opts *opts, bool *removed, br_error *err) {
  if (removed)
    for (size_t i = 0; i < n; i++) removed[i] = false;
  if (!n) return br_error_set(err, BR_EINVAL, "no versions to remove");
  json_t *list = json_array();
  json_t *body = json_pack("{so}", "versions", list);
  if (!body) return br_error_set(err, BR_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    if (!versions[i].name || versions[i].version <= 0) {
      json_decref(body);
      return br_error_set(err, BR_EINVAL, "version %zu to remove: want a name and a version >= 1",
                          i);
    }
    if (json_array_append_new(list, json_pack("{ss sI}", "name", versions[i].name, "version",
                                              (json_int_t)versions[i].version))) {
      json_decref(body);
      return br_error_set(err, BR_ENOMEM, "out of memory");
    }
  }
  json_t *ans = NULL;
  int rc = admin_call(depot, opts, "/v1/admin/rm", body, RM_TIMEOUT_S, &ans, err);
  /* those removed are listed even when others failed */
  if (removed) mark_removed(ans, versions, n, removed);
  json_decref(ans);
  json_decref(body);
  return rc;
}

static int64_t field(const json_t *o, const char *key) {
  return (int64_t)json_integer_value(json_object_get(o, key));
}

int br_xfer_depot_gc(const char *depot, int64_t grace_s, bool dry_run, const br_xfer_opts *opts,
                     br_depot_gc_result *res, br_error *err) {
  memset(res, 0, sizeof *res);
  if (grace_s < 0) return br_error_set(err, BR_EINVAL, "the grace period is negative");
  json_t *body = json_pack("{sI sb}", "grace_s", (json_int_t)grace_s, "dry_run", dry_run);
  if (!body) return br_error_set(err, BR_ENOMEM, "out of memory");
  json_t *ans = NULL;
  int rc = admin_call(depot, opts, "/v1/admin/gc", body, GC_TIMEOUT_S, &ans, err);
  json_decref(body);
  if (rc == BR_OK) {
    res->snapshots = field(ans, "snapshots");
    res->live_chunks = field(ans, "live_chunks");
    res->objects_removed = field(ans, "objects_removed");
    res->packs_removed = field(ans, "packs_removed");
    res->packs_rewritten = field(ans, "packs_rewritten");
    res->bytes_freed = field(ans, "bytes_freed");
    res->kept_young = field(ans, "kept_young");
  }
  json_decref(ans);
  return rc;
}

int br_xfer_depot_list(const char *depot, const char *name, bool detail, const br_xfer_opts *opts,
                       br_depot_entry **out, size_t *n, br_error *err) {
  *out = NULL;
  *n = 0;
  json_t *body = name && *name ? json_pack("{ss sb}", "name", name, "detail", detail)
                               : json_pack("{sb}", "detail", detail);
  if (!body) return br_error_set(err, BR_ENOMEM, "out of memory");
  json_t *ans = NULL;
  int rc = admin_call(depot, opts, "/v1/list", body, RM_TIMEOUT_S, &ans, err);
  json_decref(body);
  const json_t *list = rc == BR_OK ? json_object_get(ans, "versions") : NULL;
  if (rc == BR_OK && !json_is_array(list))
    rc = br_error_set(err, BR_ENET, "the depot's list has no versions");
  size_t k = json_array_size(list);
  br_depot_entry *v = rc == BR_OK && k ? calloc(k, sizeof *v) : NULL;
  if (rc == BR_OK && k && !v) rc = br_error_set(err, BR_ENOMEM, "out of memory");
  for (size_t i = 0; rc == BR_OK && i < k; i++) {
    const json_t *e = json_array_get(list, i);
    const char *nm = json_string_value(json_object_get(e, "name"));
    if (!nm || !(v[i].name = strdup(nm))) {
      rc = br_error_set(err, nm ? BR_ENOMEM : BR_ENET, "the depot's list is malformed");
      break;
    }
    v[i].version = field(e, "version");
    v[i].time = field(e, "time");
    v[i].files = field(e, "files");
    v[i].bytes = field(e, "bytes");
  }
  json_decref(ans);
  if (rc) {
    br_depot_list_free(v, k);
    return rc;
  }
  *out = v;
  *n = k;
  return BR_OK;
}

int br_xfer__depot_verify(const char *depot, const br_xfer_opts *opts, const br_xfer_digest *ds,
                          size_t n, bool *damaged, br_error *err) {
  for (size_t i = 0; i < n; i++) damaged[i] = false;
  json_t *list = json_array();
  json_t *body = json_pack("{so}", "chunks", list);
  if (!body) return br_error_set(err, BR_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    char hex[BR_XFER_HEX_LEN + 1];
    br_xfer_digest_hex(&ds[i], hex);
    json_array_append_new(list, json_string(hex));
  }
  json_t *ans = NULL;
  int rc = admin_call(depot, opts, "/v1/verify", body, VERIFY_TIMEOUT_S, &ans, err);
  const json_t *bad = json_object_get(ans, "damaged");
  for (size_t k = 0; rc == BR_OK && k < json_array_size(bad); k++) {
    br_xfer_digest d;
    const char *h = json_string_value(json_array_get(bad, k));
    if (!h || br_xfer_digest_parse(h, &d) != BR_OK) continue;
    for (size_t i = 0; i < n; i++)
      if (!br_xfer__digest_cmp(&d, &ds[i])) damaged[i] = true;
  }
  json_decref(ans);
  json_decref(body);
  return rc;
}
