// Helpers for tests that run pimgate's command-line tools as subprocesses (pimgatectl against a
// real pimgate): run a command with its output captured, quote for /bin/sh, read JSON output,
// wait for a condition.
#ifndef PIMGATE_TESTS_TESTING_CLI_H_
#define PIMGATE_TESTS_TESTING_CLI_H_

#include <sys/wait.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

namespace pimgate::testing {

// How a command ended: its exit code (-1 when it did not exit normally) and its output.
struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// The whole file at `path` ("" when it cannot be read).
inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Single-quotes `arg` for /bin/sh.
inline std::string ShellQuote(const std::string& arg) {
  std::string quoted = "'";
  for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// `json` parsed into a `Message` (a test failure when it does not parse).
template <typename Message>
Message ParseJson(const std::string& json) {
  Message message;
  const auto status = google::protobuf::util::JsonStringToMessage(json, &message);
  EXPECT_TRUE(status.ok()) << status.ToString() << "\n" << json;
  return message;
}

// Polls `done` every 50 ms for up to `seconds`; its last answer.
inline bool WaitFor(const std::function<bool()>& done, int seconds = 30) {
  for (int i = 0; i < seconds * 20; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done();
}

// Runs the pimgatectl at `binary` with `args` (global flags included), PIMGATE_ADMIN set to
// 127.0.0.1:`admin_port` and, unless `token` is empty, PIMGATE_ADMIN_TOKEN set (never inherited).
// Its output goes through files in `scratch_dir`.
inline CommandResult RunPimgatectl(const std::string& binary, int admin_port,
                                   const std::string& token, const std::vector<std::string>& args,
                                   const std::string& scratch_dir) {
  std::string command =
      absl::StrCat("env -u PIMGATE_ADMIN_TOKEN PIMGATE_ADMIN=127.0.0.1:", admin_port, " ");
  if (!token.empty()) absl::StrAppend(&command, "PIMGATE_ADMIN_TOKEN=", ShellQuote(token), " ");
  absl::StrAppend(&command, ShellQuote(binary));
  for (const std::string& arg : args) absl::StrAppend(&command, " ", ShellQuote(arg));
  const std::string out = scratch_dir + "/ctl.out", err = scratch_dir + "/ctl.err";
  absl::StrAppend(&command, " >", ShellQuote(out), " 2>", ShellQuote(err));
  const int status = std::system(command.c_str());
  CommandResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = ReadWholeFile(out);
  result.err = ReadWholeFile(err);
  return result;
}

}  // namespace pimgate::testing

#endif  // PIMGATE_TESTS_TESTING_CLI_H_
