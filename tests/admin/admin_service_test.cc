// The Admin service through a real gRPC client over real sockets (TCP on port 0, unix sockets,
// TLS with a certificate made here), over a real RocksDB log and a real Dispatcher delivering to
// an in-process plugin that records what it receives.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "admin/admin_server.h"
#include "core/dispatch/plugin_supervisor.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/unknown_field_set.h"
#include "google/protobuf/util/time_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "pimgate/v1/admin.grpc.pb.h"
#include "pimgate/v1/plugin.grpc.pb.h"
#include "tests/testing/recording_plugin.h"
#include "tests/testing/test_env.h"
#include "tests/testing/typed_values.h"

namespace pimgate {
namespace {

using google::protobuf::util::TimeUtil;
using testing::TempDir;

constexpr char kToken[] = "admin-token-0123456789";
// Events appended by these tests were received from this time on, one minute apart.
constexpr int64_t kT0 = 1'800'000'000;

// A call's status as a gtest assertion: on failure it names the code and the message.
::testing::AssertionResult Ok(const grpc::Status& status) {
  if (status.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "gRPC status " << status.error_code() << ": " << status.error_message();
}

// Waits until `done` holds, up to 60 s: a hang guard, generous for a slow, busy machine (an
// ASan build under load); a wait ends as soon as its condition holds.
bool WaitFor(const std::function<bool()>& done) {
  for (int i = 0; i < 6000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

using testing::RecordingPlugin;

class AdminServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto log = EventLog::Open(testing::StoreAt(dir_.File("store")));
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = std::move(*log);
    plugin_ = std::make_unique<RecordingPlugin>(dir_.File("p1.sock"));
    // p1 is the recording plugin; p2 points at a socket nobody serves.
    std::vector<PluginConfig> plugins = {Plugin("p1", dir_.File("p1.sock")),
                                         Plugin("p2", dir_.File("nobody.sock"))};
    DispatcherOptions options;
    options.reconnect_max = absl::Milliseconds(200);
    options.progress_interval = absl::Milliseconds(10);
    options.connect_timeout = absl::Milliseconds(200);  // p2 never connects
    auto dispatcher = Dispatcher::Create(
        plugins, log_.get(),
        [plugins](const std::string& name) {
          for (const PluginConfig& p : plugins) {
            if (p.name == name) return p.address;
          }
          return std::string();
        },
        options);
    ASSERT_TRUE(dispatcher.ok());
    dispatcher_ = std::move(*dispatcher);
    ASSERT_TRUE(dispatcher_->Start().ok());
    StartAdmin();
  }

  void TearDown() override {
    admin_.reset();
    dispatcher_.reset();
  }

  static PluginConfig Plugin(const std::string& name, const std::string& socket) {
    PluginConfig plugin;
    plugin.name = name;
    plugin.address = "unix:" + socket;
    plugin.ack_timeout = std::chrono::milliseconds(2000);
    return plugin;
  }

  void StartAdmin(AdminLimits limits = {}, AdminConfig config = LocalConfig()) {
    admin_.reset();
    auto admin =
        AdminServer::Start(config, {log_.get(), dispatcher_.get(), nullptr, nullptr}, limits);
    ASSERT_TRUE(admin.ok()) << admin.status();
    admin_ = std::move(*admin);
    channel_ = grpc::CreateChannel(admin_->target(), grpc::InsecureChannelCredentials());
    stub_ = v1::Admin::NewStub(channel_);
  }

  static AdminConfig LocalConfig() {
    AdminConfig config;
    config.listen = testing::ListenAt("127.0.0.1:0");
    config.token = Secret{kToken, "inline"};
    return config;
  }

  // A context carrying `authorization` (none when empty), with a 30 s deadline (a hang guard).
  static std::unique_ptr<grpc::ClientContext> Ctx(
      const std::string& authorization = absl::StrCat("Bearer ", kToken)) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    // These tests are about the service, not connection set-up: a call made while the channel's
    // first connection is still being made (or retried) waits for it instead of failing fast.
    ctx->set_wait_for_ready(true);
    if (!authorization.empty()) ctx->AddMetadata("authorization", authorization);
    return ctx;
  }

  static v1::Event Event(const std::string& source, const std::string& type,
                         const std::string& resource, int64_t received_s) {
    v1::Event event;
    event.set_id(testing::NewUuid());
    event.set_source(source);
    event.set_type(type);
    event.set_original_type(type);
    event.set_kind(type.substr(0, type.find('.')));
    event.set_resource_id(resource);
    event.set_author("julia");
    *event.mutable_received_at() = TimeUtil::SecondsToTimestamp(received_s);
    *event.mutable_version_at() = event.received_at();
    *event.mutable_occurred_at() = event.received_at();
    (*event.mutable_data()->mutable_fields())["family"].set_string_value("shoes");
    return event;
  }

  // Appends `n` product.updated events of distinct resources, received a minute apart from
  // kT0 + 60 * (first sequence - 1). Returns their ids.
  std::vector<std::string> AppendEvents(int n) {
    std::vector<std::string> ids;
    AppendRequest request;
    const uint64_t first = log_->head() + 1;
    for (int i = 0; i < n; ++i) {
      const uint64_t sequence = first + i;
      request.events.push_back(Event("legacy", "product.updated", absl::StrCat("r", sequence),
                                     kT0 + 60 * static_cast<int64_t>(sequence - 1)));
      ids.push_back(request.events.back().id());
    }
    EXPECT_TRUE(log_->AppendSync(std::move(request)).ok());
    return ids;
  }

  PluginDispatchStats StatsOf(const std::string& name) {
    for (const PluginDispatchStats& stats : dispatcher_->Stats()) {
      if (stats.name == name) return stats;
    }
    return {};
  }

  // Stores dead letters of `plugin` for these sequences, as the dispatcher would; `edit` changes
  // each one (reason, kind) before it is stored.
  void WriteDeadLetters(const std::string& plugin, const std::vector<uint64_t>& sequences,
                        const std::function<void(v1::DeadLetter&)>& edit = nullptr) {
    PluginProgress progress;
    for (uint64_t sequence : sequences) {
      auto event = log_->GetEvent(sequence);
      ASSERT_TRUE(event.ok() && event->has_value());
      v1::DeadLetter letter;
      letter.set_plugin(plugin);
      *letter.mutable_event() = **event;
      letter.set_attempts(3);
      letter.set_reason("asked to reject");
      letter.set_rejected(true);
      *letter.mutable_dead_at() = TimeUtil::GetCurrentTime();
      if (edit) edit(letter);
      progress.dead_letters.push_back(letter);
    }
    ASSERT_TRUE(log_->WriteProgress(plugin, progress).ok());
  }

  std::vector<uint64_t> DeadLetterSequences(const std::string& plugin) {
    v1::ListDeadLettersRequest request;
    request.set_plugin(plugin);
    v1::ListDeadLettersResponse response;
    grpc::Status status = stub_->ListDeadLetters(Ctx().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::vector<uint64_t> sequences;
    for (const v1::DeadLetter& letter : response.dead_letters()) {
      sequences.push_back(letter.event().sequence());
    }
    return sequences;
  }

  // Every page of ListDeadLetters for `request` (page_size kept), concatenated; `calls` counts
  // the calls, `max_scanned` is the most letters one call examined.
  std::vector<uint64_t> AllDeadLetterPages(v1::ListDeadLettersRequest request, int* calls = nullptr,
                                           uint64_t* max_scanned = nullptr) {
    std::vector<uint64_t> all;
    for (int i = 0; i < 1000; ++i) {
      v1::ListDeadLettersResponse response;
      grpc::Status status = stub_->ListDeadLetters(Ctx().get(), request, &response);
      EXPECT_TRUE(status.ok()) << status.error_message();
      if (!status.ok()) break;
      if (calls != nullptr) ++*calls;
      if (max_scanned != nullptr) *max_scanned = std::max(*max_scanned, response.scanned());
      for (const v1::DeadLetter& letter : response.dead_letters()) {
        all.push_back(letter.event().sequence());
      }
      if (response.next_page_token().empty()) break;
      request.set_page_token(response.next_page_token());
    }
    return all;
  }

  std::vector<uint64_t> Sequences(const v1::ListEventsResponse& response) {
    std::vector<uint64_t> sequences;
    for (const v1::Event& event : response.events()) sequences.push_back(event.sequence());
    return sequences;
  }

  // Every page of ListEvents for `request` (page_size kept), concatenated.
  std::vector<uint64_t> AllPages(v1::ListEventsRequest request, int* calls = nullptr) {
    std::vector<uint64_t> all;
    for (int i = 0; i < 1000; ++i) {
      v1::ListEventsResponse response;
      grpc::Status status = stub_->ListEvents(Ctx().get(), request, &response);
      EXPECT_TRUE(status.ok()) << status.error_message();
      if (calls != nullptr) ++*calls;
      for (uint64_t s : Sequences(response)) all.push_back(s);
      if (response.next_page_token().empty()) break;
      request.set_page_token(response.next_page_token());
    }
    return all;
  }

  TempDir dir_;
  std::unique_ptr<EventLog> log_;
  std::unique_ptr<RecordingPlugin> plugin_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<AdminServer> admin_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Admin::Stub> stub_;
};

// ---- Access -----------------------------------------------------------------------------------

TEST_F(AdminServiceTest, TokenIsRequired) {
  v1::GetStatsResponse response;
  grpc::Status missing = stub_->GetStats(Ctx("").get(), {}, &response);
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::Status wrong = stub_->GetStats(Ctx("Bearer not-the-token").get(), {}, &response);
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(wrong.error_message(), "wrong admin token");
  grpc::Status prefix =
      stub_->GetStats(Ctx(absl::StrCat("Bearer ", kToken, "x")).get(), {}, &response);
  EXPECT_EQ(prefix.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::Status basic = stub_->GetStats(Ctx(absl::StrCat("Basic ", kToken)).get(), {}, &response);
  EXPECT_EQ(basic.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::Status bare = stub_->GetStats(Ctx(kToken).get(), {}, &response);
  EXPECT_EQ(bare.error_code(), grpc::StatusCode::UNAUTHENTICATED);

  EXPECT_TRUE(Ok(stub_->GetStats(Ctx().get(), {}, &response)));
  // The scheme is case-insensitive (RFC 7235).
  EXPECT_TRUE(Ok(stub_->GetStats(Ctx(absl::StrCat("bearer ", kToken)).get(), {}, &response)));
}

// Every method of the service, called through a generic stub with an empty request: none may
// answer anything but UNAUTHENTICATED without the token (a method that forgot the check would).
TEST_F(AdminServiceTest, EveryMethodChecksTheToken) {
  const google::protobuf::ServiceDescriptor* service =
      v1::GetStatsRequest::descriptor()->file()->FindServiceByName("Admin");
  ASSERT_NE(service, nullptr);
  ASSERT_EQ(service->method_count(), 23);
  grpc::GenericStub generic(channel_);
  for (int i = 0; i < service->method_count(); ++i) {
    const std::string method =
        absl::StrCat("/", service->full_name(), "/", service->method(i)->name());
    for (const std::string& authorization : {std::string(), std::string("Bearer wrong")}) {
      auto ctx = Ctx(authorization);
      grpc::Slice empty("", 0);  // an empty message (a ByteBuffer without slices is invalid)
      grpc::ByteBuffer request(&empty, 1), response;
      std::promise<grpc::Status> done;
      generic.UnaryCall(ctx.get(), method, grpc::StubOptions(), &request, &response,
                        [&done](grpc::Status status) { done.set_value(std::move(status)); });
      grpc::Status status = done.get_future().get();
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
          << method << " with \"" << authorization << "\": " << status.error_message();
    }
  }
}

TEST_F(AdminServiceTest, NoTokenConfiguredMeansNoCheck) {
  AdminConfig config = LocalConfig();
  config.token.reset();
  StartAdmin({}, config);
  v1::GetStatsResponse response;
  EXPECT_TRUE(Ok(stub_->GetStats(Ctx("").get(), {}, &response)));
}

TEST_F(AdminServiceTest, HealthIsServingWithoutToken) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  for (const std::string& service : {std::string(), std::string("pimgate.v1.Admin")}) {
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = health->Check(Ctx("").get(), request, &response);
    ASSERT_TRUE(status.ok()) << service << ": " << status.error_message();
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
}

// One round trip on grpc.reflection.v1alpha.ServerReflection through a generic stub: the request
// and response messages are built and read with protobuf's wire format, since the reflection
// .proto is not installed with gRPC.
class ReflectionClient {
 public:
  explicit ReflectionClient(std::shared_ptr<grpc::Channel> channel) : stub_(std::move(channel)) {}

  // Sends one ServerReflectionRequest whose oneof field `field` holds `value`; returns the raw
  // ServerReflectionResponse.
  std::string Ask(int field, const std::string& value) {
    google::protobuf::UnknownFieldSet request;
    request.AddLengthDelimited(field, value);
    std::string bytes;
    EXPECT_TRUE(request.SerializeToString(&bytes));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    // The channel may still be making its first connection: wait for it, do not fail fast.
    ctx.set_wait_for_ready(true);
    grpc::CompletionQueue cq;
    auto call = stub_.PrepareCall(
        &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
    const auto wait = [&cq](intptr_t expected) {
      void* tag = nullptr;
      bool ok = false;
      EXPECT_TRUE(cq.Next(&tag, &ok));
      EXPECT_EQ(reinterpret_cast<intptr_t>(tag), expected);
      return ok;
    };
    call->StartCall(reinterpret_cast<void*>(1));
    EXPECT_TRUE(wait(1));
    grpc::Slice slice(bytes);
    grpc::ByteBuffer out(&slice, 1);
    call->Write(out, reinterpret_cast<void*>(2));
    EXPECT_TRUE(wait(2));
    call->WritesDone(reinterpret_cast<void*>(3));
    EXPECT_TRUE(wait(3));
    grpc::ByteBuffer in;
    call->Read(&in, reinterpret_cast<void*>(4));
    const bool read = wait(4);
    grpc::Status status;
    if (read) {
      grpc::ByteBuffer extra;  // drain to the end of the stream
      call->Read(&extra, reinterpret_cast<void*>(5));
      wait(5);
    }
    call->Finish(&status, reinterpret_cast<void*>(6));
    EXPECT_TRUE(wait(6));
    EXPECT_TRUE(status.ok()) << status.error_message();
    cq.Shutdown();
    std::vector<grpc::Slice> slices;
    if (!read || !in.Dump(&slices).ok()) return "";
    std::string response;
    for (const grpc::Slice& s : slices) {
      response.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    return response;
  }

  // Fields `number` (length-delimited) of a message.
  static std::vector<std::string> Fields(const std::string& message, int number) {
    google::protobuf::UnknownFieldSet fields;
    EXPECT_TRUE(fields.ParseFromString(message));
    std::vector<std::string> out;
    for (int i = 0; i < fields.field_count(); ++i) {
      if (fields.field(i).number() == number &&
          fields.field(i).type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
        out.push_back(fields.field(i).length_delimited());
      }
    }
    return out;
  }

 private:
  grpc::GenericStub stub_;
};

TEST_F(AdminServiceTest, ReflectionListsServicesAndDescribesAdmin) {
  ReflectionClient reflection(channel_);
  // list_services (7) -> list_services_response (6) { repeated service (1) { name (1) } }.
  const std::string listed = reflection.Ask(7, "*");
  std::set<std::string> names;
  for (const std::string& list : ReflectionClient::Fields(listed, 6)) {
    for (const std::string& service : ReflectionClient::Fields(list, 1)) {
      for (const std::string& name : ReflectionClient::Fields(service, 1)) names.insert(name);
    }
  }
  EXPECT_TRUE(names.contains("pimgate.v1.Admin")) << listed.size();
  EXPECT_TRUE(names.contains("grpc.health.v1.Health"));
  EXPECT_TRUE(names.contains("grpc.reflection.v1alpha.ServerReflection"));

  // file_containing_symbol (4) -> file_descriptor_response (4) { file_descriptor_proto (1) }.
  const std::string described = reflection.Ask(4, "pimgate.v1.Admin");
  bool found = false;
  for (const std::string& files : ReflectionClient::Fields(described, 4)) {
    for (const std::string& file : ReflectionClient::Fields(files, 1)) {
      google::protobuf::FileDescriptorProto proto;
      ASSERT_TRUE(proto.ParseFromString(file));
      for (const auto& service : proto.service()) {
        if (service.name() != "Admin") continue;
        found = true;
        std::set<std::string> methods;
        for (const auto& method : service.method()) methods.insert(method.name());
        EXPECT_EQ(methods, (std::set<std::string>{"GetStats",
                                                  "ListPlugins",
                                                  "ListOwners",
                                                  "PausePlugin",
                                                  "ResumePlugin",
                                                  "RestartPlugin",
                                                  "SeekPlugin",
                                                  "ListDeadLetters",
                                                  "RetryDeadLetters",
                                                  "PurgeDeadLetters",
                                                  "GetEvent",
                                                  "ListEvents",
                                                  "ListQuarantine",
                                                  "Reconcile",
                                                  "ListPlatformSubscribers",
                                                  "ListPlatformSubscriptions",
                                                  "PlatformSubscribe",
                                                  "SuspendPlatformSubscription",
                                                  "ResumePlatformSubscription",
                                                  "DeletePlatformSubscription",
                                                  "ReplayPlatformSubscription",
                                                  "PlatformLogs",
                                                  "CheckPlatformSubscription"}));
      }
    }
  }
  EXPECT_TRUE(found);
}

TEST_F(AdminServiceTest, UnixSocketListenerIsOwnerOnly) {
  AdminConfig config = LocalConfig();
  config.listen = testing::ListenAt("unix:" + dir_.File("admin.sock"));
  StartAdmin({}, config);
  EXPECT_EQ(admin_->port(), 0);
  EXPECT_EQ(admin_->target(), "unix:" + dir_.File("admin.sock"));
  struct stat info;
  ASSERT_EQ(::stat(dir_.File("admin.sock").c_str(), &info), 0);
  EXPECT_TRUE(S_ISSOCK(info.st_mode));
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  v1::GetStatsResponse response;
  grpc::Status status = stub_->GetStats(Ctx().get(), {}, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(AdminServiceTest, TlsListener) {
  testing::CertFiles cert = testing::MakeSelfSignedCert(dir_.path());
  AdminConfig config = LocalConfig();
  config.tls = AdminTlsConfig{cert.cert_file, cert.key_file};
  StartAdmin({}, config);
  EXPECT_TRUE(admin_->tls());

  std::ifstream in(cert.cert_file);
  std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = pem;
  auto secure =
      v1::Admin::NewStub(grpc::CreateChannel(admin_->target(), grpc::SslCredentials(options)));
  v1::GetStatsResponse response;
  grpc::Status status = secure->GetStats(Ctx().get(), {}, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  // The token is still required over TLS.
  EXPECT_EQ(secure->GetStats(Ctx("").get(), {}, &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // A plaintext client cannot talk to it.
  auto ctx = Ctx();
  ctx->set_wait_for_ready(false);  // fails at the handshake, as pimgatectl's calls would
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  EXPECT_FALSE(stub_->GetStats(ctx.get(), {}, &response).ok());
}

TEST_F(AdminServiceTest, PortHeldByAnotherServerIsRefused) {
  AdminConfig config = LocalConfig();
  config.listen = testing::ListenAt(absl::StrCat("127.0.0.1:", admin_->port()));
  auto second = AdminServer::Start(config, {log_.get(), nullptr, nullptr, nullptr});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
}

// ---- Stats and plugins ------------------------------------------------------------------------

TEST_F(AdminServiceTest, GetStatsReportsLogAndPlugins) {
  AppendEvents(5);
  ASSERT_TRUE(WaitFor([&] { return StatsOf("p1").cursor == 5; }));
  v1::GetStatsResponse response;
  ASSERT_TRUE(Ok(stub_->GetStats(Ctx().get(), {}, &response)));
  EXPECT_EQ(response.log().head_sequence(), 5u);
  EXPECT_EQ(response.log().first_sequence(), 1u);
  EXPECT_EQ(response.log().event_count(), 5u);
  EXPECT_GT(response.taken_at().seconds(), 0);
  ASSERT_EQ(response.plugins_size(), 2);
  EXPECT_EQ(response.plugins(0).name(), "p1");
  EXPECT_EQ(response.plugins(0).cursor(), 5u);
  EXPECT_EQ(response.plugins(0).lag(), 0u);
  EXPECT_EQ(response.plugins(0).delivered(), 5u);
  EXPECT_EQ(response.plugins(1).name(), "p2");
  EXPECT_EQ(response.plugins(1).lag(), 5u);
  EXPECT_TRUE(response.sources().empty());  // no gateway in this test
}

TEST_F(AdminServiceTest, GetStatsCountsDeadLettersStoredNow) {
  AppendEvents(3);
  ASSERT_TRUE(WaitFor([&] { return StatsOf("p1").cursor == 3; }));
  WriteDeadLetters("p1", {1, 3});
  WriteDeadLetters("p2", {2});
  v1::GetStatsResponse response;
  ASSERT_TRUE(Ok(stub_->GetStats(Ctx().get(), {}, &response)));
  EXPECT_EQ(response.plugins(0).dead_letters_stored(), 2u);
  EXPECT_EQ(response.plugins(1).dead_letters_stored(), 1u);
  // dead_lettered counts what this dispatcher dead-lettered since it started: none here.
  EXPECT_EQ(response.plugins(0).dead_lettered(), 0u);

  v1::PurgeDeadLettersRequest purge;
  purge.set_plugin("p1");
  purge.set_all(true);
  v1::PurgeDeadLettersResponse purged;
  ASSERT_TRUE(Ok(stub_->PurgeDeadLetters(Ctx().get(), purge, &purged)));
  ASSERT_TRUE(Ok(stub_->GetStats(Ctx().get(), {}, &response)));
  EXPECT_EQ(response.plugins(0).dead_letters_stored(), 0u);
  EXPECT_EQ(response.plugins(1).dead_letters_stored(), 1u);
}

TEST(AdminGatewayStatsTest, SourcesCountAnswersAndEvents) {
  testing::GatewayHarness::Options options;
  options.tls = false;
  testing::GatewayHarness harness(options);
  AdminConfig config;
  config.listen = testing::ListenAt("127.0.0.1:0");
  auto admin = AdminServer::Start(config, {&harness.log(), nullptr, nullptr, &harness.gateway()});
  ASSERT_TRUE(admin.ok()) << admin.status();
  testing::HttpClient client = harness.Client();
  const std::string body = testing::LegacyBatch(
      {testing::LegacyProductEvent("product.updated", testing::NewUuid(), testing::NewUuid())});
  EXPECT_EQ(client
                .Send("POST", "/hooks/legacy", body,
                      testing::LegacyHeaders(testing::GatewayHarness::kLegacySecret, body))
                .status,
            200);
  EXPECT_EQ(
      client.Send("POST", "/hooks/legacy", body, testing::LegacyHeaders("wrong", body)).status,
      401);
  EXPECT_EQ(client.Send("POST", "/nowhere", "{}").status, 404);

  auto stub = v1::Admin::NewStub(
      grpc::CreateChannel((*admin)->target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  // A fresh channel: the call waits for its first connection instead of failing fast.
  ctx.set_wait_for_ready(true);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::GetStatsResponse response;
  ASSERT_TRUE(Ok(stub->GetStats(&ctx, {}, &response)));
  const v1::SourceStats* legacy = nullptr;
  for (const v1::SourceStats& source : response.sources()) {
    if (source.name() == "legacy") legacy = &source;
  }
  ASSERT_NE(legacy, nullptr);
  EXPECT_EQ(legacy->requests_by_code().at(200), 1u);
  EXPECT_EQ(legacy->requests_by_code().at(401), 1u);
  EXPECT_EQ(legacy->events_accepted(), 1u);
  EXPECT_EQ(response.gateway().unrouted_by_code().at(404), 1u);
  EXPECT_EQ(response.log().head_sequence(), 1u);
  EXPECT_TRUE(response.plugins().empty());  // no dispatcher in this test
}

TEST_F(AdminServiceTest, ListPluginsJoinsProcessAndDelivery) {
  auto supervisor = PluginSupervisor::Create(
      {Plugin("p1", dir_.File("p1.sock")), Plugin("p2", dir_.File("nobody.sock"))},
      dir_.File("run"));
  ASSERT_TRUE(supervisor.ok()) << supervisor.status();
  ASSERT_TRUE((*supervisor)->Start().ok());
  admin_.reset();
  auto admin = AdminServer::Start(LocalConfig(),
                                  {log_.get(), dispatcher_.get(), supervisor->get(), nullptr});
  ASSERT_TRUE(admin.ok());
  admin_ = std::move(*admin);
  stub_ =
      v1::Admin::NewStub(grpc::CreateChannel(admin_->target(), grpc::InsecureChannelCredentials()));

  AppendEvents(3);
  ASSERT_TRUE(WaitFor([&] { return StatsOf("p1").cursor == 3; }));
  v1::ListPluginsResponse response;
  ASSERT_TRUE(Ok(stub_->ListPlugins(Ctx().get(), {}, &response)));
  ASSERT_EQ(response.plugins_size(), 2);
  const v1::PluginInfo& p1 = response.plugins(0);
  EXPECT_EQ(p1.name(), "p1");
  EXPECT_EQ(p1.process_state(), "external");
  EXPECT_EQ(p1.address(), "unix:" + dir_.File("p1.sock"));
  EXPECT_EQ(p1.pid(), 0u);
  EXPECT_EQ(p1.cursor(), 3u);
  EXPECT_EQ(p1.lag(), 0u);
  EXPECT_FALSE(p1.delivery_state().empty());
  const v1::PluginInfo& p2 = response.plugins(1);
  EXPECT_EQ(p2.name(), "p2");
  EXPECT_EQ(p2.lag(), 3u);
  admin_.reset();
  (*supervisor)->Stop();
}

// ---- Pause, resume, seek ----------------------------------------------------------------------

TEST_F(AdminServiceTest, PauseHoldsEventsAndResumeDeliversThem) {
  v1::PausePluginRequest pause;
  pause.set_plugin("p1");
  v1::PausePluginResponse paused;
  ASSERT_TRUE(Ok(stub_->PausePlugin(Ctx().get(), pause, &paused)));
  ASSERT_TRUE(WaitFor([&] { return StatsOf("p1").state == "paused"; }));
  AppendEvents(3);
  // Then a stale marker (an older r1): p1's dispatcher counts it only once it has read the three
  // events before it and decided on them, so the checks below hold over a window that
  // demonstrably passed in the dispatcher, not over a sleep.
  AppendRequest marker;
  marker.events.push_back(Event("legacy", "product.updated", "r1", kT0 - 60));
  ASSERT_TRUE(log_->AppendSync(std::move(marker)).ok());
  ASSERT_TRUE(WaitFor([&] { return StatsOf("p1").skipped_stale == 1; }));
  EXPECT_EQ(StatsOf("p1").in_flight, 0u);
  EXPECT_EQ(StatsOf("p1").delivered, 0u);
  EXPECT_TRUE(plugin_->attempts().empty());
  EXPECT_EQ(StatsOf("p1").cursor, 0u);  // held, not skipped

  v1::ResumePluginRequest resume;
  resume.set_plugin("p1");
  v1::ResumePluginResponse resumed;
  ASSERT_TRUE(Ok(stub_->ResumePlugin(Ctx().get(), resume, &resumed)));
  ASSERT_TRUE(WaitFor([&] { return plugin_->attempts().size() == 3; }));
  ASSERT_TRUE(WaitFor([&] { return StatsOf("p1").cursor == 4; }));
}

TEST_F(AdminServiceTest, RestartNeedsALaunchedPlugin) {
  v1::RestartPluginRequest request;
  request.set_plugin("p1");
  v1::RestartPluginResponse response;
  // No supervisor in this pimgate.
  grpc::Status status = stub_->RestartPlugin(Ctx().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(status.error_message(), "the plugin supervisor is not running in this pimgate");

  auto supervisor = PluginSupervisor::Create(
      {Plugin("p1", dir_.File("p1.sock")), Plugin("p2", dir_.File("nobody.sock"))},
      dir_.File("run"));
  ASSERT_TRUE(supervisor.ok()) << supervisor.status();
  ASSERT_TRUE((*supervisor)->Start().ok());
  admin_.reset();
  auto admin = AdminServer::Start(LocalConfig(),
                                  {log_.get(), dispatcher_.get(), supervisor->get(), nullptr});
  ASSERT_TRUE(admin.ok());
  admin_ = std::move(*admin);
  stub_ =
      v1::Admin::NewStub(grpc::CreateChannel(admin_->target(), grpc::InsecureChannelCredentials()));
  // p1 is an `address` plugin: pimgate does not run it, and does not hold its events for it.
  status = stub_->RestartPlugin(Ctx().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(status.error_message(),
            absl::StrCat("plugin p1 runs outside pimgate (address unix:", dir_.File("p1.sock"),
                         "): restart it with the process manager that runs it; pimgate "
                         "reconnects by itself"));
  AppendEvents(1);
  ASSERT_TRUE(WaitFor([&] { return StatsOf("p1").cursor == 1; }));
  request.set_plugin("erp");
  EXPECT_EQ(stub_->RestartPlugin(Ctx().get(), request, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
  request.set_plugin("p1");
  request.mutable_drain_timeout()->set_seconds(-1);
  EXPECT_EQ(stub_->RestartPlugin(Ctx().get(), request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  admin_.reset();
  (*supervisor)->Stop();
}

TEST_F(AdminServiceTest, ListEventsRefusesATypeGlobNoEventTypeCanMatch) {
  AppendEvents(3);
  v1::ListEventsRequest request;
  request.set_type("Product.*");
  v1::ListEventsResponse response;
  grpc::Status status = stub_->ListEvents(Ctx().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "type: the glob must use only a-z, 0-9, _, . and *, got \"Product.*\"");
  request.set_type("product.*");
  status = stub_->ListEvents(Ctx().get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.events_size(), 3);
}

TEST_F(AdminServiceTest, PauseOfUnknownPluginIsNotFound) {
  v1::PausePluginRequest pause;
  pause.set_plugin("erp-snyc");
  v1::PausePluginResponse response;
  grpc::Status status = stub_->PausePlugin(Ctx().get(), pause, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), "no plugin named \"erp-snyc\"; plugins: p1, p2");
  pause.set_plugin("");
  EXPECT_EQ(stub_->PausePlugin(Ctx().get(), pause, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(AdminServiceTest, SeekToSequenceReplaysInOrder) {
  AppendEvents(10);
  ASSERT_TRUE(WaitFor([&] { return StatsOf("p1").cursor == 10; }));
  ASSERT_EQ(plugin_->attempts().size(), 10u);

  v1::SeekPluginRequest request;
  request.set_plugin("p1");
  request.set_sequence(4);
  v1::SeekPluginResponse response;
  ASSERT_TRUE(Ok(stub_->SeekPlugin(Ctx().get(), request, &response)));
  EXPECT_EQ(response.sequence(), 4u);
  EXPECT_EQ(response.head_sequence(), 10u);
  EXPECT_EQ(response.events_to_replay(), 7u);
  ASSERT_TRUE(WaitFor([&] { return plugin_->attempts().size() == 17; }));
  auto received = plugin_->attempts();
  std::vector<uint64_t> replayed;
  for (std::size_t i = 10; i < received.size(); ++i) replayed.push_back(received[i].first);
  std::sort(replayed.begin(), replayed.end());  // distinct resources: any order across them
  EXPECT_EQ(replayed, (std::vector<uint64_t>{4, 5, 6, 7, 8, 9, 10}));
  ASSERT_TRUE(WaitFor([&] { return StatsOf("p1").cursor == 10; }));
}

// The replay of the acceptance: 100 events acknowledged, a seek back to the start by
// time, and the same 100 again, in order (one resource: delivered one at a time, in order).
TEST_F(AdminServiceTest, SeekBackToTheStartReplaysHundredEventsInOrder) {
  AppendRequest request;
  for (int i = 0; i < 100; ++i) {
    request.events.push_back(Event("legacy", "product.updated", "one-product", kT0 + i));
  }
  ASSERT_TRUE(log_->AppendSync(std::move(request)).ok());
  ASSERT_TRUE(WaitFor([&] { return StatsOf("p1").cursor == 100; }));
  ASSERT_EQ(plugin_->attempts().size(), 100u);

  v1::SeekPluginRequest seek;
  seek.set_plugin("p1");
  *seek.mutable_time() = TimeUtil::SecondsToTimestamp(kT0 - 1);
  v1::SeekPluginResponse response;
  ASSERT_TRUE(Ok(stub_->SeekPlugin(Ctx().get(), seek, &response)));
  EXPECT_EQ(response.sequence(), 1u);
  EXPECT_EQ(response.events_to_replay(), 100u);
  ASSERT_TRUE(WaitFor([&] { return plugin_->attempts().size() == 200; }));
  const auto received = plugin_->attempts();
  for (uint64_t i = 0; i < 100; ++i) {
    EXPECT_EQ(received[i].first, i + 1);
    EXPECT_EQ(received[100 + i].first, i + 1) << "replayed out of order";
    EXPECT_EQ(received[100 + i].second, 1u);  // a replay starts at attempt 1
  }
  ASSERT_TRUE(WaitFor([&] { return StatsOf("p1").cursor == 100; }));
}

TEST_F(AdminServiceTest, SeekOutsideTheLogIsOutOfRange) {
  AppendEvents(3);
  v1::SeekPluginRequest request;
  request.set_plugin("p2");
  v1::SeekPluginResponse response;
  for (uint64_t sequence : {uint64_t{0}, uint64_t{5}}) {
    request.set_sequence(sequence);
    grpc::Status status = stub_->SeekPlugin(Ctx().get(), request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << sequence;
  }
  // head + 1: skip everything stored so far.
  request.set_sequence(4);
  ASSERT_TRUE(Ok(stub_->SeekPlugin(Ctx().get(), request, &response)));
  EXPECT_EQ(response.events_to_replay(), 0u);
  ASSERT_TRUE(WaitFor([&] { return StatsOf("p2").cursor == 3; }));
  // Neither a sequence nor a time.
  request.clear_target();
  EXPECT_EQ(stub_->SeekPlugin(Ctx().get(), request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  request.set_plugin("nope");
  request.set_sequence(1);
  EXPECT_EQ(stub_->SeekPlugin(Ctx().get(), request, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(AdminServiceTest, SeekToTimeFindsFirstEventReceivedAtOrAfter) {
  AppendEvents(10);  // sequence s received at kT0 + 60 * (s - 1)
  v1::SeekPluginRequest request;
  request.set_plugin("p2");
  v1::SeekPluginResponse response;
  const std::vector<std::pair<int64_t, uint64_t>> cases = {
      {kT0 - 3600, 1},   {kT0, 1},           {kT0 + 1, 2},          {kT0 + 4 * 60 + 30, 6},
      {kT0 + 5 * 60, 6}, {kT0 + 9 * 60, 10}, {kT0 + 9 * 60 + 1, 11}};
  for (const auto& [time, expected] : cases) {
    *request.mutable_time() = TimeUtil::SecondsToTimestamp(time);
    ASSERT_TRUE(Ok(stub_->SeekPlugin(Ctx().get(), request, &response)));
    EXPECT_EQ(response.sequence(), expected) << "time kT0 + " << time - kT0;
    EXPECT_EQ(response.events_to_replay(), 11 - expected);
  }
  ASSERT_TRUE(WaitFor([&] { return StatsOf("p2").cursor == 10; }));
}

// ---- Dead letters -----------------------------------------------------------------------------

TEST_F(AdminServiceTest, DeadLettersListRetryAndPurge) {
  AppendEvents(6);
  ASSERT_TRUE(WaitFor([&] { return StatsOf("p1").cursor == 6; }));
  WriteDeadLetters("p1", {2, 3, 5});

  // Listed in pages.
  v1::ListDeadLettersRequest list;
  list.set_plugin("p1");
  list.set_page_size(2);
  v1::ListDeadLettersResponse page;
  ASSERT_TRUE(Ok(stub_->ListDeadLetters(Ctx().get(), list, &page)));
  ASSERT_EQ(page.dead_letters_size(), 2);
  EXPECT_EQ(page.dead_letters(0).event().sequence(), 2u);
  EXPECT_EQ(page.dead_letters(0).reason(), "asked to reject");
  EXPECT_EQ(page.dead_letters(1).event().sequence(), 3u);
  ASSERT_FALSE(page.next_page_token().empty());
  list.set_page_token(page.next_page_token());
  ASSERT_TRUE(Ok(stub_->ListDeadLetters(Ctx().get(), list, &page)));
  ASSERT_EQ(page.dead_letters_size(), 1);
  EXPECT_EQ(page.dead_letters(0).event().sequence(), 5u);
  EXPECT_TRUE(page.next_page_token().empty());

  // A list with one unknown sequence changes nothing.
  v1::RetryDeadLettersRequest retry;
  retry.set_plugin("p1");
  retry.add_sequences(3);
  retry.add_sequences(4);
  v1::RetryDeadLettersResponse retried;
  grpc::Status status = stub_->RetryDeadLetters(Ctx().get(), retry, &retried);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(),
            "plugin p1 has no dead letter for sequence 4; nothing was changed");
  EXPECT_EQ(DeadLetterSequences("p1"), (std::vector<uint64_t>{2, 3, 5}));

  // Retrying one hands it to the plugin again, from attempt 1; the letter goes once the plugin
  // has acknowledged it.
  retry.clear_sequences();
  retry.add_sequences(3);
  ASSERT_TRUE(Ok(stub_->RetryDeadLetters(Ctx().get(), retry, &retried)));
  EXPECT_EQ(std::vector<uint64_t>(retried.sequences().begin(), retried.sequences().end()),
            (std::vector<uint64_t>{3}));
  EXPECT_FALSE(retried.more());
  ASSERT_TRUE(WaitFor([&] { return plugin_->Count(3) == 2; }));
  EXPECT_EQ(plugin_->attempts().back(), (std::pair<uint64_t, uint32_t>{3, 1}));
  ASSERT_TRUE(WaitFor([&] { return DeadLetterSequences("p1") == (std::vector<uint64_t>{2, 5}); }));

  // All.
  retry.clear_sequences();
  retry.set_all(true);
  ASSERT_TRUE(Ok(stub_->RetryDeadLetters(Ctx().get(), retry, &retried)));
  EXPECT_EQ(std::vector<uint64_t>(retried.sequences().begin(), retried.sequences().end()),
            (std::vector<uint64_t>{2, 5}));
  ASSERT_TRUE(WaitFor([&] { return plugin_->Count(2) == 2 && plugin_->Count(5) == 2; }));
  ASSERT_TRUE(WaitFor([&] { return DeadLetterSequences("p1").empty(); }));
  // Nothing left: an empty answer, not an error.
  ASSERT_TRUE(Ok(stub_->RetryDeadLetters(Ctx().get(), retry, &retried)));
  EXPECT_TRUE(retried.sequences().empty());

  // Purge one, then all.
  WriteDeadLetters("p1", {1, 4, 6});
  v1::PurgeDeadLettersRequest purge;
  purge.set_plugin("p1");
  purge.add_sequences(4);
  v1::PurgeDeadLettersResponse purged;
  ASSERT_TRUE(Ok(stub_->PurgeDeadLetters(Ctx().get(), purge, &purged)));
  EXPECT_EQ(purged.purged(), 1u);
  EXPECT_EQ(DeadLetterSequences("p1"), (std::vector<uint64_t>{1, 6}));
  purge.clear_sequences();
  purge.set_all(true);
  ASSERT_TRUE(Ok(stub_->PurgeDeadLetters(Ctx().get(), purge, &purged)));
  EXPECT_EQ(purged.purged(), 2u);
  EXPECT_TRUE(DeadLetterSequences("p1").empty());
  EXPECT_EQ(plugin_->Count(1), 1);  // purged letters are not delivered
  EXPECT_EQ(plugin_->Count(6), 1);
}

TEST_F(AdminServiceTest, DeadLetterCallsValidateTheirArguments) {
  v1::RetryDeadLettersRequest retry;
  retry.set_plugin("p1");
  v1::RetryDeadLettersResponse retried;
  // Neither all nor sequences, then both.
  EXPECT_EQ(stub_->RetryDeadLetters(Ctx().get(), retry, &retried).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  retry.set_all(true);
  retry.add_sequences(1);
  EXPECT_EQ(stub_->RetryDeadLetters(Ctx().get(), retry, &retried).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // An unknown plugin is not "no dead letters".
  v1::ListDeadLettersRequest list;
  list.set_plugin("erp");
  v1::ListDeadLettersResponse listed;
  EXPECT_EQ(stub_->ListDeadLetters(Ctx().get(), list, &listed).error_code(),
            grpc::StatusCode::NOT_FOUND);
  list.set_plugin("p1");
  list.set_page_token("not-a-token");
  EXPECT_EQ(stub_->ListDeadLetters(Ctx().get(), list, &listed).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  list.set_page_token("");
  list.set_page_size(-1);
  EXPECT_EQ(stub_->ListDeadLetters(Ctx().get(), list, &listed).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

// Letters 1-5 of plugin p1, of several types, resources, kinds and reasons (6 has none).
class DeadLetterFilterTest : public AdminServiceTest {
 protected:
  void SetUp() override {
    AdminServiceTest::SetUp();
    struct Letter {
      std::string type, resource;
      bool rejected;
      std::string reason;
    };
    const std::vector<Letter> letters = {
        {"product.updated", "shoe", true, "Rejected: Bad SKU"},
        {"product.created", "shoe", false, "ack timeout after 30s"},
        {"product_model.updated", "jacket", true, "rejected: missing family"},
        {"product.updated", "hat", false, "connection reset"},
        {"product.deleted", "shoe", true, "rejected: bad sku again"},
        {"product.updated", "hat", false, "unused"},
    };
    AppendRequest request;
    for (std::size_t i = 0; i < letters.size(); ++i) {
      request.events.push_back(Event("legacy", letters[i].type, letters[i].resource,
                                     kT0 + 60 * static_cast<int64_t>(i)));
    }
    ASSERT_TRUE(log_->AppendSync(std::move(request)).ok());
    ASSERT_TRUE(WaitFor([&] { return StatsOf("p1").cursor == 6; }));
    WriteDeadLetters("p1", {1, 2, 3, 4, 5}, [&](v1::DeadLetter& letter) {
      const Letter& spec = letters[letter.event().sequence() - 1];
      letter.set_rejected(spec.rejected);
      letter.set_reason(spec.reason);
    });
  }

  // The sequences one call answers for `request` (plugin p1), and its scanned count.
  std::vector<uint64_t> List(v1::ListDeadLettersRequest request, uint64_t* scanned = nullptr) {
    request.set_plugin("p1");
    v1::ListDeadLettersResponse response;
    grpc::Status status = stub_->ListDeadLetters(Ctx().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(response.next_page_token().empty()) << response.next_page_token();
    if (scanned != nullptr) *scanned = response.scanned();
    std::vector<uint64_t> sequences;
    for (const v1::DeadLetter& letter : response.dead_letters()) {
      sequences.push_back(letter.event().sequence());
    }
    return sequences;
  }

  using Seqs = std::vector<uint64_t>;
};

TEST_F(DeadLetterFilterTest, EachFilter) {
  uint64_t scanned = 0;
  EXPECT_EQ(List({}, &scanned), (Seqs{1, 2, 3, 4, 5}));
  EXPECT_EQ(scanned, 5u);

  v1::ListDeadLettersRequest request;
  request.set_type("product.*");
  EXPECT_EQ(List(request, &scanned), (Seqs{1, 2, 4, 5}));
  EXPECT_EQ(scanned, 5u);  // every letter examined, four returned
  request.set_type("product.updated");
  EXPECT_EQ(List(request), (Seqs{1, 4}));
  request.set_type("*.updated");
  EXPECT_EQ(List(request), (Seqs{1, 3, 4}));
  request.set_type("product.moved");
  EXPECT_EQ(List(request, &scanned), Seqs{});
  EXPECT_EQ(scanned, 5u);

  request = {};
  request.set_resource_id("shoe");
  EXPECT_EQ(List(request), (Seqs{1, 2, 5}));
  request.set_resource_id("sho");  // exact, not a prefix
  EXPECT_EQ(List(request), Seqs{});

  request = {};
  request.set_kind(v1::DEAD_LETTER_KIND_REJECTED);
  EXPECT_EQ(List(request), (Seqs{1, 3, 5}));
  request.set_kind(v1::DEAD_LETTER_KIND_EXHAUSTED);
  EXPECT_EQ(List(request), (Seqs{2, 4}));
  request.set_kind(v1::DEAD_LETTER_KIND_ANY);
  EXPECT_EQ(List(request), (Seqs{1, 2, 3, 4, 5}));

  request = {};
  request.set_reason_contains("BAD sku");  // any case
  EXPECT_EQ(List(request), (Seqs{1, 5}));
  request.set_reason_contains("timeout");
  EXPECT_EQ(List(request), (Seqs{2}));
}

TEST_F(DeadLetterFilterTest, CombinedFilters) {
  v1::ListDeadLettersRequest request;
  request.set_type("product.*");
  request.set_resource_id("shoe");
  EXPECT_EQ(List(request), (Seqs{1, 2, 5}));
  request.set_kind(v1::DEAD_LETTER_KIND_REJECTED);
  EXPECT_EQ(List(request), (Seqs{1, 5}));
  request.set_reason_contains("again");
  EXPECT_EQ(List(request), (Seqs{5}));
  request.set_kind(v1::DEAD_LETTER_KIND_EXHAUSTED);
  EXPECT_EQ(List(request), Seqs{});
}

TEST_F(DeadLetterFilterTest, PagesOfAFilterEndAtTheNextMatch) {
  v1::ListDeadLettersRequest request;
  request.set_plugin("p1");
  request.set_kind(v1::DEAD_LETTER_KIND_REJECTED);
  request.set_page_size(1);
  v1::ListDeadLettersResponse page;
  ASSERT_TRUE(Ok(stub_->ListDeadLetters(Ctx().get(), request, &page)));
  ASSERT_EQ(page.dead_letters_size(), 1);
  EXPECT_EQ(page.dead_letters(0).event().sequence(), 1u);
  EXPECT_EQ(page.next_page_token(), "3");  // the next match, not the next letter
  EXPECT_EQ(page.scanned(), 2u);           // 1 (returned) and 2 (not a match)
  EXPECT_EQ(AllDeadLetterPages(request), (Seqs{1, 3, 5}));
  int calls = 0;
  EXPECT_EQ(AllDeadLetterPages(request, &calls), (Seqs{1, 3, 5}));
  EXPECT_EQ(calls, 3);  // the last full page knew nothing more matched
}

TEST_F(DeadLetterFilterTest, BadFiltersAreRefused) {
  v1::ListDeadLettersRequest request;
  request.set_plugin("p1");
  request.set_type("Product.*");
  v1::ListDeadLettersResponse response;
  grpc::Status status = stub_->ListDeadLetters(Ctx().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "type: the glob must use only a-z, 0-9, _, . and *, got \"Product.*\"");
  request.set_type("product updated");
  EXPECT_EQ(stub_->ListDeadLetters(Ctx().get(), request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  request.set_type("");
  request.set_kind(static_cast<v1::DeadLetterKind>(7));
  status = stub_->ListDeadLetters(Ctx().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "kind: unknown value 7 (DEAD_LETTER_KIND_ANY, DEAD_LETTER_KIND_REJECTED or "
            "DEAD_LETTER_KIND_EXHAUSTED)");
}

// A filter that matches few letters among many: each call examines at most max_scan letters and
// answers with where to continue, and following the continuation returns every match once.
TEST_F(AdminServiceTest, SparseDeadLetterFilterIsPagedWithBoundedScans) {
  AdminLimits limits;
  limits.max_scan = 7;
  StartAdmin(limits);
  AppendEvents(100);
  ASSERT_TRUE(WaitFor([&] { return StatsOf("p1").cursor == 100; }));
  std::vector<uint64_t> all(100);
  for (uint64_t i = 0; i < 100; ++i) all[i] = i + 1;
  WriteDeadLetters("p1", all, [](v1::DeadLetter& letter) {
    if (letter.event().sequence() % 13 == 0) letter.set_reason("needle in the stack");
  });

  v1::ListDeadLettersRequest request;
  request.set_plugin("p1");
  request.set_reason_contains("Needle");
  v1::ListDeadLettersResponse first;
  ASSERT_TRUE(Ok(stub_->ListDeadLetters(Ctx().get(), request, &first)));
  EXPECT_TRUE(first.dead_letters().empty());  // 1-7: no match
  EXPECT_EQ(first.scanned(), 7u);
  EXPECT_EQ(first.next_page_token(), "8");

  request.set_page_size(2);
  int calls = 0;
  uint64_t max_scanned = 0;
  EXPECT_EQ(AllDeadLetterPages(request, &calls, &max_scanned),
            (std::vector<uint64_t>{13, 26, 39, 52, 65, 78, 91}));
  EXPECT_EQ(max_scanned, 7u);
  EXPECT_GE(calls, 100 / 7);  // never more than max_scan letters a call

  // A filter that matches nothing costs the same bounded calls and ends.
  request.set_reason_contains("absent");
  calls = 0;
  EXPECT_TRUE(AllDeadLetterPages(request, &calls).empty());
  EXPECT_GE(calls, 100 / 7);
  // Without a filter, pages are as before: full ones, the last one without a token.
  request.set_reason_contains("");
  request.set_page_size(30);
  EXPECT_EQ(AllDeadLetterPages(request), all);
}

TEST_F(AdminServiceTest, RetryAllIsBoundedPerCall) {
  AdminLimits limits;
  limits.max_retry = 2;
  StartAdmin(limits);
  AppendEvents(5);
  ASSERT_TRUE(WaitFor([&] { return StatsOf("p1").cursor == 5; }));
  WriteDeadLetters("p1", {1, 2, 4});
  v1::RetryDeadLettersRequest retry;
  retry.set_plugin("p1");
  retry.set_all(true);
  v1::RetryDeadLettersResponse retried;
  ASSERT_TRUE(Ok(stub_->RetryDeadLetters(Ctx().get(), retry, &retried)));
  EXPECT_EQ(retried.sequences_size(), 2);
  EXPECT_TRUE(retried.more());
  ASSERT_TRUE(Ok(stub_->RetryDeadLetters(Ctx().get(), retry, &retried)));
  EXPECT_EQ(std::vector<uint64_t>(retried.sequences().begin(), retried.sequences().end()),
            (std::vector<uint64_t>{4}));
  EXPECT_FALSE(retried.more());
  ASSERT_TRUE(WaitFor(
      [&] { return plugin_->Count(1) == 2 && plugin_->Count(2) == 2 && plugin_->Count(4) == 2; }));
}

// ---- Events and quarantine --------------------------------------------------------------------

TEST_F(AdminServiceTest, GetEventBySequenceOrId) {
  const std::vector<std::string> ids = AppendEvents(3);
  v1::GetEventRequest request;
  request.set_sequence(2);
  v1::Event event;
  ASSERT_TRUE(Ok(stub_->GetEvent(Ctx().get(), request, &event)));
  EXPECT_EQ(event.id(), ids[1]);
  EXPECT_EQ(event.data().fields().at("family").string_value(), "shoes");

  request.mutable_ref()->set_source("legacy");
  request.mutable_ref()->set_id(ids[2]);
  ASSERT_TRUE(Ok(stub_->GetEvent(Ctx().get(), request, &event)));
  EXPECT_EQ(event.sequence(), 3u);

  request.mutable_ref()->set_source("platform");
  EXPECT_EQ(stub_->GetEvent(Ctx().get(), request, &event).error_code(),
            grpc::StatusCode::NOT_FOUND);
  request.set_sequence(4);
  grpc::Status status = stub_->GetEvent(Ctx().get(), request, &event);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), "sequence 4 is beyond the log's head (head 3)");
  request.clear_key();
  EXPECT_EQ(stub_->GetEvent(Ctx().get(), request, &event).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

class ListEventsTest : public AdminServiceTest {
 protected:
  void SetUp() override {
    AdminServiceTest::SetUp();
    // 1..8: sources, types and resources mixed; received a minute apart.
    const std::vector<std::tuple<std::string, std::string, std::string>> events = {
        {"legacy", "product.created", "a"},         {"legacy", "product.updated", "a"},
        {"platform", "product_model.updated", "m"}, {"legacy", "product.updated", "b"},
        {"platform", "product.updated.delta", "a"}, {"legacy", "category.created", "c"},
        {"platform", "product.deleted", "b"},       {"legacy", "product.updated", "a"},
    };
    AppendRequest request;
    for (std::size_t i = 0; i < events.size(); ++i) {
      const auto& [source, type, resource] = events[i];
      request.events.push_back(Event(source, type, resource, kT0 + 60 * static_cast<int64_t>(i)));
    }
    ASSERT_TRUE(log_->AppendSync(std::move(request)).ok());
  }

  std::vector<uint64_t> List(const std::function<void(v1::ListEventsRequest&)>& filter) {
    v1::ListEventsRequest request;
    filter(request);
    return AllPages(request);
  }
};

TEST_F(ListEventsTest, Filters) {
  using Seqs = std::vector<uint64_t>;
  EXPECT_EQ(List([](auto&) {}), (Seqs{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(List([](auto& r) { r.set_type("product.*"); }), (Seqs{1, 2, 4, 5, 7, 8}));
  EXPECT_EQ(List([](auto& r) { r.set_type("*.updated"); }), (Seqs{2, 3, 4, 8}));
  EXPECT_EQ(List([](auto& r) { r.set_resource_id("a"); }), (Seqs{1, 2, 5, 8}));
  EXPECT_EQ(List([](auto& r) { r.set_source("platform"); }), (Seqs{3, 5, 7}));
  EXPECT_EQ(List([](auto& r) {
              r.set_source("legacy");
              r.set_type("product.updated");
              r.set_resource_id("a");
            }),
            (Seqs{2, 8}));
  // since inclusive, until exclusive.
  EXPECT_EQ(List([](auto& r) {
              *r.mutable_since() = TimeUtil::SecondsToTimestamp(kT0 + 120);
              *r.mutable_until() = TimeUtil::SecondsToTimestamp(kT0 + 300);
            }),
            (Seqs{3, 4, 5}));
  EXPECT_EQ(List([](auto& r) { *r.mutable_since() = TimeUtil::SecondsToTimestamp(kT0 + 1); }),
            (Seqs{2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(List([](auto& r) { *r.mutable_since() = TimeUtil::SecondsToTimestamp(kT0 + 3600); }),
            (Seqs{}));
  EXPECT_EQ(List([](auto& r) { r.set_resource_id("nothing"); }), (Seqs{}));
}

TEST_F(ListEventsTest, NewestFirst) {
  using Seqs = std::vector<uint64_t>;
  EXPECT_EQ(List([](auto& r) { r.set_newest_first(true); }), (Seqs{8, 7, 6, 5, 4, 3, 2, 1}));
  EXPECT_EQ(List([](auto& r) {
              r.set_newest_first(true);
              r.set_resource_id("b");
            }),
            (Seqs{7, 4}));
  EXPECT_EQ(List([](auto& r) {
              r.set_newest_first(true);
              *r.mutable_until() = TimeUtil::SecondsToTimestamp(kT0 + 180);
            }),
            (Seqs{3, 2, 1}));
  EXPECT_EQ(List([](auto& r) {
              r.set_newest_first(true);
              r.set_page_size(3);
              *r.mutable_since() = TimeUtil::SecondsToTimestamp(kT0 + 300);
            }),
            (Seqs{8, 7, 6}));
}

TEST_F(ListEventsTest, PagesAreContiguous) {
  v1::ListEventsRequest request;
  request.set_page_size(3);
  v1::ListEventsResponse page;
  ASSERT_TRUE(Ok(stub_->ListEvents(Ctx().get(), request, &page)));
  EXPECT_EQ(Sequences(page), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(page.next_page_token(), "4");
  int calls = 0;
  EXPECT_EQ(AllPages(request, &calls), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(calls, 3);
  request.set_newest_first(true);
  EXPECT_EQ(AllPages(request), (std::vector<uint64_t>{8, 7, 6, 5, 4, 3, 2, 1}));
  request.set_page_token("x");
  EXPECT_EQ(stub_->ListEvents(Ctx().get(), request, &page).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ListEventsTest, ScanIsBoundedPerCall) {
  AdminLimits limits;
  limits.max_scan = 3;
  StartAdmin(limits);
  v1::ListEventsRequest request;
  request.set_resource_id("c");  // only sequence 6
  v1::ListEventsResponse page;
  ASSERT_TRUE(Ok(stub_->ListEvents(Ctx().get(), request, &page)));
  EXPECT_TRUE(page.events().empty());
  EXPECT_EQ(page.scanned(), 3u);
  EXPECT_EQ(page.next_page_token(), "4");
  int calls = 0;
  EXPECT_EQ(AllPages(request, &calls), (std::vector<uint64_t>{6}));
  EXPECT_EQ(calls, 3);
}

TEST_F(ListEventsTest, ResponseSizeIsBounded) {
  AdminLimits limits;
  limits.max_response_bytes = 1;  // every event is larger: one per page
  StartAdmin(limits);
  v1::ListEventsRequest request;
  int calls = 0;
  EXPECT_EQ(AllPages(request, &calls), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(calls, 8);
}

TEST_F(ListEventsTest, InvalidRanges) {
  v1::ListEventsRequest request;
  *request.mutable_since() = TimeUtil::SecondsToTimestamp(kT0 + 60);
  *request.mutable_until() = TimeUtil::SecondsToTimestamp(kT0 + 60);
  v1::ListEventsResponse page;
  EXPECT_EQ(stub_->ListEvents(Ctx().get(), request, &page).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(AdminServiceTest, ListQuarantinePaginates) {
  AppendRequest request;
  for (int i = 0; i < 3; ++i) {
    v1::QuarantineEntry entry;
    entry.set_source("legacy");
    entry.set_index(i);
    entry.set_reason("missing event_id");
    entry.set_raw(absl::StrCat("{\"action\":\"x", i, "\"}"));
    *entry.mutable_received_at() = TimeUtil::SecondsToTimestamp(kT0);
    request.quarantine.push_back(entry);
  }
  ASSERT_TRUE(log_->AppendSync(std::move(request)).ok());

  v1::ListQuarantineRequest list;
  list.set_page_size(2);
  v1::ListQuarantineResponse page;
  ASSERT_TRUE(Ok(stub_->ListQuarantine(Ctx().get(), list, &page)));
  ASSERT_EQ(page.entries_size(), 2);
  EXPECT_EQ(page.entries(0).raw(), "{\"action\":\"x0\"}");
  ASSERT_FALSE(page.next_page_token().empty());
  list.set_page_token(page.next_page_token());
  ASSERT_TRUE(Ok(stub_->ListQuarantine(Ctx().get(), list, &page)));
  ASSERT_EQ(page.entries_size(), 1);
  EXPECT_EQ(page.entries(0).index(), 2u);
  EXPECT_TRUE(page.next_page_token().empty());
}

TEST_F(AdminServiceTest, ReconcileNeedsTheReconciler) {
  // This service runs without a Reconciler (tests/core/reconciler_test.cc and
  // tests/admin/reconcile_cli_test.cc cover Reconcile with one).
  v1::ReconcileRequest request;
  request.set_source("legacy");
  v1::ReconcileResponse response;
  grpc::Status status = stub_->Reconcile(Ctx().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(status.error_message(), "reconciliation is not running in this pimgate");
  request.clear_source();
  EXPECT_EQ(stub_->Reconcile(Ctx().get(), request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(AdminWithoutPartsTest, MissingPartsAreFailedPrecondition) {
  AdminConfig config;
  config.listen = testing::ListenAt("127.0.0.1:0");
  auto admin = AdminServer::Start(config, {});
  ASSERT_TRUE(admin.ok());
  auto stub = v1::Admin::NewStub(
      grpc::CreateChannel((*admin)->target(), grpc::InsecureChannelCredentials()));
  // A fresh channel: each call waits for the connection instead of failing fast.
  const auto Ready = [](grpc::ClientContext& ctx) {
    ctx.set_wait_for_ready(true);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  };
  {
    grpc::ClientContext ctx;
    Ready(ctx);
    v1::GetStatsResponse response;
    EXPECT_TRUE(Ok(stub->GetStats(&ctx, {}, &response)));
    EXPECT_FALSE(response.has_log());
  }
  {
    grpc::ClientContext ctx;
    Ready(ctx);
    v1::PausePluginRequest request;
    request.set_plugin("p1");
    v1::PausePluginResponse response;
    EXPECT_EQ(stub->PausePlugin(&ctx, request, &response).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  {
    grpc::ClientContext ctx;
    Ready(ctx);
    v1::ListEventsResponse response;
    EXPECT_EQ(stub->ListEvents(&ctx, {}, &response).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  {
    // No source manages Event Platform subscriptions: the message says what to configure.
    grpc::ClientContext ctx;
    Ready(ctx);
    v1::PlatformSubscribeRequest request;
    request.set_source("platform");
    v1::PlatformSubscribeResponse response;
    grpc::Status status = stub->PlatformSubscribe(&ctx, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(status.error_message().find("platform:"), std::string::npos)
        << status.error_message();
  }
}

}  // namespace
}  // namespace pimgate
