/* Call-overhead micro-benchmark of BN_ucmp, driven by lines on stdin:
     "call N"       N calls through the library's entry (original, or jump + new code)
     "direct A N"   N calls of the code at address A (hex): the replacement, no jump
   Each line answers the best ns per call of 5 rounds. Operands: 2^128 against 1
   with BN_FLG_CONSTTIME, the case the fix is about. */
#include <openssl/bn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef int (*cmp_fn)(const BIGNUM *, const BIGNUM *);
static double now_ns(void) {
  struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec;
}
static double best(cmp_fn f, long n, const BIGNUM *a, const BIGNUM *b) {
  double low = 1e18; volatile int sink = 0;
  for (int r = 0; r < 5; r++) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++) sink += f(a, b);
    double per = (now_ns() - t0) / n;
    if (per < low) low = per;
  }
  (void)sink; return low;
}
int main(void) {
  BIGNUM *a = BN_new(), *b = BN_new();
  BN_set_word(a, 1); BN_lshift(a, a, 128); BN_set_word(b, 1); BN_set_flags(b, BN_FLG_CONSTTIME);
  cmp_fn volatile entry = BN_ucmp;  /* volatile: one real call per iteration */
  char line[128];
  setvbuf(stdout, 0, _IOLBF, 0);
  while (fgets(line, sizeof line, stdin)) {
    unsigned long addr; long n;
    if (sscanf(line, "call %ld", &n) == 1) printf("%.3f\n", best(entry, n, a, b));
    else if (sscanf(line, "direct %lx %ld", &addr, &n) == 2) {
      cmp_fn volatile direct = (cmp_fn)addr;
      printf("%.3f\n", best(direct, n, a, b));
    } else printf("?\n");
  }
  return 0;
}
