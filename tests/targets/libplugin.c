/* libplugin: built as the shared library libinstrplugin.so (-shared -fPIC),
 * loaded late by dlopen_main.
 *
 *   int plugin_fn(int i)      exported; returns plugin_scale(i) + 1 = 3*i + 1
 *   plugin_scale(int i)       hidden (in .symtab only, not exported); 3*i
 */
#define PLUGIN_FN __attribute__((noinline, noipa, used))

static volatile long g_scaled;

__attribute__((visibility("hidden"))) PLUGIN_FN int plugin_scale(int i)
{
    g_scaled++;
    return 3 * i;
}

PLUGIN_FN int plugin_fn(int i)
{
    return plugin_scale(i) + 1;
}
