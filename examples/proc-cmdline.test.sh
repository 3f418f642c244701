#!/bin/sh
# The test of examples/proc-cmdline.patch, for `suture test --test`: it
# passes only while the fix is live, when /proc/cmdline starts with its mark.
case "$(cat /proc/cmdline)" in
"[patched by suture]"*) exit 0 ;;
*) echo "not patched: /proc/cmdline has no mark" && exit 1 ;;
esac
