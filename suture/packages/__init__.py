"""Distribution packages for the builder and the lab: kernel sets, apt, kernels, sources, the cache.

What the package archive offers (``sets``: builds resolved from apt at run
time), downloading and unpacking kernel images, headers and exact source
packages (``apt``, ``kernels``, ``sources``, ``vmlinux``), and the cache they
fill (``cache``). Nothing here boots anything: the QEMU runner is
:mod:`suture.lab`, which uses these.
"""
