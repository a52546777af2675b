// pimgate_test_plugin: a real plugin process built with the C++ SDK, whose misbehaviour the
// supervisor and SDK tests choose through the environment:
//
//   TEST_PLUGIN_SPAWN_LOG=<file>     appends "<what> <pid> <steady-clock ms>" lines: "plugin" at
//                                    start, "exit" before a planned crash, "grandchild"
//   TEST_PLUGIN_ENV_DUMP=<file>      writes PIMGATE_PLUGIN_ADDRESS, PIMGATE_PLUGIN_NAME and
//                                    TEST_PLUGIN_EXTRA as KEY=VALUE lines (atomically)
//   TEST_PLUGIN_ENV_DUMP_ALL=<file>  writes its whole environment as sorted KEY=VALUE lines
//   TEST_PLUGIN_SAY=<text>           prints <text> on stdout and "err <text>" on stderr
//   TEST_PLUGIN_FAIL=<n>             writes "failure line 1" .. "failure line <n>" on stderr and
//                                    exits with status 1 at once (a plugin that cannot start)
//   TEST_PLUGIN_FAIL_ONCE=<file>     does that (n = 3) only when <file> does not exist yet, and
//                                    creates it: the first run fails, later runs serve
//   TEST_PLUGIN_LONG_LINE=<n>        prints a line of n 'x' then the line "after long line"
//   TEST_PLUGIN_CRASH_AFTER_MS=<n>   exits with TEST_PLUGIN_EXIT_CODE (default 3) after n ms
//   TEST_PLUGIN_NEVER_SERVE=1        never serves (dies on SIGTERM)
//   TEST_PLUGIN_IGNORE_SIGTERM=1     serves health only, ignores SIGTERM (needs SIGKILL)
//   TEST_PLUGIN_GRANDCHILD=1         forks a helper that ignores SIGTERM and sleeps forever
//
//   TEST_PLUGIN_LAZY=1               serves a DeliveryHandler (sdk::Delivery) instead of a Handler
//   TEST_PLUGIN_RECORD=<file>        appends "<sequence> <type> <data fields>" per handler call
//                                    (data fields: of the event's data, "-" for test.header events,
//                                    whose data a DeliveryHandler does not ask for)
//
// Handler (by event type): test.ok → OK, test.retry → RETRY "asked to retry", test.reject →
// REJECT "asked to reject", test.throw → throws "handler exploded", test.sleep → sleeps
// resource_id milliseconds then OK.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "sdk/cpp/pimgate_sdk.h"

extern char** environ;

namespace {

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

int EnvInt(const char* name, int fallback) {
  int value = 0;
  return absl::SimpleAtoi(Env(name), &value) ? value : fallback;
}

void AppendLine(const std::string& file, const std::string& line) {
  const int fd = open(file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  const std::string text = line + "\n";
  [[maybe_unused]] ssize_t n = write(fd, text.data(), text.size());
  close(fd);
}

// "<what> <pid> <ms>": steady_clock is CLOCK_MONOTONIC, comparable with the test's clock.
void LogSpawnEvent(const std::string& file, const char* what, pid_t pid) {
  if (file.empty()) return;
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now().time_since_epoch());
  AppendLine(file, absl::StrCat(what, " ", pid, " ", now.count()));
}

void WriteAtomically(const std::string& file, const std::string& text) {
  const std::string tmp = file + ".tmp";
  if (FILE* f = std::fopen(tmp.c_str(), "w")) {
    std::fputs(text.c_str(), f);
    std::fclose(f);
    std::rename(tmp.c_str(), file.c_str());
  }
}

[[noreturn]] void SleepForever() {
  for (;;) pause();
}

// Always SERVING (synchronous API: the simplest service there is).
class AlwaysServing final : public grpc::health::v1::Health::Service {
  grpc::Status Check(grpc::ServerContext* context,
                     const grpc::health::v1::HealthCheckRequest* request,
                     grpc::health::v1::HealthCheckResponse* response) override {
    response->set_status(grpc::health::v1::HealthCheckResponse::SERVING);
    return grpc::Status::OK;
  }
};

// Serves only grpc.health.v1 and never reacts to SIGTERM: a hung plugin.
int ServeHealthIgnoringSigterm() {
  signal(SIGTERM, SIG_IGN);
  AlwaysServing health;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(Env("PIMGATE_PLUGIN_ADDRESS"), grpc::InsecureServerCredentials());
  builder.RegisterService(&health);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) return 1;
  SleepForever();
}

// The answer to `event`, by its type (see the top of this file).
pimgate::sdk::Result Answer(const pimgate::v1::Event& event) {
  const std::string& type = event.type();
  if (type == "test.retry") return pimgate::sdk::Result::Retry("asked to retry");
  if (type == "test.reject") return pimgate::sdk::Result::Reject("asked to reject");
  if (type == "test.throw") throw std::runtime_error("handler exploded");
  if (type == "test.sleep") {
    int ms = 0;
    if (absl::SimpleAtoi(event.resource_id(), &ms)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    }
  }
  return pimgate::sdk::Result::Ok();
}

}  // namespace

int main() {
  const std::string spawn_log = Env("TEST_PLUGIN_SPAWN_LOG");
  LogSpawnEvent(spawn_log, "plugin", getpid());
  if (const std::string dump = Env("TEST_PLUGIN_ENV_DUMP"); !dump.empty()) {
    WriteAtomically(dump, absl::StrCat("PIMGATE_PLUGIN_ADDRESS=", Env("PIMGATE_PLUGIN_ADDRESS"),
                                       "\nPIMGATE_PLUGIN_NAME=", Env("PIMGATE_PLUGIN_NAME"),
                                       "\nTEST_PLUGIN_EXTRA=", Env("TEST_PLUGIN_EXTRA"), "\n"));
  }
  if (const std::string dump = Env("TEST_PLUGIN_ENV_DUMP_ALL"); !dump.empty()) {
    std::vector<std::string> entries;
    for (char** entry = environ; *entry != nullptr; ++entry) entries.emplace_back(*entry);
    std::sort(entries.begin(), entries.end());
    std::string text;
    for (const std::string& entry : entries) absl::StrAppend(&text, entry, "\n");
    WriteAtomically(dump, text);
  }
  int fail_lines = EnvInt("TEST_PLUGIN_FAIL", 0);
  if (const std::string once = Env("TEST_PLUGIN_FAIL_ONCE"); !once.empty()) {
    if (access(once.c_str(), F_OK) != 0) {
      AppendLine(once, "failed once");
      fail_lines = 3;
    }
  }
  if (fail_lines > 0) {
    for (int i = 1; i <= fail_lines; ++i) std::fprintf(stderr, "failure line %d\n", i);
    return 1;
  }
  if (const std::string say = Env("TEST_PLUGIN_SAY"); !say.empty()) {
    std::printf("%s\n", say.c_str());
    std::fflush(stdout);
    std::fprintf(stderr, "err %s\n", say.c_str());
  }
  if (const int length = EnvInt("TEST_PLUGIN_LONG_LINE", 0); length > 0) {
    std::printf("%s\nafter long line\n", std::string(length, 'x').c_str());
    std::fflush(stdout);
  }
  if (Env("TEST_PLUGIN_GRANDCHILD") == "1") {
    const pid_t helper = fork();
    if (helper == 0) {
      signal(SIGTERM, SIG_IGN);
      SleepForever();
    }
    LogSpawnEvent(spawn_log, "grandchild", helper);
  }
  if (const int crash_after = EnvInt("TEST_PLUGIN_CRASH_AFTER_MS", -1); crash_after >= 0) {
    const int code = EnvInt("TEST_PLUGIN_EXIT_CODE", 3);
    // Created with the stop signals blocked, like every thread started before sdk::Run should
    // be: otherwise SIGTERM could land here and kill the process with the default action.
    sigset_t stop_signals, previous;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, &previous);
    std::thread([crash_after, code, spawn_log] {
      std::this_thread::sleep_for(std::chrono::milliseconds(crash_after));
      LogSpawnEvent(spawn_log, "exit", getpid());
      std::_Exit(code);
    }).detach();
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  }
  if (Env("TEST_PLUGIN_NEVER_SERVE") == "1") SleepForever();
  if (Env("TEST_PLUGIN_IGNORE_SIGTERM") == "1") return ServeHealthIgnoringSigterm();

  pimgate::sdk::RunOptions options;
  options.concurrency = EnvInt("TEST_PLUGIN_CONCURRENCY", 4);
  const std::string record = Env("TEST_PLUGIN_RECORD");
  if (Env("TEST_PLUGIN_LAZY") == "1") {
    return pimgate::sdk::Run(
        [&record](const pimgate::sdk::Delivery& delivery) {
          const pimgate::v1::Event& event = delivery.event();
          if (!record.empty()) {
            AppendLine(record, absl::StrCat(event.sequence(), " ", event.type(), " ",
                                            event.type() == "test.header"
                                                ? "-"
                                                : absl::StrCat(delivery.data().fields_size())));
          }
          return Answer(event);
        },
        options);
  }
  return pimgate::sdk::Run(
      [&record](const pimgate::v1::Event& event, uint32_t attempt) {
        if (!record.empty()) {
          AppendLine(record, absl::StrCat(event.sequence(), " ", event.type(), " ",
                                          event.data().fields_size()));
        }
        return Answer(event);
      },
      options);
}
