/* A strict JSON scanner for the big, regular texts of the transfer protocol:
 * manifests (10,000 files make 2.5 MB) and lists of digests. jansson builds
 * a tree with a hash table per object and parsed such a manifest at 20-50
 * MB/s here, on the path of every commit, pull and gc; this reads the text
 * once, in place, and hands the caller each value as it comes, with no tree.
 * It checks what RFC 8259 asks (UTF-8, escapes, no control characters,
 * number syntax) and refuses NUL in strings, integers beyond int64, reals
 * beyond a double and nesting deeper than BR_XFER__JSCAN_DEPTH. The first
 * error is kept, with its line and column; every call after it fails. */
#include "xfer_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void br_xfer__jscan_init(br_xfer__jscan *s, const char *text, size_t len) {
  memset(s, 0, sizeof *s);
  s->begin = s->p = text;
  s->end = text + len;
}

void br_xfer__jscan_free(br_xfer__jscan *s) {
  free(s->str);
  s->str = NULL;
  s->str_cap = s->str_len = 0;
}

/* Records the first error, where the scanner stands. Returns -1. */
static int fail(br_xfer__jscan *s, const char *fmt, ...) {
  if (s->failed) return -1;
  s->failed = true;
  int line = 1, col = 1;
  for (const char *q = s->begin; q < s->p && q < s->end; q++) {
    if (*q == '\n') line++, col = 1;
    else col++;
  }
  int n = snprintf(s->msg, sizeof s->msg, "JSON error at line %d, column %d: ", line, col);
  va_list ap;
  va_start(ap, fmt);
  if (n > 0 && (size_t)n < sizeof s->msg) vsnprintf(s->msg + n, sizeof s->msg - (size_t)n, fmt, ap);
  va_end(ap);
  return -1;
}

static void skip_ws(br_xfer__jscan *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
    s->p++;
}

int br_xfer__jscan_peek(br_xfer__jscan *s) {
  if (s->failed) return 0;
  skip_ws(s);
  return s->p < s->end ? (unsigned char)*s->p : 0;
}

static bool eat(br_xfer__jscan *s, char c) {
  skip_ws(s);
  if (s->p < s->end && *s->p == c) {
    s->p++;
    return true;
  }
  return false;
}

/* ---- strings ---- */

static int str_put(br_xfer__jscan *s, const char *src, size_t n) {
  if (s->str_len + n + 1 > s->str_cap) {
    size_t cap = s->str_cap ? s->str_cap : 256;
    while (cap < s->str_len + n + 1) cap *= 2;
    char *q = realloc(s->str, cap);
    if (!q) return fail(s, "out of memory");
    s->str = q;
    s->str_cap = cap;
  }
  memcpy(s->str + s->str_len, src, n);
  s->str_len += n;
  s->str[s->str_len] = 0;
  return 0;
}

static int hex4(const char *p) {
  int v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    int h = c >= '0' && c <= '9' ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : -1;
    if (h < 0) return -1;
    v = v << 4 | h;
  }
  return v;
}

/* One \u escape (and the low half of a surrogate pair), as UTF-8. */
static int unicode_escape(br_xfer__jscan *s) {
  if (s->end - s->p < 6) return fail(s, "short \\u escape");
  long cp = hex4(s->p + 2);
  if (cp < 0) return fail(s, "bad \\u escape");
  s->p += 6;
  if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(s, "lone low surrogate in \\u escape");
  if (cp >= 0xD800 && cp <= 0xDBFF) {
    int lo = s->end - s->p >= 6 && s->p[0] == '\\' && s->p[1] == 'u' ? hex4(s->p + 2) : -1;
    if (lo < 0xDC00 || lo > 0xDFFF) return fail(s, "lone high surrogate in \\u escape");
    s->p += 6;
    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
  }
  if (cp == 0) return fail(s, "NUL (\\u0000) in a string");
  char u[4];
  size_t n;
  if (cp < 0x80) u[0] = (char)cp, n = 1;
  else if (cp < 0x800) u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
  else if (cp < 0x10000)
    u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 0x3F)),
    u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
  else
    u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 0x3F)),
    u[2] = (char)(0x80 | (cp >> 6 & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
  return str_put(s, u, n);
}

/* The length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong
 * forms, no surrogates, nothing past U+10FFFF), 0 if there is none. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end) {
  unsigned char c = p[0];
  size_t n;
  unsigned lo = 0x80, hi = 0xBF; /* the second byte's range */
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi) return 0;
  for (size_t i = 2; i < n; i++)
    if ((p[i] & 0xC0) != 0x80) return 0;
  return n;
}

/* A string at s->p (its opening quote), decoded into s->str. */
static int scan_string(br_xfer__jscan *s) {
  s->p++;
  s->str_len = 0;
  if (str_put(s, "", 0)) return -1;
  for (;;) {
    const char *q = s->p;
    while (q < s->end) {
      unsigned char c = (unsigned char)*q;
      if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') break;
      q++;
    }
    if (q > s->p && str_put(s, s->p, (size_t)(q - s->p))) return -1;
    s->p = q;
    if (q == s->end) return fail(s, "unterminated string");
    unsigned char c = (unsigned char)*q;
    if (c == '"') {
      s->p++;
      return 0;
    }
    if (c < 0x20) return fail(s, "control character in a string");
    if (c >= 0x80) {
      size_t n = utf8_len((const unsigned char *)q, (const unsigned char *)s->end);
      if (!n) return fail(s, "invalid UTF-8 in a string");
      if (str_put(s, q, n)) return -1;
      s->p += n;
      continue;
    }
    if (s->end - q < 2) return fail(s, "unterminated string");
    char e = q[1], out;
    switch (e) {
    case '"': out = '"'; break;
    case '\\': out = '\\'; break;
    case '/': out = '/'; break;
    case 'b': out = '\b'; break;
    case 'f': out = '\f'; break;
    case 'n': out = '\n'; break;
    case 'r': out = '\r'; break;
    case 't': out = '\t'; break;
    case 'u':
      if (unicode_escape(s)) return -1;
      continue;
    default: return fail(s, "bad escape '\\%c'", e);
    }
    if (str_put(s, &out, 1)) return -1;
    s->p += 2;
  }
}

/* ---- numbers ---- */

static bool digit(const br_xfer__jscan *s) {
  return s->p < s->end && *s->p >= '0' && *s->p <= '9';
}

/* A number at s->p: 1 and *v for an integer, 0 for a fraction or an
 * exponent (valid, not an integer), -1 on bad syntax or beyond int64. */
static int scan_number(br_xfer__jscan *s, int64_t *v) {
  const char *start = s->p;
  bool neg = s->p < s->end && *s->p == '-';
  if (neg) s->p++;
  if (!digit(s)) return fail(s, "bad number");
  uint64_t u = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  bool big = false;
  if (*s->p == '0') {
    s->p++;
    if (digit(s)) return fail(s, "a number with a leading zero");
  } else {
    while (digit(s)) {
      unsigned d = (unsigned)(*s->p++ - '0');
      if (u > (lim - d) / 10) big = true;
      else u = u * 10 + d;
    }
  }
  bool integer = true;
  if (s->p < s->end && *s->p == '.') {
    s->p++;
    if (!digit(s)) return fail(s, "bad number");
    while (digit(s)) s->p++;
    integer = false;
  }
  if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
    s->p++;
    if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
    if (!digit(s)) return fail(s, "bad number");
    while (digit(s)) s->p++;
    integer = false;
  }
  if (!integer) {
    /* A real beyond a double's range is an error, as jansson has it (one
     * that underflows to 0 is not). */
    size_t n = (size_t)(s->p - start);
    char small[64], *t = n < sizeof small ? small : malloc(n + 1);
    if (!t) return fail(s, "out of memory");
    memcpy(t, start, n);
    t[n] = 0;
    bool inf = isinf(strtod(t, NULL));
    if (t != small) free(t);
    return inf ? fail(s, "real number out of range") : 0;
  }
  if (big) return fail(s, "integer out of range");
  *v = neg ? (int64_t)(0 - u) : (int64_t)u;
  return 1;
}

/* ---- values ---- */

static int skip_value(br_xfer__jscan *s);

static int literal(br_xfer__jscan *s, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
    return fail(s, "unexpected character");
  s->p += n;
  return 0;
}

static int skip_value(br_xfer__jscan *s) {
  int c = br_xfer__jscan_peek(s);
  if (s->failed) return -1;
  if (c == '{' || c == '[') {
    if (!br_xfer__jscan_begin(s, (char)c)) return -1;
    bool first = true;
    int r;
    while ((r = c == '{' ? br_xfer__jscan_member(s, &first) : br_xfer__jscan_element(s, &first)) ==
           1)
      if (skip_value(s)) return -1;
    return r;
  }
  if (c == '"') return scan_string(s);
  if (c == '-' || (c >= '0' && c <= '9')) {
    int64_t v;
    return scan_number(s, &v) < 0 ? -1 : 0;
  }
  if (c == 't') return literal(s, "true");
  if (c == 'f') return literal(s, "false");
  if (c == 'n') return literal(s, "null");
  return fail(s, c ? "unexpected character" : "unexpected end of text");
}

bool br_xfer__jscan_skip(br_xfer__jscan *s) { return !s->failed && skip_value(s) == 0; }

bool br_xfer__jscan_begin(br_xfer__jscan *s, char open) {
  if (s->failed) return false;
  if (!eat(s, open)) {
    fail(s, "expected '%c'", open);
    return false;
  }
  if (++s->depth > BR_XFER__JSCAN_DEPTH) {
    fail(s, "nested too deep");
    return false;
  }
  return true;
}

/* After a value: ',' and more, or the closing bracket. */
static int next(br_xfer__jscan *s, bool *first, char close) {
  if (s->failed) return -1;
  if (eat(s, close)) {
    s->depth--;
    return 0;
  }
  if (!*first && !eat(s, ',')) return fail(s, "expected ',' or '%c'", close);
  *first = false;
  return 1;
}

int br_xfer__jscan_member(br_xfer__jscan *s, bool *first) {
  bool was_first = *first;
  int r = next(s, first, '}');
  if (r != 1) return r;
  if (br_xfer__jscan_peek(s) != '"')
    return fail(s, was_first ? "expected a key or '}'" : "expected a key");
  if (scan_string(s)) return -1;
  if (!eat(s, ':')) return fail(s, "expected ':'");
  return 1;
}

int br_xfer__jscan_element(br_xfer__jscan *s, bool *first) {
  bool was_first = *first;
  int r = next(s, first, ']');
  if (r == 1 && !was_first && br_xfer__jscan_peek(s) == ']') return fail(s, "expected a value");
  return r;
}

int br_xfer__jscan_string(br_xfer__jscan *s) {
  int c = br_xfer__jscan_peek(s);
  if (s->failed) return -1;
  if (c != '"') return skip_value(s) ? -1 : 0;
  return scan_string(s) ? -1 : 1;
}

int br_xfer__jscan_int(br_xfer__jscan *s, int64_t *v) {
  int c = br_xfer__jscan_peek(s);
  if (s->failed) return -1;
  if (c != '-' && !(c >= '0' && c <= '9')) return skip_value(s) ? -1 : 0;
  return scan_number(s, v);
}

int br_xfer__jscan_digest(br_xfer__jscan *s, br_xfer_digest *d) {
  int r = br_xfer__jscan_string(s);
  if (r != 1) return r;
  return br_xfer__digest_parse_n(s->str, s->str_len, d) == BR_OK ? 1 : 0;
}

bool br_xfer__jscan_end(br_xfer__jscan *s) {
  if (s->failed) return false;
  skip_ws(s);
  if (s->p == s->end) return true;
  fail(s, "text after the end");
  return false;
}

int br_xfer__jscan_error(br_xfer__jscan *s, const char *what) { return fail(s, "%s", what); }

int br_xfer__jscan_bool(br_xfer__jscan *s, bool *v) {
  int c = br_xfer__jscan_peek(s);
  if (s->failed) return -1;
  if (c != 't' && c != 'f') return skip_value(s) ? -1 : 0;
  *v = c == 't';
  return literal(s, *v ? "true" : "false") ? -1 : 1;
}

int br_xfer__digest_list_parse(const char *text, size_t len, const char *key, size_t max,
                               br_xfer_digest **out, size_t *n, const char *flag, bool *flagv,
                               br_error *err) {
  br_xfer__jscan s;
  br_xfer__jscan_init(&s, text, len);
  br_xfer__dvec ds = {0};
  bool first = true, found = false, shape = br_xfer__jscan_peek(&s) != '{';
  int r, rc = BR_OK;
  if (!shape) br_xfer__jscan_begin(&s, '{');
  while (!shape && !rc && (r = br_xfer__jscan_member(&s, &first)) == 1) {
    if (flag && strcmp(s.str, flag) == 0) {
      if (br_xfer__jscan_bool(&s, flagv) < 0) break;
    } else if (strcmp(s.str, key) != 0 || found) {
      br_xfer__jscan_skip(&s);
    } else if (!(shape = br_xfer__jscan_peek(&s) != '[')) {
      found = true;
      br_xfer__jscan_begin(&s, '[');
      for (bool efirst = true; !rc && (r = br_xfer__jscan_element(&s, &efirst)) == 1;) {
        br_xfer_digest d = {{0}};
        if (ds.n == max)
          rc = br_error_set(err, BR_EINVAL, "too many digests in one request (limit %zu)", max);
        else if ((r = br_xfer__jscan_digest(&s, &d)) < 0)
          break;
        else if (r == 0)
          rc = br_error_set(err, BR_EINVAL, "bad digest at %zu", ds.n);
        else if (br_xfer__dvec_add(&ds, &d))
          rc = br_error_set(err, BR_ENOMEM, "out of memory");
      }
    }
  }
  if (!rc && !shape && !br_xfer__jscan_end(&s)) rc = br_error_set(err, BR_EINVAL, "%s", s.msg);
  if (!rc && (shape || !found))
    rc = br_error_set(err, BR_EINVAL, "expected {\"%s\":[digests...]}", key);
  br_xfer__jscan_free(&s);
  if (rc) {
    free(ds.v);
    ds = (br_xfer__dvec){0};
  }
  *out = ds.v;
  *n = ds.n;
  return rc;
}

char *br_xfer__digest_list_json(const char *key, const br_xfer_digest *ds, size_t n,
                                size_t *len) {
  size_t klen = strlen(key), cap = klen + 8 + n * (BR_XFER_HEX_LEN + 3);
  char *s = malloc(cap), *q = s;
  if (!s) return NULL;
  *q++ = '{';
  *q++ = '"';
  memcpy(q, key, klen);
  q += klen;
  memcpy(q, "\":[", 3);
  q += 3;
  for (size_t i = 0; i < n; i++) {
    if (i) *q++ = ',';
    *q++ = '"';
    br_xfer_digest_hex(&ds[i], q); /* writes a NUL after, overwritten next */
    q += BR_XFER_HEX_LEN;
    *q++ = '"';
  }
  memcpy(q, "]}", 3);
  *len = (size_t)(q + 2 - s);
  return s;
}
