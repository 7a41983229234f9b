/* Manifests: the JSON form of a snapshot (jansson). Parsing validates all
 * that came from the network: sizes, chunk counts against the chunk size,
 * digests, every path and symlink target, duplicates, and overall limits. */
#include "xfer_int.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE_SIZE ((int64_t)1 << 44) /* 16 TiB */

br_xfer_manifest *br_xfer_manifest_new(void) {
  br_xfer_manifest *m = calloc(1, sizeof *m);
  if (m) m->chunk_size = BR_XFER_CHUNK_SIZE;
  return m;
}

static void entry_free(br_xfer_entry *e) {
  free(e->path);
  free(e->chunks);
  free(e->target);
}

void br_xfer_manifest_free(br_xfer_manifest *m) {
  if (!m) return;
  for (size_t i = 0; i < m->nentries; i++) entry_free(&m->entries[i]);
  free(m->entries);
  free(m->name);
  free(m);
}

int br_xfer_manifest_add(br_xfer_manifest *m, const br_xfer_entry *e, br_error *err) {
  if (m->nentries == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    void *p = realloc(m->entries, cap * sizeof *m->entries);
    if (!p) return br_error_set(err, BR_ENOMEM, "out of memory");
    m->entries = p;
    m->cap = cap;
  }
  br_xfer_entry *d = &m->entries[m->nentries];
  *d = *e;
  d->path = strdup(e->path);
  d->target = e->target ? strdup(e->target) : NULL;
  d->chunks = NULL;
  if (e->nchunks) {
    d->chunks = malloc(e->nchunks * sizeof *d->chunks);
    if (d->chunks) memcpy(d->chunks, e->chunks, e->nchunks * sizeof *d->chunks);
  }
  if (!d->path || (e->target && !d->target) || (e->nchunks && !d->chunks)) {
    entry_free(d);
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }
  m->nentries++;
  return BR_OK;
}

static const char *type_name(int t) {
  return t == BR_XFER_SYMLINK ? "symlink" : t == BR_XFER_DIR ? "dir" : "file";
}

char *br_xfer_manifest_dump(const br_xfer_manifest *m) {
  json_t *root = json_object(), *files = json_array();
  json_object_set_new(root, "format", json_integer(1));
  if (m->name) json_object_set_new(root, "name", json_string(m->name));
  json_object_set_new(root, "chunk_size", json_integer(m->chunk_size));
  char hex[BR_XFER_HEX_LEN + 1];
  for (size_t i = 0; i < m->nentries; i++) {
    const br_xfer_entry *e = &m->entries[i];
    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(e->path));
    json_object_set_new(o, "type", json_string(type_name(e->type)));
    json_object_set_new(o, "mode", json_integer(e->mode & 07777));
    if (e->type == BR_XFER_FILE) {
      json_object_set_new(o, "size", json_integer(e->size));
      json_object_set_new(o, "mtime_ns", json_integer(e->mtime_ns));
      br_xfer_digest_hex(&e->digest, hex);
      json_object_set_new(o, "digest", json_string(hex));
      json_t *cs = json_array();
      for (size_t c = 0; c < e->nchunks; c++) {
        br_xfer_digest_hex(&e->chunks[c], hex);
        json_array_append_new(cs, json_string(hex));
      }
      json_object_set_new(o, "chunks", cs);
    } else if (e->type == BR_XFER_SYMLINK) {
      json_object_set_new(o, "target", json_string(e->target ? e->target : ""));
    }
    json_array_append_new(files, o);
  }
  json_object_set_new(root, "files", files);
  char *s = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  return s;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int parse_entry(json_t *o, int64_t chunk_size, br_xfer_entry *e, size_t idx,
                       br_error *err) {
  memset(e, 0, sizeof *e);
  if (!json_is_object(o)) return br_error_set(err, BR_EINVAL, "manifest entry %zu: not an object", idx);
  const char *path = json_string_value(json_object_get(o, "path"));
  const char *type = json_string_value(json_object_get(o, "type"));
  json_t *mode = json_object_get(o, "mode");
  if (!path) return br_error_set(err, BR_EINVAL, "manifest entry %zu: no path", idx);
  int rc = br_xfer_path_check(path, err);
  if (rc) return rc;
  if (!type || strcmp(type, "file") == 0) e->type = BR_XFER_FILE;
  else if (strcmp(type, "symlink") == 0) e->type = BR_XFER_SYMLINK;
  else if (strcmp(type, "dir") == 0) e->type = BR_XFER_DIR;
  else return br_error_set(err, BR_EINVAL, "manifest entry '%s': unknown type", path);
  if (mode && (!json_is_integer(mode) || json_integer_value(mode) < 0 ||
               json_integer_value(mode) > 07777))
    return br_error_set(err, BR_EINVAL, "manifest entry '%s': bad mode", path);
  e->mode = mode ? (uint32_t)json_integer_value(mode) : 0644;
  e->mode &= 0777; /* never set-id or sticky bits from the network */
  if (e->type == BR_XFER_SYMLINK) {
    const char *target = json_string_value(json_object_get(o, "target"));
    rc = br_xfer_link_check(path, target, err);
    if (rc) return rc;
    e->target = strdup(target);
  } else if (e->type == BR_XFER_FILE) {
    json_t *size = json_object_get(o, "size"), *chunks = json_object_get(o, "chunks");
    const char *digest = json_string_value(json_object_get(o, "digest"));
    if (!json_is_integer(size) || json_integer_value(size) < 0 ||
        json_integer_value(size) > MAX_FILE_SIZE)
      return br_error_set(err, BR_EINVAL, "manifest entry '%s': bad size", path);
    e->size = json_integer_value(size);
    e->mtime_ns = json_integer_value(json_object_get(o, "mtime_ns"));
    if (!digest || br_xfer_digest_parse(digest, &e->digest))
      return br_error_set(err, BR_EINVAL, "manifest entry '%s': bad digest", path);
    size_t want = (size_t)((e->size + chunk_size - 1) / chunk_size);
    if (!json_is_array(chunks) || json_array_size(chunks) != want)
      return br_error_set(err, BR_EINVAL,
                          "manifest entry '%s': %zu chunk digests for %lld bytes", path,
                          json_is_array(chunks) ? json_array_size(chunks) : 0,
                          (long long)e->size);
    e->nchunks = want;
    e->chunks = want ? malloc(want * sizeof *e->chunks) : NULL;
    if (want && !e->chunks) return br_error_set(err, BR_ENOMEM, "out of memory");
    for (size_t c = 0; c < want; c++)
      if (br_xfer_digest_parse(json_string_value(json_array_get(chunks, c)), &e->chunks[c]))
        return br_error_set(err, BR_EINVAL, "manifest entry '%s': bad chunk digest", path);
    br_xfer_digest whole;
    br_xfer_file_digest(e->chunks, want, &whole);
    if (br_xfer__digest_cmp(&whole, &e->digest) != 0)
      return br_error_set(err, BR_EINVAL,
                          "manifest entry '%s': file digest does not match its chunks", path);
  }
  e->path = strdup(path);
  if (!e->path) return br_error_set(err, BR_ENOMEM, "out of memory");
  return BR_OK;
}

int br_xfer_manifest_parse(const char *json, size_t len, br_xfer_manifest **out,
                           br_error *err) {
  *out = NULL;
  if (len > BR_XFER_MAX_MANIFEST_BYTES)
    return br_error_set(err, BR_EINVAL, "manifest too large (%zu bytes, limit %d)", len,
                        BR_XFER_MAX_MANIFEST_BYTES);
  json_error_t je;
  json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
  if (!root)
    return br_error_set(err, BR_EINVAL, "manifest: JSON error at line %d: %s", je.line,
                        je.text);
  int rc = BR_OK;
  br_xfer_manifest *m = br_xfer_manifest_new();
  json_t *files = json_object_get(root, "files");
  json_t *cs = json_object_get(root, "chunk_size");
  const char *name = json_string_value(json_object_get(root, "name"));
  if (!m) {
    rc = br_error_set(err, BR_ENOMEM, "out of memory");
    goto done;
  }
  if (!json_is_object(root) || !json_is_array(files)) {
    rc = br_error_set(err, BR_EINVAL, "manifest: no 'files' list");
    goto done;
  }
  if (json_integer_value(json_object_get(root, "format")) != 1) {
    rc = br_error_set(err, BR_EINVAL, "manifest: unknown format");
    goto done;
  }
  if (!json_is_integer(cs) || json_integer_value(cs) < 4096 ||
      json_integer_value(cs) > BR_XFER__MAX_CHUNK) {
    rc = br_error_set(err, BR_EINVAL, "manifest: bad chunk size");
    goto done;
  }
  m->chunk_size = json_integer_value(cs);
  if (name) m->name = strdup(name);
  size_t n = json_array_size(files);
  if (n > BR_XFER_MAX_ENTRIES) {
    rc = br_error_set(err, BR_EINVAL, "manifest: too many entries (%zu, limit %d)", n,
                      BR_XFER_MAX_ENTRIES);
    goto done;
  }
  m->entries = calloc(n ? n : 1, sizeof *m->entries);
  if (!m->entries) {
    rc = br_error_set(err, BR_ENOMEM, "out of memory");
    goto done;
  }
  m->cap = n;
  for (size_t i = 0; i < n; i++) {
    rc = parse_entry(json_array_get(files, i), m->chunk_size, &m->entries[i], i, err);
    m->nentries = i + 1;
    if (rc) goto done;
  }
  /* Duplicate paths would let one entry overwrite another mid-pull. */
  char **paths = malloc((n ? n : 1) * sizeof *paths);
  if (!paths) {
    rc = br_error_set(err, BR_ENOMEM, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < n; i++) paths[i] = m->entries[i].path;
  qsort(paths, n, sizeof *paths, cmp_str);
  for (size_t i = 1; i < n && !rc; i++)
    if (strcmp(paths[i - 1], paths[i]) == 0)
      rc = br_error_set(err, BR_EINVAL, "manifest: duplicate path '%s'", paths[i]);
  free(paths);
done:
  json_decref(root);
  if (rc) br_xfer_manifest_free(m);
  else *out = m;
  return rc;
}
