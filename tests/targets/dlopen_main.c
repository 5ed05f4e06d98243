/* dlopen_main: a library that appears only after the probes are armed.
 *
 *   dlopen_main N [PATH]   after "go", dlopen(PATH, RTLD_NOW) (default:
 *                          libinstrplugin.so next to this executable),
 *                          prints "loaded", then calls plugin_fn(i) for i in
 *                          [0, N) and prints "plugin calls=N sum=S",
 *                          S = sum(3*i + 1).  Exits 1 if loading fails.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <unistd.h>

#include "target.h"

typedef int (*plugin_fn_t)(int);

static void default_path(char *out, size_t size)
{
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len < 0) {
        perror("readlink");
        exit(1);
    }
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash != NULL)
        *slash = '\0';
    snprintf(out, size, "%s/libinstrplugin.so", exe);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? parse_count(argv[1]) : 1000;
    char path[PATH_MAX + 32];
    if (argc > 2)
        snprintf(path, sizeof path, "%s", argv[2]);
    else
        default_path(path, sizeof path);

    wait_go();
    void *handle = dlopen(path, RTLD_NOW);
    if (handle == NULL) {
        fprintf(stderr, "dlopen failed: %s\n", dlerror());
        return 1;
    }
    plugin_fn_t fn = (plugin_fn_t)dlsym(handle, "plugin_fn");
    if (fn == NULL) {
        fprintf(stderr, "dlsym failed: %s\n", dlerror());
        return 1;
    }
    puts("loaded");
    long sum = 0;
    for (long i = 0; i < n; i++)
        sum += fn((int)i);
    printf("plugin calls=%ld sum=%ld\n", n, sum);
    return 0;
}
