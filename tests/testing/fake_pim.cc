// FakePim: Beast HTTP(S) server on its own io thread, answering like Akeneo's REST API (token
// endpoint, products-uuid, products and product-models lists and single GETs, in the server's
// time zone) with injectable faults. One
// coroutine per connection; the catalogue, tokens and observations sit behind one mutex so tests
// can change and read them from any thread.
#include "tests/testing/fake_pim.h"

// Boost.Asio 1.74's awaitable.hpp uses std::exchange without including <utility>.
// clang-format off
#include <utility>
// clang-format on

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <functional>
#include <future>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/json.h"
#include "common/logging.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/testing/test_env.h"

namespace pimgate::testing {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using google::protobuf::Struct;
using google::protobuf::Value;

constexpr char kTokenPath[] = "/api/oauth/v1/token";
constexpr char kProductsPath[] = "/api/rest/v1/products-uuid";
constexpr char kProductsByIdentifierPath[] = "/api/rest/v1/products";
constexpr char kProductModelsPath[] = "/api/rest/v1/product-models";
// Akeneo's defaults and limits for list endpoints.
constexpr int kDefaultLimit = 10;
constexpr int kMaxLimit = 100;
// Largest request body the fake reads (token requests are tiny).
constexpr std::size_t kMaxRequestBody = 1024 * 1024;

using Response = http::response<http::string_body>;

// PHP's DATE_ATOM in the server's zone: "2026-12-04T10:00:00-05:00".
std::string AkeneoTimeIn(int64_t time_us, const absl::TimeZone& zone) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%S%Ez", absl::FromUnixMicros(time_us), zone);
}

// Akeneo compares `updated` at one-second precision (MySQL DATETIME).
int64_t FloorSeconds(int64_t time_us) {
  return time_us >= 0 ? time_us / 1'000'000 : -((-time_us + 999'999) / 1'000'000);
}

// "YYYY-MM-DD hh:mm:ss", the only format the REST API takes, read as wall-clock time in the
// server's zone (Akeneo: DateTime::createFromFormat('Y-m-d H:i:s', $value) with PHP's default
// zone; anything else, RFC 3339 included, is refused). A time the zone repeats is read as the
// later instant, one it skips as PHP does (moved forward by the gap). In seconds.
std::optional<int64_t> ParseFilterTime(const std::string& text, const absl::TimeZone& zone) {
  if (text.size() != 19 || text[10] != ' ') return std::nullopt;
  std::string iso = text;
  iso[10] = 'T';
  absl::CivilSecond wall;
  if (!absl::ParseCivilTime(iso, &wall) || absl::FormatCivilTime(wall) != iso) {
    return std::nullopt;
  }
  const absl::TimeZone::TimeInfo readings = zone.At(wall);
  return FloorSeconds(absl::ToUnixMicros(std::max(readings.pre, readings.post)));
}

std::string PercentDecode(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    int high = 0;
    int low = 0;
    const auto hex = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    if (text[i] == '%' && i + 2 < text.size() && (high = hex(text[i + 1])) >= 0 &&
        (low = hex(text[i + 2])) >= 0) {
      out.push_back(static_cast<char>(high * 16 + low));
      i += 2;
    } else if (text[i] == '+') {
      out.push_back(' ');  // PHP decodes + in a query as a space
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

std::string Encode(absl::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (absl::ascii_isalnum(byte) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(c);
    } else {
      absl::StrAppend(&out, "%", std::string(1, kHex[byte >> 4]), std::string(1, kHex[byte & 15]));
    }
  }
  return out;
}

// Query parameters in order; later duplicates win on lookup.
std::multimap<std::string, std::string> ParseQuery(absl::string_view query) {
  std::multimap<std::string, std::string> params;
  for (absl::string_view pair : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    const size_t equals = pair.find('=');
    if (equals == absl::string_view::npos) {
      params.emplace(PercentDecode(pair), "");
    } else {
      params.emplace(PercentDecode(pair.substr(0, equals)), PercentDecode(pair.substr(equals + 1)));
    }
  }
  return params;
}

std::optional<std::string> Param(const std::multimap<std::string, std::string>& params,
                                 const std::string& name) {
  auto range = params.equal_range(name);
  if (range.first == range.second) return std::nullopt;
  return std::prev(range.second)->second;
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(message, &json);
  return json;
}

Value StringValue(const std::string& text) {
  Value value;
  value.set_string_value(text);
  return value;
}

Value NullValue() {
  Value value;
  value.set_null_value(google::protobuf::NULL_VALUE);
  return value;
}

Value EmptyList() {
  Value value;
  value.mutable_list_value();
  return value;
}

Value EmptyObject() {
  Value value;
  value.mutable_struct_value();
  return value;
}

Value Href(const std::string& href) {
  Value link;
  (*link.mutable_struct_value()->mutable_fields())["href"] = StringValue(href);
  return link;
}

struct Resource {
  std::string key;         // uuid or code
  std::string identifier;  // products only
  int64_t created_us = 0;
  int64_t updated_us = 0;
  Struct extra;  // fields_json, merged over the defaults
};

// An answer with Akeneo's error body {"code":..,"message":".."}.
Response ErrorResponse(int status, const std::string& message) {
  Response response{static_cast<http::status>(status), 11};
  response.set(http::field::content_type, "application/json");
  response.body() = JsonDump(Json{{"code", status}, {"message", message}});
  return response;
}

Response JsonResponse(std::string body) {
  Response response{http::status::ok, 11};
  response.set(http::field::content_type, "application/json");
  response.body() = std::move(body);
  return response;
}

std::string RandomToken() {
  thread_local std::mt19937_64 random(std::random_device{}());
  return absl::StrCat(absl::Hex(random(), absl::kZeroPad16), absl::Hex(random(), absl::kZeroPad16));
}

}  // namespace

class FakePim::Impl {
 public:
  explicit Impl(Options options) : options_(std::move(options)) {
    if (options_.tls) {
      cert_ = MakeSelfSignedCert(dir_.path());
      ssl_context_.use_certificate_chain_file(cert_.cert_file);
      ssl_context_.use_private_key_file(cert_.key_file, ssl::context::pem);
    }
    std::promise<void> opened;
    thread_ = std::thread([this] { ioc_.run(); });
    net::post(ioc_, [this, &opened] {
      Listen(0);
      opened.set_value();
    });
    opened.get_future().wait();
  }

  ~Impl() {
    RunOnIoThread([this] {
      shutting_down_ = true;
      CloseEverything();
    });
    work_.reset();
    thread_.join();
  }

  uint16_t port() const { return port_; }
  std::string base_url() const {
    return absl::StrCat(options_.tls ? "https" : "http", "://127.0.0.1:", port_.load());
  }
  const std::string& cert_file() const { return cert_.cert_file; }
  const absl::TimeZone& time_zone() const { return options_.time_zone; }
  std::string AkeneoTime(int64_t time_us) const {
    return AkeneoTimeIn(time_us, options_.time_zone);
  }
  void SetLinkOrigin(const std::string& origin) {
    absl::MutexLock lock(&mu_);
    link_origin_ = origin;
  }

  // ---- Catalogue ----
  void PutResource(bool product, const std::string& key, int64_t updated_us,
                   const std::string& fields_json, const std::string& identifier) {
    Struct extra;
    const auto status = google::protobuf::util::JsonStringToMessage(fields_json, &extra);
    if (!status.ok()) {
      ADD_FAILURE() << "FakePim: fields_json is not a JSON object: " << fields_json;
      return;
    }
    absl::MutexLock lock(&mu_);
    auto& catalogue = product ? products_ : product_models_;
    auto [it, inserted] = catalogue.try_emplace(key);
    Resource& resource = it->second;
    resource.key = key;
    if (inserted) resource.created_us = updated_us;
    resource.updated_us = updated_us;
    resource.identifier = identifier.empty() ? absl::StrCat("sku-", key) : identifier;
    resource.extra = std::move(extra);
  }
  void DeleteResource(bool product, const std::string& key) {
    absl::MutexLock lock(&mu_);
    (product ? products_ : product_models_).erase(key);
  }

  // ---- Resources served by code (families, categories, records, ...) ----
  // Where Akeneo serves each kind: the collection, and for a kind whose codes are unique within
  // a parent, the segment after the parent's code.
  struct CodedRoute {
    absl::string_view kind;
    absl::string_view collection;  // below /api/rest/v1/
    absl::string_view nested;      // empty: /collection/{code}
    absl::string_view label;       // for the 404 message
  };
  static constexpr CodedRoute kCodedRoutes[] = {
      {"family", "families", "", "Family"},
      {"category", "categories", "", "Category"},
      {"attribute", "attributes", "", "Attribute"},
      {"attribute_group", "attribute-groups", "", "Attribute group"},
      {"attribute_option", "attributes", "options", "Attribute option"},
      {"reference_entity_record", "reference-entities", "records", "Record"},
      {"asset", "asset-families", "assets", "Asset"},
  };
  static const CodedRoute* CodedRouteOf(absl::string_view kind) {
    for (const CodedRoute& route : kCodedRoutes) {
      if (route.kind == kind) return &route;
    }
    return nullptr;
  }

  void PutCodedResource(const std::string& kind, const std::string& id,
                        const std::string& fields_json) {
    const CodedRoute* route = CodedRouteOf(kind);
    Struct resource;
    if (route == nullptr) {
      ADD_FAILURE() << "FakePim: no coded kind " << kind;
      return;
    }
    if (!google::protobuf::util::JsonStringToMessage(fields_json, &resource).ok()) {
      ADD_FAILURE() << "FakePim: fields_json is not a JSON object: " << fields_json;
      return;
    }
    const std::size_t slash = route->nested.empty() ? std::string::npos : id.find('/');
    if (!route->nested.empty() && slash == std::string::npos) {
      ADD_FAILURE() << "FakePim: a " << kind << " id is \"parent/code\", not " << id;
      return;
    }
    auto& fields = *resource.mutable_fields();
    fields["code"].set_string_value(slash == std::string::npos ? id : id.substr(slash + 1));
    if (kind == "attribute_option") fields["attribute"].set_string_value(id.substr(0, slash));
    absl::MutexLock lock(&mu_);
    coded_[{kind, id}] = std::move(resource);
  }
  void DeleteCodedResource(const std::string& kind, const std::string& id) {
    absl::MutexLock lock(&mu_);
    coded_.erase({kind, id});
    coded_updated_.erase({kind, id});
  }

  // The kinds whose lists are served (kListedRoutes), with an `updated` the fake writes.
  void PutListedResource(const std::string& kind, const std::string& code, int64_t updated_us,
                         const std::string& fields_json) {
    const NestedList* nested = NestedListOf(kind);
    if (ListedPathOf(kind).empty() && nested == nullptr) {
      ADD_FAILURE() << "FakePim: no list is served for kind " << kind;
      return;
    }
    if (nested != nullptr) {
      const std::size_t slash = code.find('/');
      if (slash == std::string::npos || slash == 0 || slash + 1 == code.size()) {
        ADD_FAILURE() << "FakePim: a " << kind << " id is \"parent/code\", not " << code;
        return;
      }
      // Its reference entity or asset family exists from now on, if it did not already.
      absl::MutexLock lock(&mu_);
      auto [parent, created] =
          parents_.try_emplace({std::string(nested->parent_kind), code.substr(0, slash)});
      if (created)
        (*parent->second.mutable_fields())["code"].set_string_value(code.substr(0, slash));
    }
    PutCodedResource(kind, code, fields_json);
    absl::MutexLock lock(&mu_);
    auto it = coded_.find({kind, code});
    if (it == coded_.end()) return;
    (*it->second.mutable_fields())["updated"] = StringValue(AkeneoTime(updated_us));
    coded_updated_[{kind, code}] = updated_us;
  }

  // ---- Lists of the catalogue structure kinds ----
  // akeneo/pim-api-docs: filter.md gives these lists an `updated` filter (operator `>` only, an
  // ISO 8601 date "read in the time zone of the server"), pagination.md offset paging only.
  static constexpr std::pair<absl::string_view, absl::string_view> kListedRoutes[] = {
      {"family", "/api/rest/v1/families"},
      {"category", "/api/rest/v1/categories"},
      {"attribute", "/api/rest/v1/attributes"},
      {"attribute_group", "/api/rest/v1/attribute-groups"},
  };
  static absl::string_view ListedPathOf(absl::string_view kind) {
    for (const auto& [listed_kind, path] : kListedRoutes) {
      if (listed_kind == kind) return path;
    }
    return {};
  }
  static absl::string_view ListedKindAt(absl::string_view path) {
    for (const auto& [kind, listed_path] : kListedRoutes) {
      if (listed_path == path) return kind;
    }
    return {};
  }

  // "2021-05-17T15:19:32Z" or "2021-05-17T15:19:32+00:00", the formats filter.md gives; the date
  // and time are read as wall-clock time in the server's zone, whatever offset is written (the
  // doc: "dates are interpreted in the time zone of the server"): the case where a client that
  // writes UTC misses changes. In seconds.
  static std::optional<int64_t> ParseIsoFilterTime(const std::string& text,
                                                   const absl::TimeZone& zone) {
    if (text.size() < 20 || text[10] != 'T') return std::nullopt;
    const std::string suffix = text.substr(19);
    const bool offset_ok =
        suffix == "Z" ||
        (suffix.size() == 6 && (suffix[0] == '+' || suffix[0] == '-') &&
         absl::ascii_isdigit(suffix[1]) && absl::ascii_isdigit(suffix[2]) && suffix[3] == ':' &&
         absl::ascii_isdigit(suffix[4]) && absl::ascii_isdigit(suffix[5]));
    if (!offset_ok) return std::nullopt;
    std::string wall = text.substr(0, 19);
    wall[10] = ' ';
    return ParseFilterTime(wall, zone);
  }

  Response CodedList(const std::string& kind, const std::string& path, const std::string& query) {
    const std::multimap<std::string, std::string> params = ParseQuery(query);
    int limit = kDefaultLimit;
    if (std::optional<std::string> text = Param(params, "limit"); text.has_value()) {
      if (!absl::SimpleAtoi(*text, &limit) || limit < 1) {
        return ErrorResponse(422, absl::StrCat("\"", *text, "\" is not a valid limit number."));
      }
      if (limit > kMaxLimit) {
        return ErrorResponse(422,
                             absl::StrCat("You cannot request more than ", kMaxLimit, " items."));
      }
    }
    // Offset paging is the only method of these lists.
    if (Param(params, "pagination_type").value_or("page") != "page" ||
        Param(params, "search_after").has_value()) {
      return ErrorResponse(422, "Pagination type does not exist.");
    }
    int page = 1;
    if (std::optional<std::string> text = Param(params, "page"); text.has_value()) {
      if (!absl::SimpleAtoi(*text, &page) || page < 1) {
        return ErrorResponse(422, absl::StrCat("\"", *text, "\" is not a valid page number."));
      }
    }
    const std::optional<std::string> search = Param(params, "search");
    std::optional<int64_t> updated_after;  // seconds
    if (search.has_value()) {
      Struct filters;
      if (!google::protobuf::util::JsonStringToMessage(*search, &filters).ok()) {
        return ErrorResponse(400, "Search query parameter should be valid JSON.");
      }
      for (const auto& [property, conditions] : filters.fields()) {
        const auto bad_structure = [&property] {
          return ErrorResponse(
              422, absl::StrCat("Structure of filter \"", property,
                                "\" should respect this structure: {\"", property,
                                "\":[{\"operator\": \"my_operator\", \"value\": \"my_value\"}]}"));
        };
        if (!conditions.has_list_value()) return bad_structure();
        for (const Value& condition : conditions.list_value().values()) {
          if (!condition.has_struct_value()) return bad_structure();
          const auto& fields = condition.struct_value().fields();
          auto op = fields.find("operator");
          if (op == fields.end() || !op->second.has_string_value()) return bad_structure();
          if (property != "updated" || op->second.string_value() != ">") {
            return UnsupportedFilter(property, op->second.string_value());
          }
          auto value = fields.find("value");
          const std::string text = value != fields.end() && value->second.has_string_value()
                                       ? value->second.string_value()
                                       : std::string();
          std::optional<int64_t> after = ParseIsoFilterTime(text, options_.time_zone);
          if (!after.has_value()) {
            return ErrorResponse(
                422, absl::StrCat("Property \"updated\" expects a string with the ISO 8601 "
                                  "format, \"",
                                  value == fields.end() ? "" : ToJson(value->second), "\" given."));
          }
          updated_after = std::max(updated_after.value_or(*after), *after);
        }
      }
    }
    const bool with_count = Param(params, "with_count").value_or("false") == "true";

    std::vector<Struct> items;
    bool more = false;
    int64_t count = 0;
    std::string link_origin;
    {
      absl::MutexLock lock(&mu_);
      link_origin = LinkOrigin();
      int64_t skip = int64_t{page - 1} * limit;
      // Ordered by code (std::map order), like Akeneo's stable order by id.
      for (const auto& [key, resource] : coded_) {
        if (key.first != kind) continue;
        if (updated_after.has_value()) {
          auto updated = coded_updated_.find(key);
          if (updated == coded_updated_.end() || FloorSeconds(updated->second) <= *updated_after) {
            continue;
          }
        }
        ++count;
        if (skip > 0) {
          --skip;
          continue;
        }
        if (static_cast<int>(items.size()) == limit) {
          more = true;
          if (!with_count) break;
          continue;
        }
        Struct item = resource;
        Value links;
        (*links.mutable_struct_value()->mutable_fields())["self"] =
            Href(absl::StrCat(link_origin, path, "/", Encode(key.second)));
        (*item.mutable_fields())["_links"] = std::move(links);
        items.push_back(std::move(item));
      }
    }
    const std::string base = absl::StrCat(link_origin, path, "?");
    std::string common;
    if (search.has_value()) absl::StrAppend(&common, "search=", Encode(*search), "&");
    absl::StrAppend(&common, "limit=", limit);
    if (with_count) absl::StrAppend(&common, "&with_count=true");
    Struct root;
    auto& fields = *root.mutable_fields();
    Value links;
    auto& link_fields = *links.mutable_struct_value()->mutable_fields();
    link_fields["self"] = Href(absl::StrCat(base, common, "&page=", page));
    link_fields["first"] = Href(absl::StrCat(base, common, "&page=1"));
    if (page > 1) link_fields["previous"] = Href(absl::StrCat(base, common, "&page=", page - 1));
    if (more) link_fields["next"] = Href(absl::StrCat(base, common, "&page=", page + 1));
    fields["current_page"].set_number_value(page);
    if (with_count) fields["items_count"].set_number_value(static_cast<double>(count));
    fields["_links"] = std::move(links);
    Value embedded;
    auto* list = (*embedded.mutable_struct_value()->mutable_fields())["items"].mutable_list_value();
    for (Struct& item : items) *list->add_values()->mutable_struct_value() = std::move(item);
    fields["_embedded"] = std::move(embedded);
    return JsonResponse(ToJson(root));
  }

  // ---- Reference entities and asset families, and their records and assets ----
  // akeneo/pim-api-docs (Enterprise Edition and Serenity only): GET /reference-entities and
  // /asset-families (search_after only, no filter, no `limit`); GET
  // /reference-entities/{code}/records and /asset-families/{code}/assets (search_after only, no
  // `limit`: the PIM's page size; `search` with an `updated` filter whose ISO 8601 value is read
  // in the server's time zone; 404 for an unknown parent).
  struct NestedList {
    absl::string_view kind;          // "reference_entity_record"
    absl::string_view parent_kind;   // "reference_entity"
    absl::string_view collection;    // "reference-entities", below /api/rest/v1/
    absl::string_view nested;        // "records"
    absl::string_view parent_label;  // "Reference entity", for the 404 message
  };
  static constexpr NestedList kNestedLists[] = {
      {"reference_entity_record", "reference_entity", "reference-entities", "records",
       "Reference entity"},
      {"asset", "asset_family", "asset-families", "assets", "Asset family"},
  };
  static const NestedList* NestedListOf(absl::string_view kind) {
    for (const NestedList& list : kNestedLists) {
      if (list.kind == kind || list.parent_kind == kind) return &list;
    }
    return nullptr;
  }

  void PutParent(const std::string& parent_kind, const std::string& code,
                 const std::string& fields_json) {
    Struct parent;
    if (!google::protobuf::util::JsonStringToMessage(fields_json, &parent).ok()) {
      ADD_FAILURE() << "FakePim: fields_json is not a JSON object: " << fields_json;
      return;
    }
    (*parent.mutable_fields())["code"].set_string_value(code);
    absl::MutexLock lock(&mu_);
    parents_[{parent_kind, code}] = std::move(parent);
  }
  void DeleteParent(const std::string& parent_kind, const std::string& code) {
    const NestedList* list = NestedListOf(parent_kind);
    absl::MutexLock lock(&mu_);
    parents_.erase({parent_kind, code});
    const std::string prefix = code + "/";
    for (auto it = coded_.begin(); it != coded_.end();) {
      if (it->first.first == list->kind && absl::StartsWith(it->first.second, prefix)) {
        coded_updated_.erase(it->first);
        it = coded_.erase(it);
      } else {
        ++it;
      }
    }
  }

  // The search_after cursor: opaque to clients (they must follow the links), here the last code
  // written in web-safe base64.
  static std::string Cursor(const std::string& code) { return absl::WebSafeBase64Escape(code); }
  static std::optional<std::string> FromCursor(const std::string& cursor) {
    std::string code;
    if (!absl::WebSafeBase64Unescape(cursor, &code)) return std::nullopt;
    return code;
  }

  // One search_after page of `codes` (ordered) → its items by `render`, with Akeneo's links.
  Response SearchAfterPage(const std::string& path, const std::optional<std::string>& search,
                           const std::optional<std::string>& search_after,
                           const std::vector<std::pair<std::string, Struct>>& ordered,
                           const std::string& link_origin) const {
    std::optional<std::string> after;
    if (search_after.has_value()) {
      after = FromCursor(*search_after);
      if (!after.has_value()) {
        return ErrorResponse(
            422, absl::StrCat("\"", *search_after, "\" is not a valid search_after value."));
      }
    }
    const int page_size = options_.entity_page_size;
    std::vector<Struct> items;
    bool more = false;
    std::string last;
    for (const auto& [code, item] : ordered) {
      if (after.has_value() && code <= *after) continue;
      if (static_cast<int>(items.size()) == page_size) {
        more = true;
        break;
      }
      Struct rendered = item;
      Value links;
      (*links.mutable_struct_value()->mutable_fields())["self"] =
          Href(absl::StrCat(link_origin, path, "/", Encode(code)));
      (*rendered.mutable_fields())["_links"] = std::move(links);
      items.push_back(std::move(rendered));
      last = code;
    }
    const std::string query = search.has_value() ? absl::StrCat("search=", Encode(*search)) : "";
    const auto link = [&](const std::string& cursor) {
      std::string params = query;
      if (!cursor.empty()) {
        absl::StrAppend(&params, params.empty() ? "" : "&", "search_after=", Encode(cursor));
      }
      return Href(absl::StrCat(link_origin, path, params.empty() ? "" : "?", params));
    };
    Struct root;
    auto& fields = *root.mutable_fields();
    Value links;
    auto& link_fields = *links.mutable_struct_value()->mutable_fields();
    link_fields["self"] = link(search_after.value_or(""));
    link_fields["first"] = link("");
    if (more) link_fields["next"] = link(Cursor(last));
    fields["_links"] = std::move(links);
    Value embedded;
    auto* list = (*embedded.mutable_struct_value()->mutable_fields())["items"].mutable_list_value();
    for (Struct& item : items) *list->add_values()->mutable_struct_value() = std::move(item);
    fields["_embedded"] = std::move(embedded);
    return JsonResponse(ToJson(root));
  }

  Response ParentList(const NestedList& list, const std::string& path, const std::string& query) {
    const std::multimap<std::string, std::string> params = ParseQuery(query);
    std::vector<std::pair<std::string, Struct>> ordered;
    std::string link_origin;
    {
      absl::MutexLock lock(&mu_);
      link_origin = LinkOrigin();
      for (const auto& [key, parent] : parents_) {
        if (key.first == list.parent_kind) ordered.emplace_back(key.second, parent);
      }
    }
    return SearchAfterPage(path, std::nullopt, Param(params, "search_after"), ordered, link_origin);
  }

  Response NestedItems(const NestedList& list, const std::string& parent, const std::string& path,
                       const std::string& query) {
    const std::multimap<std::string, std::string> params = ParseQuery(query);
    const std::optional<std::string> search = Param(params, "search");
    std::optional<int64_t> updated_after;  // seconds
    std::optional<int64_t> updated_before;
    if (search.has_value()) {
      Struct filters;
      if (!google::protobuf::util::JsonStringToMessage(*search, &filters).ok()) {
        return ErrorResponse(400, "Search query parameter should be valid JSON.");
      }
      for (const auto& [property, conditions] : filters.fields()) {
        const auto bad_structure = [&property] {
          return ErrorResponse(
              422, absl::StrCat("Structure of filter \"", property,
                                "\" should respect this structure: {\"", property,
                                "\":[{\"operator\": \"my_operator\", \"value\": \"my_value\"}]}"));
        };
        if (!conditions.has_list_value()) return bad_structure();
        for (const Value& condition : conditions.list_value().values()) {
          if (!condition.has_struct_value()) return bad_structure();
          const auto& fields = condition.struct_value().fields();
          auto op = fields.find("operator");
          if (op == fields.end() || !op->second.has_string_value()) return bad_structure();
          // `>` (every version) and `<` (7.0, SaaS) on `updated`; the fake has no other filter.
          if (property != "updated" ||
              (op->second.string_value() != ">" && op->second.string_value() != "<")) {
            return UnsupportedFilter(property, op->second.string_value());
          }
          auto value = fields.find("value");
          const std::string text = value != fields.end() && value->second.has_string_value()
                                       ? value->second.string_value()
                                       : std::string();
          std::optional<int64_t> time = ParseIsoFilterTime(text, options_.time_zone);
          if (!time.has_value()) {
            return ErrorResponse(
                422, absl::StrCat("Property \"updated\" expects a string with the ISO 8601 "
                                  "format, \"",
                                  value == fields.end() ? "" : ToJson(value->second), "\" given."));
          }
          if (op->second.string_value() == ">") {
            updated_after = std::max(updated_after.value_or(*time), *time);
          } else {
            updated_before = std::min(updated_before.value_or(*time), *time);
          }
        }
      }
    }
    std::vector<std::pair<std::string, Struct>> ordered;
    std::string link_origin;
    {
      absl::MutexLock lock(&mu_);
      if (!parents_.contains({std::string(list.parent_kind), parent})) {
        return ErrorResponse(404,
                             absl::StrCat(list.parent_label, " \"", parent, "\" does not exist."));
      }
      link_origin = LinkOrigin();
      const std::string prefix = parent + "/";
      for (const auto& [key, resource] : coded_) {
        if (key.first != list.kind || !absl::StartsWith(key.second, prefix)) continue;
        auto updated = coded_updated_.find(key);
        const int64_t seconds = updated == coded_updated_.end() ? 0 : FloorSeconds(updated->second);
        if (updated_after.has_value() && seconds <= *updated_after) continue;
        if (updated_before.has_value() && seconds >= *updated_before) continue;
        ordered.emplace_back(key.second.substr(prefix.size()), resource);
      }
    }
    return SearchAfterPage(path, search, Param(params, "search_after"), ordered, link_origin);
  }

  // The list of `path` among the nested kinds', if it is one: (list, parent code; empty for the
  // parents' list).
  static std::optional<std::pair<const NestedList*, std::string>> NestedPath(
      absl::string_view path) {
    if (!absl::ConsumePrefix(&path, "/api/rest/v1/")) return std::nullopt;
    const std::vector<std::string> parts = absl::StrSplit(path, '/');
    for (const NestedList& list : kNestedLists) {
      if (parts[0] != list.collection) continue;
      if (parts.size() == 1) return std::make_pair(&list, std::string());
      if (parts.size() == 3 && !parts[1].empty() && parts[2] == list.nested) {
        return std::make_pair(&list, PercentDecode(parts[1]));
      }
    }
    return std::nullopt;
  }

  // The (kind, id) of a single-resource path of kCodedRoutes, if `path` is one.
  static std::optional<std::pair<std::string, std::string>> CodedPath(absl::string_view path) {
    if (!absl::ConsumePrefix(&path, "/api/rest/v1/")) return std::nullopt;
    const std::vector<std::string> parts = absl::StrSplit(path, '/');
    for (const std::string& part : parts) {
      if (part.empty()) return std::nullopt;
    }
    for (const CodedRoute& route : kCodedRoutes) {
      if (parts[0] != route.collection) continue;
      if (route.nested.empty() && parts.size() == 2) {
        return std::make_pair(std::string(route.kind), PercentDecode(parts[1]));
      }
      if (!route.nested.empty() && parts.size() == 4 && parts[2] == route.nested) {
        return std::make_pair(std::string(route.kind),
                              absl::StrCat(PercentDecode(parts[1]), "/", PercentDecode(parts[3])));
      }
    }
    return std::nullopt;
  }

  Response OneCoded(const std::string& kind, const std::string& id) {
    absl::MutexLock lock(&mu_);
    auto it = coded_.find({kind, id});
    if (it == coded_.end()) {
      const std::size_t slash = id.find('/');
      const std::string code = slash == std::string::npos ? id : id.substr(slash + 1);
      return ErrorResponse(
          404, absl::StrCat(CodedRouteOf(kind)->label, " \"", code, "\" does not exist."));
    }
    return JsonResponse(ToJson(it->second));
  }

  // ---- Faults ----
  void FailNextCalls(int count, int status, int retry_after_seconds) {
    absl::MutexLock lock(&mu_);
    fail_count_ = count;
    fail_status_ = status;
    fail_retry_after_ = retry_after_seconds;
  }
  void InjectFault(Fault fault) {
    absl::MutexLock lock(&mu_);
    faults_.push_back(ArmedFault{std::move(fault), 0});
  }
  int pending_faults() const {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(faults_.size());
  }
  void SetDelay(std::chrono::milliseconds delay) {
    absl::MutexLock lock(&mu_);
    delay_ = delay;
  }
  void ExpireTokens() {
    absl::MutexLock lock(&mu_);
    access_tokens_.clear();
  }
  void Stop() {
    RunOnIoThread([this] { CloseEverything(); });
  }
  void Resume() {
    RunOnIoThread([this] {
      if (acceptor_ == nullptr) Listen(port_);
    });
  }

  // ---- Observations ----
  std::vector<Request> requests() const {
    absl::MutexLock lock(&mu_);
    return requests_;
  }
  int token_requests() const {
    absl::MutexLock lock(&mu_);
    return token_requests_;
  }
  int refresh_requests() const {
    absl::MutexLock lock(&mu_);
    return refresh_requests_;
  }
  int max_concurrent_seen() const {
    absl::MutexLock lock(&mu_);
    return max_concurrent_seen_;
  }
  int connections_accepted() const {
    absl::MutexLock lock(&mu_);
    return connections_accepted_;
  }
  void ClearRequests() {
    absl::MutexLock lock(&mu_);
    requests_.clear();
  }
  bool IsValidAccessToken(const std::string& token) const {
    absl::MutexLock lock(&mu_);
    auto it = access_tokens_.find(token);
    return it != access_tokens_.end() && Clock::now() < it->second;
  }
  const Options& options() const { return options_; }

 private:
  // Runs `task` on the io thread and waits for it.
  void RunOnIoThread(std::function<void()> task) {
    std::promise<void> done;
    net::post(ioc_, [&task, &done] {
      task();
      done.set_value();
    });
    done.get_future().wait();
  }

  // io thread. Binds 127.0.0.1:port (0 = any free port; Resume() rebinds the same one).
  void Listen(uint16_t port) {
    acceptor_ = std::make_shared<tcp::acceptor>(ioc_);
    beast::error_code ec;
    const tcp::endpoint endpoint(net::ip::make_address("127.0.0.1"), port);
    acceptor_->open(endpoint.protocol(), ec);
    if (!ec) acceptor_->set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_->bind(endpoint, ec);
    if (!ec) acceptor_->listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
      ADD_FAILURE() << "FakePim: cannot listen on 127.0.0.1:" << port << ": " << ec.message();
      acceptor_.reset();
      return;
    }
    port_ = acceptor_->local_endpoint().port();
    net::co_spawn(ioc_, Accept(acceptor_), net::detached);
  }

  // io thread: closes the listener, every connection and every pending delay.
  void CloseEverything() {
    if (acceptor_ != nullptr) {
      beast::error_code ignored;
      acceptor_->close(ignored);
      acceptor_.reset();  // the accept coroutine holds it until it sees the error
    }
    for (auto& [id, close] : sessions_) close();
    for (net::steady_timer* timer : timers_) timer->cancel();
  }

  net::awaitable<void> Accept(std::shared_ptr<tcp::acceptor> acceptor) {
    for (;;) {
      beast::error_code ec;
      tcp::socket socket =
          co_await acceptor->async_accept(net::redirect_error(net::use_awaitable, ec));
      if (ec) co_return;  // closed by Stop() or the destructor
      if (shutting_down_) co_return;
      {
        absl::MutexLock lock(&mu_);
        ++connections_accepted_;
      }
      net::co_spawn(ioc_, Session(std::move(socket)), net::detached);
    }
  }

  // One connection: TLS handshake when configured, then requests until the client closes, asks
  // to close, or Stop() closes it.
  net::awaitable<void> Session(tcp::socket socket) {
    const uint64_t id = next_session_++;
    struct Unregister {
      Impl* impl;
      uint64_t id;
      ~Unregister() { impl->sessions_.erase(id); }
    } unregister{this, id};
    beast::error_code ec;
    if (options_.tls) {
      beast::ssl_stream<beast::tcp_stream> stream(std::move(socket), ssl_context_);
      sessions_[id] = [&stream] {
        beast::error_code ignored;
        beast::get_lowest_layer(stream).socket().close(ignored);
      };
      co_await stream.async_handshake(ssl::stream_base::server,
                                      net::redirect_error(net::use_awaitable, ec));
      if (ec) co_return;
      co_await Serve(stream);
    } else {
      beast::tcp_stream stream(std::move(socket));
      sessions_[id] = [&stream] {
        beast::error_code ignored;
        stream.socket().close(ignored);
      };
      co_await Serve(stream);
    }
  }

  template <typename Stream>
  net::awaitable<void> Serve(Stream& stream) {
    beast::flat_buffer buffer;
    for (;;) {
      beast::error_code ec;
      http::request_parser<http::string_body> parser;
      parser.body_limit(kMaxRequestBody);
      co_await http::async_read(stream, buffer, parser,
                                net::redirect_error(net::use_awaitable, ec));
      if (ec) co_return;
      http::request<http::string_body> request = parser.release();
      Answer answer = co_await Handle(request);
      Response& response = answer.response;
      response.version(11);
      response.keep_alive(request.keep_alive());
      response.set(http::field::server, "fake-akeneo");
      response.prepare_payload();
      if (answer.cut) {
        // The header promises the whole body; half of it comes, then the connection drops.
        http::response_serializer<http::string_body> serializer(response);
        co_await http::async_write_header(stream, serializer,
                                          net::redirect_error(net::use_awaitable, ec));
        if (!ec) {
          const std::string& body = response.body();
          co_await net::async_write(stream, net::buffer(body.data(), body.size() / 2),
                                    net::redirect_error(net::use_awaitable, ec));
        }
        beast::get_lowest_layer(stream).close();
        co_return;
      }
      co_await http::async_write(stream, response, net::redirect_error(net::use_awaitable, ec));
      if (ec || !response.keep_alive()) co_return;
    }
  }

  // An answer, and whether to cut the connection halfway through it (Fault::kCutConnection).
  struct Answer {
    Response response;
    bool cut = false;
  };

  net::awaitable<Answer> Handle(const http::request<http::string_body>& request) {
    const std::string target(request.target());
    const std::string path = target.substr(0, target.find('?'));
    const bool token_call = path == kTokenPath;
    bool over_limit = false;
    std::chrono::milliseconds delay;
    {
      absl::MutexLock lock(&mu_);
      if (!token_call) {
        ++in_flight_;
        max_concurrent_seen_ = std::max(max_concurrent_seen_, in_flight_);
        over_limit = in_flight_ > options_.max_concurrent_calls;
      }
      delay = delay_;
    }
    if (delay.count() > 0) {
      net::steady_timer timer(ioc_, delay);
      timers_.insert(&timer);
      beast::error_code ignored;
      co_await timer.async_wait(net::redirect_error(net::use_awaitable, ignored));
      timers_.erase(&timer);
    }
    Answer answer;
    Response& response = answer.response;
    std::optional<Fault> targeted;
    if (over_limit) {
      response = ErrorResponse(429, "Too many requests: more than " +
                                        std::to_string(options_.max_concurrent_calls) +
                                        " concurrent calls.");
      response.set(http::field::retry_after, "1");
    } else {
      targeted = TargetedFault(path);
      std::optional<Response> fault =
          targeted.has_value() ? std::nullopt : InjectedFault(token_call);
      if (targeted.has_value() && targeted->kind == Fault::Kind::kStatus) {
        auto authorization = request.find(http::field::authorization);
        response = StatusFault(
            *targeted, request.body(),
            authorization == request.end() ? std::string() : std::string(authorization->value()));
      } else if (fault.has_value()) {
        response = *std::move(fault);
      } else {
        response = Route(request, path, target);
        if (targeted.has_value() && targeted->kind == Fault::Kind::kMalformedJson) {
          response.result(http::status::ok);
          response.body().resize(response.body().size() / 2);
        }
        answer.cut = targeted.has_value() && targeted->kind == Fault::Kind::kCutConnection;
      }
    }
    {
      absl::MutexLock lock(&mu_);
      if (!token_call) --in_flight_;
      requests_.push_back(Request{std::string(request.method_string()), target,
                                  answer.cut ? 0 : static_cast<int>(response.result_int())});
    }
    co_return answer;
  }

  // The fault due for this call to `path`, if any (every armed fault matching it counts it).
  std::optional<Fault> TargetedFault(const std::string& path) {
    absl::MutexLock lock(&mu_);
    std::optional<Fault> due;
    for (auto it = faults_.begin(); it != faults_.end();) {
      if (!absl::StartsWith(path, it->fault.path)) {
        ++it;
        continue;
      }
      ++it->seen;
      if (due.has_value() || it->seen <= it->fault.skip) {
        ++it;
        continue;
      }
      due = it->fault;
      if (--it->fault.count <= 0) {
        it = faults_.erase(it);
      } else {
        ++it;
      }
    }
    return due;
  }

  static Response StatusFault(const Fault& fault, const std::string& request_body,
                              const std::string& authorization) {
    std::string message = fault.message;
    if (message.empty()) {
      message = fault.status == 429   ? "Too many requests."
                : fault.status == 408 ? "Request Timeout."
                                      : absl::StrCat("Injected error ", fault.status, ".");
    }
    absl::StrReplaceAll({{"{request}", request_body}, {"{authorization}", authorization}},
                        &message);
    Response response = ErrorResponse(fault.status, message);
    if (fault.retry_after_seconds >= 0) {
      response.set(http::field::retry_after, std::to_string(fault.retry_after_seconds));
    }
    return response;
  }

  std::optional<Response> InjectedFault(bool token_call) {
    if (token_call) return std::nullopt;
    absl::MutexLock lock(&mu_);
    if (fail_count_ <= 0) return std::nullopt;
    --fail_count_;
    Response response = ErrorResponse(
        fail_status_, fail_status_ == 429   ? "Too many requests."
                      : fail_status_ == 408 ? "Request Timeout."
                                            : absl::StrCat("Injected error ", fail_status_, "."));
    if (fail_status_ == 429 && fail_retry_after_ >= 0) {
      response.set(http::field::retry_after, std::to_string(fail_retry_after_));
    }
    return response;
  }

  Response Route(const http::request<http::string_body>& request, const std::string& path,
                 const std::string& target) {
    const std::string query = target.size() > path.size() ? target.substr(path.size() + 1) : "";
    const auto no_route = [&] {
      return ErrorResponse(
          404, absl::StrCat("No route found for \"", std::string(request.method_string()), " ",
                            path, "\""));
    };
    const auto wrong_method = [&](absl::string_view allowed) {
      Response response = ErrorResponse(
          405, absl::StrCat("No route found for \"", std::string(request.method_string()), " ",
                            path, "\": Method Not Allowed (Allow: ", allowed, ")"));
      response.set(http::field::allow, std::string(allowed));
      return response;
    };
    if (path == kTokenPath) {
      if (request.method() != http::verb::post) return wrong_method("POST");
      return Token(request);
    }
    if (const absl::string_view listed = ListedKindAt(path); !listed.empty()) {
      if (request.method() != http::verb::get) return wrong_method("GET");
      if (std::optional<Response> refused = CheckBearer(request); refused.has_value()) {
        return *std::move(refused);
      }
      return CodedList(std::string(listed), path, query);
    }
    if (std::optional<std::pair<const NestedList*, std::string>> nested = NestedPath(path)) {
      // Community Edition: no reference entities, no Asset Manager.
      if (!options_.enterprise) return no_route();
      if (request.method() != http::verb::get) return wrong_method("GET");
      if (std::optional<Response> refused = CheckBearer(request); refused.has_value()) {
        return *std::move(refused);
      }
      if (nested->second.empty()) return ParentList(*nested->first, path, query);
      return NestedItems(*nested->first, nested->second, path, query);
    }
    if (std::optional<std::pair<std::string, std::string>> coded = CodedPath(path)) {
      if (!options_.enterprise && NestedListOf(coded->first) != nullptr) return no_route();
      if (request.method() != http::verb::get) return wrong_method("GET");
      if (std::optional<Response> refused = CheckBearer(request); refused.has_value()) {
        return *std::move(refused);
      }
      return OneCoded(coded->first, coded->second);
    }
    // Which collection: products by uuid (PIM 7 and SaaS only), products by identifier, or
    // product models.
    Endpoint endpoint = Endpoint::kProductModels;
    std::string collection;
    if (options_.products_uuid &&
        (path == kProductsPath || absl::StartsWith(path, absl::StrCat(kProductsPath, "/")))) {
      endpoint = Endpoint::kProductsByUuid;
      collection = kProductsPath;
    } else if (path == kProductsByIdentifierPath ||
               absl::StartsWith(path, absl::StrCat(kProductsByIdentifierPath, "/"))) {
      endpoint = Endpoint::kProductsByIdentifier;
      collection = kProductsByIdentifierPath;
    } else if (path == kProductModelsPath ||
               absl::StartsWith(path, absl::StrCat(kProductModelsPath, "/"))) {
      collection = kProductModelsPath;
    } else {
      return no_route();
    }
    const bool list = path == collection;
    const std::string key = list ? "" : PercentDecode(path.substr(collection.size() + 1));
    if (!list && (key.empty() || absl::StrContains(key, "/"))) return no_route();
    if (request.method() != http::verb::get) return wrong_method("GET");
    if (std::optional<Response> refused = CheckBearer(request); refused.has_value()) {
      return *std::move(refused);
    }
    if (list) return List(endpoint, path, query);
    return One(endpoint, key);
  }

  // ---- OAuth ----

  std::optional<Response> CheckBearer(const http::request<http::string_body>& request) {
    auto it = request.find(http::field::authorization);
    absl::string_view header =
        it == request.end() ? "" : absl::string_view(it->value().data(), it->value().size());
    if (!absl::ConsumePrefix(&header, "Bearer ")) {
      return ErrorResponse(401, "Authentication is required");
    }
    absl::MutexLock lock(&mu_);
    auto token = access_tokens_.find(std::string(header));
    if (token == access_tokens_.end()) {
      return ErrorResponse(401, "The access token provided is invalid.");
    }
    if (Clock::now() >= token->second) {
      access_tokens_.erase(token);
      return ErrorResponse(401, "The access token provided has expired.");
    }
    return std::nullopt;
  }

  Response Token(const http::request<http::string_body>& request) {
    {
      absl::MutexLock lock(&mu_);
      ++token_requests_;
    }
    // Akeneo takes the client's credentials as HTTP Basic, the grant as JSON (or a form).
    auto auth = request.find(http::field::authorization);
    absl::string_view header =
        auth == request.end() ? "" : absl::string_view(auth->value().data(), auth->value().size());
    std::string decoded;
    if (!absl::ConsumePrefix(&header, "Basic ") || !absl::Base64Unescape(header, &decoded) ||
        decoded != absl::StrCat(options_.client_id, ":", options_.secret)) {
      return ErrorResponse(422,
                           "Parameter \"client_id\" is missing or does not match any client, or "
                           "secret is invalid");
    }
    std::map<std::string, std::string> grant;
    auto content_type = request.find(http::field::content_type);
    if (content_type != request.end() &&
        absl::StartsWith(std::string(content_type->value()), "application/x-www-form-urlencoded")) {
      for (const auto& [name, value] : ParseQuery(request.body())) grant[name] = value;
    } else {
      Struct body;
      if (!google::protobuf::util::JsonStringToMessage(request.body(), &body).ok()) {
        return ErrorResponse(400, "Invalid json message received");
      }
      for (const auto& [name, value] : body.fields()) {
        if (value.has_string_value()) grant[name] = value.string_value();
      }
    }
    const std::string grant_type = grant["grant_type"];
    if (grant_type == "password") {
      if (grant["username"].empty() || grant["password"].empty()) {
        return ErrorResponse(422,
                             "Parameter \"username\", \"password\" or \"grant_type\" is "
                             "missing, empty or invalid");
      }
      if (grant["username"] != options_.username || grant["password"] != options_.password) {
        return ErrorResponse(422, "No user found for the given username and password");
      }
    } else if (grant_type == "refresh_token") {
      absl::MutexLock lock(&mu_);
      ++refresh_requests_;
      // Refresh tokens are single use: the grant answers with a new one.
      if (refresh_tokens_.erase(grant["refresh_token"]) == 0) {
        return ErrorResponse(422, "Refresh token is invalid or has expired");
      }
    } else {
      return ErrorResponse(422, "Parameter \"grant_type\" is missing, empty or invalid");
    }
    const std::string access_token = RandomToken();
    const std::string refresh_token = RandomToken();
    {
      absl::MutexLock lock(&mu_);
      // A lifetime past a century (a PIM whose tokens "never" expire) is a century here.
      access_tokens_[access_token] =
          Clock::now() +
          std::min<std::chrono::seconds>(options_.token_ttl, std::chrono::hours(876'000));
      refresh_tokens_.insert(refresh_token);
    }
    return JsonResponse(absl::StrCat("{\"access_token\":\"", access_token,
                                     "\",\"expires_in\":", options_.token_ttl.count(),
                                     ",\"token_type\":\"bearer\",\"scope\":null,"
                                     "\"refresh_token\":\"",
                                     refresh_token, "\"}"));
  }

  // ---- Resources ----

  enum class Endpoint { kProductsByUuid, kProductsByIdentifier, kProductModels };
  static bool IsProduct(Endpoint endpoint) { return endpoint != Endpoint::kProductModels; }
  static const char* PathOf(Endpoint endpoint) {
    switch (endpoint) {
      case Endpoint::kProductsByUuid:
        return kProductsPath;
      case Endpoint::kProductsByIdentifier:
        return kProductsByIdentifierPath;
      case Endpoint::kProductModels:
        return kProductModelsPath;
    }
    return kProductModelsPath;
  }
  // The key a resource is served (and ordered for search_after) under at `endpoint`.
  static const std::string& KeyAt(Endpoint endpoint, const Resource& resource) {
    return endpoint == Endpoint::kProductsByIdentifier ? resource.identifier : resource.key;
  }

  // The origin written in links: base_url(), or what SetLinkOrigin asked for.
  std::string LinkOrigin() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return link_origin_.empty() ? base_url() : link_origin_;
  }

  std::string ResourceUrl(Endpoint endpoint, const Resource& resource) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return absl::StrCat(LinkOrigin(), PathOf(endpoint), "/", Encode(KeyAt(endpoint, resource)));
  }

  // The resource as Akeneo prints it; `with_link` for list items (which carry _links.self).
  Struct Render(Endpoint endpoint, const Resource& resource, bool with_link) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const bool product = IsProduct(endpoint);
    Struct item;
    auto& fields = *item.mutable_fields();
    if (with_link) {
      Value links;
      (*links.mutable_struct_value()->mutable_fields())["self"] =
          Href(ResourceUrl(endpoint, resource));
      fields["_links"] = std::move(links);
    }
    if (product) {
      // PIM 7 added `uuid` to the products endpoint too; PIM 5/6 products have none.
      if (options_.products_uuid) fields["uuid"] = StringValue(resource.key);
      fields["identifier"] = StringValue(resource.identifier);
      fields["enabled"].set_bool_value(true);
      fields["groups"] = EmptyList();
      fields["associations"] = EmptyObject();
      fields["quantified_associations"] = EmptyObject();
    } else {
      fields["code"] = StringValue(resource.key);
      fields["family_variant"] = NullValue();
      fields["associations"] = EmptyObject();
    }
    fields["family"] = NullValue();
    fields["parent"] = NullValue();
    fields["categories"] = EmptyList();
    fields["values"] = EmptyObject();
    fields["created"] = StringValue(AkeneoTime(resource.created_us));
    fields["updated"] = StringValue(AkeneoTime(resource.updated_us));
    for (const auto& [name, value] : resource.extra.fields()) fields[name] = value;
    return item;
  }

  Response One(Endpoint endpoint, const std::string& key) {
    absl::MutexLock lock(&mu_);
    const bool product = IsProduct(endpoint);
    const auto& catalogue = product ? products_ : product_models_;
    const Resource* found = nullptr;
    if (endpoint == Endpoint::kProductsByIdentifier) {
      for (const auto& [uuid, resource] : catalogue) {
        if (resource.identifier == key) found = &resource;
      }
    } else if (auto it = catalogue.find(key); it != catalogue.end()) {
      found = &it->second;
    }
    if (found == nullptr) {
      return ErrorResponse(404, absl::StrCat(product ? "Product \"" : "Product model \"", key,
                                             "\" does not exist or you do not have permission to "
                                             "access it."));
    }
    return JsonResponse(ToJson(Render(endpoint, *found, false)));
  }

  // A compiled `search` filter.
  using Predicate = std::function<bool(const Resource&)>;

  static Response UnsupportedFilter(const std::string& property, const std::string& op) {
    return ErrorResponse(
        422, absl::StrCat("Filter on property \"", property,
                          "\" is not supported or does not support operator \"", op, "\""));
  }

  static std::optional<Response> CompileUpdated(const std::string& op, const Value& value,
                                                const absl::TimeZone& zone,
                                                std::vector<Predicate>& out) {
    const auto bad_time = [](const std::string& text) {
      return ErrorResponse(422, absl::StrCat("Property \"updated\" expects a string with the "
                                             "format \"yyyy-mm-dd H:i:s\" as data, \"",
                                             text, "\" given."));
    };
    const auto seconds_of = [](const Resource& r) { return FloorSeconds(r.updated_us); };
    if (op == ">" || op == "<" || op == "=" || op == "!=") {
      if (!value.has_string_value()) return bad_time(ToJson(value));
      std::optional<int64_t> time = ParseFilterTime(value.string_value(), zone);
      if (!time.has_value()) return bad_time(value.string_value());
      const int64_t t = *time;
      if (op == ">") out.push_back([=](const Resource& r) { return seconds_of(r) > t; });
      if (op == "<") out.push_back([=](const Resource& r) { return seconds_of(r) < t; });
      if (op == "=") out.push_back([=](const Resource& r) { return seconds_of(r) == t; });
      if (op == "!=") out.push_back([=](const Resource& r) { return seconds_of(r) != t; });
      return std::nullopt;
    }
    if (op == "BETWEEN" || op == "NOT BETWEEN") {
      if (!value.has_list_value() || value.list_value().values_size() != 2 ||
          !value.list_value().values(0).has_string_value() ||
          !value.list_value().values(1).has_string_value()) {
        return ErrorResponse(422, "Property \"updated\" expects an array with 2 dates as data.");
      }
      std::optional<int64_t> low =
          ParseFilterTime(value.list_value().values(0).string_value(), zone);
      std::optional<int64_t> high =
          ParseFilterTime(value.list_value().values(1).string_value(), zone);
      if (!low.has_value()) return bad_time(value.list_value().values(0).string_value());
      if (!high.has_value()) return bad_time(value.list_value().values(1).string_value());
      const bool negate = op == "NOT BETWEEN";
      out.push_back([=, low = *low, high = *high](const Resource& r) {
        const int64_t s = seconds_of(r);
        return (s >= low && s <= high) != negate;
      });
      return std::nullopt;
    }
    if (op == "SINCE LAST N DAYS") {
      if (!value.has_number_value() || value.number_value() < 0) {
        return ErrorResponse(422, "Property \"updated\" expects a positive number of days.");
      }
      const int64_t since =
          absl::ToUnixSeconds(absl::Now()) - static_cast<int64_t>(value.number_value()) * 86'400;
      out.push_back([=](const Resource& r) { return seconds_of(r) >= since; });
      return std::nullopt;
    }
    return UnsupportedFilter("updated", op);
  }

  // Parses `search` as Akeneo does: {"property":[{"operator":..,"value":..}, ...], ...}.
  // `uuids`: the endpoint takes the `uuid` filter (products-uuid).
  static std::optional<Response> CompileSearch(bool uuids, const std::string& search,
                                               const absl::TimeZone& zone,
                                               std::vector<Predicate>& out) {
    Struct filters;
    if (!google::protobuf::util::JsonStringToMessage(search, &filters).ok()) {
      return ErrorResponse(400, "Search query parameter should be valid JSON.");
    }
    for (const auto& [property, conditions] : filters.fields()) {
      const auto bad_structure = [&property] {
        return ErrorResponse(
            422, absl::StrCat("Structure of filter \"", property,
                              "\" should respect this structure: {\"", property,
                              "\":[{\"operator\": \"my_operator\", \"value\": \"my_value\"}]}"));
      };
      if (!conditions.has_list_value()) return bad_structure();
      for (const Value& condition : conditions.list_value().values()) {
        if (!condition.has_struct_value()) return bad_structure();
        const auto& fields = condition.struct_value().fields();
        auto op_it = fields.find("operator");
        if (op_it == fields.end() || !op_it->second.has_string_value()) return bad_structure();
        const std::string op = op_it->second.string_value();
        auto value_it = fields.find("value");
        const Value value = value_it == fields.end() ? NullValue() : value_it->second;
        if (property == "updated") {
          if (std::optional<Response> error = CompileUpdated(op, value, zone, out);
              error.has_value()) {
            return error;
          }
        } else if (uuids && property == "uuid" && (op == "IN" || op == "NOT IN")) {
          if (!value.has_list_value()) {
            return ErrorResponse(422, "Property \"uuid\" expects an array as data.");
          }
          std::set<std::string> uuids;
          for (const Value& uuid : value.list_value().values()) {
            if (!uuid.has_string_value()) {
              return ErrorResponse(422, "Property \"uuid\" expects an array of strings as data.");
            }
            uuids.insert(absl::AsciiStrToLower(uuid.string_value()));
          }
          const bool negate = op == "NOT IN";
          out.push_back([uuids = std::move(uuids), negate](const Resource& r) {
            return uuids.contains(absl::AsciiStrToLower(r.key)) != negate;
          });
        } else {
          // Includes product models' `code`, which Akeneo cannot search on.
          return UnsupportedFilter(property, op);
        }
      }
    }
    return std::nullopt;
  }

  Response List(Endpoint endpoint, const std::string& path, const std::string& query) {
    const bool product = IsProduct(endpoint);
    const std::multimap<std::string, std::string> params = ParseQuery(query);
    int limit = kDefaultLimit;
    if (std::optional<std::string> text = Param(params, "limit"); text.has_value()) {
      if (!absl::SimpleAtoi(*text, &limit) || limit < 1) {
        return ErrorResponse(422, absl::StrCat("\"", *text, "\" is not a valid limit number."));
      }
      if (limit > kMaxLimit) {
        return ErrorResponse(422,
                             absl::StrCat("You cannot request more than ", kMaxLimit, " items."));
      }
    }
    const std::string pagination = Param(params, "pagination_type").value_or("page");
    if (pagination != "page" && pagination != "search_after") {
      return ErrorResponse(422, "Pagination type does not exist.");
    }
    int page = 1;
    if (std::optional<std::string> text = Param(params, "page"); text.has_value()) {
      if (!absl::SimpleAtoi(*text, &page) || page < 1) {
        return ErrorResponse(422, absl::StrCat("\"", *text, "\" is not a valid page number."));
      }
    }
    const std::optional<std::string> search = Param(params, "search");
    std::vector<Predicate> predicates;
    if (search.has_value()) {
      if (std::optional<Response> error = CompileSearch(endpoint == Endpoint::kProductsByUuid,
                                                        *search, options_.time_zone, predicates);
          error.has_value()) {
        return *std::move(error);
      }
    }
    const std::optional<std::string> search_after = Param(params, "search_after");
    const bool with_count = Param(params, "with_count").value_or("false") == "true";

    // Items in a stable order (uuid, identifier or code), as search_after pagination requires.
    std::vector<Struct> items;
    bool more = false;
    int64_t count = 0;
    std::string last_key;
    std::string link_origin;
    {
      absl::MutexLock lock(&mu_);
      link_origin = LinkOrigin();
      std::map<std::string, const Resource*> ordered;
      for (const auto& [key, resource] : product ? products_ : product_models_) {
        ordered.emplace(KeyAt(endpoint, resource), &resource);
      }
      int64_t skip = pagination == "page" ? int64_t{page - 1} * limit : 0;
      for (auto it = pagination == "search_after" && search_after.has_value()
                         ? ordered.upper_bound(*search_after)
                         : ordered.begin();
           it != ordered.end(); ++it) {
        const Resource& resource = *it->second;
        if (!std::all_of(predicates.begin(), predicates.end(),
                         [&resource](const Predicate& p) { return p(resource); })) {
          continue;
        }
        ++count;
        if (skip > 0) {
          --skip;
          continue;
        }
        if (static_cast<int>(items.size()) == limit) {
          more = true;
          if (!with_count) break;
          continue;
        }
        items.push_back(Render(endpoint, resource, true));
        last_key = it->first;
      }
    }

    // Links carry the query the client sent, re-encoded, like Akeneo's.
    const std::string base = absl::StrCat(link_origin, path, "?");
    std::string common;
    if (search.has_value()) absl::StrAppend(&common, "search=", Encode(*search), "&");
    absl::StrAppend(&common, "limit=", limit);
    if (with_count) absl::StrAppend(&common, "&with_count=true");
    Struct root;
    auto& fields = *root.mutable_fields();
    Value links;
    auto& link_fields = *links.mutable_struct_value()->mutable_fields();
    if (pagination == "search_after") {
      absl::StrAppend(&common, "&pagination_type=search_after");
      link_fields["self"] = Href(absl::StrCat(
          base, common,
          search_after.has_value() ? absl::StrCat("&search_after=", Encode(*search_after)) : ""));
      link_fields["first"] = Href(base + common);
      if (more) {
        link_fields["next"] = Href(absl::StrCat(base, common, "&search_after=", Encode(last_key)));
      }
    } else {
      link_fields["self"] = Href(absl::StrCat(base, common, "&page=", page));
      link_fields["first"] = Href(absl::StrCat(base, common, "&page=1"));
      if (page > 1) link_fields["previous"] = Href(absl::StrCat(base, common, "&page=", page - 1));
      if (more) link_fields["next"] = Href(absl::StrCat(base, common, "&page=", page + 1));
      fields["current_page"].set_number_value(page);
      if (with_count) fields["items_count"].set_number_value(static_cast<double>(count));
    }
    fields["_links"] = std::move(links);
    Value embedded;
    auto* list = (*embedded.mutable_struct_value()->mutable_fields())["items"].mutable_list_value();
    for (Struct& item : items) *list->add_values()->mutable_struct_value() = std::move(item);
    fields["_embedded"] = std::move(embedded);
    return JsonResponse(ToJson(root));
  }

  const Options options_;
  TempDir dir_;
  CertFiles cert_;
  ssl::context ssl_context_{ssl::context::tls_server};

  net::io_context ioc_{1};
  net::executor_work_guard<net::io_context::executor_type> work_ = net::make_work_guard(ioc_);
  std::thread thread_;
  std::atomic<uint16_t> port_{0};

  // io thread only.
  std::shared_ptr<tcp::acceptor> acceptor_;
  std::map<uint64_t, std::function<void()>> sessions_;  // id -> closes its socket
  uint64_t next_session_ = 0;
  std::set<net::steady_timer*> timers_;
  bool shutting_down_ = false;

  mutable absl::Mutex mu_;
  std::map<std::string, Resource> products_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Resource> product_models_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, std::string>, Struct> coded_ ABSL_GUARDED_BY(mu_);
  // PutListedResource: the `updated` of those resources, for the lists' filter.
  std::map<std::pair<std::string, std::string>, int64_t> coded_updated_ ABSL_GUARDED_BY(mu_);
  // Reference entities and asset families: (parent kind, code) -> the parent's JSON.
  std::map<std::pair<std::string, std::string>, Struct> parents_ ABSL_GUARDED_BY(mu_);
  int fail_count_ ABSL_GUARDED_BY(mu_) = 0;
  int fail_status_ ABSL_GUARDED_BY(mu_) = 0;
  int fail_retry_after_ ABSL_GUARDED_BY(mu_) = -1;
  struct ArmedFault {
    Fault fault;  // its count goes down as it is used
    int seen;     // matching calls so far
  };
  std::vector<ArmedFault> faults_ ABSL_GUARDED_BY(mu_);
  std::chrono::milliseconds delay_ ABSL_GUARDED_BY(mu_){0};
  std::map<std::string, Clock::time_point> access_tokens_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> refresh_tokens_ ABSL_GUARDED_BY(mu_);
  std::vector<Request> requests_ ABSL_GUARDED_BY(mu_);
  std::string link_origin_ ABSL_GUARDED_BY(mu_);
  int token_requests_ ABSL_GUARDED_BY(mu_) = 0;
  int refresh_requests_ ABSL_GUARDED_BY(mu_) = 0;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int max_concurrent_seen_ ABSL_GUARDED_BY(mu_) = 0;
  int connections_accepted_ ABSL_GUARDED_BY(mu_) = 0;
};

FakePim::FakePim() : FakePim(Options{}) {}
FakePim::FakePim(Options options) : impl_(std::make_unique<Impl>(std::move(options))) {}
FakePim::~FakePim() = default;

uint16_t FakePim::port() const { return impl_->port(); }
std::string FakePim::base_url() const { return impl_->base_url(); }
const std::string& FakePim::cert_file() const { return impl_->cert_file(); }
const absl::TimeZone& FakePim::time_zone() const { return impl_->time_zone(); }
std::string FakePim::AkeneoTime(int64_t time_us) const { return impl_->AkeneoTime(time_us); }
void FakePim::SetLinkOrigin(const std::string& origin) { impl_->SetLinkOrigin(origin); }

void FakePim::PutProduct(const std::string& uuid, int64_t updated_us,
                         const std::string& fields_json, const std::string& identifier) {
  impl_->PutResource(true, uuid, updated_us, fields_json, identifier);
}
void FakePim::DeleteProduct(const std::string& uuid) { impl_->DeleteResource(true, uuid); }
void FakePim::PutProductModel(const std::string& code, int64_t updated_us,
                              const std::string& fields_json) {
  impl_->PutResource(false, code, updated_us, fields_json, "");
}
void FakePim::DeleteProductModel(const std::string& code) { impl_->DeleteResource(false, code); }
void FakePim::PutCodedResource(const std::string& kind, const std::string& id,
                               const std::string& fields_json) {
  impl_->PutCodedResource(kind, id, fields_json);
}
void FakePim::PutListedResource(const std::string& kind, const std::string& code,
                                int64_t updated_us, const std::string& fields_json) {
  impl_->PutListedResource(kind, code, updated_us, fields_json);
}

void FakePim::DeleteCodedResource(const std::string& kind, const std::string& id) {
  impl_->DeleteCodedResource(kind, id);
}
void FakePim::PutReferenceEntity(const std::string& code, const std::string& fields_json) {
  impl_->PutParent("reference_entity", code, fields_json);
}
void FakePim::DeleteReferenceEntity(const std::string& code) {
  impl_->DeleteParent("reference_entity", code);
}
void FakePim::PutAssetFamily(const std::string& code, const std::string& fields_json) {
  impl_->PutParent("asset_family", code, fields_json);
}
void FakePim::DeleteAssetFamily(const std::string& code) {
  impl_->DeleteParent("asset_family", code);
}

void FakePim::FailNextCalls(int count, int status, int retry_after_seconds) {
  impl_->FailNextCalls(count, status, retry_after_seconds);
}
void FakePim::InjectFault(Fault fault) { impl_->InjectFault(std::move(fault)); }
int FakePim::pending_faults() const { return impl_->pending_faults(); }
void FakePim::SetDelay(std::chrono::milliseconds delay) { impl_->SetDelay(delay); }
void FakePim::ExpireTokens() { impl_->ExpireTokens(); }
void FakePim::Stop() { impl_->Stop(); }
void FakePim::Resume() { impl_->Resume(); }

std::vector<FakePim::Request> FakePim::requests() const { return impl_->requests(); }
int FakePim::token_requests() const { return impl_->token_requests(); }
int FakePim::refresh_requests() const { return impl_->refresh_requests(); }
int FakePim::max_concurrent_seen() const { return impl_->max_concurrent_seen(); }
int FakePim::connections_accepted() const { return impl_->connections_accepted(); }
void FakePim::ClearRequests() { impl_->ClearRequests(); }
bool FakePim::IsValidAccessToken(const std::string& token) const {
  return impl_->IsValidAccessToken(token);
}
const FakePim::Options& FakePim::options() const { return impl_->options(); }

}  // namespace pimgate::testing
