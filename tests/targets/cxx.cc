// cxx: C++ member functions in a namespace, nested calls, for demangled names
// in the console, JSON Lines and SQLite, globs over demangled names
// ('cxx!ns::Widget::twice*'), call-depth indentation and backtraces (built by
// the tests that use it with g++; the session fixture builds only the C targets).
//
// After "ready" and a line on stdin, for i in [0, N):
//   ns::Widget::outer(i)  calls  ns::Widget::twice(i)  (returns 2*i)
//                         then   ns::Widget::twice(long)(i)  (returns 2*i+1)
//   outer returns the sum of both: 4*i+1.
// Prints "cxx calls=<N> sum=<S>" (S = sum of outer's returns = 2*N*(N-1) + N),
// through std::cout, so that the program has libstdc++ and its __cxa_demangle;
// built with -DCXX_PLAIN it prints with printf and has no C++ runtime at all.
#include <cstdio>
#include <cstdlib>
#ifndef CXX_PLAIN
#include <iostream>
#endif

#define TARGET_FN __attribute__((noinline, noipa, used))

namespace ns {
struct Widget {
    int base;
    TARGET_FN int twice(int i) { return base + 2 * i; }
    TARGET_FN long twice(long i) { return base + 2 * i + 1; }
    TARGET_FN long outer(int i) { return twice(i) + twice(static_cast<long>(i)); }
};
}  // namespace ns

int main(int argc, char **argv)
{
    char line[64];
    long n = argc > 1 ? std::atol(argv[1]) : 3;
    std::puts("ready");
    std::fflush(stdout);
    if (std::fgets(line, sizeof line, stdin) == nullptr)
        std::clearerr(stdin);
    ns::Widget w{0};
    long sum = 0;
    for (long i = 0; i < n; i++)
        sum += w.outer(static_cast<int>(i));
#ifdef CXX_PLAIN
    std::printf("cxx calls=%ld sum=%ld\n", n, sum);
#else
    std::cout << "cxx calls=" << n << " sum=" << sum << std::endl;
#endif
    return 0;
}
