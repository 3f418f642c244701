"""The patch builder: from a source fix to a live patch module for one exact kernel build."""
