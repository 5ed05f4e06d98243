/* clock_gettime() that always says 2000-01-01 00:00:00 UTC.
 * CModule (TinyCC) has no libc headers: declare what is used. */
struct timespec {
    long tv_sec;
    long tv_nsec;
};

int replacement(int clock, struct timespec *ts)
{
    ts->tv_sec = 946684800;
    ts->tv_nsec = 0;
    return 0;
}
