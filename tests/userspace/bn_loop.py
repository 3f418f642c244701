# A long-running Python process calling libcrypto's BN_ucmp through ctypes:
# a = 2^128 (3 words), b = 1 with BN_FLG_CONSTTIME; the bug returns 2, the fix 1.
import ctypes
import time

c = ctypes.CDLL("libcrypto.so.3")
c.BN_new.restype = ctypes.c_void_p
for f in ("BN_set_word", "BN_lshift", "BN_set_flags", "BN_ucmp"):
    getattr(c, f).argtypes = None
a, b = c.BN_new(), c.BN_new()
c.BN_set_word(ctypes.c_void_p(a), ctypes.c_ulong(1))
c.BN_lshift(ctypes.c_void_p(a), ctypes.c_void_p(a), 128)
c.BN_set_word(ctypes.c_void_p(b), ctypes.c_ulong(1))
c.BN_set_flags(ctypes.c_void_p(b), 0x04)
while True:
    r = c.BN_ucmp(ctypes.c_void_p(a), ctypes.c_void_p(b))
    print("FIXED" if r == 1 else f"VULNERABLE ({r})", flush=True)
    time.sleep(0.02)
