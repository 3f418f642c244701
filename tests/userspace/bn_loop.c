/* A long-running C program calling libcrypto's BN_ucmp, as bn_loop.py does:
   a = 2^128 (3 words), b = 1 with BN_FLG_CONSTTIME; the bug returns 2, the fix 1. */
#include <openssl/bn.h>
#include <stdio.h>
#include <unistd.h>
int main(void) {
  BIGNUM *a = BN_new(), *b = BN_new();
  BN_set_word(a, 1); BN_lshift(a, a, 128); BN_set_word(b, 1); BN_set_flags(b, BN_FLG_CONSTTIME);
  for (;;) {
    int r = BN_ucmp(a, b);
    if (r == 1) printf("FIXED\n"); else printf("VULNERABLE (%d)\n", r);
    fflush(stdout);
    usleep(20000);
  }
}
