/* System calls that bypass libc: raw `syscall` instructions (inline assembly),
 * which only the complete (Stalker) mode of `instr syscalls` sees. The window
 * starts at getppid() (see sys_files.c). */
#include <sys/syscall.h>
#include <unistd.h>

static long raw0(long nr)
{
    long ret;
#if defined(__x86_64__)
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr) : "rcx", "r11", "memory");
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = nr;
    register long x0 __asm__("x0");
    __asm__ volatile("svc 0" : "=r"(x0) : "r"(x8) : "memory");
    ret = x0;
#else
    ret = syscall(nr);
#endif
    return ret;
}

static long raw3(long nr, long a, long b, long c)
{
    long ret;
#if defined(__x86_64__)
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = nr;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    ret = x0;
#else
    ret = syscall(nr, a, b, c);
#endif
    return ret;
}

int main(void)
{
    int i;

    getppid(); /* the window starts here */
    getpid();  /* through libc: both modes see it */
    for (i = 0; i < 3; i++)
        raw0(SYS_getpid); /* raw: only the complete mode sees them */
    raw3(SYS_write, 1, (long) "raw\n", 4);
    raw3(SYS_close, -1, 0, 0); /* EBADF */
    return 0;
}
