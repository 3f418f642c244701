"""Make the trixie-dev corpus from Debian's linux-source-6.12 packages (trixie, trixie-security).

Base: 6.12.117-1, the exact source of linux-image-6.12.117+deb13-amd64.
Fixes: the upstream stable fixes Debian shipped in 6.12.118-1 (upstream
6.12.118), cut from the difference between the two source trees, one fix
per upstream commit (or short series), as chosen by hand in FIXES below.
bench/corpora/debian_cut.py does the cutting; see the README.

    .venv/bin/python bench/corpora/trixie-dev/make.py [--catalog FILE] [--check]

``--catalog``: the builder's catalog of the base build
(``$SUTURE_CACHE/trees/6.12.117+deb13-amd64/catalog.json``) for the target
column. ``--check`` writes nothing and fails when a patch would change.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from debian_cut import Commit, Corpus, Fix, Source, main

OLD = Source("linux-source-6.12", "6.12.117-1", "6.12.117+deb13-amd64")
NEW = Source("linux-source-6.12", "6.12.118-1", "6.12.118+deb13-amd64")
# The 6.12.118 tree's file times (the upload went to trixie-security).
DATE = "Tue, 17 Nov 2026 10:07:15 +0000"


def _f(fid: str, subject: str, hunks: dict[str, tuple[int, ...] | None], expected: str = "built",
       cves: tuple[str, ...] = (), **kw: str) -> Fix:  # fmt: skip
    return Fix(fid, "118", (Commit(subject, hunks, cves),), expected, **kw)


FIXES: tuple[Fix, ...] = (
    _f(
        "301-arch-x86-nmi_check_duration",
        "x86/nmi: Ignore negative NMI handler durations",
        {"arch/x86/kernel/nmi.c": None},
        notes="adds a pr_warn_once (a static __already_done)",
        workload="perf NMI-based events if any; none guaranteed under TCG",
    ),
    _f(
        "302-block-sg_set_timeout",
        "scsi: handle out-of-range SG_SET_TIMEOUT values",
        {"block/bsg.c": None, "drivers/scsi/scsi_ioctl.c": None},
        notes=(
            "two objects: bsg.c (vmlinux) and scsi_ioctl.c (scsi_mod); scsi_ioctl.c adds an "
            "#include"
        ),
        workload=(
            "SG_SET_TIMEOUT/SG_GET_TIMEOUT ioctls on a scsi_debug disk's /dev/sg and /dev/bsg nodes"
        ),
    ),
    _f(
        "303-block-ioc_rqos_done",
        "blk-iocost: account flush sequence latency only once",
        {"block/blk-iocost.c": None},
        workload="-",
    ),
    _f(
        "304-drivers-input-input_event",
        "Input: always accept EV_SYN in input_event()",
        {"drivers/input/input.c": None},
        workload="a uinput device emits key events and EV_SYN",
    ),
    _f(
        "305-fs-backing_file_write_iter",
        "backing-file: always end a queued write",
        {"fs/backing-file.c": None},
        expected=(
            "refused (struct backing_aio, private to backing-file.c and allocated from its "
            "slab cache, gains a field before end_write: a layout change)"
        ),
        notes="the struct is file-local, not in a header",
        workload="overlayfs over tmpfs, AIO writes through it",
    ),
    _f(
        "306-fs-notify-event_compare",
        "inotify: do not coalesce rename events",
        {"fs/notify/inotify/inotify_fsnotify.c": None},
        workload="inotify watch on a folder, two renames in a row",
    ),
    _f(
        "307-io_uring-__io_async_cancel",
        "io_uring/cancel: count all requests that a CANCEL_ALL cancels",
        {"io_uring/cancel.c": None},
        workload="io_uring: poll requests, then IORING_OP_ASYNC_CANCEL with CANCEL_ALL",
    ),
    _f(
        "308-kernel-events-perf_sigtrap",
        "perf/core: Don't send SIGTRAP after exec removed the event",
        {"kernel/events/core.c": None},
        workload="perf_event_open with sigtrap+remove_on_exec, then exec",
    ),
    _f(
        "309-kernel-trace-expr_field_str",
        "tracing: Add the bucket size to expr_field_str()",
        {"kernel/trace/trace_events_hist.c": None},
        workload="a hist trigger with a bucketed expression variable, read back",
    ),
    _f(
        "310-lib-depot_init_pool",
        "stackdepot: stop preallocating after the final pool",
        {"lib/stackdepot.c": None},
        workload="-",
    ),
    _f(
        "311-mm-madvise_free_pte_range",
        "mm/madvise: fix data loss from MADV_FREE on a KSM page",
        {"mm/madvise.c": None},
        workload="MADV_FREE on anonymous memory",
    ),
    _f(
        "312-mm-memfd_create",
        "mm/memfd: make f_pos accesses atomic",
        {"mm/memfd.c": None},
        notes="the body of SYSCALL_DEFINE2(memfd_create)",
        workload="memfd_create, write and read back",
    ),
    _f(
        "313-mm-copy_vma",
        "mm/vma: avoid broken uffd merge on mremap",
        {"mm/vma.c": None},
        workload="mremap of an anonymous mapping (copy_vma)",
    ),
    _f(
        "314-net-core-__netif_receive_skb_core",
        "net: limit priority VLAN untag depth",
        {"net/core/dev.c": (1, 2)},
        notes="dev.c hunk 0 (qdisc_pkt_len_segs_init) is another commit",
        workload="802.1Q frames with priority tags on a veth pair",
    ),
    _f(
        "315-net-ipv6-ipv6_create_tempaddr",
        "ipv6: reject wrapped temporary address preferred lifetimes",
        {"net/ipv6/addrconf.c": None},
        workload="use_tempaddr=2 on a dummy device with a global prefix",
    ),
    _f(
        "316-net-ipv6-rawv6_send_hdrinc",
        "ipv6: raw: fix use-after-free in rawv6_send_hdrinc()",
        {"net/ipv6/raw.c": None},
        cves=("CVE-2026-99320",),
        workload="an IPV6_HDRINCL raw socket sends to ::1",
    ),
    _f(
        "317-net-mptcp-mptcp_pm_nl_create_listen_socket",
        "mptcp: pm: kernel: use RCU to free endpoint listeners",
        {"net/mptcp/pm_kernel.c": None},
        workload="-",
    ),
    _f(
        "318-net-sched-qdisc_cap_skb_tx_queue",
        "net/sched: clamp skb->queue_mapping before indexing the tx queue",
        {"net/sched/sch_generic.c": None, "net/sched/sch_taprio.c": None},
        confidence="medium",
        notes=(
            "two objects (vmlinux, sch_taprio); new static helpers; every sch_generic.c hunk "
            "taken, matched by content"
        ),
        workload="traffic through pfifo_fast on lo and a dummy device",
    ),
    _f(
        "319-net-sched-qfq_change_class",
        "net/sched: sch_qfq: prevent aggregate self-replacement",
        {"net/sched/sch_qfq.c": None},
        workload="tc qdisc qfq with a class changed to its own weight",
    ),
    _f(
        "320-drivers-net-veth_set_channels",
        "veth: keep carrier off when resizing channels with a down peer",
        {"drivers/net/veth.c": None},
        workload="a veth pair, ethtool -L with the peer down",
    ),
    _f(
        "321-fs-fat-fat_write_failed",
        "fat: hold truncate_lock in fat_write_failed()",
        {"fs/fat/inode.c": None},
        workload="modprobe vfat only (no mkfs.vfat in the guest)",
    ),
    _f(
        "322-net-l2tp-l2tp_session_get",
        "l2tp: only return sessions of the given tunnel in l2tp_session_get()",
        {"net/l2tp/l2tp_core.c": None},
        workload="modprobe l2tp_core only",
    ),
    _f(
        "323-fs-xfs-xfs_ioctl32_bstat_copyin",
        "xfs: fix wrong compat fields in xfs_ioctl32_bstat_copyin()",
        {"fs/xfs/xfs_ioctl32.c": None},
        workload="modprobe xfs only",
    ),
    _f(
        "324-drivers-char-virtio_rng-remove_common",
        "hwrng: virtio - prevent use-after-free after a failed restore",
        {"drivers/char/hw_random/virtio-rng.c": None},
        workload="modprobe virtio_rng only (no virtio-rng device)",
    ),
    _f(
        "325-drivers-net-vxlan-vxlan_fdb",
        "vxlan: Stop rejecting dynamic FDB entries with a nexthop ID",
        {"drivers/net/vxlan/vxlan_core.c": None},
        workload="a vxlan device, bridge fdb add entries",
    ),
    _f(
        "326-net-ipv4-ip_dst_mtu_configured",
        'Revert "net: advertise TCP MSS from the configured MTU, not the learned PMTU"',
        {
            "include/net/ip.h": None,
            "include/net/ip6_route.h": None,
            "net/ipv4/route.c": None,
            "net/ipv6/route.c": None,
        },
        notes=(
            "header fix: removes the inlines ip_dst_mtu_configured() and ip6_dst_mtu_configured()"
        ),
        workload="TCP connections over 127.0.0.1 and ::1 (default_advmss)",
    ),
    _f(
        "327-arch-x86-xor_avx",
        "xor: add missing vzeroupper to AVX code",
        {"arch/x86/include/asm/xor_avx.h": None},
        notes="header fix: static functions of a header included by crypto/xor.c (module xor)",
        workload="modprobe xor (benchmarks the templates at load)",
    ),
    _f(
        "328-mm-memfd_check_seals_mode",
        "mm/shmem: honour F_SEAL_EXEC when an ACL is set",
        {"include/linux/memfd.h": None, "mm/shmem.c": (0, 6, 9)},
        notes=(
            "header fix (a new inline); shmem.c gains shmem_set_acl() and its const "
            "inode_operations changes; shmem.c's other hunks are other commits"
        ),
        workload="memfd with F_SEAL_EXEC: chmod and setfacl (if present)",
    ),
    Fix(
        "329-block-bio_in_atomic",
        "118",
        (
            Commit("block: introduce bio_in_atomic()", {"include/linux/bio.h": None}),
            Commit(
                "f2fs: fix to use bio_in_atomic() in f2fs_read_end_io()", {"fs/f2fs/data.c": (0,)}
            ),
        ),
        "built",
        notes="header fix: a series of two mails; f2fs data.c's other hunks are other commits",
        workload="modprobe f2fs only",
    ),
    _f(
        "330-mm-__tlb_adjust_range",
        "mm/mmu_gather: fix flushing ranges with 4 GiB or larger",
        {"include/asm-generic/tlb.h": None},
        notes=(
            "header fix: a parameter of a static inline widens; reaches the mm units that "
            "gather TLB ranges"
        ),
        workload="munmap and MADV_DONTNEED of anonymous memory",
    ),
)

HERE = Path(__file__).resolve().parent
CORPUS = Corpus("trixie-dev", OLD, {"118": (OLD, NEW, DATE)}, FIXES, HERE)

if __name__ == "__main__":
    sys.exit(main(CORPUS))
