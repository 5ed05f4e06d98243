/* own_malloc: a program that defines malloc, calloc, realloc, free and
 * malloc_usable_size itself, as a program linked with its own allocator does:
 * a bump allocator over a static arena (free gives nothing back), counting
 * its calls. The linker exports them (libc refers to them) and the program
 * comes first in link map order, so every call, the program's and libc's
 * own, binds to these: glibc's malloc is never called.
 *
 * Prints "ready" and reads commands, one per line (stdin and stdout have
 * static buffers: stdio allocates nothing):
 *   "N"  (a count) rounds(N): N times malloc(100 + i % 50), realloc of that
 *        block to 10 bytes more, free; calloc(4, 8), free; and one free(NULL).
 *        Prints "rounds done".
 *   "usable N"  malloc_usable_size of a 40-byte block and of NULL, each N
 *        times, alternating; prints "usable sum=S" (S = 40 * N).
 * On EOF prints its own counters, "own malloc=M calloc=C realloc=R free=F
 * free_null=Z", and returns 0.
 */
#include <stdint.h>
#include <unistd.h>

#include "target.h"

extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);

#define ARENA_SIZE ((size_t)64 << 20)
#define HEADER 16
static unsigned char arena[ARENA_SIZE] __attribute__((aligned(16)));
static size_t top;
static long n_malloc, n_calloc, n_realloc, n_free, n_free_null;

#define COUNT(c) __atomic_fetch_add(&(c), 1, __ATOMIC_RELAXED)

static int ours(const void *p)
{
    return (uintptr_t)p >= (uintptr_t)arena && (uintptr_t)p < (uintptr_t)arena + ARENA_SIZE;
}

/* A block of `size` bytes after a header that holds the size; zeroed (the
 * arena's bytes are never used twice). */
static void *bump(size_t size)
{
    size_t need = HEADER + ((size + 15) & ~(size_t)15);
    size_t at = __atomic_fetch_add(&top, need, __ATOMIC_RELAXED);
    if (size > ARENA_SIZE || at + need > ARENA_SIZE) {
        static const char msg[] = "own_malloc: arena exhausted\n";
        (void)!write(2, msg, sizeof msg - 1);
        _exit(4);
    }
    *(size_t *)(arena + at) = size;
    return arena + at + HEADER;
}

__attribute__((noinline, used)) void *malloc(size_t size)
{
    COUNT(n_malloc);
    return bump(size);
}

__attribute__((noinline, used)) void *calloc(size_t n, size_t size)
{
    COUNT(n_calloc);
    if (size != 0 && n > ARENA_SIZE / size)
        return NULL;
    return bump(n * size);
}

/* size_t malloc_usable_size(void *p): the size in p's header, 0 for NULL.
 * In assembly, so that its layout is fixed: the NULL path points p at a zero
 * header and jumps back to the instruction 5 bytes in, inside the 18 bytes
 * that Interceptor.replaceFast writes on x64 (core/prologue.ts). */
size_t malloc_usable_size(void *p);
__attribute__((used)) static const size_t zero_header[2];
__asm__(".text\n"
        ".globl malloc_usable_size\n"
        ".type malloc_usable_size, @function\n"
        "malloc_usable_size:\n"
        "    test %rdi, %rdi\n"
        "    je 2f\n"
        "1:  mov -16(%rdi), %rax\n"
        "    nop\n"
        "    nop\n"
        "    nop\n"
        "    nop\n"
        "    nop\n"
        "    nop\n"
        "    nop\n"
        "    nop\n"
        "    nop\n"
        "    nop\n"
        "    nop\n"
        "    nop\n"
        "    nop\n"
        "    nop\n"
        "    ret\n"
        "2:  lea zero_header+16(%rip), %rdi\n"
        "    jmp 1b\n"
        ".size malloc_usable_size, .-malloc_usable_size\n");

__attribute__((noinline, used)) void *realloc(void *p, size_t size)
{
    COUNT(n_realloc);
    if (p != NULL && !ours(p))
        return __libc_realloc(p, size); /* a block of glibc's memalign */
    unsigned char *q = bump(size);
    if (p != NULL) {
        size_t old = malloc_usable_size(p);
        memcpy(q, p, old < size ? old : size);
    }
    return q;
}

__attribute__((noinline, used)) void free(void *p)
{
    COUNT(n_free);
    if (p == NULL)
        COUNT(n_free_null);
    else if (!ours(p))
        __libc_free(p);
}

static void *volatile nothing;

TARGET_FN void rounds(long n)
{
    for (long i = 0; i < n; i++) {
        unsigned char *p = malloc(100 + (size_t)(i % 50));
        if (p == NULL)
            abort();
        p[0] = (unsigned char)i;
        unsigned char *q = realloc(p, 110 + (size_t)(i % 50));
        if (q == NULL)
            abort();
        KEEP(q);
        free(q);
        unsigned char *z = calloc(4, 8);
        if (z == NULL)
            abort();
        KEEP(z);
        free(z);
        free(nothing); /* NULL, through a volatile: gcc drops a literal free(NULL) */
    }
}

int main(void)
{
    static char inbuf[4096], outbuf[4096];
    char line[64];
    setvbuf(stdin, inbuf, _IOLBF, sizeof inbuf);
    setvbuf(stdout, outbuf, _IOLBF, sizeof outbuf);
    fputs("ready\n", stdout);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "usable ", 7) == 0) {
            long n = parse_count(line + 7);
            size_t sum = 0;
            void *block = malloc(40);
            for (long i = 0; i < 2 * n; i++)
                sum += malloc_usable_size(i % 2 ? block : nothing);
            free(block);
            printf("usable sum=%zu\n", sum);
            fflush(stdout);
            continue;
        }
        rounds(parse_count(line));
        puts("rounds done");
        fflush(stdout);
    }
    printf("own malloc=%ld calloc=%ld realloc=%ld free=%ld free_null=%ld\n", n_malloc, n_calloc, n_realloc, n_free,
           n_free_null);
    return 0;
}
