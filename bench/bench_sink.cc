// pimgate_bench_sink: a C++ SDK plugin that acknowledges every delivery at once and measures
// end-to-end latency (handler call time - event.received_at) for benchmarks. Its handler is a
// DeliveryHandler that reads only the event's header (received_at), so the product in each
// event's data is never decoded, unless BENCH_SINK_READ_DATA=1.
//
// Environment:
//   BENCH_SINK_OUT          file the JSON summary is written to (required)
//   BENCH_SINK_EXPECT       when this many deliveries have been handled, also write the summary
//                           at once, so a benchmark can see completion without stopping the sink
//   BENCH_SINK_CONCURRENCY  handler threads (RunOptions::concurrency; default: the SDK's)
//   BENCH_SINK_READ_DATA=1  also decode every event's data (reads its field count), as a handler
//                           that reads the product does
//   BENCH_SINK_EVENT_HANDLER=1  use a Handler (the whole event decoded before the call, as
//                           plugins written before sdk::Delivery get it) instead
//   BENCH_SINK_PROGRESS_MS  also write the summary this often while running (a benchmark that
//                           does not know how many events this sink will get, e.g. one of several
//                           cluster nodes', sums the sinks' summaries to see completion)
//
// Summary: {"events":N,"redeliveries":R,"p50_ms":..,"p99_ms":..,"p999_ms":..,"max_ms":..,
// "first_us":..,"last_us":..}; first_us/last_us are the wall-clock times (µs since the epoch) of
// the first and last handler call. Written atomically (temp file + rename) when N reaches
// BENCH_SINK_EXPECT, every BENCH_SINK_PROGRESS_MS, and when the SDK's Run returns after SIGTERM.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "bench/latency_histogram.h"
#include "sdk/cpp/pimgate_sdk.h"

namespace {

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t TimestampMicros(const google::protobuf::Timestamp& t) {
  return t.seconds() * 1'000'000 + t.nanos() / 1'000;
}

// Every delivery's latency, behind one mutex: a Record is a few nanoseconds next to the gRPC
// work around each delivery, so contention between the handler threads does not show.
// Thread-safe.
class SinkStats {
 public:
  explicit SinkStats(std::string out_path, uint64_t expect)
      : out_path_(std::move(out_path)), expect_(expect) {}

  void Record(const pimgate::v1::Event& event, uint32_t attempt) {
    const int64_t now_us = NowMicros();
    const int64_t latency_us =
        event.has_received_at() ? now_us - TimestampMicros(event.received_at()) : 0;
    bool reached_expect = false;
    {
      absl::MutexLock lock(&mu_);
      // A clock step backwards could make the difference negative: count it as zero.
      histogram_.Record(static_cast<uint64_t>(latency_us > 0 ? latency_us : 0) * 1'000);
      if (events_ == 0) first_us_ = now_us;
      last_us_ = now_us;
      ++events_;
      if (attempt > 1) ++redeliveries_;
      reached_expect = expect_ > 0 && events_ == expect_;
    }
    // Off the lock: other handlers keep recording while the file is written.
    if (reached_expect) WriteSummary();
  }

  // Writes the summary of everything recorded so far. Safe to call from any thread.
  void WriteSummary() {
    std::string json;
    {
      absl::MutexLock lock(&mu_);
      constexpr double kMs = 1e-6;  // the histogram holds nanoseconds
      char buf[512];
      std::snprintf(buf, sizeof(buf),
                    "{\"events\":%llu,\"redeliveries\":%llu,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
                    "\"p999_ms\":%.3f,\"max_ms\":%.3f,\"first_us\":%lld,\"last_us\":%lld}\n",
                    static_cast<unsigned long long>(events_),
                    static_cast<unsigned long long>(redeliveries_),
                    histogram_.Percentile(0.50) * kMs, histogram_.Percentile(0.99) * kMs,
                    histogram_.Percentile(0.999) * kMs, histogram_.max() * kMs,
                    static_cast<long long>(first_us_), static_cast<long long>(last_us_));
      json = buf;
    }
    absl::MutexLock lock(&write_mu_);  // one writer of the temp file at a time
    const std::string tmp = out_path_ + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "bench_sink: cannot write %s\n", tmp.c_str());
      return;
    }
    std::fputs(json.c_str(), f);
    std::fclose(f);
    if (std::rename(tmp.c_str(), out_path_.c_str()) != 0) {
      std::fprintf(stderr, "bench_sink: cannot rename %s\n", tmp.c_str());
    }
  }

 private:
  const std::string out_path_;
  const uint64_t expect_;
  absl::Mutex mu_;
  pimgate::bench::LatencyHistogram histogram_ ABSL_GUARDED_BY(mu_);
  uint64_t events_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t redeliveries_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t first_us_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_us_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Mutex write_mu_;
};

}  // namespace

int main() {
  const char* out = std::getenv("BENCH_SINK_OUT");
  if (out == nullptr || *out == '\0') {
    std::fprintf(stderr, "bench_sink: BENCH_SINK_OUT must name the summary file\n");
    return 2;
  }
  const char* expect = std::getenv("BENCH_SINK_EXPECT");
  const char* concurrency = std::getenv("BENCH_SINK_CONCURRENCY");
  const char* progress = std::getenv("BENCH_SINK_PROGRESS_MS");
  const int progress_ms = progress != nullptr ? std::atoi(progress) : 0;
  pimgate::sdk::RunOptions options;
  if (concurrency != nullptr && std::atoi(concurrency) > 0) {
    options.concurrency = std::atoi(concurrency);
  }
  // Outlives every handler call: Run returns only once running handlers are done (past its
  // drain timeout the SDK ends the process instead).
  SinkStats stats(out, expect != nullptr ? std::strtoull(expect, nullptr, 10) : 0);
  absl::Mutex done_mu;
  bool done = false;
  std::thread progress_writer;
  if (progress_ms > 0) {
    progress_writer = std::thread([&] {
      absl::MutexLock lock(&done_mu);
      while (!done_mu.AwaitWithTimeout(absl::Condition(&done), absl::Milliseconds(progress_ms))) {
        stats.WriteSummary();
      }
    });
  }
  const char* read_data_env = std::getenv("BENCH_SINK_READ_DATA");
  const bool read_data = read_data_env != nullptr && std::string(read_data_env) == "1";
  // Data fields seen when reading data (an atomic: the decode cannot be optimized away).
  std::atomic<uint64_t> data_fields{0};
  const char* event_handler_env = std::getenv("BENCH_SINK_EVENT_HANDLER");
  const bool event_handler = event_handler_env != nullptr && std::string(event_handler_env) == "1";
  const int code =
      event_handler
          ? pimgate::sdk::Run(
                [&stats](const pimgate::v1::Event& event, uint32_t attempt) {
                  stats.Record(event, attempt);
                  return pimgate::sdk::Result::Ok();
                },
                options)
          : pimgate::sdk::Run(
                [&stats, &data_fields, read_data](const pimgate::sdk::Delivery& delivery) {
                  if (read_data) {
                    data_fields.fetch_add(delivery.data().fields_size(), std::memory_order_relaxed);
                  }
                  stats.Record(delivery.event(), delivery.attempt());
                  return pimgate::sdk::Result::Ok();
                },
                options);
  if (progress_writer.joinable()) {
    {
      absl::MutexLock lock(&done_mu);
      done = true;
    }
    progress_writer.join();
  }
  stats.WriteSummary();
  return code;
}
