// pimgatectl as a subprocess against a real pimgate process (admin API on 127.0.0.1:0) that
// launches a real recorder plugin: exit codes, readable tables and --json output.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/json_util.h"
#include "pimgate/v1/admin.pb.h"
#include "tests/testing/cli.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using testing::HttpClient;
using testing::PimgateProcess;
using testing::TempDir;

constexpr char kToken[] = "cli-test-token";
constexpr char kSecret[] = "cli-legacy-secret";

using Result = testing::CommandResult;
using testing::ParseJson;
using testing::WaitFor;

std::string ReadAll(const std::string& path) { return testing::ReadWholeFile(path); }

class PimgatectlTest : public ::testing::Test {
 protected:
  // More entries for `plugins:` (YAML, indented by 2), after `rec`.
  virtual std::string MorePlugins() { return ""; }

  void SetUp() override {
    std::ofstream(dir_.File("token")) << kToken << "\n";
    std::ostringstream yaml;
    yaml << "gateway:\n  listen: 127.0.0.1:0\n  threads: 2\n"
         << "store:\n  path: " << dir_.File("store") << "\n"
         << "sources:\n  - {name: legacy, kind: events_api, path: /hooks/legacy, secret: "
         << kSecret << "}\n"
         << "plugins:\n  - name: rec\n    command: [\"" << PIMGATE_E2E_RECORDER << "\"]\n"
         << "    env:\n      RECORDER_OUT: " << dir_.File("rec.jsonl") << "\n"
         << "      RECORDER_REJECT_RESOURCE: reject-me\n"
         << "    ack_timeout: 5s\n    start_timeout: 20s\n    stop_timeout: 3s\n"
         << MorePlugins() << "admin:\n  listen: 127.0.0.1:0\n  token: file:" << dir_.File("token")
         << "\n"
         << "metrics:\n  listen: 127.0.0.1:0\n";
    std::ofstream(dir_.File("pimgate.yaml")) << yaml.str();
    StartPimgate();
  }

  // Starts pimgate on the config SetUp wrote (again, after Terminate(): same store).
  void StartPimgate() {
    pimgate_ = std::make_unique<PimgateProcess>(dir_.File("pimgate.yaml"), dir_.File("ready.json"));
    gateway_port_ = pimgate_->WaitReady();
    ASSERT_NE(gateway_port_, 0) << "pimgate did not start";
    const std::string ready = ReadAll(dir_.File("ready.json"));
    const std::size_t pos = ready.find("\"admin_port\":");
    ASSERT_NE(pos, std::string::npos) << ready;
    admin_port_ = std::stoi(ready.substr(pos + 13));
    ASSERT_GT(admin_port_, 0) << ready;
  }

  void TearDown() override { EXPECT_EQ(pimgate_->Terminate(), 0); }

  // Runs pimgatectl with `args` (global flags included), PIMGATE_ADMIN pointing at this
  // pimgate and, unless `token` is empty, PIMGATE_ADMIN_TOKEN set.
  Result Ctl(const std::vector<std::string>& args, const std::string& token = kToken) {
    return testing::RunPimgatectl(PIMGATECTL_BINARY, admin_port_, token, args, dir_.path());
  }

  // Ctl that must succeed.
  std::string Ok(const std::vector<std::string>& args) {
    Result result = Ctl(args);
    EXPECT_EQ(result.exit_code, 0) << absl::StrJoin(args, " ") << "\n" << result.err;
    return result.out;
  }

  // Posts legacy product events for these resources (one request); returns the HTTP status.
  int Post(const std::vector<std::string>& resources, std::vector<std::string>* ids = nullptr) {
    std::vector<std::string> elements;
    for (const std::string& resource : resources) {
      const std::string id = testing::NewUuid();
      if (ids != nullptr) ids->push_back(id);
      elements.push_back(testing::LegacyProductEvent("product.updated", id, resource));
    }
    const std::string body = testing::LegacyBatch(elements);
    HttpClient client(gateway_port_, /*tls=*/false);
    return client.Send("POST", "/hooks/legacy", body, testing::LegacyHeaders(kSecret, body)).status;
  }

  // Deliveries a recorder plugin saw, as "sequence:attempt" strings (with `pid`: and its pid).
  std::vector<std::string> Deliveries(const std::string& plugin = "rec", bool pid = false) {
    std::vector<std::string> out;
    const std::vector<std::string> lines =
        absl::StrSplit(ReadAll(dir_.File(plugin + ".jsonl")), '\n');
    for (const std::string& line : lines) {
      if (line.empty() || line.back() != '}') continue;
      const auto field = [&line](const std::string& name) {
        std::size_t pos = line.find("\"" + name + "\":");
        if (pos == std::string::npos) return std::string();
        pos += name.size() + 3;
        return line.substr(pos, line.find_first_of(",}", pos) - pos);
      };
      out.push_back(absl::StrCat(field("sequence"), ":", field("attempt"),
                                 pid ? ":" + field("pid") : std::string()));
    }
    return out;
  }

  v1::PluginStats RecStats() {
    return ParseJson<v1::GetStatsResponse>(Ok({"stats", "--json"})).plugins(0);
  }

  // Posts a stale marker (an older version of `resource`, posted before) and waits until rec's
  // dispatcher has counted it; returns rec's stats then. The dispatcher counts it only once it
  // has read every event before it and decided on them: checks that nothing was delivered hold
  // over a window that demonstrably passed in pimgate, not over a sleep.
  v1::PluginStats PostStaleMarkerAndWait(const std::string& resource,
                                         const v1::PluginStats& before) {
    const std::string body = testing::LegacyBatch({testing::LegacyProductEvent(
        "product.updated", testing::NewUuid(), resource, "2026-11-20T10:00:00+00:00")});
    HttpClient client(gateway_port_, /*tls=*/false);
    EXPECT_EQ(
        client.Send("POST", "/hooks/legacy", body, testing::LegacyHeaders(kSecret, body)).status,
        200);
    v1::PluginStats stats;
    EXPECT_TRUE(WaitFor([&] {
      stats = RecStats();
      return stats.skipped_stale() == before.skipped_stale() + 1;
    })) << stats.ShortDebugString();
    return stats;
  }

  // rec has one dead letter, and it is not being retried (a retry of it is over).
  bool RetryOver() {
    const auto listed =
        ParseJson<v1::ListDeadLettersResponse>(Ok({"dlq", "list", "rec", "--json"}));
    return listed.dead_letters_size() == 1 && !listed.dead_letters(0).has_retry_requested_at();
  }

  std::size_t DeadLetterCount() {
    return ParseJson<v1::ListDeadLettersResponse>(Ok({"dlq", "list", "rec", "--json"}))
        .dead_letters_size();
  }

  // Posts ok-1, reject-me, ok-2 (sequences 1, 2, 3) and waits until the plugin has seen them
  // and sequence 2 is dead-lettered.
  void PostThree(std::vector<std::string>* ids = nullptr) {
    ASSERT_EQ(Post({"ok-1", "reject-me", "ok-2"}, ids), 200);
    ASSERT_TRUE(WaitFor([&] { return DeadLetterCount() == 1; })) << ReadAll(dir_.File("rec.jsonl"));
    ASSERT_TRUE(WaitFor([&] {
      auto stats = ParseJson<v1::GetStatsResponse>(Ok({"stats", "--json"}));
      return stats.plugins_size() == 1 && stats.plugins(0).cursor() == 3;
    }));
  }

  TempDir dir_;
  std::unique_ptr<PimgateProcess> pimgate_;
  uint16_t gateway_port_ = 0;
  int admin_port_ = 0;
};

TEST_F(PimgatectlTest, ExitCodesAndTokenSources) {
  // No token, wrong token: 3, with the gRPC error on stderr.
  Result none = Ctl({"stats"}, "");
  EXPECT_EQ(none.exit_code, 3);
  EXPECT_TRUE(absl::StrContains(none.err, "UNAUTHENTICATED")) << none.err;
  EXPECT_TRUE(none.out.empty());
  EXPECT_EQ(Ctl({"stats"}, "wrong").exit_code, 3);
  // The token from the environment, a flag, a file.
  EXPECT_EQ(Ctl({"stats"}).exit_code, 0);
  EXPECT_EQ(Ctl({"--token", kToken, "stats"}, "").exit_code, 0);
  EXPECT_EQ(Ctl({"--token-file", dir_.File("token"), "stats"}, "").exit_code, 0);
  // --admin overrides $PIMGATE_ADMIN.
  EXPECT_EQ(Ctl({"--admin", absl::StrCat("127.0.0.1:", admin_port_), "plugins"}).exit_code, 0);

  // Not found: 4. Unreachable: 5. Usage: 2. Any other failure: 1.
  Result unknown = Ctl({"pause", "erp"});
  EXPECT_EQ(unknown.exit_code, 4);
  EXPECT_TRUE(absl::StrContains(unknown.err, "NOT_FOUND: no plugin named \"erp\"")) << unknown.err;
  EXPECT_EQ(Ctl({"event", "999"}).exit_code, 4);
  Result unreachable = Ctl({"--admin", "127.0.0.1:1", "--timeout", "5s", "stats"});
  EXPECT_EQ(unreachable.exit_code, 5);
  EXPECT_TRUE(absl::StrContains(unreachable.err, "UNAVAILABLE")) << unreachable.err;
  EXPECT_EQ(Ctl({"stats", "--token", kToken}).exit_code, 2);  // global flag after the command
  EXPECT_EQ(Ctl({"seek", "rec"}).exit_code, 2);
  EXPECT_EQ(Ctl({"dlq", "retry", "rec"}).exit_code, 2);
  EXPECT_EQ(Ctl({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(Ctl({}).exit_code, 2);
  Result reconcile = Ctl({"reconcile", "legacy"});
  EXPECT_EQ(reconcile.exit_code, 1);
  EXPECT_TRUE(
      absl::StrContains(reconcile.err, "FAILED_PRECONDITION: source legacy has no `rest` section"))
      << reconcile.err;
  EXPECT_EQ(Ctl({"reconcile", "erp"}).exit_code, 4);

  // Help.
  Result help = Ctl({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(help.out, "Commands:"));
  Result seek_help = Ctl({"seek", "--help"});
  EXPECT_EQ(seek_help.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(seek_help.out, "seek NAME (--sequence N | --time T)"));
  EXPECT_EQ(Ctl({"help", "dlq", "retry"}).exit_code, 0);
}

TEST_F(PimgatectlTest, StatsAndPlugins) {
  PostThree();
  const std::string table = Ok({"stats"});
  EXPECT_TRUE(absl::StrContains(table, "LOG  head 3  first 1  events 3")) << table;
  EXPECT_TRUE(absl::StrContains(table, "REQUESTS BY CODE")) << table;
  EXPECT_TRUE(absl::StrContains(table, "200:1")) << table;
  EXPECT_TRUE(absl::StrContains(table, "PLUGIN")) << table;

  auto stats = ParseJson<v1::GetStatsResponse>(Ok({"stats", "--json"}));
  EXPECT_EQ(stats.log().head_sequence(), 3u);
  ASSERT_EQ(stats.sources_size(), 1);
  EXPECT_EQ(stats.sources(0).name(), "legacy");
  EXPECT_EQ(stats.sources(0).requests_by_code().at(200), 1u);
  EXPECT_EQ(stats.sources(0).events_accepted(), 3u);
  ASSERT_EQ(stats.plugins_size(), 1);
  EXPECT_EQ(stats.plugins(0).name(), "rec");
  EXPECT_EQ(stats.plugins(0).delivered(), 2u);
  EXPECT_EQ(stats.plugins(0).dead_lettered(), 1u);
  EXPECT_EQ(stats.plugins(0).lag(), 0u);

  // The dispatcher may reach the plugin before the supervisor's health watch has seen it serve:
  // "serving" can follow the deliveries by a few milliseconds.
  v1::ListPluginsResponse plugins;
  EXPECT_TRUE(WaitFor([&] {
    plugins = ParseJson<v1::ListPluginsResponse>(Ok({"plugins", "--json"}));
    return plugins.plugins_size() == 1 && plugins.plugins(0).process_state() == "serving";
  })) << plugins.ShortDebugString();
  ASSERT_EQ(plugins.plugins_size(), 1);
  EXPECT_EQ(plugins.plugins(0).process_state(), "serving");
  EXPECT_GT(plugins.plugins(0).pid(), 0u);
  const std::string plugins_table = Ok({"plugins"});
  const std::vector<std::string> lines = absl::StrSplit(plugins_table, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << plugins_table;
  EXPECT_TRUE(absl::StartsWith(lines[0], "NAME  PROCESS  PID")) << plugins_table;
  EXPECT_TRUE(absl::StartsWith(lines[1], "rec   serving  ")) << plugins_table;
  EXPECT_TRUE(absl::StrContains(lines[1], absl::StrCat(plugins.plugins(0).pid())));

  // The embedded store has no cluster dispatch: this node delivers everything.
  EXPECT_TRUE(absl::StrContains(Ok({"owners"}), "no cluster dispatch")) << Ok({"owners"});
  EXPECT_FALSE(ParseJson<v1::ListOwnersResponse>(Ok({"owners", "--json"})).cluster());
}

TEST_F(PimgatectlTest, EventsAndEvent) {
  std::vector<std::string> ids;
  PostThree(&ids);
  auto all = ParseJson<v1::ListEventsResponse>(Ok({"events", "--json"}));
  ASSERT_EQ(all.events_size(), 3);
  EXPECT_EQ(all.events(1).resource_id(), "reject-me");
  EXPECT_TRUE(all.next_page_token().empty());

  auto limited = ParseJson<v1::ListEventsResponse>(
      Ok({"events", "--type", "product.*", "--limit", "2", "--json"}));
  EXPECT_EQ(limited.events_size(), 2);
  EXPECT_EQ(limited.next_page_token(), "3");
  auto newest =
      ParseJson<v1::ListEventsResponse>(Ok({"events", "--newest", "--limit", "1", "--json"}));
  ASSERT_EQ(newest.events_size(), 1);
  EXPECT_EQ(newest.events(0).sequence(), 3u);
  auto none = ParseJson<v1::ListEventsResponse>(
      Ok({"events", "--since", "2099-01-01T00:00:00Z", "--json"}));
  EXPECT_EQ(none.events_size(), 0);
  auto recent = ParseJson<v1::ListEventsResponse>(Ok({"events", "--since", "1h", "--json"}));
  EXPECT_EQ(recent.events_size(), 3);

  const std::string table = Ok({"events", "--resource", "reject-me"});
  const std::vector<std::string> lines = absl::StrSplit(table, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << table;
  EXPECT_TRUE(absl::StartsWith(lines[0], "SEQ  RECEIVED")) << table;
  EXPECT_TRUE(absl::StartsWith(lines[1], "2    ")) << table;
  EXPECT_TRUE(absl::StrContains(lines[1], "legacy  product.updated  reject-me")) << table;
  EXPECT_TRUE(absl::StrContains(Ok({"events", "--resource", "nope"}), "no matching events"));

  auto event = ParseJson<v1::Event>(Ok({"event", "2", "--json"}));
  EXPECT_EQ(event.id(), ids[1]);
  const std::string by_id = Ok({"event", "--source", "legacy", "--id", ids[2]});
  EXPECT_TRUE(absl::StrContains(by_id, "sequence     3")) << by_id;
  EXPECT_TRUE(absl::StrContains(by_id, "resource_id  ok-2")) << by_id;
  EXPECT_TRUE(absl::StrContains(by_id, "data:")) << by_id;
  EXPECT_EQ(Ctl({"event", "--source", "legacy", "--id", "nope"}).exit_code, 4);
}

TEST_F(PimgatectlTest, DeadLettersRetryAndPurge) {
  PostThree();
  const std::string table = Ok({"dlq", "list", "rec"});
  EXPECT_TRUE(absl::StrContains(table, "SEQ  TYPE")) << table;
  EXPECT_TRUE(absl::StrContains(table, "reject-me")) << table;
  EXPECT_TRUE(absl::StrContains(table, "rejected")) << table;
  EXPECT_TRUE(absl::StrContains(table, "scripted reject")) << table;

  // Filters, applied by pimgate: each one, and together.
  for (const std::vector<std::string>& filter :
       std::vector<std::vector<std::string>>{{"--type", "product.*"},
                                             {"--resource", "reject-me"},
                                             {"--kind", "rejected"},
                                             {"--reason", "SCRIPTED"},
                                             {"--type", "*.updated", "--resource", "reject-me",
                                              "--kind", "rejected", "--reason", "reject"}}) {
    std::vector<std::string> args = {"dlq", "list", "rec", "--json"};
    args.insert(args.end(), filter.begin(), filter.end());
    auto listed = ParseJson<v1::ListDeadLettersResponse>(Ok(args));
    ASSERT_EQ(listed.dead_letters_size(), 1) << absl::StrJoin(filter, " ");
    EXPECT_EQ(listed.dead_letters(0).event().sequence(), 2u);
    EXPECT_EQ(listed.scanned(), 1u);
  }
  for (const std::vector<std::string>& filter :
       std::vector<std::vector<std::string>>{{"--type", "product_model.*"},
                                             {"--resource", "ok-1"},
                                             {"--kind", "exhausted"},
                                             {"--reason", "timeout"},
                                             {"--kind", "rejected", "--resource", "ok-2"}}) {
    std::vector<std::string> args = {"dlq", "list", "rec"};
    args.insert(args.end(), filter.begin(), filter.end());
    const std::string none = Ok(args);
    EXPECT_EQ(none, "no dead letter of plugin rec matches (1 examined)\n")
        << absl::StrJoin(filter, " ");
  }
  Result bad_kind = Ctl({"dlq", "list", "rec", "--kind", "dead"});
  EXPECT_EQ(bad_kind.exit_code, 2);
  EXPECT_TRUE(
      absl::StrContains(bad_kind.err, "--kind must be rejected, exhausted or any, got \"dead\""))
      << bad_kind.err;
  Result bad_type = Ctl({"dlq", "list", "rec", "--type", "Product.*"});
  EXPECT_EQ(bad_type.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(bad_type.err,
                                "--type must use only a-z, 0-9, _, . and *, got \"Product.*\""))
      << bad_type.err;

  // Retried: delivered again from attempt 1 (and rejected again by the script). The letter stays
  // listed throughout: marked while the retry runs, then replaced by the new rejection.
  auto retried =
      ParseJson<v1::RetryDeadLettersResponse>(Ok({"dlq", "retry", "rec", "--all", "--json"}));
  ASSERT_EQ(retried.sequences_size(), 1);
  EXPECT_EQ(retried.sequences(0), 2u);
  ASSERT_TRUE(WaitFor([&] {
    auto d = Deliveries();
    return std::count(d.begin(), d.end(), "2:1") == 2;
  })) << absl::StrJoin(Deliveries(), " ");
  ASSERT_TRUE(WaitFor([&] { return RetryOver(); }));

  Result missing = Ctl({"dlq", "purge", "rec", "3"});
  EXPECT_EQ(missing.exit_code, 4);
  EXPECT_TRUE(absl::StrContains(missing.err, "no dead letter for sequence 3")) << missing.err;
  const std::string retried_text = Ok({"dlq", "retry", "rec", "2"});
  EXPECT_TRUE(absl::StrContains(retried_text, "handed 1 dead letter(s) back to plugin rec: 2"))
      << retried_text;
  ASSERT_TRUE(WaitFor([&] {
    auto d = Deliveries();
    return std::count(d.begin(), d.end(), "2:1") == 3;
  })) << absl::StrJoin(Deliveries(), " ");
  ASSERT_TRUE(WaitFor([&] { return RetryOver(); }));
  auto purged =
      ParseJson<v1::PurgeDeadLettersResponse>(Ok({"dlq", "purge", "rec", "--all", "--json"}));
  EXPECT_EQ(purged.purged(), 1u);
  EXPECT_TRUE(absl::StrContains(Ok({"dlq", "list", "rec"}), "plugin rec has no dead letters"));
  EXPECT_EQ(Ctl({"dlq", "list", "erp"}).exit_code, 4);
}

TEST_F(PimgatectlTest, SeekReplaysAndPauseHolds) {
  PostThree();
  const std::size_t before = Deliveries().size();

  auto seek = ParseJson<v1::SeekPluginResponse>(Ok({"seek", "rec", "--sequence", "1", "--json"}));
  EXPECT_EQ(seek.sequence(), 1u);
  EXPECT_EQ(seek.head_sequence(), 3u);
  EXPECT_EQ(seek.events_to_replay(), 3u);
  ASSERT_TRUE(WaitFor([&] { return Deliveries().size() == before + 3; }))
      << absl::StrJoin(Deliveries(), " ");

  // By time: before every event replays all; after every event skips to the end.
  const std::string from_start = Ok({"seek", "rec", "--time", "2000-01-01T00:00:00Z"});
  EXPECT_TRUE(absl::StrContains(from_start, "replaying from sequence 1 (3 event(s) up to head 3)"))
      << from_start;
  ASSERT_TRUE(WaitFor([&] { return Deliveries().size() == before + 6; }));
  const std::string to_end = Ok({"seek", "rec", "--time", "2099-01-01T00:00:00Z"});
  EXPECT_TRUE(absl::StrContains(to_end, "skipped to the end of the log")) << to_end;
  EXPECT_EQ(Ctl({"seek", "rec", "--sequence", "9"}).exit_code, 1);  // OUT_OF_RANGE

  // Paused: new events are held.
  EXPECT_TRUE(absl::StrContains(Ok({"pause", "rec"}), "plugin rec paused"));
  ASSERT_TRUE(WaitFor([&] {
    auto plugins = ParseJson<v1::ListPluginsResponse>(Ok({"plugins", "--json"}));
    return plugins.plugins(0).delivery_state() == "paused";
  }));
  const std::size_t paused_at = Deliveries().size();
  const v1::PluginStats at_pause = RecStats();
  ASSERT_EQ(Post({"ok-3"}), 200);
  const v1::PluginStats held = PostStaleMarkerAndWait("ok-3", at_pause);
  EXPECT_EQ(held.in_flight(), 0u);
  EXPECT_EQ(held.delivered(), at_pause.delivered());
  EXPECT_EQ(held.lag(), 2u);
  EXPECT_EQ(Deliveries().size(), paused_at);
  EXPECT_TRUE(absl::StrContains(Ok({"resume", "rec"}), "plugin rec resumed"));
  ASSERT_TRUE(WaitFor([&] { return Deliveries().size() == paused_at + 1; }));
  EXPECT_EQ(Deliveries().back(), "4:1");
}

TEST_F(PimgatectlTest, JsonBeforeTheCommandAndDidYouMean) {
  // --json before the command is the same as after it.
  auto stats = ParseJson<v1::GetStatsResponse>(Ok({"--json", "stats"}));
  ASSERT_EQ(stats.plugins_size(), 1);
  EXPECT_EQ(stats.plugins(0).name(), "rec");

  Result typo = Ctl({"--jsn", "stats"});
  EXPECT_EQ(typo.exit_code, 2);
  EXPECT_EQ(typo.err,
            "pimgatectl: unknown global flag --jsn; did you mean --json?\n"
            "run `pimgatectl --help` for usage\n");
  Result early = Ctl({"--limit", "5", "events"});
  EXPECT_EQ(early.exit_code, 2);
  EXPECT_TRUE(absl::StartsWith(
      early.err, "pimgatectl: --limit is a flag of a command: put it after the command"))
      << early.err;
  Result command = Ctl({"stat"});
  EXPECT_EQ(command.exit_code, 2);
  EXPECT_TRUE(
      absl::StartsWith(command.err, "pimgatectl: unknown command \"stat\"; did you mean stats?\n"))
      << command.err;
  EXPECT_TRUE(absl::StrContains(Ctl({"pluggins"}).err, "did you mean plugins?"));
  EXPECT_TRUE(absl::StrContains(Ctl({"dlq", "lst", "rec"}).err, "did you mean dlq list?"));
  EXPECT_TRUE(absl::StrContains(Ctl({"restrat", "rec"}).err, "did you mean restart?"));
  EXPECT_EQ(Ctl({"frobnicate"}).err,
            "pimgatectl: unknown command \"frobnicate\"\nrun `pimgatectl --help` for usage\n");
  Result flag = Ctl({"restart", "rec", "--drain-timout", "1s"});
  EXPECT_EQ(flag.exit_code, 2);
  EXPECT_TRUE(absl::StartsWith(flag.err,
                               "pimgatectl: unknown flag --drain-timout; did you mean "
                               "--drain-timeout?\n"))
      << flag.err;
}

// The value under `column` in the row of `name` of a table printed by pimgatectl.
std::string Cell(const std::string& table, const std::string& column, const std::string& name) {
  const std::vector<std::string> lines = absl::StrSplit(table, '\n');
  std::size_t header = 0;
  while (header < lines.size() && lines[header].find(column) == std::string::npos) ++header;
  if (header == lines.size()) return "<no column " + column + ">";
  const std::size_t at = lines[header].find(column);
  for (std::size_t i = header + 1; i < lines.size() && !lines[i].empty(); ++i) {
    if (!absl::StartsWith(lines[i], name + " ")) continue;
    const std::size_t end = lines[i].find("  ", at);
    return lines[i].substr(at, end == std::string::npos ? std::string::npos : end - at);
  }
  return "<no row " + name + ">";
}

TEST_F(PimgatectlTest, DeadNowComesFromTheStoreAndDeadTotalCountsSinceStart) {
  PostThree();  // one dead letter
  std::string table = Ok({"stats"});
  EXPECT_EQ(Cell(table, "DEAD NOW", "rec"), "1") << table;
  EXPECT_EQ(Cell(table, "DEAD TOTAL", "rec"), "1") << table;
  // Caught up: the stream reads idle, in both commands.
  ASSERT_TRUE(WaitFor([&] { return Cell(Ok({"stats"}), "DELIVERY", "rec") == "idle"; }));
  EXPECT_EQ(Cell(Ok({"plugins"}), "DELIVERY", "rec"), "idle");

  ASSERT_EQ(Ok({"dlq", "purge", "rec", "--all"}), "purged 1 dead letter(s) of plugin rec\n");
  table = Ok({"stats"});
  EXPECT_EQ(Cell(table, "DEAD NOW", "rec"), "0") << table;  // what `dlq list` shows
  EXPECT_EQ(Cell(table, "DEAD TOTAL", "rec"), "1") << table;
  EXPECT_TRUE(absl::StrContains(Ok({"dlq", "list", "rec"}), "plugin rec has no dead letters"));
  auto stats = ParseJson<v1::GetStatsResponse>(Ok({"stats", "--json"}));
  EXPECT_EQ(stats.plugins(0).dead_letters_stored(), 0u);
  EXPECT_EQ(stats.plugins(0).dead_lettered(), 1u);
  EXPECT_EQ(Cell(table, "LAST ERROR", "rec"), "-");
}

TEST_F(PimgatectlTest, PauseSurvivesARestartOfPimgate) {
  PostThree();
  ASSERT_TRUE(absl::StrContains(Ok({"pause", "rec"}), "plugin rec paused"));
  ASSERT_EQ(pimgate_->Terminate(), 0);
  StartPimgate();
  auto plugins = ParseJson<v1::ListPluginsResponse>(Ok({"plugins", "--json"}));
  EXPECT_EQ(plugins.plugins(0).delivery_state(), "paused");
  EXPECT_EQ(Cell(Ok({"stats"}), "DELIVERY", "rec"), "paused");
  const std::size_t before = Deliveries().size();
  const v1::PluginStats at_start = RecStats();
  ASSERT_EQ(Post({"ok-3"}), 200);
  const v1::PluginStats held = PostStaleMarkerAndWait("ok-3", at_start);
  EXPECT_EQ(held.in_flight(), 0u);
  EXPECT_EQ(held.delivered(), 0u);
  EXPECT_EQ(held.lag(), 2u);
  EXPECT_EQ(Deliveries().size(), before);
  EXPECT_TRUE(absl::StrContains(Ok({"resume", "rec"}), "plugin rec resumed"));
  ASSERT_TRUE(WaitFor([&] { return Deliveries().size() == before + 1; }));
  EXPECT_EQ(Deliveries().back(), "4:1");
}

// With a slow plugin (each delivery takes 1.5 s) and one that cannot start.
class PimgatectlPluginsTest : public PimgatectlTest {
 protected:
  std::string MorePlugins() override {
    return absl::StrCat(
        "  - name: slow\n    command: [\"", PIMGATE_E2E_RECORDER, "\"]\n",
        "    env: {RECORDER_OUT: ", dir_.File("slow.jsonl"), ", RECORDER_GATE: ", Gate(), "}\n",
        "    ack_timeout: 60s\n    stop_timeout: 3s\n    retry: {max_attempts: 1}\n",
        "  - name: broken\n",
        "    command: [/bin/sh, -c, \"echo 'Traceback (most recent call last):' >&2; ",
        "echo \\\"ModuleNotFoundError: No module named 'grpc'\\\" >&2; exit 1\"]\n",
        "    restart: {initial_backoff: 100ms, max_backoff: 200ms}\n");
  }

  // While this file is missing, the `slow` plugin's handler calls wait: its deliveries stay in
  // flight for as long as a test needs.
  std::string Gate() { return dir_.File("slow.gate"); }
  void OpenGate() { std::ofstream(Gate()) << "open\n"; }
  void CloseGate() { std::remove(Gate().c_str()); }

  v1::PluginStats SlowStats() {
    const auto stats = ParseJson<v1::GetStatsResponse>(Ok({"stats", "--json"}));
    for (const v1::PluginStats& p : stats.plugins()) {
      if (p.name() == "slow") return p;
    }
    ADD_FAILURE() << "no plugin slow";
    return {};
  }

  v1::PluginInfo Info(const std::string& name) {
    const auto plugins = ParseJson<v1::ListPluginsResponse>(Ok({"plugins", "--json"}));
    for (const v1::PluginInfo& p : plugins.plugins()) {
      if (p.name() == name) return p;
    }
    ADD_FAILURE() << "no plugin " << name;
    return {};
  }
};

TEST_F(PimgatectlPluginsTest, APluginThatKeepsExitingShowsItsStderr) {
  ASSERT_TRUE(WaitFor([&] { return Info("broken").restarts() >= 1; }));
  const v1::PluginInfo broken = Info("broken");
  EXPECT_EQ(broken.process_error(), "exited with status 1");
  EXPECT_EQ(
      std::vector<std::string>(broken.process_stderr().begin(), broken.process_stderr().end()),
      (std::vector<std::string>{"Traceback (most recent call last):",
                                "ModuleNotFoundError: No module named 'grpc'"}));
  const std::string table = Ok({"plugins"});
  EXPECT_TRUE(absl::StrContains(table,
                                "\nbroken exited with status 1; its last stderr lines:\n"
                                "  | Traceback (most recent call last):\n"
                                "  | ModuleNotFoundError: No module named 'grpc'\n"))
      << table;
  // The same words for the same problem in `stats` and `plugins`.
  EXPECT_EQ(Cell(table, "LAST ERROR", "broken"), "process: exited with status 1");
  EXPECT_EQ(Cell(Ok({"stats"}), "LAST ERROR", "broken"), "process: exited with status 1");
}

TEST_F(PimgatectlPluginsTest, RestartDrainsStopsStartsAndKeepsPause) {
  ASSERT_TRUE(WaitFor([&] { return Info("slow").process_state() == "serving"; }));
  const uint32_t first_pid = Info("slow").pid();
  // Three deliveries in flight, held by the gate. The restart holds the plugin's events and
  // waits for their answers: the gate opens once the hold is seen, and the restart ends after.
  ASSERT_EQ(Post({"r-1", "r-2", "r-3"}), 200);
  ASSERT_TRUE(WaitFor([&] { return SlowStats().in_flight() == 3; }));
  const std::string scratch = dir_.File("restart");
  std::filesystem::create_directories(scratch);
  std::future<Result> restart = std::async(std::launch::async, [&] {
    return testing::RunPimgatectl(PIMGATECTL_BINARY, admin_port_, kToken, {"restart", "slow"},
                                  scratch);
  });
  ASSERT_TRUE(WaitFor([&] { return SlowStats().state() == "restarting"; }));
  EXPECT_EQ(Info("slow").pid(), first_pid) << "stopped before its deliveries were answered";
  OpenGate();
  const Result restarted = restart.get();
  ASSERT_EQ(restarted.exit_code, 0) << restarted.err;
  const uint32_t second_pid = Info("slow").pid();
  EXPECT_EQ(restarted.out,
            absl::StrCat("plugin slow restarted: pid ", first_pid, " -> ", second_pid,
                         "; 3 delivery(ies) in flight, 0 of them sent again to the new process\n"));
  EXPECT_NE(second_pid, first_pid);
  v1::PluginInfo slow = Info("slow");
  EXPECT_EQ(slow.process_state(), "serving");
  EXPECT_EQ(slow.restarts(), 0u) << "not a crash";
  EXPECT_EQ(slow.cursor(), 3u);
  std::vector<std::string> seen = Deliveries("slow", /*pid=*/true);
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, (std::vector<std::string>{absl::StrCat("1:1:", first_pid),
                                            absl::StrCat("2:1:", first_pid),
                                            absl::StrCat("3:1:", first_pid)}));

  // A drain that does not wait: the deliveries in flight go again to the new process, as
  // attempt 2, and (max_attempts 1) are not dead-lettered: a restart is not their failure.
  CloseGate();
  ASSERT_EQ(Post({"r-4", "r-5"}), 200);
  ASSERT_TRUE(WaitFor([&] { return SlowStats().in_flight() == 2; }));
  auto quick = ParseJson<v1::RestartPluginResponse>(
      Ok({"restart", "slow", "--drain-timeout", "1ms", "--json"}));
  EXPECT_EQ(quick.in_flight(), 2u);
  EXPECT_EQ(quick.redelivered(), 2u);
  EXPECT_EQ(quick.old_pid(), second_pid);
  const std::string third_pid = absl::StrCat(quick.new_pid());
  OpenGate();
  ASSERT_TRUE(WaitFor([&] { return Info("slow").cursor() == 5; }));
  seen = Deliveries("slow", /*pid=*/true);
  EXPECT_NE(std::find(seen.begin(), seen.end(), "4:2:" + third_pid), seen.end())
      << absl::StrJoin(seen, " ");
  EXPECT_NE(std::find(seen.begin(), seen.end(), "5:2:" + third_pid), seen.end())
      << absl::StrJoin(seen, " ");
  const v1::PluginStats stats = SlowStats();
  EXPECT_EQ(stats.dead_letters_stored(), 0u);
  EXPECT_EQ(stats.retried(), 0u);

  // Pause, restart, still paused.
  ASSERT_TRUE(absl::StrContains(Ok({"pause", "slow"}), "plugin slow paused"));
  Ok({"restart", "slow"});
  EXPECT_EQ(Info("slow").delivery_state(), "paused");

  // Not for a plugin pimgate cannot run... or restart: the failing one reports why.
  Result broken = Ctl({"restart", "broken"});
  EXPECT_EQ(broken.exit_code, 1);
  EXPECT_TRUE(
      absl::StrContains(broken.err,
                        "FAILED_PRECONDITION: plugin broken was stopped but the new process "
                        "did not start: exited with status 1; its last stderr lines:\n"
                        "Traceback (most recent call last):\n"))
      << broken.err;
  EXPECT_EQ(Ctl({"restart", "nope"}).exit_code, 4);
}

// With a plugin whose answers the test scripts through files: it waits while its gate file is
// missing, and rejects while its reject file exists.
class PimgatectlRetryTest : public PimgatectlTest {
 protected:
  std::string MorePlugins() override {
    return absl::StrCat(
        "  - name: flaky\n    command: [\"", PIMGATE_E2E_RECORDER, "\"]\n",
        "    env: {RECORDER_OUT: ", dir_.File("flaky.jsonl"),
        ", RECORDER_GATE: ", dir_.File("flaky.gate"),
        ", RECORDER_REJECT_WHILE: ", dir_.File("flaky.reject"), "}\n",
        "    ack_timeout: 60s\n    stop_timeout: 3s\n    retry: {max_attempts: 1}\n");
  }
  void SetGate(bool open) { SetFile(dir_.File("flaky.gate"), open); }
  void SetRejecting(bool reject) { SetFile(dir_.File("flaky.reject"), reject); }
  static void SetFile(const std::string& path, bool exists) {
    if (exists) {
      std::ofstream(path) << "yes\n";
    } else {
      std::remove(path.c_str());
    }
  }
  v1::ListDeadLettersResponse FlakyLetters() {
    return ParseJson<v1::ListDeadLettersResponse>(Ok({"dlq", "list", "flaky", "--json"}));
  }
  v1::PluginStats FlakyStats() {
    const auto stats = ParseJson<v1::GetStatsResponse>(Ok({"stats", "--json"}));
    for (const v1::PluginStats& p : stats.plugins()) {
      if (p.name() == "flaky") return p;
    }
    ADD_FAILURE() << "no plugin flaky";
    return {};
  }
};

// kill -9 while the plugin holds a retried dead letter: the letter is still listed after the
// restart, the retry resumes by itself, and the letter goes once the plugin acknowledges it.
TEST_F(PimgatectlRetryTest, Kill9DuringARetryKeepsTheLetterAndTheRetryResumes) {
  SetGate(true);
  SetRejecting(true);
  ASSERT_EQ(Post({"fix-me"}), 200);  // sequence 1
  ASSERT_TRUE(WaitFor([&] { return FlakyLetters().dead_letters_size() == 1; }));

  SetRejecting(false);  // the operator fixed the cause...
  SetGate(false);       // ...and the plugin will hold the redelivery without answering
  const std::string retried = Ok({"dlq", "retry", "flaky", "--all"});
  EXPECT_TRUE(absl::StrContains(retried, "handed 1 dead letter(s) back to plugin flaky: 1"))
      << retried;
  ASSERT_TRUE(WaitFor([&] { return FlakyStats().in_flight() == 1; }));
  v1::ListDeadLettersResponse letters = FlakyLetters();
  ASSERT_EQ(letters.dead_letters_size(), 1);
  EXPECT_TRUE(letters.dead_letters(0).has_retry_requested_at());

  pimgate_->Kill();
  StartPimgate();
  letters = FlakyLetters();
  ASSERT_EQ(letters.dead_letters_size(), 1) << "the retried letter was lost in the crash";
  EXPECT_EQ(letters.dead_letters(0).event().sequence(), 1u);
  EXPECT_TRUE(letters.dead_letters(0).has_retry_requested_at());
  const std::string table = Ok({"dlq", "list", "flaky"});
  EXPECT_TRUE(absl::StrContains(table, "rejected, retrying")) << table;

  SetGate(true);  // the plugin answers OK now: the resumed retry completes
  ASSERT_TRUE(WaitFor([&] { return FlakyLetters().dead_letters_size() == 0; }));
  // Recorded past the gate: the first (rejected) delivery, attempt 1, and the resumed retry's,
  // attempt 2 (the retry's delivery may have reached the plugin before the crash: it did, held
  // when pimgate was killed, and died with its plugin process, unrecorded).
  EXPECT_EQ(Deliveries("flaky"), (std::vector<std::string>{"1:1", "1:2"}));
  EXPECT_EQ(FlakyStats().cursor(), 1u);
}

// kill -9 while the plugin holds deliveries: after the restart they come again with attempt 2
// (pimgate stored how far it handed events out before it sent them), a new event with attempt 1.
TEST_F(PimgatectlRetryTest, Kill9WhileThePluginHoldsDeliveriesRedeliversThemWithAttemptTwo) {
  SetGate(false);  // the plugin holds its deliveries without answering (nor recording them)
  ASSERT_EQ(Post({"held-1", "held-2"}), 200);  // sequences 1 and 2
  ASSERT_TRUE(WaitFor([&] { return FlakyStats().in_flight() == 2; }));

  pimgate_->Kill();  // the held deliveries die with the plugin process, unanswered
  SetGate(true);
  StartPimgate();
  ASSERT_TRUE(WaitFor([&] { return Deliveries("flaky").size() == 2; }))
      << absl::StrJoin(Deliveries("flaky"), " ");
  std::vector<std::string> redelivered = Deliveries("flaky");
  std::sort(redelivered.begin(), redelivered.end());
  EXPECT_EQ(redelivered, (std::vector<std::string>{"1:2", "2:2"}));

  ASSERT_EQ(Post({"new-1"}), 200);  // sequence 3, never handed out before
  ASSERT_TRUE(WaitFor([&] { return Deliveries("flaky").size() == 3; }))
      << absl::StrJoin(Deliveries("flaky"), " ");
  EXPECT_EQ(Deliveries("flaky").back(), "3:1");
}

TEST_F(PimgatectlTest, Quarantine) {
  EXPECT_TRUE(absl::StrContains(Ok({"quarantine"}), "quarantine is empty"));
  const std::string bad =
      R"({"action":"product.updated","event_datetime":"2026-11-20T10:15:00+00:00","data":{"resource":{}}})";
  const std::string body = testing::LegacyBatch(
      {testing::LegacyProductEvent("product.updated", testing::NewUuid(), "q-1"), bad});
  HttpClient client(gateway_port_, /*tls=*/false);
  ASSERT_EQ(
      client.Send("POST", "/hooks/legacy", body, testing::LegacyHeaders(kSecret, body)).status,
      400);
  auto listed = ParseJson<v1::ListQuarantineResponse>(Ok({"quarantine", "--json"}));
  ASSERT_EQ(listed.entries_size(), 1);
  EXPECT_EQ(listed.entries(0).source(), "legacy");
  EXPECT_EQ(listed.entries(0).index(), 1u);
  EXPECT_EQ(listed.entries(0).raw(), bad);
  const std::string table = Ok({"quarantine"});
  EXPECT_TRUE(absl::StrContains(table, "ID  RECEIVED")) << table;
  EXPECT_TRUE(absl::StrContains(table, "event_id")) << table;
}

}  // namespace
}  // namespace pimgate
