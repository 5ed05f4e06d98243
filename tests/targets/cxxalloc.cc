// cxxalloc: C++ operator new/delete, built by tests/integration/test_mem.py with g++
// (the session fixture builds only the C targets).
//
// After "ready" and a line on stdin:
//   churn()       100 x new Node / delete, 10 x new int[8] / delete[],
//                 a std::vector<int> grown to 1000 elements and dropped
//   leak_one()    new Node (32 bytes), dropped                  operator new
//   leak_array()  new int[10] (40 bytes), dropped               operator new[]
//   leak_nothrow() new (std::nothrow) char[24], dropped         operator new[]
// Leaked in total: 96 bytes in 3 blocks.
#include <cstdio>
#include <cstring>
#include <new>
#include <vector>

#define TARGET_FN __attribute__((noinline, noipa, used))

struct Node {
    Node *next;
    char pad[24];
};

static void *volatile sink;

TARGET_FN void churn()
{
    for (int i = 0; i < 100; i++) {
        Node *n = new Node();
        sink = n;
        delete n;
    }
    for (int i = 0; i < 10; i++) {
        int *a = new int[8]();
        sink = a;
        delete[] a;
    }
    std::vector<int> v;
    for (int i = 0; i < 1000; i++)
        v.push_back(i);
    sink = v.data();
}

TARGET_FN void leak_one()
{
    Node *n = new Node();
    sink = n;
    sink = nullptr;
}

TARGET_FN void leak_array()
{
    int *a = new int[10]();
    sink = a;
    sink = nullptr;
}

TARGET_FN void leak_nothrow()
{
    char *c = new (std::nothrow) char[24];
    std::memset(c, 1, 24);
    sink = c;
    sink = nullptr;
}

int main()
{
    char line[64];
    std::fputs("ready\n", stdout);
    std::fflush(stdout);
    if (std::fgets(line, sizeof line, stdin) == nullptr)
        std::clearerr(stdin);
    churn();
    leak_one();
    leak_array();
    leak_nothrow();
    return 0;
}
