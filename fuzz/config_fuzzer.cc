// Fuzzes the YAML configuration loader (LoadConfigString). Besides not crashing on any document,
// it checks that a secret's value never appears in an error message (they end up in logs), and
// that an accepted configuration has what the rest of pimgate takes for granted.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <string_view>

#include "config/config.h"
#include "fuzz/fuzz_check.h"

namespace {

// The value behind both secret references in the dictionary and the seeds:
// ${PIMGATE_FUZZ_SECRET} and file:/tmp/pimgate-fuzz-secret.
constexpr char kSentinel[] = "s3cr3t-sentinel-7f1c";

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  setenv("PIMGATE_FUZZ_SECRET", kSentinel, 1);
  std::ofstream("/tmp/pimgate-fuzz-secret") << kSentinel << "\n";
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string yaml(reinterpret_cast<const char*>(data), size);
  // Secrets and TLS files are read from the paths the document names: keep the fuzzer away from
  // device and proc files (reading /dev/zero as a secret file would never end). Documents that
  // spell out the sentinel themselves are skipped: only its resolved form is a secret.
  if (yaml.find("/dev") != std::string::npos || yaml.find("/proc") != std::string::npos ||
      yaml.find("/sys") != std::string::npos || yaml.find(kSentinel) != std::string::npos) {
    return -1;
  }
  absl::StatusOr<pimgate::Config> config = pimgate::LoadConfigString(yaml);
  if (!config.ok()) {
    const std::string message(config.status().message());
    FUZZ_CHECK(!message.empty());
    // The sentinel is only ever the resolved value of a secret reference (the document cannot
    // name it otherwise, see below), so it must never be echoed.
    FUZZ_CHECK(message.find(kSentinel) == std::string::npos, message);
    return 0;
  }
  FUZZ_CHECK(!config->sources.empty());
  std::set<std::string> names, paths;
  for (const pimgate::SourceConfig& source : config->sources) {
    FUZZ_CHECK(!source.name.empty());
    FUZZ_CHECK(!source.secret.value.empty());
    FUZZ_CHECK(source.secret.Describe().find(kSentinel) == std::string::npos);
    FUZZ_CHECK(!source.path.empty() && source.path[0] == '/', source.path);
    FUZZ_CHECK(names.insert(source.name).second, "duplicate source name " + source.name);
    FUZZ_CHECK(paths.insert(source.path).second, "duplicate source path " + source.path);
  }
  FUZZ_CHECK(config->gateway.body_limit > 0);
  FUZZ_CHECK(config->gateway.header_limit > 0);
  FUZZ_CHECK(config->gateway.max_events_per_request > 0);
  FUZZ_CHECK(config->gateway.max_connections > 0);
  FUZZ_CHECK(!config->store.path.empty());
  return 0;
}
