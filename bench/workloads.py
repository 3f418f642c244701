"""Short workloads that run the code some corpus fixes patch, in the guest.

bench/stable_dev.py runs the one for a patch (by the id's number: 0NN and 1NN
are stable-dev's, 2NN header-dev's) after the generic workload, while the
patch is live. Each is a Python program for the
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
def udp(addr, size=64, family=socket.AF_INET, port=9, count=1):
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        for _ in range(count):
            try:
                s.sendto(b"x" * size, (addr, port))
            except OSError:
                pass
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

# header-dev (bench/corpora/header-dev): the units a header change reaches.
_HEADER_DEV: dict[str, str] = {
    # mm_pkey_alloc: pkey_alloc(2) and pkey_free(2).
    "201": """
key = libc.syscall(330, 0, 0)
if key >= 0:
    libc.syscall(331, key)
""",
    # virtio_net_hdr_to_skb: a TCPv4 GSO frame, tiny gso_size, through AF_PACKET's vnet header.
    "202": """
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR
s.bind(("lo", 0))
payload = b"x" * 1400
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 1, 0, 64, 6, 0,
                 bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
tcp = struct.pack("!HHIIBBHHH", 40000, 9, 1, 0, 5 << 4, 0x18, 1024, 0, 0)
# flags NEEDS_CSUM, gso TCPV4, hdr_len, gso_size 4, csum_start 34, csum_offset 16
vnet = struct.pack("<BBHHHH", 1, 1, 54, 4, 34, 16)
try:
    s.send(vnet + bytes(12) + bytes([8, 0]) + ip + tcp + payload)
except OSError:
    pass
""",
    # validate_gue_flags: GUE datagrams with a REMCSUM private option, valid and invalid.
    "203": """
sh("modprobe fou; ip fou add port 5555 gue")
for start, offset in ((0, 6), (10, 2)):
    gue = bytes([2, 4, 0, 1]) + struct.pack("!IHH", 0x80000000, start, offset)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(gue + bytes(40), ("127.0.0.1", 5555))
sh("ip fou del port 5555")
""",
    # ip6_dst_mtu_maybe_forward: IPv6 datagrams of several sizes over ::1.
    "204": """
for size in (100, 1500, 9000, 60000):
    udp("::1", size, socket.AF_INET6)
""",
    # __qdisc_calculate_pkt_len: a size table that inflates every packet, then traffic.
    "205": """
sh("modprobe -a dummy sch_fq_codel")
sh("ip link add sdq0 type dummy && ip link set sdq0 up && ip addr add 10.205.0.1/24 dev sdq0")
sh("tc qdisc add dev sdq0 root stab overhead 2000000 linklayer ethernet pfifo limit 10")
udp("10.205.0.2", 100, count=5)
sh("ip link del sdq0")
""",
    # ip_tunnel_bind_dev & co: tunnels of each kind created over lo, up, one packet each.
    "206": """
sh("modprobe -a ip_gre sit ip6_tunnel ip6_gre")
sh("ip link add sdgre type gre local 127.0.0.1 remote 127.0.0.2 ttl 64")
sh("ip link add sdsit type sit local 127.0.0.1 remote 127.0.0.2 ttl 64")
sh("ip -6 link add sdip6 type ip6tnl local ::1 remote ::2")
sh("ip link add sdg6 type ip6gre local ::1 remote ::2")
for i, dev in enumerate(("sdgre", "sdsit", "sdip6", "sdg6")):
    sh(f"ip link set {dev} up && ip addr add 10.206.{i}.1/30 dev {dev}")
    udp(f"10.206.{i}.2")
sh("ip link del sdgre; ip link del sdsit; ip link del sdip6; ip link del sdg6")
""",
    # fib_leaf_notify: no FIB notifier user without hardware here (netdevsim is not built).
    # affs_fill_super: a zeroed image is no AFFS, but the mount reads it.
    "212": """
sh("truncate -s 1M /tmp/sd-affs.img && mkdir -p /tmp/sd-affs")
sh("mount -t affs -o loop /tmp/sd-affs.img /tmp/sd-affs; rm -f /tmp/sd-affs.img")
""",
    # inet_reset_saddr: UDP and raw sockets connected, then disconnected (AF_UNSPEC).
    "213": """
unspec = struct.pack("H14x", 0)
for kind, proto in ((socket.SOCK_DGRAM, 0), (socket.SOCK_RAW, 17)):
    for family, addr in ((socket.AF_INET, ("127.0.0.1", 9)), (socket.AF_INET6, ("::1", 9))):
        try:
            s = socket.socket(family, kind, proto)
            s.connect(addr)
            libc.connect(s.fileno(), unspec, len(unspec))
            s.close()
        except OSError:
            pass
""",
    # __vlan_insert_inner_tag: a second tag pushed by act_vlan (skb_vlan_push); a vlan device.
    "214": """
sh("modprobe -a dummy 8021q sch_ingress cls_matchall act_vlan")
sh("ip link add sdv0 type dummy && ip link set sdv0 up")
sh("ip link add link sdv0 name sdv0.5 type vlan id 5 reorder_hdr off && ip link set sdv0.5 up")
sh("ip addr add 10.214.0.1/24 dev sdv0.5")
sh("tc qdisc add dev sdv0 clsact && tc filter add dev sdv0 egress matchall "
   "action vlan push id 10 action vlan push id 20")
udp("10.214.0.2", count=3)
sh("ip link del sdv0.5; ip link del sdv0")
""",
    # codel_dequeue: fq_codel (built in) and codel (module) dequeue on a dummy device.
    "215": """
sh("modprobe -a dummy sch_codel")
sh("ip link add sdc0 type dummy && ip link set sdc0 up && ip addr add 10.215.0.1/24 dev sdc0")
for qdisc in ("fq_codel", "codel"):
    sh(f"tc qdisc replace dev sdc0 root {qdisc}")
    udp("10.215.0.2", 1000, count=20)
sh("ip link del sdc0")
""",
    # wg_reset_packet needs a peer (no wg tool): the device only.
    "216": """
sh("modprobe wireguard")
sh("ip link add sdwg type wireguard && ip link set sdwg up; ip link del sdwg")
""",
    # clone_mnt: bind mounts and a mount namespace copy.
    "217": """
sh("mkdir -p /tmp/sd-m1 /tmp/sd-m2 && mount -t tmpfs none /tmp/sd-m1 && "
   "mount --make-shared /tmp/sd-m1 && mount --bind /tmp/sd-m1 /tmp/sd-m2")
sh("unshare -m sh -c 'umount /tmp/sd-m2; true'")
sh("umount /tmp/sd-m2; umount /tmp/sd-m1")
""",
    # pci_match_device and the dynamic ids: an id added to and removed from a driver.
    "218": """
# pcieport is built in; adding an id matches it against every PCI device of the guest.
drv = "/sys/bus/pci/drivers/pcieport"
sh(f"echo '1af4 7fff' > {drv}/new_id; echo '1af4 7fff' > {drv}/remove_id")
sh("echo 1 > /sys/bus/pci/rescan")
""",
    # tls_sw_has_ctx_tx/rx: a TCP socket with the tls ULP (sockmap's users need BPF).
    "220": """
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
cli = socket.create_connection(srv.getsockname())
try:
    cli.setsockopt(socket.IPPROTO_TCP, 31, b"tls")  # TCP_ULP
except OSError:
    pass
cli.close()
srv.close()
""",
    # tcf_pedit_nkeys_locked: pedit in a matchall filter and as an action (offload setup).
    "221": """
sh("modprobe -a dummy sch_ingress cls_matchall act_pedit")
sh("ip link add sdp0 type dummy && ip link set sdp0 up && tc qdisc add dev sdp0 ingress")
sh("tc filter add dev sdp0 parent ffff: matchall action pedit munge offset 0 u8 set 1")
sh("tc actions add action pedit munge offset 0 u8 set 2 index 221; "
   "tc actions del action pedit index 221")
sh("ip link del sdp0")
""",
    # ieee80211_mle_size_ok: hwsim radios (frames with an MLE need a peer that sends them).
    "222": """
sh("modprobe mac80211_hwsim radios=2; sleep 1; rmmod mac80211_hwsim")
""",
    # shmem_get_folio_gfp, shmem_getattr (shmem_is_huge): a tmpfs that may use huge pages.
    "226": """
sh("mkdir -p /tmp/sd-shm && mount -t tmpfs -o huge=within_size none /tmp/sd-shm")
sh("dd if=/dev/zero of=/tmp/sd-shm/f bs=1M count=4 && stat /tmp/sd-shm/f; umount /tmp/sd-shm")
""",
    # vec_setup / UNPACK_ARRAY: AppArmor's policy files (loading needs apparmor_parser).
    "223": """
sh("cat /sys/kernel/security/apparmor/profiles /proc/self/attr/current")
""",
    "224": """
sh("cat /sys/kernel/security/apparmor/profiles; ls -R /sys/kernel/security/apparmor/policy")
""",
}
WORKLOADS.update(_HEADER_DEV)


def program(patch_id: str) -> str | None:
    """The workload for a patch id such as ``007-fs-send_sigio``, or None."""
    body = WORKLOADS.get(patch_id[:3])
    return None if body is None else _PRELUDE + body
