"""Short workloads that run the code some stable-dev fixes patch, in the guest.

bench/stable_dev.py runs the one for a patch (by the id's number) after the
generic workload, while the patch is live. Each is a Python program for the
guest's interpreter; it may fail (a tool or feature the guest lacks) without
failing the patch: what counts is that the kernel stays clean (dmesg).
"""

from __future__ import annotations

_PRELUDE = """
import ctypes, os, socket, struct, subprocess
libc = ctypes.CDLL(None, use_errno=True)
def sh(cmd):
    subprocess.run(cmd, shell=True, check=False, timeout=20,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
"""

WORKLOADS: dict[str, str] = {
    # blkcg_init_disk: a new disk; blk_mq_elv_switch_none: its hardware queues change.
    "001": """
sh("modprobe configfs; mount -t configfs none /sys/kernel/config")
sh("modprobe null_blk nr_devices=0")
d = "/sys/kernel/config/nullb/suture"
sh(f"mkdir {d} && echo 1 > {d}/submit_queues && echo 1 > {d}/power && echo 2 > {d}/submit_queues")
sh(f"echo 0 > {d}/power; rmdir {d}; rmmod null_blk")
""",
    "002": """
sh("modprobe null_blk nr_devices=1 && dd if=/dev/nullb0 of=/dev/null bs=4k count=8; rmmod null_blk")
""",
    # send_sigio: a pipe in O_ASYNC mode owned by this process, then a write.
    "007": """
import fcntl, signal
signal.signal(signal.SIGIO, lambda *a: None)
r, w = os.pipe()
fcntl.fcntl(r, fcntl.F_SETOWN, os.getpid())
fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
os.write(w, b"x")
""",
    # inotify_new_watch: a watch on a folder.
    "008": """
fd = libc.inotify_init1(0)
libc.inotify_add_watch(fd, b"/tmp", 0x100 | 0x200)
os.close(fd)
""",
    # shm_try_destroy_orphaned: an orphaned segment, then shm_rmid_forced set.
    "009": """
pid = os.fork()
if pid == 0:
    libc.shmget(0, 4096, 0o1000 | 0o600)
    os._exit(0)
os.waitpid(pid, 0)
sh("echo 1 > /proc/sys/kernel/shm_rmid_forced; echo 0 > /proc/sys/kernel/shm_rmid_forced")
""",
    # ksys_unshare.
    "013": """
sh("unshare -u -n true")
""",
    # icmpv6_rcv: an echo over loopback.
    "025": """
sh("ping -6 -c2 -W1 ::1")
""",
    # ip6_datagram_recv_specific_ctl: a datagram received with its packet info.
    "026": """
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
s.bind(("::1", 0))
s.sendto(b"x", s.getsockname())
s.recvmsg(16, 256)
""",
    # find_key_to_update: the same user key added twice (the second updates it).
    "030": """
for payload in (b"one", b"two"):
    libc.syscall(248, b"user", b"suture", payload, len(payload), -2)
""",
    # ext4 extents: a file system with files that grow and shrink.
    "105": """
sh("modprobe loop; truncate -s 64M /tmp/sd-e4.img && mkfs.ext4 -q -F /tmp/sd-e4.img")
sh("mkdir -p /tmp/sd-e4 && mount -o loop /tmp/sd-e4.img /tmp/sd-e4")
sh("for i in 1 2 3 4 5 6 7 8; do dd if=/dev/urandom of=/tmp/sd-e4/f bs=4k count=1 "
   "seek=$((i*97)) conv=notrunc; done; sync; truncate -s 0 /tmp/sd-e4/f; sync")
sh("umount /tmp/sd-e4")
""",
    # netconsole's dev_name attribute.
    "103": """
sh("mount -t configfs none /sys/kernel/config")
t = "/sys/kernel/config/netconsole/suture"
sh(f"mkdir {t} && echo lo > {t}/dev_name && cat {t}/dev_name; rmdir {t}")
""",
    # NFC and TIPC sockets: their receive paths need peers, opening them loads the code.
    "109": """
try:
    socket.socket(39, socket.SOCK_SEQPACKET, 1).close()  # AF_NFC, NFC_SOCKPROTO_LLCP
except OSError:
    pass
""",
    "110": """
try:
    socket.socket(30, socket.SOCK_RDM).close()  # AF_TIPC
except OSError:
    pass
""",
}


def program(patch_id: str) -> str | None:
    """The workload for a patch id such as ``007-fs-send_sigio``, or None."""
    body = WORKLOADS.get(patch_id[:3])
    return None if body is None else _PRELUDE + body
