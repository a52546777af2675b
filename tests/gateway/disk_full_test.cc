// Disk full for real: the store lives on a small tmpfs mounted by the test, which is filled until
// RocksDB's writes fail with ENOSPC. The gateway must answer 503 with the reason, store nothing
// of a refused request (also after reopening), and accept requests again, without a restart,
// once space is freed.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gateway/server.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using testing::CloudEvent;
using testing::EventPlatformHeaders;
using testing::GatewayHarness;
using testing::HttpClient;
using testing::HttpResponse;
using testing::LegacyBatch;
using testing::LegacyHeaders;
using testing::NewUuid;
using testing::TempDir;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A tmpfs of `size` mounted at `path` for the test's lifetime (lazily unmounted at the end, so a
// failed assertion never leaves it behind). Needs root (CAP_SYS_ADMIN), as CI has.
class TmpfsMount {
 public:
  TmpfsMount(const std::string& path, const std::string& size) : path_(path) {
    std::filesystem::create_directories(path);
    const std::string options = "size=" + size + ",mode=0700";
    if (mount("tmpfs", path.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
      error_ = std::strerror(errno);
    }
  }
  ~TmpfsMount() {
    if (error_.empty()) umount2(path_.c_str(), MNT_DETACH);
  }
  // Empty when mounted.
  const std::string& error() const { return error_; }

 private:
  std::string path_;
  std::string error_;
};

// Writes zeros to `path` until the filesystem is full; returns the bytes written.
std::size_t FillUp(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) return 0;
  std::setvbuf(file, nullptr, _IONBF, 0);
  const std::string block(4096, '\0');
  std::size_t written = 0;
  while (std::fwrite(block.data(), 1, block.size(), file) == block.size()) written += block.size();
  std::fclose(file);
  return written;
}

// A legacy request of 10 events with a few KiB of attribute values each, and its event ids.
struct Request {
  std::string body;
  std::vector<std::string> ids;
};

Request BigLegacyRequest() {
  Request request;
  std::vector<std::string> events;
  for (int i = 0; i < 10; ++i) {
    request.ids.push_back(NewUuid());
    events.push_back(absl::StrCat(
        R"({"action":"product.updated","event_id":")", request.ids.back(),
        R"(","event_datetime":"2026-11-20T10:15:00+00:00","author":"julia","author_type":"ui",)",
        R"("pim_source":"https:\/\/pim.example.com","data":{"resource":{"uuid":")", NewUuid(),
        R"(","values":{"description":[{"locale":"en_US","scope":null,"data":")",
        std::string(4000, 'd'), R"("}]}}}})"));
  }
  request.body = LegacyBatch(events);
  return request;
}

HttpResponse Post(HttpClient& client, const Request& request) {
  return client.Send("POST", "/hooks/legacy", request.body,
                     LegacyHeaders(GatewayHarness::kLegacySecret, request.body));
}

TEST(DiskFull, FullFilesystemIs503NothingPartialAndWritesResumeOnceSpaceIsBack) {
  TempDir dir;
  const std::string mount_point = dir.File("fs");
  // RocksDB recovers from a full disk by itself once it sees as much free space as one memtable
  // (32 MiB by default), hence a filesystem a little larger than that.
  TmpfsMount fs(mount_point, "64m");
  if (!fs.error().empty()) {
    GTEST_SKIP() << "cannot mount a tmpfs at " << mount_point << " (" << fs.error()
                 << "): this test needs root with CAP_SYS_ADMIN";
  }
  // Fill the filesystem but for 1 MiB before the store is opened, so that RocksDB cannot
  // preallocate its write-ahead log in the space that is left.
  const std::string filler = mount_point + "/filler";
  const std::string reserve = mount_point + "/reserve";
  { std::ofstream(reserve) << std::string(1 << 20, 'r'); }
  ASSERT_GT(FillUp(filler), 32u << 20);
  std::filesystem::remove(reserve);
  GatewayHarness::Options options;
  options.tweak = [&](Config& config) { config.store.path = mount_point + "/store"; };
  GatewayHarness gw(options);
  HttpClient client = gw.Client();

  std::vector<std::string> acknowledged;
  for (int i = 0; i < 3; ++i) {
    Request request = BigLegacyRequest();
    HttpResponse res = Post(client, request);
    ASSERT_EQ(res.status, 200) << res.body;
    acknowledged.insert(acknowledged.end(), request.ids.begin(), request.ids.end());
  }

  // Send until the log's writes fail: the space left takes a few dozen requests.
  std::vector<Request> refused;
  HttpResponse res;
  for (int i = 0; i < 200; ++i) {
    Request request = BigLegacyRequest();
    res = Post(client, request);
    if (res.status == 200) {
      acknowledged.insert(acknowledged.end(), request.ids.begin(), request.ids.end());
      continue;
    }
    refused.push_back(request);
    break;
  }
  ASSERT_EQ(refused.size(), 1u) << "the log kept accepting writes on a full filesystem";
  EXPECT_EQ(res.status, 503) << res.body;
  EXPECT_TRUE(Contains(res.body, R"("error":"store_unavailable")")) << res.body;
  EXPECT_TRUE(Contains(res.body, "nothing was written")) << res.body;
  EXPECT_TRUE(Contains(res.body, "No space left on device")) << res.body;

  // While it stays full, every request is refused the same way, on both producers' paths, and
  // the connection stays usable.
  Request still_full = BigLegacyRequest();
  res = Post(client, still_full);
  EXPECT_EQ(res.status, 503) << res.body;
  EXPECT_TRUE(Contains(res.body, "No space left on device")) << res.body;
  refused.push_back(still_full);
  const std::string cloud_event =
      CloudEvent("com.akeneo.pim.v1.product.updated", NewUuid(), NewUuid());
  res = client.Send("POST", "/hooks/platform", cloud_event,
                    EventPlatformHeaders(GatewayHarness::kPlatformSecret, cloud_event));
  EXPECT_EQ(res.status, 503) << res.body;

  // Space is back: the first refused request is sent again, as the Event Platform would retry,
  // until it is accepted (RocksDB looks for free space every few seconds), and it is stored
  // whole, not taken for duplicates; new requests are accepted too. No restart.
  std::filesystem::remove(filler);
  const auto freed = std::chrono::steady_clock::now();
  for (int attempt = 0; attempt < 300; ++attempt) {
    res = Post(client, refused[0]);
    if (res.status != 503) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ::testing::Test::RecordProperty(
      "recovered_after_ms", static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                 std::chrono::steady_clock::now() - freed)
                                                 .count()));
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.body, R"({"accepted":10,"duplicates":0})");
  acknowledged.insert(acknowledged.end(), refused[0].ids.begin(), refused[0].ids.end());
  for (int i = 0; i < 3; ++i) {
    Request request = BigLegacyRequest();
    res = Post(client, request);
    ASSERT_EQ(res.status, 200) << res.body;
    acknowledged.insert(acknowledged.end(), request.ids.begin(), request.ids.end());
  }

  // Reopened from disk: every acknowledged event once, in gap-free sequence order, and nothing
  // of the request that was refused and never retried.
  gw.Restart();
  std::vector<v1::Event> events = gw.AllEvents();
  std::set<std::string> stored;
  for (std::size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), i + 1);
    stored.insert(events[i].id());
  }
  EXPECT_EQ(events.size(), acknowledged.size());
  for (const std::string& id : acknowledged) EXPECT_EQ(stored.count(id), 1u) << id;
  for (const std::string& id : refused[1].ids) EXPECT_EQ(stored.count(id), 0u) << id;
  HttpClient after = gw.Client();
  EXPECT_EQ(Post(after, BigLegacyRequest()).status, 200);
}

}  // namespace
}  // namespace pimgate
