/* attach: a long-running, line-driven target for attach/detach tests.
 *
 * Prints "ready", then for every input line "N" computes
 * sum of target_add(i, 1) for i in [0, N) = N*(N+1)/2 and prints
 * "sum=<S>" (flushed).  A line that is not a count prints "error".
 * Exits 0 on EOF.  Output must stay correct before, during and after
 * instrumentation.
 */
#include "target.h"

TARGET_FN long target_add(long a, long b)
{
    KEEP(a);
    return a + b;
}

int main(void)
{
    char line[128];
    fputs("ready\n", stdout);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin) != NULL) {
        char *end = NULL;
        long n = strtol(line, &end, 10);
        if (end == line || n < 0 || (*end != '\n' && *end != '\0')) {
            puts("error");
        } else {
            long sum = 0;
            for (long i = 0; i < n; i++)
                sum += target_add(i, 1);
            printf("sum=%ld\n", sum);
        }
        fflush(stdout);
    }
    return 0;
}
