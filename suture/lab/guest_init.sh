#!/bin/busybox sh
# PID 1 of a Suture lab guest (runs from the initramfs, busybox only).
#
# Mounts the host's root file system (9p, read-only) under a tmpfs overlay so
# that the guest can write anywhere and nothing reaches the host, mounts the
# per-run exchange folder (9p, read-write) at /run/suture-lab, runs
# /run/suture-lab/cmd.sh in the new root with its output on ttyS1, writes its
# exit status to /run/suture-lab/rc and stops the machine. The host reads the
# kernel console (ttyS0) to report panics and oopses.
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
	echo "suture-init: $*" >/dev/ttyS0
	reboot -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r mod; do
	insmod "/modules/$mod" || fail "insmod $mod failed"
done </modules/order

mkdir -p /host /upper /newroot /exchange
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host ||
	fail "cannot mount the host root over 9p"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 exchange /exchange ||
	fail "cannot mount the exchange folder over 9p"
mount -t tmpfs -o mode=0755 tmpfs /upper
mkdir -p /upper/data /upper/work
mount -t overlay -o lowerdir=/host,upperdir=/upper/data,workdir=/upper/work overlay /newroot ||
	fail "cannot mount the overlay root"

R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t tmpfs -o mode=0755 tmpfs $R/run
mkdir -p $R/run/suture-lab
mount --bind /exchange $R/run/suture-lab
mount -t securityfs securityfs $R/sys/kernel/security 2>/dev/null
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs $R/sys/kernel/tracing 2>/dev/null

. /exchange/boot.env
# Another root file system than the host's: the host folders the command
# needs, read-only at the same paths.
if [ -n "$SUTURE_OTHER_ROOT" ]; then
	mkdir -p $R/run/suture-host
	mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostfs $R/run/suture-host ||
		fail "cannot mount the host's folders over 9p"
	while read -r path; do
		mkdir -p "$R$path" && mount --bind "$R/run/suture-host$path" "$R$path" ||
			fail "cannot show the host's $path"
	done </exchange/host-paths
fi

# The image's modules, so that modprobe finds the target kernel's modules.
if [ -n "$SUTURE_MODULES_DIR" ] && [ -d "$R$SUTURE_MODULES_DIR" ]; then
	mkdir -p "$R/lib/modules/$(uname -r)"
	mount --bind "$R$SUTURE_MODULES_DIR" "$R/lib/modules/$(uname -r)"
fi

ip link set lo up
hostname suture-guest
stty -F /dev/ttyS1 raw -echo

chroot $R /bin/sh /run/suture-lab/cmd.sh </dev/null >/dev/ttyS1 2>&1
echo $? >/exchange/rc
sync
reboot -f
