/* The depot's pack cache: whole packs kept in memory, so that fetches copy
 * their chunks rather than read the disk.
 *
 * A depot writes and reads its packs with direct I/O (on the machines we
 * measured, filling the page cache cost more than the disk), so without
 * this nothing a pull asks for is ever in memory. Yet a farm pulls what was
 * just published, and many machines pull the same snapshot at once. So a
 * pack stays here when it is written (its buffer is the one that was
 * written), and one that a fetch wants a good share of is read whole once,
 * with direct I/O, however many fetches want it at the same time: the
 * others wait for that read. The least recently used packs go first when
 * the bytes kept would pass the bound (see room); their buffers go back to
 * the buffer pool, so a long-running depot reuses its memory rather than touching new
 * pages. Packs are never changed once written (gc writes new ones and
 * removes old ones, whose names are never given again), so a kept pack is
 * never stale: one a gc removed is simply never asked for again and ages
 * out. */
#include "xfer_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SLOTS 4096 /* hash slots; chains are short at any sane bound */

struct br_xfer__pcpack {
  struct br_xfer__pcpack *prev, *next; /* recency: next is older */
  struct br_xfer__pcpack *chain;       /* same slot */
  char rel[64];
  br_xfer__buf buf; /* the pack's bytes, buf.len of them */
  double used;      /* when it was kept, read or last copied from */
  int refs;         /* fetches copying from it */
  bool loading;     /* being read: wait on loaded */
  bool gone;        /* dropped while in use: the last release frees it */
};

struct br_xfer__pcache {
  pthread_mutex_t mu;
  pthread_cond_t loaded;
  int64_t max, bytes;
  double idle_s; /* a pack unused this long may make room for a read */
  br_xfer__pcpack *newest, *oldest;
  br_xfer__pcpack *slot[SLOTS];
  br_xfer__pcache_stats st;
};

static unsigned slot_of(const char *rel) {
  unsigned h = 2166136261u; /* FNV-1a */
  for (; *rel; rel++) h = (h ^ (unsigned char)*rel) * 16777619u;
  return h % SLOTS;
}

br_xfer__pcache *br_xfer__pcache_new(int64_t max_bytes, double idle_s) {
  if (max_bytes <= 0) return NULL;
  br_xfer__pcache *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->loaded, NULL);
  c->max = max_bytes;
  c->idle_s = idle_s;
  return c;
}

static void unlink_recency(br_xfer__pcache *c, br_xfer__pcpack *p) {
  if (p->prev) p->prev->next = p->next;
  else c->newest = p->next;
  if (p->next) p->next->prev = p->prev;
  else c->oldest = p->prev;
  p->prev = p->next = NULL;
}

static void push_newest(br_xfer__pcache *c, br_xfer__pcpack *p) {
  p->prev = NULL;
  p->next = c->newest;
  if (c->newest) c->newest->prev = p;
  else c->oldest = p;
  c->newest = p;
}

static void pack_free(br_xfer__pcpack *p) {
  br_xfer__buf_free(&p->buf);
  free(p);
}

/* Takes p out of the map, the recency list and the count (mu held); it is
 * freed now, or by the last release. */
static void drop(br_xfer__pcache *c, br_xfer__pcpack *p) {
  for (br_xfer__pcpack **pp = &c->slot[slot_of(p->rel)]; *pp; pp = &(*pp)->chain)
    if (*pp == p) {
      *pp = p->chain;
      break;
    }
  unlink_recency(c, p);
  c->bytes -= (int64_t)p->buf.cap;
  if (p->refs) p->gone = true;
  else pack_free(p);
}

/* Makes room for size more bytes (mu held): drops the least recently used
 * packs that are not being read; for a read (idle_only), only those unused
 * for idle_s. False when that is not enough.
 *
 * Why reads may not push out what was used lately: a pull reads a
 * snapshot's packs in order, so a snapshot larger than the cache would
 * otherwise drop each pack just before the next pull (or the rest of this
 * one) wants it, and every pack would be read whole from the disk. This
 * way what is kept stays useful: the rest is read from the disk as if
 * there were no cache. New packs (a push) take the place of the least
 * recently used, whatever their age. */
static bool room(br_xfer__pcache *c, int64_t size, bool idle_only) {
  double now = br_xfer__now();
  br_xfer__pcpack *p = c->oldest;
  while (c->bytes + size > c->max && p) {
    if (idle_only && now - p->used < c->idle_s) break; /* newer ones are not idle either */
    br_xfer__pcpack *newer = p->prev;
    if (!p->loading) {
      drop(c, p);
      c->st.evicted++;
    }
    p = newer;
  }
  return c->bytes + size <= c->max;
}

static br_xfer__pcpack *find(br_xfer__pcache *c, const char *rel) {
  br_xfer__pcpack *p = c->slot[slot_of(rel)];
  while (p && strcmp(p->rel, rel) != 0) p = p->chain;
  return p;
}

/* A new entry for rel whose buffer has cap bytes (counted now; drop
 * uncounts buf.cap), newest, in the map (mu held). */
static br_xfer__pcpack *add(br_xfer__pcache *c, const char *rel, size_t cap) {
  br_xfer__pcpack *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  snprintf(p->rel, sizeof p->rel, "%s", rel);
  p->buf.cap = cap;
  unsigned k = slot_of(rel);
  p->chain = c->slot[k];
  c->slot[k] = p;
  push_newest(c, p);
  c->bytes += (int64_t)cap;
  p->used = br_xfer__now();
  return p;
}

void br_xfer__pcache_put(br_xfer__pcache *c, const char *rel, br_xfer__buf *buf) {
  if (!c || !rel[0] || strlen(rel) >= sizeof ((br_xfer__pcpack *)0)->rel ||
      (int64_t)buf->cap > c->max / 4) {
    br_xfer__buf_free(buf);
    return;
  }
  pthread_mutex_lock(&c->mu);
  br_xfer__pcpack *p = NULL;
  if (!find(c, rel) && room(c, (int64_t)buf->cap, false)) p = add(c, rel, buf->cap);
  if (p) {
    p->buf = *buf;
    memset(buf, 0, sizeof *buf);
    c->st.kept++;
  }
  pthread_mutex_unlock(&c->mu);
  br_xfer__buf_free(buf); /* not kept */
}

/* Reads fd's size bytes whole into b (aligned, for direct I/O). 0 or -errno. */
static int read_whole(int fd, int64_t size, br_xfer__buf *b) {
  const int64_t A = BR_XFER__DIO_ALIGN;
  int64_t span = (size + A - 1) & ~(A - 1);
  for (int64_t got = 0; got < size;) {
    ssize_t r = pread(fd, b->data + got, (size_t)(span - got), got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EINVAL && br_xfer__direct_off(fd) == 0) continue; /* no direct I/O */
    if (r < 0) return -errno;
    if (r == 0) return -ENODATA; /* shorter than its size said */
    got += r;
  }
  b->len = (size_t)size;
  return 0;
}

const br_xfer__pcpack *br_xfer__pcache_get(br_xfer__pcache *c, const char *rel, int fd,
                                           int64_t size, bool load) {
  if (!c) return NULL;
  pthread_mutex_lock(&c->mu);
  br_xfer__pcpack *p = find(c, rel);
  while (p && p->loading) { /* another fetch reads it: wait for that */
    p->refs++;
    pthread_cond_wait(&c->loaded, &c->mu);
    p->refs--;
    if (p->gone) { /* its read failed: read the disk as before */
      if (!p->refs) pack_free(p);
      p = NULL;
      break;
    }
    if (!p->loading) {
      c->st.waited++;
      break;
    }
  }
  if (p) {
    p->refs++;
    unlink_recency(c, p);
    push_newest(c, p);
    p->used = br_xfer__now();
    c->st.hits++;
    pthread_mutex_unlock(&c->mu);
    return p;
  }
  if (!load) c->st.misses++; /* a load follows a lookup that missed */
  size_t cap = size > 0 ? br_xfer__mem_cap((size_t)size) : 0;
  if (!load || size <= 0 || fd < 0 || (int64_t)cap > c->max / 4 ||
      strlen(rel) >= sizeof p->rel || !room(c, (int64_t)cap, true) || !(p = add(c, rel, cap))) {
    pthread_mutex_unlock(&c->mu);
    return NULL;
  }
  p->loading = true;
  p->refs = 1;
  pthread_mutex_unlock(&c->mu);
  /* Read it without the lock; fetches of other packs go on. */
  p->buf.data = br_xfer__mem_get((size_t)size, &p->buf.cap); /* the cap counted */
  int rc = p->buf.data ? read_whole(fd, size, &p->buf) : -ENOMEM;
  pthread_mutex_lock(&c->mu);
  p->loading = false;
  if (rc == 0) c->st.loaded++;
  else drop(c, p); /* refs held: waiters see gone */
  pthread_cond_broadcast(&c->loaded);
  if (rc != 0) {
    bool last = --p->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last) pack_free(p);
    return NULL;
  }
  pthread_mutex_unlock(&c->mu);
  return p;
}

const uint8_t *br_xfer__pcpack_bytes(const br_xfer__pcpack *p, size_t *len) {
  *len = p->buf.len;
  return p->buf.data;
}

void br_xfer__pcache_release(br_xfer__pcache *c, const br_xfer__pcpack *cp) {
  if (!c || !cp) return;
  br_xfer__pcpack *p = (br_xfer__pcpack *)cp;
  pthread_mutex_lock(&c->mu);
  bool last = --p->refs == 0 && p->gone;
  pthread_mutex_unlock(&c->mu);
  if (last) pack_free(p);
}

void br_xfer__pcache_stats_get(br_xfer__pcache *c, br_xfer__pcache_stats *out) {
  memset(out, 0, sizeof *out);
  if (!c) return;
  pthread_mutex_lock(&c->mu);
  *out = c->st;
  out->bytes = c->bytes;
  out->max = c->max;
  for (br_xfer__pcpack *p = c->newest; p; p = p->next) out->packs++;
  pthread_mutex_unlock(&c->mu);
}

void br_xfer__pcache_free(br_xfer__pcache *c) {
  if (!c) return;
  while (c->oldest) drop(c, c->oldest); /* no fetch runs any more */
  pthread_cond_destroy(&c->loaded);
  pthread_mutex_destroy(&c->mu);
  free(c);
}
