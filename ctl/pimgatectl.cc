// pimgatectl: the operator's command line for a running pimgate, over its gRPC admin API
// (proto/pimgate/v1/admin.proto). Readable tables by default, --json for scripts.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/did_you_mean.h"
#include "common/units.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "pimgate/v1/admin.grpc.pb.h"

namespace {

using google::protobuf::util::TimeUtil;
namespace v1 = pimgate::v1;

// Exit codes, part of the interface scripts rely on.
constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnauthenticated = 3;
constexpr int kExitNotFound = 4;
constexpr int kExitUnavailable = 5;

constexpr char kDefaultAdmin[] = "127.0.0.1:7070";
constexpr absl::Duration kDefaultTimeout = absl::Seconds(30);
// A restart waits for a drain (up to the plugin's ack_timeout), a stop (stop_timeout) and a start
// (start_timeout): 30 s + 10 s + 30 s by default, so its call gets longer unless --timeout says.
constexpr absl::Duration kRestartTimeout = absl::Minutes(5);
// Items a list command shows when --limit is not given.
constexpr int64_t kDefaultLimit = 100;
// Largest response accepted: one event can be as large as the gateway's body limit.
constexpr int kMaxReceiveBytes = 64 << 20;
// Middle table columns longer than this are shortened (the last column never is; --json never).
constexpr std::size_t kMaxCellWidth = 48;

constexpr char kUsage[] = R"(pimgatectl: operate a running pimgate through its admin API

Usage:
  pimgatectl [GLOBAL FLAGS] COMMAND [ARGS] [--json]

Global flags (before the command; --json also goes after it):
  --admin ADDR          admin API: host:port or unix:/path
                        (default: $PIMGATE_ADMIN, else 127.0.0.1:7070)
  --token T             admin token (default: $PIMGATE_ADMIN_TOKEN). Arguments show in `ps`:
                        prefer the environment variable or --token-file
  --token-file FILE     read the admin token from FILE
  --tls                 connect with TLS, trusting the system's CAs
  --tls-ca FILE         connect with TLS, trusting the CA certificate(s) in FILE
  --tls-server-name N   name to expect in the server certificate (default: host of --admin)
  --timeout DUR         deadline of each call (default 30s; restart: 5m)
  --json                the response as JSON (same as --json after the command)
  --help, --version

Commands:
  stats                                  log, sources and plugins at a glance
  plugins                                plugin processes and delivery
  pause NAME                             hold a plugin's events (nothing is skipped)
  resume NAME                            deliver a paused plugin's events again
  restart NAME [--drain-timeout DUR]     restart a plugin's process gracefully (new version)
  seek NAME (--sequence N | --time T)    replay a plugin from a sequence or a time
  dlq list NAME [--limit N]              a plugin's dead letters
  dlq retry NAME (--all | SEQ...)        deliver dead letters again
  dlq purge NAME (--all | SEQ...)        drop dead letters
  event SEQ | event --source S --id ID   one event, with its data
  events [--type GLOB] [--resource ID] [--source S] [--since T] [--until T]
         [--limit N] [--newest]          events, filtered
  quarantine [--limit N]                 legacy batch elements the parser refused
  reconcile SOURCE [--since T] [--full]  ask the PIM for changes its webhooks missed

`pimgatectl COMMAND --help` explains one command.

Every command takes --json: the response as JSON (protobuf JSON mapping with the .proto field
names; 64-bit integers are strings, timestamps RFC 3339).
Times (T) are RFC 3339 (2026-11-20T10:00:00Z, 2026-11-20T12:00:00+02:00) or an age (90s, 15m,
2h, 7d, 1h30m: that long before now).

Exit codes: 0 ok, 1 failed, 2 usage, 3 unauthenticated (token missing or wrong), 4 not found,
5 pimgate unreachable.
)";

// ---- Arguments --------------------------------------------------------------------------------

struct Globals {
  std::string admin;
  std::string token;
  bool tls = false;
  std::string tls_ca;
  std::string tls_server_name;
  absl::Duration timeout = kDefaultTimeout;
  bool timeout_set = false;  // --timeout given: it also bounds the long calls (restart)
  bool json = false;         // --json before the command
};

// Every global flag, for "did you mean" and for the hint when one comes after the command.
const std::vector<std::string>& GlobalFlags() {
  static const std::vector<std::string> flags = {
      "--admin",           "--token",   "--token-file", "--tls",  "--tls-ca",
      "--tls-server-name", "--timeout", "--json",       "--help", "--version"};
  return flags;
}

// " (did you mean X?)" when `typed` is close to one of `candidates`, else "".
std::string Suggestion(absl::string_view typed, const std::vector<std::string>& candidates) {
  std::optional<std::string> near = pimgate::DidYouMean(typed, candidates);
  return near.has_value() ? absl::StrCat("; did you mean ", *near, "?") : "";
}

// A command's arguments after the command name: positionals and --flags.
struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> values;  // --flag VALUE
  std::set<std::string> switches;             // --flag
  bool json = false;

  bool Has(const std::string& flag) const {
    return values.contains(flag) || switches.contains(flag);
  }
  std::string Value(const std::string& flag) const {
    auto it = values.find(flag);
    return it == values.end() ? "" : it->second;
  }
};

absl::Status Usage(absl::string_view message) {
  return absl::InvalidArgumentError(std::string(message));
}

// Splits `argv` into positionals and flags: `value_flags` take a value (`--f V` or `--f=V`),
// `switch_flags` do not. --json is accepted everywhere.
absl::StatusOr<Args> ParseArgs(const std::vector<std::string>& argv,
                               const std::set<std::string>& value_flags,
                               const std::set<std::string>& switch_flags) {
  Args args;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    std::string arg = argv[i];
    if (!absl::StartsWith(arg, "--") || arg == "--") {
      args.positional.push_back(arg);
      continue;
    }
    std::optional<std::string> inline_value;
    if (const std::size_t eq = arg.find('='); eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    if (arg == "--json" && !inline_value) {
      args.json = true;
    } else if (value_flags.contains(arg)) {
      if (inline_value) {
        args.values[arg] = *inline_value;
      } else if (i + 1 < argv.size()) {
        args.values[arg] = argv[++i];
      } else {
        return Usage(absl::StrCat(arg, " needs a value"));
      }
    } else if (switch_flags.contains(arg) && !inline_value) {
      args.switches.insert(arg);
    } else if (arg == "--admin" || arg == "--token" || arg == "--token-file" || arg == "--tls" ||
               arg == "--tls-ca" || arg == "--tls-server-name" || arg == "--timeout") {
      return Usage(absl::StrCat(arg, " is a global flag: put it before the command"));
    } else {
      std::vector<std::string> known(value_flags.begin(), value_flags.end());
      known.insert(known.end(), switch_flags.begin(), switch_flags.end());
      known.push_back("--json");
      return Usage(absl::StrCat("unknown flag ", arg, Suggestion(arg, known)));
    }
  }
  return args;
}

// "2026-11-20T10:00:00Z" or an age before now ("15m", "2h", "7d").
absl::StatusOr<google::protobuf::Timestamp> ParseTime(const std::string& text) {
  google::protobuf::Timestamp ts;
  if (TimeUtil::FromString(text, &ts)) return ts;
  if (!text.empty() && absl::ascii_isdigit(text.front())) {
    absl::StatusOr<std::chrono::milliseconds> age = pimgate::ParseDuration(text);
    if (age.ok()) {
      return TimeUtil::MillisecondsToTimestamp(absl::ToUnixMillis(absl::Now()) - age->count());
    }
  }
  return Usage(absl::StrCat("invalid time \"", text,
                            "\": use RFC 3339 (2026-11-20T10:00:00Z) or an age (15m, 2h, 7d)"));
}

absl::StatusOr<uint64_t> ParseSequence(const std::string& text, absl::string_view what) {
  uint64_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value == 0) {
    return Usage(absl::StrCat(what, " must be a positive integer, got \"", text, "\""));
  }
  return value;
}

absl::StatusOr<int64_t> ParseLimit(const Args& args) {
  if (!args.Has("--limit")) return kDefaultLimit;
  int64_t limit = 0;
  if (!absl::SimpleAtoi(args.Value("--limit"), &limit) || limit < 1) {
    return Usage(
        absl::StrCat("--limit must be a positive integer, got \"", args.Value("--limit"), "\""));
  }
  return limit;
}

// ---- Output -----------------------------------------------------------------------------------

std::string Json(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

int PrintJson(const google::protobuf::Message& message) {
  const std::string json = Json(message);
  std::fputs(json.c_str(), stdout);
  if (!absl::EndsWith(json, "\n")) std::fputc('\n', stdout);
  return kExitOk;
}

std::string FormatTime(const google::protobuf::Timestamp& ts) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return "-";
  const absl::Time time = absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone());
}

std::string FormatBytes(uint64_t bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  if (unit == 0) return absl::StrCat(bytes, " B");
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f %s", value, kUnits[unit]);
  return text;
}

// "200:12 401:1", by code.
std::string FormatCodes(const google::protobuf::Map<uint32_t, uint64_t>& codes) {
  std::map<uint32_t, uint64_t> sorted(codes.begin(), codes.end());
  std::vector<std::string> parts;
  parts.reserve(sorted.size());
  for (const auto& [code, count] : sorted) parts.push_back(absl::StrCat(code, ":", count));
  return parts.empty() ? "-" : absl::StrJoin(parts, " ");
}

// The PIM's time zone as reconciliation knows it: "-05:00 (learned)", "America/New_York
// (configured)", "-05:00 (learned; window widened: filter -07:00)", "unknown (filter -14:00)".
std::string PimTimeZoneCell(const v1::ReconciliationStats& r) {
  const std::string zone = r.pim_time_zone().empty()
                               ? std::string("unknown")
                               : absl::StrCat(r.pim_time_zone(), " (", r.pim_time_zone_origin());
  if (r.pim_time_zone().empty()) {
    return r.filter_utc_offset().empty()
               ? zone
               : absl::StrCat(zone, " (filter ", r.filter_utc_offset(), ")");
  }
  if (r.pim_time_zone_origin() == "learned" && !r.filter_utc_offset().empty() &&
      r.filter_utc_offset() != r.pim_time_zone()) {
    return absl::StrCat(zone, "; window widened: filter ", r.filter_utc_offset(), ")");
  }
  return zone + ")";
}

// Where products are listed: "products-uuid" (PIM 7, SaaS) or "products (by identifier)".
std::string ProductsCell(const v1::ReconciliationStats& r) {
  if (r.products_path().empty()) return "-";
  if (absl::EndsWith(r.products_path(), "/products")) return "products (by identifier)";
  return std::string(r.products_path().substr(r.products_path().rfind('/') + 1));
}

// Printable on one line: control characters escaped.
std::string OneLine(absl::string_view text) {
  std::string out;
  for (const char c : text) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += absl::StrCat("\\x", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
    } else {
      out += c;
    }
  }
  return out;
}

// An aligned text table: a header row in capitals, then rows; columns separated by two spaces.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void Add(std::vector<std::string> row) {
    for (std::string& cell : row) cell = OneLine(cell);
    rows_.push_back(std::move(row));
  }
  bool empty() const { return rows_.empty(); }

  void Print() const {
    std::vector<std::size_t> widths(header_.size(), 0);
    std::vector<std::vector<std::string>> all = {header_};
    for (const auto& row : rows_) {
      std::vector<std::string> shown = row;
      for (std::size_t i = 0; i + 1 < shown.size(); ++i) {
        if (shown[i].size() > kMaxCellWidth)
          shown[i] = shown[i].substr(0, kMaxCellWidth - 3) + "...";
      }
      all.push_back(std::move(shown));
    }
    for (const auto& row : all) {
      for (std::size_t i = 0; i < row.size() && i < widths.size(); ++i) {
        widths[i] = std::max(widths[i], row[i].size());
      }
    }
    for (const auto& row : all) {
      std::string line;
      for (std::size_t i = 0; i < row.size(); ++i) {
        line += row[i];
        if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      std::printf("%s\n", line.c_str());
    }
  }

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// ---- The admin client -------------------------------------------------------------------------

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

class AdminClient {
 public:
  explicit AdminClient(const Globals& globals) : globals_(globals) {
    std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
    if (globals.tls) {
      grpc::SslCredentialsOptions options;
      options.pem_root_certs = globals.tls_ca;  // empty: the system's trusted CAs
      credentials = grpc::SslCredentials(options);
    }
    grpc::ChannelArguments channel_args;
    channel_args.SetMaxReceiveMessageSize(kMaxReceiveBytes);
    if (!globals.tls_server_name.empty()) {
      channel_args.SetSslTargetNameOverride(globals.tls_server_name);
    }
    stub_ = v1::Admin::NewStub(grpc::CreateCustomChannel(globals.admin, credentials, channel_args));
  }

  // `long_timeout`: the deadline of a call that may take long, unless --timeout was given.
  template <typename Request, typename Response>
  grpc::Status Call(grpc::Status (v1::Admin::Stub::*method)(grpc::ClientContext*, const Request&,
                                                            Response*),
                    const Request& request, Response& response,
                    std::optional<absl::Duration> long_timeout = std::nullopt) {
    grpc::ClientContext context;
    const absl::Duration timeout =
        long_timeout.has_value() && !globals_.timeout_set ? *long_timeout : globals_.timeout;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    if (!globals_.token.empty()) {
      context.AddMetadata("authorization", "Bearer " + globals_.token);
    }
    return (stub_.get()->*method)(&context, request, &response);
  }

  const std::string& address() const { return globals_.admin; }

 private:
  Globals globals_;
  std::unique_ptr<v1::Admin::Stub> stub_;
};

// Reports a failed call on stderr and returns its exit code.
int Failed(const AdminClient& client, const std::string& command, const grpc::Status& status) {
  std::fprintf(stderr, "pimgatectl: %s: %s: %s\n", command.c_str(), CodeName(status.error_code()),
               status.error_message().c_str());
  switch (status.error_code()) {
    case grpc::StatusCode::UNAUTHENTICATED:
      std::fprintf(stderr,
                   "pimgatectl: set the admin token with $PIMGATE_ADMIN_TOKEN, --token-file or "
                   "--token\n");
      return kExitUnauthenticated;
    case grpc::StatusCode::NOT_FOUND:
      return kExitNotFound;
    case grpc::StatusCode::UNAVAILABLE:
      std::fprintf(stderr, "pimgatectl: is pimgate running with its admin API on %s?\n",
                   client.address().c_str());
      return kExitUnavailable;
    default:
      return kExitError;
  }
}

// ---- Commands ---------------------------------------------------------------------------------

struct Command {
  std::string name;  // "stats", "dlq list"
  std::string usage;
  std::string help;
  std::set<std::string> value_flags;
  std::set<std::string> switch_flags;
  std::function<int(AdminClient&, const Args&)> run;
  // Checks arguments before anything is sent; a usage error when they do not fit.
  std::function<absl::Status(const Args&)> check;
};

absl::Status Positionals(const Args& args, std::size_t min, std::size_t max,
                         absl::string_view what) {
  if (args.positional.size() < min) return Usage(absl::StrCat("missing ", what));
  if (args.positional.size() > max) {
    return Usage(absl::StrCat("unexpected argument \"", args.positional[max], "\""));
  }
  return absl::OkStatus();
}

// What is wrong with a plugin now, worded the same in `stats` and `plugins`.
std::string PluginErrors(const std::string& process_error, const std::string& delivery_error) {
  std::vector<std::string> errors;
  if (!process_error.empty()) errors.push_back("process: " + process_error);
  if (!delivery_error.empty()) errors.push_back("delivery: " + delivery_error);
  return errors.empty() ? "-" : absl::StrJoin(errors, "; ");
}

int RunStats(AdminClient& client, const Args& args) {
  v1::GetStatsResponse response;
  if (grpc::Status s = client.Call(&v1::Admin::Stub::GetStats, v1::GetStatsRequest(), response);
      !s.ok()) {
    return Failed(client, "stats", s);
  }
  if (args.json) return PrintJson(response);
  const v1::LogStats& log = response.log();
  std::printf("LOG  head %lu  first %lu  events %lu  disk %s  pending requests %lu\n",
              static_cast<unsigned long>(log.head_sequence()),
              static_cast<unsigned long>(log.first_sequence()),
              static_cast<unsigned long>(log.event_count()), FormatBytes(log.disk_bytes()).c_str(),
              static_cast<unsigned long>(log.pending_requests()));
  std::printf("\n");
  Table sources({"SOURCE", "ACCEPTED", "DUPLICATES", "STALE", "QUARANTINED", "REQUESTS BY CODE"});
  for (const v1::SourceStats& source : response.sources()) {
    sources.Add({source.name(), absl::StrCat(source.events_accepted()),
                 absl::StrCat(source.duplicates()), absl::StrCat(source.stale()),
                 absl::StrCat(source.quarantined()), FormatCodes(source.requests_by_code())});
  }
  sources.Add(
      {"(unrouted)", "-", "-", "-", "-", FormatCodes(response.gateway().unrouted_by_code())});
  sources.Print();
  std::printf("connections: %lu open, %lu refused\n\n",
              static_cast<unsigned long>(response.gateway().connections_open()),
              static_cast<unsigned long>(response.gateway().connections_refused()));
  if (!response.reconciliations().empty()) {
    Table reconciliations({"RECONCILE", "LAST RUN", "RESULT", "SCANNED", "EMITTED", "DELETED",
                           "IN SYNC", "API CALLS", "OK/FAILED", "WATERMARK", "NEXT RUN",
                           "PIM TIME ZONE", "PRODUCTS", "LAST ERROR"});
    for (const v1::ReconciliationStats& r : response.reconciliations()) {
      const bool ran = r.has_last_finished_at();
      std::string result = !ran ? "never" : r.last_ok() ? "ok" : "failed";
      if (r.last_full() && ran) result += " (full)";
      if (r.running()) result = ran ? result + ", running" : "running";
      const auto figure = [ran](uint64_t value) { return ran ? absl::StrCat(value) : "-"; };
      reconciliations.Add(
          {r.source(), ran ? FormatTime(r.last_finished_at()) : "-", result,
           figure(r.last_scanned()), figure(r.last_emitted()), figure(r.last_deleted()),
           figure(r.last_in_sync()), figure(r.last_api_calls()),
           absl::StrCat(r.runs_succeeded(), "/", r.runs_failed()),
           r.has_watermark() ? FormatTime(r.watermark()) : "-",
           r.has_next_run_at() ? FormatTime(r.next_run_at()) : "on demand", PimTimeZoneCell(r),
           ProductsCell(r), r.last_error().empty() ? "-" : r.last_error()});
    }
    reconciliations.Print();
    std::printf("\n");
  }
  if (response.plugins().empty()) {
    std::printf("no plugins configured\n");
    return kExitOk;
  }
  // The process side of LAST ERROR, as `plugins` shows it (best effort: the delivery side is
  // in the stats themselves).
  std::map<std::string, std::string> process_errors;
  v1::ListPluginsResponse processes;
  if (client.Call(&v1::Admin::Stub::ListPlugins, v1::ListPluginsRequest(), processes).ok()) {
    for (const v1::PluginInfo& p : processes.plugins())
      process_errors[p.name()] = p.process_error();
  }
  Table plugins({"PLUGIN", "DELIVERY", "CURSOR", "LAG", "IN FLIGHT", "DELIVERED", "RETRIED",
                 "DEAD NOW", "DEAD TOTAL", "FILTERED", "STALE", "LAST ERROR"});
  for (const v1::PluginStats& p : response.plugins()) {
    plugins.Add({p.name(), p.state(), absl::StrCat(p.cursor()), absl::StrCat(p.lag()),
                 absl::StrCat(p.in_flight()), absl::StrCat(p.delivered()),
                 absl::StrCat(p.retried()), absl::StrCat(p.dead_letters_stored()),
                 absl::StrCat(p.dead_lettered()), absl::StrCat(p.skipped_filter()),
                 absl::StrCat(p.skipped_stale()),
                 PluginErrors(process_errors[p.name()], p.last_error())});
  }
  plugins.Print();
  return kExitOk;
}

int RunPlugins(AdminClient& client, const Args& args) {
  v1::ListPluginsResponse response;
  if (grpc::Status s =
          client.Call(&v1::Admin::Stub::ListPlugins, v1::ListPluginsRequest(), response);
      !s.ok()) {
    return Failed(client, "plugins", s);
  }
  if (args.json) return PrintJson(response);
  if (response.plugins().empty()) {
    std::printf("no plugins configured\n");
    return kExitOk;
  }
  Table table({"NAME", "PROCESS", "PID", "RESTARTS", "DELIVERY", "CURSOR", "LAG", "IN FLIGHT",
               "LAST ERROR"});
  for (const v1::PluginInfo& p : response.plugins()) {
    table.Add({p.name(), p.process_state().empty() ? "-" : p.process_state(),
               p.pid() == 0 ? "-" : absl::StrCat(p.pid()), absl::StrCat(p.restarts()),
               p.delivery_state().empty() ? "-" : p.delivery_state(), absl::StrCat(p.cursor()),
               absl::StrCat(p.lag()), absl::StrCat(p.in_flight()),
               PluginErrors(p.process_error(), p.delivery_error())});
  }
  table.Print();
  // Why a plugin fails to run is usually in what it wrote to stderr (a traceback, a missing
  // module): shown in full, since the table cuts long cells.
  for (const v1::PluginInfo& p : response.plugins()) {
    if (p.process_stderr().empty()) continue;
    std::printf("\n%s %s; its last stderr lines:\n", p.name().c_str(),
                p.process_error().empty() ? "failed" : p.process_error().c_str());
    for (const std::string& line : p.process_stderr()) {
      std::printf("  | %s\n", OneLine(line).c_str());
    }
  }
  return kExitOk;
}

absl::Status CheckRestart(const Args& args) {
  if (absl::Status s = Positionals(args, 1, 1, "plugin NAME"); !s.ok()) return s;
  if (!args.Has("--drain-timeout")) return absl::OkStatus();
  absl::StatusOr<std::chrono::milliseconds> drain =
      pimgate::ParseDuration(args.Value("--drain-timeout"));
  if (!drain.ok()) return Usage(absl::StrCat("--drain-timeout: ", drain.status().message()));
  return absl::OkStatus();
}

int RunRestart(AdminClient& client, const Args& args) {
  v1::RestartPluginRequest request;
  request.set_plugin(args.positional[0]);
  if (args.Has("--drain-timeout")) {
    *request.mutable_drain_timeout() = TimeUtil::MillisecondsToDuration(
        pimgate::ParseDuration(args.Value("--drain-timeout"))->count());
  }
  v1::RestartPluginResponse response;
  if (grpc::Status s =
          client.Call(&v1::Admin::Stub::RestartPlugin, request, response, kRestartTimeout);
      !s.ok()) {
    return Failed(client, "restart", s);
  }
  if (args.json) return PrintJson(response);
  std::printf(
      "plugin %s restarted: pid %s -> %u; %lu delivery(ies) in flight, %lu of them sent "
      "again to the new process\n",
      request.plugin().c_str(),
      response.old_pid() == 0 ? "-" : absl::StrCat(response.old_pid()).c_str(), response.new_pid(),
      static_cast<unsigned long>(response.in_flight()),
      static_cast<unsigned long>(response.redelivered()));
  return kExitOk;
}

int RunPause(AdminClient& client, const Args& args, bool pause) {
  const std::string& plugin = args.positional[0];
  grpc::Status status;
  if (pause) {
    v1::PausePluginRequest request;
    request.set_plugin(plugin);
    v1::PausePluginResponse response;
    status = client.Call(&v1::Admin::Stub::PausePlugin, request, response);
    if (status.ok() && args.json) return PrintJson(response);
  } else {
    v1::ResumePluginRequest request;
    request.set_plugin(plugin);
    v1::ResumePluginResponse response;
    status = client.Call(&v1::Admin::Stub::ResumePlugin, request, response);
    if (status.ok() && args.json) return PrintJson(response);
  }
  if (!status.ok()) return Failed(client, pause ? "pause" : "resume", status);
  if (pause) {
    std::printf("plugin %s paused: its events are held until `pimgatectl resume %s`\n",
                plugin.c_str(), plugin.c_str());
  } else {
    std::printf("plugin %s resumed\n", plugin.c_str());
  }
  return kExitOk;
}

absl::Status CheckSeek(const Args& args) {
  if (absl::Status s = Positionals(args, 1, 1, "plugin NAME"); !s.ok()) return s;
  if (args.Has("--sequence") == args.Has("--time")) {
    return Usage("give one of --sequence N or --time T");
  }
  if (args.Has("--sequence")) return ParseSequence(args.Value("--sequence"), "--sequence").status();
  return ParseTime(args.Value("--time")).status();
}

int RunSeek(AdminClient& client, const Args& args) {
  v1::SeekPluginRequest request;
  request.set_plugin(args.positional[0]);
  if (args.Has("--sequence")) {
    request.set_sequence(*ParseSequence(args.Value("--sequence"), "--sequence"));
  } else {
    *request.mutable_time() = *ParseTime(args.Value("--time"));
  }
  v1::SeekPluginResponse response;
  if (grpc::Status s = client.Call(&v1::Admin::Stub::SeekPlugin, request, response); !s.ok()) {
    return Failed(client, "seek", s);
  }
  if (args.json) return PrintJson(response);
  if (response.events_to_replay() == 0) {
    std::printf("plugin %s: skipped to the end of the log; it resumes with sequence %lu\n",
                request.plugin().c_str(), static_cast<unsigned long>(response.sequence()));
  } else {
    std::printf("plugin %s: replaying from sequence %lu (%lu event(s) up to head %lu)\n",
                request.plugin().c_str(), static_cast<unsigned long>(response.sequence()),
                static_cast<unsigned long>(response.events_to_replay()),
                static_cast<unsigned long>(response.head_sequence()));
  }
  return kExitOk;
}

int RunDlqList(AdminClient& client, const Args& args) {
  const int64_t limit = *ParseLimit(args);
  v1::ListDeadLettersRequest request;
  request.set_plugin(args.positional[0]);
  request.set_page_token(args.Value("--page-token"));
  v1::ListDeadLettersResponse all;
  // Pages until the limit is reached or nothing is left.
  while (true) {
    request.set_page_size(
        static_cast<int32_t>(std::min<int64_t>(limit - all.dead_letters_size(), 1000)));
    v1::ListDeadLettersResponse page;
    if (grpc::Status s = client.Call(&v1::Admin::Stub::ListDeadLetters, request, page); !s.ok()) {
      return Failed(client, "dlq list", s);
    }
    for (v1::DeadLetter& letter : *page.mutable_dead_letters()) {
      *all.add_dead_letters() = std::move(letter);
    }
    all.set_next_page_token(page.next_page_token());
    if (page.next_page_token().empty() || all.dead_letters_size() >= limit) break;
    request.set_page_token(page.next_page_token());
  }
  if (args.json) return PrintJson(all);
  if (all.dead_letters().empty()) {
    std::printf("plugin %s has no dead letters\n", request.plugin().c_str());
    return kExitOk;
  }
  Table table({"SEQ", "TYPE", "RESOURCE", "ATTEMPTS", "DEAD AT", "KIND", "REASON"});
  for (const v1::DeadLetter& letter : all.dead_letters()) {
    table.Add({absl::StrCat(letter.event().sequence()), letter.event().type(),
               letter.event().resource_id(), absl::StrCat(letter.attempts()),
               FormatTime(letter.dead_at()), letter.rejected() ? "rejected" : "retries out",
               letter.reason()});
  }
  table.Print();
  if (!all.next_page_token().empty()) {
    std::printf("(more: --limit, or --page-token %s)\n", all.next_page_token().c_str());
  }
  return kExitOk;
}

absl::Status CheckDlqChange(const Args& args) {
  if (args.positional.empty()) return Usage("missing plugin NAME");
  const bool all = args.switches.contains("--all");
  if (all == (args.positional.size() > 1)) return Usage("give --all or the SEQ numbers to act on");
  for (std::size_t i = 1; i < args.positional.size(); ++i) {
    if (absl::Status s = ParseSequence(args.positional[i], "SEQ").status(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

int RunDlqRetry(AdminClient& client, const Args& args) {
  v1::RetryDeadLettersRequest request;
  request.set_plugin(args.positional[0]);
  request.set_all(args.switches.contains("--all"));
  for (std::size_t i = 1; i < args.positional.size(); ++i) {
    request.add_sequences(*ParseSequence(args.positional[i], "SEQ"));
  }
  v1::RetryDeadLettersResponse all;
  // With --all, the server hands back a bounded number per call: call until none remain.
  while (true) {
    v1::RetryDeadLettersResponse page;
    if (grpc::Status s = client.Call(&v1::Admin::Stub::RetryDeadLetters, request, page); !s.ok()) {
      return Failed(client, "dlq retry", s);
    }
    all.mutable_sequences()->Add(page.sequences().begin(), page.sequences().end());
    if (!page.more()) break;
  }
  if (args.json) return PrintJson(all);
  if (all.sequences().empty()) {
    std::printf("plugin %s has no dead letters to retry\n", request.plugin().c_str());
    return kExitOk;
  }
  std::vector<uint64_t> sequences(all.sequences().begin(), all.sequences().end());
  std::printf("handed %d dead letter(s) back to plugin %s: %s\n", all.sequences_size(),
              request.plugin().c_str(),
              sequences.size() <= 20
                  ? absl::StrJoin(sequences, " ").c_str()
                  : absl::StrCat(sequences.front(), " ... ", sequences.back()).c_str());
  return kExitOk;
}

int RunDlqPurge(AdminClient& client, const Args& args) {
  v1::PurgeDeadLettersRequest request;
  request.set_plugin(args.positional[0]);
  request.set_all(args.switches.contains("--all"));
  for (std::size_t i = 1; i < args.positional.size(); ++i) {
    request.add_sequences(*ParseSequence(args.positional[i], "SEQ"));
  }
  v1::PurgeDeadLettersResponse response;
  if (grpc::Status s = client.Call(&v1::Admin::Stub::PurgeDeadLetters, request, response);
      !s.ok()) {
    return Failed(client, "dlq purge", s);
  }
  if (args.json) return PrintJson(response);
  std::printf("purged %lu dead letter(s) of plugin %s\n",
              static_cast<unsigned long>(response.purged()), request.plugin().c_str());
  return kExitOk;
}

absl::Status CheckEvent(const Args& args) {
  const bool by_ref = args.Has("--source") || args.Has("--id");
  if (by_ref) {
    if (!args.positional.empty()) return Usage("give either SEQ or --source S --id ID");
    if (!args.Has("--source") || !args.Has("--id")) return Usage("--source and --id go together");
    return absl::OkStatus();
  }
  if (absl::Status s = Positionals(args, 1, 1, "SEQ (or --source S --id ID)"); !s.ok()) return s;
  return ParseSequence(args.positional[0], "SEQ").status();
}

const char* OriginName(v1::Origin origin) {
  switch (origin) {
    case v1::ORIGIN_EVENTS_API:
      return "events_api";
    case v1::ORIGIN_EVENT_PLATFORM:
      return "event_platform";
    case v1::ORIGIN_RECONCILIATION:
      return "reconciliation";
    default:
      return "unspecified";
  }
}

int RunEvent(AdminClient& client, const Args& args) {
  v1::GetEventRequest request;
  if (args.positional.empty()) {
    request.mutable_ref()->set_source(args.Value("--source"));
    request.mutable_ref()->set_id(args.Value("--id"));
  } else {
    request.set_sequence(*ParseSequence(args.positional[0], "SEQ"));
  }
  v1::Event event;
  if (grpc::Status s = client.Call(&v1::Admin::Stub::GetEvent, request, event); !s.ok()) {
    return Failed(client, "event", s);
  }
  if (args.json) return PrintJson(event);
  Table table({"FIELD", "VALUE"});
  table.Add({"sequence", absl::StrCat(event.sequence())});
  table.Add({"id", event.id()});
  table.Add({"source", event.source()});
  table.Add({"type", event.type() == event.original_type()
                         ? event.type()
                         : absl::StrCat(event.type(), " (sent as ", event.original_type(), ")")});
  table.Add({"resource_id", event.resource_id()});
  table.Add({"occurred_at", FormatTime(event.occurred_at())});
  table.Add({"version_at", FormatTime(event.version_at())});
  table.Add({"received_at", FormatTime(event.received_at())});
  table.Add({"author", event.author_type().empty()
                           ? event.author()
                           : absl::StrCat(event.author(), " (", event.author_type(), ")")});
  table.Add({"pim_source", event.pim_source()});
  if (!event.subject().empty()) table.Add({"subject", event.subject()});
  table.Add({"origin", OriginName(event.origin())});
  table.Add({"stale", event.stale() ? "yes (a newer version was already stored)" : "no"});
  table.Add({"request_id", event.request_id()});
  table.Print();
  std::printf("data:\n%s", Json(event.data()).c_str());
  return kExitOk;
}

absl::Status CheckEvents(const Args& args) {
  if (absl::Status s = Positionals(args, 0, 0, ""); !s.ok()) return s;
  for (const char* flag : {"--since", "--until"}) {
    if (args.Has(flag)) {
      if (absl::Status s = ParseTime(args.Value(flag)).status(); !s.ok()) return s;
    }
  }
  return ParseLimit(args).status();
}

int RunEvents(AdminClient& client, const Args& args) {
  const int64_t limit = *ParseLimit(args);
  v1::ListEventsRequest request;
  request.set_type(args.Value("--type"));
  request.set_resource_id(args.Value("--resource"));
  request.set_source(args.Value("--source"));
  if (args.Has("--since")) *request.mutable_since() = *ParseTime(args.Value("--since"));
  if (args.Has("--until")) *request.mutable_until() = *ParseTime(args.Value("--until"));
  request.set_newest_first(args.switches.contains("--newest"));
  request.set_page_token(args.Value("--page-token"));
  v1::ListEventsResponse all;
  while (true) {
    request.set_page_size(static_cast<int32_t>(std::min<int64_t>(limit - all.events_size(), 1000)));
    v1::ListEventsResponse page;
    if (grpc::Status s = client.Call(&v1::Admin::Stub::ListEvents, request, page); !s.ok()) {
      return Failed(client, "events", s);
    }
    for (v1::Event& event : *page.mutable_events()) *all.add_events() = std::move(event);
    all.set_scanned(all.scanned() + page.scanned());
    all.set_next_page_token(page.next_page_token());
    if (page.next_page_token().empty() || all.events_size() >= limit) break;
    request.set_page_token(page.next_page_token());
  }
  if (args.json) return PrintJson(all);
  if (all.events().empty()) {
    std::printf("no matching events (%lu looked at)\n", static_cast<unsigned long>(all.scanned()));
    return kExitOk;
  }
  Table table({"SEQ", "RECEIVED", "SOURCE", "TYPE", "RESOURCE", "AUTHOR", "STALE"});
  for (const v1::Event& event : all.events()) {
    table.Add({absl::StrCat(event.sequence()), FormatTime(event.received_at()), event.source(),
               event.type(), event.resource_id(), event.author().empty() ? "-" : event.author(),
               event.stale() ? "stale" : ""});
  }
  table.Print();
  if (!all.next_page_token().empty()) {
    std::printf("(more: --limit, or --page-token %s)\n", all.next_page_token().c_str());
  }
  return kExitOk;
}

int RunQuarantine(AdminClient& client, const Args& args) {
  const int64_t limit = *ParseLimit(args);
  v1::ListQuarantineRequest request;
  request.set_page_token(args.Value("--page-token"));
  v1::ListQuarantineResponse all;
  while (true) {
    request.set_page_size(
        static_cast<int32_t>(std::min<int64_t>(limit - all.entries_size(), 1000)));
    v1::ListQuarantineResponse page;
    if (grpc::Status s = client.Call(&v1::Admin::Stub::ListQuarantine, request, page); !s.ok()) {
      return Failed(client, "quarantine", s);
    }
    for (v1::QuarantineEntry& entry : *page.mutable_entries())
      *all.add_entries() = std::move(entry);
    all.set_next_page_token(page.next_page_token());
    if (page.next_page_token().empty() || all.entries_size() >= limit) break;
    request.set_page_token(page.next_page_token());
  }
  if (args.json) return PrintJson(all);
  if (all.entries().empty()) {
    std::printf("quarantine is empty\n");
    return kExitOk;
  }
  Table table({"ID", "RECEIVED", "SOURCE", "INDEX", "REQUEST", "REASON", "RAW"});
  for (const v1::QuarantineEntry& entry : all.entries()) {
    std::string raw = entry.raw().size() > 80 ? entry.raw().substr(0, 77) + "..." : entry.raw();
    table.Add({absl::StrCat(entry.id()), FormatTime(entry.received_at()), entry.source(),
               absl::StrCat(entry.index()), entry.request_id(), entry.reason(), raw});
  }
  table.Print();
  if (!all.next_page_token().empty()) {
    std::printf("(more: --limit, or --page-token %s)\n", all.next_page_token().c_str());
  }
  return kExitOk;
}

absl::Status CheckReconcile(const Args& args) {
  if (absl::Status s = Positionals(args, 1, 1, "SOURCE"); !s.ok()) return s;
  if (args.Has("--since")) return ParseTime(args.Value("--since")).status();
  return absl::OkStatus();
}

int RunReconcile(AdminClient& client, const Args& args) {
  v1::ReconcileRequest request;
  request.set_source(args.positional[0]);
  if (args.Has("--since")) *request.mutable_since() = *ParseTime(args.Value("--since"));
  request.set_full(args.switches.contains("--full"));
  v1::ReconcileResponse response;
  if (grpc::Status s = client.Call(&v1::Admin::Stub::Reconcile, request, response); !s.ok()) {
    // pimgate answered, but the run failed: UNAVAILABLE here is the PIM's, not pimgate's.
    if (absl::StartsWith(s.error_message(), "reconciliation of ")) {
      std::fprintf(stderr, "pimgatectl: reconcile: %s: %s\n", CodeName(s.error_code()),
                   s.error_message().c_str());
      return kExitError;
    }
    return Failed(client, "reconcile", s);
  }
  if (args.json) return PrintJson(response);
  const double seconds = static_cast<double>(TimeUtil::DurationToMilliseconds(
                             response.finished_at() - response.started_at())) /
                         1000.0;
  std::printf("reconciliation of %s (run %lu%s) added %lu event(s) in %.3fs\n",
              request.source().c_str(), static_cast<unsigned long>(response.run()),
              response.full() ? ", full" : "", static_cast<unsigned long>(response.events_added()),
              seconds);
  Table table({"FIGURE", "VALUE"});
  table.Add({"scanned", absl::StrCat(response.scanned())});
  table.Add({"emitted (updated)", absl::StrCat(response.emitted())});
  table.Add({"deleted", absl::StrCat(response.deleted())});
  table.Add({"in sync", absl::StrCat(response.in_sync())});
  table.Add({"invalid (skipped)", absl::StrCat(response.invalid())});
  if (response.full()) table.Add({"unchecked (not UUIDs)", absl::StrCat(response.unchecked())});
  table.Add({"api calls", absl::StrCat(response.api_calls())});
  table.Add({"window", response.has_window_start()
                           ? absl::StrCat("updated after ", FormatTime(response.window_start()),
                                          " (PIM time ", response.updated_filter(), " ",
                                          response.filter_time_zone(), ")")
                           : std::string("everything")});
  if (!response.products_path().empty()) table.Add({"products from", response.products_path()});
  table.Add({"watermark",
             (response.has_watermark() ? FormatTime(response.watermark()) : std::string("none")) +
                 (response.watermark_advanced() ? " (advanced)" : " (unchanged)")});
  table.Print();
  return kExitOk;
}

std::vector<Command> Commands() {
  const auto exactly = [](std::size_t n, const char* what) {
    return [n, what](const Args& args) { return Positionals(args, n, n, what); };
  };
  const auto list_check = [](const Args& args) -> absl::Status {
    if (absl::Status s = Positionals(args, 0, 0, ""); !s.ok()) return s;
    return ParseLimit(args).status();
  };
  return {
      {"stats",
       "stats [--json]",
       "The log (head and first sequence, event count, disk use), each source's answers and\n"
       "events, and each plugin's delivery: state, cursor, lag, in flight, delivered, retried,\n"
       "dead letters stored now (DEAD NOW) and made since start (DEAD TOTAL), skipped by filter "
       "or\n"
       "as stale, the current problem; each source's last reconciliation. Counters start when\n"
       "pimgate starts. docs/operations.md explains every state and column.",
       {},
       {},
       RunStats,
       exactly(0, "")},
      {"plugins",
       "plugins [--json]",
       "Each plugin's process (state, pid, restarts) and delivery (state, cursor, lag, in\n"
       "flight), and what is wrong now (LAST ERROR, cleared once resolved). A plugin that failed\n"
       "to run also shows the last lines it wrote to stderr.",
       {},
       {},
       RunPlugins,
       exactly(0, "")},
      {"pause",
       "pause NAME [--json]",
       "Holds the plugin's events: nothing new is sent, nothing is skipped; deliveries already\n"
       "outstanding complete. Saved in the store: the plugin stays paused across restarts of\n"
       "pimgate (and of the plugin) until `resume`.",
       {},
       {},
       [](AdminClient& c, const Args& a) { return RunPause(c, a, true); },
       exactly(1, "plugin NAME")},
      {"resume",
       "resume NAME [--json]",
       "Delivers a paused plugin's events again.",
       {},
       {},
       [](AdminClient& c, const Args& a) { return RunPause(c, a, false); },
       exactly(1, "plugin NAME")},
      {"restart",
       "restart NAME [--drain-timeout DUR] [--json]",
       "Restarts the plugin's process gracefully, e.g. once a new version of it is installed:\n"
       "holds its events, waits up to --drain-timeout (default: its ack_timeout) for the\n"
       "deliveries in flight to be answered, stops the process (SIGTERM, then SIGKILL after its\n"
       "stop_timeout) and starts it again, then delivers again what was not answered (not a\n"
       "failed attempt). Waits until the new process is SERVING (the call's deadline is 5m\n"
       "unless --timeout is given). No crash is counted; a plugin in backoff starts at once; a\n"
       "paused plugin stays paused. Not for `address` plugins, which pimgate does not run.",
       {"--drain-timeout"},
       {},
       RunRestart,
       CheckRestart},
      {"seek",
       "seek NAME (--sequence N | --time T) [--json]",
       "Replays: the plugin's next event becomes sequence N, or the first event received at or\n"
       "after T. Outstanding deliveries are abandoned. Seeking forward skips events.\n"
       "--sequence 1 replays the whole log; head + 1 skips everything stored so far.",
       {"--sequence", "--time"},
       {},
       RunSeek,
       CheckSeek},
      {"dlq list",
       "dlq list NAME [--limit N] [--page-token T] [--json]",
       "The plugin's dead letters, oldest event first (default --limit 100).",
       {"--limit", "--page-token"},
       {},
       RunDlqList,
       [](const Args& args) -> absl::Status {
         if (absl::Status s = Positionals(args, 1, 1, "plugin NAME"); !s.ok()) return s;
         return ParseLimit(args).status();
       }},
      {"dlq retry",
       "dlq retry NAME (--all | SEQ...) [--json]",
       "Hands dead letters back to the plugin, from attempt 1, and removes them from the dead\n"
       "letters; one that fails again is dead-lettered again. SEQ are event sequences (see\n"
       "`dlq list`); if one of them has no dead letter, nothing is retried (exit 4).",
       {},
       {"--all"},
       RunDlqRetry,
       CheckDlqChange},
      {"dlq purge",
       "dlq purge NAME (--all | SEQ...) [--json]",
       "Removes dead letters without delivering them. If one SEQ has no dead letter, nothing is\n"
       "purged (exit 4).",
       {},
       {"--all"},
       RunDlqPurge,
       CheckDlqChange},
      {"event",
       "event SEQ | event --source S --id ID [--json]",
       "One event with all its fields and its data, by sequence or by the sender's event id.",
       {"--source", "--id"},
       {},
       RunEvent,
       CheckEvent},
      {"events",
       "events [--type GLOB] [--resource ID] [--source S] [--since T] [--until T] [--limit N]\n"
       "       [--newest] [--page-token T] [--json]",
       "Events, oldest first (--newest: newest first), filtered by canonical type glob\n"
       "(\"product.*\"), resource id, source and received time (--since inclusive, --until\n"
       "exclusive). Shows up to --limit (default 100); the server scans the log in bounded steps.",
       {"--type", "--resource", "--source", "--since", "--until", "--limit", "--page-token"},
       {"--newest"},
       RunEvents,
       CheckEvents},
      {"quarantine",
       "quarantine [--limit N] [--page-token T] [--json]",
       "Legacy batch elements the parser refused, kept verbatim, oldest first.",
       {"--limit", "--page-token"},
       {},
       RunQuarantine,
       list_check},
      {"reconcile",
       "reconcile SOURCE [--since T] [--full] [--json]",
       "Asks the PIM behind SOURCE (its `rest` API) for products and product models updated\n"
       "since the watermark (minus reconcile.overlap), or since T, and adds to the log an event\n"
       "for each one newer than what the log has. --full lists everything and also adds a\n"
       "deletion for each product (model) the log knows but the PIM no longer has. Waits for the\n"
       "run to finish (raise --timeout for a large catalogue) and prints its figures.",
       {"--since"},
       {"--full"},
       RunReconcile,
       CheckReconcile},
  };
}

int UsageError(const std::string& message, const Command* command) {
  std::fprintf(stderr, "pimgatectl: %s\n", message.c_str());
  if (command != nullptr) {
    std::fprintf(stderr, "usage: pimgatectl [GLOBAL FLAGS] %s\n", command->usage.c_str());
  } else {
    std::fprintf(stderr, "run `pimgatectl --help` for usage\n");
  }
  return kExitUsage;
}

// "unknown command", with the nearest command when there is one.
int UnknownCommand(const std::string& name) {
  std::vector<std::string> names = {"help", "dlq"};
  for (const Command& command : Commands()) names.push_back(command.name);
  return UsageError(absl::StrCat("unknown command \"", name, "\"", Suggestion(name, names)),
                    nullptr);
}

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Usage(absl::StrCat(flag, ": cannot read \"", path, "\""));
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

}  // namespace

int main(int argc, char** argv) {
  Globals globals;
  globals.admin = Env("PIMGATE_ADMIN");
  if (globals.admin.empty()) globals.admin = kDefaultAdmin;
  globals.token = Env("PIMGATE_ADMIN_TOKEN");

  int i = 1;
  for (; i < argc && absl::StartsWith(argv[i], "-"); ++i) {
    std::string arg = argv[i];
    std::optional<std::string> inline_value;
    if (const std::size_t eq = arg.find('='); eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    const auto value = [&]() -> std::optional<std::string> {
      if (inline_value) return inline_value;
      if (i + 1 < argc) return std::string(argv[++i]);
      return std::nullopt;
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return kExitOk;
    } else if (arg == "--version") {
      std::puts("pimgatectl 0.1.0");
      return kExitOk;
    } else if (arg == "--tls" && !inline_value) {
      globals.tls = true;
    } else if (arg == "--json" && !inline_value) {
      globals.json = true;
    } else if (arg == "--admin" || arg == "--token" || arg == "--token-file" || arg == "--tls-ca" ||
               arg == "--tls-server-name" || arg == "--timeout") {
      const std::optional<std::string> v = value();
      if (!v || v->empty()) return UsageError(arg + " needs a value", nullptr);
      if (arg == "--admin") {
        globals.admin = *v;
      } else if (arg == "--token") {
        globals.token = *v;
      } else if (arg == "--token-file") {
        absl::StatusOr<std::string> token = ReadFile(*v, "--token-file");
        if (!token.ok()) return UsageError(std::string(token.status().message()), nullptr);
        globals.token = std::string(absl::StripTrailingAsciiWhitespace(*token));
      } else if (arg == "--tls-ca") {
        absl::StatusOr<std::string> ca = ReadFile(*v, "--tls-ca");
        if (!ca.ok()) return UsageError(std::string(ca.status().message()), nullptr);
        globals.tls_ca = *std::move(ca);
        globals.tls = true;
      } else if (arg == "--tls-server-name") {
        globals.tls_server_name = *v;
      } else {
        absl::StatusOr<std::chrono::milliseconds> timeout = pimgate::ParseDuration(*v);
        if (!timeout.ok() || timeout->count() <= 0) {
          return UsageError("--timeout must be a duration such as 10s or 2m", nullptr);
        }
        globals.timeout = absl::Milliseconds(timeout->count());
        globals.timeout_set = true;
      }
    } else {
      // A command's flag put first ("--limit") gets the same hint as a global flag put last.
      for (const Command& command : Commands()) {
        if (command.value_flags.contains(arg) || command.switch_flags.contains(arg)) {
          return UsageError(absl::StrCat(arg, " is a flag of a command: put it after the command"),
                            nullptr);
        }
      }
      return UsageError(absl::StrCat("unknown global flag ", arg, Suggestion(arg, GlobalFlags())),
                        nullptr);
    }
  }
  if (i >= argc) return UsageError("missing command", nullptr);

  std::string name = argv[i++];
  if (name == "help") {
    if (i >= argc) {
      std::fputs(kUsage, stdout);
      return kExitOk;
    }
    // `pimgatectl help dlq retry` is `pimgatectl dlq retry --help`.
    name = argv[i++];
    if (name == "dlq" && i < argc) name += std::string(" ") + argv[i++];
    for (const Command& command : Commands()) {
      if (command.name == name) {
        std::printf("usage: pimgatectl [GLOBAL FLAGS] %s\n\n%s\n", command.usage.c_str(),
                    command.help.c_str());
        return kExitOk;
      }
    }
    return UnknownCommand(name);
  }
  if (name == "dlq") {
    if (i >= argc || absl::StartsWith(argv[i], "-")) {
      if (i < argc && (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h")) {
        std::printf(
            "usage:\n  pimgatectl dlq list NAME [--limit N]\n"
            "  pimgatectl dlq retry NAME (--all | SEQ...)\n"
            "  pimgatectl dlq purge NAME (--all | SEQ...)\n");
        return kExitOk;
      }
      return UsageError("dlq needs list, retry or purge", nullptr);
    }
    name += std::string(" ") + argv[i++];
  }
  const std::vector<Command> commands = Commands();
  const Command* command = nullptr;
  for (const Command& candidate : commands) {
    if (candidate.name == name) command = &candidate;
  }
  if (command == nullptr) return UnknownCommand(name);

  std::vector<std::string> rest(argv + i, argv + argc);
  if (std::find(rest.begin(), rest.end(), "--help") != rest.end() ||
      std::find(rest.begin(), rest.end(), "-h") != rest.end()) {
    std::printf("usage: pimgatectl [GLOBAL FLAGS] %s\n\n%s\n", command->usage.c_str(),
                command->help.c_str());
    return kExitOk;
  }
  absl::StatusOr<Args> args = ParseArgs(rest, command->value_flags, command->switch_flags);
  if (!args.ok()) return UsageError(std::string(args.status().message()), command);
  args->json = args->json || globals.json;
  if (absl::Status status = command->check(*args); !status.ok()) {
    return UsageError(std::string(status.message()), command);
  }
  AdminClient client(globals);
  return command->run(client, *args);
}
