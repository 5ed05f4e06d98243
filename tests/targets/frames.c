/* frames: a call chain four deep, built with frame pointers
 * (-fno-omit-frame-pointer, tests/helpers.py EXTRA_FLAGS), for backtraces.
 *
 *   frames N     main -> chain_a -> chain_b -> chain_c -> target_bt(i), for
 *                i in [0, N); prints "frames calls=<N> sum=<S>" (S = sum of i).
 */
#include "target.h"

/* Straight-line code longer than a hook's jump: a probe alone on it gets
 * instr's replaceFast entry stub (agents/src/ctier/fast_c.ts). */
TARGET_FN long target_bt(long i)
{
    long a = i * 7 + 3;
    long b = (a ^ (i >> 2)) + (i & 5);
    KEEP(b);
    return i;
}

TARGET_FN long chain_c(long i)
{
    long r = target_bt(i);
    KEEP(r);
    return r;
}

TARGET_FN long chain_b(long i)
{
    long r = chain_c(i);
    KEEP(r);
    return r;
}

TARGET_FN long chain_a(long i)
{
    long r = chain_b(i);
    KEEP(r);
    return r;
}

int main(int argc, char **argv)
{
    if (argc != 3 || strcmp(argv[1], "frames") != 0) {
        fprintf(stderr, "usage: frames frames N\n");
        return 2;
    }
    long n = parse_count(argv[2]);
    long sum = 0;
    for (long i = 0; i < n; i++)
        sum += chain_a(i);
    printf("frames calls=%ld sum=%ld\n", n, sum);
    return 0;
}
