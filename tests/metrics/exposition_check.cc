// A strict Prometheus text format reader for tests, and the promtool runner.
#include "tests/metrics/exposition_check.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace pimgate::testing {
namespace {

bool IsNameChar(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
         (!first && c >= '0' && c <= '9');
}

// The family a sample name belongs to, given the declared types.
std::string FamilyOf(const std::string& name, const std::map<std::string, std::string>& types) {
  if (types.count(name)) return name;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    if (absl::EndsWith(name, suffix)) {
      std::string base = name.substr(0, name.size() - std::string(suffix).size());
      auto it = types.find(base);
      if (it != types.end() && it->second == "histogram") return base;
    }
  }
  return "";
}

bool ParseDouble(const std::string& text, double* out) {
  if (text == "+Inf") {
    *out = HUGE_VAL;
    return true;
  }
  if (text == "-Inf") {
    *out = -HUGE_VAL;
    return true;
  }
  if (text == "NaN") {
    *out = std::nan("");
    return true;
  }
  return absl::SimpleAtod(text, out);
}

}  // namespace

std::optional<double> ParsedExposition::Value(
    const std::string& name, const std::map<std::string, std::string>& labels) const {
  for (const ParsedSample& s : samples) {
    if (s.name == name && s.labels == labels) {
      double v = 0;
      if (ParseDouble(s.value, &v)) return v;
    }
  }
  return std::nullopt;
}

ParsedExposition ParseExposition(const std::string& text) {
  ParsedExposition out;
  const auto error = [&out](int line, const std::string& what) {
    out.errors.push_back(absl::StrCat("line ", line, ": ", what));
  };
  std::set<std::string> series;
  std::set<std::string> closed_families;  // families whose samples ended
  std::string current_family;
  if (!text.empty() && text.back() != '\n') error(0, "exposition does not end with a newline");

  std::istringstream in(text);
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) {
      error(number, "empty line");
      continue;
    }
    if (line[0] == '#') {
      std::istringstream words(line);
      std::string hash, kind, name;
      words >> hash >> kind >> name;
      if (kind != "HELP" && kind != "TYPE") continue;  // other comments are allowed
      std::string rest;
      std::getline(words, rest);
      if (!rest.empty() && rest[0] == ' ') rest.erase(0, 1);
      if (!absl::StartsWith(name, "pimgate_")) error(number, "name without pimgate_: " + name);
      auto& map = kind == "HELP" ? out.help : out.types;
      if (map.count(name)) error(number, absl::StrCat(kind, " repeated for ", name));
      if (kind == "TYPE") {
        if (rest != "counter" && rest != "gauge" && rest != "histogram") {
          error(number, "unexpected type " + rest);
        }
        if (rest == "counter" && !absl::EndsWith(name, "_total")) {
          error(number, "counter without _total: " + name);
        }
        if (!out.help.count(name)) error(number, "TYPE before HELP for " + name);
      } else if (rest.empty()) {
        error(number, "empty HELP for " + name);
      }
      map[name] = rest;
      if (current_family != name) {
        if (!current_family.empty()) closed_families.insert(current_family);
        current_family = name;
      }
      continue;
    }
    // name{labels} value
    ParsedSample sample;
    std::size_t i = 0;
    while (i < line.size() && IsNameChar(line[i], i == 0)) ++i;
    sample.name = line.substr(0, i);
    if (sample.name.empty()) {
      error(number, "no metric name: " + line);
      continue;
    }
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const std::size_t start = i;
        while (i < line.size() && IsNameChar(line[i], i == start) && line[i] != ':') ++i;
        const std::string label = line.substr(start, i - start);
        if (label.empty() || i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') {
          error(number, "bad label syntax: " + line);
          break;
        }
        i += 2;
        std::string value;
        bool closed = false;
        while (i < line.size()) {
          const char c = line[i++];
          if (c == '"') {
            closed = true;
            break;
          }
          if (c == '\\') {
            if (i >= line.size()) break;
            const char e = line[i++];
            if (e == '\\') {
              value += '\\';
            } else if (e == '"') {
              value += '"';
            } else if (e == 'n') {
              value += '\n';
            } else {
              error(number, absl::StrCat("bad escape \\", std::string(1, e)));
            }
          } else {
            value += c;
          }
        }
        if (!closed) {
          error(number, "unterminated label value: " + line);
          break;
        }
        if (sample.labels.count(label)) error(number, "label repeated: " + label);
        sample.labels[label] = value;
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size() || line[i] != '}') {
        error(number, "unterminated label set: " + line);
        continue;
      }
      ++i;
    }
    if (i >= line.size() || line[i] != ' ') {
      error(number, "no value: " + line);
      continue;
    }
    sample.value = line.substr(i + 1);
    double parsed = 0;
    if (!ParseDouble(sample.value, &parsed)) error(number, "bad value: " + sample.value);

    const std::string family = FamilyOf(sample.name, out.types);
    if (family.empty()) {
      error(number, "sample of an undeclared family: " + sample.name);
    } else if (family != current_family) {
      error(number, absl::StrCat("sample of ", family, " outside its family block"));
    } else if (closed_families.count(family)) {
      error(number, "family written twice: " + family);
    }
    std::vector<std::string> parts;
    for (const auto& [k, v] : sample.labels) parts.push_back(absl::StrCat(k, "=", v));
    const std::string key = absl::StrCat(sample.name, "{", absl::StrJoin(parts, ","), "}");
    if (!series.insert(key).second) error(number, "series repeated: " + key);
    out.samples.push_back(std::move(sample));
  }

  // Histograms: cumulative buckets ending at +Inf, equal to _count.
  for (const auto& [family, type] : out.types) {
    if (type != "histogram") continue;
    std::map<std::string, std::vector<std::pair<std::string, double>>> buckets;  // labels -> le
    std::map<std::string, double> counts;
    for (const ParsedSample& s : out.samples) {
      std::map<std::string, std::string> labels = s.labels;
      const std::string le = labels.count("le") ? labels["le"] : "";
      labels.erase("le");
      std::vector<std::string> parts;
      for (const auto& [k, v] : labels) parts.push_back(absl::StrCat(k, "=", v));
      const std::string key = absl::StrJoin(parts, ",");
      double v = 0;
      ParseDouble(s.value, &v);
      if (s.name == family + "_bucket") buckets[key].emplace_back(le, v);
      if (s.name == family + "_count") counts[key] = v;
    }
    for (const auto& [key, list] : buckets) {
      double previous_le = -HUGE_VAL;
      double previous = 0;
      for (const auto& [le, v] : list) {
        double bound = 0;
        if (!ParseDouble(le, &bound) || bound <= previous_le) {
          error(0, absl::StrCat(family, "{", key, "}: buckets not in increasing le order"));
        }
        if (v < previous) error(0, absl::StrCat(family, "{", key, "}: buckets not cumulative"));
        previous_le = bound;
        previous = v;
      }
      if (list.empty() || list.back().first != "+Inf") {
        error(0, absl::StrCat(family, "{", key, "}: no +Inf bucket"));
      } else if (!counts.count(key) || counts[key] != list.back().second) {
        error(0, absl::StrCat(family, "{", key, "}: _count differs from the +Inf bucket"));
      }
    }
  }
  return out;
}

std::string FindPromtool() {
  if (const char* env = std::getenv("PROMTOOL"); env != nullptr && *env != '\0') return env;
  for (const char* path : {"/usr/bin/promtool", "/usr/local/bin/promtool"}) {
    if (access(path, X_OK) == 0) return path;
  }
  return "";
}

PromtoolResult PromtoolCheckMetrics(const std::string& promtool, const std::string& text) {
  char path[] = "/tmp/pimgate_metrics_XXXXXX";
  const int fd = mkstemp(path);
  PromtoolResult result;
  if (fd < 0) {
    result.output = "cannot create a temporary file";
    return result;
  }
  close(fd);
  std::ofstream(path, std::ios::binary) << text;
  const std::string command = absl::StrCat(promtool, " check metrics < ", path, " 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe != nullptr) {
    char buf[4096];
    std::size_t n = 0;
    while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) result.output.append(buf, n);
    const int status = pclose(pipe);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  unlink(path);
  return result;
}

}  // namespace pimgate::testing
