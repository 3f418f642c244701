"""Short workloads that run the code some corpus fixes patch, in the guest.

bench/stable_dev.py runs the one for a patch (by the id's number: 0NN and 1NN
are stable-dev's, 2NN header-dev's, 3NN trixie-dev's,
4NN backports-dev's) after the generic workload, while the
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


# trixie-dev (bench/corpora/trixie-dev, 6.12.117): the code each fix changes.
_TRIXIE_DEV: dict[str, str] = {
    # sg_set_timeout, bsg_ioctl: SG_SET_TIMEOUT (0x2201) with a negative and a huge value.
    "302": """
import fcntl, glob
sh("modprobe scsi_debug dev_size_mb=1; modprobe sg")
for node in glob.glob("/dev/sg*") + glob.glob("/dev/bsg/*"):
    try:
        fd = os.open(node, os.O_RDWR | os.O_NONBLOCK)
    except OSError:
        continue
    for value in (-1, 1 << 30, 500):
        try:
            fcntl.ioctl(fd, 0x2201, struct.pack("i", value))
        except OSError:
            pass
    os.close(fd)
sh("rmmod scsi_debug")
""",
    # input_event: a uinput keyboard sends a key and EV_SYN.
    "304": """
import fcntl
sh("modprobe uinput")
fd = os.open("/dev/uinput", os.O_WRONLY | os.O_NONBLOCK)
fcntl.ioctl(fd, 0x40045564, 1)  # UI_SET_EVBIT EV_KEY
fcntl.ioctl(fd, 0x40045565, 30)  # UI_SET_KEYBIT KEY_A
os.write(fd, b"suture".ljust(80, b"\\0") + struct.pack("HHHHi", 3, 1, 1, 1, 0) + bytes(4 * 64 * 4))
fcntl.ioctl(fd, 0x5501)  # UI_DEV_CREATE
for kind, code, value in ((1, 30, 1), (0, 0, 0), (1, 30, 0), (0, 0, 0)):
    os.write(fd, struct.pack("qqHHi", 0, 0, kind, code, value))
fcntl.ioctl(fd, 0x5502)  # UI_DEV_DESTROY
""",
    # backing_file_write_iter: writes through overlayfs (O_DIRECT falls back on tmpfs).
    "305": """
sh("mkdir -p /tmp/sdo/l /tmp/sdo/u /tmp/sdo/w /tmp/sdo/m && mount -t tmpfs none /tmp/sdo/l")
sh("mount -t overlay overlay -o lowerdir=/tmp/sdo/l,upperdir=/tmp/sdo/u,workdir=/tmp/sdo/w "
   "/tmp/sdo/m")
sh("dd if=/dev/zero of=/tmp/sdo/m/f bs=4k count=4; umount /tmp/sdo/m; umount /tmp/sdo/l")
""",
    # event_compare: two renames in a row under a watch (not coalesced).
    "306": """
fd = libc.inotify_init1(0)
libc.inotify_add_watch(fd, b"/tmp", 0x40 | 0x80)  # IN_MOVED_FROM | IN_MOVED_TO
open("/tmp/sd-in", "w").close()
os.rename("/tmp/sd-in", "/tmp/sd-in2")
os.rename("/tmp/sd-in2", "/tmp/sd-in")
os.unlink("/tmp/sd-in")
os.close(fd)
""",
    # perf_sigtrap: a child opens a sigtrap, remove_on_exec software event, then execs.
    "308": """
pid = os.fork()
if pid == 0:
    attr = bytearray(128)
    struct.pack_into("IIQ", attr, 0, 1, 128, 0)  # PERF_TYPE_SOFTWARE, size 128, cpu-clock
    struct.pack_into("Q", attr, 16, 100000)  # sample_period
    struct.pack_into("Q", attr, 40, (1 << 36) | (1 << 37))  # remove_on_exec, sigtrap
    libc.syscall(298, bytes(attr), 0, -1, -1, 8)  # PERF_FLAG_FD_CLOEXEC
    os.execv("/bin/true", ["true"])
os.waitpid(pid, 0)  # the child may die of SIGTRAP before its exec: the kernel must not care
""",
    # expr_field_str: a hist trigger with a bucketed expression.
    "309": """
t = "/sys/kernel/tracing"
sh(f"mount -t tracefs none {t}")
trig = f"{t}/events/sched/sched_process_fork/trigger"
sh(f"echo 'hist:keys=child_pid.buckets=10:x=child_pid.buckets=10*2' > {trig}")
sh(f"cat {trig}; cat {t}/events/sched/sched_process_fork/hist")
sh(f"echo '!hist:keys=child_pid.buckets=10:x=child_pid.buckets=10*2' > {trig}")
""",
    # madvise_free_pte_range: MADV_FREE on dirty anonymous memory.
    "311": """
import mmap
m = mmap.mmap(-1, 1 << 20)
m.write(b"x" * (1 << 20))
m.madvise(8)  # MADV_FREE
m.close()
""",
    # memfd_create: write, seek and read back through the memfd.
    "312": """
fd = os.memfd_create("suture")
os.write(fd, b"data")
os.lseek(fd, 0, 0)
os.read(fd, 4)
os.close(fd)
""",
    # copy_vma: mremap moves an anonymous mapping.
    "313": """
libc.mmap.restype = ctypes.c_void_p
libc.mremap.restype = ctypes.c_void_p
a = libc.mmap(None, 1 << 16, 3, 0x22, -1, 0)
b = libc.mmap(None, 1 << 17, 3, 0x22, -1, 0)
libc.mremap(ctypes.c_void_p(a), 1 << 16, 1 << 16, 3, ctypes.c_void_p(b))  # MAYMOVE|FIXED
""",
    # __netif_receive_skb_core: a frame with stacked priority (VID 0) tags over a veth pair.
    "314": """
sh("ip link add sdv0 type veth peer name sdv1 && ip link set sdv0 up && ip link set sdv1 up")
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("sdv0", 0))
tags = b"".join(struct.pack("!HH", 0x8100, 0) for _ in range(10))
try:
    s.send(b"\\xff" * 6 + b"\\x02" * 6 + tags + struct.pack("!H", 0x0800) + bytes(46))
except OSError:
    pass
sh("ip link del sdv0")
""",
    # ipv6_create_tempaddr: privacy addresses on a dummy device with a global prefix.
    "315": """
sh("modprobe dummy; ip link add sdt0 type dummy")
sh("sysctl -w net.ipv6.conf.sdt0.use_tempaddr=2 net.ipv6.conf.sdt0.temp_prefered_lft=5")
sh("ip link set sdt0 up; ip -6 addr add 2001:db8::1/64 dev sdt0 mngtmpaddr")
sh("ip -6 addr show dev sdt0; ip link del sdt0")
""",
    # rawv6_send_hdrinc: an IPV6_HDRINCL raw socket sends an IPv6 packet to ::1.
    "316": """
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 255)  # IPPROTO_RAW: header included
hdr = struct.pack("!IHBB16s16s", 6 << 28, 8, 17, 64, socket.inet_pton(socket.AF_INET6, "::1"),
                  socket.inet_pton(socket.AF_INET6, "::1"))
try:
    s.sendto(hdr + struct.pack("!HHHH", 1, 9, 8, 0), ("::1", 0))
except OSError:
    pass
""",
    # mptcp_pm_nl_create_listen_socket: a signal endpoint on a listening MPTCP socket.
    "317": """
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)  # IPPROTO_MPTCP
    s.bind(("127.0.0.1", 0)); s.listen()
except OSError:
    pass
sh("ip mptcp endpoint add 127.0.0.1 signal; ip mptcp endpoint flush")
""",
    # qdisc_cap_skb_tx_queue: traffic through the default qdiscs, and taprio's module.
    "318": """
sh("modprobe -a dummy sch_taprio; ip link add sdq1 type dummy && ip link set sdq1 up")
sh("ip addr add 10.218.0.1/24 dev sdq1")
udp("10.218.0.2", 200, count=20)
udp("127.0.0.1", 200, count=20)
sh("ip link del sdq1")
""",
    # qfq_change_class: a qfq class changed to the weight it already has.
    "319": """
sh("modprobe -a dummy sch_qfq; ip link add sdq2 type dummy && ip link set sdq2 up")
sh("tc qdisc add dev sdq2 root handle 1: qfq")
sh("tc class add dev sdq2 parent 1: classid 1:1 qfq weight 10 maxpkt 1500")
sh("tc class change dev sdq2 parent 1: classid 1:1 qfq weight 10 maxpkt 1500")
sh("ip link del sdq2")
""",
    # veth_set_channels: channels of a veth whose peer is down (ethtool if present).
    "320": """
sh("ip link add sdc0 numrxqueues 4 numtxqueues 4 type veth "
   "peer name sdc1 numrxqueues 4 numtxqueues 4")
sh("ip link set sdc0 up; ethtool -L sdc0 rx 2 tx 2; ip link del sdc0")
""",
    "321": 'sh("modprobe vfat")\n',
    "322": 'sh("modprobe l2tp_core")\n',
    "323": 'sh("modprobe xfs")\n',
    "324": 'sh("modprobe virtio_rng")\n',
    # vxlan fdb: static and dynamic entries on a vxlan device.
    "325": """
sh("modprobe vxlan; ip link add sdx0 type vxlan id 42 dstport 4789 local 127.0.0.1")
sh("bridge fdb add 00:11:22:33:44:55 dev sdx0 dst 127.0.0.2 dynamic")
sh("bridge fdb add 00:11:22:33:44:56 dev sdx0 dst 127.0.0.3")
sh("ip link del sdx0")
""",
    # ip_dst_mtu_configured revert: TCP connections over both loopbacks (default_advmss).
    "326": """
for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((addr, 0)); srv.listen()
    c = socket.create_connection(srv.getsockname()[:2])
    a, _ = srv.accept()
    c.sendall(b"x" * 10000); a.recv(10000)
    a.close(); c.close(); srv.close()
""",
    "327": 'sh("modprobe xor")\n',
    # memfd_check_seals_mode: chmod of an exec-sealed memfd (and an ACL if setfacl exists).
    "328": """
import fcntl
fd = os.memfd_create("suture", 2)  # MFD_ALLOW_SEALING
fcntl.fcntl(fd, 1033, 0x20)  # F_ADD_SEALS F_SEAL_EXEC
try:
    os.fchmod(fd, 0o600)
except OSError:
    pass
sh(f"setfacl -m u::rw /proc/{os.getpid()}/fd/{fd}")
os.close(fd)
""",
    "329": 'sh("modprobe f2fs")\n',
    # __tlb_adjust_range: unmapping and zapping anonymous memory.
    "330": """
import mmap
m = mmap.mmap(-1, 8 << 20)
m.write(b"x" * (8 << 20))
m.madvise(4)  # MADV_DONTNEED
m.close()
""",
}
WORKLOADS.update(_TRIXIE_DEV)


# backports-dev (bench/corpora/backports-dev, 7.2.9): the code each fix changes.
_BACKPORTS_DEV: dict[str, str] = {
    # fcntl_set_rw_hint: F_SET_RW_HINT (1036) on a tmpfs file.
    "401": """
import fcntl
with open("/tmp/sd-hint", "w") as f:
    try:
        fcntl.fcntl(f, 1036, struct.pack("Q", 2))
    except OSError:
        pass
os.unlink("/tmp/sd-hint")
""",
    # proc_int_k2u_conv_kop: int sysctls read back (some hold negative values).
    "403": """
sh("cat /proc/sys/kernel/printk /proc/sys/net/ipv4/tcp_keepalive_time /proc/sys/kernel/panic")
sh("cat /proc/sys/vm/swappiness /proc/sys/kernel/perf_event_paranoid")
""",
    # __futex_pivot_hash: private futex hash resized (PR_FUTEX_HASH) while threads wait.
    "404": """
import threading
def worker():
    cond = threading.Condition()
    with cond:
        cond.wait(0.01)
threads = [threading.Thread(target=worker) for _ in range(4)]
for t in threads:
    t.start()
for slots in (16, 32, 0):
    libc.prctl(78, 1, slots, 0, 0)  # PR_FUTEX_HASH, PR_FUTEX_HASH_SET_SLOTS
for t in threads:
    t.join()
""",
    # udp_err / udpv6_err: datagrams to closed ports (ICMP port unreachable back).
    "405": """
for _ in range(3):
    udp("127.0.0.1", 64, port=9)
""",
    "406": """
for _ in range(3):
    udp("::1", 64, socket.AF_INET6, port=9)
""",
    # tcp_ack: a TCP transfer over loopback with timestamps.
    "407": """
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
c = socket.create_connection(srv.getsockname()); a, _ = srv.accept()
for _ in range(20):
    c.sendall(b"x" * 65536); a.recv(65536)
a.close(); c.close(); srv.close()
""",
    # packet_rcv_spkt: a SOCK_PACKET socket on lo while traffic flows.
    "408": """
s = socket.socket(socket.AF_PACKET, socket.SOCK_PACKET, socket.htons(3))
s.settimeout(1)
udp("127.0.0.1", 64)
try:
    s.recv(2048)
except OSError:
    pass
""",
    # sock_reserve_memory and SO_SNDBUF: SO_RESERVE_MEM (73) on UDP and TCP; a 2 GiB SNDBUF.
    "410": """
for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    for opt, val in ((73, 4096), (socket.SO_SNDBUF, (1 << 31) - 1)):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, val)
        except OSError:
            pass
    s.close()
""",
    # __key_create_or_update: a user key added twice to the session keyring.
    "411": """
for _ in range(2):
    libc.syscall(248, b"user", b"suture:bench", b"data", 4, -3)  # add_key, KEY_SPEC_SESSION
""",
    # vc_allocate and do_con_trol: consoles opened; ESC # 8 on a background one.
    "413": """
for n in range(2, 6):
    try:
        os.close(os.open(f"/dev/tty{n}", os.O_WRONLY | os.O_NOCTTY))
    except OSError:
        pass
""",
    "414": """
try:
    fd = os.open("/dev/tty3", os.O_WRONLY | os.O_NOCTTY)
    os.write(fd, b"\\x1b#8")
    os.close(fd)
except OSError:
    pass
""",
    "416": 'sh("modprobe crc7; rmmod crc7")\n',
    "417": 'sh("modprobe ext4")\n',
    "418": """
sh("ip link add sdb0 type veth peer name sdb1 && ip link set sdb1 up && ip link set sdb0 up")
sh("ip link del sdb0")
""",
    # fq_codel_init: fq_codel on a dummy device of a small MTU.
    "419": """
sh("modprobe -a dummy sch_fq_codel; ip link add sdf0 type dummy && ip link set sdf0 mtu 200 up")
sh("tc qdisc add dev sdf0 root fq_codel; tc qdisc show dev sdf0; ip link del sdf0")
""",
    # route4_set_parms: a route filter added, then changed without attributes.
    "420": """
sh("modprobe -a dummy cls_route; ip link add sdr0 type dummy && ip link set sdr0 up")
sh("tc qdisc add dev sdr0 root handle 1: prio")
sh("tc filter add dev sdr0 parent 1: protocol ip prio 1 handle 0x10 route to 1 classid 1:1")
sh("tc filter change dev sdr0 parent 1: protocol ip prio 1 handle 0x10 route classid 1:2")
sh("ip link del sdr0")
""",
    # ip_check_csum_start: fragmented UDP over lo; the netfilter modules loaded.
    "421": """
sh("modprobe -a xt_CHECKSUM nfnetlink_queue nf_conntrack_bridge")
udp("127.0.0.1", 30000)
""",
    "422": """
udp("127.0.0.1", 30000)
""",
    "423": 'sh("unshare -u -n true; unshare -m -i true")\n',
    "425": 'sh("ls -la /tmp /proc/self /sys/kernel >/dev/null")\n',
    "426": 'sh("modprobe ksmbd")\n',
    "427": 'sh("modprobe nfsd")\n',
    "428": 'sh("modprobe kvm")\n',
}
WORKLOADS.update(_BACKPORTS_DEV)


def program(patch_id: str) -> str | None:
    """The workload for a patch id such as ``007-fs-send_sigio``, or None."""
    body = WORKLOADS.get(patch_id[:3])
    return None if body is None else _PRELUDE + body
