/* Calls ungetwc in a loop and says whether it moved the byte stream's read pointer
   (CVE-2026-5928: the bug moves it; the fix leaves it). Built from a file "A\0". */
#include <stdio.h>
#include <wchar.h>
#include <unistd.h>
#include <stdlib.h>
int main(int argc, char **argv) {
  const char *path = argc > 1 ? argv[1] : "/tmp/us/a0.bin";
  FILE *w = fopen(path, "w"); fwrite("A", 1, 2, w); fclose(w);
  for (;;) {
    FILE *fp = fopen(path, "r+");
    getwc(fp);
    char *before = fp->_IO_read_ptr;
    ungetwc(L'\0', fp);
    printf("%s\n", fp->_IO_read_ptr == before ? "FIXED" : "VULNERABLE");
    fflush(stdout);
    fclose(fp);
    usleep(20000);
  }
}
