// pimgate_loadgen: signed Akeneo webhook load against a pimgate gateway (or any HTTP server).
// Closed loop (--rate 0: each connection sends as fast as answers come) or open loop (--rate R:
// request i is due at start + i/R and its latency counts from that due time, so a slow server
// cannot hide queueing delay: no coordinated omission). With --new-connection every request opens
// its own connection (TCP connect, TLS handshake, request, close), as a sender without keep-alive
// does, and its latency includes all of that.
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/akeneo_payloads.h"
#include "bench/latency_histogram.h"
#include "config/config.h"

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string host = "127.0.0.1";
  int port = 8443;
  bool tls = true;
  std::string path = "/hooks/legacy";
  std::string secret = "bench-secret";
  std::string format = "legacy";  // legacy | platform
  int events_per_request = 10;
  int connections = 8;
  double rate = 0;  // requests/s in total; 0 = closed loop
  std::chrono::milliseconds duration{10'000};
  std::chrono::milliseconds warmup{1'000};
  int resources = 1000;
  bool new_connection = false;
  // Each legacy product carries a description of this many bytes (0: none).
  std::size_t description_bytes = 0;
  // The sender's timeout: the share of requests answered 200 within it is reported.
  std::chrono::milliseconds budget{500};
  bool json = false;
  // When set, one line "<HTTP status>\t<event id>" per event of every request sent (status 0:
  // no answer), for exact reconciliation of what was sent and acknowledged (scripts/soak).
  std::string ids_out;
};

[[noreturn]] void Usage(const std::string& error) {
  std::fprintf(
      stderr,
      "pimgate_loadgen: %s\n\nUsage: pimgate_loadgen [--host H] [--port P] [--plain] "
      "[--path /hooks/x]\n  [--secret S | --secret-file F] [--format legacy|platform] "
      "[--events N]\n  [--connections N] [--rate R] [--duration 10s] [--warmup 1s] "
      "[--resources N] [--json]\n  [--ids-out FILE] [--new-connection] [--description-bytes N] "
      "[--budget 500ms]\n",
      error.c_str());
  std::exit(2);
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Usage(arg + " needs a value");
      return argv[++i];
    };
    auto duration = [&](const std::string& text) {
      auto d = pimgate::ParseDuration(text);
      if (!d.ok()) Usage(arg + ": " + std::string(d.status().message()));
      return *d;
    };
    if (arg == "--host")
      o.host = next();
    else if (arg == "--port")
      o.port = std::stoi(next());
    else if (arg == "--plain")
      o.tls = false;
    else if (arg == "--path")
      o.path = next();
    else if (arg == "--secret")
      o.secret = next();
    else if (arg == "--secret-file") {
      std::string file = next();
      FILE* f = std::fopen(file.c_str(), "r");
      if (f == nullptr) Usage("cannot read " + file);
      char buf[512];
      std::size_t n = std::fread(buf, 1, sizeof(buf), f);
      std::fclose(f);
      o.secret.assign(buf, n);
      while (!o.secret.empty() && std::isspace(static_cast<unsigned char>(o.secret.back()))) {
        o.secret.pop_back();
      }
    } else if (arg == "--format")
      o.format = next();
    else if (arg == "--events")
      o.events_per_request = std::stoi(next());
    else if (arg == "--connections")
      o.connections = std::stoi(next());
    else if (arg == "--rate")
      o.rate = std::stod(next());
    else if (arg == "--duration")
      o.duration = duration(next());
    else if (arg == "--warmup")
      o.warmup = duration(next());
    else if (arg == "--resources")
      o.resources = std::stoi(next());
    else if (arg == "--ids-out")
      o.ids_out = next();
    else if (arg == "--json")
      o.json = true;
    else if (arg == "--new-connection")
      o.new_connection = true;
    else if (arg == "--description-bytes")
      o.description_bytes = std::stoul(next());
    else if (arg == "--budget")
      o.budget = duration(next());
    else
      Usage("unknown argument " + arg);
  }
  if (o.format != "legacy" && o.format != "platform") Usage("--format: legacy or platform");
  if (o.format == "platform") o.events_per_request = 1;
  return o;
}

std::string HmacHex(const std::string& key, const std::string& message) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac, &len);
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex(len * 2, '0');
  for (unsigned int i = 0; i < len; ++i) {
    hex[2 * i] = kDigits[mac[i] >> 4];
    hex[2 * i + 1] = kDigits[mac[i] & 0xf];
  }
  return hex;
}

// Builds one signed request: unique event ids, resources drawn from a fixed pool so that
// per-resource ordering and staleness tracking are exercised.
http::request<http::string_body> MakeRequest(const Options& o, std::mt19937_64& rng,
                                             const std::vector<std::string>& pool) {
  const auto now = std::chrono::system_clock::now();
  const std::string when = pimgate::bench::Iso8601(now);
  const std::string body =
      o.format == "legacy"
          ? pimgate::bench::LegacyBody(rng, pool, o.events_per_request, when, o.description_bytes)
          : pimgate::bench::PlatformBody(rng, pool, when);
  http::request<http::string_body> req{http::verb::post, o.path, 11};
  req.set(http::field::host, o.host);
  req.set(http::field::content_type, "application/json");
  if (o.format == "legacy") {
    const std::string ts = std::to_string(
        std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count());
    req.set("X-Akeneo-Request-Timestamp", ts);
    req.set("X-Akeneo-Request-Signature", HmacHex(o.secret, ts + "." + body));
  } else {
    req.set("X-AKENEO-SIGNATURE-PRIMARY", HmacHex(o.secret, body));
    req.set("X-AKENEO-SIGNATURE-ALGORITHM", "HmacSHA256");
  }
  req.body() = body;
  req.keep_alive(!o.new_connection);
  req.prepare_payload();
  return req;
}

// One keep-alive connection, reconnecting when the server closes it.
class Connection {
 public:
  Connection(const Options& o, ssl::context& ctx) : o_(o), ctx_(ctx) {}

  // Returns the HTTP status, or 0 on a transport error.
  int Exchange(http::request<http::string_body>& req) {
    beast::error_code ec;
    if (!tcp_ && !Connect()) return 0;
    http::response<http::string_body> res;
    if (tls_) {
      http::write(*tls_, req, ec);
      if (!ec) http::read(*tls_, buffer_, res, ec);
    } else {
      http::write(*tcp_, req, ec);
      if (!ec) http::read(*tcp_, buffer_, res, ec);
    }
    if (ec) {
      Reset();
      return 0;
    }
    if (!res.keep_alive() || o_.new_connection) Reset();
    return res.result_int();
  }

 private:
  bool Connect() {
    beast::error_code ec;
    tcp_.emplace(ioc_);
    tcp_->connect(tcp::endpoint(net::ip::make_address(o_.host), o_.port), ec);
    if (ec) {
      Reset();
      return false;
    }
    tcp_->set_option(tcp::no_delay(true));
    if (o_.tls) {
      tls_.emplace(*tcp_, ctx_);
      tls_->handshake(ssl::stream_base::client, ec);
      if (ec) {
        Reset();
        return false;
      }
    }
    return true;
  }
  void Reset() {
    tls_.reset();
    if (tcp_) {
      beast::error_code ignored;
      tcp_->close(ignored);
    }
    tcp_.reset();
    buffer_.clear();
  }

  const Options& o_;
  ssl::context& ctx_;
  net::io_context ioc_;
  std::optional<tcp::socket> tcp_;
  std::optional<ssl::stream<tcp::socket&>> tls_;
  beast::flat_buffer buffer_;
};

// The event ids in a request body: legacy "event_id"s, or the CloudEvent's top-level "id".
std::vector<std::string> EventIds(const std::string& body, const std::string& format) {
  const std::string key = format == "legacy" ? R"("event_id":")" : R"({"specversion":"1.0","id":")";
  std::vector<std::string> ids;
  for (std::size_t at = body.find(key); at != std::string::npos; at = body.find(key, at)) {
    at += key.size();
    ids.push_back(body.substr(at, body.find('"', at) - at));
  }
  return ids;
}

struct WorkerResult {
  pimgate::bench::LatencyHistogram histogram;
  uint64_t requests = 0;
  uint64_t errors = 0;
  uint64_t within_budget = 0;  // answered 200 within Options::budget of their due time
  std::map<int, uint64_t> codes;
};

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseArgs(argc, argv);
  ssl::context ctx(ssl::context::tls_client);
  ctx.set_verify_mode(ssl::verify_none);  // benchmarks run against self-signed certificates

  std::mt19937_64 seed_rng{std::random_device{}()};
  const std::vector<std::string> pool = pimgate::bench::ResourcePool(seed_rng, o.resources);

  const auto start = Clock::now();
  const auto measure_from = start + o.warmup;
  const auto end = measure_from + o.duration;
  std::atomic<uint64_t> ticket{0};
  std::FILE* ids_out = nullptr;
  std::mutex ids_mu;
  if (!o.ids_out.empty()) {
    ids_out = std::fopen(o.ids_out.c_str(), "a");
    if (ids_out == nullptr) Usage("--ids-out: cannot open " + o.ids_out);
  }
  std::vector<WorkerResult> results(o.connections);
  std::vector<std::thread> workers;
  for (int c = 0; c < o.connections; ++c) {
    workers.emplace_back([&, c] {
      std::mt19937_64 rng{seed_rng() + c};
      Connection conn(o, ctx);
      WorkerResult& r = results[c];
      while (true) {
        Clock::time_point due = Clock::now();
        if (o.rate > 0) {
          const uint64_t i = ticket.fetch_add(1);
          due = start + std::chrono::nanoseconds(static_cast<int64_t>(i * 1e9 / o.rate));
          if (due >= end) break;
          std::this_thread::sleep_until(due);
        } else if (due >= end) {
          break;
        }
        auto req = MakeRequest(o, rng, pool);
        const int status = conn.Exchange(req);
        const auto done = Clock::now();
        if (ids_out != nullptr) {
          std::string lines;
          for (const std::string& id : EventIds(req.body(), o.format)) {
            lines += std::to_string(status) + "\t" + id + "\n";
          }
          std::lock_guard lock(ids_mu);
          std::fwrite(lines.data(), 1, lines.size(), ids_out);
        }
        if (due < measure_from) continue;  // warm-up
        ++r.requests;
        ++r.codes[status];
        if (status != 200) ++r.errors;
        if (status == 200 && done - due <= o.budget) ++r.within_budget;
        r.histogram.Record(
            std::chrono::duration_cast<std::chrono::nanoseconds>(done - due).count());
      }
    });
  }
  for (auto& t : workers) t.join();
  if (ids_out != nullptr) std::fclose(ids_out);

  WorkerResult total;
  for (const WorkerResult& r : results) {
    total.histogram.Merge(r.histogram);
    total.requests += r.requests;
    total.errors += r.errors;
    total.within_budget += r.within_budget;
    for (auto [code, n] : r.codes) total.codes[code] += n;
  }
  const double seconds = std::chrono::duration<double>(o.duration).count();
  const double rps = total.requests / seconds;
  const double ms = 1e-6;
  std::string codes;
  for (auto [code, n] : total.codes) {
    codes += (codes.empty() ? "" : ",") + ("\"" + std::to_string(code) + "\":") + std::to_string(n);
  }
  if (o.json) {
    std::printf(
        "{\"mode\":\"%s\",\"format\":\"%s\",\"tls\":%s,\"new_connection\":%s,\"connections\":%d,"
        "\"events_per_request\":%d,"
        "\"requests\":%llu,\"errors\":%llu,\"requests_per_s\":%.1f,\"events_per_s\":%.1f,"
        "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f,"
        "\"budget_ms\":%lld,\"within_budget\":%llu,\"codes\":{%s}}\n",
        o.rate > 0 ? "open" : "closed", o.format.c_str(), o.tls ? "true" : "false",
        o.new_connection ? "true" : "false", o.connections, o.events_per_request,
        static_cast<unsigned long long>(total.requests),
        static_cast<unsigned long long>(total.errors), rps, rps * o.events_per_request,
        total.histogram.Percentile(0.50) * ms, total.histogram.Percentile(0.99) * ms,
        total.histogram.Percentile(0.999) * ms, total.histogram.max() * ms,
        static_cast<long long>(o.budget.count()),
        static_cast<unsigned long long>(total.within_budget), codes.c_str());
  } else {
    std::printf("%s loop, %s, %s%s, %d connections, %d events/request, %.0f s\n",
                o.rate > 0 ? "open" : "closed", o.format.c_str(), o.tls ? "TLS" : "plain",
                o.new_connection ? ", a new connection per request" : "", o.connections,
                o.events_per_request, seconds);
    std::printf("requests: %llu  errors: %llu  ", static_cast<unsigned long long>(total.requests),
                static_cast<unsigned long long>(total.errors));
    for (auto [code, n] : total.codes) {
      std::printf("[%d: %llu] ", code, static_cast<unsigned long long>(n));
    }
    std::printf("\nthroughput: %.1f requests/s, %.1f events/s\n", rps, rps * o.events_per_request);
    std::printf("latency: p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms\n",
                total.histogram.Percentile(0.50) * ms, total.histogram.Percentile(0.99) * ms,
                total.histogram.Percentile(0.999) * ms, total.histogram.max() * ms);
    std::printf("answered 200 within %lld ms: %llu of %llu (%.1f %%)\n",
                static_cast<long long>(o.budget.count()),
                static_cast<unsigned long long>(total.within_budget),
                static_cast<unsigned long long>(total.requests),
                total.requests == 0 ? 0.0 : 100.0 * total.within_budget / total.requests);
  }
  return total.errors == 0 ? 0 : 1;
}
