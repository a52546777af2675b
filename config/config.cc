// Loads pimgate's YAML configuration into the structs of config.h, rejecting anything it does not
// understand so that a typo fails at startup instead of silently falling back to a default. This
// file reads the document and its top-level keys; each section has its own *_section.cc, written
// with the toolkit of yaml_reader.h.
#include "config/config.h"

#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "config/sections.h"
#include "config/yaml_reader.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace pimgate {
namespace config_internal {
namespace {

// ---- The document -----------------------------------------------------------------------------

absl::Status SyntaxError(const YAML::Exception& e) {
  return absl::InvalidArgumentError(
      absl::StrCat("line ", e.mark.line < 0 ? 1 : e.mark.line + 1, ": YAML syntax error: ", e.msg));
}

// Finds where the documents of a stream start (the mark of each document's root node) without
// building them. Used instead of YAML::LoadAll, which never returns on a document whose root
// starts with ',' (yaml-cpp 0.7 leaves that token unconsumed and hands out empty documents
// forever, growing memory; found by fuzz/config_fuzzer): the caller stops after two documents.
class DocumentRoots : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> roots;

  void OnDocumentStart(const YAML::Mark&) override { in_document_ = true; }
  void OnDocumentEnd() override { in_document_ = false; }
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { Node(mark); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { Node(mark); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                const std::string&) override {
    Node(mark);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    Node(mark);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    Node(mark);
  }
  void OnMapEnd() override {}

 private:
  void Node(const YAML::Mark& mark) {
    if (in_document_) roots.push_back(mark);
    in_document_ = false;
  }
  bool in_document_ = false;
};

absl::StatusOr<Config> ParseDocument(const std::string& yaml, const LoadOptions& options) {
  YAML::Node root;
  try {
    std::istringstream in(yaml);
    YAML::Parser parser(in);
    DocumentRoots documents;
    for (int i = 0; i < 2 && parser.HandleNextDocument(documents); ++i) {
    }
    if (documents.roots.size() > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", documents.roots[1].line < 0 ? 1 : documents.roots[1].line + 1,
                       ": <document>: the config must be a single YAML document"));
    }
    if (!documents.roots.empty()) root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    return SyntaxError(e);
  }
  if (!root.IsMap()) {
    return Invalid({root, "<document>", LineOf(root)},
                   root.IsNull() ? "empty; store and sources are required"
                                 : absl::StrCat("must be a mapping, ", Got(root)));
  }
  // The top-level sections. A new section is one more line here and a reader like Log().
  Config config;
  std::vector<PluginLines> plugin_lines;
  std::optional<int> runtime_dir_line;
  std::optional<int> console_listen_line;
  std::optional<int> console_line;
  absl::Status status = ReadMapping(
      {root, "", LineOf(root)},
      {
          {"gateway", Gateway(config.gateway)},
          {"store", Store(config.store), true},
          {"sources", Sources(config.sources), true},
          {"log", Log(config.log)},
          {"metrics", Metrics(config.metrics)},
          {"runtime", Runtime(config.runtime, runtime_dir_line)},
          {"plugins", Plugins(config.plugins, plugin_lines)},
          {"admin", Admin(config.admin)},
          {"console", Tracked(Console(config.console, console_listen_line), console_line)},
      });
  if (!status.ok()) return status;
  if (!runtime_dir_line.has_value()) {
    config.runtime.runtime_dir = DefaultRuntimeDir(config.store.path);
  }
  if (status = CheckPlugins(config, plugin_lines, runtime_dir_line, options); !status.ok()) {
    return status;
  }
  if (status = CheckConsole(config, root, console_listen_line, console_line.value_or(1));
      !status.ok()) {
    return status;
  }
  return config;
}

}  // namespace
}  // namespace config_internal

absl::StatusOr<Config> LoadConfigString(const std::string& yaml, const LoadOptions& options) {
  // ParseDocument converts parse errors; this catches anything else yaml-cpp might throw so that
  // no exception crosses the module boundary.
  try {
    return config_internal::ParseDocument(yaml, options);
  } catch (const YAML::Exception& e) {
    return config_internal::SyntaxError(e);
  }
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path, const LoadOptions& options) {
  absl::StatusOr<std::string> yaml = config_internal::ReadWholeFile(path);
  if (!yaml.ok()) {
    return absl::Status(yaml.status().code(),
                        absl::StrCat("cannot read config file ", config_internal::Quote(path), ": ",
                                     yaml.status().message()));
  }
  return LoadConfigString(*yaml, options);
}

const char* SourceKindName(SourceKind kind) {
  switch (kind) {
    case SourceKind::kEventsApi:
      return "events_api";
    case SourceKind::kEventPlatform:
      return "event_platform";
  }
  return "unknown";
}

}  // namespace pimgate
