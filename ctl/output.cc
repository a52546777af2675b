// Tables, JSON and cell formats of pimgatectl's output.
#include "ctl/output.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "ctl/exit_codes.h"
#include "google/protobuf/util/json_util.h"

namespace pimgate::ctl {

std::string Json(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

int PrintJson(const google::protobuf::Message& message) {
  const std::string json = Json(message);
  std::fputs(json.c_str(), stdout);
  if (!absl::EndsWith(json, "\n")) std::fputc('\n', stdout);
  return kExitOk;
}

std::string FormatTime(const google::protobuf::Timestamp& ts) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return "-";
  const absl::Time time = absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone());
}

std::string FormatBytes(uint64_t bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  if (unit == 0) return absl::StrCat(bytes, " B");
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f %s", value, kUnits[unit]);
  return text;
}

std::string FormatCodes(const google::protobuf::Map<uint32_t, uint64_t>& codes) {
  std::map<uint32_t, uint64_t> sorted(codes.begin(), codes.end());
  std::vector<std::string> parts;
  parts.reserve(sorted.size());
  for (const auto& [code, count] : sorted) parts.push_back(absl::StrCat(code, ":", count));
  return parts.empty() ? "-" : absl::StrJoin(parts, " ");
}

std::string OneLine(absl::string_view text) {
  std::string out;
  for (const char c : text) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += absl::StrCat("\\x", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
    } else {
      out += c;
    }
  }
  return out;
}

void Table::Add(std::vector<std::string> row) {
  for (std::string& cell : row) cell = OneLine(cell);
  rows_.push_back(std::move(row));
}

void Table::Print() const {
  std::vector<std::size_t> widths(header_.size(), 0);
  std::vector<std::vector<std::string>> all = {header_};
  for (const auto& row : rows_) {
    std::vector<std::string> shown = row;
    for (std::size_t i = 0; i + 1 < shown.size(); ++i) {
      if (shown[i].size() > kMaxCellWidth) {
        shown[i] = shown[i].substr(0, kMaxCellWidth - 3) + "...";
      }
    }
    all.push_back(std::move(shown));
  }
  for (const auto& row : all) {
    for (std::size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  for (const auto& row : all) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
}

}  // namespace pimgate::ctl
