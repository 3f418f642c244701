/* An idle process with N threads (64 by default) sleeping in usleep: what the pause of
   a many-threaded process is measured on (every thread is stopped, and its stack unwound). */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
static void *run(void *x) { (void)x; for (;;) usleep(100000); return 0; }
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 64;
  for (int i = 0; i < n; i++) { pthread_t t; pthread_create(&t, 0, run, 0); }
  for (;;) pause();
}
