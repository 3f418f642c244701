/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Forced into a file the builder compiles again when the changed code of a
 * module uses a static key the module loader cannot resolve as it loads the
 * patch: a key of the patched module itself (tracepoints, DEFINE_STATIC_KEY_*)
 * or an unexported one of vmlinux. The loader sets up a module's jump labels
 * before the livepatch core can resolve such a key, so the patch must not
 * have jump labels on it. Here every static branch reads the key's count
 * instead: the same decision, made with a load and a test, and the key
 * becomes an ordinary livepatch relocation.
 */
#ifndef SUTURE_STATIC_KEYS_H
#define SUTURE_STATIC_KEYS_H

#include <linux/jump_label.h>

#undef static_branch_likely
#undef static_branch_unlikely
#define static_branch_likely(x)		likely(static_key_enabled(x))
#define static_branch_unlikely(x)	unlikely(static_key_enabled(x))
/* The older interface, which tracepoints use; it is an inline function. */
#define static_key_false(k)		unlikely(static_key_count(k) > 0)
#define static_key_true(k)		likely(static_key_count(k) > 0)

#endif
