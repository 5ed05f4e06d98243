/* calls: exact call counts and argument values of all widths.
 *
 *   calls N            same as "calls add N"
 *   calls add N        target_add(i, 2*i) for i in [0, N)
 *                      prints "add calls=N sum=S", S = 3*N*(N-1)/2
 *   calls mix N        target_mix(a, b, c, d) for i in [0, N) with
 *                        a = (int8_t)(-128 + i % 256)
 *                        b = (uint16_t)(65535 - i % 65536)
 *                        c = (int32_t)(INT32_MIN + i % 2^31)
 *                        d = UINT64_MAX - i
 *                      each returns a + b; prints "mix calls=N sum=S"
 *   calls str N        target_str("item-<i>") for i in [0, N)
 *                      prints "str calls=N bytes=B" (B = total strlen)
 *   calls longstr L    one target_str() of L chars 'a'..'z' repeated
 *                      prints "longstr len=L"
 *   calls nullstr      one target_str(NULL); prints "nullstr calls=1"
 *   calls buf N        target_buf(p, i % 17) for i in [0, N), p[j] = (i + j) & 0xff
 *                      prints "buf calls=N bytes=B checksum=C"
 *                      (B = total n, C = sum of all bytes passed)
 *   calls all N        add, mix, str and buf, N calls each, in that order
 */
#include <stdint.h>

#include "target.h"

static volatile uint64_t g_bytes;
static volatile uint64_t g_checksum;

TARGET_FN long target_add(long a, long b)
{
    KEEP(a);
    return a + b;
}

TARGET_FN int target_mix(int8_t a, uint16_t b, int32_t c, uint64_t d)
{
    KEEP(c);
    KEEP(d);
    return (int)a + (int)b;
}

TARGET_FN void target_str(const char *s)
{
    if (s != NULL)
        g_bytes += strlen(s);
}

TARGET_FN void target_buf(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        g_checksum += b[i];
    g_bytes += n;
}

static void run_add(long n)
{
    long sum = 0;
    for (long i = 0; i < n; i++)
        sum += target_add(i, 2 * i);
    printf("add calls=%ld sum=%ld\n", n, sum);
}

static void run_mix(long n)
{
    long sum = 0;
    for (long i = 0; i < n; i++) {
        int8_t a = (int8_t)(-128 + i % 256);
        uint16_t b = (uint16_t)(65535 - i % 65536);
        int32_t c = (int32_t)(INT32_MIN + i % 2147483648L);
        uint64_t d = UINT64_MAX - (uint64_t)i;
        sum += target_mix(a, b, c, d);
    }
    printf("mix calls=%ld sum=%ld\n", n, sum);
}

static void run_str(long n)
{
    char buf[32];
    g_bytes = 0;
    for (long i = 0; i < n; i++) {
        snprintf(buf, sizeof buf, "item-%ld", i);
        target_str(buf);
    }
    printf("str calls=%ld bytes=%llu\n", n, (unsigned long long)g_bytes);
}

static void run_longstr(long len)
{
    char *s = malloc((size_t)len + 1);
    if (s == NULL)
        exit(1);
    for (long j = 0; j < len; j++)
        s[j] = (char)('a' + j % 26);
    s[len] = '\0';
    target_str(s);
    free(s);
    printf("longstr len=%ld\n", len);
}

static void run_buf(long n)
{
    unsigned char buf[16];
    g_bytes = 0;
    g_checksum = 0;
    for (long i = 0; i < n; i++) {
        size_t len = (size_t)(i % 17);
        for (size_t j = 0; j < len; j++)
            buf[j] = (unsigned char)((i + (long)j) & 0xff);
        target_buf(buf, len);
    }
    printf("buf calls=%ld bytes=%llu checksum=%llu\n", n, (unsigned long long)g_bytes,
           (unsigned long long)g_checksum);
}

int main(int argc, char **argv)
{
    const char *mode = "add";
    const char *count = "1000";
    if (argc == 2 && (argv[1][0] >= '0' && argv[1][0] <= '9')) {
        count = argv[1];
    } else if (argc >= 2) {
        mode = argv[1];
        if (argc >= 3)
            count = argv[2];
    }
    long n = parse_count(count);

    wait_go();
    if (strcmp(mode, "add") == 0) {
        run_add(n);
    } else if (strcmp(mode, "mix") == 0) {
        run_mix(n);
    } else if (strcmp(mode, "str") == 0) {
        run_str(n);
    } else if (strcmp(mode, "longstr") == 0) {
        run_longstr(n);
    } else if (strcmp(mode, "nullstr") == 0) {
        target_str(NULL);
        puts("nullstr calls=1");
    } else if (strcmp(mode, "buf") == 0) {
        run_buf(n);
    } else if (strcmp(mode, "all") == 0) {
        run_add(n);
        run_mix(n);
        run_str(n);
        run_buf(n);
    } else {
        fprintf(stderr, "unknown mode: %s\n", mode);
        return 2;
    }
    return 0;
}
