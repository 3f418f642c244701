"""Test bundles before they are published: each in a guest of its own kernel build, under load.

- :mod:`suture.tester.runner`: the host side of ``suture test``: build checks,
  guest boots, results written into the bundles' manifests.
- :mod:`suture.tester.inside`: the steps in the guest (script, apply, unload).
- :mod:`suture.tester.load`: the generic load (stress-ng, module churn).
- :mod:`suture.tester.kernel_log`: what in the kernel log and taint fails a test.

This ``__init__`` imports nothing: the guest's runner should not load the lab.
"""
