// docs/configuration.md against the loader (config/*.cc): the page's full example is accepted by
// `pimgate --check-config`, it uses every key the loader reads, and every key path it uses is a
// row of the page's reference tables (and every row is a key of the example).
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "config/config.h"
#include "gtest/gtest.h"
#include "tests/testing/test_env.h"
#include "yaml-cpp/yaml.h"

namespace pimgate::testing {
namespace {

constexpr char kMarker[] = "<!-- configuration-doc-test: full example -->";
// Mappings whose keys are the user's own names, not config keys.
const std::set<std::string> kFreeFormMappings = {"plugins[].env"};

std::string ReadSource(const std::string& relative) {
  std::ifstream in(std::string(PIMGATE_SOURCE_DIR) + "/" + relative);
  EXPECT_TRUE(in.good()) << "cannot read " << relative;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string ConfigurationDoc() { return ReadSource("docs/configuration.md"); }

// The ```yaml block that follows the marker.
std::string FullExample(const std::string& doc) {
  const size_t marker = doc.find(kMarker);
  if (marker == std::string::npos) {
    ADD_FAILURE() << "docs/configuration.md has no " << kMarker;
    return "";
  }
  const size_t open = doc.find("```yaml\n", marker);
  const size_t close = doc.find("\n```", open);
  if (open == std::string::npos || close == std::string::npos) {
    ADD_FAILURE() << "no ```yaml block after " << kMarker;
    return "";
  }
  const size_t start = open + std::string("```yaml\n").size();
  return doc.substr(start, close - start + 1);
}

// The keys of one ReadMapping call in config/: one mapping of the configuration.
struct KeyGroup {
  std::string file;      // "config/gateway_section.cc", for messages
  std::string function;  // the reader it is in, for messages
  int line = 0;
  std::set<std::string> keys;
};

// Index just past the parenthesis that closes the one at `open`, skipping string literals.
size_t MatchingParen(const std::string& text, size_t open) {
  int depth = 0;
  for (size_t i = open; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '"' || c == '\'') {
      for (++i; i < text.size() && text[i] != c; ++i) {
        if (text[i] == '\\') ++i;
      }
    } else if (c == '(') {
      ++depth;
    } else if (c == ')' && --depth == 0) {
      return i + 1;
    }
  }
  return std::string::npos;
}

std::vector<KeyGroup> LoaderKeyGroups(const std::string& source) {
  // {"key", Reader(...)}; not the choices of OneOf({"text", "json"}, ...).
  static const std::regex kKey(R"re(\{\s*"([a-z_][a-z0-9_]*)"\s*,\s*(?![A-Z]\w*::k)[^"\s])re");
  static const std::regex kFunction(
      R"re(\n(?:ValueReader|absl::Status|absl::StatusOr<\w+>) (\w+)\()re");
  std::vector<KeyGroup> groups;
  size_t at = 0;
  while ((at = source.find("ReadMapping(", at)) != std::string::npos) {
    const size_t open = at + std::string("ReadMapping").size();
    at = open;
    if (source.compare(open + 1, 11, "const Field") == 0) continue;  // the definition
    const size_t close = MatchingParen(source, open);
    if (close == std::string::npos) break;
    KeyGroup group;
    group.line = 1 + static_cast<int>(std::count(source.begin(), source.begin() + open, '\n'));
    const std::string before = source.substr(0, open);
    for (std::sregex_iterator it(before.begin(), before.end(), kFunction), end; it != end; ++it) {
      group.function = (*it)[1];
    }
    const std::string call = source.substr(open, close - open);
    for (std::sregex_iterator it(call.begin(), call.end(), kKey), end; it != end; ++it) {
      group.keys.insert((*it)[1]);
    }
    if (!group.keys.empty()) groups.push_back(std::move(group));
  }
  return groups;
}

// What the example holds: each mapping's path and keys, and each key path
// ("sources[].rest.base_url") with whether its value is a mapping or a list of mappings.
struct ExampleKeys {
  std::vector<std::pair<std::string, std::set<std::string>>> mappings;
  std::map<std::string, bool> paths;  // path -> is a container
};

void Walk(const YAML::Node& node, const std::string& path, ExampleKeys& out) {
  if (node.IsSequence()) {
    for (const YAML::Node& item : node) {
      if (item.IsMap()) Walk(item, path + "[]", out);
    }
    return;
  }
  if (!node.IsMap()) return;
  std::set<std::string> keys;
  for (const auto& entry : node) {
    const std::string key = entry.first.as<std::string>();
    keys.insert(key);
    const std::string child = path.empty() ? key : absl::StrCat(path, ".", key);
    const YAML::Node value = entry.second;
    bool container = value.IsMap();
    if (value.IsSequence()) {
      for (const YAML::Node& item : value) container |= item.IsMap();
    }
    out.paths[child] = container;
    if (!kFreeFormMappings.contains(child)) Walk(value, child, out);
  }
  out.mappings.emplace_back(path, std::move(keys));
}

ExampleKeys ExampleKeysOf(const std::string& yaml) {
  ExampleKeys keys;
  Walk(YAML::Load(yaml), "", keys);
  return keys;
}

// The `store:` variants shown beside the full example (keys that exclude each other or another
// backend's, such as store.jetstream): the ```yaml block after each kStoreMarker.
constexpr char kStoreMarker[] = "<!-- configuration-doc-test: store example -->";

std::vector<std::string> StoreExamples(const std::string& doc) {
  std::vector<std::string> examples;
  for (size_t marker = doc.find(kStoreMarker); marker != std::string::npos;
       marker = doc.find(kStoreMarker, marker + 1)) {
    const size_t open = doc.find("```yaml\n", marker);
    const size_t close = doc.find("\n```", open);
    if (open == std::string::npos || close == std::string::npos) {
      ADD_FAILURE() << "no ```yaml block after a " << kStoreMarker;
      break;
    }
    const size_t start = open + std::string("```yaml\n").size();
    examples.push_back(doc.substr(start, close - start + 1));
  }
  return examples;
}

// The keys of the full example and of the store examples together.
ExampleKeys AllExampleKeys(const std::string& doc) {
  ExampleKeys keys = ExampleKeysOf(FullExample(doc));
  for (const std::string& example : StoreExamples(doc)) Walk(YAML::Load(example), "", keys);
  return keys;
}

// Runs `command`, returning its exit status and its stdout and stderr.
int RunShell(const std::string& command, std::string* output) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buffer[4096];
  size_t n = 0;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output->append(buffer, n);
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(ConfigurationDocTest, FullExampleIsAcceptedByCheckConfig) {
  const std::string example = FullExample(ConfigurationDoc());
  ASSERT_FALSE(example.empty());
  // The example's absolute paths, moved under a temp dir where the files it names are created.
  TempDir dir;
  std::string yaml =
      absl::StrReplaceAll(example, {{"/etc/pimgate/", dir.path() + "/etc/pimgate/"},
                                    {"/var/lib/pimgate", dir.path() + "/var/lib/pimgate"},
                                    {"/opt/handlers/", dir.path() + "/opt/handlers/"}});
  // --check-config checks that each plugin's script exists: the example's handlers are made.
  static const std::regex kHandler(R"((/\S*?/opt/handlers/[^\s,\]]+))");
  for (std::sregex_iterator it(yaml.begin(), yaml.end(), kHandler), end; it != end; ++it) {
    const std::string path = (*it)[1];
    RunCommand("mkdir -p \"$(dirname '" + path + "')\"");
    std::ofstream(path) << "print('a handler')\n";
  }
  const CertFiles cert = MakeSelfSignedCert(dir.path());
  static const std::regex kFile(R"((/\S*?/etc/pimgate/[^\s,\]]+))");
  for (std::sregex_iterator it(yaml.begin(), yaml.end(), kFile), end; it != end; ++it) {
    const std::string path = (*it)[1];
    RunCommand("mkdir -p \"$(dirname '" + path + "')\"");
    if (path.ends_with(".pem") || path.ends_with(".key")) {
      RunCommand(absl::StrCat("cp ",
                              path.ends_with(".key") || path.find("privkey") != std::string::npos
                                  ? cert.key_file
                                  : cert.cert_file,
                              " '", path, "'"));
    } else {
      std::ofstream(path) << "secret-for-" << path.substr(path.rfind('/') + 1) << "\n";
    }
  }
  const std::string config = dir.File("pimgate.yaml");
  std::ofstream(config) << yaml;
  // ${NAME} references get a value in the child's environment.
  static const std::regex kEnv(R"(\$\{([A-Za-z_][A-Za-z0-9_]*)\})");
  std::string env;
  for (std::sregex_iterator it(yaml.begin(), yaml.end(), kEnv), end; it != end; ++it) {
    absl::StrAppend(&env, (*it)[1].str(), "=value-of-", (*it)[1].str(), " ");
  }
  std::string output;
  const int status =
      RunShell(absl::StrCat("env ", env, PIMGATE_BINARY, " --check-config ", config), &output);
  EXPECT_EQ(status, 0) << output << "\n--- the example as checked:\n" << yaml;
  EXPECT_NE(output.find(": OK ("), std::string::npos) << output;
}

// Each store example, with a source, is a valid configuration (the files it names made
// readable, its ${NAME} references set). Loaded, not --check-config'd: that would connect to
// the example's NATS servers.
TEST(ConfigurationDocTest, StoreExamplesAreAccepted) {
  const std::vector<std::string> examples = StoreExamples(ConfigurationDoc());
  ASSERT_GE(examples.size(), 2u);
  for (const std::string& example : examples) {
    TempDir dir;
    const std::string yaml = absl::StrCat(
        absl::StrReplaceAll(example, {{"/etc/pimgate/", dir.path() + "/etc/pimgate/"},
                                      {"/var/lib/pimgate", dir.path() + "/var/lib/pimgate"}}),
        "sources: [{name: a, kind: events_api, path: /a, secret: s}]\n");
    static const std::regex kFile(R"((/\S*?/etc/pimgate/[^\s,\]]+))");
    for (std::sregex_iterator it(yaml.begin(), yaml.end(), kFile), end; it != end; ++it) {
      const std::string path = (*it)[1];
      RunCommand("mkdir -p \"$(dirname '" + path + "')\"");
      std::ofstream(path) << "contents of " << path << "\n";
    }
    static const std::regex kEnv(R"(\$\{([A-Za-z_][A-Za-z0-9_]*)\})");
    std::vector<std::string> names;
    for (std::sregex_iterator it(yaml.begin(), yaml.end(), kEnv), end; it != end; ++it) {
      names.push_back((*it)[1]);
      ::setenv(names.back().c_str(), "value", 1);
    }
    absl::StatusOr<Config> config = LoadConfigString(yaml);
    for (const std::string& name : names) ::unsetenv(name.c_str());
    EXPECT_TRUE(config.ok()) << config.status() << "\n--- the example as loaded:\n" << yaml;
  }
}

// The key groups of every source file of the loader (config/*.cc: one file per section).
std::vector<KeyGroup> LoaderKeyGroups() {
  std::vector<std::string> files;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::string(PIMGATE_SOURCE_DIR) + "/config")) {
    if (entry.path().extension() == ".cc")
      files.push_back("config/" + entry.path().filename().string());
  }
  std::sort(files.begin(), files.end());
  std::vector<KeyGroup> groups;
  for (const std::string& file : files) {
    for (KeyGroup& group : LoaderKeyGroups(ReadSource(file))) {
      group.file = file;
      groups.push_back(std::move(group));
    }
  }
  return groups;
}

TEST(ConfigurationDocTest, FullExampleUsesEveryKeyTheLoaderReads) {
  const std::vector<KeyGroup> groups = LoaderKeyGroups();
  // The parser of config/*.cc still finds the sections it always had.
  ASSERT_GE(groups.size(), 15u);
  const ExampleKeys example = AllExampleKeys(ConfigurationDoc());
  for (const KeyGroup& group : groups) {
    // The example's mappings that belong to this reader: those whose keys are all its keys.
    std::set<std::string> used;
    for (const auto& [path, keys] : example.mappings) {
      if (std::includes(group.keys.begin(), group.keys.end(), keys.begin(), keys.end())) {
        used.insert(keys.begin(), keys.end());
      }
    }
    std::vector<std::string> missing;
    for (const std::string& key : group.keys) {
      if (!used.contains(key)) missing.push_back(key);
    }
    EXPECT_TRUE(missing.empty())
        << group.file << ":" << group.line << " (" << group.function << ") reads "
        << absl::StrJoin(missing, ", ")
        << ", missing from the full example in docs/configuration.md (add them there and to the "
           "reference tables). The reader's keys: "
        << absl::StrJoin(group.keys, ", ");
  }
}

TEST(ConfigurationDocTest, EveryKeyOfTheExampleIsInTheReference) {
  const std::string doc = ConfigurationDoc();
  const ExampleKeys example = AllExampleKeys(doc);
  ASSERT_GT(example.paths.size(), 100u);
  for (const auto& [path, container] : example.paths) {
    if (container || path.find('.') == std::string::npos) {
      // A section or sub-mapping: its name in backquotes, alone or before a key.
      EXPECT_TRUE(doc.find("`" + path + "`") != std::string::npos ||
                  doc.find("`" + path + ".") != std::string::npos)
          << "docs/configuration.md does not document " << path;
    } else {
      EXPECT_NE(doc.find("| `" + path + "` |"), std::string::npos)
          << "docs/configuration.md has no table row for " << path;
    }
  }
}

TEST(ConfigurationDocTest, EveryReferenceRowIsAKeyOfTheExample) {
  const std::string doc = ConfigurationDoc();
  const ExampleKeys example = AllExampleKeys(doc);
  static const std::regex kRow(R"(\n\| `([a-z_]+(?:\[\])?(?:\.[a-z_]+(?:\[\])?)+)` \|)");
  int rows = 0;
  for (std::sregex_iterator it(doc.begin(), doc.end(), kRow), end; it != end; ++it) {
    ++rows;
    const std::string path = (*it)[1];
    EXPECT_TRUE(example.paths.contains(path))
        << "docs/configuration.md documents " << path
        << ", which its full example does not use (a key the loader no longer reads?)";
  }
  EXPECT_GE(rows, 80);
}

}  // namespace
}  // namespace pimgate::testing
