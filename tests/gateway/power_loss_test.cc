// "200 only after fsync; a power loss loses nothing", end to end: signed legacy webhooks over real
// HTTPS to an in-process gateway whose store runs on a PowerCutFileSystem
// (tests/testing/power_cut_file_system.h). The power is cut as the gateway's commit of a request
// is being fsynced; the store is reopened from what a disk would hold. With store.sync every
// event answered 200 is there; without it events answered 200 are lost (the control).
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "config/config.h"
#include "core/log/event_log.h"
#include "core/log/log_backend.h"
#include "core/log/rocksdb_backend.h"
#include "gateway/server.h"
#include "gtest/gtest.h"
#include "pimgate/v1/event.pb.h"
#include "tests/testing/power_cut_file_system.h"
#include "tests/testing/test_env.h"
#include "tests/testing/typed_values.h"

namespace pimgate {
namespace {

using ::pimgate::testing::HttpClient;
using ::pimgate::testing::HttpResponse;
using ::pimgate::testing::LegacyBatch;
using ::pimgate::testing::LegacyHeaders;
using ::pimgate::testing::LegacyProductEvent;
using ::pimgate::testing::NewUuid;
using ::pimgate::testing::PowerCutFileSystem;
using ::pimgate::testing::PowerCutReport;
using ::pimgate::testing::TempDir;
using ::pimgate::testing::UnsyncedTail;

constexpr char kSource[] = "legacy";
constexpr char kPath[] = "/hooks/legacy";
constexpr char kSecret[] = "legacy-secret-0123456789";
constexpr int kRequestsBeforeTheCut = 30;  // each answered before the next is sent
constexpr int kEventsPerRequest = 2;

struct Webhook {
  std::vector<std::string> event_ids;
  std::vector<std::string> product_uuids;
  int status = 0;  // the gateway's answer
  std::string answer;
};

struct Outcome {
  std::vector<Webhook> webhooks;
  PowerCutReport report;
  std::unique_ptr<EventLog> reopened;  // on the OS file system, from what survived
};

Webhook Send(HttpClient& client) {
  Webhook webhook;
  std::vector<std::string> events;
  for (int i = 0; i < kEventsPerRequest; ++i) {
    webhook.event_ids.push_back(NewUuid());
    webhook.product_uuids.push_back(NewUuid());
    events.push_back(LegacyProductEvent("product.updated", webhook.event_ids.back(),
                                        webhook.product_uuids.back(), "2026-11-20T10:00:00+00:00"));
  }
  const std::string body = LegacyBatch(events);
  HttpResponse response = client.Send("POST", kPath, body, LegacyHeaders(kSecret, body));
  webhook.status = response.status;
  webhook.answer = response.body;
  return webhook;
}

// Serves webhooks with `sync` on a PowerCutFileSystem in `dir`: kRequestsBeforeTheCut requests,
// then one whose commit fsync cuts the power (with sync; without, nothing is fsynced and the
// power goes once it is answered) and one sent after the cut. Then reopens the store from what
// survived.
Outcome RunGatewayUntilPowerCut(const TempDir& dir, bool sync) {
  Outcome outcome;
  const testing::CertFiles cert = testing::MakeSelfSignedCert(dir.path());
  Config config;
  config.gateway.listen = testing::ListenAt("127.0.0.1:0");
  config.gateway.threads = 2;
  config.gateway.tls = TlsConfig{cert.cert_file, cert.key_file, TlsVersion::kTls1_2};
  config.store.path = dir.File("store");
  config.store.sync = sync;
  SourceConfig legacy;
  legacy.name = kSource;
  legacy.kind = SourceKind::kEventsApi;
  legacy.path = kPath;
  legacy.secret = Secret{kSecret, "inline"};
  config.sources = {legacy};

  auto fs = std::make_shared<PowerCutFileSystem>(config.store.path);
  {
    RocksDbBackendOptions backend_options;
    backend_options.file_system = fs;
    absl::StatusOr<std::unique_ptr<LogBackend>> backend =
        OpenRocksDbBackend(config.store.path, backend_options);
    EXPECT_TRUE(backend.ok()) << backend.status();
    if (!backend.ok()) return outcome;
    absl::StatusOr<std::unique_ptr<EventLog>> log =
        EventLog::Open(std::move(*backend), EventLogOptionsFrom(config.store));
    EXPECT_TRUE(log.ok()) << log.status();
    if (!log.ok()) return outcome;
    absl::StatusOr<std::unique_ptr<Gateway>> gateway = Gateway::Create(config, log->get());
    EXPECT_TRUE(gateway.ok()) << gateway.status();
    if (!gateway.ok()) return outcome;
    absl::Status started = (*gateway)->Start();
    EXPECT_TRUE(started.ok()) << started;
    if (!started.ok()) return outcome;

    HttpClient client((*gateway)->port(), /*tls=*/true);
    for (int i = 0; i < kRequestsBeforeTheCut; ++i) {
      outcome.webhooks.push_back(Send(client));
      EXPECT_EQ(outcome.webhooks.back().status, 200) << outcome.webhooks.back().answer;
    }
    PowerCutFileSystem* raw = fs.get();  // the hook must not own the file system it is in
    fs->HoldSyncs(".log", [raw] { raw->CutPower(); });
    outcome.webhooks.push_back(Send(client));  // with sync, its fsync cuts the power
    fs->CutPower();                            // without, the power goes now
    outcome.webhooks.push_back(Send(client));  // the machine is off: never a 200
    (*gateway)->Stop();
    gateway->reset();
    // The log and the store close on a machine without power: their writes fail, harmlessly.
  }
  absl::StatusOr<PowerCutReport> report = fs->LeaveOnlyWhatSurvives(UnsyncedTail::kLost);
  EXPECT_TRUE(report.ok()) << report.status();
  if (report.ok()) outcome.report = *report;
  std::cout << "power cut (sync " << (sync ? "on" : "off") << "): " << outcome.report.ToString()
            << "\n";

  absl::StatusOr<std::unique_ptr<LogBackend>> backend = OpenRocksDbBackend(config.store.path);
  EXPECT_TRUE(backend.ok()) << "the store does not open after the power cut: " << backend.status();
  if (!backend.ok()) return outcome;
  absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open(std::move(*backend), {});
  EXPECT_TRUE(log.ok()) << "the log does not open after the power cut: " << log.status();
  if (log.ok()) outcome.reopened = std::move(*log);
  return outcome;
}

// The events answered 200 that the reopened log lacks ("event id: why"). A webhook is stored
// whole or not at all, and every stored event is the product its webhook named (checked here
// as failures).
std::vector<std::string> LostAfterTheCut(const Outcome& outcome) {
  std::vector<std::string> lost;
  EventLog& log = *outcome.reopened;
  for (std::size_t w = 0; w < outcome.webhooks.size(); ++w) {
    const Webhook& webhook = outcome.webhooks[w];
    std::size_t present = 0;
    for (std::size_t i = 0; i < webhook.event_ids.size(); ++i) {
      const std::string& id = webhook.event_ids[i];
      absl::StatusOr<std::optional<uint64_t>> sequence = log.FindEventId(kSource, id);
      EXPECT_TRUE(sequence.ok()) << sequence.status();
      if (!sequence.ok()) continue;
      if (!sequence->has_value()) {
        if (webhook.status == 200) {
          lost.push_back(absl::StrCat("webhook ", w, " event ", id, ": unknown by id"));
        }
        continue;
      }
      ++present;
      absl::StatusOr<std::optional<v1::Event>> event = log.GetEvent(**sequence);
      EXPECT_TRUE(event.ok()) << event.status();
      if (!event.ok()) continue;
      if (!event->has_value()) {
        if (webhook.status == 200) {
          lost.push_back(
              absl::StrCat("webhook ", w, " event ", id, ": absent by sequence ", **sequence));
        }
        continue;
      }
      EXPECT_EQ((*event)->id(), id);
      EXPECT_EQ((*event)->resource_id(), webhook.product_uuids[i]);
      EXPECT_EQ((*event)->type(), "product.updated");
    }
    EXPECT_TRUE(present == 0 || present == webhook.event_ids.size())
        << "webhook " << w << " (answered " << webhook.status << ") is half stored";
  }
  return lost;
}

TEST(GatewayPowerLossTest, WithSyncEvery200Survives) {
  TempDir dir;
  Outcome outcome = RunGatewayUntilPowerCut(dir, /*sync=*/true);
  ASSERT_NE(outcome.reopened, nullptr);
  ASSERT_EQ(outcome.webhooks.size(), kRequestsBeforeTheCut + 2u);
  SCOPED_TRACE(outcome.report.ToString());
  // The webhook being fsynced at the cut was not answered 200, nor the one after; its bytes
  // were written and dropped (the check is not vacuous).
  EXPECT_NE(outcome.webhooks[kRequestsBeforeTheCut].status, 200)
      << outcome.webhooks[kRequestsBeforeTheCut].answer;
  EXPECT_NE(outcome.webhooks[kRequestsBeforeTheCut + 1].status, 200)
      << outcome.webhooks[kRequestsBeforeTheCut + 1].answer;
  EXPECT_GT(outcome.report.unsynced_bytes, 0u);
  const std::vector<std::string> lost = LostAfterTheCut(outcome);
  EXPECT_TRUE(lost.empty()) << lost.size() << " events answered 200 lost in the power cut, e.g. "
                            << lost.front();
  EXPECT_EQ(outcome.reopened->head(), kRequestsBeforeTheCut * kEventsPerRequest);
}

// The control: without sync the gateway answers 200 before anything reaches the disk, and the
// cut takes those events with it.
TEST(GatewayPowerLossTest, WithoutSyncEventsAnswered200AreLost) {
  TempDir dir;
  Outcome outcome = RunGatewayUntilPowerCut(dir, /*sync=*/false);
  ASSERT_NE(outcome.reopened, nullptr);
  ASSERT_EQ(outcome.webhooks.size(), kRequestsBeforeTheCut + 2u);
  SCOPED_TRACE(outcome.report.ToString());
  EXPECT_EQ(outcome.webhooks[kRequestsBeforeTheCut].status, 200)
      << outcome.webhooks[kRequestsBeforeTheCut].answer;
  EXPECT_NE(outcome.webhooks[kRequestsBeforeTheCut + 1].status, 200);
  const std::vector<std::string> lost = LostAfterTheCut(outcome);
  EXPECT_GT(lost.size(), 0u) << "nothing answered 200 was lost without sync: the harness cannot "
                                "see loss";
}

}  // namespace
}  // namespace pimgate
