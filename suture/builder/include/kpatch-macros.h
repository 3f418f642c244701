/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The callback names of kpatch's macro header, mapped onto Suture's, so that
 * fixes written for kpatch-build build unchanged. kpatch calls the callback
 * argument patch_object; here it is the kernel's struct klp_object.
 */
#ifndef SUTURE_KPATCH_MACROS_H
#define SUTURE_KPATCH_MACROS_H

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

#endif /* SUTURE_KPATCH_MACROS_H */
