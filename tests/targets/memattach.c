/* memattach: allocations made before instr attaches, and after.
 *
 * Before "ready": early[0..9] = malloc(100) each, and a list head
 * early_head = malloc(64), all kept in globals.
 * After the first line on stdin (the go):
 *   free_early()   frees early[0..4]                5 frees of unknown blocks
 *   grow_list()    appends 3 nodes of 48 bytes to early_head's list: reachable
 *                  only through a block allocated before the attach
 *   late_leak()    malloc(77), dropped                       the one leak: 77 bytes
 * then prints "step" and waits for a second line, then returns from main.
 */
#include "target.h"

struct node {
    struct node *next;
    char pad[40];
};

static void *early[10];
static struct node *early_head;
static void *volatile sink;

TARGET_FN void free_early(void)
{
    for (int i = 0; i < 5; i++) {
        free(early[i]);
        early[i] = NULL;
    }
}

TARGET_FN void grow_list(void)
{
    struct node *tail = early_head;
    for (int i = 0; i < 3; i++) {
        struct node *n = malloc(sizeof *n);
        memset(n, 0, sizeof *n);
        tail->next = n;
        tail = n;
    }
}

TARGET_FN void late_leak(void)
{
    char *p = malloc(77);
    memset(p, 7, 77);
    sink = p;
    sink = NULL;
}

int main(void)
{
    char line[64];
    for (int i = 0; i < 10; i++)
        early[i] = malloc(100);
    early_head = calloc(1, 64);
    wait_go();
    free_early();
    grow_list();
    late_leak();
    puts("step");
    fflush(stdout);
    if (fgets(line, sizeof line, stdin) == NULL)
        clearerr(stdin);
    return 0;
}
