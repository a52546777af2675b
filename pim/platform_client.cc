// PlatformClient over HttpConnection: `kWorkers` threads, each with one kept-alive connection to
// the management API, fed by one queue. Requests are built and answers parsed with nlohmann::json;
// retries, token renewal and the recovery of ambiguous creations live in Execute().
#include "pim/platform_client.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <initializer_list>
#include <random>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "pim/akeneo_client.h"
#include "pim/http_client.h"
#include "pim/worker_pool.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// Threads (and connections) per client: the watch and a user's command can run at once.
constexpr int kWorkers = 2;
// Longest part of an error answer quoted in a status message.
constexpr std::size_t kMaxErrorBody = 4096;
// A Retry-After longer than this is capped.
constexpr std::chrono::seconds kMaxRetryAfter{300};
// Each backoff wait is randomized by +-20%.
constexpr double kBackoffJitter = 0.2;
// Longest id accepted in a path (Akeneo's are UUIDs).
constexpr std::size_t kMaxIdLength = 128;
// Where PlatformHttpStatus() finds the HTTP code in a status.
constexpr char kHttpStatusPayload[] = "pimgate.dev/platform-http-status";

// Paths below the API's base URL (api.akeneo.com/event-platform: getting-started; OpenAPI of
// akeneo/pim-api-docs, content/swagger/aep/public-oas.yml, in the plural of the current docs).
constexpr char kSubscribersPath[] = "/subscribers";
constexpr char kSubscriptionsSegment[] = "/subscriptions";
constexpr char kSuspendSuffix[] = "/suspend";
constexpr char kResumeSuffix[] = "/resume";
constexpr char kLogsPath[] = "/logs";
// ASSUMPTION (docs/event-platform-api.md, "Capture and replay"): the replay endpoint could not be
// read from Akeneo's reference.
constexpr char kReplaySuffix[] = "/replay";
// ASSUMPTION (docs/event-platform-api.md, "Logs"): the query parameter names and the page
// envelope of GET /logs could not be read from Akeneo's reference.
constexpr char kLogParamSubscriber[] = "subscriber_id";
constexpr char kLogParamSubscription[] = "subscription_id";
constexpr char kLogParamType[] = "log_type";
constexpr char kLogParamFrom[] = "from";
constexpr char kLogParamTo[] = "to";
constexpr char kLogParamLimit[] = "limit";
constexpr char kLogParamPageToken[] = "page_token";
constexpr std::initializer_list<const char*> kLogItemsKeys = {"items", "logs", "data"};
constexpr std::initializer_list<const char*> kLogNextKeys = {"next_page_token", "next"};

std::string PercentEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (absl::ascii_isalnum(byte) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 15]);
    }
  }
  return out;
}

// Ids go into paths: only what Akeneo's ids (UUIDs) are made of.
absl::Status CheckId(absl::string_view what, absl::string_view id) {
  if (id.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  if (id.size() > kMaxIdLength || !std::all_of(id.begin(), id.end(), [](char c) {
        return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
      })) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be made of letters, digits, - and _ (an Event Platform id)"));
  }
  return absl::OkStatus();
}

// ---- JSON in ----------------------------------------------------------------------------------

std::string StringAt(const json& object, std::initializer_list<const char*> keys) {
  if (!object.is_object()) return "";
  for (const char* key : keys) {
    auto it = object.find(key);
    if (it != object.end() && it->is_string()) return it->get<std::string>();
  }
  return "";
}

std::vector<std::string> StringsAt(const json& object, const char* key) {
  std::vector<std::string> out;
  if (!object.is_object()) return out;
  auto it = object.find(key);
  if (it == object.end() || !it->is_array()) return out;
  for (const json& item : *it) {
    if (item.is_string()) out.push_back(item.get<std::string>());
  }
  return out;
}

absl::StatusOr<PlatformSubscriber> SubscriberOf(const json& object) {
  if (!object.is_object() || StringAt(object, {"id"}).empty()) {
    return absl::DataLossError(
        absl::StrCat("the Event Platform's answer is not a subscriber: ", object.dump()));
  }
  PlatformSubscriber subscriber;
  subscriber.id = StringAt(object, {"id"});
  subscriber.name = StringAt(object, {"name"});
  subscriber.subject = StringAt(object, {"subject"});
  subscriber.status = StringAt(object, {"status"});
  subscriber.client_id = StringAt(object, {"client_id"});
  // Akeneo's examples spell the times both ways (docs/event-platform-api.md, "Subscriber").
  subscriber.created_at = StringAt(object, {"created_at", "createdAt"});
  subscriber.updated_at = StringAt(object, {"updated_at", "updatedAt"});
  if (auto contact = object.find("contact"); contact != object.end() && contact->is_object()) {
    subscriber.contact.technical_email = StringAt(*contact, {"technical_email"});
    subscriber.contact.notification_channels = StringsAt(*contact, "notification_channels");
    subscriber.contact.notification_webhook_url = StringAt(*contact, {"notification_webhook_url"});
  }
  subscriber.json = object.dump();
  return subscriber;
}

absl::StatusOr<PlatformSubscription> SubscriptionOf(const json& object) {
  if (!object.is_object() || StringAt(object, {"id"}).empty()) {
    return absl::DataLossError(
        absl::StrCat("the Event Platform's answer is not a subscription: ", object.dump()));
  }
  PlatformSubscription subscription;
  subscription.id = StringAt(object, {"id"});
  subscription.subscriber_id = StringAt(object, {"subscriber_id"});
  subscription.source = StringAt(object, {"source"});
  subscription.subject = StringAt(object, {"subject"});
  subscription.type = StringAt(object, {"type"});
  subscription.status = StringAt(object, {"status"});
  subscription.events = StringsAt(object, "events");
  subscription.filter = StringAt(object, {"filter"});
  subscription.created_at = StringAt(object, {"created_at", "createdAt"});
  subscription.updated_at = StringAt(object, {"updated_at", "updatedAt"});
  if (auto it = object.find("send_product_identifier"); it != object.end() && it->is_boolean()) {
    subscription.send_product_identifier = it->get<bool>();
  }
  if (auto config = object.find("config"); config != object.end() && config->is_object()) {
    subscription.url = StringAt(*config, {"url"});
    if (auto secret = config->find("secret"); secret != config->end() && secret->is_object()) {
      auto secondary = secret->find("secondary");
      subscription.has_secondary_secret =
          secondary != secret->end() && secondary->is_string() && !secondary->empty();
    }
    if (auto headers = config->find("headers"); headers != config->end() && headers->is_object()) {
      for (auto it = headers->begin(); it != headers->end(); ++it) {
        subscription.header_names.push_back(it.key());
      }
    }
  }
  subscription.json = object.dump();
  return subscription;
}

template <typename T>
absl::StatusOr<std::vector<T>> ListOf(const json& answer, absl::StatusOr<T> (*parse)(const json&)) {
  if (!answer.is_array()) {
    return absl::DataLossError(
        absl::StrCat("the Event Platform's answer is not a list: ", answer.dump()));
  }
  std::vector<T> out;
  for (const json& item : answer) {
    absl::StatusOr<T> parsed = parse(item);
    if (!parsed.ok()) return parsed.status();
    out.push_back(*std::move(parsed));
  }
  return out;
}

PlatformLog LogOf(const json& object) {
  PlatformLog log;
  log.log_id = StringAt(object, {"log_id"});
  log.log_type = StringAt(object, {"log_type"});
  log.timestamp = StringAt(object, {"timestamp"});
  log.subscriber_id = StringAt(object, {"subscriber_id"});
  log.subscription_id = StringAt(object, {"subscription_id"});
  log.operation = StringAt(object, {"operation"});
  log.error_type = StringAt(object, {"error_type"});
  log.error_reason = StringAt(object, {"error_reason"});
  log.error_message = StringAt(object, {"error_message"});
  if (auto it = object.find("error_code"); it != object.end() && it->is_number_integer()) {
    log.error_code = it->get<int>();
  }
  log.json = object.dump();
  return log;
}

absl::StatusOr<PlatformLogPage> LogPageOf(const json& answer) {
  const json* items = nullptr;
  PlatformLogPage page;
  if (answer.is_array()) {
    items = &answer;
  } else if (answer.is_object()) {
    for (const char* key : kLogItemsKeys) {
      if (auto it = answer.find(key); it != answer.end() && it->is_array()) {
        items = &*it;
        break;
      }
    }
    page.next_page_token = StringAt(answer, kLogNextKeys);
  }
  if (items == nullptr) {
    return absl::DataLossError(
        absl::StrCat("the Event Platform's logs answer holds no list of logs: ",
                     answer.dump().substr(0, kMaxErrorBody)));
  }
  for (const json& entry : *items) {
    if (entry.is_object()) page.logs.push_back(LogOf(entry));
  }
  return page;
}

absl::StatusOr<PlatformReplay> ReplayOf(const json& object) {
  if (!object.is_object()) {
    return absl::DataLossError(
        absl::StrCat("the Event Platform's answer is not a replay: ", object.dump()));
  }
  PlatformReplay replay;
  replay.id = StringAt(object, {"id"});
  replay.subscription_id = StringAt(object, {"subscription_id"});
  replay.status = StringAt(object, {"status"});
  replay.created_at = StringAt(object, {"created_at", "createdAt"});
  replay.completed_at = StringAt(object, {"completed_at", "completedAt"});
  const auto number = [&object](const char* key) -> int64_t {
    auto it = object.find(key);
    return it != object.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
  };
  replay.total = number("total");
  replay.delivered = number("delivered");
  replay.failed = number("failed");
  replay.json = object.dump();
  return replay;
}

// ---- JSON out ---------------------------------------------------------------------------------

json SubscriberBody(const PlatformSubscriberRequest& request) {
  json body = json::object();
  body["name"] = request.name;
  json contact = json::object();
  if (!request.contact.technical_email.empty()) {
    contact["technical_email"] = request.contact.technical_email;
  }
  if (!request.contact.notification_channels.empty()) {
    contact["notification_channels"] = request.contact.notification_channels;
  }
  if (!request.contact.notification_webhook_url.empty()) {
    contact["notification_webhook_url"] = request.contact.notification_webhook_url;
  }
  if (!request.notification_webhook_secret.empty()) {
    contact["notification_webhook_secret"] = request.notification_webhook_secret;
  }
  body["contact"] = std::move(contact);
  return body;
}

json SubscriberUpdateBody(const PlatformSubscriberUpdate& update) {
  json body = json::object();
  if (update.name.has_value()) body["name"] = *update.name;
  json contact = json::object();
  if (update.technical_email.has_value()) contact["technical_email"] = *update.technical_email;
  if (update.notification_channels.has_value()) {
    contact["notification_channels"] = *update.notification_channels;
  }
  if (update.notification_webhook_url.has_value()) {
    contact["notification_webhook_url"] = *update.notification_webhook_url;
  }
  if (update.notification_webhook_secret.has_value()) {
    contact["notification_webhook_secret"] = *update.notification_webhook_secret;
  }
  if (!contact.empty()) body["contact"] = std::move(contact);
  return body;
}

json HeadersObject(const std::vector<std::pair<std::string, std::string>>& headers) {
  json object = json::object();
  for (const auto& [name, value] : headers) object[name] = value;
  return object;
}

json SubscriptionBody(const PlatformSubscriptionRequest& request, const std::string& pim_url) {
  json config = json::object();
  config["url"] = request.url;
  json secret = json::object();
  secret["primary"] = request.primary_secret;
  if (!request.secondary_secret.empty()) secret["secondary"] = request.secondary_secret;
  config["secret"] = std::move(secret);
  if (!request.headers.empty()) config["headers"] = HeadersObject(request.headers);
  json body = json::object();
  body["source"] = "pim";
  body["subject"] = pim_url;
  body["events"] = request.events;
  body["type"] = "https";
  body["config"] = std::move(config);
  if (!request.filter.empty()) body["filter"] = request.filter;
  if (request.send_product_identifier.has_value()) {
    body["send_product_identifier"] = *request.send_product_identifier;
  }
  return body;
}

json SubscriptionUpdateBody(const PlatformSubscriptionUpdate& update) {
  json body = json::object();
  if (update.events.has_value()) body["events"] = *update.events;
  if (update.filter.has_value()) body["filter"] = *update.filter;
  if (update.send_product_identifier.has_value()) {
    body["send_product_identifier"] = *update.send_product_identifier;
  }
  json config = json::object();
  if (update.url.has_value()) config["url"] = *update.url;
  if (update.primary_secret.has_value() || update.secondary_secret.has_value()) {
    json secret = json::object();
    if (update.primary_secret.has_value()) secret["primary"] = *update.primary_secret;
    if (update.secondary_secret.has_value()) secret["secondary"] = *update.secondary_secret;
    config["secret"] = std::move(secret);
  }
  if (update.headers.has_value()) config["headers"] = HeadersObject(*update.headers);
  if (!config.empty()) body["config"] = std::move(config);
  return body;
}

// ---- Errors -----------------------------------------------------------------------------------

absl::Status WithHttpStatus(absl::Status status, int http_status) {
  status.SetPayload(kHttpStatusPayload, absl::Cord(absl::StrCat(http_status)));
  return status;
}

absl::StatusCode CodeOf(int http_status) {
  switch (http_status) {
    case 400:
    case 422:
      return absl::StatusCode::kInvalidArgument;
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kNotFound;
    default:
      return absl::StatusCode::kFailedPrecondition;
  }
}

bool Retryable(int http_status) {
  return http_status == 408 || http_status == 429 || http_status >= 500;
}

std::optional<std::chrono::milliseconds> ParseRetryAfter(std::string_view header) {
  absl::string_view value(header.data(), header.size());
  value = absl::StripAsciiWhitespace(value);
  int64_t seconds = 0;
  if (value.empty() || !absl::SimpleAtoi(value, &seconds) || seconds < 0) return std::nullopt;
  return std::chrono::milliseconds(std::min<int64_t>(seconds, kMaxRetryAfter.count()) * 1000);
}

// What one worker thread owns: its connection (HttpConnection is not thread-safe) and its random
// generator (for backoff jitter).
struct Worker {
  explicit Worker(const HttpClientOptions& options) : connection(options) {}
  HttpConnection connection;
  std::mt19937_64 random{std::random_device{}()};
};

// One API call as the worker runs it.
struct ApiRequest {
  std::string method;
  std::string path;  // below the base URL, with its query
  std::string body;  // JSON; empty for none
  // Values that must never appear in a message (the request's secrets).
  std::vector<std::string> secrets;
  // For a creation: after an ambiguous failure, finds what the failed attempt may have created.
  std::function<absl::StatusOr<std::optional<json>>(Worker&)> find_created;
};

// ---- The client -------------------------------------------------------------------------------

// The client's state, its calls and its workers. Handed out only behind PlatformClientFront.
class PlatformClientImpl final : public PlatformClient,
                                 public std::enable_shared_from_this<PlatformClientImpl> {
 public:
  PlatformClientImpl(PlatformConfig config, std::string pim_url, std::string client_id,
                     TokenSource token_source)
      : config_(std::move(config)),
        pim_url_(std::move(pim_url)),
        client_id_(std::move(client_id)),
        token_source_(std::move(token_source)) {}

  // Starts the workers, each holding a reference to this state. Called once, right after
  // construction (shared_from_this() needs the shared_ptr to exist).
  void Start() {
    pool_.Start(kWorkers, shared_from_this(), [this](uint32_t) { WorkerLoop(); });
  }

  // Runs once every worker is done with it and the front has shut it down.
  ~PlatformClientImpl() override = default;

  // ---- Subscribers ----
  void CreateSubscriberAsync(PlatformSubscriberRequest request,
                             Callback<PlatformSubscriber> done) override {
    ApiRequest api{"POST",
                   kSubscribersPath,
                   SubscriberBody(request).dump(),
                   {request.notification_webhook_secret},
                   nullptr};
    api.find_created = [this, name = request.name, email = request.contact.technical_email](
                           Worker& worker) -> absl::StatusOr<std::optional<json>> {
      absl::StatusOr<json> list =
          Execute(worker, ApiRequest{"GET", kSubscribersPath, "", {}, nullptr});
      if (!list.ok()) return list.status();
      if (!list->is_array()) return std::nullopt;
      for (const json& item : *list) {
        if (StringAt(item, {"name"}) == name && StringAt(item, {"status"}) != "deleted" &&
            (email.empty() || !item.contains("contact") ||
             StringAt(item["contact"], {"technical_email"}) == email)) {
          return item;
        }
      }
      return std::nullopt;
    };
    Submit<PlatformSubscriber>(std::move(api), SubscriberOf, std::move(done));
  }
  void ListSubscribersAsync(Callback<std::vector<PlatformSubscriber>> done) override {
    Submit<std::vector<PlatformSubscriber>>(
        ApiRequest{"GET", kSubscribersPath, "", {}, nullptr},
        [](const json& answer) { return ListOf<PlatformSubscriber>(answer, SubscriberOf); },
        std::move(done));
  }
  void GetSubscriberAsync(std::string subscriber_id, Callback<PlatformSubscriber> done) override {
    OnSubscriber<PlatformSubscriber>("GET", subscriber_id, "", "", {}, SubscriberOf,
                                     std::move(done));
  }
  void UpdateSubscriberAsync(std::string subscriber_id, PlatformSubscriberUpdate update,
                             Callback<PlatformSubscriber> done) override {
    std::vector<std::string> secrets;
    if (update.notification_webhook_secret.has_value()) {
      secrets.push_back(*update.notification_webhook_secret);
    }
    OnSubscriber<PlatformSubscriber>("PATCH", subscriber_id, "",
                                     SubscriberUpdateBody(update).dump(), std::move(secrets),
                                     SubscriberOf, std::move(done));
  }
  void DeleteSubscriberAsync(std::string subscriber_id,
                             Callback<PlatformSubscriber> done) override {
    OnSubscriber<PlatformSubscriber>("DELETE", subscriber_id, "", "", {}, SubscriberOf,
                                     std::move(done));
  }

  // ---- Subscriptions ----
  void CreateSubscriptionAsync(std::string subscriber_id, PlatformSubscriptionRequest request,
                               Callback<PlatformSubscription> done) override {
    if (absl::Status bad = CheckId("the subscriber id", subscriber_id); !bad.ok()) {
      return Fail(std::move(bad), std::move(done));
    }
    const std::string path = SubscriptionsPath(subscriber_id);
    std::vector<std::string> secrets = {request.primary_secret, request.secondary_secret};
    for (const auto& [name, value] : request.headers) secrets.push_back(value);
    ApiRequest api{"POST", path, SubscriptionBody(request, pim_url_).dump(), std::move(secrets),
                   nullptr};
    api.find_created = [this, path, url = request.url, events = request.events](
                           Worker& worker) -> absl::StatusOr<std::optional<json>> {
      absl::StatusOr<json> list = Execute(worker, ApiRequest{"GET", path, "", {}, nullptr});
      if (!list.ok()) return list.status();
      if (!list->is_array()) return std::nullopt;
      std::vector<std::string> wanted = events;
      std::sort(wanted.begin(), wanted.end());
      for (const json& item : *list) {
        std::vector<std::string> have = StringsAt(item, "events");
        std::sort(have.begin(), have.end());
        const json config = item.is_object() ? item.value("config", json::object()) : json();
        if (have == wanted && StringAt(config, {"url"}) == url &&
            StringAt(item, {"status"}) != "deleted") {
          return item;
        }
      }
      return std::nullopt;
    };
    Submit<PlatformSubscription>(std::move(api), SubscriptionOf, std::move(done));
  }
  void ListSubscriptionsAsync(std::string subscriber_id,
                              Callback<std::vector<PlatformSubscription>> done) override {
    OnSubscriber<std::vector<PlatformSubscription>>(
        "GET", subscriber_id, kSubscriptionsSegment, "", {},
        [](const json& answer) { return ListOf<PlatformSubscription>(answer, SubscriptionOf); },
        std::move(done));
  }
  void GetSubscriptionAsync(std::string subscriber_id, std::string subscription_id,
                            Callback<PlatformSubscription> done) override {
    OnSubscription<PlatformSubscription>("GET", subscriber_id, subscription_id, "", "", {},
                                         SubscriptionOf, std::move(done));
  }
  void UpdateSubscriptionAsync(std::string subscriber_id, std::string subscription_id,
                               PlatformSubscriptionUpdate update,
                               Callback<PlatformSubscription> done) override {
    std::vector<std::string> secrets;
    if (update.primary_secret.has_value()) secrets.push_back(*update.primary_secret);
    if (update.secondary_secret.has_value()) secrets.push_back(*update.secondary_secret);
    if (update.headers.has_value()) {
      for (const auto& [name, value] : *update.headers) secrets.push_back(value);
    }
    OnSubscription<PlatformSubscription>("PATCH", subscriber_id, subscription_id, "",
                                         SubscriptionUpdateBody(update).dump(), std::move(secrets),
                                         SubscriptionOf, std::move(done));
  }
  void DeleteSubscriptionAsync(std::string subscriber_id, std::string subscription_id,
                               Callback<PlatformSubscription> done) override {
    OnSubscription<PlatformSubscription>("DELETE", subscriber_id, subscription_id, "", "", {},
                                         SubscriptionOf, std::move(done));
  }
  void SuspendSubscriptionAsync(std::string subscriber_id, std::string subscription_id,
                                Callback<PlatformSubscription> done) override {
    OnSubscription<PlatformSubscription>("POST", subscriber_id, subscription_id, kSuspendSuffix, "",
                                         {}, SubscriptionOf, std::move(done));
  }
  void ResumeSubscriptionAsync(std::string subscriber_id, std::string subscription_id,
                               Callback<PlatformSubscription> done) override {
    OnSubscription<PlatformSubscription>("POST", subscriber_id, subscription_id, kResumeSuffix, "",
                                         {}, SubscriptionOf, std::move(done));
  }

  // ---- Logs and replay ----
  void LogsAsync(PlatformLogQuery query, Callback<PlatformLogPage> done) override {
    std::string path = kLogsPath;
    char separator = '?';
    const auto add = [&](const char* name, const std::string& value) {
      if (value.empty()) return;
      absl::StrAppend(&path, std::string(1, separator), name, "=", PercentEncode(value));
      separator = '&';
    };
    add(kLogParamSubscriber, query.subscriber_id);
    add(kLogParamSubscription, query.subscription_id);
    add(kLogParamType, query.log_type);
    add(kLogParamFrom, query.from);
    add(kLogParamTo, query.to);
    if (query.limit > 0) add(kLogParamLimit, absl::StrCat(query.limit));
    add(kLogParamPageToken, query.page_token);
    Submit<PlatformLogPage>(ApiRequest{"GET", std::move(path), "", {}, nullptr}, LogPageOf,
                            std::move(done));
  }
  void StartReplayAsync(std::string subscriber_id, std::string subscription_id,
                        Callback<PlatformReplay> done) override {
    OnSubscription<PlatformReplay>("POST", subscriber_id, subscription_id, kReplaySuffix, "", {},
                                   ReplayOf, std::move(done));
  }
  void GetReplayAsync(std::string subscriber_id, std::string subscription_id,
                      Callback<PlatformReplay> done) override {
    OnSubscription<PlatformReplay>("GET", subscriber_id, subscription_id, kReplaySuffix, "", {},
                                   ReplayOf, std::move(done));
  }

  PlatformClientStats stats() const override {
    PlatformClientStats stats;
    stats.calls = calls_.load(std::memory_order_relaxed);
    stats.retries = retries_.load(std::memory_order_relaxed);
    stats.throttled = throttled_.load(std::memory_order_relaxed);
    stats.failures = failures_.load(std::memory_order_relaxed);
    stats.recovered = recovered_.load(std::memory_order_relaxed);
    return stats;
  }

  // Also from a callback, or from a callback's captures being destroyed (see WorkerPool).
  void Shutdown() override { pool_.Shutdown(); }

 private:
  struct Job {
    std::function<void(Worker&)> run;
    std::function<void(absl::Status)> cancel;
  };

  static std::string SubscriptionsPath(const std::string& subscriber_id) {
    return absl::StrCat(kSubscribersPath, "/", subscriber_id, kSubscriptionsSegment);
  }

  template <typename T>
  void Fail(absl::Status status, Callback<T> done) {
    Enqueue(Job{[status, done](Worker&) mutable { done(status); },
                [done](absl::Status cancelled) mutable { done(std::move(cancelled)); }});
  }

  // A call on /subscribers/{id}<suffix>.
  template <typename T, typename Parse>
  void OnSubscriber(const char* method, const std::string& subscriber_id, const char* suffix,
                    std::string body, std::vector<std::string> secrets, Parse parse,
                    Callback<T> done) {
    if (absl::Status bad = CheckId("the subscriber id", subscriber_id); !bad.ok()) {
      return Fail(std::move(bad), std::move(done));
    }
    Submit<T>(ApiRequest{method, absl::StrCat(kSubscribersPath, "/", subscriber_id, suffix),
                         std::move(body), std::move(secrets), nullptr},
              std::move(parse), std::move(done));
  }

  // A call on /subscribers/{id}/subscriptions/{id}<suffix>.
  template <typename T, typename Parse>
  void OnSubscription(const char* method, const std::string& subscriber_id,
                      const std::string& subscription_id, const char* suffix, std::string body,
                      std::vector<std::string> secrets, Parse parse, Callback<T> done) {
    absl::Status bad = CheckId("the subscriber id", subscriber_id);
    if (bad.ok()) bad = CheckId("the subscription id", subscription_id);
    if (!bad.ok()) return Fail(std::move(bad), std::move(done));
    Submit<T>(
        ApiRequest{method,
                   absl::StrCat(SubscriptionsPath(subscriber_id), "/", subscription_id, suffix),
                   std::move(body), std::move(secrets), nullptr},
        std::move(parse), std::move(done));
  }

  template <typename T, typename Parse>
  void Submit(ApiRequest request, Parse parse, Callback<T> done) {
    auto shared_done = std::make_shared<Callback<T>>(std::move(done));
    Enqueue(Job{[this, request = std::move(request), parse = std::move(parse),
                 shared_done](Worker& worker) {
                  absl::StatusOr<json> answer = Execute(worker, request);
                  if (!answer.ok()) {
                    if (answer.status().code() != absl::StatusCode::kCancelled) {
                      failures_.fetch_add(1, std::memory_order_relaxed);
                    }
                    (*shared_done)(answer.status());
                    return;
                  }
                  (*shared_done)(parse(*answer));
                },
                [shared_done](absl::Status cancelled) { (*shared_done)(std::move(cancelled)); }});
  }

  void Enqueue(Job job) {
    if (pool_.Post(job)) return;
    job.cancel(absl::CancelledError("the Event Platform client is shut down"));
  }

  void WorkerLoop() {
    HttpClientOptions options;
    options.timeout = config_.timeout;
    options.ca_file = config_.ca_file;
    options.insecure_skip_verify = config_.insecure_skip_verify;
    options.proxy = config_.proxy;
    options.user_agent = "pimgate";
    Worker worker(options);
    while (std::optional<Job> job = pool_.Next()) job->run(worker);
    for (Job& job : pool_.TakeUnstarted()) {
      job.cancel(
          absl::CancelledError("the Event Platform client shut down before the call was sent"));
    }
  }

  bool SleepUnlessShutdown(std::chrono::milliseconds delay) {
    return pool_.SleepUnlessShutdown(delay);
  }

  std::chrono::milliseconds Backoff(uint32_t failed_attempts, std::mt19937_64& random) const {
    double delay = static_cast<double>(config_.initial_backoff.count());
    for (uint32_t i = 1; i < failed_attempts && delay < config_.max_backoff.count(); ++i) {
      delay *= 2;
    }
    delay = std::min(delay, static_cast<double>(config_.max_backoff.count()));
    std::uniform_real_distribution<double> jitter(1 - kBackoffJitter, 1 + kBackoffJitter);
    return std::chrono::milliseconds(static_cast<int64_t>(delay * jitter(random)));
  }

  // The platform's answer as a message: bounded, on one line, and with the token and the
  // request's secrets replaced (a proxy or the platform could echo them back).
  std::string Scrub(std::string text, const std::string& token,
                    const std::vector<std::string>& secrets) const {
    std::vector<std::pair<std::string, std::string>> replacements;
    if (!token.empty()) replacements.emplace_back(token, "<redacted>");
    for (const std::string& secret : secrets) {
      if (!secret.empty()) replacements.emplace_back(secret, "<redacted>");
    }
    if (!replacements.empty()) absl::StrReplaceAll(replacements, &text);
    if (text.size() > kMaxErrorBody) text = text.substr(0, kMaxErrorBody) + "...";
    for (char& c : text) {
      if (static_cast<unsigned char>(c) < 0x20) c = ' ';
    }
    return text.empty() ? "(empty body)" : text;
  }

  // One call with its retries, token renewal and recovery of an ambiguous creation. Runs on a
  // worker thread (find_created calls it again, for the listing, on the same thread).
  absl::StatusOr<json> Execute(Worker& worker, const ApiRequest& request) {
    const std::string what = absl::StrCat(request.method, " ", request.path);
    std::string rejected;  // a token the platform refused, to renew
    bool renewed = false;
    for (uint32_t attempt = 1;; ++attempt) {
      if (pool_.stopping()) {
        return absl::CancelledError(
            absl::StrCat("the Event Platform client shut down before ", what, " was sent"));
      }
      absl::StatusOr<std::string> token = token_source_(rejected);
      if (!token.ok()) {
        return absl::Status(token.status().code(),
                            absl::StrCat("cannot get a PIM access token for the Event Platform (",
                                         what, "): ", token.status().message()));
      }
      rejected.clear();
      HttpRequest http;
      http.method = request.method;
      http.url = config_.api_url.Resolve(request.path);
      http.headers = {{"X-PIM-URL", pim_url_},
                      {"X-PIM-TOKEN", *token},
                      {"X-PIM-CLIENT-ID", client_id_},
                      {"Accept", "application/json"}};
      if (!request.body.empty()) {
        http.headers.emplace_back("Content-Type", "application/json");
        http.body = request.body;
      }
      calls_.fetch_add(1, std::memory_order_relaxed);
      absl::StatusOr<HttpResponse> response =
          worker.connection.Exchange(http, [this] { return pool_.stopping(); });

      absl::Status failure;
      bool ambiguous = false;  // the request may have been processed
      std::optional<std::chrono::milliseconds> retry_after;
      int http_status = 0;
      if (!response.ok()) {
        const absl::StatusCode code = response.status().code();
        if (code == absl::StatusCode::kCancelled) {
          return absl::CancelledError(
              absl::StrCat("the Event Platform client shut down during ", what));
        }
        failure = absl::Status(
            code, absl::StrCat("Event Platform: ", what, ": ", response.status().message()));
        if (code != absl::StatusCode::kUnavailable && code != absl::StatusCode::kDeadlineExceeded) {
          return failure;  // a certificate, a URL or a size that will not change on retry
        }
        ambiguous = true;
      } else {
        http_status = response->status;
        if (http_status >= 200 && http_status < 300) {
          if (response->body.empty()) return json();
          json parsed = json::parse(response->body, nullptr, /*allow_exceptions=*/false);
          if (parsed.is_discarded()) {
            return absl::DataLossError(absl::StrCat(
                "Event Platform: ", what, " answered HTTP ", http_status,
                " with a body that is not JSON: ", Scrub(response->body, *token, request.secrets)));
          }
          return parsed;
        }
        const std::string message =
            absl::StrCat("Event Platform: ", what, " answered HTTP ", http_status, ": ",
                         Scrub(response->body, *token, request.secrets));
        if (http_status == 401 && !renewed) {
          // The token expired early or was revoked: renew it once and repeat the call.
          renewed = true;
          rejected = *token;
          retries_.fetch_add(1, std::memory_order_relaxed);
          --attempt;
          spdlog::debug("platform: {} answered 401; renewing the PIM access token", what);
          continue;
        }
        if (!Retryable(http_status)) {
          return WithHttpStatus(absl::Status(CodeOf(http_status), message), http_status);
        }
        if (http_status == 429) throttled_.fetch_add(1, std::memory_order_relaxed);
        retry_after = ParseRetryAfter(response->Header("Retry-After"));
        ambiguous = http_status >= 500;  // a 408 or 429 was not processed
        failure = WithHttpStatus(absl::UnavailableError(message), http_status);
      }

      if (attempt >= config_.max_attempts) {
        const std::string message = absl::StrCat(failure.message(), " (after ", attempt,
                                                 attempt == 1 ? " attempt)" : " attempts)");
        absl::Status final_status(failure.code() == absl::StatusCode::kDeadlineExceeded
                                      ? absl::StatusCode::kDeadlineExceeded
                                      : absl::StatusCode::kUnavailable,
                                  message);
        return http_status != 0 ? WithHttpStatus(final_status, http_status) : final_status;
      }
      if (ambiguous && request.find_created) {
        // Repeating a creation that went through would create a second subscriber or
        // subscription (and use up Akeneo's limit of 20): look first.
        absl::StatusOr<std::optional<json>> found = request.find_created(worker);
        if (found.ok() && found->has_value()) {
          recovered_.fetch_add(1, std::memory_order_relaxed);
          spdlog::info("platform: {} failed ({}) but had gone through; not repeating it", what,
                       http_status != 0 ? absl::StrCat("HTTP ", http_status) : "connection");
          return **found;
        }
      }
      std::chrono::milliseconds delay = Backoff(attempt, worker.random);
      if (retry_after.has_value() && *retry_after > delay) delay = *retry_after;
      retries_.fetch_add(1, std::memory_order_relaxed);
      spdlog::debug("platform: {} failed ({}); retrying in {} ms (attempt {}/{})", what,
                    http_status != 0 ? absl::StrCat("HTTP ", http_status) : "connection",
                    delay.count(), attempt + 1, config_.max_attempts);
      if (!SleepUnlessShutdown(delay)) {
        return absl::CancelledError(absl::StrCat("the Event Platform client shut down while ", what,
                                                 " waited to be retried"));
      }
    }
  }

  const PlatformConfig config_;
  const std::string pim_url_;
  const std::string client_id_;
  const TokenSource token_source_;

  WorkerPool<Job> pool_;

  std::atomic<uint64_t> calls_{0};
  std::atomic<uint64_t> retries_{0};
  std::atomic<uint64_t> throttled_{0};
  std::atomic<uint64_t> failures_{0};
  std::atomic<uint64_t> recovered_{0};
};

// What Create hands out. The client's state (PlatformClientImpl) is owned jointly by this front
// and by every worker thread (see WorkerPool): the last reference to a PlatformClient may be
// dropped on one of its own workers (a callback whose captures own it), and that worker goes on
// running its loop after the front is gone.
class PlatformClientFront final : public PlatformClient {
 public:
  explicit PlatformClientFront(std::shared_ptr<PlatformClientImpl> impl) : impl_(std::move(impl)) {}
  ~PlatformClientFront() override { impl_->Shutdown(); }

  void CreateSubscriberAsync(PlatformSubscriberRequest request,
                             Callback<PlatformSubscriber> done) override {
    impl_->CreateSubscriberAsync(std::move(request), std::move(done));
  }
  void ListSubscribersAsync(Callback<std::vector<PlatformSubscriber>> done) override {
    impl_->ListSubscribersAsync(std::move(done));
  }
  void GetSubscriberAsync(std::string subscriber_id, Callback<PlatformSubscriber> done) override {
    impl_->GetSubscriberAsync(std::move(subscriber_id), std::move(done));
  }
  void UpdateSubscriberAsync(std::string subscriber_id, PlatformSubscriberUpdate update,
                             Callback<PlatformSubscriber> done) override {
    impl_->UpdateSubscriberAsync(std::move(subscriber_id), std::move(update), std::move(done));
  }
  void DeleteSubscriberAsync(std::string subscriber_id,
                             Callback<PlatformSubscriber> done) override {
    impl_->DeleteSubscriberAsync(std::move(subscriber_id), std::move(done));
  }
  void CreateSubscriptionAsync(std::string subscriber_id, PlatformSubscriptionRequest request,
                               Callback<PlatformSubscription> done) override {
    impl_->CreateSubscriptionAsync(std::move(subscriber_id), std::move(request), std::move(done));
  }
  void ListSubscriptionsAsync(std::string subscriber_id,
                              Callback<std::vector<PlatformSubscription>> done) override {
    impl_->ListSubscriptionsAsync(std::move(subscriber_id), std::move(done));
  }
  void GetSubscriptionAsync(std::string subscriber_id, std::string subscription_id,
                            Callback<PlatformSubscription> done) override {
    impl_->GetSubscriptionAsync(std::move(subscriber_id), std::move(subscription_id),
                                std::move(done));
  }
  void UpdateSubscriptionAsync(std::string subscriber_id, std::string subscription_id,
                               PlatformSubscriptionUpdate update,
                               Callback<PlatformSubscription> done) override {
    impl_->UpdateSubscriptionAsync(std::move(subscriber_id), std::move(subscription_id),
                                   std::move(update), std::move(done));
  }
  void DeleteSubscriptionAsync(std::string subscriber_id, std::string subscription_id,
                               Callback<PlatformSubscription> done) override {
    impl_->DeleteSubscriptionAsync(std::move(subscriber_id), std::move(subscription_id),
                                   std::move(done));
  }
  void SuspendSubscriptionAsync(std::string subscriber_id, std::string subscription_id,
                                Callback<PlatformSubscription> done) override {
    impl_->SuspendSubscriptionAsync(std::move(subscriber_id), std::move(subscription_id),
                                    std::move(done));
  }
  void ResumeSubscriptionAsync(std::string subscriber_id, std::string subscription_id,
                               Callback<PlatformSubscription> done) override {
    impl_->ResumeSubscriptionAsync(std::move(subscriber_id), std::move(subscription_id),
                                   std::move(done));
  }
  void LogsAsync(PlatformLogQuery query, Callback<PlatformLogPage> done) override {
    impl_->LogsAsync(std::move(query), std::move(done));
  }
  void StartReplayAsync(std::string subscriber_id, std::string subscription_id,
                        Callback<PlatformReplay> done) override {
    impl_->StartReplayAsync(std::move(subscriber_id), std::move(subscription_id), std::move(done));
  }
  void GetReplayAsync(std::string subscriber_id, std::string subscription_id,
                      Callback<PlatformReplay> done) override {
    impl_->GetReplayAsync(std::move(subscriber_id), std::move(subscription_id), std::move(done));
  }
  PlatformClientStats stats() const override { return impl_->stats(); }
  void Shutdown() override { impl_->Shutdown(); }

 private:
  const std::shared_ptr<PlatformClientImpl> impl_;
};

}  // namespace

std::optional<int> PlatformHttpStatus(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kHttpStatusPayload);
  int code = 0;
  if (!payload.has_value() || !absl::SimpleAtoi(std::string(*payload), &code)) return std::nullopt;
  return code;
}

absl::StatusOr<std::unique_ptr<PlatformClient>> PlatformClient::Create(const PlatformConfig& config,
                                                                       const BaseUrl& pim_url,
                                                                       std::string client_id,
                                                                       TokenSource token_source) {
  if (config.api_url.empty()) {
    return absl::InvalidArgumentError("platform.api_url is not set");
  }
  if (!config.api_url.https() && !config.allow_insecure_http) {
    return absl::InvalidArgumentError(
        absl::StrCat("platform.api_url ", config.api_url.Describe(),
                     " is plain http, which would send the PIM access token in clear; use "
                     "https:// or set allow_insecure_http"));
  }
  if (pim_url.empty() || client_id.empty()) {
    return absl::InvalidArgumentError(
        "the Event Platform client needs the PIM's URL and the Connection's client id (rest)");
  }
  if (!token_source) {
    return absl::InvalidArgumentError("the Event Platform client needs a PIM token source");
  }
  if (config.max_attempts < 1) {
    return absl::InvalidArgumentError("platform.max_attempts must be >= 1");
  }
  if (config.timeout.count() <= 0) {
    return absl::InvalidArgumentError("platform.timeout must be > 0");
  }
  if (config.insecure_skip_verify) {
    spdlog::warn("platform: certificate verification is OFF for {} (insecure_skip_verify)",
                 config.api_url.Describe());
  }
  auto impl = std::make_shared<PlatformClientImpl>(config, pim_url.spec(), std::move(client_id),
                                                   std::move(token_source));
  impl->Start();
  return std::make_unique<PlatformClientFront>(std::move(impl));
}

absl::StatusOr<std::unique_ptr<PlatformClient>> PlatformClient::Create(const PlatformConfig& config,
                                                                       const RestConfig& rest,
                                                                       AkeneoClient& pim) {
  return Create(config, rest.base_url, rest.client_id,
                [&pim](std::string_view rejected) { return pim.AccessToken(rejected); });
}

}  // namespace pimgate
