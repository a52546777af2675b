// FakeEventPlatform: the management API on a TestHttpServer (its handler runs on the server's io
// thread and only touches state under mu_), and one delivery thread that sends CloudEvents and
// notification webhooks with HttpConnection. Everything it knows about Akeneo, and what it
// chose where Akeneo is silent, is listed in the header and in docs/event-platform-api.md.
#include "tests/testing/fake_event_platform.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <optional>
#include <set>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "pim/http_client.h"
#include "tests/testing/fake_pim.h"
#include "tests/testing/test_env.h"
#include "tests/testing/test_http_server.h"

namespace pimgate::testing {
namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;
using Response = TestHttpServer::Response;

constexpr char kApiPrefix[] = "/api/v1";
// ASSUMPTION (the replay endpoint could not be read): POST and GET .../subscriptions/{id}/replay.
constexpr char kReplaySegment[] = "replay";
constexpr char kUserAgent[] = "akeneo/event-platform";
constexpr char kRedacted[] = "***redacted***";
constexpr char kDataSchemaPrefix[] = "https://event.prd.sdk.akeneo.cloud/spec/";
// Documented validation limits (concepts, available-filters, notification-webhooks, OpenAPI).
constexpr std::size_t kMinSecret = 16;
constexpr std::size_t kMaxSecret = 256;
constexpr std::size_t kMaxHeaders = 5;
constexpr std::size_t kMaxHeaderName = 128;
constexpr std::size_t kMaxHeaderValue = 256;
constexpr std::size_t kMaxFilterLength = 500;
constexpr int kMaxFilterOperators = 10;
// Logs: 5-minute merge of identical errors (documented); page size (the fake's choice).
constexpr std::chrono::minutes kErrorLogMergeWindow{5};
constexpr int kMaxLogPage = 100;

// The event catalogue (available-events.md of akeneo/pim-api-docs at e4b968cc, 2025-08-11).
const std::set<std::string>& EventTypes() {
  static const std::set<std::string> types = [] {
    std::set<std::string> out;
    for (const char* kind : {"product", "product-model", "asset", "attribute", "attribute-group",
                             "attribute-option", "category", "family", "reference-entity-record"}) {
      for (const char* action : {"created", "updated", "deleted"}) {
        out.insert(absl::StrCat("com.akeneo.pim.v1.", kind, ".", action));
      }
    }
    for (const char* type :
         {"product.updated.delta", "product-model.updated.delta", "product.became-complete",
          "product.became-incomplete", "job.export.status-changed", "job.import.status-changed",
          "job.mass-edit.status-changed", "workflow.task.created", "workflow.task.completed",
          "app.deleted", "connection.deleted"}) {
      out.insert(absl::StrCat("com.akeneo.pim.v1.", type));
    }
    return out;
  }();
  return types;
}

// Product events that carry data.product.identifier only with send_product_identifier.
bool IsProductEvent(const std::string& type) {
  return absl::StartsWith(type, "com.akeneo.pim.v1.product.");
}

std::string Rfc3339Now() {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(), absl::UTCTimeZone());
}

Response JsonAnswer(int status, const json& body) {
  Response response;
  response.status = status;
  response.headers = {{"Content-Type", "application/json"}};
  response.body = body.dump();
  return response;
}

// Akeneo's error body (HTTPError of the OpenAPI).
Response Error(int status, const std::string& message) {
  json body;
  body["errors"] = json::array({json{{"message", message}}});
  return JsonAnswer(status, body);
}

// ---- Filters (available-filters) --------------------------------------------------------------

// A parsed subscription filter: user and user_type conditions are evaluated; conditions on the
// delta events' attribute/scope/channel/locale count as matching (the fake's choice).
struct FilterNode {
  enum Kind { kCondition, kAnd, kOr, kNot } kind = kCondition;
  std::string field;
  std::vector<std::string> values;  // = "x" is one value; in [...] several
  std::vector<std::shared_ptr<FilterNode>> children;

  bool Matches(const std::string& author, const std::string& author_type) const {
    switch (kind) {
      case kAnd:
        return children[0]->Matches(author, author_type) &&
               children[1]->Matches(author, author_type);
      case kOr:
        return children[0]->Matches(author, author_type) ||
               children[1]->Matches(author, author_type);
      case kNot:
        return !children[0]->Matches(author, author_type);
      case kCondition:
        break;
    }
    const std::string* actual = nullptr;
    if (field == "user") actual = &author;
    if (field == "user_type") actual = &author_type;
    if (actual == nullptr) return true;
    return std::find(values.begin(), values.end(), *actual) != values.end();
  }
};

class FilterParser {
 public:
  explicit FilterParser(const std::string& text) : text_(text) {}

  // The filter, or why it is refused.
  absl::StatusOr<std::shared_ptr<FilterNode>> Parse() {
    auto node = Or();
    if (!node.ok()) return node.status();
    SkipSpace();
    if (pos_ != text_.size()) return Bad("unexpected text");
    if (operators_ > kMaxFilterOperators) {
      return absl::InvalidArgumentError(absl::StrCat("The filter uses ", operators_,
                                                     " operators; at most ", kMaxFilterOperators,
                                                     " are allowed"));
    }
    return node;
  }

 private:
  absl::Status Bad(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("The filter is invalid: ", what, " at character ", pos_ + 1));
  }
  void SkipSpace() {
    while (pos_ < text_.size() && absl::ascii_isspace(static_cast<unsigned char>(text_[pos_]))) {
      ++pos_;
    }
  }
  bool Keyword(absl::string_view word) {
    SkipSpace();
    if (text_.compare(pos_, word.size(), word.data(), word.size()) != 0) return false;
    const size_t end = pos_ + word.size();
    if (end < text_.size() &&
        (absl::ascii_isalnum(static_cast<unsigned char>(text_[end])) || text_[end] == '_')) {
      return false;
    }
    pos_ = end;
    return true;
  }
  bool Symbol(char c) {
    SkipSpace();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  absl::StatusOr<std::string> Quoted() {
    SkipSpace();
    if (pos_ >= text_.size() || text_[pos_] != '"') return Bad("expected a value in double quotes");
    const size_t close = text_.find('"', pos_ + 1);
    if (close == std::string::npos) return Bad("unterminated value");
    std::string value = text_.substr(pos_ + 1, close - pos_ - 1);
    pos_ = close + 1;
    return value;
  }
  absl::StatusOr<std::shared_ptr<FilterNode>> Binary(
      FilterNode::Kind kind, absl::string_view word,
      absl::StatusOr<std::shared_ptr<FilterNode>> (FilterParser::*operand)()) {
    auto left = (this->*operand)();
    if (!left.ok()) return left;
    std::shared_ptr<FilterNode> node = *left;
    while (Keyword(word)) {
      ++operators_;
      auto right = (this->*operand)();
      if (!right.ok()) return right;
      auto joined = std::make_shared<FilterNode>();
      joined->kind = kind;
      joined->children = {node, *right};
      node = joined;
    }
    return node;
  }
  absl::StatusOr<std::shared_ptr<FilterNode>> Or() {
    return Binary(FilterNode::kOr, "or", &FilterParser::And);
  }
  absl::StatusOr<std::shared_ptr<FilterNode>> And() {
    return Binary(FilterNode::kAnd, "and", &FilterParser::Factor);
  }
  absl::StatusOr<std::shared_ptr<FilterNode>> Factor() {
    if (Keyword("not")) {
      ++operators_;
      auto operand = Factor();
      if (!operand.ok()) return operand;
      auto node = std::make_shared<FilterNode>();
      node->kind = FilterNode::kNot;
      node->children = {*operand};
      return node;
    }
    if (Symbol('(')) {
      auto inner = Or();
      if (!inner.ok()) return inner;
      if (!Symbol(')')) return Bad("expected )");
      return inner;
    }
    SkipSpace();
    const size_t start = pos_;
    while (pos_ < text_.size() &&
           (absl::ascii_isalpha(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_')) {
      ++pos_;
    }
    auto node = std::make_shared<FilterNode>();
    node->field = text_.substr(start, pos_ - start);
    static const std::set<std::string> kFields = {"user",  "user_type", "attribute",
                                                  "scope", "channel",   "locale"};
    if (!kFields.contains(node->field)) {
      pos_ = start;
      return Bad(node->field.empty() ? "expected a field"
                                     : absl::StrCat("unknown field \"", node->field, "\""));
    }
    if (Symbol('=')) {
      auto value = Quoted();
      if (!value.ok()) return value.status();
      node->values.push_back(*value);
      return node;
    }
    if (Keyword("in")) {
      ++operators_;
      if (!Symbol('[')) return Bad("expected [ after in");
      do {
        auto value = Quoted();
        if (!value.ok()) return value.status();
        node->values.push_back(*value);
      } while (Symbol(','));
      if (!Symbol(']')) return Bad("expected ]");
      return node;
    }
    return Bad("expected = or in");
  }

  const std::string& text_;
  size_t pos_ = 0;
  int operators_ = 0;
};

// ---- The model ----------------------------------------------------------------------------------

struct Subscriber {
  std::string id;
  std::string name;
  std::string subject;  // X-PIM-URL
  std::string client_id;
  std::string status = "active";
  std::string technical_email;
  std::vector<std::string> channels = {"email"};
  std::string webhook_url;
  std::string webhook_secret;
  std::string created_at;
  std::string updated_at;
};

// An event waiting to be delivered to one subscription (its body is already built for it).
struct PendingEvent {
  std::string id;
  std::string type;
  std::string body;
  int attempts = 0;  // failed attempts so far (429s excluded)
  Clock::time_point not_before{};
  std::optional<Clock::time_point> throttled_since;
  std::string replay_id;
  Clock::time_point captured_at{};
};

struct Subscription {
  std::string id;
  std::string subscriber_id;
  std::string source = "pim";
  std::string subject;
  std::string type;
  std::string status = "active";
  std::vector<std::string> events;
  json config;  // with its secrets
  std::string filter;
  std::shared_ptr<FilterNode> filter_node;
  bool send_product_identifier = false;
  std::string created_at;
  std::string updated_at;
  // Delivery.
  std::deque<PendingEvent> queue;
  std::vector<PendingEvent> retrying;  // waiting for their retry time
  std::vector<PendingEvent> captured;  // while suspended
  double rate = 0;
  Clock::time_point next_send{};
  bool in_flight = false;
  std::deque<std::pair<Clock::time_point, bool>> outcomes;  // for the success rate
  Clock::time_point suspended_at{};
  std::string last_replay_id;
};

struct Replay {
  std::string id;
  std::string subscription_id;
  std::string status = "in_progress";
  int64_t total = 0;
  int64_t delivered = 0;
  int64_t failed = 0;
  std::string created_at;
  std::string completed_at;
};

struct NotificationJob {
  std::string subscriber_id;
  std::string subscription_id;
  std::string type;
  std::string url;
  std::string secret;
  std::string body;
  int attempts = 0;
  Clock::time_point due{};
};

struct LogEntry {
  json entry;
  Clock::time_point at;
};

std::string Destination(const Subscription& s) {
  if (s.type == "https") return s.config.value("url", "");
  if (s.type == "pubsub") {
    return absl::StrCat("projects/", s.config.value("project_id", ""), "/topics/",
                        s.config.value("topic_id", ""));
  }
  return absl::StrCat(s.config.value("broker", ""), "/", s.config.value("topic", ""));
}

bool IsPrintableAscii(const std::string& text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

}  // namespace

class FakeEventPlatform::Impl {
 public:
  explicit Impl(Options options)
      : options_(std::move(options)),
        server_(TestHttpServer::Options{options_.tls},
                [this](const TestHttpServer::Request& request) { return Handle(request); }) {
    permission_ = options_.permission;
    engine_ = std::thread([this] { EngineLoop(); });
  }

  ~Impl() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
      wake_ = true;
    }
    stopping_.store(true);
    engine_.join();
  }

  uint16_t port() const { return server_.port(); }
  std::string api_url() const { return absl::StrCat(server_.base_url(), kApiPrefix); }
  const std::string& cert_file() const { return server_.cert_file(); }

  // ---- Hooks ----

  std::string Publish(Event event) {
    const std::string id = event.id.empty() ? NewUuid() : event.id;
    const std::string time = event.time.empty() ? absl::FormatTime("%Y-%m-%dT%H:%M:%SZ",
                                                                   absl::Now(), absl::UTCTimeZone())
                                                : event.time;
    json data = json::parse(event.data_json, nullptr, /*allow_exceptions=*/false);
    if (!data.is_object()) {
      ADD_FAILURE() << "FakeEventPlatform::Publish: data_json is not a JSON object";
      return id;
    }
    const std::string pim_url = event.pim_url.empty() ? PimUrl() : event.pim_url;
    absl::MutexLock lock(&mu_);
    for (auto& [sub_id, s] : subscriptions_) {
      // Only HTTPS destinations are delivered (and captured) by the fake.
      if (s.subject != pim_url || s.type != "https" ||
          (s.status != "active" && s.status != "suspended")) {
        continue;
      }
      if (std::find(s.events.begin(), s.events.end(), event.type) == s.events.end()) continue;
      if (s.filter_node != nullptr &&
          !s.filter_node->Matches(event.author_identifier, event.author_type)) {
        continue;
      }
      json payload = data;
      if (IsProductEvent(event.type) && !s.send_product_identifier && payload.contains("product") &&
          payload["product"].is_object()) {
        payload["product"].erase("identifier");
      }
      payload["author"] =
          json{{"identifier", event.author_identifier}, {"type", event.author_type}};
      ordered_json cloud_event;
      cloud_event["specversion"] = "1.0";
      cloud_event["id"] = id;
      cloud_event["source"] = "akeneo-event-platform";
      cloud_event["type"] = event.type;
      cloud_event["subject"] = s.id;
      cloud_event["datacontenttype"] = "application/json";
      cloud_event["dataschema"] = absl::StrCat(kDataSchemaPrefix, event.type, ".schema.json");
      cloud_event["time"] = time;
      cloud_event["data"] = ordered_json::parse(payload.dump());
      PendingEvent pending;
      pending.id = id;
      pending.type = event.type;
      pending.body = cloud_event.dump();
      if (s.status == "active") {
        s.queue.push_back(std::move(pending));
      } else if (Clock::now() - s.suspended_at < options_.capture_window) {
        pending.captured_at = Clock::now();
        s.captured.push_back(std::move(pending));
      }
    }
    wake_ = true;
    return id;
  }

  void Suspend(const std::string& subscription_id, const std::string& reason) {
    absl::MutexLock lock(&mu_);
    auto it = subscriptions_.find(subscription_id);
    if (it == subscriptions_.end()) {
      ADD_FAILURE() << "FakeEventPlatform::Suspend: no subscription " << subscription_id;
      return;
    }
    SuspendLocked(it->second, /*by_user=*/false, reason);
  }

  void RevokeConnection() {
    absl::MutexLock lock(&mu_);
    revoked_ = true;
    for (auto& [id, subscriber] : subscribers_) {
      if (subscriber.client_id != options_.client_id || subscriber.status != "active") continue;
      subscriber.status = "revoked";
      for (auto& [sub_id, s] : subscriptions_) {
        if (s.subscriber_id != id || s.status == "deleted" || s.status == "revoked") continue;
        s.status = "revoked";
        s.queue.clear();
        s.retrying.clear();
        s.captured.clear();  // revoked subscriptions are not captured
        Notify(subscriber, s, "subscription.revoked", "The connection was removed from the PIM");
      }
    }
    wake_ = true;
  }

  void SetPermission(bool granted) {
    absl::MutexLock lock(&mu_);
    permission_ = granted;
    if (granted) return;
    for (auto& [id, s] : subscriptions_) {
      if (s.status == "active") {
        SuspendLocked(s, /*by_user=*/false,
                      "Insufficient rights: the Event Platform permission "
                      "of the connection was removed");
      }
    }
  }

  void FailNextCalls(int count, int status, int retry_after_seconds, bool then_process) {
    absl::MutexLock lock(&mu_);
    fail_count_ = count;
    fail_status_ = status;
    fail_retry_after_ = retry_after_seconds;
    fail_then_process_ = then_process;
  }

  // ---- Observations ----
  std::vector<ApiCall> api_calls() const {
    absl::MutexLock lock(&mu_);
    return api_calls_;
  }
  std::vector<Delivery> deliveries() const {
    absl::MutexLock lock(&mu_);
    return deliveries_;
  }
  std::vector<Notification> notifications() const {
    absl::MutexLock lock(&mu_);
    return notifications_;
  }
  std::string SubscriptionStatus(const std::string& id) const {
    absl::MutexLock lock(&mu_);
    auto it = subscriptions_.find(id);
    return it == subscriptions_.end() ? "" : it->second.status;
  }
  int CapturedCount(const std::string& id) const {
    absl::MutexLock lock(&mu_);
    auto it = subscriptions_.find(id);
    if (it == subscriptions_.end()) return 0;
    return static_cast<int>(std::count_if(
        it->second.captured.begin(), it->second.captured.end(), [this](const PendingEvent& e) {
          return Clock::now() - e.captured_at < options_.capture_window;
        }));
  }
  int PendingCount() const {
    absl::MutexLock lock(&mu_);
    int count = 0;
    for (const auto& [id, s] : subscriptions_) {
      count += static_cast<int>(s.queue.size() + s.retrying.size()) + (s.in_flight ? 1 : 0);
    }
    return count + static_cast<int>(notification_jobs_.size()) + (notifying_ ? 1 : 0);
  }
  int subscriber_count() const {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(
        std::count_if(subscribers_.begin(), subscribers_.end(),
                      [](const auto& e) { return e.second.status != "deleted"; }));
  }

 private:
  std::string PimUrl() const {
    return options_.pim != nullptr ? options_.pim->base_url() : options_.pim_url;
  }
  std::string ClientId() const {
    return options_.pim != nullptr ? options_.pim->options().client_id : options_.client_id;
  }

  // ---- The management API (io thread) ----

  Response Handle(const TestHttpServer::Request& request) {
    Response response = Route(request);
    absl::MutexLock lock(&mu_);
    api_calls_.push_back(ApiCall{request.method, request.target, response.status, response.body});
    return response;
  }

  Response Route(const TestHttpServer::Request& request) {
    const std::string path = request.target.substr(0, request.target.find('?'));
    const std::string query =
        request.target.size() > path.size() ? request.target.substr(path.size() + 1) : "";
    absl::string_view rest = path;
    if (!absl::ConsumePrefix(&rest, kApiPrefix)) {
      return Error(404, absl::StrCat("No route for ", request.method, " ", path));
    }
    std::vector<std::string> segments = absl::StrSplit(rest, '/', absl::SkipEmpty());

    // Credentials first: the OpenAPI's 401 is "tenant context not found or invalid
    // credentials".
    const std::string pim_url = request.Header("X-PIM-URL");
    const std::string client_id = request.Header("X-PIM-CLIENT-ID");
    const std::string token = request.Header("X-PIM-TOKEN");
    if (pim_url.empty())
      return Error(401, "Tenant context not found: the X-PIM-URL header is missing");
    if (client_id.empty()) {
      return Error(401, "Tenant context not found: the X-PIM-CLIENT-ID header is missing");
    }
    if (token.empty()) return Error(401, "Invalid credentials: the X-PIM-TOKEN header is missing");
    if (pim_url != PimUrl()) {
      return Error(401, absl::StrCat("Tenant context not found for X-PIM-URL ", pim_url));
    }
    const bool token_ok =
        options_.pim != nullptr ? options_.pim->IsValidAccessToken(token) : token == options_.token;
    bool revoked = false;
    {
      absl::MutexLock lock(&mu_);
      revoked = revoked_;
    }
    if (client_id != ClientId() || !token_ok || revoked) {
      return Error(401,
                   "Invalid credentials: the PIM access token is not valid for this client "
                   "id and PIM");
    }

    bool process = true;
    std::optional<Response> injected;
    {
      absl::MutexLock lock(&mu_);
      if (fail_count_ > 0) {
        --fail_count_;
        injected = Error(fail_status_, fail_status_ == 429
                                           ? "Too many requests"
                                           : absl::StrCat("Injected error ", fail_status_));
        if (fail_status_ == 429 && fail_retry_after_ >= 0) {
          injected->headers.emplace_back("Retry-After", absl::StrCat(fail_retry_after_));
        }
        process = fail_then_process_;
      }
    }
    if (!process) return *injected;

    const bool has_body = request.method == "POST" || request.method == "PATCH";
    json body;
    if (has_body && !request.body.empty()) {
      body = json::parse(request.body, nullptr, /*allow_exceptions=*/false);
      if (body.is_discarded()) return Error(400, "The request body is not valid JSON");
    }
    Response response = Dispatch(request.method, segments, query, body, request.body.empty());
    return injected.has_value() ? *injected : response;
  }

  Response Dispatch(const std::string& method, const std::vector<std::string>& seg,
                    const std::string& query, const json& body, bool empty_body) {
    const auto not_allowed = [&] {
      return Error(405, absl::StrCat("Method ", method, " is not allowed here"));
    };
    absl::MutexLock lock(&mu_);
    if (seg.size() == 1 && seg[0] == "logs") {
      if (method != "GET") return not_allowed();
      return Logs(query);
    }
    if (seg.empty() || seg[0] != "subscribers") return Error(404, "No such route");
    if (seg.size() == 1) {
      if (method == "POST") return CreateSubscriber(body, empty_body);
      if (method == "GET") return ListSubscribers();
      return not_allowed();
    }
    Subscriber* subscriber = FindSubscriber(seg[1]);
    if (subscriber == nullptr) return Error(404, absl::StrCat("Subscriber ", seg[1], " not found"));
    if (seg.size() == 2) {
      if (method == "GET") return JsonAnswer(200, SubscriberJson(*subscriber));
      if (method == "PATCH") return UpdateSubscriber(*subscriber, body, empty_body);
      if (method == "DELETE") return DeleteSubscriber(*subscriber);
      return not_allowed();
    }
    if (seg[2] != "subscriptions") return Error(404, "No such route");
    if (seg.size() == 3) {
      if (method == "POST") return CreateSubscription(*subscriber, body, empty_body);
      if (method == "GET") return ListSubscriptions(*subscriber);
      return not_allowed();
    }
    auto it = subscriptions_.find(seg[3]);
    if (it == subscriptions_.end() || it->second.subscriber_id != subscriber->id) {
      return Error(404, absl::StrCat("Subscription ", seg[3], " not found"));
    }
    Subscription& s = it->second;
    if (seg.size() == 4) {
      if (method == "GET") return JsonAnswer(200, SubscriptionJson(s));
      if (method == "PATCH") return UpdateSubscription(*subscriber, s, body, empty_body);
      if (method == "DELETE") return DeleteSubscription(s);
      return not_allowed();
    }
    if (seg.size() == 5 && seg[4] == "suspend") {
      if (method != "POST") return not_allowed();
      if (s.status == "deleted" || s.status == "revoked") {
        return Error(409, absl::StrCat("Subscription is ", s.status));
      }
      if (s.status == "active") SuspendLocked(s, /*by_user=*/true, "Suspended by the user");
      return JsonAnswer(202, SubscriptionJson(s));
    }
    if (seg.size() == 5 && seg[4] == "resume") {
      if (method != "POST") return not_allowed();
      if (s.status == "deleted" || s.status == "revoked") {
        return Error(409, absl::StrCat("Subscription is ", s.status));
      }
      if (!permission_) {
        return Error(403,
                     "Not allowed: the connection does not have the Event Platform "
                     "permission");
      }
      if (s.status == "suspended") ResumeLocked(*subscriber, s);
      return JsonAnswer(202, SubscriptionJson(s));
    }
    if (seg.size() == 5 && seg[4] == kReplaySegment) {
      if (method == "POST") return StartReplay(s);
      if (method == "GET") {
        auto replay = replays_.find(s.last_replay_id);
        if (replay == replays_.end()) return Error(404, "This subscription has no replay");
        return JsonAnswer(200, ReplayJson(replay->second));
      }
      return not_allowed();
    }
    return Error(404, "No such route");
  }

  Subscriber* FindSubscriber(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = subscribers_.find(id);
    if (it == subscribers_.end() || it->second.status == "deleted" ||
        it->second.client_id != ClientId() || it->second.subject != PimUrl()) {
      return nullptr;
    }
    return &it->second;
  }

  // ---- Subscribers ----

  json SubscriberJson(const Subscriber& s) const {
    json contact = json::object();
    if (!s.technical_email.empty()) contact["technical_email"] = s.technical_email;
    contact["notification_channels"] = s.channels;
    if (!s.webhook_url.empty()) contact["notification_webhook_url"] = s.webhook_url;
    return json{{"id", s.id},
                {"name", s.name},
                {"subject", s.subject},
                {"status", s.status},
                {"client_id", s.client_id},
                {"contact", contact},
                {"created_at", s.created_at},
                {"updated_at", s.updated_at}};
  }

  // Validates and applies a subscriber payload (creation when `creating`).
  std::optional<Response> ApplySubscriber(Subscriber& s, const json& body, bool creating) {
    if (!body.is_object()) return Error(400, "The request body must be a JSON object");
    for (auto it = body.begin(); it != body.end(); ++it) {
      if (it.key() != "name" && it.key() != "contact") {
        return Error(400, absl::StrCat("Unknown property \"", it.key(), "\""));
      }
    }
    if (body.contains("name")) {
      if (!body["name"].is_string() || body["name"].get<std::string>().empty()) {
        return Error(400, "name must be a non-empty string");
      }
      s.name = body["name"];
    } else if (creating) {
      return Error(400, "name is required");
    }
    if (body.contains("contact")) {
      const json& contact = body["contact"];
      if (!contact.is_object()) return Error(400, "contact must be an object");
      for (auto it = contact.begin(); it != contact.end(); ++it) {
        static const std::set<std::string> kKeys = {"technical_email", "notification_channels",
                                                    "notification_webhook_url",
                                                    "notification_webhook_secret"};
        if (!kKeys.contains(it.key())) {
          return Error(400, absl::StrCat("Unknown property \"contact.", it.key(), "\""));
        }
      }
      if (contact.contains("technical_email")) {
        const json& email = contact["technical_email"];
        const std::string text = email.is_string() ? email.get<std::string>() : "";
        const size_t at = text.find('@');
        if (at == std::string::npos || at == 0 || text.find('.', at) == std::string::npos) {
          return Error(400, "contact.technical_email must be a valid email address");
        }
        s.technical_email = text;
      }
      if (contact.contains("notification_channels")) {
        const json& channels = contact["notification_channels"];
        if (!channels.is_array())
          return Error(400, "contact.notification_channels must be an array");
        std::vector<std::string> list;
        for (const json& channel : channels) {
          if (!channel.is_string() || (channel != "email" && channel != "webhook")) {
            return Error(400, "contact.notification_channels accepts \"email\" and \"webhook\"");
          }
          list.push_back(channel);
        }
        // [] resets to the default (notification-webhooks).
        s.channels = list.empty() ? std::vector<std::string>{"email"} : list;
      }
      if (contact.contains("notification_webhook_url")) {
        const json& url = contact["notification_webhook_url"];
        if (!url.is_string() || !AllowedUrl(url.get<std::string>())) {
          return Error(400, "contact.notification_webhook_url must be an HTTPS URL");
        }
        s.webhook_url = url;
      }
      if (contact.contains("notification_webhook_secret")) {
        const json& secret = contact["notification_webhook_secret"];
        const std::size_t size = secret.is_string() ? secret.get<std::string>().size() : 0;
        if (size < kMinSecret || size > kMaxSecret) {
          return Error(400, "contact.notification_webhook_secret must be 16 to 256 characters");
        }
        s.webhook_secret = secret;
      }
    }
    if (std::find(s.channels.begin(), s.channels.end(), "webhook") != s.channels.end() &&
        (s.webhook_url.empty() || s.webhook_secret.empty())) {
      return Error(400,
                   "contact.notification_webhook_url and contact.notification_webhook_secret "
                   "are required when \"webhook\" is a notification channel");
    }
    return std::nullopt;
  }

  Response CreateSubscriber(const json& body, bool empty_body) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (empty_body) return Error(400, "The request body is required");
    const int existing = static_cast<int>(
        std::count_if(subscribers_.begin(), subscribers_.end(), [this](const auto& e) {
          return e.second.subject == PimUrl() && e.second.status != "deleted";
        }));
    Subscriber s;
    if (std::optional<Response> bad = ApplySubscriber(s, body, true); bad.has_value()) return *bad;
    if (existing >= options_.max_subscribers_per_pim) {
      return Error(409, absl::StrCat("Maximum number of subscribers reached (",
                                     options_.max_subscribers_per_pim, " per PIM)"));
    }
    s.id = NewUuid();
    s.subject = PimUrl();
    s.client_id = ClientId();
    s.created_at = s.updated_at = Rfc3339Now();
    AddLog(ActionLog("subscriber_created", s.id, ""));
    const json answer = SubscriberJson(s);
    subscribers_[s.id] = std::move(s);
    return JsonAnswer(201, answer);
  }

  Response ListSubscribers() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    json list = json::array();
    for (const auto& [id, s] : subscribers_) {
      if (s.status == "active" && s.client_id == ClientId() && s.subject == PimUrl()) {
        list.push_back(SubscriberJson(s));
      }
    }
    return JsonAnswer(200, list);
  }

  Response UpdateSubscriber(Subscriber& s, const json& body, bool empty_body)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (empty_body) return Error(400, "The request body is required");
    Subscriber updated = s;
    if (std::optional<Response> bad = ApplySubscriber(updated, body, false); bad.has_value()) {
      return *bad;
    }
    updated.updated_at = Rfc3339Now();
    s = std::move(updated);
    AddLog(ActionLog("subscriber_updated", s.id, ""));
    return JsonAnswer(200, SubscriberJson(s));
  }

  Response DeleteSubscriber(Subscriber& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    s.status = "deleted";
    s.updated_at = Rfc3339Now();
    for (auto& [id, sub] : subscriptions_) {
      if (sub.subscriber_id == s.id) DeleteLocked(sub);
    }
    AddLog(ActionLog("subscriber_deleted", s.id, ""));
    return JsonAnswer(200, SubscriberJson(s));
  }

  // ---- Subscriptions ----

  bool AllowedUrl(const std::string& url) const {
    return absl::StartsWith(url, "https://") ||
           (options_.allow_http_destinations && absl::StartsWith(url, "http://"));
  }

  json SubscriptionJson(const Subscription& s) const {
    json config = s.config;
    if (config.contains("secret") && config["secret"].is_object()) {
      for (auto& [key, value] : config["secret"].items()) value = kRedacted;
    }
    if (config.contains("headers") && config["headers"].is_object()) {
      for (auto& [key, value] : config["headers"].items()) value = kRedacted;
    }
    if (config.contains("sasl_auth") && config["sasl_auth"].contains("password")) {
      config["sasl_auth"]["password"] = kRedacted;
    }
    if (config.contains("tls") && config["tls"].contains("client_key_pem")) {
      config["tls"]["client_key_pem"] = kRedacted;
    }
    json out = {{"id", s.id},
                {"subscriber_id", s.subscriber_id},
                {"source", s.source},
                {"subject", s.subject},
                {"type", s.type},
                {"events", s.events},
                {"status", s.status},
                {"config", config},
                {"send_product_identifier", s.send_product_identifier},
                {"created_at", s.created_at},
                {"updated_at", s.updated_at}};
    if (!s.filter.empty()) out["filter"] = s.filter;
    return out;
  }

  std::optional<Response> CheckString(const json& object, const char* key, const char* where) {
    if (!object.contains(key) || !object[key].is_string() ||
        object[key].get<std::string>().empty()) {
      return Error(400, absl::StrCat(where, key, " is required and must be a non-empty string"));
    }
    return std::nullopt;
  }

  // Validates a whole subscription (after a PATCH was merged into it).
  std::optional<Response> Validate(const Subscription& s) {
    if (s.source != "pim") return Error(400, "source must be \"pim\" (the only source available)");
    if (s.subject != PimUrl()) {
      return Error(400, absl::StrCat("subject must be the PIM's URL (X-PIM-URL), ", PimUrl()));
    }
    if (s.events.empty()) return Error(400, "events must list at least one event type");
    for (const std::string& type : s.events) {
      if (!EventTypes().contains(type)) {
        return Error(400, absl::StrCat("Unknown event type \"", type, "\""));
      }
    }
    if (s.type != "https" && s.type != "pubsub" && s.type != "kafka") {
      return Error(400, "type must be \"https\", \"pubsub\" or \"kafka\"");
    }
    const json& config = s.config;
    if (!config.is_object()) return Error(400, "config is required and must be an object");
    if (s.type == "https") {
      if (std::optional<Response> bad = CheckString(config, "url", "config."); bad) return bad;
      if (!AllowedUrl(config["url"])) return Error(400, "config.url must be an HTTPS URL");
      if (!config.contains("secret") || !config["secret"].is_object()) {
        return Error(400, "config.secret is required for an https subscription");
      }
      for (const char* which : {"primary", "secondary"}) {
        const json& secret = config["secret"];
        if (!secret.contains(which)) {
          if (std::string(which) == "primary")
            return Error(400, "config.secret.primary is required");
          continue;
        }
        const std::size_t size =
            secret[which].is_string() ? secret[which].get<std::string>().size() : 0;
        if (size < kMinSecret || size > kMaxSecret) {
          return Error(400, absl::StrCat("config.secret.", which,
                                         " must be a string of 16 to 256 characters"));
        }
      }
    } else if (s.type == "pubsub") {
      for (const char* key : {"project_id", "topic_id"}) {
        if (std::optional<Response> bad = CheckString(config, key, "config."); bad) return bad;
      }
    } else {
      for (const char* key : {"broker", "topic"}) {
        if (std::optional<Response> bad = CheckString(config, key, "config."); bad) return bad;
      }
      if (!config.contains("sasl_auth") || !config["sasl_auth"].is_object()) {
        return Error(400, "config.sasl_auth is required for a kafka subscription");
      }
      const json& sasl = config["sasl_auth"];
      for (const char* key : {"mechanism", "username", "password"}) {
        if (std::optional<Response> bad = CheckString(sasl, key, "config.sasl_auth."); bad) {
          return bad;
        }
      }
      if (sasl["mechanism"] != "plain" && sasl["mechanism"] != "scram") {
        return Error(400, "config.sasl_auth.mechanism must be \"plain\" or \"scram\"");
      }
      if (sasl["mechanism"] == "scram" &&
          (!sasl.contains("scram_variant") ||
           (sasl["scram_variant"] != "sha-256" && sasl["scram_variant"] != "sha-512"))) {
        return Error(400, "config.sasl_auth.scram_variant must be \"sha-256\" or \"sha-512\"");
      }
      if (config.contains("tls")) {
        for (const char* key : {"server_name", "ca_pem", "client_cert_pem", "client_key_pem"}) {
          if (std::optional<Response> bad = CheckString(config["tls"], key, "config.tls."); bad) {
            return bad;
          }
        }
      }
    }
    if (config.contains("headers")) {
      const json& headers = config["headers"];
      if (!headers.is_object()) return Error(400, "config.headers must be an object");
      if (headers.size() > kMaxHeaders) {
        return Error(400, absl::StrCat("config.headers: at most ", kMaxHeaders,
                                       " custom headers are allowed, got ", headers.size()));
      }
      for (auto it = headers.begin(); it != headers.end(); ++it) {
        const std::string& name = it.key();
        if (name.empty() || name.size() > kMaxHeaderName ||
            !std::all_of(name.begin(), name.end(), [](char c) {
              return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-';
            })) {
          return Error(400, absl::StrCat("config.headers: invalid header name \"", name,
                                         "\" (a-zA-Z0-9- only, at most 128 characters)"));
        }
        const std::string lower = absl::AsciiStrToLower(name);
        static const std::set<std::string> kReserved = {
            "content-type", "user-agent", "x-correlation-id", "host", "authorization", "cookie"};
        if (kReserved.contains(lower) || absl::StartsWith(lower, "x-akeneo-signature-")) {
          return Error(400, absl::StrCat("config.headers: \"", name, "\" is a reserved header"));
        }
        if (!it->is_string() || it->get<std::string>().size() > kMaxHeaderValue ||
            !IsPrintableAscii(it->get<std::string>())) {
          return Error(400, absl::StrCat("config.headers: the value of \"", name,
                                         "\" must be printable ASCII of at most 256 characters"));
        }
      }
    }
    return std::nullopt;
  }

  // Applies a payload's fields to `s`: every field for a creation, a merge for a PATCH.
  std::optional<Response> ApplySubscription(Subscription& s, const json& body, bool creating) {
    if (!body.is_object()) return Error(400, "The request body must be a JSON object");
    static const std::set<std::string> kKeys = {
        "source", "subject", "events", "type", "config", "filter", "send_product_identifier"};
    for (auto it = body.begin(); it != body.end(); ++it) {
      if (!kKeys.contains(it.key())) {
        return Error(400, absl::StrCat("Unknown property \"", it.key(), "\""));
      }
    }
    if (body.contains("source")) {
      if (!body["source"].is_string()) return Error(400, "source must be a string");
      s.source = body["source"];
    }
    if (body.contains("subject")) {
      if (!body["subject"].is_string()) return Error(400, "subject must be a string");
      s.subject = body["subject"];
    }
    if (body.contains("events")) {
      if (!body["events"].is_array()) return Error(400, "events must be an array of event types");
      s.events.clear();
      for (const json& type : body["events"]) {
        if (!type.is_string()) return Error(400, "events must be an array of event types");
        s.events.push_back(type);
      }
    } else if (creating) {
      return Error(400, "events is required");
    }
    if (body.contains("type")) {
      if (!body["type"].is_string()) return Error(400, "type must be a string");
      if (!creating && body["type"] != s.type) return Error(400, "type cannot be changed");
      s.type = body["type"];
    } else if (creating) {
      return Error(400, "type is required");
    }
    if (body.contains("config")) {
      if (!body["config"].is_object()) return Error(400, "config must be an object");
      if (creating || !s.config.is_object()) {
        s.config = body["config"];
      } else {
        for (auto it = body["config"].begin(); it != body["config"].end(); ++it) {
          s.config[it.key()] = *it;
        }
      }
    } else if (creating) {
      return Error(400, "config is required");
    }
    if (body.contains("filter")) {
      const json& filter = body["filter"];
      if (!filter.is_string()) return Error(400, "filter must be a string");
      const std::string text = filter;
      if (text.size() > kMaxFilterLength) {
        return Error(400, absl::StrCat("filter is ", text.size(), " characters long; at most ",
                                       kMaxFilterLength, " are allowed"));
      }
      if (text.empty()) {
        s.filter_node = nullptr;
      } else {
        FilterParser parser(text);
        absl::StatusOr<std::shared_ptr<FilterNode>> node = parser.Parse();
        if (!node.ok()) return Error(400, std::string(node.status().message()));
        s.filter_node = *node;
      }
      s.filter = text;
    }
    if (body.contains("send_product_identifier")) {
      if (!body["send_product_identifier"].is_boolean()) {
        return Error(400, "send_product_identifier must be a boolean");
      }
      s.send_product_identifier = body["send_product_identifier"];
    }
    return Validate(s);
  }

  Response CreateSubscription(Subscriber& subscriber, const json& body, bool empty_body)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (empty_body) return Error(400, "The request body is required");
    if (!permission_) {
      return Error(403, "Not allowed: the connection does not have the Event Platform permission");
    }
    Subscription s;
    s.subject = PimUrl();
    if (std::optional<Response> bad = ApplySubscription(s, body, true); bad.has_value()) {
      return *bad;
    }
    const int existing = static_cast<int>(
        std::count_if(subscriptions_.begin(), subscriptions_.end(), [&](const auto& e) {
          return e.second.subscriber_id == subscriber.id && e.second.status != "deleted";
        }));
    if (existing >= options_.max_subscriptions_per_subscriber) {
      return Error(409,
                   absl::StrCat("Maximum number of subscriptions reached (",
                                options_.max_subscriptions_per_subscriber, " per subscriber)"));
    }
    s.id = NewUuid();
    s.subscriber_id = subscriber.id;
    s.created_at = s.updated_at = Rfc3339Now();
    s.rate = options_.max_rate;
    AddLog(ActionLog("subscription_created", subscriber.id, s.id));
    const json answer = SubscriptionJson(s);
    subscriptions_[s.id] = std::move(s);
    return JsonAnswer(201, answer);
  }

  Response ListSubscriptions(const Subscriber& subscriber) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    json list = json::array();
    for (const auto& [id, s] : subscriptions_) {
      // "Returns the list of subscriptions that are either active and suspended."
      if (s.subscriber_id == subscriber.id && (s.status == "active" || s.status == "suspended")) {
        list.push_back(SubscriptionJson(s));
      }
    }
    return JsonAnswer(200, list);
  }

  Response UpdateSubscription(const Subscriber& subscriber, Subscription& s, const json& body,
                              bool empty_body) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (s.status == "deleted" || s.status == "revoked") {
      return Error(409, absl::StrCat("Subscription is ", s.status));
    }
    if (empty_body) return Error(400, "The request body is required");
    Subscription updated;
    // Copy the configuration only: the delivery state stays with `s`.
    updated.source = s.source;
    updated.subject = s.subject;
    updated.type = s.type;
    updated.events = s.events;
    updated.config = s.config;
    updated.filter = s.filter;
    updated.filter_node = s.filter_node;
    updated.send_product_identifier = s.send_product_identifier;
    if (std::optional<Response> bad = ApplySubscription(updated, body, false); bad.has_value()) {
      return *bad;
    }
    s.source = updated.source;
    s.events = updated.events;
    s.config = updated.config;
    s.filter = updated.filter;
    s.filter_node = updated.filter_node;
    s.send_product_identifier = updated.send_product_identifier;
    s.updated_at = Rfc3339Now();
    AddLog(ActionLog("subscription_updated", subscriber.id, s.id));
    return JsonAnswer(200, SubscriptionJson(s));
  }

  void DeleteLocked(Subscription& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    s.status = "deleted";
    s.updated_at = Rfc3339Now();
    s.queue.clear();
    s.retrying.clear();
    s.captured.clear();  // deleted subscriptions are not captured
  }

  Response DeleteSubscription(Subscription& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (s.status != "deleted") {
      DeleteLocked(s);
      AddLog(ActionLog("subscription_deleted", s.subscriber_id, s.id));
    }
    return JsonAnswer(200, SubscriptionJson(s));
  }

  // ---- Suspension, resumption, replay ----

  void SuspendLocked(Subscription& s, bool by_user, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (s.status != "active") return;
    s.status = "suspended";
    s.updated_at = Rfc3339Now();
    s.suspended_at = Clock::now();
    // What was on its way is captured with what follows.
    const auto capture = [&](PendingEvent event) {
      event.captured_at = Clock::now();
      event.throttled_since.reset();
      event.not_before = {};
      if (!event.replay_id.empty()) {
        auto replay = replays_.find(event.replay_id);
        if (replay != replays_.end()) replay->second.status = "interrupted";
        event.replay_id.clear();
      }
      s.captured.push_back(std::move(event));
    };
    for (PendingEvent& event : s.queue) capture(std::move(event));
    for (PendingEvent& event : s.retrying) capture(std::move(event));
    s.queue.clear();
    s.retrying.clear();
    AddLog(ActionLog(
        by_user ? "subscription_suspended_by_the_user" : "subscription_suspended_by_the_system",
        s.subscriber_id, s.id));
    auto subscriber = subscribers_.find(s.subscriber_id);
    if (subscriber != subscribers_.end()) {
      Notify(subscriber->second, s,
             by_user ? "subscription.suspended.user" : "subscription.suspended.system", reason);
    }
    wake_ = true;
  }

  void ResumeLocked(const Subscriber& subscriber, Subscription& s)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    s.status = "active";
    s.updated_at = Rfc3339Now();
    s.outcomes.clear();
    s.rate = options_.max_rate;
    AddLog(ActionLog("subscription_resumed_by_the_user", s.subscriber_id, s.id));
    Notify(subscriber, s, "subscription.resumed", "Resumed by the user");
    wake_ = true;
  }

  json ReplayJson(const Replay& r) const {
    json out = {{"id", r.id},
                {"subscription_id", r.subscription_id},
                {"status", r.status},
                {"total", r.total},
                {"delivered", r.delivered},
                {"failed", r.failed},
                {"created_at", r.created_at}};
    if (!r.completed_at.empty()) out["completed_at"] = r.completed_at;
    return out;
  }

  Response StartReplay(Subscription& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (s.status == "deleted" || s.status == "revoked") {
      return Error(409, absl::StrCat("Subscription is ", s.status));
    }
    if (s.type != "https") {
      return Error(400, "Replay is available for subscriptions with an HTTPS destination only");
    }
    if (s.status != "active") {
      return Error(409, "The subscription is suspended: resume it before replaying its events");
    }
    if (auto last = replays_.find(s.last_replay_id);
        last != replays_.end() && last->second.status == "in_progress") {
      return Error(409, "A replay of this subscription is already in progress");
    }
    Replay replay;
    replay.id = NewUuid();
    replay.subscription_id = s.id;
    replay.created_at = Rfc3339Now();
    // Captured events are kept capture_window each.
    for (PendingEvent& event : s.captured) {
      if (Clock::now() - event.captured_at >= options_.capture_window) continue;
      event.replay_id = replay.id;
      event.attempts = 0;
      s.queue.push_back(std::move(event));
      ++replay.total;
    }
    s.captured.clear();
    if (replay.total == 0) {
      replay.status = "completed";
      replay.completed_at = Rfc3339Now();
    }
    s.last_replay_id = replay.id;
    AddLog(ActionLog("subscription_replay_started", s.subscriber_id, s.id));
    const json answer = ReplayJson(replay);
    replays_[replay.id] = std::move(replay);
    wake_ = true;
    return JsonAnswer(202, answer);
  }

  void ReplayProgress(const PendingEvent& event, bool delivered)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (event.replay_id.empty()) return;
    auto it = replays_.find(event.replay_id);
    if (it == replays_.end()) return;
    Replay& replay = it->second;
    (delivered ? replay.delivered : replay.failed) += 1;
    if (replay.status == "in_progress" && replay.delivered + replay.failed >= replay.total) {
      replay.status = "completed";
      replay.completed_at = Rfc3339Now();
    }
  }

  // ---- Notifications ----

  void Notify(const Subscriber& subscriber, const Subscription& s, const std::string& type,
              const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (std::find(subscriber.channels.begin(), subscriber.channels.end(), "webhook") ==
        subscriber.channels.end()) {
      return;  // email only: nothing the fake sends
    }
    ordered_json body;
    body["notification_type"] = type;
    body["timestamp"] = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
    body["subscription_id"] = s.id;
    body["subscriber_id"] = subscriber.id;
    body["destination"] = Destination(s);
    body["events"] = s.events;
    if (!reason.empty()) body["reason"] = reason;
    body["subject"] = subscriber.subject;
    notification_jobs_.push_back(NotificationJob{subscriber.id, s.id, type, subscriber.webhook_url,
                                                 subscriber.webhook_secret, body.dump(), 0,
                                                 Clock::now()});
    wake_ = true;
  }

  // ---- Logs ----

  json ActionLog(const std::string& operation, const std::string& subscriber_id,
                 const std::string& subscription_id) {
    json entry = {
        {"log_id", NewUuid()},
        {"log_type", "action"},
        {"timestamp", absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone())},
        {"operation", operation},
        {"subscriber_id", subscriber_id}};
    if (!subscription_id.empty()) entry["subscription_id"] = subscription_id;
    return entry;
  }

  void AddLog(json entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const Clock::time_point now = Clock::now();
    if (entry["log_type"] == "error") {
      // Identical errors of a subscription within 5 minutes are one entry (logs page).
      for (LogEntry& previous : logs_) {
        if (previous.entry["log_type"] == "error" &&
            previous.entry.value("subscription_id", "") == entry.value("subscription_id", "") &&
            previous.entry.value("error_message", "") == entry.value("error_message", "") &&
            now - previous.at < kErrorLogMergeWindow) {
          previous.entry["timestamp"] = entry["timestamp"];
          previous.at = now;
          return;
        }
      }
    }
    logs_.push_back(LogEntry{std::move(entry), now});
  }

  Response Logs(const std::string& query) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::map<std::string, std::string> params;
    for (absl::string_view pair : absl::StrSplit(query, '&', absl::SkipEmpty())) {
      const size_t eq = pair.find('=');
      std::string name(pair.substr(0, eq));
      std::string value = eq == absl::string_view::npos ? "" : Decode(pair.substr(eq + 1));
      static const std::set<std::string> kParams = {
          "subscriber_id", "subscription_id", "log_type", "from", "to", "limit", "page_token"};
      if (!kParams.contains(name)) {
        return Error(400, absl::StrCat("Unknown query parameter \"", name, "\""));
      }
      params[name] = value;
    }
    if (params.contains("log_type") && params["log_type"] != "action" &&
        params["log_type"] != "error") {
      return Error(400, "log_type must be \"action\" or \"error\"");
    }
    std::optional<absl::Time> from;
    std::optional<absl::Time> to;
    for (const char* key : {"from", "to"}) {
      if (!params.contains(key)) continue;
      absl::Time time;
      std::string error;
      if (!absl::ParseTime(absl::RFC3339_full, params[key], &time, &error)) {
        return Error(400, absl::StrCat(key, " must be an RFC 3339 date-time"));
      }
      (std::string(key) == "from" ? from : to) = time;
    }
    int limit = kMaxLogPage;
    if (params.contains("limit") &&
        (!absl::SimpleAtoi(params["limit"], &limit) || limit < 1 || limit > kMaxLogPage)) {
      return Error(400, absl::StrCat("limit must be from 1 to ", kMaxLogPage));
    }
    size_t offset = 0;
    if (params.contains("page_token")) {
      absl::string_view token = params["page_token"];
      if (!absl::ConsumePrefix(&token, "p") || !absl::SimpleAtoi(token, &offset)) {
        return Error(400, "page_token is not valid");
      }
    }
    std::set<std::string> own;  // the caller's subscribers
    for (const auto& [id, s] : subscribers_) {
      if (s.client_id == ClientId() && s.subject == PimUrl()) own.insert(id);
    }
    std::vector<const json*> matching;
    for (const LogEntry& log : logs_) {
      const json& e = log.entry;
      const std::string subscriber_id = e.value("subscriber_id", "");
      if (!own.contains(subscriber_id)) continue;
      if (params.contains("subscriber_id") && subscriber_id != params["subscriber_id"]) continue;
      if (params.contains("subscription_id") &&
          e.value("subscription_id", "") != params["subscription_id"]) {
        continue;
      }
      if (params.contains("log_type") && e["log_type"] != params["log_type"]) continue;
      absl::Time at;
      std::string error;
      absl::ParseTime(absl::RFC3339_full, e.value("timestamp", ""), &at, &error);
      if (from.has_value() && at < *from) continue;
      if (to.has_value() && at > *to) continue;
      matching.push_back(&e);
    }
    json items = json::array();
    for (size_t i = offset; i < matching.size() && items.size() < static_cast<size_t>(limit); ++i) {
      items.push_back(*matching[i]);
    }
    json page = {{"items", items}};
    if (offset + items.size() < matching.size()) {
      page["next_page_token"] = absl::StrCat("p", offset + items.size());
    }
    return JsonAnswer(200, page);
  }

  static std::string Decode(absl::string_view text) {
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) {
      int value = 0;
      if (text[i] == '%' && i + 2 < text.size() &&
          absl::SimpleHexAtoi(text.substr(i + 1, 2), &value)) {
        out.push_back(static_cast<char>(value));
        i += 2;
      } else {
        out.push_back(text[i] == '+' ? ' ' : text[i]);
      }
    }
    return out;
  }

  // ---- The delivery engine (its own thread) ----

  // What the engine does next, taken under the lock and performed outside it.
  struct Task {
    enum Kind { kNone, kEvent, kNotification } kind = kNone;
    std::string subscription_id;
    PendingEvent event;
    std::string url;
    std::string primary;
    std::string secondary;
    json headers;
    NotificationJob notification;
  };

  // Moves due retries back to their queue; returns the earliest time something becomes due.
  Clock::time_point NextTask(Task& task) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const Clock::time_point now = Clock::now();
    Clock::time_point earliest = now + std::chrono::hours(1);
    for (auto& [id, s] : subscriptions_) {
      if (s.status != "active") continue;
      for (auto it = s.retrying.begin(); it != s.retrying.end();) {
        if (it->not_before <= now) {
          s.queue.push_back(std::move(*it));
          it = s.retrying.erase(it);
        } else {
          earliest = std::min(earliest, it->not_before);
          ++it;
        }
      }
      if (s.in_flight || s.queue.empty() || s.type != "https") continue;
      const Clock::time_point due = std::max(s.next_send, s.queue.front().not_before);
      if (due > now) {
        earliest = std::min(earliest, due);
        continue;
      }
      if (task.kind == Task::kNone) {
        task.kind = Task::kEvent;
        task.subscription_id = id;
        task.event = std::move(s.queue.front());
        s.queue.pop_front();
        s.in_flight = true;
        task.url = s.config.value("url", "");
        task.primary = s.config["secret"].value("primary", "");
        task.secondary = s.config["secret"].value("secondary", "");
        task.headers = s.config.value("headers", json::object());
      }
    }
    if (task.kind == Task::kNone && !notification_jobs_.empty()) {
      auto it = std::min_element(
          notification_jobs_.begin(), notification_jobs_.end(),
          [](const NotificationJob& a, const NotificationJob& b) { return a.due < b.due; });
      if (it->due <= now) {
        task.kind = Task::kNotification;
        task.notification = std::move(*it);
        notification_jobs_.erase(it);
        notifying_ = true;
      } else {
        earliest = std::min(earliest, it->due);
      }
    }
    return earliest;
  }

  void EngineLoop() {
    HttpClientOptions delivery;
    delivery.timeout = options_.delivery_timeout;
    delivery.ca_file = options_.destination_ca_file;
    delivery.insecure_skip_verify = options_.destination_insecure_skip_verify;
    delivery.proxy = "none";
    delivery.user_agent = kUserAgent;
    HttpClientOptions notification = delivery;
    notification.timeout = options_.notification_timeout;
    HttpConnection delivery_connection(delivery);
    HttpConnection notification_connection(notification);
    for (;;) {
      Task task;
      {
        absl::MutexLock lock(&mu_);
        for (;;) {
          if (stop_) return;
          wake_ = false;
          const Clock::time_point earliest = NextTask(task);
          if (task.kind != Task::kNone) break;
          mu_.AwaitWithDeadline(absl::Condition(&wake_),
                                absl::Now() + absl::FromChrono(earliest - Clock::now()));
        }
      }
      if (task.kind == Task::kEvent) {
        DeliverEvent(delivery_connection, task);
      } else {
        DeliverNotification(notification_connection, task.notification);
      }
    }
  }

  absl::StatusOr<::pimgate::HttpResponse> Post(
      HttpConnection& connection, const std::string& url, const std::string& body,
      std::vector<std::pair<std::string, std::string>> headers) {
    HttpRequest request;
    request.method = "POST";
    request.url = url;
    request.body = body;
    request.headers = std::move(headers);
    return connection.Exchange(request, [this] { return stopping_.load(); });
  }

  void DeliverEvent(HttpConnection& connection, Task& task) {
    PendingEvent& event = task.event;
    std::vector<std::pair<std::string, std::string>> headers = {
        {"Content-Type", "application/json"},
        {"X-AKENEO-SIGNATURE-PRIMARY", TestHmacHex(task.primary, event.body)},
        {"X-AKENEO-SIGNATURE-ALGORITHM", "HmacSHA256"},
        {"X-Correlation-ID", NewUuid()}};
    if (!task.secondary.empty()) {
      headers.emplace_back("X-AKENEO-SIGNATURE-SECONDARY", TestHmacHex(task.secondary, event.body));
    }
    // Custom headers are added after signing (they are not covered by the signature).
    for (auto it = task.headers.begin(); it != task.headers.end(); ++it) {
      headers.emplace_back(it.key(), it->get<std::string>());
    }
    Delivery record;
    record.subscription_id = task.subscription_id;
    record.event_id = event.id;
    record.event_type = event.type;
    record.url = task.url;
    record.attempt = event.attempts + 1;
    record.replay = !event.replay_id.empty();
    record.body = event.body;
    for (const auto& [name, value] : headers) record.headers[name] = value;
    record.sent_at = Clock::now();
    absl::StatusOr<::pimgate::HttpResponse> response =
        Post(connection, task.url, event.body, headers);
    if (response.ok()) {
      record.status = response->status;
    } else {
      record.error = std::string(response.status().message());
    }

    absl::MutexLock lock(&mu_);
    deliveries_.push_back(record);
    auto it = subscriptions_.find(task.subscription_id);
    if (it == subscriptions_.end()) return;
    Subscription& s = it->second;
    s.in_flight = false;
    wake_ = true;
    const Clock::time_point now = Clock::now();
    s.next_send = record.sent_at + std::chrono::microseconds(
                                       static_cast<int64_t>(1'000'000 / std::max(s.rate, 1e-3)));
    const int status = record.status;
    if (status >= 200 && status < 300) {
      s.rate = std::min(options_.max_rate, s.rate * 1.1);
      Outcome(s, true);
      ReplayProgress(event, true);
      return;
    }
    if (s.status != "active") {
      // Suspended or deleted while this was in flight.
      if (s.status == "suspended") {
        event.captured_at = now;
        s.captured.push_back(std::move(event));
      }
      return;
    }
    if (status == 404 || (status >= 300 && status < 400)) {
      // Criteria-based suspension: immediate.
      AddLog(DeliveryErrorLog(s, record));
      s.queue.push_front(std::move(event));
      SuspendLocked(
          s, false,
          absl::StrCat("The destination answered HTTP ", status,
                       status == 404 ? " (not found)" : " (redirections are not followed)"));
      return;
    }
    if (status == 429) {
      // Slow down and try the same event again; it counts against the success rate only once
      // it stayed undelivered for throttled_give_up.
      s.rate = std::max(options_.min_rate, s.rate / 2);
      if (!event.throttled_since.has_value()) event.throttled_since = now;
      if (now - *event.throttled_since < options_.throttled_give_up) {
        s.next_send = now + std::chrono::microseconds(
                                static_cast<int64_t>(1'000'000 / std::max(s.rate, 1e-3)));
        s.queue.push_front(std::move(event));
        return;
      }
      event.throttled_since.reset();
    }
    // A transient failure: retried after 5, 10 and 20 minutes, then dropped.
    AddLog(DeliveryErrorLog(s, record));
    Outcome(s, false);
    if (s.status != "active") {
      event.captured_at = now;
      s.captured.push_back(std::move(event));
      return;
    }
    if (event.attempts < static_cast<int>(options_.retry_delays.size())) {
      event.not_before = now + options_.retry_delays[event.attempts];
      ++event.attempts;
      s.retrying.push_back(std::move(event));
    } else {
      ReplayProgress(event, false);  // dropped
    }
  }

  json DeliveryErrorLog(const Subscription& s, const Delivery& record) {
    const bool timeout = absl::StrContains(record.error, "timed out");
    json entry = {
        {"log_id", NewUuid()},
        {"log_type", "error"},
        {"timestamp", absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone())},
        {"operation", "failed_to_deliver_event"},
        {"subscriber_id", s.subscriber_id},
        {"subscription_id", s.id},
        {"error_type", "failed_delivery"},
        {"request", json::object()},
        {"response", json::object()}};
    if (record.status != 0) {
      entry["error_reason"] = absl::StrCat("destination_status_", record.status);
      entry["error_code"] = record.status;
      entry["error_message"] = absl::StrCat("the destination answered HTTP ", record.status);
    } else {
      entry["error_reason"] = timeout ? "destination_timeout" : "connection_refused";
      entry["error_code"] = 500;
      entry["error_message"] =
          "an error was returned when calling the destination, or it took too long to respond";
    }
    return entry;
  }

  // Records a delivery result; suspends when the success rate of the window falls too low.
  void Outcome(Subscription& s, bool success) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const Clock::time_point now = Clock::now();
    s.outcomes.emplace_back(now, success);
    while (!s.outcomes.empty() && now - s.outcomes.front().first > options_.success_window) {
      s.outcomes.pop_front();
    }
    if (success || static_cast<int>(s.outcomes.size()) < options_.min_deliveries_for_rate) return;
    const double successes = static_cast<double>(std::count_if(
        s.outcomes.begin(), s.outcomes.end(), [](const auto& o) { return o.second; }));
    if (successes / static_cast<double>(s.outcomes.size()) < options_.min_success_rate) {
      SuspendLocked(s, false,
                    absl::StrCat("Success rate dropped below ",
                                 static_cast<int>(options_.min_success_rate * 100), "%"));
    }
  }

  void DeliverNotification(HttpConnection& connection, NotificationJob& job) {
    Notification record;
    record.subscriber_id = job.subscriber_id;
    record.subscription_id = job.subscription_id;
    record.notification_type = job.type;
    record.url = job.url;
    record.attempt = job.attempts + 1;
    record.body = job.body;
    std::vector<std::pair<std::string, std::string>> headers = {
        {"Content-Type", "application/json"},
        {"X-AKENEO-SIGNATURE-PRIMARY", TestHmacHex(job.secret, job.body)},
        {"X-AKENEO-SIGNATURE-ALGORITHM", "HmacSHA256"}};
    for (const auto& [name, value] : headers) record.headers[name] = value;
    absl::StatusOr<::pimgate::HttpResponse> response = Post(connection, job.url, job.body, headers);
    if (response.ok()) {
      record.status = response->status;
    } else {
      record.error = std::string(response.status().message());
    }
    absl::MutexLock lock(&mu_);
    notifications_.push_back(record);
    notifying_ = false;
    wake_ = true;
    const int status = record.status;
    if (status >= 200 && status < 300) return;
    // 5xx, 429 and transport failures are retried within 3 attempts; other 4xx and 3xx are not.
    const bool retryable = status == 0 || status == 429 || status >= 500;
    if (retryable && job.attempts < static_cast<int>(options_.notification_retry_delays.size())) {
      job.due = Clock::now() + options_.notification_retry_delays[job.attempts];
      ++job.attempts;
      notification_jobs_.push_back(std::move(job));
    }
  }

  const Options options_;
  std::thread engine_;
  std::atomic<bool> stopping_{false};

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  bool permission_ ABSL_GUARDED_BY(mu_) = true;
  bool revoked_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, Subscriber> subscribers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Subscription> subscriptions_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Replay> replays_ ABSL_GUARDED_BY(mu_);
  std::vector<LogEntry> logs_ ABSL_GUARDED_BY(mu_);
  std::vector<NotificationJob> notification_jobs_ ABSL_GUARDED_BY(mu_);
  bool notifying_ ABSL_GUARDED_BY(mu_) = false;
  int fail_count_ ABSL_GUARDED_BY(mu_) = 0;
  int fail_status_ ABSL_GUARDED_BY(mu_) = 0;
  int fail_retry_after_ ABSL_GUARDED_BY(mu_) = -1;
  bool fail_then_process_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<ApiCall> api_calls_ ABSL_GUARDED_BY(mu_);
  std::vector<Delivery> deliveries_ ABSL_GUARDED_BY(mu_);
  std::vector<Notification> notifications_ ABSL_GUARDED_BY(mu_);
  // Last: destroyed first, so that no request is handled once the state is gone.
  TestHttpServer server_;
};

FakeEventPlatform::FakeEventPlatform() : FakeEventPlatform(Options{}) {}
FakeEventPlatform::FakeEventPlatform(Options options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
FakeEventPlatform::~FakeEventPlatform() = default;

uint16_t FakeEventPlatform::port() const { return impl_->port(); }
std::string FakeEventPlatform::api_url() const { return impl_->api_url(); }
const std::string& FakeEventPlatform::cert_file() const { return impl_->cert_file(); }
std::string FakeEventPlatform::Publish(Event event) { return impl_->Publish(std::move(event)); }
void FakeEventPlatform::Suspend(const std::string& subscription_id, const std::string& reason) {
  impl_->Suspend(subscription_id, reason);
}
void FakeEventPlatform::RevokeConnection() { impl_->RevokeConnection(); }
void FakeEventPlatform::SetPermission(bool granted) { impl_->SetPermission(granted); }
void FakeEventPlatform::FailNextCalls(int count, int status, int retry_after_seconds,
                                      bool then_process) {
  impl_->FailNextCalls(count, status, retry_after_seconds, then_process);
}
std::vector<FakeEventPlatform::ApiCall> FakeEventPlatform::api_calls() const {
  return impl_->api_calls();
}
std::vector<FakeEventPlatform::Delivery> FakeEventPlatform::deliveries() const {
  return impl_->deliveries();
}
std::vector<FakeEventPlatform::Notification> FakeEventPlatform::notifications() const {
  return impl_->notifications();
}
std::string FakeEventPlatform::SubscriptionStatus(const std::string& subscription_id) const {
  return impl_->SubscriptionStatus(subscription_id);
}
int FakeEventPlatform::CapturedCount(const std::string& subscription_id) const {
  return impl_->CapturedCount(subscription_id);
}
int FakeEventPlatform::PendingCount() const { return impl_->PendingCount(); }
int FakeEventPlatform::subscriber_count() const { return impl_->subscriber_count(); }

bool FakeEventPlatform::WaitUntil(const std::function<bool()>& condition,
                                  std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  while (!condition()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

}  // namespace pimgate::testing
