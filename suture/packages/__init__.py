"""Distribution packages for the builder and the lab: kernel series and sets, apt, kernels, sources.

The one interface to a distro's kernels (``distro``: :class:`KernelSeries`)
and Debian's series (``debian``); what the package archive offers (``sets``:
builds resolved from apt at run time, through the host's lists or private
ones: ``apt``); downloading and unpacking kernel images, headers and exact
source packages (``kernels``, ``sources``, ``vmlinux``); the compilers that
built them (``toolchain``, ``buildroot``: a build root of the build's own
distro release); and the cache they fill (``cache``). Nothing here boots
anything: the QEMU runner is :mod:`suture.lab`, which uses these.
"""
