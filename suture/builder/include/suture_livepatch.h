/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Suture's author API for fixes that need more than new code.
 *
 * A fix may include this header (the builder adds its folder to the include
 * path) and register callbacks that the livepatch core runs around the
 * transition for the patched object (vmlinux or the module the fixed file
 * belongs to):
 *
 *	static int my_pre(struct klp_object *obj) { ... return 0; }
 *	SUTURE_PRE_PATCH_CALLBACK(my_pre);
 *
 * A pre-patch callback that returns an error stops the patch from loading.
 * For new state attached to existing objects use the kernel's shadow
 * variables directly (klp_shadow_get_or_alloc() and friends from
 * <linux/livepatch.h>); they are exported to modules.
 */
#ifndef SUTURE_LIVEPATCH_H
#define SUTURE_LIVEPATCH_H

#include <linux/compiler.h>
#include <linux/livepatch.h>

/*
 * Each macro records a pointer to the callback in a section the builder
 * reads; the builder then carries the function into the patch and names it
 * in the klp_object's callbacks. The inline function only checks the type.
 */
#define __SUTURE_CALLBACK(kind, fn, ret)					\
	static inline ret (*__suture_check_##kind##_##fn(void))(struct klp_object *) \
	{ return fn; }								\
	static typeof(&fn) const __suture_cb_##kind##_##fn			\
	__section(".suture.callbacks." #kind) __used = fn

#define SUTURE_PRE_PATCH_CALLBACK(fn)	__SUTURE_CALLBACK(pre_patch, fn, int)
#define SUTURE_POST_PATCH_CALLBACK(fn)	__SUTURE_CALLBACK(post_patch, fn, void)
#define SUTURE_PRE_UNPATCH_CALLBACK(fn)	__SUTURE_CALLBACK(pre_unpatch, fn, void)
#define SUTURE_POST_UNPATCH_CALLBACK(fn) __SUTURE_CALLBACK(post_unpatch, fn, void)

#endif /* SUTURE_LIVEPATCH_H */
