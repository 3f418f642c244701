/* A thread calls BN_ucmp in a loop; SIGUSR1 lands in it, and when it lands inside
   BN_ucmp the handler parks there (sleeps) for PARK seconds: a frame of the
   patched function stays on the stack. No LD_PRELOAD. Prints PARKED, LEFT. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <openssl/bn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>
#include <unistd.h>
static unsigned long lo, hi; static volatile int parked, left; static double park = 2.0;
static BIGNUM *a, *b;
static void on_usr1(int sig, siginfo_t *si, void *ctx) {
  unsigned long rip = ((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RIP];
  (void)sig; (void)si;
  /* Past the entry's endbr64 and 5-byte jump: a thread at or before the jump site
     would just take the jump once it is written (not "inside"). Under emulation
     (TCG) signals land at block starts, the function's entry among them. */
  if (parked || rip < lo + 9 || rip >= hi) return;
  parked = 1; write(1, "PARKED\n", 7); usleep((useconds_t)(park * 1e6)); left = 1; write(1, "LEFT\n", 5);
}
static void *spin(void *x) { (void)x; while (!left) BN_ucmp(a, b); for (;;) pause(); return 0; }
int main(int argc, char **argv) {
  if (argc > 1) park = atof(argv[1]);
  lo = (unsigned long)dlsym(RTLD_DEFAULT, "BN_ucmp"); hi = lo + (argc > 2 ? atoi(argv[2]) : 314);
  a = BN_new(); b = BN_new(); BN_set_word(a, 1); BN_lshift(a, a, 128); BN_set_word(b, 1);
  struct sigaction sa = {0}; sa.sa_sigaction = on_usr1; sa.sa_flags = SA_SIGINFO;
  sigaction(SIGUSR1, &sa, 0);
  pthread_t t; pthread_create(&t, 0, spin, 0);
  while (!parked) { pthread_kill(t, SIGUSR1); usleep(1000); }
  for (;;) pause();
}
