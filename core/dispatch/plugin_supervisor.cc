// PluginSupervisor: one monitor thread per launched plugin runs launch → wait for SERVING → wait
// for exit → backoff, until Stop(). The monitor thread is also the one that forks, because
// PR_SET_PDEATHSIG fires when the forking *thread* exits, not the process.
#include "core/dispatch/plugin_supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "spdlog/spdlog.h"

extern char** environ;

namespace pimgate {
namespace {

// Longest line of plugin output forwarded to the log; the rest of the line is dropped. Bounds
// the memory one chatty plugin can make pimgate hold.
constexpr size_t kMaxLineBytes = size_t{8} * 1024;
// Health polling while a plugin starts: one Check at most this long, then a pause.
constexpr absl::Duration kHealthCheckDeadline = absl::Milliseconds(250);
constexpr absl::Duration kHealthPollInterval = absl::Milliseconds(100);
// How often a monitor looks for the exit of a running plugin (it wakes at once for Stop()).
constexpr absl::Duration kExitPollInterval = absl::Milliseconds(50);
// How often a stopping monitor looks whether SIGTERM has taken effect.
constexpr absl::Duration kStopPollInterval = absl::Milliseconds(10);
// Exit code of a child whose execve failed (as in shells); the errno goes up a pipe.
constexpr int kExecFailedExitCode = 127;
// The service whose health is polled: "" is the server as a whole, which every plugin SDK serves.
constexpr char kHealthService[] = "";

std::string ErrnoText(const std::string& what, int error) {
  return absl::StrCat(what, ": ", std::strerror(error));
}

// Wait status of a child whose status was collected by someone else (a stray waitpid(-1)).
constexpr int kStatusLost = -1;

std::string DescribeWaitStatus(int status) {
  if (status == kStatusLost) return "exited (status collected elsewhere)";
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("killed by signal ", WTERMSIG(status));
  return absl::StrCat("ended with wait status ", status);
}

std::string FormatMillis(std::chrono::milliseconds duration) {
  return absl::FormatDuration(absl::FromChrono(duration));
}

// True once `pid` (our child) has exited; it stays a zombie, so its pid and process group id
// cannot be reused until Reap(). ECHILD (someone else reaped it) also counts as exited, or the
// monitor would wait for it forever.
bool HasExited(pid_t pid) {
  siginfo_t info{};
  if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    return errno == ECHILD;
  }
  return info.si_pid == pid;
}

// Kills what is left of the child's process group (helpers it forked), then collects the
// child's exit status.
int Reap(pid_t pid) {
  kill(-pid, SIGKILL);
  int status = 0;
  for (;;) {
    if (waitpid(pid, &status, 0) == pid) return status;
    if (errno != EINTR) return kStatusLost;
  }
}

// execvp's PATH lookup, done before fork so that a missing command is reported as such.
absl::StatusOr<std::string> ResolveExecutable(const std::string& name, const std::string& path) {
  if (name.find('/') != std::string::npos) return name;
  const std::string search = path.empty() ? "/usr/local/bin:/usr/bin:/bin" : path;
  size_t start = 0;
  while (start <= search.size()) {
    size_t end = search.find(':', start);
    if (end == std::string::npos) end = search.size();
    std::string dir = search.substr(start, end - start);
    if (dir.empty()) dir = ".";
    const std::string candidate = absl::StrCat(dir, "/", name);
    struct stat st;
    if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    start = end + 1;
  }
  return absl::NotFoundError(absl::StrCat("command not found in PATH: ", name));
}

bool InBaseEnvironment(std::string_view name) {
  if (name.substr(0, std::strlen(kPluginBaseEnvironmentPrefix)) == kPluginBaseEnvironmentPrefix) {
    return true;
  }
  for (const char* base : kPluginBaseEnvironment) {
    if (name == base) return true;
  }
  return false;
}

std::string EnvValue(const std::vector<std::string>& env, const std::string& key) {
  const std::string prefix = key + "=";
  for (const std::string& entry : env) {
    if (entry.compare(0, prefix.size(), prefix) == 0) return entry.substr(prefix.size());
  }
  return "";
}

// A running child: its pid (also its process group id) and the read ends of its stdout and
// stderr.
struct Child {
  pid_t pid = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
};

void CloseFd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

// Forks and execs `path`. Returns once execve succeeded (or with its errno). Must be called on a
// thread that outlives the child: PR_SET_PDEATHSIG is tied to it.
absl::StatusOr<Child> Spawn(const std::string& path, const std::vector<std::string>& argv,
                            const std::vector<std::string>& env) {
  // Everything the child needs is prepared here: between fork and exec only async-signal-safe
  // calls are allowed (no allocation, no locks).
  std::vector<char*> argv_ptrs;
  argv_ptrs.reserve(argv.size() + 1);
  for (const std::string& arg : argv) argv_ptrs.push_back(const_cast<char*>(arg.c_str()));
  argv_ptrs.push_back(nullptr);
  std::vector<char*> env_ptrs;
  env_ptrs.reserve(env.size() + 1);
  for (const std::string& entry : env) env_ptrs.push_back(const_cast<char*>(entry.c_str()));
  env_ptrs.push_back(nullptr);
  rlimit fd_limit{};
  const int max_fd = getrlimit(RLIMIT_NOFILE, &fd_limit) == 0 && fd_limit.rlim_cur != RLIM_INFINITY
                         ? static_cast<int>(std::min<rlim_t>(fd_limit.rlim_cur, 1 << 20))
                         : 1 << 16;

  int out[2] = {-1, -1};
  int err[2] = {-1, -1};
  int exec_status[2] = {-1, -1};
  const int dev_null = open("/dev/null", O_RDONLY | O_CLOEXEC);
  auto close_all = [&] {
    for (int* fd : {&out[0], &out[1], &err[0], &err[1], &exec_status[0], &exec_status[1]}) {
      CloseFd(*fd);
    }
    if (dev_null >= 0) close(dev_null);
  };
  if (dev_null < 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0 ||
      pipe2(exec_status, O_CLOEXEC) != 0) {
    const int error = errno;
    close_all();
    return absl::InternalError(ErrnoText("cannot create pipes", error));
  }

  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    const int error = errno;
    close_all();
    return absl::ResourceExhaustedError(ErrnoText("fork", error));
  }
  if (pid == 0) {
    // Child. SIGKILL when the forking thread (the monitor) dies, e.g. pimgate is SIGKILLed;
    // the getppid() check covers a parent that died before prctl took effect.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(kExecFailedExitCode);
    // Own process group, so that Stop() reaches helpers the plugin forks.
    setpgid(0, 0);
    // Dispositions set to SIG_IGN (pimgate ignores SIGPIPE) and the blocked mask survive exec.
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, &default_action, nullptr);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    dup2(dev_null, STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    // Keep only 0-2 and the exec status pipe (moved to fd 3, close-on-exec).
    dup2(exec_status[1], 3);
    fcntl(3, F_SETFD, FD_CLOEXEC);
    if (close_range(4, ~0U, 0) != 0) {
      for (int fd = 4; fd < max_fd; ++fd) close(fd);
    }
    execve(path.c_str(), argv_ptrs.data(), env_ptrs.data());
    const int error = errno;
    [[maybe_unused]] ssize_t ignored = write(3, &error, sizeof(error));
    _exit(kExecFailedExitCode);
  }

  // Parent.
  CloseFd(out[1]);
  CloseFd(err[1]);
  CloseFd(exec_status[1]);
  close(dev_null);
  // EOF: execve succeeded (the pipe was close-on-exec). An int: the child's execve errno.
  int exec_errno = 0;
  ssize_t n;
  while ((n = read(exec_status[0], &exec_errno, sizeof(exec_errno))) < 0 && errno == EINTR) {
  }
  CloseFd(exec_status[0]);
  if (n > 0) {
    Reap(pid);
    CloseFd(out[0]);
    CloseFd(err[0]);
    return absl::FailedPreconditionError(ErrnoText("exec " + path, exec_errno));
  }
  return Child{pid, out[0], err[0]};
}

// Splits a byte stream into lines of at most kMaxLineBytes and hands each to `emit`.
class LineSplitter {
 public:
  explicit LineSplitter(std::function<void(const std::string&)> emit) : emit_(std::move(emit)) {}

  void Feed(const char* data, size_t size) {
    while (size > 0) {
      const char* newline = static_cast<const char*>(std::memchr(data, '\n', size));
      const size_t take = newline != nullptr ? static_cast<size_t>(newline - data) : size;
      if (!discarding_) {
        const size_t room = kMaxLineBytes - line_.size();
        if (take <= room) {
          line_.append(data, take);
        } else {
          // Emit now rather than hold an endless line; skip the rest of it.
          line_.append(data, room);
          line_ += " [line truncated]";
          EmitLine();
          discarding_ = true;
        }
      }
      if (newline == nullptr) return;
      if (!discarding_) EmitLine();
      discarding_ = false;
      data += take + 1;
      size -= take + 1;
    }
  }

  // Emits an unterminated last line.
  void Flush() {
    if (!discarding_) EmitLine();
    discarding_ = false;
  }

 private:
  void EmitLine() {
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    if (!line_.empty()) emit_(line_);
    line_.clear();
  }

  std::function<void(const std::string&)> emit_;
  std::string line_;
  bool discarding_ = false;
};

// Forwards a child's stdout and stderr to pimgate's log ("[plugin <name>] <line>") from its own
// thread, so that a child never blocks on a full pipe. Owns both fds.
class OutputForwarder {
 public:
  // `on_stderr` also gets each stderr line (on the forwarder's thread).
  OutputForwarder(std::string plugin, int stdout_fd, int stderr_fd,
                  std::function<void(const std::string&)> on_stderr)
      : plugin_(std::move(plugin)),
        on_stderr_(std::move(on_stderr)),
        fds_{stdout_fd, stderr_fd},
        wake_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    for (int fd : fds_) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    thread_ = std::thread([this] { Loop(); });
  }

  // Forwards what the child already wrote, then ends the thread. Call once the child is dead:
  // a helper that escaped its process group could otherwise hold the pipes open forever.
  ~OutputForwarder() {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t ignored = write(wake_fd_, &one, sizeof(one));
    thread_.join();
    for (int& fd : fds_) CloseFd(fd);
    close(wake_fd_);
  }

 private:
  void Loop() {
    LineSplitter out(
        [this](const std::string& line) { spdlog::info("[plugin {}] {}", plugin_, line); });
    // Warning level: what a plugin writes to stderr is mostly why it fails (a traceback, a
    // missing module), which must show at the default log level.
    LineSplitter err([this](const std::string& line) {
      spdlog::warn("[plugin {}] [stderr] {}", plugin_, line);
      on_stderr_(line);
    });
    LineSplitter* splitters[2] = {&out, &err};
    bool open[2] = {true, true};
    char buffer[4096];
    // Reads until EAGAIN; false at EOF or error.
    auto drain = [&](int i) {
      for (;;) {
        const ssize_t n = read(fds_[i], buffer, sizeof(buffer));
        if (n > 0) {
          splitters[i]->Feed(buffer, static_cast<size_t>(n));
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
      }
    };
    bool woken = false;
    while (!woken && (open[0] || open[1])) {
      pollfd fds[3] = {{open[0] ? fds_[0] : -1, POLLIN, 0},
                       {open[1] ? fds_[1] : -1, POLLIN, 0},
                       {wake_fd_, POLLIN, 0}};
      if (poll(fds, 3, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      for (int i = 0; i < 2; ++i) {
        if (open[i] && fds[i].revents != 0) open[i] = drain(i);
      }
      woken = fds[2].revents != 0;
    }
    // The child is gone: what it wrote is in the pipes now.
    for (int i = 0; i < 2; ++i) {
      if (open[i]) drain(i);
      splitters[i]->Flush();
    }
  }

  const std::string plugin_;
  const std::function<void(const std::string&)> on_stderr_;
  int fds_[2];
  const int wake_fd_;
  std::thread thread_;
};

// Asks a plugin's grpc.health.v1 service whether it is SERVING.
class HealthProbe {
 public:
  explicit HealthProbe(const std::string& address) {
    grpc::ChannelArguments args;
    // Its own subchannel with short reconnect backoff: the socket appears only once the plugin
    // binds, and gRPC's default backoff (1 s and growing) would delay SERVING by seconds.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
    stub_ = grpc::health::v1::Health::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  }

  bool Serving(absl::Duration timeout) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    context.set_wait_for_ready(true);
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(kHealthService);
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = stub_->Check(&context, request, &response);
    return status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  }

 private:
  std::unique_ptr<grpc::health::v1::Health::Stub> stub_;
};

// Why one run of a plugin process ended.
struct RunEnd {
  bool stopped = false;    // ended by Stop()
  bool restarted = false;  // ended by Restart()
  std::string error;       // otherwise: "exited with status 3", ...
  absl::Duration served;   // time between SERVING and the end (zero if never SERVING)
};

}  // namespace

const char* PluginStateName(PluginState state) {
  switch (state) {
    case PluginState::kStarting:
      return "starting";
    case PluginState::kServing:
      return "serving";
    case PluginState::kBackoff:
      return "backoff";
    case PluginState::kStopped:
      return "stopped";
    case PluginState::kExternal:
      return "external";
  }
  return "unknown";
}

std::vector<std::string> PluginEnvironment(const PluginConfig& config, const std::string& address,
                                           const std::vector<std::string>& inherited) {
  std::map<std::string, std::string> merged;
  for (std::string_view entry : inherited) {
    const size_t eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    const std::string name(entry.substr(0, eq));
    if (config.inherit_env_all || InBaseEnvironment(name) ||
        std::find(config.inherit_env.begin(), config.inherit_env.end(), name) !=
            config.inherit_env.end()) {
      merged[name] = std::string(entry.substr(eq + 1));
    }
  }
  for (const auto& [key, value] : config.env) merged[key] = value;
  merged["PIMGATE_PLUGIN_ADDRESS"] = address;
  merged["PIMGATE_PLUGIN_NAME"] = config.name;
  std::vector<std::string> env;
  env.reserve(merged.size());
  for (const auto& [key, value] : merged) env.push_back(absl::StrCat(key, "=", value));
  return env;
}

class PluginSupervisor::Impl {
 public:
  // One configured plugin. Everything but what `mu` guards is fixed at Create.
  struct Plugin {
    PluginConfig config;
    std::string address;
    std::string socket_path;       // launched plugins only
    std::vector<std::string> env;  // launched plugins only
    std::thread monitor;           // started by Start(), joined by Stop()
    mutable absl::Mutex mu;
    PluginStatus status ABSL_GUARDED_BY(mu);
    // The current run's last stderr lines; they become status.last_stderr when the run fails.
    std::deque<std::string> run_stderr ABSL_GUARDED_BY(mu);
    // Processes launched so far (Restart() waits for a later one).
    uint64_t launches ABSL_GUARDED_BY(mu) = 0;
  };

  explicit Impl(std::vector<std::unique_ptr<Plugin>> plugins) : plugins_(std::move(plugins)) {}
  ~Impl() { Stop(); }

  absl::Status Start() {
    absl::MutexLock lock(&mu_);
    if (started_ || stopping_) {
      return absl::FailedPreconditionError("PluginSupervisor::Start called twice or after Stop");
    }
    started_ = true;
    for (const std::unique_ptr<Plugin>& plugin : plugins_) {
      if (plugin->config.command.empty()) continue;
      plugin->monitor = std::thread([this, p = plugin.get()] { Monitor(*p); });
    }
    return absl::OkStatus();
  }

  void Stop() {
    absl::MutexLock stop_lock(&stop_mu_);
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    // Every monitor wakes at once and stops its own plugin, so the plugins stop in parallel.
    for (const std::unique_ptr<Plugin>& plugin : plugins_) {
      if (plugin->monitor.joinable()) plugin->monitor.join();
    }
  }

  absl::StatusOr<pid_t> Restart(const std::string& name) {
    Plugin* plugin = Find(name);
    if (plugin == nullptr) return absl::NotFoundError(absl::StrCat("no plugin named ", name));
    const absl::Time deadline = absl::Now() + absl::FromChrono(plugin->config.stop_timeout) +
                                absl::FromChrono(plugin->config.start_timeout) + kRestartSlack;
    if (plugin->config.command.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("plugin ", name, " runs outside pimgate (address ", plugin->address,
                       "): restart it with the process manager that runs it"));
    }
    uint64_t launches_before = 0;
    {
      absl::MutexLock lock(&plugin->mu);
      launches_before = plugin->launches;
    }
    {
      absl::MutexLock lock(&mu_);
      if (!started_ || stopping_) {
        return absl::FailedPreconditionError(
            absl::StrCat("plugin ", name, " cannot be restarted: its supervisor is not running"));
      }
      restart_requests_.insert(name);
    }
    spdlog::info("plugin {}: restart requested", name);
    // The new run is over its start once it is SERVING or has failed (backoff).
    absl::MutexLock lock(&plugin->mu);
    const auto started = [plugin, launches_before]() ABSL_SHARED_LOCKS_REQUIRED(plugin->mu) {
      return plugin->launches > launches_before && (plugin->status.state == PluginState::kServing ||
                                                    plugin->status.state == PluginState::kBackoff ||
                                                    plugin->status.state == PluginState::kStopped);
    };
    if (!plugin->mu.AwaitWithDeadline(absl::Condition(&started), deadline)) {
      return absl::DeadlineExceededError(
          absl::StrCat("plugin ", name, " was restarted but is not SERVING yet (state ",
                       PluginStateName(plugin->status.state), "); see pimgatectl plugins"));
    }
    if (plugin->status.state != PluginState::kServing) {
      std::string message =
          absl::StrCat("plugin ", name, " was stopped but the new process did not start: ",
                       plugin->status.last_error.empty() ? PluginStateName(plugin->status.state)
                                                         : plugin->status.last_error);
      if (!plugin->status.last_stderr.empty()) {
        absl::StrAppend(&message, "; its last stderr lines:\n",
                        absl::StrJoin(plugin->status.last_stderr, "\n"));
      }
      return absl::FailedPreconditionError(message);
    }
    return plugin->status.pid;
  }

  std::string AddressOf(const std::string& name) const {
    const Plugin* plugin = Find(name);
    return plugin == nullptr ? "" : plugin->address;
  }

  std::vector<PluginStatus> Status() const {
    std::vector<PluginStatus> statuses;
    for (const std::unique_ptr<Plugin>& plugin : plugins_) {
      absl::MutexLock lock(&plugin->mu);
      statuses.push_back(plugin->status);
    }
    return statuses;
  }

 private:
  Plugin* Find(const std::string& name) const {
    for (const std::unique_ptr<Plugin>& plugin : plugins_) {
      if (plugin->config.name == name) return plugin.get();
    }
    return nullptr;
  }

  // Launch, supervise and restart one plugin until Stop(). Runs on the plugin's monitor thread.
  void Monitor(Plugin& plugin) {
    const PluginConfig& config = plugin.config;
    const absl::Duration initial_backoff = absl::FromChrono(config.restart.initial_backoff);
    const absl::Duration max_backoff =
        std::max(initial_backoff, absl::FromChrono(config.restart.max_backoff));
    const absl::Duration reset_after = absl::FromChrono(config.restart.reset_after);
    absl::Duration backoff = initial_backoff;
    while (!StopRequested()) {
      RunEnd end = LaunchAndSupervise(plugin);
      if (end.stopped) break;
      if (end.restarted) {
        // Asked for: not a crash, so no backoff and no count; a failing plugin starts afresh.
        backoff = initial_backoff;
        continue;
      }
      if (end.served >= reset_after) backoff = initial_backoff;
      {
        absl::MutexLock lock(&plugin.mu);
        plugin.status.state = PluginState::kBackoff;
        plugin.status.pid = 0;
        plugin.status.last_error = end.error;
        plugin.status.last_stderr.assign(plugin.run_stderr.begin(), plugin.run_stderr.end());
      }
      spdlog::warn("plugin {} {}; restarting in {}", config.name, end.error,
                   absl::FormatDuration(backoff));
      // A restart request ends the backoff early: the operator has fixed something.
      if (WaitForStopOrRestart(config.name, backoff)) break;
      if (RestartRequested(config.name)) {
        backoff = initial_backoff;
        continue;
      }
      backoff = std::min(backoff * 2, max_backoff);
      absl::MutexLock lock(&plugin.mu);
      ++plugin.status.restarts;
    }
    {
      absl::MutexLock lock(&plugin.mu);
      plugin.status.state = PluginState::kStopped;
      plugin.status.pid = 0;
    }
    unlink(plugin.socket_path.c_str());
  }

  // One run of the plugin process: launch, wait for SERVING, wait for its end.
  RunEnd LaunchAndSupervise(Plugin& plugin) {
    const PluginConfig& config = plugin.config;
    {
      // This launch answers every restart asked for until now.
      absl::MutexLock lock(&mu_);
      restart_requests_.erase(config.name);
    }
    {
      absl::MutexLock lock(&plugin.mu);
      plugin.status.state = PluginState::kStarting;
      plugin.run_stderr.clear();
    }
    // A socket left by the previous run would answer health checks with "connection refused"
    // at best; the plugin's own stale-socket check would also see it.
    unlink(plugin.socket_path.c_str());
    absl::StatusOr<std::string> path =
        ResolveExecutable(config.command.front(), EnvValue(plugin.env, "PATH"));
    absl::StatusOr<Child> child =
        path.ok() ? Spawn(*path, config.command, plugin.env) : absl::StatusOr<Child>(path.status());
    if (!child.ok()) {
      absl::MutexLock lock(&plugin.mu);
      ++plugin.launches;
      return RunEnd{false, false, std::string(child.status().message()), {}};
    }
    const pid_t pid = child->pid;
    {
      absl::MutexLock lock(&plugin.mu);
      plugin.status.pid = pid;
      ++plugin.launches;
    }
    spdlog::info("plugin {} launched (pid {}): {}", config.name, pid,
                 absl::StrJoin(config.command, " "));
    // Destroyed (flushing the last output) only after the child is reaped, below.
    OutputForwarder output(
        config.name, child->stdout_fd, child->stderr_fd, [&plugin](const std::string& line) {
          absl::MutexLock lock(&plugin.mu);
          plugin.run_stderr.push_back(
              line.size() <= kStderrTailLineBytes ? line : line.substr(0, kStderrTailLineBytes));
          if (plugin.run_stderr.size() > kStderrTailLines) {
            plugin.run_stderr.pop_front();
          }
        });
    return Supervise(plugin, pid);
  }

  RunEnd Supervise(Plugin& plugin, pid_t pid) {
    const PluginConfig& config = plugin.config;
    const absl::Time start_deadline = absl::Now() + absl::FromChrono(config.start_timeout);
    {
      // Scoped: an idle connection kept open would make the plugin's own graceful shutdown
      // wait for it.
      HealthProbe probe(plugin.address);
      for (;;) {
        if (StopRequested()) return Terminate(plugin, pid, /*restart=*/false);
        if (RestartRequested(config.name)) return Terminate(plugin, pid, /*restart=*/true);
        if (HasExited(pid)) return Ended(pid, {});
        const absl::Duration left = start_deadline - absl::Now();
        if (left <= absl::ZeroDuration()) {
          Reap(pid);  // SIGKILLs the group
          return RunEnd{false,
                        false,
                        absl::StrCat("not SERVING in ", FormatMillis(config.start_timeout)),
                        {}};
        }
        if (probe.Serving(std::min(left, kHealthCheckDeadline))) break;
        WaitForStopOrRestart(config.name,
                             std::min(start_deadline - absl::Now(), kHealthPollInterval));
      }
    }
    const absl::Time serving_since = absl::Now();
    {
      absl::MutexLock lock(&plugin.mu);
      plugin.status.state = PluginState::kServing;
    }
    spdlog::info("plugin {} SERVING on {} (pid {})", config.name, plugin.address, pid);
    // A run that has served for restart.reset_after is stable: the error of an earlier run is
    // over, and showing it would send an operator after a problem that no longer exists. Until
    // then it stays, so that a plugin that crashes every few seconds keeps showing why.
    const absl::Time stable_at = serving_since + absl::FromChrono(config.restart.reset_after);
    bool cleared = false;
    for (;;) {
      if (WaitForStopOrRestart(config.name, kExitPollInterval)) {
        return Terminate(plugin, pid, /*restart=*/false);
      }
      if (RestartRequested(config.name)) return Terminate(plugin, pid, /*restart=*/true);
      if (HasExited(pid)) return Ended(pid, absl::Now() - serving_since);
      if (!cleared && absl::Now() >= stable_at) {
        absl::MutexLock lock(&plugin.mu);
        plugin.status.last_error.clear();
        plugin.status.last_stderr.clear();
        cleared = true;
      }
    }
  }

  // A run that ended on its own: collects the exit status.
  static RunEnd Ended(pid_t pid, absl::Duration served) {
    return RunEnd{false, false, DescribeWaitStatus(Reap(pid)), served};
  }

  // SIGTERM to the process group, SIGKILL after stop_timeout.
  RunEnd Terminate(Plugin& plugin, pid_t pid, bool restart) {
    const PluginConfig& config = plugin.config;
    kill(-pid, SIGTERM);
    const absl::Time deadline = absl::Now() + absl::FromChrono(config.stop_timeout);
    bool exited = HasExited(pid);
    while (!exited && absl::Now() < deadline) {
      absl::SleepFor(kStopPollInterval);
      exited = HasExited(pid);
    }
    if (!exited) {
      spdlog::warn("plugin {} (pid {}) still running {} after SIGTERM; sending SIGKILL",
                   config.name, pid, FormatMillis(config.stop_timeout));
    }
    const int status = Reap(pid);
    spdlog::info("plugin {} stopped (pid {} {}){}", config.name, pid, DescribeWaitStatus(status),
                 restart ? "; starting it again (restart requested)" : "");
    {
      absl::MutexLock lock(&plugin.mu);
      plugin.status.pid = 0;
    }
    return RunEnd{!restart, restart, "", {}};
  }

  bool StopRequested() {
    absl::MutexLock lock(&mu_);
    return stopping_;
  }

  bool RestartRequested(const std::string& name) {
    absl::MutexLock lock(&mu_);
    return !stopping_ && restart_requests_.contains(name);
  }

  // Sleeps up to `timeout`, or less when Stop() or Restart(`name`) is called. True: Stop().
  bool WaitForStopOrRestart(const std::string& name, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    const auto woken = [this, &name]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || restart_requests_.contains(name);
    };
    mu_.AwaitWithTimeout(absl::Condition(&woken), timeout);
    return stopping_;
  }

  const std::vector<std::unique_ptr<Plugin>> plugins_;
  absl::Mutex stop_mu_;  // serializes Stop(): joining is not idempotent by itself
  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Plugins whose process must be restarted (Restart()), until their monitor launches anew.
  std::set<std::string> restart_requests_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<PluginSupervisor>> PluginSupervisor::Create(
    const std::vector<PluginConfig>& plugins, const std::string& runtime_dir) {
  std::vector<std::unique_ptr<Impl::Plugin>> entries;
  std::set<std::string> names;
  bool launches = false;
  for (const PluginConfig& config : plugins) {
    if (config.name.empty() || config.name.find('/') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("plugin name must be non-empty and without '/': \"", config.name, "\""));
    }
    if (!names.insert(config.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate plugin name: ", config.name));
    }
    if (config.command.empty() == config.address.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("plugin ", config.name, ": exactly one of command and address is needed"));
    }
    auto entry = std::make_unique<Impl::Plugin>();
    entry->config = config;
    PluginStatus status;
    status.name = config.name;
    if (config.command.empty()) {
      entry->address = config.address;
      status.state = PluginState::kExternal;
    } else {
      launches = true;
      entry->socket_path = runtime_dir + "/" + config.name + ".sock";
      if (entry->socket_path.size() >= sizeof(sockaddr_un{}.sun_path)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "plugin ", config.name, ": socket path ", entry->socket_path, " is longer than ",
            sizeof(sockaddr_un{}.sun_path) - 1, " bytes; use a shorter runtime directory"));
      }
      entry->address = "unix:" + entry->socket_path;
      std::vector<std::string> inherited;
      for (char** variable = environ; variable != nullptr && *variable != nullptr; ++variable) {
        inherited.emplace_back(*variable);
      }
      entry->env = PluginEnvironment(config, entry->address, inherited);
      status.state = PluginState::kStopped;
    }
    status.address = entry->address;
    {
      absl::MutexLock lock(&entry->mu);
      entry->status = std::move(status);
    }
    entries.push_back(std::move(entry));
  }
  if (launches) {
    std::error_code ec;
    if (std::filesystem::create_directories(runtime_dir, ec)) {
      // The sockets accept deliveries' acks: keep other users out.
      std::filesystem::permissions(runtime_dir, std::filesystem::perms::owner_all, ec);
    }
    if (ec || !std::filesystem::is_directory(runtime_dir)) {
      return absl::FailedPreconditionError(absl::StrCat("cannot create plugin runtime directory ",
                                                        runtime_dir,
                                                        ec ? ": " + ec.message() : std::string()));
    }
  }
  return std::unique_ptr<PluginSupervisor>(
      new PluginSupervisor(std::make_unique<Impl>(std::move(entries))));
}

PluginSupervisor::PluginSupervisor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PluginSupervisor::~PluginSupervisor() { Stop(); }
absl::Status PluginSupervisor::Start() { return impl_->Start(); }
void PluginSupervisor::Stop() { impl_->Stop(); }
absl::StatusOr<pid_t> PluginSupervisor::Restart(const std::string& name) {
  return impl_->Restart(name);
}
std::string PluginSupervisor::AddressOf(const std::string& name) const {
  return impl_->AddressOf(name);
}
std::vector<PluginStatus> PluginSupervisor::Status() const { return impl_->Status(); }

}  // namespace pimgate
