/* Manifests: the JSON form of a snapshot. Parsing validates all that came
 * from the network: sizes, chunk counts against the chunk size, digests,
 * every path and symlink target, duplicates, and overall limits. Both ways
 * go straight between the text and the entries (jscan.c, and a writer
 * here), with no JSON tree between: a 10,000-file manifest is 2.5 MB, and
 * a tree of it cost more than the rest of its commit or of a pull's start.
 * The text is what jansson's compact form of the same document would be. */
#include "xfer_int.h"

#include <stdio.h>
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
  free(e->same_as);
}

void br_xfer__manifest_totals(const br_xfer_manifest *m, int64_t *files, int64_t *bytes) {
  *files = *bytes = 0;
  for (size_t i = 0; i < m->nentries; i++)
    if (m->entries[i].type == BR_XFER_FILE) ++*files, *bytes += m->entries[i].size;
}

void br_xfer_manifest_free(br_xfer_manifest *m) {
  if (!m) return;
  for (size_t i = 0; i < m->nentries; i++) entry_free(&m->entries[i]);
  free(m->entries);
  free(m->name);
  free(m);
}

/* Room for one more entry. */
static int entry_room(br_xfer_manifest *m, br_error *err) {
  if (m->nentries < m->cap) return BR_OK;
  size_t cap = m->cap ? m->cap * 2 : 64;
  void *p = realloc(m->entries, cap * sizeof *m->entries);
  if (!p) return br_error_set(err, BR_ENOMEM, "out of memory");
  m->entries = p;
  m->cap = cap;
  return BR_OK;
}

int br_xfer_manifest_add(br_xfer_manifest *m, const br_xfer_entry *e, br_error *err) {
  int rc = entry_room(m, err);
  if (rc) return rc;
  br_xfer_entry *d = &m->entries[m->nentries];
  *d = *e;
  d->path = strdup(e->path);
  d->target = e->target ? strdup(e->target) : NULL;
  d->same_as = e->same_as ? strdup(e->same_as) : NULL;
  d->chunks = NULL;
  if (e->nchunks) {
    d->chunks = malloc(e->nchunks * sizeof *d->chunks);
    if (d->chunks) memcpy(d->chunks, e->chunks, e->nchunks * sizeof *d->chunks);
  }
  if (!d->path || (e->target && !d->target) || (e->same_as && !d->same_as) ||
      (e->nchunks && !d->chunks)) {
    entry_free(d);
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }
  m->nentries++;
  return BR_OK;
}

static const char *type_name(int t) {
  return t == BR_XFER_SYMLINK ? "symlink" : t == BR_XFER_DIR ? "dir" : "file";
}

/* ---- writing ---- */

/* The text so far; once out of memory, every write is dropped. */
typedef struct wbuf {
  br_xfer__buf b;
  bool oom;
} wbuf;

/* Where n more bytes go (and a NUL after them), or NULL. */
static char *room(wbuf *o, size_t n) {
  if (!o->oom && br_xfer__buf_reserve(&o->b, n + 1)) o->oom = true;
  return o->oom ? NULL : (char *)o->b.data + o->b.len;
}

static void put(wbuf *o, const char *s, size_t n) {
  char *p = room(o, n);
  if (!p) return;
  memcpy(p, s, n);
  o->b.len += n;
}

#define PUT_LIT(o, lit) put(o, lit, sizeof lit - 1)

/* A JSON string, escaped as jansson does: quote, backslash and control
 * characters; other bytes as they are (paths are checked UTF-8). */
static void put_str(wbuf *o, const char *s) {
  static const char hexd[] = "0123456789ABCDEF";
  size_t n = strlen(s);
  char *p = room(o, 6 * n + 2);
  if (!p) return;
  char *q = p;
  *q++ = '"';
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') {
      *q++ = (char)c;
      continue;
    }
    *q++ = '\\';
    switch (c) {
    case '"': *q++ = '"'; break;
    case '\\': *q++ = '\\'; break;
    case '\b': *q++ = 'b'; break;
    case '\f': *q++ = 'f'; break;
    case '\n': *q++ = 'n'; break;
    case '\r': *q++ = 'r'; break;
    case '\t': *q++ = 't'; break;
    default:
      *q++ = 'u', *q++ = '0', *q++ = '0', *q++ = hexd[c >> 4], *q++ = hexd[c & 15];
    }
  }
  *q++ = '"';
  o->b.len += (size_t)(q - p);
}

static void put_int(wbuf *o, int64_t v) {
  char b[24];
  int n = snprintf(b, sizeof b, "%lld", (long long)v);
  put(o, b, (size_t)n);
}

static void put_digest(wbuf *o, const br_xfer_digest *d) {
  char *p = room(o, BR_XFER_HEX_LEN + 2);
  if (!p) return;
  p[0] = '"';
  br_xfer_digest_hex(d, p + 1);
  p[BR_XFER_HEX_LEN + 1] = '"';
  o->b.len += BR_XFER_HEX_LEN + 2;
}

char *br_xfer_manifest_dump(const br_xfer_manifest *m) {
  wbuf o = {0};
  /* about 250 bytes a small file: one allocation for most manifests */
  if (!room(&o, 256 + m->nentries * 260)) return NULL;
  PUT_LIT(&o, "{\"format\":1,");
  if (m->name) {
    PUT_LIT(&o, "\"name\":");
    put_str(&o, m->name);
    PUT_LIT(&o, ",");
  }
  PUT_LIT(&o, "\"chunk_size\":");
  put_int(&o, m->chunk_size);
  PUT_LIT(&o, ",\"files\":[");
  for (size_t i = 0; i < m->nentries; i++) {
    const br_xfer_entry *e = &m->entries[i];
    if (i) PUT_LIT(&o, ",");
    PUT_LIT(&o, "{\"path\":");
    put_str(&o, e->path);
    PUT_LIT(&o, ",\"type\":");
    put_str(&o, type_name(e->type));
    PUT_LIT(&o, ",\"mode\":");
    put_int(&o, e->mode & 07777);
    if (e->type == BR_XFER_DIR && e->mtime_ns) {
      PUT_LIT(&o, ",\"mtime_ns\":");
      put_int(&o, e->mtime_ns);
    } else if (e->type == BR_XFER_FILE) {
      PUT_LIT(&o, ",\"size\":");
      put_int(&o, e->size);
      PUT_LIT(&o, ",\"mtime_ns\":");
      put_int(&o, e->mtime_ns);
      PUT_LIT(&o, ",\"digest\":");
      put_digest(&o, &e->digest);
      PUT_LIT(&o, ",\"chunks\":[");
      for (size_t c = 0; c < e->nchunks; c++) {
        if (c) PUT_LIT(&o, ",");
        put_digest(&o, &e->chunks[c]);
      }
      PUT_LIT(&o, "]");
      if (e->same_as) {
        PUT_LIT(&o, ",\"same_as\":");
        put_str(&o, e->same_as);
      }
    } else if (e->type == BR_XFER_SYMLINK) {
      PUT_LIT(&o, ",\"target\":");
      put_str(&o, e->target ? e->target : "");
    }
    PUT_LIT(&o, "}");
  }
  PUT_LIT(&o, "]}");
  if (o.oom) {
    br_xfer__buf_free(&o.b);
    return NULL;
  }
  o.b.data[o.b.len] = 0; /* room() always leaves a byte for it */
  return (char *)o.b.data; /* pool memory is malloc'd: the caller frees it */
}

/* ---- reading ---- */

/* The scanner's error: what and where in the text. */
static int syntax(const br_xfer__jscan *s, br_error *err) {
  return br_error_set(err, BR_EINVAL, "manifest: %s", s->msg);
}

enum { K_PATH, K_TYPE, K_MODE, K_SIZE, K_MTIME, K_DIGEST, K_CHUNKS, K_TARGET, K_SAME, K_OTHER };

static int entry_key(const char *k) {
  static const char *const names[] = {"path",   "type",   "mode",   "size",   "mtime_ns",
                                      "digest", "chunks", "target", "same_as"};
  for (int i = 0; i < K_OTHER; i++)
    if (strcmp(k, names[i]) == 0) return i;
  return K_OTHER;
}

/* A file's chunk list against its size: their count, and the file digest
 * they make. */
static int check_chunks(const br_xfer_entry *e, int64_t chunk_size, br_error *err) {
  size_t want = (size_t)((e->size + chunk_size - 1) / chunk_size);
  if (e->nchunks != want)
    return br_error_set(err, BR_EINVAL, "manifest entry '%s': %zu chunk digests for %lld bytes",
                        e->path, e->nchunks, (long long)e->size);
  br_xfer_digest whole;
  br_xfer_file_digest(e->chunks, e->nchunks, &whole);
  if (br_xfer__digest_cmp(&whole, &e->digest) != 0)
    return br_error_set(err, BR_EINVAL,
                        "manifest entry '%s': file digest does not match its chunks", e->path);
  return BR_OK;
}

/* One entry, members in any order; checked once its '}' is read. The
 * chunk count needs the chunk size: checked here when it came before the
 * files (as braid writes it), else by the caller at the end. */
static int parse_entry(br_xfer__jscan *s, int64_t chunk_size, br_xfer_entry *e, size_t idx,
                       br_xfer__dvec *cs, br_error *err) {
  memset(e, 0, sizeof *e);
  if (br_xfer__jscan_peek(s) != '{') {
    if (s->failed || !br_xfer__jscan_skip(s)) return syntax(s, err);
    return br_error_set(err, BR_EINVAL, "manifest entry %zu: not an object", idx);
  }
  br_xfer__jscan_begin(s, '{');
  unsigned seen = 0;
  int type = BR_XFER_FILE, r;
  bool type_ok = true, mode_ok = true, size_ok = false, digest_ok = false, chunks_ok = false,
       chunk_bad = false, has_target = false, same_ok = true;
  int64_t mode = 0644, v;
  cs->n = 0;
  bool first = true;
  while ((r = br_xfer__jscan_member(s, &first)) == 1) {
    int k = entry_key(s->str);
    if (k != K_OTHER) {
      if (seen & 1u << k) {
        br_xfer__jscan_error(s, "a key twice in one entry");
        break;
      }
      seen |= 1u << k;
    }
    switch (k) {
    case K_PATH:
      if ((r = br_xfer__jscan_string(s)) == 1 && !(e->path = strdup(s->str)))
        return br_error_set(err, BR_ENOMEM, "out of memory");
      break;
    case K_TYPE:
      r = br_xfer__jscan_string(s);
      type = r != 1                        ? -1
             : strcmp(s->str, "file") == 0 ? BR_XFER_FILE
             : strcmp(s->str, "symlink") == 0 ? BR_XFER_SYMLINK
             : strcmp(s->str, "dir") == 0     ? BR_XFER_DIR
                                              : -1;
      type_ok = type >= 0;
      break;
    case K_MODE:
      r = br_xfer__jscan_int(s, &mode);
      mode_ok = r == 1 && mode >= 0 && mode <= 07777;
      break;
    case K_SIZE:
      r = br_xfer__jscan_int(s, &e->size);
      size_ok = r == 1 && e->size >= 0 && e->size <= MAX_FILE_SIZE;
      break;
    case K_MTIME:
      if ((r = br_xfer__jscan_int(s, &v)) == 1) e->mtime_ns = v;
      break;
    case K_DIGEST:
      r = br_xfer__jscan_digest(s, &e->digest);
      digest_ok = r == 1;
      break;
    case K_CHUNKS:
      if (br_xfer__jscan_peek(s) != '[') {
        r = br_xfer__jscan_skip(s) ? 0 : -1;
        break;
      }
      chunks_ok = br_xfer__jscan_begin(s, '[');
      for (bool cfirst = true; (r = br_xfer__jscan_element(s, &cfirst)) == 1;) {
        br_xfer_digest d = {{0}};
        if ((r = br_xfer__jscan_digest(s, &d)) < 0) break;
        if (r == 0) chunk_bad = true;
        if (br_xfer__dvec_add(cs, &d)) return br_error_set(err, BR_ENOMEM, "out of memory");
      }
      break;
    case K_TARGET:
      if ((r = br_xfer__jscan_string(s)) == 1) {
        has_target = true;
        if (!(e->target = strdup(s->str))) return br_error_set(err, BR_ENOMEM, "out of memory");
      }
      break;
    case K_SAME:
      r = br_xfer__jscan_string(s);
      same_ok = r == 1;
      if (same_ok && !(e->same_as = strdup(s->str)))
        return br_error_set(err, BR_ENOMEM, "out of memory");
      break;
    default: r = br_xfer__jscan_skip(s) ? 0 : -1;
    }
    if (r < 0) break;
  }
  if (s->failed) return syntax(s, err);
  if (!e->path) return br_error_set(err, BR_EINVAL, "manifest entry %zu: no path", idx);
  int rc = br_xfer_path_check(e->path, err);
  if (rc) return rc;
  if (!type_ok) return br_error_set(err, BR_EINVAL, "manifest entry '%s': unknown type", e->path);
  e->type = type;
  if (!mode_ok) return br_error_set(err, BR_EINVAL, "manifest entry '%s': bad mode", e->path);
  e->mode = (uint32_t)mode & 0777; /* never set-id or sticky bits from the network */
  if (type == BR_XFER_SYMLINK) {
    rc = br_xfer_link_check(e->path, has_target ? e->target : NULL, err);
    if (rc) return rc;
  } else {
    free(e->target); /* only a link has one */
    e->target = NULL;
  }
  if (!same_ok) return br_error_set(err, BR_EINVAL, "manifest entry '%s': bad same_as", e->path);
  if (e->same_as && type != BR_XFER_FILE) /* what it links to: checked at the end */
    return br_error_set(err, BR_EINVAL, "manifest entry '%s': a %s is not a hard link", e->path,
                        type_name(type));
  if (type != BR_XFER_FILE) { /* a folder keeps its mtime (0: none recorded) */
    e->size = 0;
    if (type == BR_XFER_SYMLINK) e->mtime_ns = 0;
    return BR_OK;
  }
  if (!size_ok) return br_error_set(err, BR_EINVAL, "manifest entry '%s': bad size", e->path);
  if (!digest_ok) return br_error_set(err, BR_EINVAL, "manifest entry '%s': bad digest", e->path);
  if (!chunks_ok)
    return br_error_set(err, BR_EINVAL, "manifest entry '%s': 0 chunk digests for %lld bytes",
                        e->path, (long long)e->size);
  if (chunk_bad) return br_error_set(err, BR_EINVAL, "manifest entry '%s': bad chunk digest", e->path);
  e->nchunks = cs->n;
  if (cs->n) {
    if (!(e->chunks = malloc(cs->n * sizeof *e->chunks)))
      return br_error_set(err, BR_ENOMEM, "out of memory");
    memcpy(e->chunks, cs->v, cs->n * sizeof *e->chunks);
  }
  return chunk_size ? check_chunks(e, chunk_size, err) : BR_OK;
}

static int parse_files(br_xfer__jscan *s, br_xfer_manifest *m, int64_t chunk_size,
                       br_error *err) {
  if (!br_xfer__jscan_begin(s, '[')) return syntax(s, err);
  br_xfer__dvec cs = {0};
  bool first = true;
  int r, rc = BR_OK;
  while (!rc && (r = br_xfer__jscan_element(s, &first)) == 1) {
    if (m->nentries == BR_XFER_MAX_ENTRIES) {
      rc = br_error_set(err, BR_EINVAL, "manifest: too many entries (more than %d)",
                        BR_XFER_MAX_ENTRIES);
      break;
    }
    if ((rc = entry_room(m, err))) break;
    rc = parse_entry(s, chunk_size, &m->entries[m->nentries], m->nentries, &cs, err);
    m->nentries++; /* freed with the manifest, whole or not */
  }
  free(cs.v);
  if (!rc && s->failed) rc = syntax(s, err);
  return rc;
}

static int cmp_entry_path(const void *a, const void *b) {
  return strcmp((*(br_xfer_entry *const *)a)->path, (*(br_xfer_entry *const *)b)->path);
}

/* Duplicate paths (one entry would overwrite another mid-pull), and hard
 * links: each names another file of the manifest, of the same bytes, that
 * is no link itself (a pull makes it, then links to it). */
static int check_paths(const br_xfer_manifest *m, br_error *err) {
  size_t n = m->nentries;
  br_xfer_entry **v = malloc((n ? n : 1) * sizeof *v);
  if (!v) return br_error_set(err, BR_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) v[i] = &m->entries[i];
  qsort(v, n, sizeof *v, cmp_entry_path);
  int rc = BR_OK;
  for (size_t i = 1; i < n && !rc; i++)
    if (strcmp(v[i - 1]->path, v[i]->path) == 0)
      rc = br_error_set(err, BR_EINVAL, "manifest: duplicate path '%s'", v[i]->path);
  for (size_t i = 0; i < n && !rc; i++) {
    const br_xfer_entry *e = &m->entries[i];
    if (!e->same_as) continue;
    br_xfer_entry key = {.path = e->same_as}, *kp = &key;
    br_xfer_entry **hit = bsearch(&kp, v, n, sizeof *v, cmp_entry_path);
    const br_xfer_entry *t = hit ? *hit : NULL;
    const char *why = !t                        ? "is not in the snapshot"
                      : t == e                  ? "is itself"
                      : t->type != BR_XFER_FILE ? "is not a file"
                      : t->same_as              ? "is a hard link itself"
                      : t->size != e->size || br_xfer__digest_cmp(&t->digest, &e->digest)
                          ? "holds other bytes"
                          : NULL;
    if (why)
      rc = br_error_set(err, BR_EINVAL, "manifest entry '%s': hard link to '%s', which %s",
                        e->path, e->same_as, why);
  }
  free(v);
  return rc;
}

int br_xfer_manifest_parse(const char *json, size_t len, br_xfer_manifest **out,
                           br_error *err) {
  *out = NULL;
  if (len > BR_XFER_MAX_MANIFEST_BYTES)
    return br_error_set(err, BR_EINVAL, "manifest too large (%zu bytes, limit %d)", len,
                        BR_XFER_MAX_MANIFEST_BYTES);
  br_xfer_manifest *m = br_xfer_manifest_new();
  if (!m) return br_error_set(err, BR_ENOMEM, "out of memory");
  br_xfer__jscan s;
  br_xfer__jscan_init(&s, json, len);
  int rc = BR_OK, r = 0;
  int64_t format = 0, cs = 0;
  bool has_format = false, has_cs = false, has_files = false, has_name = false, late = false;
  if (br_xfer__jscan_peek(&s) != '{') {
    rc = s.failed || !br_xfer__jscan_skip(&s) || !br_xfer__jscan_end(&s)
             ? syntax(&s, err)
             : br_error_set(err, BR_EINVAL, "manifest: no 'files' list");
    goto done;
  }
  br_xfer__jscan_begin(&s, '{');
  bool first = true, twice = false;
  while (!rc && !twice && (r = br_xfer__jscan_member(&s, &first)) == 1) {
    if (strcmp(s.str, "format") == 0) {
      twice = has_format;
      has_format = true;
      if (!twice && br_xfer__jscan_int(&s, &format) != 1) format = 0;
    } else if (strcmp(s.str, "chunk_size") == 0) {
      twice = has_cs;
      has_cs = true;
      if (!twice && (br_xfer__jscan_int(&s, &cs) != 1 || cs < 4096 || cs > BR_XFER__MAX_CHUNK))
        cs = -1;
    } else if (strcmp(s.str, "files") == 0) {
      twice = has_files;
      has_files = true;
      if (twice) break;
      if (br_xfer__jscan_peek(&s) != '[') {
        has_files = false; /* said below, once the text is known to be JSON */
        br_xfer__jscan_skip(&s);
        continue;
      }
      /* braid writes the chunk size first: the files' chunks are checked
       * as they come; otherwise once it is known */
      late = !has_cs || cs < 0;
      rc = parse_files(&s, m, late ? 0 : cs, err);
    } else if (strcmp(s.str, "name") == 0) {
      twice = has_name;
      has_name = true;
      if (!twice && br_xfer__jscan_string(&s) == 1 && !(m->name = strdup(s.str)))
        rc = br_error_set(err, BR_ENOMEM, "out of memory");
    } else {
      br_xfer__jscan_skip(&s);
    }
  }
  if (rc) goto done;
  if (twice) br_xfer__jscan_error(&s, "a key twice in the manifest");
  if (s.failed || !br_xfer__jscan_end(&s)) {
    rc = syntax(&s, err);
    goto done;
  }
  if (!has_files) {
    rc = br_error_set(err, BR_EINVAL, "manifest: no 'files' list");
    goto done;
  }
  if (format != 1) {
    rc = br_error_set(err, BR_EINVAL, "manifest: unknown format");
    goto done;
  }
  if (!has_cs || cs < 0) {
    rc = br_error_set(err, BR_EINVAL, "manifest: bad chunk size");
    goto done;
  }
  m->chunk_size = cs;
  for (size_t i = 0; late && i < m->nentries && !rc; i++)
    if (m->entries[i].type == BR_XFER_FILE) rc = check_chunks(&m->entries[i], cs, err);
  if (rc) goto done;
  rc = check_paths(m, err);
done:
  br_xfer__jscan_free(&s);
  if (rc) br_xfer_manifest_free(m);
  else *out = m;
  return rc;
}
