// pimgatectl's exit codes: part of its interface, scripts rely on them (docs/operations.md).
#ifndef PIMGATE_CTL_EXIT_CODES_H_
#define PIMGATE_CTL_EXIT_CODES_H_

namespace pimgate::ctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;  // pimgate answered: the call failed
inline constexpr int kExitUsage = 2;  // the command line is wrong: nothing was sent
inline constexpr int kExitUnauthenticated = 3;
inline constexpr int kExitNotFound = 4;
inline constexpr int kExitUnavailable = 5;  // pimgate did not answer
inline constexpr int kExitProblems = 6;     // a check ran and found problems (platform check)

}  // namespace pimgate::ctl

#endif  // PIMGATE_CTL_EXIT_CODES_H_
