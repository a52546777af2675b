// A log-linear latency histogram (HdrHistogram-style: < 1 % relative error, fixed memory), so
// load generators can record millions of samples and report exact-enough high percentiles.
#ifndef PIMGATE_BENCH_LATENCY_HISTOGRAM_H_
#define PIMGATE_BENCH_LATENCY_HISTOGRAM_H_

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>

namespace pimgate::bench {

// Not thread-safe: keep one per thread and Merge() them.
class LatencyHistogram {
 public:
  // Values (nanoseconds) below 2^kSubBits are exact; above, each power of two is split into
  // 2^(kSubBits-1) buckets: relative error < 2^-(kSubBits-1).
  static constexpr int kSubBits = 8;
  static constexpr int kExponents = 64 - kSubBits + 1;
  static constexpr std::size_t kBuckets =
      (std::size_t{1} << kSubBits) + kExponents * (std::size_t{1} << (kSubBits - 1));

  void Record(uint64_t value_ns) {
    ++counts_[Index(value_ns)];
    ++total_;
    max_ = std::max(max_, value_ns);
  }
  void Merge(const LatencyHistogram& other) {
    for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    total_ += other.total_;
    max_ = std::max(max_, other.max_);
  }
  uint64_t count() const { return total_; }
  uint64_t max() const { return max_; }
  // Upper bound of the bucket holding the q-quantile (0 < q <= 1).
  uint64_t Percentile(double q) const {
    if (total_ == 0) return 0;
    const uint64_t rank = std::max<uint64_t>(1, static_cast<uint64_t>(q * total_ + 0.5));
    uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::min(UpperBound(i), max_);
    }
    return max_;
  }

 private:
  static std::size_t Index(uint64_t v) {
    constexpr uint64_t kExact = uint64_t{1} << kSubBits;
    if (v < kExact) return static_cast<std::size_t>(v);
    const int shift = std::bit_width(v) - kSubBits;     // >= 1
    const uint64_t sub = (v >> shift) - (kExact >> 1);  // 0 .. 2^(kSubBits-1)-1
    return kExact + (shift - 1) * (kExact >> 1) + sub;
  }
  static uint64_t UpperBound(std::size_t i) {
    constexpr uint64_t kExact = uint64_t{1} << kSubBits;
    if (i < kExact) return i;
    const std::size_t j = i - kExact;
    const int shift = static_cast<int>(j / (kExact >> 1)) + 1;
    const uint64_t sub = j % (kExact >> 1) + (kExact >> 1);
    return ((sub + 1) << shift) - 1;
  }

  std::array<uint64_t, kBuckets> counts_{};
  uint64_t total_ = 0;
  uint64_t max_ = 0;
};

}  // namespace pimgate::bench

#endif  // PIMGATE_BENCH_LATENCY_HISTOGRAM_H_
