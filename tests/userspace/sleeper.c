/* An idle process that maps libc: the many processes a host runs. Wakes every
   200 ms (usleep: an interrupted sleep just ends early). No output. */
#include <unistd.h>
int main(void) {
  for (;;) usleep(200000);
}
