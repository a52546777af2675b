// EventFilter: decides, per plugin, whether an event is delivered or skipped (and why).
#ifndef PIMGATE_CORE_DISPATCH_EVENT_FILTER_H_
#define PIMGATE_CORE_DISPATCH_EVENT_FILTER_H_

#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "pimgate/v1/event.pb.h"

namespace pimgate {

// The text form of the value at a dot-separated `path` in `data`, for filter comparison: strings
// as is, true/false, integers without a decimal point, null. A list yields each element. Empty
// when the path does not exist.
std::vector<std::string> ValuesAtPath(const google::protobuf::Struct& data, std::string_view path);

// The attributes of an event that filters other than `data` filters read (views into the
// event, or into its stored bytes: see ScanEventRoute).
struct EventAttributes {
  std::string_view source;
  std::string_view type;
  std::string_view author;
  std::string_view author_type;
  bool stale = false;
};

class EventFilter {
 public:
  enum class Verdict { kDeliver, kSkipFilter, kSkipStale };

  explicit EventFilter(const PluginConfig& plugin);

  // Thread-safe (immutable).
  Verdict Check(const v1::Event& event) const;
  // The same verdict from the attributes alone; only for a filter that does not reads_data().
  Verdict Check(const EventAttributes& event) const;

  // True when Check reads `event.data` (the plugin has `data` filters). Otherwise an event
  // without its data (a header, see core/dispatch/event_wire.h) gets the same verdict.
  bool reads_data() const { return !data_.empty(); }

 private:
  bool MatchesAttributes(const v1::Event& event) const;
  bool MatchesAttributes(const EventAttributes& event) const;

  std::vector<std::string> events_;
  std::vector<std::string> sources_;
  bool skip_stale_;
  StringFilter authors_;
  StringFilter author_types_;
  std::vector<DataFilter> data_;
};

}  // namespace pimgate

#endif  // PIMGATE_CORE_DISPATCH_EVENT_FILTER_H_
