/*
 * x0tta lab: lets Debian 12's User-Mode Linux (6.1) run on a host CPU whose XSAVE area is larger
 * than the one UML knows (AVX-512, AMX: "userspace - ptrace set fp regs failed, errno = 14").
 *
 * UML restores a guest process's FPU registers with PTRACE_SETREGSET(NT_X86_XSTATE) and a buffer
 * of its own fixed size (x87, SSE and AVX: 832 bytes). Since Linux 5.x the host refuses any
 * XSTATE write that is not exactly its whole user XSAVE size (EFAULT), so every such restore
 * fails and the guest's init dies at its first exec.
 *
 * Preloaded into linux.uml (LD_PRELOAD, by x0tta.lab.runner), this wraps ptrace(): a short XSTATE
 * write is completed to the host's size with the traced process's current state of the components
 * beyond UML's buffer, then written whole. Everything else goes to the system call unchanged.
 * UML still does not switch those upper components (AVX-512, AMX) between guest tasks, so the lab
 * guest also tells glibc and OpenSSL not to use AVX-512 (GLIBC_TUNABLES, OPENSSL_ia32cap).
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define XSTATE_BV_OFFSET 512       /* the XSAVE header follows the 512-byte legacy area */
#define LOW_COMPONENTS 0x7ULL      /* x87, SSE, AVX: what a 832-byte buffer holds */

static unsigned char full[1 << 16];  /* UML's ptrace calls come from one thread at a time */

static long complete_xstate_write(pid_t pid, void *addr, struct iovec *iov) {
    struct iovec whole = {full, sizeof full};
    if (syscall(SYS_ptrace, PTRACE_GETREGSET, pid, addr, &whole) != 0 || whole.iov_len <= iov->iov_len
        || iov->iov_len < XSTATE_BV_OFFSET + 8)
        return syscall(SYS_ptrace, PTRACE_SETREGSET, pid, addr, iov);
    uint64_t current, mine;
    memcpy(&current, full + XSTATE_BV_OFFSET, 8);
    memcpy(full, iov->iov_base, iov->iov_len);
    memcpy(&mine, full + XSTATE_BV_OFFSET, 8);
    uint64_t bv = (mine & LOW_COMPONENTS) | (current & ~LOW_COMPONENTS);
    memcpy(full + XSTATE_BV_OFFSET, &bv, 8);
    return syscall(SYS_ptrace, PTRACE_SETREGSET, pid, addr, &whole);
}

long ptrace(enum __ptrace_request request, ...) {
    va_list ap;
    va_start(ap, request);
    pid_t pid = va_arg(ap, pid_t);
    void *addr = va_arg(ap, void *);
    void *data = va_arg(ap, void *);
    va_end(ap);
    if (request == PTRACE_SETREGSET && (uintptr_t)addr == NT_X86_XSTATE && data != NULL)
        return complete_xstate_write(pid, addr, data);
    if (request == PTRACE_PEEKTEXT || request == PTRACE_PEEKDATA || request == PTRACE_PEEKUSER) {
        long word;  /* glibc's convention: the word is the return value, errno tells failure */
        if (syscall(SYS_ptrace, request, pid, addr, &word) < 0)
            return -1;
        errno = 0;
        return word;
    }
    return syscall(SYS_ptrace, request, pid, addr, data);
}
