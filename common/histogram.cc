// LatencyHistogram: relaxed atomics per bucket, a snapshot read bucket by bucket.
#include "common/histogram.h"

#include <algorithm>

namespace pimgate {
namespace {

constexpr double kNanosPerSecond = 1e9;

}  // namespace

uint64_t HistogramSnapshot::count() const {
  uint64_t total = 0;
  for (uint64_t n : counts) total += n;
  return total;
}

void LatencyHistogram::Observe(std::chrono::nanoseconds elapsed) {
  const int64_t nanos = std::max<int64_t>(0, elapsed.count());
  const double seconds = static_cast<double>(nanos) / kNanosPerSecond;
  // Prometheus buckets are upper-inclusive: an observation equal to a bound belongs to it.
  const auto it = std::lower_bound(kBoundsSeconds.begin(), kBoundsSeconds.end(), seconds);
  buckets_[static_cast<std::size_t>(it - kBoundsSeconds.begin())].fetch_add(
      1, std::memory_order_relaxed);
  sum_nanos_.fetch_add(static_cast<uint64_t>(nanos), std::memory_order_relaxed);
}

HistogramSnapshot LatencyHistogram::Snapshot() const {
  HistogramSnapshot snapshot;
  snapshot.bounds.assign(kBoundsSeconds.begin(), kBoundsSeconds.end());
  snapshot.counts.reserve(buckets_.size());
  for (const auto& bucket : buckets_) {
    snapshot.counts.push_back(bucket.load(std::memory_order_relaxed));
  }
  snapshot.sum = static_cast<double>(sum_nanos_.load(std::memory_order_relaxed)) / kNanosPerSecond;
  return snapshot;
}

}  // namespace pimgate
