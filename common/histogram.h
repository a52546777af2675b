// Lock-free latency histograms in fixed Prometheus buckets, observed on I/O threads and rendered
// by the metrics module (metrics/metrics.h writes them in the exposition format).
#ifndef PIMGATE_COMMON_HISTOGRAM_H_
#define PIMGATE_COMMON_HISTOGRAM_H_

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

namespace pimgate {

// A histogram at one instant: `counts[i]` observations fell in (bounds[i-1], bounds[i]], the
// last one (counts.size() == bounds.size() + 1) above every bound. Not cumulative.
struct HistogramSnapshot {
  std::vector<double> bounds;
  std::vector<uint64_t> counts;
  double sum = 0;
  uint64_t count() const;
};

// Durations in fixed Prometheus buckets (seconds), one relaxed atomic per bucket: Observe never
// locks and never allocates, so an I/O thread can call it per request. Thread-safe.
//
// The bounds bracket the PIM's answer budgets: 0.5 s for the Events API and 5 s for the Event
// Platform are bucket bounds, so an alert can count answers over budget exactly.
class LatencyHistogram {
 public:
  static constexpr std::array<double, 14> kBoundsSeconds = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

  void Observe(std::chrono::nanoseconds elapsed);
  // Bucket counts and sum are read one after the other, not as one atomic whole: a concurrent
  // Observe may show in the buckets and not yet in the sum. count() is derived from the buckets,
  // so _count always equals the +Inf bucket.
  HistogramSnapshot Snapshot() const;

 private:
  std::array<std::atomic<uint64_t>, kBoundsSeconds.size() + 1> buckets_{};
  std::atomic<uint64_t> sum_nanos_{0};
};

}  // namespace pimgate

#endif  // PIMGATE_COMMON_HISTOGRAM_H_
