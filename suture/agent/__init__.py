"""The agent: runs as root on every host; applies verified bundles through the engine.

Keep its import graph small: no builder, server or lab imports.
"""
