// kill -9 durability: a real pimgate process is SIGKILLed while requests are in flight; every
// event of every request it answered 200 must be in the log when it is reopened.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "core/rocksdb_backend.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using testing::HttpClient;
using testing::HttpResponse;
using testing::PimgateProcess;
using testing::TempDir;

constexpr char kSecret[] = "crash-test-secret";

std::string WriteConfig(const TempDir& dir) {
  testing::CertFiles cert = testing::MakeSelfSignedCert(dir.path());
  std::ostringstream yaml;
  yaml << "gateway:\n"
       << "  listen: 127.0.0.1:0\n"
       << "  threads: 2\n"
       << "  tls:\n"
       << "    cert_file: " << cert.cert_file << "\n"
       << "    key_file: " << cert.key_file << "\n"
       << "store:\n"
       << "  path: " << dir.File("store") << "\n"
       << "  sync: true\n"
       << "log:\n"
       << "  level: warn\n"
       << "sources:\n"
       << "  - name: pim\n"
       << "    kind: events_api\n"
       << "    path: /hooks/pim\n"
       << "    secret: ${PIMGATE_CRASH_SECRET}\n";
  std::string path = dir.File("pimgate.yaml");
  std::ofstream(path) << yaml.str();
  return path;
}

TEST(CrashTest, EveryEventAnswered200SurvivesKill9) {
  TempDir dir;
  const std::string config = WriteConfig(dir);
  std::set<std::string> acknowledged;  // event ids of 200-answered requests
  std::mutex mu;
  constexpr int kRounds = 3;
  constexpr int kClients = 4;
  constexpr int kAcksBeforeKill = 60;  // requests answered 200 per round before the kill

  for (int round = 0; round < kRounds; ++round) {
    PimgateProcess process(config, dir.File("ready.json"), {{"PIMGATE_CRASH_SECRET", kSecret}});
    const uint16_t port = process.WaitReady();
    ASSERT_NE(port, 0) << "pimgate did not start";
    std::atomic<int> acks{0};
    std::atomic<bool> killed{false};
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&] {
        HttpClient client(port, /*tls=*/true);
        while (!killed.load()) {
          std::vector<std::string> events, ids;
          for (int i = 0; i < 10; ++i) {
            ids.push_back(testing::NewUuid());
            events.push_back(
                testing::LegacyProductEvent("product.updated", ids.back(), testing::NewUuid()));
          }
          const std::string body = testing::LegacyBatch(events);
          HttpResponse res =
              client.Send("POST", "/hooks/pim", body, testing::LegacyHeaders(kSecret, body));
          if (res.status == 200) {
            {
              std::lock_guard lock(mu);
              acknowledged.insert(ids.begin(), ids.end());
            }
            acks.fetch_add(1);
          } else if (res.status != 0) {
            ADD_FAILURE() << "unexpected answer " << res.status << ": " << res.body;
            return;
          } else {
            return;  // connection died with the process
          }
        }
      });
    }
    while (acks.load() < kAcksBeforeKill) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    // SIGKILL while the other clients still have requests in flight.
    process.Kill();
    killed = true;
    for (std::thread& t : clients) t.join();
  }

  auto backend = OpenRocksDbBackend(dir.File("store"));
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto events = (*backend)->ReadEvents(1, 10'000'000);
  ASSERT_TRUE(events.ok()) << events.status();
  std::set<std::string> stored;
  uint64_t previous = 0;
  for (const v1::Event& event : *events) {
    EXPECT_GT(event.sequence(), previous);
    previous = event.sequence();
    stored.insert(event.id());
  }
  std::size_t missing = 0;
  for (const std::string& id : acknowledged) missing += stored.count(id) == 0;
  EXPECT_EQ(missing, 0u) << "of " << acknowledged.size() << " acknowledged events";
  EXPECT_GE(acknowledged.size(), static_cast<std::size_t>(kRounds * kAcksBeforeKill * 10));
  // Requests are atomic: a stored request has all of its 10 events.
  EXPECT_EQ(stored.size() % 10, 0u);
}

}  // namespace
}  // namespace pimgate
