// Metrics plumbing shared by every module: a writer for the Prometheus text exposition format
// (latency histograms come from common/histogram.h) and a registry of collectors and readiness
// checks that the metrics endpoint (metrics/metrics_server.h) serves. Nothing here knows pimgate's
// components: they register collectors (metrics/metrics_collectors.h, metrics/gateway_metrics.h).
#ifndef PIMGATE_METRICS_METRICS_H_
#define PIMGATE_METRICS_METRICS_H_

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/histogram.h"

namespace pimgate {

// Builds one exposition in the Prometheus text format 0.0.4. Each family is written once, as
// `# HELP` and `# TYPE` followed by all of its samples; label values and help text are escaped
// here. Metric and label names are the caller's constants and must be valid Prometheus names
// ([a-zA-Z_:][a-zA-Z0-9_:]*, labels without ':'). Not thread-safe: one writer per scrape.
//
//   MetricsWriter w;
//   w.Family("pimgate_log_head_sequence", "Highest sequence stored.", MetricType::kGauge);
//   w.Sample({}, head);
//   std::string text = w.Take();
enum class MetricType { kCounter, kGauge, kHistogram };

class MetricsWriter {
 public:
  using Labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

  // Starts the family `name`. A family already written is a programming error (checked by
  // assert); a family with no sample is valid and tells a scraper the metric exists.
  void Family(std::string_view name, std::string_view help, MetricType type);
  // A sample of the current counter or gauge family.
  void Sample(Labels labels, double value);
  void Sample(Labels labels, uint64_t value);
  // The _bucket (cumulative, with le), _sum and _count samples of the current histogram family.
  void Histogram(Labels labels, const HistogramSnapshot& histogram);

  // The exposition so far; the writer is empty afterwards.
  std::string Take();

  // Label value escaping of the text format: backslash, double quote and newline.
  static std::string EscapeLabelValue(std::string_view value);
  // Formats a sample value: integers exactly, others in the shortest form that reads back the
  // same, and NaN, +Inf, -Inf as the format spells them.
  static std::string FormatValue(double value);

 private:
  void WriteSample(std::string_view suffix, Labels labels, std::string_view extra_label,
                   std::string_view extra_value, std::string_view value);

  std::string out_;
  std::string family_;
  MetricType type_ = MetricType::kGauge;
  std::vector<std::string> written_;  // families so far, to catch a repeated family
};

// Collectors and readiness checks registered by the running components, keyed by component
// name. Thread-safe. Render and CheckReadiness run the callbacks under a reader lock, and Remove
// takes the writer lock: once Remove(name) returns, no callback of `name` runs or will run, so a
// component removes itself before it is destroyed.
class MetricsRegistry {
 public:
  // Writes whole families; called once per scrape.
  using Collector = std::function<void(MetricsWriter&)>;
  // Empty when ready, else why not (a short sentence for an operator). May latch state, e.g.
  // "has reached SERVING once": CheckReadiness also runs periodically for that (see
  // MetricsServer), not only when a probe asks.
  using ReadinessCheck = std::function<std::string()>;

  struct NotReady {
    std::string component;
    std::string reason;
  };

  // Adds (or replaces) the collector of `component`. Collectors run in the order first added.
  void SetCollector(const std::string& component, Collector collector);
  // Adds (or replaces) the readiness check of `component`.
  void SetReadinessCheck(const std::string& component, ReadinessCheck check);
  // Removes both of `component`; waits for a render or check in progress.
  void Remove(const std::string& component);

  std::string Render() const;
  // Every failing check, in registration order; empty = ready.
  std::vector<NotReady> CheckReadiness() const;

 private:
  mutable absl::Mutex mu_;
  std::vector<std::pair<std::string, Collector>> collectors_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, ReadinessCheck>> checks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pimgate

#endif  // PIMGATE_METRICS_METRICS_H_
