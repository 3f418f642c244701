# A long-running Python process calling glibc's ungetwc through ctypes, as
# ungetwc_loop.c does: after getwc on a byte stream, ungetwc(L'\0') must not
# move the stream's read pointer (CVE-2026-5928: the bug moves it).
# struct _IO_FILE starts with int _flags, then char *_IO_read_ptr (offset 8).
import ctypes
import sys
import time
from pathlib import Path

libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.getwc.argtypes = [ctypes.c_void_p]
libc.ungetwc.argtypes = [ctypes.c_uint, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
name = sys.argv[1] if len(sys.argv) > 1 else "/tmp/suture-py-a0.bin"
Path(name).write_bytes(b"A\0")
path = name.encode()
while True:
    fp = libc.fopen(path, b"r+")
    libc.getwc(fp)
    before = ctypes.c_void_p.from_address(fp + 8).value
    libc.ungetwc(0, fp)
    after = ctypes.c_void_p.from_address(fp + 8).value
    print("FIXED" if after == before else "VULNERABLE", flush=True)
    libc.fclose(fp)
    time.sleep(0.02)
