// Hydration end to end: a pimgate process whose Event Platform source has `rest` pointing at a
// FakePim, a signed CloudEvent in (only the product uuid), and a Python plugin with
// `hydrate: true` that records the data it receives: the full product must come out.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "pimgate/v1/admin.grpc.pb.h"
#include "tests/testing/fake_pim.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using google::protobuf::Struct;
using testing::CloudEvent;
using testing::EventPlatformHeaders;
using testing::FakePim;
using testing::HttpClient;
using testing::NewUuid;
using testing::PimgateProcess;
using testing::TempDir;

constexpr char kPlatformSecret[] = "e2e-platform-secret";

// Appends {"sequence","type","resource_id","attempt","data"} per delivery to RECORDER_OUT.
constexpr char kRecorder[] = R"(import json, os, sys
import pimgate_sdk

OUT = os.environ["RECORDER_OUT"]

def handle(event, attempt):
    line = json.dumps({"sequence": event.sequence, "type": event.type,
                       "resource_id": event.resource_id, "attempt": attempt,
                       "data": pimgate_sdk.data(event)})
    with open(OUT, "a") as out:
        out.write(line + "\n")
    return pimgate_sdk.ok()

if __name__ == "__main__":
    sys.exit(pimgate_sdk.run(handle, concurrency=2))
)";

std::vector<Struct> ReadLines(const std::string& path) {
  std::vector<Struct> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    Struct parsed;
    if (line.empty() || !google::protobuf::util::JsonStringToMessage(line, &parsed).ok()) continue;
    lines.push_back(std::move(parsed));
  }
  return lines;
}

std::string At(const Struct& s, const std::vector<std::string>& path) {
  const Struct* object = &s;
  for (std::size_t i = 0; i < path.size(); ++i) {
    auto it = object->fields().find(path[i]);
    if (it == object->fields().end()) return "";
    if (i + 1 == path.size()) return it->second.string_value();
    if (!it->second.has_struct_value()) return "";
    object = &it->second.struct_value();
  }
  return "";
}

TEST(HydrationEndToEnd, EventPlatformWebhookComesOutWithTheFullProduct) {
  TempDir dir;
  FakePim pim;
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, 1'800'000'000'000'000LL,
                 R"({"family":"shoes","enabled":true,"values":{"color":[{"locale":null,)"
                 R"("scope":null,"data":"red"}]}})");
  const FakePim::Options pim_options;

  testing::CertFiles cert = testing::MakeSelfSignedCert(dir.path());
  const std::string out = dir.File("hydrated.jsonl");
  const std::string script = dir.File("recorder.py");
  std::ofstream(script) << kRecorder;
  std::ostringstream yaml;
  yaml << "gateway:\n  listen: 127.0.0.1:0\n  threads: 2\n  tls:\n    cert_file: " << cert.cert_file
       << "\n    key_file: " << cert.key_file << "\n"
       << "store:\n  path: " << dir.File("store") << "\n"
       << "admin: {listen: \"127.0.0.1:0\"}\nmetrics: {enabled: false}\n"
       << "sources:\n"
       << "  - name: platform\n    kind: event_platform\n    path: /hooks/platform\n"
       << "    secret: " << kPlatformSecret << "\n"
       << "    rest:\n      base_url: " << pim.base_url() << "\n"
       << "      client_id: " << pim_options.client_id << "\n"
       << "      secret: " << pim_options.secret << "\n"
       << "      username: " << pim_options.username << "\n"
       << "      password: " << pim_options.password << "\n"
       << "      insecure_skip_verify: true\n"
       << "    reconcile: {interval: 0s}\n"  // on demand only: nothing but the webhook
       << "plugins:\n"
       << "  - name: hydrated\n"
       << "    command: [\"/usr/bin/python3\", \"" << script << "\"]\n"
       << "    env: {RECORDER_OUT: \"" << out << "\", PYTHONPATH: \"" << PIMGATE_PYTHON_ROOT
       << "\"}\n"
       << "    hydrate: true\n"
       << "    start_timeout: 20s\n";
  const std::string config = dir.File("pimgate.yaml");
  std::ofstream(config) << yaml.str();

  PimgateProcess pimgate(config, dir.File("ready.json"));
  const uint16_t port = pimgate.WaitReady();
  ASSERT_NE(port, 0);
  HttpClient client(port);
  const std::string body = CloudEvent("com.akeneo.pim.v1.product.updated", NewUuid(), uuid);
  const testing::HttpResponse response =
      client.Send("POST", "/hooks/platform", body, EventPlatformHeaders(kPlatformSecret, body));
  ASSERT_EQ(response.status, 200) << response.body;

  std::vector<Struct> lines;
  for (int i = 0; i < 600 && lines.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    lines = ReadLines(out);
  }
  ASSERT_EQ(lines.size(), 1u) << "the hydrating plugin received nothing";
  const Struct& line = lines[0];
  EXPECT_EQ(At(line, {"type"}), "product.updated");
  EXPECT_EQ(At(line, {"resource_id"}), uuid);
  EXPECT_EQ(At(line, {"data", "hydration"}), "ok");
  EXPECT_EQ(At(line, {"data", "resource", "uuid"}), uuid);
  EXPECT_EQ(At(line, {"data", "resource", "family"}), "shoes");
  EXPECT_FALSE(At(line, {"data", "resource", "updated"}).empty());
  const auto& values = line.fields().at("data").struct_value().fields().at("resource");
  EXPECT_EQ(values.struct_value()
                .fields()
                .at("values")
                .struct_value()
                .fields()
                .at("color")
                .list_value()
                .values(0)
                .struct_value()
                .fields()
                .at("data")
                .string_value(),
            "red");
  EXPECT_EQ(At(line, {"data", "product", "uuid"}), uuid);  // the CloudEvent's own data is kept
  int searches = 0;
  for (const FakePim::Request& r : pim.requests()) {
    searches += r.target.rfind("/api/rest/v1/products-uuid?", 0) == 0;
  }
  EXPECT_EQ(searches, 1);

  // The admin API's ListPlugins shows the plugin's hydration counters.
  std::ifstream ready_file(dir.File("ready.json"));
  const std::string ready((std::istreambuf_iterator<char>(ready_file)),
                          std::istreambuf_iterator<char>());
  const std::size_t pos = ready.find("\"admin_port\":");
  ASSERT_NE(pos, std::string::npos) << ready;
  auto admin = v1::Admin::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", std::stoi(ready.substr(pos + 13))),
                          grpc::InsecureChannelCredentials()));
  // The dispatcher publishes its counters after it has sent the delivery, so the plugin may have
  // the event a moment before ListPlugins counts its fetch: ask until it does (hang guard 30 s).
  v1::ListPluginsResponse plugins;
  grpc::Status status;
  for (int i = 0; i < 600; ++i) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    // A fresh channel: the call waits for its first connection instead of failing fast.
    context.set_wait_for_ready(true);
    status = admin->ListPlugins(&context, {}, &plugins);
    if (!status.ok() ||
        (plugins.plugins_size() == 1 && plugins.plugins(0).hydration_fetches() >= 1)) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(plugins.plugins_size(), 1);
  EXPECT_EQ(plugins.plugins(0).hydration_fetches(), 1u);
  EXPECT_EQ(plugins.plugins(0).hydration_failures(), 0u);
  EXPECT_EQ(pimgate.Terminate(), 0);
}

}  // namespace
}  // namespace pimgate
