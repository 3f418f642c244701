/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The macros of kpatch's macro header, mapped onto Suture's, so that fixes
 * written for kpatch-build build unchanged. kpatch calls the callback
 * argument patch_object; here it is the kernel's struct klp_object.
 */
#ifndef SUTURE_KPATCH_MACROS_H
#define SUTURE_KPATCH_MACROS_H

#include <linux/printk.h>
#include "suture_livepatch.h"

typedef struct klp_object patch_object;

#define KPATCH_PRE_PATCH_CALLBACK(fn)		SUTURE_PRE_PATCH_CALLBACK(fn)
#define KPATCH_POST_PATCH_CALLBACK(fn)		SUTURE_POST_PATCH_CALLBACK(fn)
#define KPATCH_PRE_UNPATCH_CALLBACK(fn)		SUTURE_PRE_UNPATCH_CALLBACK(fn)
#define KPATCH_POST_UNPATCH_CALLBACK(fn)	SUTURE_POST_UNPATCH_CALLBACK(fn)

/* Accepted and ignored: Suture decides inclusion from the objects. */
#define KPATCH_IGNORE_SECTION(name)
#define KPATCH_IGNORE_FUNCTION(fn)
#define KPATCH_FORCE_UNSAFE(fn)

/*
 * KPATCH_PRINTK(fmt, ...) and KPATCH_PRINTK_DEFERRED(fmt, ...): printk and
 * printk_deferred for a fix's debugging lines, without side effects on the
 * code around them.
 *
 * Both are __cold. GCC takes a path that always calls a cold function for an
 * unlikely one: the code before an unconditional printk may move to
 * .text.unlikely, and calls on that path stop being inlined, so that one added
 * print changes the code of lines the fix did not touch, and the patch grows.
 * Behind a branch GCC cannot decide, only the print itself is cold. The
 * condition is a register an empty asm claims to change: always true when it
 * runs, unknown to the compiler, and without a memory load.
 */
#define __SUTURE_OPAQUE_CALL(call)						\
({										\
	int __suture_go = 1;							\
										\
	asm volatile("" : "+r" (__suture_go));					\
	if (__suture_go)							\
		call;								\
})

#define KPATCH_PRINTK(fmt, ...)		__SUTURE_OPAQUE_CALL(printk(fmt, ##__VA_ARGS__))
#define KPATCH_PRINTK_DEFERRED(fmt, ...)					\
	__SUTURE_OPAQUE_CALL(printk_deferred(fmt, ##__VA_ARGS__))

#endif /* SUTURE_KPATCH_MACROS_H */
