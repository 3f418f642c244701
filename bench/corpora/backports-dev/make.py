"""Make the backports-dev corpus from Debian's linux-source-7.2 packages (trixie-backports).

Base: 7.2.9-1~bpo13+1, the exact source of linux-image-7.2.9+deb13-amd64.
Fixes: the upstream stable fixes Debian shipped in 7.2.10-1/7.2.11-1 (cut
from 7.2.9 -> 7.2.11) and in 7.2.12-1 (cut from 7.2.11 -> 7.2.12), each
rewritten against the 7.2.9 base, one fix per upstream commit (or commits
the tree difference merged), as chosen by hand in FIXES below.
bench/corpora/debian_cut.py does the cutting; see the README for why the
base is 7.2.9 and not 7.3.4.

    .venv/bin/python bench/corpora/backports-dev/make.py [--catalog FILE] [--check]

``--catalog``: the builder's catalog of the base build
(``$SUTURE_CACHE/trees/7.2.9+deb13-amd64/catalog.json``) for the target
column. ``--check`` writes nothing and fails when a patch would change.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from debian_cut import Commit, Corpus, Fix, Source, main

BASE = Source("linux-source-7.2", "7.2.9-1~bpo13+1", "7.2.9+deb13-amd64")
V11 = Source("linux-source-7.2", "7.2.11-1~bpo13+1", "7.2.11+deb13-amd64")
V12 = Source("linux-source-7.2", "7.2.12-1~bpo13+1", "7.2.12+deb13-amd64")
# Debian uploads (changelog): 7.2.11-1 on 15 Oct 2026, 7.2.12-1 on 22 Oct 2026.
RANGES = {
    "211": (BASE, V11, "Thu, 15 Oct 2026 16:50:13 +0200"),
    "212": (V11, V12, "Thu, 22 Oct 2026 21:53:23 +0200"),
}


def _f(fid: str, rng: str, subject: str, hunks: dict[str, tuple[int, ...] | None], *,
       expected: str = "built", cves: tuple[str, ...] = (), **kw: str) -> Fix:  # fmt: skip
    return Fix(fid, rng, (Commit(subject, hunks, cves),), expected, **kw)


FIXES: tuple[Fix, ...] = (
    _f(
        "401-fs-fcntl_set_rw_hint",
        "211",
        "fcntl: refuse F_SET_RW_HINT on an immutable inode",
        {"fs/fcntl.c": None},
        workload="F_SET_RW_HINT on a file of tmpfs",
    ),
    _f(
        "402-kernel-workqueue-is_chained_work",
        "211",
        "workqueue: Fix NULL current_pwq deref in chained work check",
        {"kernel/workqueue.c": None},
        workload="-",
    ),
    _f(
        "403-kernel-sysctl-proc_int_k2u_conv_kop",
        "211",
        "sysctl: Negate before converting in the int read path",
        {"kernel/sysctl.c": None},
        workload="reading negative-capable int sysctls",
    ),
    _f(
        "404-kernel-futex-__futex_pivot_hash",
        "211",
        "futex: Fix private hash use-after-free on resize",
        {"kernel/futex/core.c": None},
        workload="PR_FUTEX_HASH set slots, threads waking futexes",
    ),
    _f(
        "405-net-ipv4-udp_err",
        "211",
        "ipv4: udp: Create exceptions before socket matching",
        {"net/ipv4/udp.c": None},
        notes="adds a static helper",
        workload="ICMP port unreachable for UDP over lo",
    ),
    _f(
        "406-net-ipv6-udpv6_err",
        "211",
        "ipv6: udp: Create exceptions before socket matching",
        {"net/ipv6/udp.c": None},
        notes="adds a static helper",
        workload="ICMPv6 port unreachable for UDP over ::1",
    ),
    _f(
        "407-net-ipv4-tcp_ack",
        "211",
        "tcp: refresh TS.Recent for accepted old ACKs",
        {"net/ipv4/tcp_input.c": None},
        workload="TCP transfer over lo",
    ),
    _f(
        "408-net-packet-packet_rcv_spkt",
        "211",
        "net/packet: guard the ll header push in packet_rcv_spkt()",
        {"net/packet/af_packet.c": (0,)},
        notes="af_packet.c's other hunks are two other commits",
        workload="SOCK_PACKET socket receiving on lo",
    ),
    _f(
        "409-net-packet-tpacket_snd",
        "211",
        "net/packet: prevent TX_RING byte count overflow",
        {"net/packet/af_packet.c": (4,)},
        workload="-",
    ),
    _f(
        "410-net-core-sock_reserve_memory",
        "211",
        "net: restrict SO_RESERVE_MEM to TCP sockets and cap max value",
        {"net/core/sock.c": None},
        workload="SO_RESERVE_MEM and SO_SNDBUF on UDP and TCP sockets",
    ),
    _f(
        "411-security-keys-__key_create_or_update",
        "211",
        "KEYS: Fix add_key() race with keyring restriction",
        {"security/keys/key.c": None},
        workload="add_key of a user key into a session keyring",
    ),
    _f(
        "412-security-selinux-avc_policy_seqno",
        "211",
        "selinux: fix data race on AVC latest_notif",
        {"security/selinux/avc.c": None},
        expected=(
            "no-change (READ_ONCE/WRITE_ONCE of an aligned u32: the same single loads and stores)"
        ),
        confidence="medium",
        notes="expected by reading, not by compiling",
    ),
    _f(
        "413-drivers-tty-vt-vc_allocate",
        "211",
        "tty: vt: fix memory leak in vc_allocate()",
        {"drivers/tty/vt/vt.c": (0,)},
        workload="open /dev/tty2..tty6 (vc_allocate)",
    ),
    _f(
        "414-drivers-tty-vt-do_con_trol",
        "211",
        "vt: skip screen update for DEC alignment test on backgroup consoles",
        {"drivers/tty/vt/vt.c": (1,)},
        workload="ESC # 8 written to a background console",
    ),
    _f(
        "415-net-ipv4-__ip_rt_update_pmtu",
        "211",
        "ipv4: stop PMTU walk when nexthop group shrinks",
        {"net/ipv4/route.c": (0,)},
        workload="-",
    ),
    _f(
        "416-kernel-module-load_module",
        "211",
        "module: fix lost error code from codetag_load_module()",
        {"kernel/module/main.c": None},
        expected=(
            "no-change (without CONFIG_CODE_TAGGING codetag_load_module() is an inline "
            "returning 0: the error path the fix mends is dead code in this build)"
        ),
        notes=(
            "first expected to build; the builder's objects showed otherwise (the "
            "configuration has no MEM_ALLOC_PROFILING, so no CODE_TAGGING)"
        ),
        workload="modprobe and rmmod of a small module",
    ),
    _f(
        "417-fs-ext4-ext4_set_inode_mapping_order",
        "211",
        "ext4: don't enable large folios on encrypted inodes",
        {"fs/ext4/inode.c": None},
        workload="modprobe ext4 only (no mkfs in the guest)",
    ),
    _f(
        "418-drivers-net-veth_open",
        "211",
        "veth: fix peer NETDEV_XDP_ACT_NDO_XMIT after GRO is toggled while down",
        {"drivers/net/veth.c": None},
        workload="a veth pair brought up",
    ),
    _f(
        "419-net-sched-fq_codel_init",
        "211",
        "net/sched: fq_codel: match the no-drop threshold to the packet size",
        {"net/sched/sch_fq_codel.c": None},
        workload="tc qdisc fq_codel on a dummy device",
    ),
    _f(
        "420-net-sched-route4_set_parms",
        "211",
        "net/sched: cls_route: reject change with no routing attribute",
        {"net/sched/cls_route.c": None},
        workload="tc filter route added, then changed",
    ),
    _f(
        "421-net-ipv4-ip_check_csum_start",
        "211",
        "ipv4: validate checksum_start before completing checksum",
        {
            "include/net/ip.h": None,
            "net/ipv4/ip_output.c": None,
            "net/netfilter/nfnetlink_queue.c": None,
            "net/netfilter/xt_CHECKSUM.c": None,
            "net/xfrm/xfrm_output.c": None,
            "net/bridge/netfilter/nf_conntrack_bridge.c": None,
        },
        cves=("CVE-2026-99999",),
        notes="header fix (a new inline) used by vmlinux and three modules",
        workload="fragmented UDP over lo; modprobe xt_CHECKSUM nfnetlink_queue",
    ),
    _f(
        "422-net-gso_recursion_inc_test",
        "211",
        "net: gso: limit recursive IP-in-IP segmentation",
        {"include/net/gso.h": None, "net/ipv4/af_inet.c": (1,), "net/ipv6/ip6_offload.c": None},
        expected="refused (struct skb_gso_cb, kept in skb->cb, gains recursion_counter)",
        notes="af_inet.c hunk 0 is another commit (free inet_opt after a grace period)",
    ),
    _f(
        "423-kernel-nsproxy_free",
        "211",
        "unshare: don't drop active namespace references that were never taken",
        {"include/linux/nsproxy.h": None, "kernel/nsproxy.c": None, "kernel/fork.c": (2,)},
        notes="a static inline of nsproxy.c becomes global, declared in nsproxy.h; fork.c's other "
        "hunks are another commit",
        workload="unshare -n with a failing step is not reachable; plain unshare -u -n",
    ),
    _f(
        "424-net-strparser-strp_done",
        "211",
        "strparser: make sure __strp_recv isn't running before tearing down the parser",
        {"include/net/strparser.h": None, "net/strparser/strparser.c": None},
        expected="refused (struct strparser: five 1-bit fields become u8 fields, a layout change)",
        confidence="medium",
        notes="the header change matched to the subject by content",
    ),
    _f(
        "425-fs-readdir-iterate_dir",
        "212",
        "readdir: take no inode lock on an immutable directory",
        {"include/linux/fs.h": None, "fs/readdir.c": None},
        notes="header fix: a new FOP_ flag macro; readdir.c tests it",
        workload="ls of folders",
    ),
    _f(
        "426-fs-smb-server-krb5_authenticate",
        "212",
        "ksmbd: fix heap out-of-bounds write in krb5_authenticate()",
        {"fs/smb/server/smb2pdu.c": None},
        workload="modprobe ksmbd only",
    ),
    _f(
        "427-fs-nfsd-nfsd4_copy",
        "212",
        "nfsd: fix all-zero stateid in CB_OFFLOAD for async COPY",
        {"fs/nfsd/nfs4proc.c": None},
        workload="modprobe nfsd only",
    ),
    _f(
        "428-arch-x86-kvm-vcpu_cache_mmio_info",
        "212",
        "KVM: x86: Use active memslots for the per-vCPU MMIO cache",
        {"arch/x86/kvm/x86.h": None},
        notes="header fix: two inlines of kvm's private header",
        workload="modprobe kvm only (the TCG guest has no VMX/SVM)",
    ),
    Fix(
        "429-drivers-md-dm_integrity_resume",
        "212",
        (
            Commit(
                "dm-integrity: fix NULL pointer dereference when the 'R' flag is used | "
                "dm-integrity: validate the superblock on resume",
                {"drivers/md/dm-integrity.c": None},
            ),
        ),
        "refused (struct dm_integrity_c, private to dm-integrity.c, gains sb_copy: a layout "
        "change)",
        confidence="medium",
        notes="two commits the tree difference merges into one hunk run; taken whole",
    ),
)

HERE = Path(__file__).resolve().parent
CORPUS = Corpus("backports-dev", BASE, RANGES, FIXES, HERE)

if __name__ == "__main__":
    sys.exit(main(CORPUS))
