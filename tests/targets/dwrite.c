/* dwrite: exact effects for `instr dtrace`'s copyin() and destructive actions
 * (tests/integration/test_dtrace_write.py).
 *
 *   dwrite N   after "ready" and a line on stdin (or EOF), for i in [0, N):
 *       dw_buf(BYTES, 20)      BYTES: 0x00..0x0f, then "abc" and a NUL
 *       dw_text(TEXT)          TEXT: "hello", a NUL, "world", a NUL
 *       dw_value(i)            returns i; the program adds up what it returns
 *       dw_sig(i)              does nothing (a clause may raise() a signal in it)
 *       dw_fill(buf, 8)        does nothing; buf is "........" before each call
 *   then prints "sum S" (the sum of dw_value's results), "usr1 C" (the SIGUSR1s
 *   its handler counted) and "buf TEXT" (buf after the last dw_fill, as text).
 */
#include <signal.h>

#include "target.h"

static const unsigned char BYTES[20] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                                        14, 15, 'a', 'b', 'c', 0};
static const char TEXT[12] = "hello\0world";
static volatile sig_atomic_t usr1;
/* Every function stores to it: bodies long enough for a hook's jump. */
volatile long dw_sink;

static void on_usr1(int sig)
{
    (void)sig;
    usr1++;
}

TARGET_FN long dw_buf(const void *p, long n)
{
    dw_sink = (long)p + n;
    return n;
}

TARGET_FN long dw_text(const char *s)
{
    dw_sink = (long)s;
    return 0;
}

TARGET_FN long dw_value(long i)
{
    dw_sink = i * 3;
    return i;
}

TARGET_FN void dw_sig(long i)
{
    dw_sink = i * 5;
}

TARGET_FN void dw_fill(char *buf, long n)
{
    dw_sink = (long)buf + n;
}

int main(int argc, char **argv)
{
    char buf[9];
    long sum = 0;
    long n = parse_count(argc > 1 ? argv[1] : "3");
    signal(SIGUSR1, on_usr1);
    wait_go();
    for (long i = 0; i < n; i++) {
        dw_buf(BYTES, sizeof BYTES);
        dw_text(TEXT);
        sum += dw_value(i);
        dw_sig(i);
        memcpy(buf, "........", 9);
        dw_fill(buf, 8);
    }
    printf("sum %ld\nusr1 %d\nbuf %s\n", sum, (int)usr1, n > 0 ? buf : "");
    return 0;
}
