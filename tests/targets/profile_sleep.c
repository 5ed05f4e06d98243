/* profile_sleep: time blocked in known shares, for instr profile --off-cpu.
 *
 *   profile_sleep ROUNDS
 *
 * After "go", runs ROUNDS rounds; each sleeps 30 ms in nap_a and 10 ms in
 * nap_b (nanosleep: blocked in a system call, using no CPU). Shares of the
 * time blocked: nap_a 75 %, nap_b 25 %. Prints "done", then waits for a
 * line and exits.
 */
#include <time.h>

#include "target.h"

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

TARGET_FN void nap_a(void)
{
    sleep_ms(30);
}

TARGET_FN void nap_b(void)
{
    sleep_ms(10);
}

int main(int argc, char **argv)
{
    long rounds, k;
    char line[64];

    if (argc < 2) {
        fprintf(stderr, "usage: profile_sleep ROUNDS\n");
        return 2;
    }
    rounds = parse_count(argv[1]);
    wait_go();
    for (k = 0; k < rounds; k++) {
        nap_a();
        nap_b();
    }
    printf("done\n");
    fflush(stdout);
    if (fgets(line, sizeof line, stdin) == NULL)
        clearerr(stdin);
    return 0;
}
