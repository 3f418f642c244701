#!/usr/bin/env python3
"""The test of examples/sockmap-max-entries.patch: passes when the fix is live.

A BPF sockmap of 2**31 entries is refused with EINVAL by the fixed kernel;
the unfixed one tries to allocate it and fails with ENOMEM.
"""

import ctypes
import os
import struct
import sys

BPF_MAP_CREATE, BPF_MAP_TYPE_SOCKMAP, SYS_BPF = 0, 15, 321  # x86-64
libc = ctypes.CDLL(None, use_errno=True)
attr = struct.pack("IIIII", BPF_MAP_TYPE_SOCKMAP, 4, 4, 0x80000000, 0) + bytes(108)
fd = libc.syscall(SYS_BPF, BPF_MAP_CREATE, attr, len(attr))
err = ctypes.get_errno()
if fd >= 0:
    os.close(fd)
print(f"bpf(BPF_MAP_CREATE, sockmap of 2**31 entries): {fd} {os.strerror(err) if fd < 0 else ''}")
sys.exit(0 if fd < 0 and err == 22 else 1)
