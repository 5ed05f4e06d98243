/* Shared helpers for the instr test targets (tests/targets/NAME.c).
 *
 * Protocol, common to every target: the target prints "ready" on stdout,
 * flushes, then blocks reading one line from stdin.  A test that attaches
 * reads "ready", arms its probes, then writes a line; a test that spawns
 * writes the line immediately (probes are armed before main runs).  EOF on
 * stdin counts as "go" too, so `target ... </dev/null` runs straight through.
 *
 * Target functions are global (in .symtab, not exported: no -rdynamic),
 * never inlined, cloned or analysed across calls (noipa), so every call in
 * the source is a real call at the symbol's address.
 */
#ifndef INSTR_TARGET_H
#define INSTR_TARGET_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TARGET_FN __attribute__((noinline, noipa, used))

/* Prevents the compiler from reasoning about a value or deleting a loop. */
#define KEEP(x) __asm__ volatile("" : : "g"(x) : "memory")

static inline void wait_go(void)
{
    char line[64];
    fputs("ready\n", stdout);
    fflush(stdout);
    if (fgets(line, sizeof line, stdin) == NULL)
        clearerr(stdin);
}

/* Parses a non-negative count argument, exiting with status 2 on bad input. */
static inline long parse_count(const char *s)
{
    char *end = NULL;
    long n = strtol(s, &end, 10);
    if (end == s || *end != '\0' || n < 0) {
        fprintf(stderr, "bad count: %s\n", s);
        exit(2);
    }
    return n;
}

#endif
