/* JSON value positions (see jsonpos.h). A small recursive walk over text that
 * jansson has already accepted, so it does not need to diagnose anything; it
 * only tracks line and column (in characters, 1-based) and the pointer path. */
#include "jsonpos.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

typedef struct entry {
  char *pointer;
  int vline, vcol; /* value */
  int kline, kcol; /* key (0 when the value is not an object member) */
  UT_hash_handle hh;
} entry;

struct br_jpos {
  entry *map;
};

typedef struct scanner {
  const unsigned char *s;
  int line, col;
  br_jpos *out;
  char *path;
  size_t len, cap;
  int oom;
} scanner;

static void adv(scanner *sc) {
  unsigned char c = *sc->s;
  if (!c) return;
  sc->s++;
  if (c == '\n') {
    sc->line++;
    sc->col = 1;
  } else if ((c & 0xC0) != 0x80) {
    sc->col++; /* count characters, not UTF-8 continuation bytes */
  }
  /* a multi-byte character counts once: its lead byte above, and continuation
   * bytes are skipped without counting */
}

static void ws(scanner *sc) {
  while (*sc->s == ' ' || *sc->s == '\t' || *sc->s == '\n' || *sc->s == '\r') adv(sc);
}

static int path_push(scanner *sc, const char *seg, size_t n) {
  /* room for '/', the escaped segment (at most 2n) and NUL */
  size_t need = sc->len + 2 * n + 2;
  if (need > sc->cap) {
    size_t cap = sc->cap ? sc->cap : 128;
    while (cap < need) cap *= 2;
    char *p = realloc(sc->path, cap);
    if (!p) return -1;
    sc->path = p;
    sc->cap = cap;
  }
  sc->path[sc->len++] = '/';
  for (size_t i = 0; i < n; i++) {
    if (seg[i] == '~') {
      sc->path[sc->len++] = '~';
      sc->path[sc->len++] = '0';
    } else if (seg[i] == '/') {
      sc->path[sc->len++] = '~';
      sc->path[sc->len++] = '1';
    } else {
      sc->path[sc->len++] = seg[i];
    }
  }
  sc->path[sc->len] = '\0';
  return 0;
}

static entry *record(scanner *sc, int line, int col) {
  entry *e = NULL;
  const char *key = sc->path ? sc->path : "";
  HASH_FIND_STR(sc->out->map, key, e);
  if (e) return e;
  e = calloc(1, sizeof *e);
  if (!e || !(e->pointer = strdup(key))) {
    free(e);
    sc->oom = 1;
    return NULL;
  }
  e->vline = line;
  e->vcol = col;
  HASH_ADD_KEYPTR(hh, sc->out->map, e->pointer, strlen(e->pointer), e);
  return e;
}

static void put_utf8(char **o, unsigned cp) {
  char *p = *o;
  if (cp < 0x80) {
    *p++ = (char)cp;
  } else if (cp < 0x800) {
    *p++ = (char)(0xC0 | (cp >> 6));
    *p++ = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *p++ = (char)(0xE0 | (cp >> 12));
    *p++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *p++ = (char)(0x80 | (cp & 0x3F));
  } else {
    *p++ = (char)(0xF0 | (cp >> 18));
    *p++ = (char)(0x80 | ((cp >> 12) & 0x3F));
    *p++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *p++ = (char)(0x80 | (cp & 0x3F));
  }
  *o = p;
}

static unsigned hex4(const unsigned char *s) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned c = s[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= c - '0';
    else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
  }
  return v;
}

/* Reads a string at sc->s (on the opening quote); returns its decoded bytes
 * (caller frees) when want is set. */
static char *string(scanner *sc, int want, size_t *outlen) {
  adv(sc); /* opening quote */
  const unsigned char *start = sc->s;
  while (*sc->s && *sc->s != '"') {
    if (*sc->s == '\\') adv(sc);
    adv(sc);
  }
  const unsigned char *end = sc->s;
  adv(sc); /* closing quote */
  if (!want) return NULL;
  char *buf = malloc((size_t)(end - start) + 1), *o = buf;
  if (!buf) {
    sc->oom = 1;
    return NULL;
  }
  for (const unsigned char *p = start; p < end; p++) {
    if (*p != '\\') {
      *o++ = (char)*p;
      continue;
    }
    p++;
    switch (*p) {
    case 'b': *o++ = '\b'; break;
    case 'f': *o++ = '\f'; break;
    case 'n': *o++ = '\n'; break;
    case 'r': *o++ = '\r'; break;
    case 't': *o++ = '\t'; break;
    case 'u': {
      unsigned cp = hex4(p + 1);
      p += 4;
      if (cp >= 0xD800 && cp < 0xDC00 && p[1] == '\\' && p[2] == 'u') {
        unsigned lo = hex4(p + 3);
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        p += 6;
      }
      put_utf8(&o, cp);
      break;
    }
    default: *o++ = (char)*p; break; /* \" \\ \/ */
    }
  }
  *o = '\0';
  *outlen = (size_t)(o - buf);
  return buf;
}

static void value(scanner *sc);

static void members(scanner *sc) {
  adv(sc); /* { */
  ws(sc);
  while (*sc->s && *sc->s != '}' && !sc->oom) {
    int kl = sc->line, kc = sc->col;
    size_t n = 0;
    char *key = string(sc, 1, &n);
    if (!key) return;
    size_t saved = sc->len;
    if (path_push(sc, key, n) != 0) {
      free(key);
      sc->oom = 1;
      return;
    }
    free(key);
    ws(sc);
    adv(sc); /* : */
    ws(sc);
    int vl = sc->line, vc = sc->col;
    entry *e = record(sc, vl, vc);
    if (e) {
      e->kline = kl;
      e->kcol = kc;
    }
    value(sc);
    sc->len = saved;
    if (sc->path) sc->path[saved] = '\0';
    ws(sc);
    if (*sc->s == ',') {
      adv(sc);
      ws(sc);
    }
  }
  adv(sc); /* } */
}

static void elements(scanner *sc) {
  adv(sc); /* [ */
  ws(sc);
  size_t index = 0;
  while (*sc->s && *sc->s != ']' && !sc->oom) {
    char seg[32];
    int n = snprintf(seg, sizeof seg, "%zu", index++);
    size_t saved = sc->len;
    if (path_push(sc, seg, (size_t)n) != 0) {
      sc->oom = 1;
      return;
    }
    record(sc, sc->line, sc->col);
    value(sc);
    sc->len = saved;
    sc->path[saved] = '\0';
    ws(sc);
    if (*sc->s == ',') {
      adv(sc);
      ws(sc);
    }
  }
  adv(sc); /* ] */
}

static void value(scanner *sc) {
  ws(sc);
  switch (*sc->s) {
  case '{': members(sc); break;
  case '[': elements(sc); break;
  case '"': string(sc, 0, NULL); break;
  default:
    while (*sc->s && !strchr(",]} \t\r\n", *sc->s)) adv(sc);
    break;
  }
}

br_jpos *br_jpos_scan(const char *text) {
  br_jpos *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  scanner sc = {.s = (const unsigned char *)text, .line = 1, .col = 1, .out = p};
  ws(&sc);
  record(&sc, sc.line, sc.col);
  value(&sc);
  free(sc.path);
  if (sc.oom) {
    br_jpos_free(p);
    return NULL;
  }
  return p;
}

void br_jpos_free(br_jpos *p) {
  if (!p) return;
  entry *e, *tmp;
  HASH_ITER(hh, p->map, e, tmp) {
    HASH_DEL(p->map, e);
    free(e->pointer);
    free(e);
  }
  free(p);
}

static entry *find(const br_jpos *p, const char *pointer) {
  entry *e = NULL;
  if (p) HASH_FIND_STR(p->map, pointer, e);
  return e;
}

int br_jpos_value(const br_jpos *p, const char *pointer, int *line, int *column) {
  entry *e = find(p, pointer);
  *line = e ? e->vline : 0;
  *column = e ? e->vcol : 0;
  return e ? 0 : -1;
}

int br_jpos_key(const br_jpos *p, const char *pointer, int *line, int *column) {
  entry *e = find(p, pointer);
  if (!e || !e->kline) {
    *line = *column = 0;
    return -1;
  }
  *line = e->kline;
  *column = e->kcol;
  return 0;
}

const char *br__json_error_text(const json_error_t *e, char *buf, size_t size) {
  if (strstr(e->text, "JSON_ALLOW_NUL"))
    snprintf(buf, size, "a string holds \\u0000 (a NUL character), which braid does not take");
  else
    snprintf(buf, size, "%s", e->text);
  return buf;
}
