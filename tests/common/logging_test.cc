// log.format json: every line pimgate writes to stderr parses as one JSON object with time,
// level, thread and msg, whatever the message holds (quotes, control characters, bytes that are
// not UTF-8, as a logged request header may); and the JSON writer behind it (common/json.h).
#include "common/logging.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "common/json.h"
#include "spdlog/spdlog.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

// Sends this process's stderr to a file while it lives.
class StderrToFile {
 public:
  explicit StderrToFile(const std::string& path) {
    std::fflush(stderr);
    saved_ = dup(STDERR_FILENO);
    FILE* file = std::fopen(path.c_str(), "w");
    dup2(fileno(file), STDERR_FILENO);
    std::fclose(file);
  }
  ~StderrToFile() {
    std::fflush(stderr);
    dup2(saved_, STDERR_FILENO);
    close(saved_);
  }

 private:
  int saved_ = -1;
};

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(JsonLogTest, EveryLineIsOneJsonObjectWhateverTheMessageHolds) {
  testing::TempDir dir;
  const std::string path = dir.File("stderr");
  {
    StderrToFile redirect(path);
    ConfigureLogging(LogLevel::kInfo, LogFormat::kJson);
    spdlog::info("plain");
    spdlog::warn("quotes \" and \\ backslash,\nnewline\ttab \x01 control");
    spdlog::error("not UTF-8: \xc3\x28 \xff, but this is: \xc3\xa9");
    spdlog::debug("below the level: not written");
    spdlog::default_logger()->flush();
  }
  ConfigureLogging(LogLevel::kInfo, LogFormat::kText);
  const std::vector<std::string> lines = Lines(path);
  ASSERT_EQ(lines.size(), 3u);
  const std::regex time(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)");
  std::vector<Json> parsed;
  for (const std::string& line : lines) {
    Json value = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(value.is_discarded()) << "not JSON: " << line;
    ASSERT_TRUE(value.is_object()) << line;
    std::vector<std::string> keys;
    for (const auto& [key, member] : value.items()) keys.push_back(key);
    EXPECT_EQ(keys, (std::vector<std::string>{"time", "level", "thread", "msg"})) << line;
    EXPECT_TRUE(std::regex_match(value["time"].get<std::string>(), time)) << line;
    EXPECT_TRUE(value["thread"].is_number_unsigned()) << line;
    parsed.push_back(std::move(value));
  }
  EXPECT_EQ(parsed[0]["level"], "info");
  EXPECT_EQ(parsed[0]["msg"], "plain");
  EXPECT_EQ(parsed[1]["level"], "warning");
  EXPECT_EQ(parsed[1]["msg"], "quotes \" and \\ backslash,\nnewline\ttab \x01 control");
  EXPECT_EQ(parsed[2]["level"], "error");
  // Each byte that is not UTF-8 becomes U+FFFD; the rest is kept as it was.
  EXPECT_EQ(parsed[2]["msg"], "not UTF-8: \xef\xbf\xbd( \xef\xbf\xbd, but this is: \xc3\xa9");
  EXPECT_EQ(lines[0].substr(lines[0].find(R"("level")")),
            R"("level":"info","thread":)" + parsed[0]["thread"].dump() + R"(,"msg":"plain"})");
}

TEST(JsonDumpTest, CompactInInsertionOrderAndNeverThrowsOnBadUtf8) {
  Json answer;
  answer["error"] = "bad_signature";
  answer["message"] = "a \"quoted\" \xff byte";
  answer["accepted"] = 0;
  EXPECT_EQ(JsonDump(answer),
            "{\"error\":\"bad_signature\",\"message\":\"a \\\"quoted\\\" \xef\xbf\xbd byte\","
            "\"accepted\":0}");
  EXPECT_EQ(JsonDump(Json::array({1, "x", nullptr, true})), R"([1,"x",null,true])");
}

}  // namespace
}  // namespace pimgate
