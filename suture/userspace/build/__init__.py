"""The userspace patch builder (imports pyelftools; the agent never imports it)."""
