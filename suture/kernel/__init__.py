"""The livepatch engine: facts about the running kernel and its livepatch core."""
