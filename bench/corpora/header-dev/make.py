"""Make the header-dev corpus from Debian's linux-source-6.1 packages.

Every fix is cut from the difference between two Debian source trees (the
upstream stable fixes Debian shipped), as the hunks of the files that one
upstream commit changed, and rewritten against the base tree, 6.1.187-1 (the
source of linux-image-6.1.0-53-amd64). A fix of several commits is a series
of mails; hunks that the tree difference merged from two commits are one
mail naming both subjects. Which hunks belong to which commit was decided by
hand (the FIXES table below, with its confidence); this script only
reproduces the diffs, and checks them against what it wrote before.

    python3 bench/corpora/header-dev/make.py [--sources DIR] [--catalog FILE] [--check]

``--sources`` is a folder that holds (or will hold) the unpacked trees,
``DIR/<version>/linux-source-6.1``; by default a temporary folder, removed
after. Packages are fetched with ``apt-get download``. ``--catalog`` is the
builder's catalog of the base build's C units (``catalog.json`` beside the
prepared tree in the Suture cache): the expected units are then those the
base build compiles, with their object (vmlinux or a module). ``--check``
writes nothing and fails when a patch would change.

Prints one JSON document: the fixes written, their hashes, and the hunks that
applied at an offset to the base (fixes shipped in 6.1.192 that were cut from
the 6.1.190 -> 6.1.192 difference).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASE = "6.1.187-1"  # linux-source-6.1 of linux-image-6.1.0-53-amd64
BASE_IMAGE = "linux-image-6.1.0-53-amd64"
# Debian version pairs the fixes are cut from: (old, new, date of the new upload).
RANGES = {
    "190": ("6.1.187-1", "6.1.190-1", "Fri, 16 Oct 2026 23:46:12 +0200"),
    "192": ("6.1.190-1", "6.1.192-3", "Sat, 14 Nov 2026 11:29:58 +0100"),
}
SHIPPED = {"190": "6.1.190-1", "192": "6.1.192-1"}  # the Debian upload whose changelog names it
# Folders whose C files can be part of an x86-64 build (for the expected units).
_SKIP_DIRS = ("Documentation/", "tools/", "samples/", "scripts/", "usr/")
_MAX_LISTED = 12  # expected units listed by name in the manifest


@dataclass(frozen=True)
class Commit:
    """The hunks of one upstream commit (or of commits the tree difference merged).

    Attributes:
        subjects: upstream subjects, as the Debian changelog gives them.
        cves: the CVE ids the changelog gives them.
        hunks: file -> indices of its hunks in ``diff -U3 -p old new`` of the
            range (None: all of them).
    """

    subjects: tuple[str, ...]
    hunks: dict[str, tuple[int, ...] | None]
    cves: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fix:
    """One corpus entry: a whole upstream fix as it applies to the base tree.

    Attributes:
        id: ``NNN-<subsystem>-<name>``, the patch file's stem.
        range: the key of :data:`RANGES` the fix is cut from.
        commits: its commits, in order (one mail each).
        names: the inline functions and macros of headers the fix changes
            (what it changes in them; new ones included).
        expected: ``built``, ``refused`` or ``no-change``.
        why: for refused and no-change, the reason the builder should give.
        confidence: ``high`` (the hunks are this commit's, no doubt) or
            ``medium`` (with the doubt in ``notes``).
        workload: what exercises the code in a QEMU guest (``-`` none).
        notes: anything else worth knowing.
    """

    id: str
    range: str
    commits: tuple[Commit, ...]
    names: tuple[str, ...]
    expected: str
    confidence: str
    workload: str
    why: str = ""
    notes: str = ""
    extra_users: tuple[str, ...] = field(default=())  # names reached through other inlines
    template: bool = False  # the header is code its includers instantiate (ipset's *_gen.h)


def _c(subject: str, hunks: dict[str, tuple[int, ...] | None], *cves: str) -> Commit:
    return Commit((subject,), hunks, cves)


# fmt: off
FIXES: tuple[Fix, ...] = (
    Fix(
        "201-arch-x86-mm_pkey_alloc", "190",
        (_c("x86/pkeys: Fix pkey_alloc() return value when pkeys are not supported",
            {"arch/x86/include/asm/pkeys.h": None}),),
        ("mm_pkey_alloc",), "built", "high",
        "pkey_alloc(2): the TCG CPU has no PKU, so the patched kernel answers -1/ENOSPC",
    ),
    Fix(
        "202-net-virtio_net_hdr_to_skb", "190",
        (_c("virtio-net: Ensure that TCP packets don't overflow gso_segs",
            {"include/linux/virtio_net.h": None}, "CVE-2026-90063"),),
        ("virtio_net_hdr_to_skb",), "built", "high",
        "AF_PACKET socket with PACKET_VNET_HDR sends a TCPv4 GSO frame on lo (packet_snd)",
        notes="adds #include <net/tcp.h> to the header (a directive: no code of its own)",
    ),
    Fix(
        "203-net-ipv4-validate_gue_flags", "190",
        (_c("net: gue: reject invalid REMCSUM offsets", {"include/net/gue.h": None}),),
        ("validate_gue_flags",), "built", "high",
        "ip fou add port 5555 gue; UDP datagrams with GUE headers (REMCSUM private flag) to it",
    ),
    Fix(
        "204-net-ipv6-ip6_dst_mtu_maybe_forward", "190",
        (_c("net: ipv6: Clamp to IP6_MAX_MTU in ip6_dst_mtu_maybe_forward",
            {"include/net/ip6_route.h": None}),),
        ("ip6_dst_mtu_maybe_forward",), "built", "high",
        "IPv6 UDP datagrams of 100 to 60000 bytes over ::1 (ip6_output.c)",
    ),
    Fix(
        "205-net-sched-__qdisc_calculate_pkt_len", "190",
        (_c("net/sched: bound qdisc_pkt_len to prevent qdisc soft lockup",
            {"include/net/pkt_sched.h": None, "net/sched/sch_api.c": (0,)}),),
        ("QDISC_PKT_LEN_MAX",), "built", "high",
        "tc qdisc with a size table (stab overhead) on lo, then ping (__qdisc_calculate_pkt_len)",
        notes="sch_api.c hunk 1 (qdisc_free_rcu in qdisc_create) is another commit, left out",
    ),
    Fix(
        "206-net-ip_tunnel_limit_headroom", "190",
        (Commit(
            ("net: cap advertised IP tunnel headroom",
             "ip6_gre: fix hardware header length for NBMA tunnels"),
            {"include/net/ip_tunnels.h": None, "net/ipv4/ip_tunnel.c": (0,),
             "net/ipv6/sit.c": (0,), "net/ipv6/ip6_tunnel.c": (10,),
             "net/ipv6/ip6_gre.c": (5, 6)},
            ("CVE-2026-80978", "CVE-2026-89562"),
        ),),
        ("ip_tunnel_adj_headroom", "ip_tunnel_limit_headroom"), "built", "medium",
        "ip link add gre/sit/ip6tnl/ip6gre tunnels over lo, set up, one packet each",
        notes="ip6_gre.c hunk 5 holds both commits' changes (the tree diff merged them): "
        "the NBMA fix (hunk 6 and part of 5) rides along",
    ),
    Fix(
        "207-net-openvswitch-nf_ct_shared", "190",
        (_c("net: openvswitch: conntrack: avoid modifying shared unconfirmed ct entry",
            {"include/net/netfilter/nf_conntrack.h": None,
             "net/openvswitch/conntrack.c": (1,)}),),
        ("nf_ct_shared",), "built", "high",
        "modprobe openvswitch only (__ovs_ct_lookup needs a datapath with ct() flows)",
    ),
    Fix(
        "208-net-netfilter-list_splice_rcu", "190",
        (
            _c("rculist: add list_splice_rcu() for private lists",
               {"include/linux/rculist.h": None}),
            _c("netfilter: nf_tables: join hook list via splice_list_rcu() in commit phase",
               {"net/netfilter/nf_tables_api.c": (12,)}, "CVE-2026-52988"),
        ),
        ("list_splice_rcu", "__list_splice_rcu"), "built", "high",
        "modprobe nf_tables only (a flowtable update needs nft, not in the guest)",
        notes="two commits: the helper, then its user",
    ),
    Fix(
        "209-net-ipv4-fib_info_hold_safe", "190",
        (_c("ipv4: fib: Don't dump dying fib_info in fib_leaf_notify().",
            {"include/net/ip_fib.h": None, "net/ipv4/fib_trie.c": (0,)}, "CVE-2026-74289"),),
        ("fib_info_hold_safe",), "built", "high",
        "- (fib_leaf_notify runs when a FIB notifier registers: netdevsim is not built, "
        "mlxsw/rocker need their hardware)",
    ),
    Fix(
        "210-net-netfilter-ipset-mtype_gc", "190",
        (_c("netfilter: ipset: mark the rcu locked areas properly",
            {"net/netfilter/ipset/ip_set_hash_gen.h": None}),),
        ("mtype_gc", "mtype_add"), "built", "medium",
        "modprobe ip_set_hash_ip only (no ipset tool in the guest)",
        template=True,
        notes="a template header: every ip_set_hash_* unit instantiates mtype_gc/mtype_add "
        "under its own names; subject matched by content (the only ipset entry of 6.1.190-1)",
    ),
    Fix(
        "211-fs-smb-server-KSMBD_START_FID", "190",
        (_c("ksmbd: start file id allocation at 1",
            {"fs/smb/server/vfs_cache.h": None, "fs/smb/server/vfs_cache.c": (0,)}),),
        ("KSMBD_START_FID",), "built", "high",
        "modprobe ksmbd only (no ksmbd.mountd in the guest)",
        notes="an object-like macro whose value changes",
    ),
    Fix(
        "212-fs-affs-affs_set_blocksize", "190",
        (_c("affs: handle set_blocksize failures",
            {"fs/affs/affs.h": None, "fs/affs/super.c": None}, "CVE-2026-97490"),),
        ("affs_set_blocksize",), "built", "high",
        "modprobe affs; mounting a zeroed loop file as affs fails in affs_fill_super",
        notes="the inline is removed; its callers call sb_set_blocksize() and check it",
    ),
    Fix(
        "213-net-ipv4-inet_reset_saddr", "190",
        (_c("raw: annotate disconnect-side IPv4 match writers",
            {"include/net/ip.h": (4,), "net/ipv4/udp.c": (0,)}),),
        ("inet_reset_saddr",), "no-change", "high",
        "UDP and raw sockets connected, then disconnected with AF_UNSPEC (__udp_disconnect)",
        why="WRITE_ONCE() of an aligned int is the same single store: the objects compile "
        "the same (first expected to build; the bench's objects showed otherwise)",
        notes="ip.h hunks 0-3 are other commits (ip_check_csum_start, dst_dev)",
    ),
    Fix(
        "214-net-vlan-__vlan_insert_inner_tag", "192",
        (_c("vlan: require the MAC header to be present in __vlan_insert_inner_tag()",
            {"include/linux/if_vlan.h": None}),),
        ("__vlan_insert_inner_tag",), "built", "high",
        "a vlan device on a dummy device sends frames; a bridge with vlan filtering",
        extra_users=("vlan_insert_inner_tag", "__vlan_insert_tag", "vlan_insert_tag",
                     "vlan_insert_tag_set_proto", "__vlan_hwaccel_push_inside"),
        notes="the widest reach of the corpus: vlan_insert_tag and friends build on it",
    ),
    Fix(
        "215-net-sched-codel_dequeue", "192",
        (_c("net_sched: codel: fix stale state for empty flows in fq_codel",
            {"include/net/codel_impl.h": None}),),
        ("codel_dequeue",), "built", "high",
        "tc qdisc fq_codel (built in) and codel (module) on a dummy device, traffic",
        notes="codel_impl.h holds static (not inline) functions: each user has its own copy",
    ),
    Fix(
        "216-net-wireguard-wg_reset_packet", "192",
        (_c("wireguard: queueing: preserve tstamp_type when encapsulating packet",
            {"drivers/net/wireguard/queueing.h": None}),),
        ("wg_reset_packet",), "built", "high",
        "ip link add wg0 type wireguard (no wg tool: no peer, no packet)",
        notes="6.1 calls the bit mono_delivery_time (upstream: tstamp_type)",
    ),
    Fix(
        "217-fs-namespace-MNT_INTERNAL_FLAGS", "192",
        (_c("namespace: don't inherit MNT_UMOUNT in clone_mnt()",
            {"include/linux/mount.h": None, "fs/namespace.c": (0,)}, "CVE-2026-98993"),),
        ("MNT_INTERNAL_FLAGS",), "built", "medium",
        "bind mounts, unshare -m (copy_tree -> clone_mnt), umount",
        notes="namespace.c hunk 1 (WARN_ON_ONCE in umount_tree) may belong to this commit too; "
        "left out",
    ),
    Fix(
        "218-drivers-pci-pci_match_one_id", "192",
        (Commit(
            ("PCI: Initialize temporary device in new_id_store()",
             "PCI: Make pci_match_one_device() match on ID instead of device",
             "PCI: Fix dyn_id add TOCTOU",
             "PCI: Fix UAF when probe runs concurrent to dyn ID removal"),
            {"drivers/pci/pci.h": None, "drivers/pci/pci-driver.c": None,
             "drivers/pci/search.c": None},
            ("CVE-2026-90421",),
        ),),
        ("pci_match_one_device", "pci_match_one_id", "pci_id_from_device"), "built", "medium",
        "new_id/remove_id of pcieport in sysfs (pci_match_device against every device), rescan",
        notes="four consecutive commits of one series that the tree diff merges; taken whole",
    ),
    Fix(
        "219-arch-x86-kvm-vcpu_match_mmio_gen", "192",
        (_c("KVM: x86: Use active memslots for the per-vCPU MMIO cache",
            {"arch/x86/kvm/x86.h": (1, 2)}),),
        ("vcpu_cache_mmio_info", "vcpu_match_mmio_gen"), "built", "high",
        "modprobe kvm only (the TCG guest has no VMX/SVM)",
        notes="x86.h hunk 0 (kvm_smm_changed prototype) is another commit",
    ),
    Fix(
        "220-net-tls-tls_sw_has_ctx_tx", "192",
        (_c("bpf: Add sk_is_inet and IS_ICSK check in tls_sw_has_ctx_tx/rx",
            {"include/net/tls.h": None}),),
        ("tls_sw_has_ctx_tx", "tls_sw_has_ctx_rx"), "built", "high",
        "a TCP socket with the tls ULP (setsockopt TCP_ULP) over lo",
    ),
    Fix(
        "221-net-sched-tcf_pedit_nkeys_locked", "192",
        (_c("net/sched: act_pedit: fix TOCTOU heap OOB write in tc offload",
            {"include/net/tc_act/tc_pedit.h": None, "net/sched/act_api.c": (1,),
             "net/sched/act_pedit.c": None, "net/sched/cls_api.c": (6, 7)}),),
        ("tcf_pedit_nkeys", "tcf_pedit_nkeys_locked"), "built", "medium",
        "tc filter with a pedit action on a dummy device's ingress (tcf_exts_num_actions)",
        notes="cls_api.c hunk 6 (capacity check in tc_setup_action) matched by content",
    ),
    Fix(
        "222-net-wireless-ieee80211_mle_size_ok", "192",
        (_c("wifi: ieee80211: validate MLE common info length",
            {"include/linux/ieee80211.h": None}, "CVE-2026-68471"),),
        ("ieee80211_mle_size_ok",), "built", "high",
        "modprobe mac80211_hwsim radios=2 (the MLE parser needs a peer's frames)",
    ),
    Fix(
        "223-security-apparmor-vec_setup", "192",
        (_c("apparmor: fix out-of-bounds write when null terminating a label vec",
            {"security/apparmor/include/label.h": None}, "CVE-2026-89761"),),
        ("DEFINE_VEC", "vec_setup"), "built", "high",
        "reading /sys/kernel/security/apparmor files and aa-exec/change_profile if available",
    ),
    Fix(
        "224-security-apparmor-UNPACK_ARRAY", "192",
        (Commit(
            ("apparmor: Fix & Optimize table creation from possibly unaligned memory",
             "AppArmor: Allow apparmor to handle unaligned dfa tables"),
            {"security/apparmor/include/match.h": None, "security/apparmor/match.c": None},
            ("CVE-2026-46254",),
        ),),
        ("UNPACK_ARRAY", "byte_to_byte"), "built", "medium",
        "loading a policy needs apparmor_parser (absent): the workload only reads policy files",
        notes="two commits merged in match.h and match.c by the tree diff",
    ),
    Fix(
        "225-net-netfilter-ipset-bitmap-mtype_add", "192",
        (_c("netfilter: ipset: do not update comments from kernel-side adds",
            {"net/netfilter/ipset/ip_set_bitmap_gen.h": None}),),
        ("mtype_add",), "built", "high",
        "modprobe ip_set_bitmap_ip only (no ipset tool in the guest)",
        template=True,
        notes="a template header: ip_set_bitmap_{ip,ipmac,port} instantiate mtype_add",
    ),
    Fix(
        "226-mm-MAX_PAGECACHE_ORDER", "192",
        (
            _c("filemap: add helper mapping_max_folio_size()",
               {"include/linux/pagemap.h": (1,)}),
            _c("mm/filemap: make MAX_PAGECACHE_ORDER acceptable to xarray",
               {"include/linux/pagemap.h": (0,), "mm/readahead.c": None,
                "mm/filemap.c": None, "mm/shmem.c": None}, "CVE-2024-42243"),
        ),
        ("mapping_max_folio_size", "MAX_PAGECACHE_ORDER", "MAX_XAS_ORDER",
         "PREFERRED_MAX_PAGECACHE_ORDER"),
        "built", "medium",
        "tmpfs files written and stat'ed (shmem_get_folio_gfp, shmem_getattr)",
        notes="a no-op in meaning on x86-64 (MAX_PAGECACHE_ORDER stays HPAGE_PMD_ORDER, 9), "
        "but shmem_is_huge() becomes a wrapper of __shmem_is_huge() and its callers compile "
        "otherwise: first expected no-change, the bench built it; the CVE matters on arm64 "
        "with 64K pages",
    ),
    Fix(
        "227-drivers-nvme-nvme_start_request", "190",
        (_c("nvme: introduce nvme_start_request",
            {"drivers/nvme/host/nvme.h": None, "drivers/nvme/host/apple.c": (5,),
             "drivers/nvme/host/fc.c": (2,), "drivers/nvme/host/pci.c": (0,),
             "drivers/nvme/host/rdma.c": (1,), "drivers/nvme/host/tcp.c": (10,),
             "drivers/nvme/target/loop.c": (0,)}),),
        ("nvme_start_request",), "no-change", "high", "-",
        why="nvme_start_request() only calls blk_mq_start_request(): the callers compile "
        "the same; apple.c is not in an x86 build",
    ),
    Fix(
        "228-kernel-workqueue-from_work", "190",
        (_c("workqueue: Introduce from_work() helper for cleaner callback declarations",
            {"include/linux/workqueue.h": None}),),
        ("from_work",), "no-change", "high", "-",
        why="a new macro that nothing in the tree uses yet",
    ),
    Fix(
        "229-drivers-tty-TTY_DRIVER_RESET_SAVED_TERMIOS", "192",
        (_c("tty: fix saved termios reset race",
            {"include/linux/tty_driver.h": None, "drivers/tty/tty_io.c": (9,),
             "drivers/usb/class/cdc-acm.c": (4,), "drivers/usb/serial/usb-serial.c": (9,),
             "drivers/staging/greybus/uart.c": None}, "CVE-2026-98750"),),
        ("TTY_DRIVER_RESET_SAVED_TERMIOS",), "refused", "high", "-",
        why="the drivers set the new flag in their module __init functions (acm_init, "
        "usb_serial_init): __init code cannot be live patched",
        notes="tty_register_device_attr (vmlinux) alone would be patchable, but without the "
        "flag set it would never reset saved termios: not the fix upstream meant",
    ),
    Fix(
        "230-block-rq_qos_add", "192",
        (_c("block/rq_qos: protect rq_qos apis with a new lock",
            {"include/linux/blkdev.h": None, "block/blk-rq-qos.h": None,
             "block/blk-rq-qos.c": None, "block/blk-core.c": None, "block/blk-wbt.c": None,
             "block/blk-cgroup.c": (2, 3, 4), "block/blk-iocost.c": (2, 3)},
            "CVE-2023-53823"),),
        ("rq_qos_add", "rq_qos_del"), "refused", "medium", "-",
        why="struct request_queue gains rq_qos_mutex (a layout change)",
        notes="blk-cgroup.c and blk-iocost.c hold other commits too; the hunks that take "
        "rq_qos_mutex were kept",
    ),
    Fix(
        "231-kernel-rcu-defer_qs_pending", "192",
        (Commit(
            ("rcu: Fix rcu_read_unlock() deadloop due to IRQ work",
             "rcu: Fix rcu_read_unlock() deadloop due to softirq"),
            {"kernel/rcu/tree.h": None, "kernel/rcu/tree_plugin.h": None},
            ("CVE-2025-39744", "CVE-2026-45957"),
        ),),
        ("rcu_read_unlock_special", "rcu_preempt_deferred_qs_handler",
         "rcu_preempt_deferred_qs_irqrestore"), "refused", "medium", "-",
        why="struct rcu_data: the bool defer_qs_iw_pending becomes int defer_qs_pending "
        "(a layout change)",
        notes="two commits merged by the tree diff; tree_plugin.h holds plain static "
        "functions included by kernel/rcu/tree.c only",
    ),
    Fix(
        "232-kernel-trace-TRACE_EVENT_START", "192",
        (_c("tracing: Add recursion protection in kernel stack trace recording",
            {"include/linux/trace_recursion.h": None, "kernel/trace/trace.c": (1, 2)}),),
        ("TRACE_EVENT_START",), "refused", "high", "-",
        why="the anonymous enum of trace_recursion.h gets five bits in the middle: "
        "TRACE_BRANCH_BIT and the bits after it change value",
    ),
    Fix(
        "233-kernel-pid_namespace-signal_pending", "192",
        (
            _c("signal: allow taks to temporarily block TIF_NOTIFY_SIGNAL",
               {"include/linux/sched.h": None, "include/linux/sched/signal.h": None}),
            _c("pid_namespace: prevent TIF_NOTIFY_SIGNAL from interrupting the reaper",
               {"kernel/pid_namespace.c": (0,)}, "CVE-2026-99244"),
        ),
        ("signal_pending", "no_notify_signal_save", "no_notify_signal_restore",
         "PF_NO_NOTIFY_SIGNAL"), "refused", "high", "-",
        extra_users=("fatal_signal_pending", "signal_pending_state", "__fatal_signal_pending"),
        why="signal_pending() is used by hundreds of units, and through fatal_signal_pending "
        "and signal_pending_state by more: beyond the 600 one header fix may reach",
        notes="pid_namespace.c hunk 1 (TASK_IDLE | TASK_FREEZABLE) is another commit "
        "(make zap_pid_ns_processes() freezable); the subject's 'taks' is upstream's",
    ),
    Fix(
        "234-include-list-list_add", "190",
        (_c("include/linux/list.h: mark list_add and __list_add as __always_inline",
            {"include/linux/list.h": None}),),
        ("__list_add", "list_add"), "refused", "high", "-",
        why="list_add is used by thousands of units: more than the 600 one header fix may "
        "reach",
        notes="GCC inlines list_add nearly everywhere already: a livepatch for it is "
        "neither needed nor practical",
    ),
)
# fmt: on


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False,
                          errors="surrogateescape")  # fmt: skip
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and cmd[0] != "diff"):
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc.stdout


def fetch(version: str, sources: Path) -> Path:
    """The unpacked ``linux-source-6.1`` of ``version`` under ``sources`` (fetched once)."""
    tree = sources / version / "linux-source-6.1"
    if tree.is_dir():
        return tree
    where = sources / version
    where.mkdir(parents=True, exist_ok=True)
    print(f"fetching linux-source-6.1={version}", file=sys.stderr)
    _run(["apt-get", "download", "-q", f"linux-source-6.1={version}"], cwd=where)
    deb = next(where.glob("linux-source-6.1_*.deb"))
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                         check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(where), "--wildcards", "*.tar.xz"], input=tar,
                   check=True)  # fmt: skip
    xz = next(where.glob("usr/src/linux-source-6.1*.tar.xz"))
    subprocess.run(["tar", "-xJf", str(xz), "-C", str(where)], check=True)
    deb.unlink()
    shutil.rmtree(where / "usr")
    return tree


def hunks_of(old: Path, new: Path, rel: str) -> list[str]:
    """The hunks of ``diff -U3 -p`` of one file between two trees (each with its @@ line)."""
    text = _run(["diff", "-U3", "-p", str(old / rel), str(new / rel)])
    return re.split(r"(?m)^(?=@@ )", text)[1:]


def apply(text: str, rel: str, hunks: list[str], work: Path) -> tuple[str, list[str]]:
    """``text`` (file ``rel``) with ``hunks`` applied by GNU patch without fuzz; offsets noted."""
    src = work / "file"
    src.write_text(text, errors="surrogateescape")
    diff = work / "hunks.diff"
    diff.write_text(f"--- a/{rel}\n+++ b/{rel}\n" + "".join(hunks), errors="surrogateescape")
    proc = subprocess.run(
        ["patch", "-F0", "--no-backup-if-mismatch", "-f", str(src), str(diff)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{rel}: the hunks do not apply to the base:\n{proc.stdout}")
    moved = [line.strip() for line in proc.stdout.splitlines() if "offset" in line]
    return src.read_text(errors="surrogateescape"), moved


def udiff(rel: str, before: str, after: str, work: Path) -> str:
    """``diff -U3 -p`` of two versions of ``rel``, with a/ and b/ labels."""
    a, b = work / "a", work / "b"
    a.write_text(before, errors="surrogateescape")
    b.write_text(after, errors="surrogateescape")
    return _run(["diff", "-U3", "-p", "--label", f"a/{rel}", "--label", f"b/{rel}",
                 str(a), str(b)])  # fmt: skip


@dataclass
class Built:
    """A fix's patch text and what was learnt making it."""

    text: str
    files: list[str]
    diffs: list[str]  # one per commit
    moved: list[str]


def make_fix(fix: Fix, trees: dict[str, Path], work: Path) -> Built:
    """The fix's commits as diffs against the base tree."""
    old, new, _ = RANGES[fix.range]
    state: dict[str, str] = {}
    diffs, moved, files = [], [], []
    for commit in fix.commits:
        parts = []
        for rel, which in commit.hunks.items():
            every = hunks_of(trees[old], trees[new], rel)
            chosen = every if which is None else [every[i] for i in which]
            before = state.get(rel)
            if before is None:
                before = (trees[BASE] / rel).read_text(errors="surrogateescape")
            after, shifts = apply(before, rel, chosen, work)
            moved += [f"{rel}: {s}" for s in shifts]
            parts.append(udiff(rel, before, after, work))
            state[rel] = after
            if rel not in files:
                files.append(rel)
        diffs.append("".join(parts))
    return Built("", files, diffs, moved)


def _stat(diff: str) -> tuple[int, int]:
    lines = diff.splitlines()
    plus = sum(1 for x in lines if x.startswith("+") and not x.startswith("+++"))
    minus = sum(1 for x in lines if x.startswith("-") and not x.startswith("---"))
    return plus, minus


def mail(fix: Fix, built: Built) -> str:
    """The fix as ``git format-patch --stdout`` mails, provenance lines in each commit text."""
    old, new, date = RANGES[fix.range]
    out = []
    count = len(fix.commits)
    for i, (commit, diff) in enumerate(zip(fix.commits, built.diffs, strict=True), 1):
        tag = "[PATCH]" if count == 1 else f"[PATCH {i}/{count}]"
        also = "".join(f"Also-Upstream-Subject: {s}\n" for s in commit.subjects[1:])
        plus, minus = _stat(diff)
        files = re.findall(r"(?m)^\+\+\+ b/(\S+)", diff)
        out.append(
            "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
            "From: Unknown upstream author <unknown@header-dev.invalid>\n"
            f"Date: {date}\n"
            f"Subject: {tag} {commit.subjects[0]}\n\n"
            f"Origin: Debian linux-source-6.1 {old} -> {new} (upstream stable fix shipped by "
            f"Debian {SHIPPED[fix.range]})\n"
            f"Upstream-Subject: {commit.subjects[0]}\n{also}"
            f"CVE: {' '.join(commit.cves) or '-'}\n"
            "Author: not recorded in the Debian changelog\n"
            f"Corpus-Id: {fix.id} (commit {i} of {count})\n"
            f"Headers: {' '.join(f for f in files if f.endswith('.h')) or '-'}\n"
            f"Inline-Names: {' '.join(fix.names)}\n"
            f"Expected: {fix.expected}{': ' + fix.why if fix.why else ''}\n"
            f"Applies-To: linux-source-6.1 {BASE} ({BASE_IMAGE}), patch -p1; "
            "hunks taken from the Debian tree difference and rewritten against the base\n"
            "---\n"
            f" {len(files)} file(s) changed, {plus} insertions(+), {minus} deletions(-)\n\n"
            f"{diff}-- \nheader-dev\n\n"
        )
    return "".join(out)


def _users(tree: Path, names: set[str]) -> set[str]:
    """Files (.c/.h) of the tree that use one of ``names`` as a whole word."""
    if not names:
        return set()
    dirs = [p.name for p in tree.iterdir() if p.is_dir() and p.name not in {"arch"}]
    proc = subprocess.run(
        ["grep", "-rlwF", "--include=*.[ch]", "-f", "-", *dirs, "arch/x86"],
        cwd=tree, input="\n".join(sorted(names)), capture_output=True, text=True,
        errors="replace", check=False,
    )  # fmt: skip
    return {p for p in proc.stdout.split() if not p.startswith(_SKIP_DIRS)}


_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(\w+)")
_INLINE = re.compile(r"\b(?:static|inline)\b[^;{}]*?\b(\w+)\s*\([^;{}]*\)\s*\{", re.DOTALL)


def _defined_with(text: str, names: set[str]) -> set[str]:
    """Macros and inline functions of a header whose definition uses one of ``names``.

    A plain reading (not the builder's scanner): a #define's logical line, or
    a ``static``/``inline`` function from its head to the brace that closes it.
    """
    found = set()
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(names))) + r")\b")
    logical = text.replace("\\\n", " ")
    for line in logical.splitlines():
        m = _DEFINE.match(line)
        if m and m.group(1) not in names and pattern.search(line[m.end() :]):
            found.add(m.group(1))
    for m in _INLINE.finditer(text):
        depth, end = 0, m.end() - 1
        for end in range(m.end() - 1, len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                break
        if m.group(1) not in names and pattern.search(text[m.end() : end]):
            found.add(m.group(1))
    return found


def _includers(tree: Path, header: str) -> set[str]:
    """C files that include ``header`` by its own name (template headers)."""
    name = Path(header).name
    proc = subprocess.run(
        ["grep", "-rlE", f'^#[[:space:]]*include[[:space:]]*["<]([^">]*/)?{re.escape(name)}[">]',
         "--include=*.c", str(Path(header).parent)],
        cwd=tree, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return set(proc.stdout.split())


def expected_units(
    fix: Fix, built: Built, tree: Path, catalog: dict[str, dict[str, object]] | None
) -> str:
    """The C units the fix should recompile: its own C files, and the units that use its names.

    Names are used directly, or through other headers' inlines and macros:
    a definition that uses a changed name changes too (three rounds of
    spreading). A template header counts for every file that includes it.
    With a catalog, only the units the base build compiles, as ``unit (object)``.
    """
    names = set(fix.names) | set(fix.extra_users)
    users = {f for f in built.files if f.endswith(".c")}
    if fix.template:
        for header in (f for f in built.files if f.endswith(".h")):
            users |= _includers(tree, header)
    new = set(names)
    for _ in range(3):
        found = _users(tree, new)
        users |= {f for f in found if f.endswith(".c")}
        spread: set[str] = set()
        for header in (f for f in found if f.endswith(".h")):
            spread |= _defined_with((tree / header).read_text(errors="replace"), names)
        new = spread - names
        names |= new
        if not new:
            break
    units = sorted(users)
    if catalog is not None:
        units = [f"{u} ({catalog[u]['objname']})" for u in units if u in catalog]
    shown = units[:_MAX_LISTED]
    more = f" (+{len(units) - _MAX_LISTED} more)" if len(units) > _MAX_LISTED else ""
    return f"{len(units)}: {', '.join(shown)}{more}" if units else "0"


def _functions(diff: str) -> list[str]:
    """The functions the ``@@`` lines of a diff name (diff -p: the enclosing definition)."""
    out: list[str] = []
    for ctx in re.findall(r"(?m)^@@ [^@]+ @@ (.*)$", diff):
        m = re.search(r"(\w+)\s*\(", ctx)
        if m and m.group(1) not in out:
            out.append(m.group(1))
    return out


def _targets(units: str) -> str:
    objs = sorted(set(re.findall(r"\((\w+)\)", units)), key=lambda o: (o != "vmlinux", o))
    if not objs:
        return "-"
    if len(objs) > 4:
        return ",".join(objs[:4]) + f",+{len(objs) - 4}"
    return ",".join(objs)


COLUMNS = (
    "id", "file", "funcs", "subsystem", "lines_changed", "target", "cve", "upstream_subject",
    "patch", "split", "subject_confidence", "notes", "headers", "inline_names",
    "expected_units", "expected_outcome", "confidence", "commits", "shipped_in", "workload",
)  # fmt: skip


def manifest_row(fix: Fix, built: Built, units: str) -> dict[str, str]:
    """One manifest.tsv row (stable-dev's columns where they apply, and the header ones)."""
    diff = "".join(built.diffs)
    plus, minus = _stat(diff)
    whole = all(w is None for c in fix.commits for w in c.hunks.values())
    subjects = [s for c in fix.commits for s in c.subjects]
    cves = [v for c in fix.commits for v in c.cves]
    outcome = fix.expected + (f" ({fix.why})" if fix.why else "")
    parts = fix.id.split("-")
    return {
        "id": fix.id,
        "file": ",".join(built.files),
        "funcs": ",".join(_functions(diff)) or "-",
        "subsystem": "-".join(parts[1:-1]),
        "lines_changed": str(plus + minus),
        "target": _targets(units),
        "cve": ",".join(cves) or "-",
        "upstream_subject": " | ".join(subjects),
        "patch": f"{fix.id}.patch",
        "split": "no" if whole else "yes",
        "subject_confidence": "high" if fix.confidence == "high" else "medium",
        "notes": fix.notes or "-",
        "headers": ",".join(f for f in built.files if f.endswith(".h")),
        "inline_names": ",".join(fix.names),
        "expected_units": units,
        "expected_outcome": outcome,
        "confidence": fix.confidence,
        "commits": str(len(fix.commits)),
        "shipped_in": SHIPPED[fix.range],
        "workload": fix.workload,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, help="folder of unpacked trees (kept)")
    parser.add_argument("--catalog", type=Path, help="catalog.json of the base build's units")
    parser.add_argument("--check", action="store_true", help="fail if a patch would change")
    parser.add_argument("--only", nargs="*", default=[], help="fix ids (default: all)")
    args = parser.parse_args(argv)
    catalog = None
    if args.catalog:
        catalog = json.loads(args.catalog.read_text())["units"]
    tmp = None
    sources = args.sources
    if sources is None:
        tmp = tempfile.TemporaryDirectory(prefix="header-dev-")
        sources = Path(tmp.name)
    try:
        versions = {BASE} | {v for r in RANGES.values() for v in r[:2]}
        trees = {v: fetch(v, sources) for v in sorted(versions)}
        return _write(args, trees, catalog)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _write(
    args: argparse.Namespace, trees: dict[str, Path], catalog: dict[str, dict[str, object]] | None
) -> int:
    report: list[dict[str, object]] = []
    rows = []
    changed = []
    with tempfile.TemporaryDirectory(prefix="header-dev-work-") as tmp:
        for fix in FIXES:
            if args.only and fix.id not in args.only:
                continue
            built = make_fix(fix, trees, Path(tmp))
            text = mail(fix, built)
            units = expected_units(fix, built, trees[BASE], catalog)
            rows.append(manifest_row(fix, built, units))
            path = HERE / f"{fix.id}.patch"
            old = path.read_text(errors="surrogateescape") if path.exists() else None
            if old != text:
                changed.append(fix.id)
                if not args.check:
                    path.write_text(text, errors="surrogateescape")
            report.append({
                "id": fix.id,
                "sha256": hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest(),
                "files": built.files,
                "moved": built.moved,
                "expected": fix.expected,
            })  # fmt: skip
    if not args.check and not args.only:
        lines = ["\t".join(COLUMNS)] + ["\t".join(r[c] for c in COLUMNS) for r in rows]
        (HERE / "manifest.tsv").write_text("\n".join(lines) + "\n")
    print(json.dumps({"format": 1, "base": BASE, "fixes": report, "changed": changed},
                     indent=2))  # fmt: skip
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
