"""The kernel lab: boot a Debian kernel build under QEMU and run commands in it.

The guest's initramfs and command script (``initramfs``, ``guest``), and the
symbol positions read from a running guest (``kallsyms``). The kernels it
boots come from :mod:`suture.packages`.
"""
