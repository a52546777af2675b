// M15: a plugin pimgate launches sees none of the secrets pimgate was given. pimgate runs as a
// process with its webhook secrets, the PIM's REST credentials and its admin token in its
// environment (read through ${ENV} references); the test plugin writes its whole environment to
// a file, which must hold none of them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using testing::TempDir;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Waits up to 30 s for `path` to have content.
std::string WaitForFile(const std::string& path) {
  for (int i = 0; i < 3000; ++i) {
    std::string text = ReadAll(path);
    if (!text.empty()) return text;
    usleep(10'000);
  }
  return "";
}

// Every secret pimgate gets, by the variable that carries it.
const std::vector<std::pair<std::string, std::string>> kSecrets = {
    {"PIMGATE_ENV_TEST_WEBHOOK_SECRET", "webhook-secret-0a1b2c3d4e5f"},
    {"PIMGATE_ENV_TEST_PLATFORM_SECRET", "platform-secret-9f8e7d6c5b4a"},
    {"PIMGATE_ENV_TEST_CLIENT_SECRET", "rest-client-secret-13579"},
    {"PIMGATE_ENV_TEST_PIM_PASSWORD", "pim-password-24680"},
    {"PIMGATE_ENV_TEST_ADMIN_TOKEN", "admin-token-112233445566"},
};

TEST(PluginEnvironmentTest, APluginThatPrintsItsEnvironmentSeesNoSecretPimgateWasGiven) {
  TempDir dir;
  std::ostringstream yaml;
  yaml << "gateway:\n  listen: 127.0.0.1:0\n  threads: 1\n"
       << "store:\n  path: " << dir.File("store") << "\n"
       << "sources:\n"
       << "  - name: legacy\n    kind: events_api\n    path: /hooks/legacy\n"
       << "    secret: ${PIMGATE_ENV_TEST_WEBHOOK_SECRET}\n"
       << "  - name: platform\n    kind: event_platform\n    path: /hooks/platform\n"
       << "    secret: ${PIMGATE_ENV_TEST_PLATFORM_SECRET}\n"
       << "    rest:\n      base_url: http://127.0.0.1:1\n      allow_insecure_http: true\n"
       << "      client_id: pimgate\n      secret: ${PIMGATE_ENV_TEST_CLIENT_SECRET}\n"
       << "      username: api-user\n      password: ${PIMGATE_ENV_TEST_PIM_PASSWORD}\n"
       << "    reconcile: {interval: 0s}\n"
       << "admin:\n  listen: 127.0.0.1:0\n  token: ${PIMGATE_ENV_TEST_ADMIN_TOKEN}\n"
       << "metrics:\n  listen: 127.0.0.1:0\n"
       << "plugins:\n"
       << "  - name: printer\n    command: [\"" << PIMGATE_TEST_PLUGIN << "\"]\n"
       << "    env: {TEST_PLUGIN_ENV_DUMP_ALL: " << dir.File("printer.env")
       << "}\n"
       // The positive control: the same dump shows a variable the manifest asks for.
       << "  - name: allowed\n    command: [\"" << PIMGATE_TEST_PLUGIN << "\"]\n"
       << "    env: {TEST_PLUGIN_ENV_DUMP_ALL: " << dir.File("allowed.env") << "}\n"
       << "    inherit_env: [PIMGATE_ENV_TEST_PIM_PASSWORD]\n";
  std::ofstream(dir.File("pimgate.yaml")) << yaml.str();

  testing::PimgateProcess pimgate(dir.File("pimgate.yaml"), dir.File("ready.json"), kSecrets);
  const uint16_t port = pimgate.WaitReady();
  ASSERT_NE(port, 0) << "pimgate did not start";
  // pimgate did read the secrets: a request signed with the webhook secret is accepted.
  const std::string body = testing::LegacyBatch(
      {testing::LegacyProductEvent("product.updated", testing::NewUuid(), testing::NewUuid())});
  testing::HttpClient client(port, /*tls=*/false);
  EXPECT_EQ(
      client.Send("POST", "/hooks/legacy", body, testing::LegacyHeaders(kSecrets[0].second, body))
          .status,
      200);

  const std::string printer = WaitForFile(dir.File("printer.env"));
  const std::string allowed = WaitForFile(dir.File("allowed.env"));
  ASSERT_FALSE(printer.empty());
  ASSERT_FALSE(allowed.empty());
  EXPECT_EQ(pimgate.Terminate(), 0);

  for (const auto& [name, value] : kSecrets) {
    EXPECT_FALSE(absl::StrContains(printer, value)) << name << " reached the plugin:\n" << printer;
    EXPECT_FALSE(absl::StrContains(printer, name)) << name << " reached the plugin:\n" << printer;
  }
  // What it does get: PATH (to find interpreters) and its own two variables.
  EXPECT_TRUE(absl::StrContains(printer, "\nPATH=") || absl::StartsWith(printer, "PATH="))
      << printer;
  EXPECT_TRUE(absl::StrContains(printer, "PIMGATE_PLUGIN_NAME=printer\n")) << printer;
  EXPECT_TRUE(absl::StrContains(printer, "PIMGATE_PLUGIN_ADDRESS=unix:")) << printer;

  EXPECT_TRUE(absl::StrContains(allowed, "PIMGATE_ENV_TEST_PIM_PASSWORD=pim-password-24680\n"))
      << allowed;
  for (const auto& [name, value] : kSecrets) {
    if (name == "PIMGATE_ENV_TEST_PIM_PASSWORD") continue;
    EXPECT_FALSE(absl::StrContains(allowed, value)) << name << " reached the plugin";
  }
}

}  // namespace
}  // namespace pimgate
