// Prometheus text exposition (format 0.0.4) and the metrics registry.
#include "metrics/metrics.h"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cmath>
#include <limits>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace pimgate {
namespace {

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

[[maybe_unused]] bool ValidName(std::string_view name, bool allow_colon) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (allow_colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// HELP text escaping: backslash and newline (double quotes stay as they are).
std::string EscapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

void MetricsWriter::Family(std::string_view name, std::string_view help, MetricType type) {
  assert(ValidName(name, /*allow_colon=*/true));
  assert(std::find(written_.begin(), written_.end(), name) == written_.end());
  written_.emplace_back(name);
  family_ = std::string(name);
  type_ = type;
  absl::StrAppend(&out_, "# HELP ", family_, " ", EscapeHelp(help), "\n");
  absl::StrAppend(&out_, "# TYPE ", family_, " ", TypeName(type), "\n");
}

void MetricsWriter::Sample(Labels labels, double value) {
  assert(type_ != MetricType::kHistogram);
  WriteSample("", labels, "", "", FormatValue(value));
}

void MetricsWriter::Sample(Labels labels, uint64_t value) {
  assert(type_ != MetricType::kHistogram);
  WriteSample("", labels, "", "", absl::StrCat(value));
}

void MetricsWriter::Histogram(Labels labels, const HistogramSnapshot& histogram) {
  assert(type_ == MetricType::kHistogram);
  assert(histogram.counts.size() == histogram.bounds.size() + 1);
  uint64_t cumulative = 0;
  for (std::size_t i = 0; i < histogram.counts.size(); ++i) {
    cumulative += histogram.counts[i];
    const std::string le =
        i < histogram.bounds.size() ? FormatValue(histogram.bounds[i]) : std::string("+Inf");
    WriteSample("_bucket", labels, "le", le, absl::StrCat(cumulative));
  }
  WriteSample("_sum", labels, "", "", FormatValue(histogram.sum));
  WriteSample("_count", labels, "", "", absl::StrCat(cumulative));
}

std::string MetricsWriter::Take() {
  std::string out = std::move(out_);
  out_.clear();
  written_.clear();
  family_.clear();
  return out;
}

void MetricsWriter::WriteSample(std::string_view suffix, Labels labels,
                                std::string_view extra_label, std::string_view extra_value,
                                std::string_view value) {
  assert(!family_.empty());
  out_.append(family_).append(suffix);
  if (labels.size() > 0 || !extra_label.empty()) {
    out_ += '{';
    bool first = true;
    const auto append = [&](std::string_view name, std::string_view label_value) {
      assert(ValidName(name, /*allow_colon=*/false));
      if (!first) out_ += ',';
      first = false;
      out_.append(name).append("=\"").append(EscapeLabelValue(label_value)).append("\"");
    };
    for (const auto& [name, label_value] : labels) append(name, label_value);
    if (!extra_label.empty()) append(extra_label, extra_value);
    out_ += '}';
  }
  out_.append(" ").append(value).append("\n");
}

std::string MetricsWriter::EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string MetricsWriter::FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // Whole numbers up to 2^53 print as integers (no exponent): "1", "604800".
  constexpr double kExactIntegerLimit = 9007199254740992.0;
  if (value == std::floor(value) && std::fabs(value) < kExactIntegerLimit) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  // Shortest round-trip digits, in %g style: 0.0005 rather than 5e-04, so that bucket bounds
  // read as people (and PromQL matchers such as le="0.0005") write them.
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::general);
  if (ec != std::errc()) return "NaN";
  return std::string(buf, end);
}

void MetricsRegistry::SetCollector(const std::string& component, Collector collector) {
  absl::MutexLock lock(&mu_);
  for (auto& [name, existing] : collectors_) {
    if (name == component) {
      existing = std::move(collector);
      return;
    }
  }
  collectors_.emplace_back(component, std::move(collector));
}

void MetricsRegistry::SetReadinessCheck(const std::string& component, ReadinessCheck check) {
  absl::MutexLock lock(&mu_);
  for (auto& [name, existing] : checks_) {
    if (name == component) {
      existing = std::move(check);
      return;
    }
  }
  checks_.emplace_back(component, std::move(check));
}

void MetricsRegistry::Remove(const std::string& component) {
  absl::MutexLock lock(&mu_);
  const auto named = [&component](const auto& entry) { return entry.first == component; };
  collectors_.erase(std::remove_if(collectors_.begin(), collectors_.end(), named),
                    collectors_.end());
  checks_.erase(std::remove_if(checks_.begin(), checks_.end(), named), checks_.end());
}

std::string MetricsRegistry::Render() const {
  MetricsWriter writer;
  absl::ReaderMutexLock lock(&mu_);
  for (const auto& [name, collector] : collectors_) collector(writer);
  return writer.Take();
}

std::vector<MetricsRegistry::NotReady> MetricsRegistry::CheckReadiness() const {
  std::vector<NotReady> not_ready;
  absl::ReaderMutexLock lock(&mu_);
  for (const auto& [name, check] : checks_) {
    std::string reason = check();
    if (!reason.empty()) not_ready.push_back(NotReady{name, std::move(reason)});
  }
  return not_ready;
}

}  // namespace pimgate
