/* The bandwidth limit: one token bucket shared by every transfer of a push
 * or pull (or of several, if the caller shares it). Tokens are bytes; the
 * bucket refills at `rate` per second up to a small burst, and may go into
 * debt so a transfer that already received bytes is charged for them. */
#include "xfer_int.h"

void br_xfer__bucket_init(br_xfer__bucket *b, int64_t rate) {
  pthread_mutex_init(&b->mu, NULL);
  b->rate = rate > 0 ? (double)rate : 0;
  b->burst = b->rate > 0 ? (b->rate / 20 > 65536 ? b->rate / 20 : 65536) : 0;
  b->tokens = b->burst;
  b->last = br_xfer__now();
}

void br_xfer__bucket_destroy(br_xfer__bucket *b) { pthread_mutex_destroy(&b->mu); }

static void refill(br_xfer__bucket *b) {
  double now = br_xfer__now();
  b->tokens += (now - b->last) * b->rate;
  if (b->tokens > b->burst) b->tokens = b->burst;
  b->last = now;
}

size_t br_xfer__bucket_take(br_xfer__bucket *b, size_t want) {
  if (b->rate <= 0) return want;
  pthread_mutex_lock(&b->mu);
  refill(b);
  size_t got = 0;
  if (b->tokens >= 1) {
    got = b->tokens < (double)want ? (size_t)b->tokens : want;
    b->tokens -= (double)got;
  }
  pthread_mutex_unlock(&b->mu);
  return got;
}

void br_xfer__bucket_charge(br_xfer__bucket *b, size_t n) {
  if (b->rate <= 0) return;
  pthread_mutex_lock(&b->mu);
  refill(b);
  b->tokens -= (double)n;
  pthread_mutex_unlock(&b->mu);
}

double br_xfer__bucket_wait(br_xfer__bucket *b) {
  if (b->rate <= 0) return 0;
  pthread_mutex_lock(&b->mu);
  refill(b);
  double w = b->tokens >= 1 ? 0 : (1 - b->tokens) / b->rate;
  pthread_mutex_unlock(&b->mu);
  return w;
}
