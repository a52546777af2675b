// How pimgatectl prints: aligned tables for people, protobuf JSON for scripts (--json), and the
// cell formats its commands share (times, sizes, answer codes).
#ifndef PIMGATE_CTL_OUTPUT_H_
#define PIMGATE_CTL_OUTPUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "google/protobuf/map.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"

namespace pimgate::ctl {

// `message` in the protobuf JSON mapping with the .proto field names and every field (64-bit
// integers as strings, timestamps RFC 3339), indented.
std::string Json(const google::protobuf::Message& message);

// Prints Json(message) on stdout, ending with a newline; returns kExitOk.
int PrintJson(const google::protobuf::Message& message);

// "2026-11-20T10:00:00.000Z" (UTC, milliseconds); "-" for an unset timestamp.
std::string FormatTime(const google::protobuf::Timestamp& ts);

// "512 B", "1.5 KiB", "3.2 GiB".
std::string FormatBytes(uint64_t bytes);

// "200:12 401:1", by code; "-" when empty.
std::string FormatCodes(const google::protobuf::Map<uint32_t, uint64_t>& codes);

// `text` printable on one line: newline, tab and other control characters escaped.
std::string OneLine(absl::string_view text);

// An aligned text table: a header row in capitals, then rows; columns separated by two spaces.
// Cells are shown on one line (OneLine); a middle cell longer than kMaxCellWidth is shortened,
// the last column never is.
class Table {
 public:
  static constexpr std::size_t kMaxCellWidth = 48;

  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void Add(std::vector<std::string> row);
  bool empty() const { return rows_.empty(); }
  // Prints the header and the rows on stdout.
  void Print() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace pimgate::ctl

#endif  // PIMGATE_CTL_OUTPUT_H_
