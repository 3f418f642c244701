"""The kernel lab: fetch Debian kernels, boot them under QEMU, run commands inside."""
