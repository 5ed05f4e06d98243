/* aggs: deterministic calls for the aggregation tests.
 *
 *   aggs values N     calls target_value(v) for v = i * i % 1000 - 300,
 *                     i in [0, N): negative, zero and positive values
 *   aggs malloc N     for i in [0, N): alloc_a() mallocs 8 * (i % 16) + 1
 *                     bytes when i is even, alloc_b() mallocs 100 + i
 *                     bytes when i is odd; each block is freed at once
 *   Both print "done" at the end.
 */
#include "target.h"

TARGET_FN long target_value(long v)
{
    KEEP(v);
    return v * 2;
}

TARGET_FN void *alloc_a(long size)
{
    return malloc((size_t)size);
}

TARGET_FN void *alloc_b(long size)
{
    return malloc((size_t)size);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: aggs values|malloc N\n");
        return 2;
    }
    long n = parse_count(argv[2]);
    wait_go();
    if (strcmp(argv[1], "values") == 0) {
        for (long i = 0; i < n; i++)
            target_value(i * i % 1000 - 300);
    } else if (strcmp(argv[1], "malloc") == 0) {
        for (long i = 0; i < n; i++) {
            void *p = (i % 2 == 0) ? alloc_a(8 * (i % 16) + 1) : alloc_b(100 + i);
            KEEP(p);
            free(p);
        }
    } else {
        fprintf(stderr, "unknown mode %s\n", argv[1]);
        return 2;
    }
    puts("done");
    return 0;
}
