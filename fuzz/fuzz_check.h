// Invariant checks for the fuzz targets: a broken invariant prints what broke and aborts, which
// libFuzzer reports as a crash with the input saved as a reproducer.
#ifndef PIMGATE_FUZZ_FUZZ_CHECK_H_
#define PIMGATE_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>
#include <string>

#define FUZZ_CHECK(condition, ...)                                                           \
  do {                                                                                       \
    if (!(condition)) {                                                                      \
      std::fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #condition); \
      ::pimgate::fuzz::PrintDetail(__VA_ARGS__);                                             \
      std::abort();                                                                          \
    }                                                                                        \
  } while (false)

namespace pimgate::fuzz {

inline void PrintDetail() {}
inline void PrintDetail(const std::string& detail) {
  std::fprintf(stderr, "  %s\n", detail.c_str());
}

}  // namespace pimgate::fuzz

#endif  // PIMGATE_FUZZ_FUZZ_CHECK_H_
