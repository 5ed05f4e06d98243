/* sleeper: a line-driven target that sleeps inside libc, for leave tests.
 *
 * Prints "ready"; then for every input line "N" prints "sleeping N", sleeps
 * N times 300 ms in usleep() (a hooked wrapper under instr syscalls) and
 * prints "slept N";
 * a line "M sum" prints "sum=<M*(M+1)/2>" from target_add calls. Exits 0 on
 * EOF. A thread blocked in usleep when instr leaves must wake into valid
 * code: the output after the leave says whether it did.
 */
#include <unistd.h>

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
        if (end == line || n < 0) {
            puts("error");
        } else if (strncmp(end, " sum", 4) == 0) {
            long sum = 0;
            for (long i = 0; i < n; i++)
                sum += target_add(i, 1);
            printf("sum=%ld\n", sum);
        } else {
            printf("sleeping %ld\n", n);
            fflush(stdout);
            for (long i = 0; i < n; i++)
                usleep(300000);
            printf("slept %ld\n", n);
        }
        fflush(stdout);
    }
    return 0;
}
