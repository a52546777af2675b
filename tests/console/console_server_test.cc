// ConsoleServer and AdminJsonApi as objects: a real ConsoleServer on 127.0.0.1:0 in front of a
// real gRPC server (reached through its in-process channel, as in pimgate) whose Admin service is
// scripted here, so that every gRPC status code, the forwarded token and a call still running at
// Stop() can be produced on demand.
#include "console/console_server.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "console/admin_json_api.h"
#include "console/assets.h"
#include "nlohmann/json.hpp"
#include "pimgate/v1/admin.grpc.pb.h"
#include "tests/testing/test_env.h"
#include "tests/testing/typed_values.h"

namespace pimgate {
namespace {

using nlohmann::json;

// PausePlugin answers the status whose number is the plugin's name; GetStats echoes the
// `authorization` metadata as a source's name; ResumePlugin runs until its caller cancels it.
class ScriptedAdmin final : public v1::Admin::Service {
 public:
  grpc::Status PausePlugin(grpc::ServerContext*, const v1::PausePluginRequest* request,
                           v1::PausePluginResponse*) override {
    int code = 0;
    if (!absl::SimpleAtoi(request->plugin(), &code)) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "plugin must be a number");
    }
    return grpc::Status(static_cast<grpc::StatusCode>(code),
                        absl::StrCat("scripted ", request->plugin()));
  }

  grpc::Status GetStats(grpc::ServerContext* context, const v1::GetStatsRequest*,
                        v1::GetStatsResponse* response) override {
    const auto& metadata = context->client_metadata();
    const auto it = metadata.find("authorization");
    response->add_sources()->set_name(
        it == metadata.end() ? "(none)" : std::string(it->second.data(), it->second.size()));
    response->mutable_log()->set_head_sequence(uint64_t{1} << 60);  // beyond a double's 2^53
    return grpc::Status::OK;
  }

  grpc::Status ResumePlugin(grpc::ServerContext* context, const v1::ResumePluginRequest*,
                            v1::ResumePluginResponse*) override {
    started.Notify();
    // Until the console cancels the call (its Stop() must), or a hang guard.
    const auto guard = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (!context->IsCancelled() && std::chrono::steady_clock::now() < guard) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    saw_cancel = context->IsCancelled();
    return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  }

  absl::Notification started;
  std::atomic<bool> saw_cancel{false};
};

class ConsoleServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.RegisterService(&admin_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ConsoleServerOptions options;
    options.listen = testing::ListenAt("127.0.0.1:0");
    auto console = ConsoleServer::Start(
        options, server_->InProcessChannel(grpc::ChannelArguments()), ConsoleAssets());
    ASSERT_TRUE(console.ok()) << console.status();
    console_ = *std::move(console);
  }

  void TearDown() override {
    console_.reset();
    server_->Shutdown();
  }

  testing::HttpResponse Post(const std::string& method, const std::string& body,
                             std::map<std::string, std::string> headers = {}) {
    headers.emplace("Content-Type", "application/json");
    testing::HttpClient client(console_->port(), /*tls=*/false);
    return client.Send("POST", "/api/v1/" + method, body, headers);
  }

  ScriptedAdmin admin_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<ConsoleServer> console_;
};

TEST_F(ConsoleServerTest, EveryGrpcStatusMapsToItsHttpStatus) {
  const std::map<grpc::StatusCode, std::pair<int, std::string>> expected = {
      {grpc::StatusCode::CANCELLED, {500, "CANCELLED"}},
      {grpc::StatusCode::UNKNOWN, {500, "UNKNOWN"}},
      {grpc::StatusCode::INVALID_ARGUMENT, {400, "INVALID_ARGUMENT"}},
      {grpc::StatusCode::DEADLINE_EXCEEDED, {504, "DEADLINE_EXCEEDED"}},
      {grpc::StatusCode::NOT_FOUND, {404, "NOT_FOUND"}},
      {grpc::StatusCode::ALREADY_EXISTS, {409, "ALREADY_EXISTS"}},
      {grpc::StatusCode::PERMISSION_DENIED, {403, "PERMISSION_DENIED"}},
      {grpc::StatusCode::RESOURCE_EXHAUSTED, {429, "RESOURCE_EXHAUSTED"}},
      {grpc::StatusCode::FAILED_PRECONDITION, {409, "FAILED_PRECONDITION"}},
      {grpc::StatusCode::ABORTED, {409, "ABORTED"}},
      {grpc::StatusCode::OUT_OF_RANGE, {400, "OUT_OF_RANGE"}},
      {grpc::StatusCode::UNIMPLEMENTED, {501, "UNIMPLEMENTED"}},
      {grpc::StatusCode::INTERNAL, {500, "INTERNAL"}},
      {grpc::StatusCode::UNAVAILABLE, {503, "UNAVAILABLE"}},
      {grpc::StatusCode::DATA_LOSS, {500, "DATA_LOSS"}},
      {grpc::StatusCode::UNAUTHENTICATED, {401, "UNAUTHENTICATED"}},
  };
  for (const auto& [code, answer] : expected) {
    const int number = static_cast<int>(code);
    const testing::HttpResponse res =
        Post("PausePlugin", absl::StrCat(R"({"plugin":")", number, "\"}"));
    EXPECT_EQ(res.status, answer.first) << answer.second << ": " << res.body;
    EXPECT_EQ(
        res.body,
        json({{"code", answer.second}, {"message", absl::StrCat("scripted ", number)}}).dump())
        << answer.second;
    EXPECT_EQ(HttpStatusFor(code), answer.first);
  }
  const testing::HttpResponse ok = Post("PausePlugin", R"({"plugin":"0"})");
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.body, "{}");
}

TEST_F(ConsoleServerTest, AuthorizationIsForwardedAsItIs) {
  const testing::HttpResponse with = Post("GetStats", "", {{"Authorization", "Bearer abc"}});
  ASSERT_EQ(with.status, 200) << with.body;  // an empty body is the empty request
  const json stats = json::parse(with.body);
  EXPECT_EQ(stats["sources"][0]["name"], "Bearer abc");
  EXPECT_EQ(stats["log"]["headSequence"], "1152921504606846976");  // a string: 2^60
  const testing::HttpResponse without = Post("GetStats", "{}");
  EXPECT_EQ(json::parse(without.body)["sources"][0]["name"], "(none)");
}

// Stop() with an admin call running cancels it and returns; the call's caller gets its answer or
// a closed connection, never a hang.
TEST_F(ConsoleServerTest, StopCancelsCallsInFlight) {
  testing::HttpResponse answer;
  std::thread caller([&] { answer = Post("ResumePlugin", R"({"plugin":"p"})"); });
  admin_.started.WaitForNotification();
  console_->Stop();
  caller.join();
  EXPECT_TRUE(answer.status == 500 || answer.status == 0) << answer.status << " " << answer.body;
  server_->Shutdown();
  EXPECT_TRUE(admin_.saw_cancel.load());
}

TEST(AdminJsonApi, ListsEveryUnaryMethodOfTheService) {
  grpc::ServerBuilder builder;
  ScriptedAdmin admin;
  builder.RegisterService(&admin);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  AdminJsonApi api(server->InProcessChannel(grpc::ChannelArguments()), std::chrono::seconds(10));
  const std::vector<std::string>& methods = api.methods();
  for (const char* method :
       {"GetStats", "ListPlugins", "PausePlugin", "ResumePlugin", "RestartPlugin", "SeekPlugin",
        "ListDeadLetters", "RetryDeadLetters", "PurgeDeadLetters", "GetEvent", "ListEvents",
        "ListQuarantine", "Reconcile", "PlatformLogs"}) {
    EXPECT_NE(std::find(methods.begin(), methods.end(), method), methods.end()) << method;
  }
  EXPECT_EQ(
      methods.size(),
      static_cast<std::size_t>(
          v1::GetStatsRequest::descriptor()->file()->FindServiceByName("Admin")->method_count()));
  api.Shutdown();
  server->Shutdown();
}

}  // namespace
}  // namespace pimgate
