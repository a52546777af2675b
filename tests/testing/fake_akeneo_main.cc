// pimgate_fake_akeneo: the fake PIM (REST API and OAuth tokens) and the fake Event Platform
// (management API and delivery engine) of the tests, as one standalone program, for what is not
// a C++ test: scripts/docs-check runs docs/migrate-to-event-platform.md's `pimgatectl platform`
// commands against it. Built in tests/, never installed.
//
// Both serve HTTPS on 127.0.0.1 with ephemeral ports and self-signed certificates. Once both
// serve, the program writes --ready-file (atomically: a temporary file renamed) as one JSON
// object: {"pim_url", "pim_ca_file", "platform_api_url", "platform_ca_file", "pid"}. It serves
// until SIGINT or SIGTERM, then stops both and exits 0 (their temporary files removed).
//
// The PIM accepts the OAuth credentials given on the command line (so a configuration that a
// reader writes, with its own secret files, can be pointed at it unchanged); the Event Platform
// accepts that PIM's tokens, as Akeneo's does.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/ascii.h"
#include "nlohmann/json.hpp"
#include "tests/testing/fake_event_platform.h"
#include "tests/testing/fake_pim.h"

namespace {

constexpr char kUsage[] =
    "usage: pimgate_fake_akeneo --ready-file PATH [--client-id ID] [--client-secret SECRET]\n"
    "         [--username USER] [--password PASSWORD | --password-file PATH]\n"
    "         [--destination-ca-file PATH]\n"
    "  Serves a fake PIM and a fake Event Platform on 127.0.0.1 (ephemeral ports) until SIGINT\n"
    "  or SIGTERM; writes their URLs and certificates to --ready-file as JSON once they serve.\n"
    "  --password-file: the password is the file's text without trailing whitespace (as\n"
    "  pimgate reads file: secrets).\n"
    "  --destination-ca-file: the CA the platform trusts when it delivers events.\n";

// A secret file as pimgate reads `file:` secrets: its text without trailing whitespace.
bool ReadSecretFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream text;
  text << in.rdbuf();
  *out = text.str();
  absl::StripTrailingAsciiWhitespace(out);
  return true;
}

int Fail(const std::string& message) {
  std::cerr << "pimgate_fake_akeneo: " << message << "\n" << kUsage;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  pimgate::testing::FakePim::Options pim_options;
  std::string ready_file;
  std::string destination_ca_file;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (i + 1 >= argc) return Fail(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--ready-file") {
      ready_file = value;
    } else if (flag == "--client-id") {
      pim_options.client_id = value;
    } else if (flag == "--client-secret") {
      pim_options.secret = value;
    } else if (flag == "--username") {
      pim_options.username = value;
    } else if (flag == "--password") {
      pim_options.password = value;
    } else if (flag == "--password-file") {
      if (!ReadSecretFile(value, &pim_options.password)) {
        return Fail("cannot read --password-file " + value);
      }
    } else if (flag == "--destination-ca-file") {
      destination_ca_file = value;
    } else {
      return Fail("unknown option " + flag);
    }
  }
  if (ready_file.empty()) return Fail("--ready-file is required");

  // Blocked before the servers' threads start, so that they inherit the mask and sigwait below
  // is the only receiver.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto pim = std::make_unique<pimgate::testing::FakePim>(pim_options);
  pimgate::testing::FakeEventPlatform::Options platform_options;
  platform_options.pim = pim.get();
  platform_options.destination_ca_file = destination_ca_file;
  auto platform = std::make_unique<pimgate::testing::FakeEventPlatform>(platform_options);

  nlohmann::json ready = {
      {"pim_url", pim->base_url()},
      {"pim_ca_file", pim->cert_file()},
      {"platform_api_url", platform->api_url()},
      {"platform_ca_file", platform->cert_file()},
      {"pid", static_cast<int>(getpid())},
  };
  const std::string temporary = ready_file + ".tmp";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << ready.dump() << "\n";
    if (!out.flush()) return Fail("cannot write " + temporary);
  }
  if (std::rename(temporary.c_str(), ready_file.c_str()) != 0) {
    return Fail("cannot rename " + temporary + " to " + ready_file);
  }
  std::cout << "pimgate_fake_akeneo: PIM " << pim->base_url() << ", Event Platform "
            << platform->api_url() << "; SIGINT or SIGTERM stops" << std::endl;

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  platform.reset();  // it holds a pointer to the PIM
  pim.reset();
  return 0;
}
