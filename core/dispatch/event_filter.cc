// Plugin filters: type globs, sources, authors, author types, data fields, staleness.
#include "core/dispatch/event_filter.h"

#include <algorithm>
#include <charconv>

#include "common/glob.h"

namespace pimgate {
namespace {

bool Contains(const std::vector<std::string>& list, std::string_view value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

// Include/exclude over one attribute: an empty include list admits everything.
bool Admits(const StringFilter& filter, std::string_view value) {
  if (!filter.include.empty() && !Contains(filter.include, value)) return false;
  return !Contains(filter.exclude, value);
}

void AppendText(const google::protobuf::Value& value, std::vector<std::string>& out) {
  switch (value.kind_case()) {
    case google::protobuf::Value::kStringValue:
      out.push_back(value.string_value());
      break;
    case google::protobuf::Value::kBoolValue:
      out.push_back(value.bool_value() ? "true" : "false");
      break;
    case google::protobuf::Value::kNullValue:
      out.push_back("null");
      break;
    case google::protobuf::Value::kNumberValue: {
      // Shortest text that reads back as the same double: 0.1 -> "0.1", 12.0 -> "12", as a
      // user writes the value in the config.
      const double d = value.number_value();
      char buf[64];
      auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), d);
      out.emplace_back(buf, ec == std::errc() ? end : buf);
      break;
    }
    case google::protobuf::Value::kListValue:
      for (const google::protobuf::Value& element : value.list_value().values()) {
        if (element.kind_case() != google::protobuf::Value::kListValue) AppendText(element, out);
      }
      break;
    default:  // objects have no text form
      break;
  }
}

}  // namespace

std::vector<std::string> ValuesAtPath(const google::protobuf::Struct& data, std::string_view path) {
  std::vector<std::string> out;
  const google::protobuf::Struct* node = &data;
  while (true) {
    const std::size_t dot = path.find('.');
    const std::string key(path.substr(0, dot));
    auto it = node->fields().find(key);
    if (it == node->fields().end()) return out;
    if (dot == std::string_view::npos) {
      AppendText(it->second, out);
      return out;
    }
    if (it->second.kind_case() != google::protobuf::Value::kStructValue) return out;
    node = &it->second.struct_value();
    path.remove_prefix(dot + 1);
  }
}

EventFilter::EventFilter(const PluginConfig& plugin)
    : events_(plugin.events),
      sources_(plugin.sources),
      skip_stale_(plugin.skip_stale),
      authors_(plugin.authors),
      author_types_(plugin.author_types),
      data_(plugin.data) {}

bool EventFilter::MatchesAttributes(const EventAttributes& event) const {
  if (!sources_.empty() && !Contains(sources_, event.source)) return false;
  if (!std::any_of(events_.begin(), events_.end(),
                   [&](const std::string& glob) { return GlobMatch(glob, event.type); })) {
    return false;
  }
  return Admits(authors_, event.author) && Admits(author_types_, event.author_type);
}

bool EventFilter::MatchesAttributes(const v1::Event& event) const {
  if (!MatchesAttributes(EventAttributes{.source = event.source(),
                                         .type = event.type(),
                                         .author = event.author(),
                                         .author_type = event.author_type(),
                                         .stale = event.stale()})) {
    return false;
  }
  for (const DataFilter& filter : data_) {
    const std::vector<std::string> values = ValuesAtPath(event.data(), filter.path);
    const bool any = std::any_of(values.begin(), values.end(),
                                 [&](const std::string& v) { return Contains(filter.values, v); });
    if (any == filter.negate) return false;
  }
  return true;
}

EventFilter::Verdict EventFilter::Check(const v1::Event& event) const {
  if (!MatchesAttributes(event)) return Verdict::kSkipFilter;
  if (skip_stale_ && event.stale()) return Verdict::kSkipStale;
  return Verdict::kDeliver;
}

EventFilter::Verdict EventFilter::Check(const EventAttributes& event) const {
  if (!MatchesAttributes(event)) return Verdict::kSkipFilter;
  if (skip_stale_ && event.stale) return Verdict::kSkipStale;
  return Verdict::kDeliver;
}

}  // namespace pimgate
