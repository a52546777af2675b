// Test support for the metrics tests: a strict reader of the Prometheus text format 0.0.4 (what
// a scraper needs, plus pimgate's own naming rules) and a runner for `promtool check metrics`.
#ifndef PIMGATE_TESTS_METRICS_EXPOSITION_CHECK_H_
#define PIMGATE_TESTS_METRICS_EXPOSITION_CHECK_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pimgate::testing {

struct ParsedSample {
  std::string name;                           // with _bucket/_sum/_count for histograms
  std::map<std::string, std::string> labels;  // unescaped values
  std::string value;
};

struct ParsedExposition {
  std::map<std::string, std::string> types;  // family -> counter|gauge|histogram
  std::map<std::string, std::string> help;
  std::vector<ParsedSample> samples;
  std::vector<std::string> errors;  // empty when well formed

  // The value of the sample `name` with exactly `labels`, if present.
  std::optional<double> Value(const std::string& name,
                              const std::map<std::string, std::string>& labels = {}) const;
};

// Parses `text` and checks: every line is a comment or a sample; HELP and TYPE come once per
// family, before its samples, and a family's samples are contiguous; every sample belongs to a
// declared family (histograms through _bucket/_sum/_count); label values are properly escaped;
// no series appears twice; histogram buckets are cumulative, end with le="+Inf" and match
// _count; counters end in _total; names start with pimgate_.
ParsedExposition ParseExposition(const std::string& text);

// Where promtool is, or empty when it is not installed.
std::string FindPromtool();

struct PromtoolResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};
// Runs `promtool check metrics` on `text`.
PromtoolResult PromtoolCheckMetrics(const std::string& promtool, const std::string& text);

}  // namespace pimgate::testing

#endif  // PIMGATE_TESTS_METRICS_EXPOSITION_CHECK_H_
