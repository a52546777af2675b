// The PIM's own sender stack against a real gateway over TLS: PHP's Guzzle 7 over libcurl, from
// Debian's php-cli and php-guzzlehttp-guzzle (scripts/lib.sh installs them), driven by
// tests/gateway/akeneo_webhook_sender.php with the options of Akeneo's GuzzleWebhookClient.
// Bodies of 1 MiB or more get "Expect: 100-Continue" from Guzzle; before the gateway answered it,
// every such request was lost to the PIM's 0.5 s timeout.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/testing/test_env.h"
#include "tests/testing/typed_values.h"

namespace pimgate {
namespace {

using testing::GatewayHarness;
using testing::TempDir;

constexpr char kPhp[] = "/usr/bin/php";

// The PIM's 0.5 s timeout, as its GuzzleWebhookClient sets it. Under a sanitizer pimgate runs
// several times slower (a debug build with every access checked), so the sender gets 5 s there:
// the stall this test exists for is still caught without the timeout, by `got_continue` (curl
// waits its 1 s expect timeout, then sends the body without a 100 Continue, which the check
// below refuses).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr char kSenderTimeout[] = "5";
#else
constexpr char kSenderTimeout[] = "0.5";
#endif

struct SentRequest {
  int index = -1;
  int status = 0;
  std::string expect;
  bool got_continue = false;
  std::size_t bytes = 0;
  std::vector<std::string> event_ids;
  std::string error;
};

// Runs the sender; stdout parsed line by line, stderr kept for failure messages.
std::vector<SentRequest> RunSender(const TempDir& dir, const std::vector<std::string>& args,
                                   std::string* diagnostics, int* exit_code) {
  std::vector<std::string> argv = {kPhp,
                                   PIMGATE_SOURCE_DIR "/tests/gateway/akeneo_webhook_sender.php"};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string out_path = dir.File("sender.out"), err_path = dir.File("sender.err");
  const pid_t pid = fork();
  if (pid == 0) {
    const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(out, 1);
    dup2(err, 2);
    std::vector<char*> c_argv;
    for (std::string& a : argv) c_argv.push_back(a.data());
    c_argv.push_back(nullptr);
    execv(kPhp, c_argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream out(out_path), err(err_path);
  std::stringstream text, errors;
  text << out.rdbuf();
  errors << err.rdbuf();
  *diagnostics = absl::StrCat("php exit status ", status, "\nstdout:\n", text.str().substr(0, 4000),
                              "\nstderr:\n", errors.str().substr(0, 4000));
  std::vector<SentRequest> sent;
  std::string line;
  while (std::getline(text, line)) {
    if (line.rfind("guzzle ", 0) == 0) continue;
    std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits(' ', 6));
    if (f.size() < 6) continue;
    SentRequest r;
    r.index = std::stoi(f[0]);
    r.status = std::stoi(f[1]);
    r.expect = f[2] == "-" ? "" : f[2];
    r.got_continue = f[3] == "1";
    r.bytes = std::stoul(f[4]);
    r.event_ids = absl::StrSplit(f[5], ',');
    if (f.size() > 6) r.error = f[6];
    sent.push_back(std::move(r));
  }
  return sent;
}

TEST(GuzzleSender, PimStackWithLargeProductsGetsEveryRequestAnswered200AndStored) {
  if (access(kPhp, X_OK) != 0) {
    GTEST_SKIP() << kPhp << " is missing: install php-cli and php-guzzlehttp-guzzle "
                 << "(scripts/lib.sh does)";
  }
  TempDir dir;
  const testing::CertFiles cert = testing::MakeSelfSignedCert(dir.path());
  GatewayHarness::Options options;
  options.tweak = [&cert](Config& config) {
    config.gateway.tls = TlsConfig{cert.cert_file, cert.key_file, TlsVersion::kTls1_2};
  };
  GatewayHarness gw(options);
  // 20 requests of 10 products of ~120 KB (about 1.3 MiB each once json_encode escapes the
  // accents), 20 small ones between them.
  std::string diagnostics;
  int exit_code = -1;
  const std::vector<SentRequest> sent = RunSender(
      dir,
      {absl::StrCat("https://127.0.0.1:", gw.port(), "/hooks/legacy"),
       GatewayHarness::kLegacySecret, cert.cert_file, "20", "20", "120000", kSenderTimeout},
      &diagnostics, &exit_code);
  // 3: no curl extension, so no libcurl under Guzzle (scripts/lib.sh installs php-curl).
  ASSERT_EQ(exit_code, 0) << diagnostics;
  ASSERT_EQ(sent.size(), 40u) << diagnostics;
  std::set<std::string> sent_ids;
  int large = 0;
  for (const SentRequest& r : sent) {
    // The PIM's 0.5 s timeout is what failed every large request before: "Operation timed out
    // after 500 milliseconds with 0 bytes received" while curl waited for a 100 Continue.
    EXPECT_EQ(r.status, 200) << "request " << r.index << " (" << r.bytes << " bytes): " << r.error;
    if (r.bytes >= (1u << 20)) {
      ++large;
      // Guzzle's PrepareBodyMiddleware adds the header to bodies of 1 MiB or more ...
      EXPECT_EQ(r.expect, "100-Continue") << "request " << r.index;
      // ... and the gateway answered it before the body was sent.
      EXPECT_TRUE(r.got_continue) << "request " << r.index;
    } else {
      EXPECT_EQ(r.expect, "") << "request " << r.index;
    }
    sent_ids.insert(r.event_ids.begin(), r.event_ids.end());
  }
  EXPECT_EQ(large, 20) << diagnostics;
  // Every event of every request is in the log.
  std::set<std::string> stored;
  for (const v1::Event& event : gw.AllEvents()) stored.insert(event.id());
  EXPECT_EQ(stored, sent_ids);
  EXPECT_EQ(sent_ids.size(), 20u * 10 + (7 + 7 * 2 + 6 * 3));  // small ones carry 1, 2, 3, 1, ...
}

}  // namespace
}  // namespace pimgate
