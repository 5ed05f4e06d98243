// profile_cxx: CPU in a member function of a class template in a namespace,
// for instr profile's demangled names (built by tests/integration/test_profile.py
// with g++; the session fixture builds only the C targets).
//
//   profile_cxx ROUNDS     after a line on stdin, ROUNDS calls of
//                          geo::Box<unsigned long>::spin(long); prints "sum=<S>"
#include <cstdio>
#include <cstdlib>

#define TARGET_FN __attribute__((noinline, noipa, used))

namespace geo {
template <typename T> struct Box {
    TARGET_FN T spin(long n)
    {
        T acc = 1;
        for (long i = 0; i < n; i++) {
            acc = acc * 3 + 1;
            __asm__ volatile("" : : "g"(acc) : "memory");
        }
        return acc;
    }
};
}  // namespace geo

int main(int argc, char **argv)
{
    char line[64];
    long rounds = argc > 1 ? std::atol(argv[1]) : 100;
    std::puts("ready");
    std::fflush(stdout);
    if (std::fgets(line, sizeof line, stdin) == nullptr)
        std::clearerr(stdin);
    geo::Box<unsigned long> box;
    unsigned long sum = 0;
    for (long i = 0; i < rounds; i++)
        sum += box.spin(3000000);
    std::printf("sum=%lu\n", sum);
    return 0;
}
