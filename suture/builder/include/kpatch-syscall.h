/* SPDX-License-Identifier: GPL-2.0 */
/*
 * KPATCH_SYSCALL_DEFINE0 ... KPATCH_SYSCALL_DEFINE6, as in kpatch's
 * kpatch-syscall.h: a fix that changes a syscall's body writes
 * KPATCH_SYSCALL_DEFINEn where the kernel has SYSCALL_DEFINEn.
 *
 * Why. On x86-64 Linux 6.1 (arch/x86/include/asm/syscall_wrapper.h),
 * SYSCALL_DEFINEn(name, ...) makes the entry stubs __x64_sys_name and
 * __ia32_sys_name (global, with an ftrace entry), which call the static
 * __se_sys_name (it sign-extends the arguments), which calls the
 * `static inline` body __do_sys_name. The kernel's `inline` implies notrace:
 * when GCC keeps the body out of line (a large one, or one two stubs call),
 * it has no ftrace entry, so the livepatch core cannot redirect it, and the
 * stubs reach it by a tail jump, so patching them does not help either.
 *
 * How. The same functions under the same names, so that the builder pairs
 * them with the running kernel's, and the same trace metadata, so that the
 * file's data compares equal; but __se_sys_name and __do_sys_name are
 * always inlined: the new body lives whole inside __x64_sys_name and
 * __ia32_sys_name, which have ftrace entries, and the patch replaces those.
 * An out-of-line body of the running kernel is only reached from them, so
 * once they are patched it is no longer called. A body GCC cannot inline
 * (it takes its own address, or is variadic) fails to compile here.
 *
 * SYSCALL_DEFINE0 needs no change: its body __do_sys_name is a plain static
 * function, with an ftrace entry, and the stubs are aliases of it.
 */
#ifndef SUTURE_KPATCH_SYSCALL_H
#define SUTURE_KPATCH_SYSCALL_H

#include <linux/syscalls.h>
#include "kpatch-macros.h"

#ifndef CONFIG_X86_64
#error "kpatch-syscall.h: Suture knows the syscall wrappers of x86-64 only"
#endif

#define KPATCH_SYSCALL_DEFINE0(sname)	SYSCALL_DEFINE0(sname)
#define KPATCH_SYSCALL_DEFINE1(name, ...) __SUTURE_SYSCALL_DEFINEx(1, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE2(name, ...) __SUTURE_SYSCALL_DEFINEx(2, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE3(name, ...) __SUTURE_SYSCALL_DEFINEx(3, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE4(name, ...) __SUTURE_SYSCALL_DEFINEx(4, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE5(name, ...) __SUTURE_SYSCALL_DEFINEx(5, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE6(name, ...) __SUTURE_SYSCALL_DEFINEx(6, _##name, __VA_ARGS__)

/* The stubs are the kernel's own (__X64_SYS_STUBx, __IA32_SYS_STUBx). */
#define __SUTURE_SYSCALL_DEFINEx(x, sname, ...)					\
	SYSCALL_METADATA(sname, x, __VA_ARGS__)					\
	static __always_inline long __se_sys##sname(__MAP(x, __SC_LONG, __VA_ARGS__)); \
	static __always_inline long __do_sys##sname(__MAP(x, __SC_DECL, __VA_ARGS__)); \
	__X64_SYS_STUBx(x, sname, __VA_ARGS__)					\
	__IA32_SYS_STUBx(x, sname, __VA_ARGS__)					\
	static __always_inline long __se_sys##sname(__MAP(x, __SC_LONG, __VA_ARGS__)) \
	{									\
		long ret = __do_sys##sname(__MAP(x, __SC_CAST, __VA_ARGS__));	\
										\
		__MAP(x, __SC_TEST, __VA_ARGS__);				\
		__PROTECT(x, ret, __MAP(x, __SC_ARGS, __VA_ARGS__));		\
		return ret;							\
	}									\
	static __always_inline long __do_sys##sname(__MAP(x, __SC_DECL, __VA_ARGS__))

#endif /* SUTURE_KPATCH_SYSCALL_H */
