"""Userspace live patches: a shared library's functions replaced in running processes.

The public entry points are in :mod:`suture.userspace.fleet` (every process
of a library build: apply, unload, status); one process at a time is
:mod:`suture.userspace.patcher`; the builder is :mod:`suture.userspace.build`.
Nothing here is imported until a userspace bundle is met, so the agent's
kernel-only runs do not pay for it.
"""
