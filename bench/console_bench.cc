// pimgate_console_bench: how fast the web console's pages answer, measured as the browser loads
// them: the HTTP/JSON API calls each page makes (console/web/js/*.js), over keep-alive
// connections, the calls a page makes at once in parallel as the page's Promise.all does.
//
//   pimgate_console_bench seed --store DIR --plugin NAME [--dead-letters N] [--lag L]
//                              [--quarantine Q]
//   pimgate_console_bench run --port P --token T --plugin NAME [--loads N] [--label TEXT] [--json]
//                             [--platform-source NAME --public-url URL]
//
// seed: gives a stopped pimgate's store (the backlog of bench/backlog.cc) the history that makes
// the pages non-trivial, through the log's own API: the plugin's cursor L events behind the head
// (its backlog), N dead letters of that plugin (copies of events spread over the log before its
// cursor, half rejected, half out of retries) and Q quarantined batch elements.
//
// run: first pauses the plugin, reconciles every source with `rest:` once and subscribes
// --platform-source on the Event Platform (see Prepare), then loads every page --loads times (pages
// interleaved, so that other work on the machine falls on all of them alike) against a running
// pimgate's console and prints, per page, the calls it makes and p50 / p99 / max of the page's
// time: from its first call sent until its last answer read. Parameters that a person would vary
// (the event opened, the resource searched, the time window) are drawn per load from a fixed seed,
// so the store's block cache does not make every load after the first a cache hit. A call that is
// not answered 200 stops the run: a fast error is not a page. --json prints one JSON object instead
// of the table.
#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "config/config.h"
#include "core/log/event_log.h"
#include "google/protobuf/util/time_util.h"
#include "nlohmann/json.hpp"
#include "pimgate/v1/store.pb.h"

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

// Page sizes the console asks for (console/web/js): dead letters 100, events 50, quarantine 100.
constexpr int kDeadLetterPage = 100;
constexpr int kEventPage = 50;
constexpr int kQuarantinePage = 100;
// Connections the client keeps open: a browser opens up to 6 per host (HTTP/1.1).
constexpr std::size_t kConnections = 6;
// Dead letters and quarantine entries written per store write while seeding.
constexpr std::size_t kSeedChunk = 1000;

[[noreturn]] void Usage(const std::string& error) {
  std::fprintf(stderr,
               "pimgate_console_bench: %s\n\nUsage:\n"
               "  pimgate_console_bench seed --store DIR --plugin NAME [--dead-letters N] "
               "[--lag L] [--quarantine Q]\n"
               "  pimgate_console_bench run --port P --token T --plugin NAME [--loads N] "
               "[--label TEXT] [--json]\n"
               "      [--platform-source NAME --public-url URL]\n",
               error.c_str());
  std::exit(2);
}

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "pimgate_console_bench: %s\n", what.c_str());
  std::exit(1);
}

google::protobuf::Timestamp Now() { return google::protobuf::util::TimeUtil::GetCurrentTime(); }

// ---- seed ------------------------------------------------------------------------------------

int Seed(const std::string& store, const std::string& plugin, uint64_t dead_letters, uint64_t lag,
         uint64_t quarantine) {
  pimgate::StoreConfig config;
  config.path = store;
  config.sync = false;  // a tool writing a stopped store: the log's destructor flushes it
  auto log = pimgate::EventLog::Open(config);
  if (!log.ok()) Fail(std::string(log.status().message()));
  const uint64_t head = (*log)->head();
  if (head == 0) Fail(store + " holds no event");
  const uint64_t cursor = head > lag ? head - lag : 0;
  if (dead_letters > cursor) Fail("more dead letters than events before the plugin's cursor");

  // Dead letters: events spread evenly over [1, cursor], as a plugin that refused some events
  // of every kind all along would leave them.
  const uint64_t step = dead_letters ? std::max<uint64_t>(1, cursor / dead_letters) : 1;
  pimgate::PluginProgress progress;
  progress.cursor = cursor;
  uint64_t written = 0;
  for (uint64_t i = 0; i < dead_letters; ++i) {
    const uint64_t sequence = 1 + i * step;
    absl::StatusOr<std::optional<pimgate::v1::Event>> event = (*log)->GetEvent(sequence);
    if (!event.ok()) Fail(std::string(event.status().message()));
    if (!event->has_value()) continue;  // trimmed
    pimgate::v1::DeadLetter& letter = progress.dead_letters.emplace_back();
    letter.set_plugin(plugin);
    *letter.mutable_event() = **std::move(event);
    letter.set_rejected(i % 2 == 0);
    letter.set_attempts(letter.rejected() ? 1 : 8);
    letter.set_reason(letter.rejected()
                          ? absl::StrCat("rejected: product ", letter.event().resource_id(),
                                         " has no family in the shop")
                          : "ack timeout after 30s");
    *letter.mutable_dead_at() = Now();
    if (progress.dead_letters.size() == kSeedChunk || i + 1 == dead_letters) {
      if (absl::Status s = (*log)->WriteProgress(plugin, progress); !s.ok()) {
        Fail(std::string(s.message()));
      }
      written += progress.dead_letters.size();
      progress.dead_letters.clear();
    }
  }
  if (absl::Status s = (*log)->WriteProgress(plugin, progress); !s.ok()) {
    Fail(std::string(s.message()));
  }

  // Quarantine: legacy batch elements the parser refused, as the gateway stores them.
  for (uint64_t done = 0; done < quarantine;) {
    pimgate::AppendRequest request;
    for (; done < quarantine && request.quarantine.size() < kSeedChunk; ++done) {
      pimgate::v1::QuarantineEntry& entry = request.quarantine.emplace_back();
      entry.set_source("legacy");
      *entry.mutable_received_at() = Now();
      entry.set_index(static_cast<uint32_t>(done % 100));
      entry.set_reason("events[" + std::to_string(done % 100) +
                       "].data.resource: a product.updated event needs the product");
      entry.set_raw(absl::StrCat(R"({"action":"product.updated","event_id":"q-)", done,
                                 R"(","event_datetime":"2026-12-05T08:00:00+00:00","data":{}})"));
      entry.set_request_id(absl::StrCat("quarantine-", done / 100));
    }
    absl::StatusOr<pimgate::AppendResult> result = (*log)->AppendSync(std::move(request));
    if (!result.ok()) Fail(std::string(result.status().message()));
  }
  std::printf("{\"head\":%llu,\"cursor\":%llu,\"dead_letters\":%llu,\"quarantine\":%llu}\n",
              static_cast<unsigned long long>(head), static_cast<unsigned long long>(cursor),
              static_cast<unsigned long long>(written),
              static_cast<unsigned long long>(quarantine));
  return 0;
}

// ---- run -------------------------------------------------------------------------------------

// One keep-alive HTTP/1.1 connection to the console.
class Connection {
 public:
  explicit Connection(uint16_t port) : socket_(io_), port_(port) {}

  // POSTs /api/v1/<method> with `body`; the answer's JSON. Throws on a transport error or an
  // answer other than 200 (with the answer's text).
  json Call(const std::string& method, const json& body, const std::string& token) {
    for (int attempt = 0;; ++attempt) {
      try {
        if (!socket_.is_open()) {
          socket_.connect({net::ip::make_address("127.0.0.1"), port_});
          socket_.set_option(net::ip::tcp::no_delay(true));
        }
        http::request<http::string_body> request{http::verb::post, "/api/v1/" + method, 11};
        request.set(http::field::host, "127.0.0.1");
        request.set(http::field::content_type, "application/json");
        request.set(http::field::accept, "application/json");
        request.set(http::field::authorization, "Bearer " + token);
        request.body() = body.dump();
        request.prepare_payload();
        http::write(socket_, request);
        http::response<http::string_body> response;
        http::read(socket_, buffer_, response);
        if (!response.keep_alive()) socket_.close();
        if (response.result() != http::status::ok) {
          throw std::runtime_error(absl::StrCat(method, " ", body.dump(), ": HTTP ",
                                                response.result_int(), " ", response.body()));
        }
        return json::parse(response.body());
      } catch (const boost::system::system_error& e) {
        // The server closed an idle keep-alive connection: one new connection, as a browser.
        boost::system::error_code ignored;
        socket_.close(ignored);
        buffer_.clear();
        if (attempt > 0) throw std::runtime_error(method + ": " + e.what());
      }
    }
  }

 private:
  net::io_context io_;
  net::ip::tcp::socket socket_;
  beast::flat_buffer buffer_;
  uint16_t port_;
};

// A protobuf JSON uint64 (a decimal string) or number.
uint64_t U64(const json& value) {
  if (value.is_string()) return std::stoull(value.get<std::string>());
  if (value.is_number()) return value.get<uint64_t>();
  return 0;
}

// A field by its proto name ("head_sequence"), whether the answer has proto names or
// lowerCamelCase JSON names (as the console's get() reads it); protobuf JSON omits default
// values: null then.
const json& Field(const json& object, const std::string& name) {
  static const json kNull;
  if (!object.is_object()) return kNull;
  auto it = object.find(name);
  if (it != object.end()) return *it;
  std::string camel;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '_' && i + 1 < name.size()) {
      camel += static_cast<char>(std::toupper(static_cast<unsigned char>(name[++i])));
    } else {
      camel += name[i];
    }
  }
  it = object.find(camel);
  return it == object.end() ? kNull : *it;
}

struct Call {
  std::string method;
  json body;
};

// The client: kConnections connections; Step() runs calls at once, one per connection.
class Browser {
 public:
  Browser(uint16_t port, std::string token) : token_(std::move(token)) {
    for (std::size_t i = 0; i < kConnections; ++i) {
      connections_.push_back(std::make_unique<Connection>(port));
    }
  }

  // Runs `calls` in parallel (as Promise.all) and returns their answers, in order.
  std::vector<json> Step(const std::vector<Call>& calls) {
    if (calls.size() > connections_.size()) throw std::logic_error("too many calls at once");
    std::vector<json> answers(calls.size());
    std::vector<std::string> errors(calls.size());
    std::vector<std::thread> threads;
    auto run = [&](std::size_t i) {
      try {
        answers[i] = connections_[i]->Call(calls[i].method, calls[i].body, token_);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    };
    for (std::size_t i = 1; i < calls.size(); ++i) threads.emplace_back(run, i);
    if (!calls.empty()) run(0);
    for (std::thread& t : threads) t.join();
    for (const std::string& error : errors) {
      if (!error.empty()) throw std::runtime_error(error);
    }
    calls_ += calls.size();
    return answers;
  }

  std::size_t calls() const { return calls_; }
  void ResetCalls() { calls_ = 0; }

 private:
  std::string token_;
  std::vector<std::unique_ptr<Connection>> connections_;
  std::size_t calls_ = 0;
};

// What the pages need to know of the log: read once, before the measured loads.
struct LogFacts {
  uint64_t head = 0;
  uint64_t first = 0;
  std::vector<std::string> resources;  // resource ids seen in the log
  absl::Time oldest_received;
  absl::Time newest_received;
  std::vector<std::string> platform_sources;
};

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime(absl::RFC3339_full, t, absl::UTCTimeZone());
}

absl::Time ParseTime(const json& value) {
  absl::Time t;
  std::string error;
  if (!value.is_string() ||
      !absl::ParseTime(absl::RFC3339_full, value.get<std::string>(), &t, &error)) {
    return absl::UnixEpoch();
  }
  return t;
}

struct Page {
  Page(std::string name, std::function<void(Browser&, std::mt19937_64&)> load)
      : name(std::move(name)), load(std::move(load)) {}

  std::string name;
  // One load: the calls, in steps, given the load's random draw.
  std::function<void(Browser&, std::mt19937_64&)> load;
  std::vector<double> ms;
  std::size_t calls = 0;
  uint64_t scanned = 0;  // ListEvents: events looked at over all loads
  uint64_t found = 0;    // ListEvents: events returned over all loads
  uint64_t more = 0;     // ListEvents: loads answered with a next_page_token
};

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t rank = static_cast<std::size_t>(q * (values.size() - 1) + 0.5);
  return values[std::min(rank, values.size() - 1)];
}

// Before the loads: pauses the plugin (its backlog stays a backlog, and its delivery does not
// take the CPU the pages are timed with), runs one reconciliation of every source that has
// `rest:` (the reconciliation page then shows a run) and subscribes `platform_source` (when set)
// on the Event Platform (the page then lists a subscriber and a subscription).
void Prepare(Browser& browser, const std::string& plugin, const std::string& platform_source,
             const std::string& public_url) {
  browser.Step({{"PausePlugin", {{"plugin", plugin}}}});
  const json stats = browser.Step({{"GetStats", json::object()}})[0];
  for (const json& r : Field(stats, "reconciliations")) {
    const json run = browser.Step({{"Reconcile", {{"source", Field(r, "source")}}}})[0];
    std::fprintf(stderr, "  reconciled %s: %s\n", Field(r, "source").dump().c_str(),
                 run.dump().c_str());
  }
  if (!platform_source.empty()) {
    browser.Step({{"PlatformSubscribe",
                   {{"source", platform_source},
                    {"public_url", public_url},
                    {"events", {"product.*", "product_model.*"}}}}});
  }
}

int Run(uint16_t port, const std::string& token, const std::string& plugin, int loads,
        const std::string& label, bool as_json, const std::string& platform_source,
        const std::string& public_url) {
  Browser browser(port, token);
  LogFacts facts;
  try {
    Prepare(browser, plugin, platform_source, public_url);
  } catch (const std::exception& e) {
    Fail(std::string("preparing the pages: ") + e.what());
  }
  {
    const json stats = browser.Step({{"GetStats", json::object()}})[0];
    const json& log = Field(stats, "log");
    facts.head = U64(Field(log, "head_sequence"));
    facts.first = U64(Field(log, "first_sequence"));
    if (facts.head == 0) Fail("the log is empty");
    const std::vector<json> ends =
        browser.Step({{"GetEvent", {{"sequence", std::to_string(facts.first)}}},
                      {"GetEvent", {{"sequence", std::to_string(facts.head)}}}});
    facts.oldest_received = ParseTime(Field(ends[0], "received_at"));
    facts.newest_received = ParseTime(Field(ends[1], "received_at"));
    // Resources to search: those of events spread over the whole log.
    for (int i = 0; i < 64; ++i) {
      const uint64_t sequence = facts.first + (facts.head - facts.first) * i / 63;
      const json event = browser.Step({{"GetEvent", {{"sequence", std::to_string(sequence)}}}})[0];
      const json& resource = Field(event, "resource_id");
      if (resource.is_string() && !resource.get<std::string>().empty()) {
        facts.resources.push_back(resource.get<std::string>());
      }
    }
    if (facts.resources.empty()) Fail("no event with a resource id");
    try {
      const json subscribers = browser.Step({{"ListPlatformSubscribers", json::object()}})[0];
      for (const json& s : Field(subscribers, "subscribers")) {
        const std::string source = Field(s, "source").get<std::string>();
        if (std::find(facts.platform_sources.begin(), facts.platform_sources.end(), source) ==
            facts.platform_sources.end()) {
          facts.platform_sources.push_back(source);
        }
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "  (no Event Platform page: %s)\n", e.what());
    }
  }

  const json plugin_json = plugin;
  std::vector<Page> pages;
  auto sequence_in_log = [&facts](std::mt19937_64& rng) {
    return facts.first + rng() % (facts.head - facts.first + 1);
  };
  // Overview (overview.js): GetStats and ListPlugins, then the received time of the head and of
  // the oldest event (GetEvent each, in parallel).
  pages.push_back({"overview", [](Browser& b, std::mt19937_64&) {
                     const std::vector<json> r =
                         b.Step({{"GetStats", json::object()}, {"ListPlugins", json::object()}});
                     const json& log = Field(r[0], "log");
                     b.Step({{"GetEvent", {{"sequence", Field(log, "head_sequence")}}},
                             {"GetEvent", {{"sequence", Field(log, "first_sequence")}}}});
                   }});
  // Plugin page (plugin.js): ListPlugins and GetStats.
  pages.push_back({"plugin page", [](Browser& b, std::mt19937_64&) {
                     b.Step({{"ListPlugins", json::object()}, {"GetStats", json::object()}});
                   }});
  // Dead letters (dead_letters.js): the plugin list and the first page of the plugin's letters.
  // Its filters (type glob, resource, kind, reason) apply in the browser to the letters loaded:
  // they make no call.
  pages.push_back(
      {"dead letters", [plugin_json](Browser& b, std::mt19937_64&) {
         b.Step({{"ListPlugins", json::object()},
                 {"ListDeadLetters", {{"plugin", plugin_json}, {"page_size", kDeadLetterPage}}}});
       }});
  // Dead letters, "Load more": the next page (its token from the first page).
  pages.push_back(
      {"dead letters, next page", [plugin_json](Browser& b, std::mt19937_64&) {
         const json first = b.Step(
             {{"ListDeadLetters", {{"plugin", plugin_json}, {"page_size", kDeadLetterPage}}}})[0];
         const json& token = Field(first, "next_page_token");
         if (!token.is_string()) return;
         b.ResetCalls();  // only the "Load more" call is this page's
         b.Step(
             {{"ListDeadLetters",
               {{"plugin", plugin_json}, {"page_size", kDeadLetterPage}, {"page_token", token}}}});
       }});
  // Events (events.js): one ListEvents per search, page_size 50.
  auto events_page = [&pages](std::string name, std::function<json(std::mt19937_64&)> request) {
    Page page{std::move(name), nullptr};
    pages.push_back(std::move(page));
    const std::size_t index = pages.size() - 1;
    pages[index].load = [&pages, index, request](Browser& b, std::mt19937_64& rng) {
      json body = request(rng);
      body["page_size"] = kEventPage;
      const json r = b.Step({{"ListEvents", body}})[0];
      pages[index].scanned += U64(Field(r, "scanned"));
      pages[index].found += Field(r, "events").size();
      if (Field(r, "next_page_token").is_string()) ++pages[index].more;
    };
  };
  const absl::Duration span = facts.newest_received - facts.oldest_received;
  auto window_start = [&facts, span](std::mt19937_64& rng) {
    const int64_t span_s = std::max<int64_t>(1, absl::ToInt64Seconds(span) - 3600);
    return facts.oldest_received + absl::Seconds(static_cast<int64_t>(rng() % span_s));
  };
  events_page("events: newest first (no filter)", [](std::mt19937_64&) {
    return json{{"newest_first", true}};
  });
  events_page("events: type glob product.*", [](std::mt19937_64&) {
    return json{{"newest_first", true}, {"type", "product.*"}};
  });
  events_page("events: type glob matching nothing", [](std::mt19937_64&) {
    return json{{"newest_first", true}, {"type", "category.*"}};
  });
  events_page("events: one resource", [&facts](std::mt19937_64& rng) {
    return json{{"newest_first", true},
                {"resource_id", facts.resources[rng() % facts.resources.size()]}};
  });
  events_page("events: source legacy", [](std::mt19937_64&) {
    return json{{"newest_first", true}, {"source", "legacy"}};
  });
  events_page("events: source matching nothing", [](std::mt19937_64&) {
    return json{{"newest_first", true}, {"source", "no-such-source"}};
  });
  events_page("events: 1 h time window, oldest first", [window_start](std::mt19937_64& rng) {
    const absl::Time since = window_start(rng);
    return json{{"since", Rfc3339(since)}, {"until", Rfc3339(since + absl::Hours(1))}};
  });
  events_page("events: 1 h window + resource", [&facts, window_start](std::mt19937_64& rng) {
    const absl::Time since = window_start(rng);
    return json{{"since", Rfc3339(since)},
                {"until", Rfc3339(since + absl::Hours(1))},
                {"resource_id", facts.resources[rng() % facts.resources.size()]}};
  });
  // One event's JSON (events.js EventPage).
  pages.push_back({"event JSON", [sequence_in_log](Browser& b, std::mt19937_64& rng) {
                     b.Step({{"GetEvent", {{"sequence", std::to_string(sequence_in_log(rng))}}}});
                   }});
  // Quarantine (quarantine.js): the first page.
  pages.push_back({"quarantine", [](Browser& b, std::mt19937_64&) {
                     b.Step({{"ListQuarantine", {{"page_size", kQuarantinePage}}}});
                   }});
  // Reconciliation (reconciliation.js): GetStats.
  pages.push_back({"reconciliation", [](Browser& b, std::mt19937_64&) {
                     b.Step({{"GetStats", json::object()}});
                   }});
  // Event Platform (platform.js): the subscribers, then each source's subscriptions in parallel.
  // Both ask Akeneo's management API (here the fake of the tests): not the log.
  if (!facts.platform_sources.empty()) {
    pages.push_back({"Event Platform", [&facts](Browser& b, std::mt19937_64&) {
                       b.Step({{"ListPlatformSubscribers", json::object()}});
                       std::vector<Call> calls;
                       for (const std::string& source : facts.platform_sources) {
                         calls.push_back({"ListPlatformSubscriptions", {{"source", source}}});
                       }
                       b.Step(calls);
                     }});
  }

  std::mt19937_64 rng(20261205);
  try {
    for (int load = 0; load < loads; ++load) {
      for (Page& page : pages) {
        browser.ResetCalls();
        const auto start = Clock::now();
        page.load(browser, rng);
        page.ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
        page.calls = browser.calls();
      }
    }
  } catch (const std::exception& e) {
    Fail(e.what());
  }

  json out = {{"label", label},
              {"head", facts.head},
              {"first", facts.first},
              {"loads", loads},
              {"pages", json::array()}};
  for (const Page& page : pages) {
    json p = {{"page", page.name},
              {"calls", page.calls},
              {"p50_ms", Percentile(page.ms, 0.5)},
              {"p99_ms", Percentile(page.ms, 0.99)},
              {"max_ms", *std::max_element(page.ms.begin(), page.ms.end())}};
    if (page.scanned || page.found || page.more) {
      p["scanned_per_load"] = page.scanned / static_cast<double>(loads);
      p["found_per_load"] = page.found / static_cast<double>(loads);
      p["loads_with_more"] = page.more;
    }
    out["pages"].push_back(p);
  }
  if (as_json) {
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  std::printf("%s: head %llu, %d loads per page\n", label.c_str(),
              static_cast<unsigned long long>(facts.head), loads);
  std::printf("%-40s %5s %8s %8s %8s  %s\n", "page", "calls", "p50 ms", "p99 ms", "max ms",
              "events looked at / found per load");
  for (const json& p : out["pages"]) {
    std::string scan;
    if (p.contains("scanned_per_load")) {
      scan = absl::StrCat(p["scanned_per_load"].get<double>(), " / ",
                          p["found_per_load"].get<double>());
    }
    std::printf("%-40s %5zu %8.2f %8.2f %8.2f  %s\n", p["page"].get<std::string>().c_str(),
                p["calls"].get<std::size_t>(), p["p50_ms"].get<double>(), p["p99_ms"].get<double>(),
                p["max_ms"].get<double>(), scan.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) Usage("a command is required (seed or run)");
  const std::string command = argv[1];
  std::string store, plugin, token, label = "console", platform_source, public_url;
  uint64_t dead_letters = 0, lag = 0, quarantine = 0;
  int port = 0, loads = 100;
  bool as_json = false;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Usage(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--store") {
      store = next();
    } else if (arg == "--plugin") {
      plugin = next();
    } else if (arg == "--dead-letters") {
      dead_letters = std::strtoull(next().c_str(), nullptr, 10);
    } else if (arg == "--lag") {
      lag = std::strtoull(next().c_str(), nullptr, 10);
    } else if (arg == "--quarantine") {
      quarantine = std::strtoull(next().c_str(), nullptr, 10);
    } else if (arg == "--port") {
      port = std::atoi(next().c_str());
    } else if (arg == "--token") {
      token = next();
    } else if (arg == "--loads") {
      loads = std::max(1, std::atoi(next().c_str()));
    } else if (arg == "--label") {
      label = next();
    } else if (arg == "--platform-source") {
      platform_source = next();
    } else if (arg == "--public-url") {
      public_url = next();
    } else if (arg == "--json") {
      as_json = true;
    } else {
      Usage("unknown argument " + arg);
    }
  }
  if (command == "seed") {
    if (store.empty() || plugin.empty()) Usage("seed needs --store and --plugin");
    return Seed(store, plugin, dead_letters, lag, quarantine);
  }
  if (command == "run") {
    if (port <= 0 || port > 65535 || plugin.empty()) Usage("run needs --port and --plugin");
    return Run(static_cast<uint16_t>(port), token, plugin, loads, label, as_json, platform_source,
               public_url);
  }
  Usage("unknown command " + command);
}
