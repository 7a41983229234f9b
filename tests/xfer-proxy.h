/* A fault-injecting TCP proxy for the transfer tests (and the benchmark),
 * header only, loopback only. It relays bytes both ways and understands
 * just enough HTTP/1.1 on the way back (status line, headers,
 * Content-Length bodies) to hurt one response precisely: cut it at a byte
 * of its body (random, or a chunk boundary), stall it, flip a bit, shorten
 * it, turn a 206 into a 200, change its Content-Range, or replace it with
 * an HTML error page. A fault hits the responses whose headers contain
 * `match` (and not `nomatch`), and whose body is no longer than
 * `max_body` (if set), after `skip` of them, `times` times. It can also
 * add latency and a bandwidth cap for the benchmark. */
#ifndef BR_TEST_XFER_PROXY_H
#define BR_TEST_XFER_PROXY_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
  XP_NONE,
  XP_CUT,       /* close both sides at body offset `at` (-1 random; -2 after the body) */
  XP_STALL,     /* at body offset `at`, send nothing for stall_ms, then go on */
  XP_FLIP,      /* flip one bit at body offset `at` (-1 random) */
  XP_SHORT,     /* send all but the last `at` bytes of the body, then close */
  XP_200,       /* "206 Partial Content" becomes "200 OK" (body unchanged) */
  XP_BADRANGE,  /* Content-Range start moved by one */
  XP_HTML,      /* the whole response replaced by a 200 text/html error page */
  XP_STATUS,    /* the whole response replaced by a JSON error with `status` */
};

typedef struct xp_fault {
  int kind;
  const char *match;   /* substring of the response headers; NULL = any */
  const char *nomatch; /* must not be in them; NULL = no condition */
  int skip, times;
  long at;
  int stall_ms;
  int status; /* XP_STATUS: 503, 429, 403, 404 ... */
  long max_body; /* only responses whose body is this long or shorter; 0 = any */
} xp_fault;

typedef struct xproxy {
  int lfd, port, upstream;
  pthread_t th;
  atomic_int stop;
  pthread_mutex_t mu;
  xp_fault f;
  int matched, hits;
  unsigned seed;
  int delay_ms;       /* added one way (so the round trip grows by twice it) */
  double rate;        /* bytes per second cap across connections, 0 = none */
  double next_free[2]; /* bandwidth cap: when each direction's link is next idle */
  atomic_int conns;
  atomic_int max_conns; /* the most connections open at once */
  /* Called (proxy thread) when a fault hits, before it is done (may be NULL). */
  void (*on_hit)(void *ud);
  void *on_hit_ud;
} xproxy;

typedef struct xp_conn {
  xproxy *p;
  int c, s;
} xp_conn;

static double xp_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void xp_sleep(double s) {
  if (s <= 0) return;
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
}

static int xp_send(xproxy *p, int fd, const void *buf, size_t len) {
  const char *b = buf;
  while (len) {
    size_t n = len > 65536 ? 65536 : len;
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    b += w;
    len -= (size_t)w;
  }
  return 0;
}

/* Decides whether this response is hit; returns the fault kind or XP_NONE. */
static int xp_decide(xproxy *p, const char *headers, long body_len, long *at) {
  int kind = XP_NONE;
  pthread_mutex_lock(&p->mu);
  if (p->f.kind != XP_NONE && (!p->f.match || strstr(headers, p->f.match)) &&
      (!p->f.nomatch || !strstr(headers, p->f.nomatch)) && body_len > 0 &&
      (!p->f.max_body || body_len <= p->f.max_body)) {
    if (p->matched++ >= p->f.skip && p->hits < p->f.times) {
      p->hits++;
      kind = p->f.kind;
      *at = p->f.at;
      if (*at == -1) *at = (long)(rand_r(&p->seed) % (unsigned)body_len);
      if (*at == -2) *at = body_len;
      if (*at > body_len) *at = body_len;
    }
  }
  pthread_mutex_unlock(&p->mu);
  if (kind != XP_NONE && p->on_hit) p->on_hit(p->on_hit_ud);
  return kind;
}

/* ---- shaping (benchmark): latency and a bandwidth cap as a delay line ----
 * A reader thread stamps each block with the time it would reach the far
 * end (leaving when the direction's link is free, plus the one-way delay);
 * a writer thread delivers blocks when due, so the line stays full. */
typedef struct xp_block {
  struct xp_block *next;
  double due;
  size_t len;
  char data[];
} xp_block;

typedef struct xp_line {
  xproxy *p;
  int from, to, dir;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  xp_block *head, *tail;
  int eof;
} xp_line;

static void *xp_line_reader(void *arg) {
  xp_line *l = arg;
  xproxy *p = l->p;
  char buf[16384];
  for (;;) {
    ssize_t n = recv(l->from, buf, sizeof buf, 0);
    if (n <= 0) break;
    double now = xp_now(), depart = now;
    if (p->rate > 0) {
      pthread_mutex_lock(&p->mu);
      if (p->next_free[l->dir] < now) p->next_free[l->dir] = now;
      p->next_free[l->dir] += (double)n / p->rate;
      depart = p->next_free[l->dir];
      pthread_mutex_unlock(&p->mu);
    }
    xp_block *b = malloc(sizeof *b + (size_t)n);
    b->next = NULL;
    b->due = depart + p->delay_ms / 1000.0;
    b->len = (size_t)n;
    memcpy(b->data, buf, (size_t)n);
    pthread_mutex_lock(&l->mu);
    if (l->tail) l->tail->next = b;
    else l->head = b;
    l->tail = b;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
  }
  pthread_mutex_lock(&l->mu);
  l->eof = 1;
  pthread_cond_signal(&l->cv);
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

static void *xp_line_writer(void *arg) {
  xp_line *l = arg;
  int ok = 1;
  for (;;) {
    pthread_mutex_lock(&l->mu);
    while (!l->head && !l->eof) pthread_cond_wait(&l->cv, &l->mu);
    xp_block *b = l->head;
    if (b) {
      l->head = b->next;
      if (!l->head) l->tail = NULL;
    }
    pthread_mutex_unlock(&l->mu);
    if (!b) break;
    xp_sleep(b->due - xp_now());
    if (ok && xp_send(l->p, l->to, b->data, b->len)) {
      ok = 0;
      shutdown(l->from, SHUT_RDWR); /* the far side is gone: stop reading */
    }
    free(b);
  }
  shutdown(l->to, SHUT_WR);
  return NULL;
}

static void xp_shaped(xproxy *p, int c, int s) {
  xp_line up = {p, c, s, 0, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0};
  xp_line down = {p, s, c, 1, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0};
  pthread_t t[4];
  pthread_create(&t[0], NULL, xp_line_reader, &up);
  pthread_create(&t[1], NULL, xp_line_writer, &up);
  pthread_create(&t[2], NULL, xp_line_reader, &down);
  pthread_create(&t[3], NULL, xp_line_writer, &down);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
}

static void *xp_conn_main(void *arg) {
  xp_conn *cn = arg;
  xproxy *p = cn->p;
  if (p->delay_ms > 0 || p->rate > 0) {
    xp_shaped(p, cn->c, cn->s);
    close(cn->c);
    close(cn->s);
    free(cn);
    atomic_fetch_sub(&p->conns, 1);
    return NULL;
  }
  char *hb = malloc(65536); /* header bytes of the current response */
  size_t hlen = 0;
  long body_left = -1, body_off = 0, body_len = 0, at = 0;
  int kind = XP_NONE;
  char buf[65536];
  struct pollfd pf[2] = {{cn->c, POLLIN, 0}, {cn->s, POLLIN, 0}};
  int open_ = 1;
  while (open_ && !atomic_load(&p->stop)) {
    if (poll(pf, 2, 200) < 0 && errno != EINTR) break;
    if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = recv(cn->c, buf, sizeof buf, 0);
      if (n <= 0 || xp_send(p, cn->s, buf, (size_t)n)) break;
    }
    if (!(pf[1].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    ssize_t n = recv(cn->s, buf, sizeof buf, 0);
    if (n <= 0) break;
    size_t i = 0;
    while (i < (size_t)n && open_) {
      if (body_left < 0) {
        /* Collecting a header block. */
        if (hlen < 65535) hb[hlen++] = buf[i];
        i++;
        if (hlen >= 4 && memcmp(hb + hlen - 4, "\r\n\r\n", 4) == 0) {
          hb[hlen] = 0;
          const char *cl = strcasestr(hb, "\r\nContent-Length:");
          body_len = cl ? strtol(cl + 17, NULL, 10) : 0;
          kind = xp_decide(p, hb, body_len, &at);
          body_off = 0;
          body_left = body_len;
          if (kind == XP_200 && strstr(hb, " 206 ")) {
            char *sl = strstr(hb, "\r\n");
            char out[65536 + 64];
            int k = snprintf(out, sizeof out, "HTTP/1.1 200 OK%s", sl);
            if (xp_send(p, cn->c, out, (size_t)k)) open_ = 0;
          } else if (kind == XP_BADRANGE && strcasestr(hb, "Content-Range: bytes ")) {
            char *cr = strcasestr(hb, "Content-Range: bytes ") + 21;
            long a = strtol(cr, NULL, 10);
            char *dash = strchr(cr, '-');
            char out[65536 + 64];
            int k = snprintf(out, sizeof out, "%.*s%ld%s", (int)(cr - hb), hb, a + 1, dash);
            if (xp_send(p, cn->c, out, (size_t)k)) open_ = 0;
          } else if (kind == XP_STATUS) {
            const char *page = "{\"error\":\"injected by the test proxy\"}";
            char out[512];
            int k = snprintf(out, sizeof out,
                             "HTTP/1.1 %d Injected\r\nContent-Type: application/json\r\n"
                             "Content-Length: %zu\r\n\r\n%s",
                             p->f.status, strlen(page), page);
            if (xp_send(p, cn->c, out, (size_t)k)) open_ = 0;
          } else if (kind == XP_HTML) {
            const char *page = "<html><body><h1>502 Bad Gateway</h1>nginx</body></html>\n";
            char out[512];
            int k = snprintf(out, sizeof out,
                             "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                             "Content-Length: %zu\r\n\r\n%s",
                             strlen(page), page);
            if (xp_send(p, cn->c, out, (size_t)k)) open_ = 0;
          } else {
            if (xp_send(p, cn->c, hb, hlen)) open_ = 0;
          }
          hlen = 0;
          if (body_left == 0) body_left = -1;
        }
        continue;
      }
      /* Body bytes: up to the end of this body, or the fault's offset. */
      size_t take = (size_t)n - i;
      if ((long)take > body_left) take = (size_t)body_left;
      long stop_at = -1;
      if (kind == XP_CUT || kind == XP_STALL || kind == XP_FLIP) stop_at = at;
      if (kind == XP_SHORT) stop_at = body_len - (at > 0 ? at : 1);
      if (stop_at >= body_off && stop_at < body_off + (long)take) take = (size_t)(stop_at - body_off);
      if (kind != XP_HTML && kind != XP_STATUS && take && xp_send(p, cn->c, buf + i, take)) open_ = 0;
      i += take;
      body_off += (long)take;
      body_left -= (long)take;
      if (open_ && body_off == stop_at) {
        if (kind == XP_CUT || kind == XP_SHORT) {
          open_ = 0;
        } else if (kind == XP_STALL) {
          xp_sleep(p->f.stall_ms / 1000.0);
          kind = XP_NONE;
        } else if (kind == XP_FLIP && i < (size_t)n) {
          buf[i] ^= 0x10;
          kind = XP_NONE;
        }
      }
      if (body_left == 0) {
        body_left = -1;
        if (kind == XP_CUT && at >= body_len) open_ = 0; /* cut after the body */
        kind = XP_NONE;
      }
    }
  }
  shutdown(cn->c, SHUT_RDWR);
  shutdown(cn->s, SHUT_RDWR);
  close(cn->c);
  close(cn->s);
  free(hb);
  free(cn);
  atomic_fetch_sub(&p->conns, 1);
  return NULL;
}

static void *xp_accept_main(void *arg) {
  xproxy *p = arg;
  while (!atomic_load(&p->stop)) {
    struct pollfd pf = {p->lfd, POLLIN, 0};
    if (poll(&pf, 1, 100) <= 0) continue;
    int c = accept(p->lfd, NULL, NULL);
    if (c < 0) continue;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)p->upstream);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
      close(c);
      if (s >= 0) close(s);
      continue;
    }
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    xp_conn *cn = malloc(sizeof *cn);
    cn->p = p;
    cn->c = c;
    cn->s = s;
    int open_now = atomic_fetch_add(&p->conns, 1) + 1;
    int most = atomic_load(&p->max_conns);
    while (open_now > most && !atomic_compare_exchange_weak(&p->max_conns, &most, open_now)) {
    }
    pthread_t th;
    if (pthread_create(&th, NULL, xp_conn_main, cn) == 0) {
      pthread_detach(th);
    } else {
      close(c);
      close(s);
      free(cn);
      atomic_fetch_sub(&p->conns, 1);
    }
  }
  return NULL;
}

/* Starts a proxy on 127.0.0.1 (ephemeral port) in front of upstream_port. */
__attribute__((unused)) static int xp_start(xproxy *p, int upstream_port, unsigned seed) {
  memset(p, 0, sizeof *p);
  pthread_mutex_init(&p->mu, NULL);
  p->upstream = upstream_port;
  p->seed = seed;
  p->lfd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(p->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(p->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(p->lfd, 128) != 0)
    return -1;
  socklen_t sl = sizeof sa;
  getsockname(p->lfd, (struct sockaddr *)&sa, &sl);
  p->port = ntohs(sa.sin_port);
  return pthread_create(&p->th, NULL, xp_accept_main, p) == 0 ? 0 : -1;
}

__attribute__((unused)) static void xp_set(xproxy *p, xp_fault f) {
  pthread_mutex_lock(&p->mu);
  p->f = f;
  p->matched = p->hits = 0;
  pthread_mutex_unlock(&p->mu);
}

__attribute__((unused)) static int xp_hits(xproxy *p) {
  pthread_mutex_lock(&p->mu);
  int h = p->hits;
  pthread_mutex_unlock(&p->mu);
  return h;
}

/* Waits up to seconds for every proxied connection to close; returns how
 * many are still open. */
__attribute__((unused)) static int xp_wait_closed(xproxy *p, double seconds) {
  for (double t = 0; t < seconds && atomic_load(&p->conns) > 0; t += 0.02) xp_sleep(0.02);
  return atomic_load(&p->conns);
}

__attribute__((unused)) static void xp_stop(xproxy *p) {
  atomic_store(&p->stop, 1);
  pthread_join(p->th, NULL);
  close(p->lfd);
  xp_wait_closed(p, 2.0);
}

#endif
