// Hydration of lightweight Event Platform events: batching per source, the LRU cache shared by
// every hydrating plugin, and the join of concurrent requests for one key. All REST calls are
// asynchronous (AkeneoClient::GetAsync); nothing here blocks the caller beyond a mutex.
#include "pim/hydrator.h"

#include <list>
#include <set>
#include <unordered_map>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/json.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "pim/akeneo_client.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

using google::protobuf::Struct;

constexpr char kProductsPath[] = "/api/rest/v1/products-uuid";
constexpr char kProductsByIdentifierPath[] = "/api/rest/v1/products";

// The GET of one resource of each kind fetched one by one: `collection`/{code}, or
// `collection`/{parent}/`nested`/{code} for the kinds whose codes are unique within a parent
// (their resource id is "parent/code", see gateway/payload_parser.cc). Products reach this table
// only when known by identifier or on a PIM without products-uuid (the others are searched by
// uuid in batches). From Akeneo's REST API reference (api.akeneo.com/api-reference.html).
struct SingleGetRoute {
  absl::string_view kind;
  absl::string_view collection;
  absl::string_view nested;  // empty: the code alone
};
constexpr SingleGetRoute kSingleGetRoutes[] = {
    {"product", kProductsByIdentifierPath, ""},
    {"product_model", "/api/rest/v1/product-models", ""},
    {"family", "/api/rest/v1/families", ""},
    {"category", "/api/rest/v1/categories", ""},
    {"attribute", "/api/rest/v1/attributes", ""},
    {"attribute_group", "/api/rest/v1/attribute-groups", ""},
    {"attribute_option", "/api/rest/v1/attributes", "options"},
    {"reference_entity_record", "/api/rest/v1/reference-entities", "records"},
    {"asset", "/api/rest/v1/asset-families", "assets"},
};

// The GET of `request`'s resource: its target and the call as logged ("GET
// /api/rest/v1/families/{code}"). InvalidArgument for a kind without a route or an id without
// the parent its kind needs.
struct SingleGet {
  std::string target;
  std::string call;
};
absl::StatusOr<SingleGet> SingleGetOf(const HydrationRequest& request) {
  for (const SingleGetRoute& route : kSingleGetRoutes) {
    if (route.kind != request.kind) continue;
    if (route.nested.empty()) {
      return SingleGet{absl::StrCat(route.collection, "/", UrlEncode(request.resource_id)),
                       absl::StrCat("GET ", route.collection, "/{code}")};
    }
    const std::size_t slash = request.resource_id.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == request.resource_id.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "fetching ", request.kind, " ", request.resource_id, ": its id is not \"parent/code\""));
    }
    return SingleGet{
        absl::StrCat(route.collection, "/", UrlEncode(request.resource_id.substr(0, slash)), "/",
                     route.nested, "/", UrlEncode(request.resource_id.substr(slash + 1))),
        absl::StrCat("GET ", route.collection, "/{parent}/", route.nested, "/{code}")};
  }
  return absl::InvalidArgumentError(
      absl::StrCat("fetching ", request.kind, " ", request.resource_id, ": kind not hydrated"));
}
// The PIM's error text is kept to this many characters in an outcome: a failed search's message
// may quote a URL with 100 uuids, and the outcome ends up in a dead letter's reason.
constexpr std::size_t kMaxPimMessage = 300;

// 8-4-4-4-12 hex digits. Products whose id is not a uuid (an event from a PIM that sent only the
// identifier) are fetched one by one by identifier: a malformed uuid in a search would make the
// PIM refuse the whole batch.
bool IsUuid(const std::string& text) {
  if (text.size() != 36) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? text[i] != '-' : !absl::ascii_isxdigit(static_cast<unsigned char>(text[i]))) {
      return false;
    }
  }
  return true;
}

std::string CacheKey(const HydrationRequest& request) {
  return absl::StrCat(request.source, "\x1f", request.kind, "\x1f", request.resource_id, "\x1f",
                      request.version);
}

std::string Shorten(absl::string_view text) {
  if (text.size() <= kMaxPimMessage) return std::string(text);
  return absl::StrCat(text.substr(0, kMaxPimMessage), "...");
}

// A failure outcome's status: same code, naming the resource, its source and the call.
absl::Status Failure(const HydrationRequest& request, absl::string_view call,
                     const absl::Status& status) {
  return absl::Status(
      status.code(),
      absl::StrCat("fetching ", request.kind, " ", request.resource_id, " from source ",
                   request.source, " (", call, "): ", Shorten(status.message())));
}

// A 404 that is not Akeneo's own JSON answer (a proxy's page, a wrong base_url) says nothing of
// the resource: a failure, never "not found" (which would tell plugins it was deleted).
absl::Status NotFromThePim(const absl::Status& status) {
  if (!absl::IsNotFound(status)) return status;
  return absl::FailedPreconditionError(absl::StrCat(
      status.message(), " (not Akeneo's JSON error: is rest.base_url the PIM's own address?)"));
}

absl::StatusOr<Struct> ParseObject(const std::string& body) {
  Struct object;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  const auto status = google::protobuf::util::JsonStringToMessage(body, &object, options);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("the PIM's answer is not a JSON object: ",
                                            Shorten(std::string(status.message()))));
  }
  return object;
}

}  // namespace

class Hydrator::State : public std::enable_shared_from_this<Hydrator::State> {
 public:
  State(AkeneoClientMap clients, HydratorOptions options)
      : clients_(std::move(clients)), options_(options) {}

  std::vector<std::string> ServedSources() const {
    std::vector<std::string> sources;
    for (const auto& [source, client] : clients_) {
      if (client != nullptr) sources.push_back(source);
    }
    return sources;  // a std::map's keys: sorted
  }

  bool HasClient(const std::string& source) const {
    auto it = clients_.find(source);
    return it != clients_.end() && it->second != nullptr;
  }

  void Hydrate(std::vector<HydrationRequest> requests, DoneFn done_fn) {
    auto done = std::make_shared<DoneFn>(std::move(done_fn));
    std::vector<HydrationOutcome> immediate;
    // What this call has to fetch itself (it leads those keys): products by uuid per source,
    // and the single GETs.
    std::map<std::string, std::vector<HydrationRequest>> searches;
    std::vector<HydrationRequest> singles;
    std::vector<HydrationRequest> no_client;
    {
      absl::MutexLock lock(&mu_);
      for (HydrationRequest& request : requests) {
        const std::string key = CacheKey(request);
        if (auto hit = index_.find(key); hit != index_.end()) {
          lru_.splice(lru_.begin(), lru_, hit->second);  // most recently used
          const Entry& entry = *hit->second;
          HydrationOutcome& outcome = immediate.emplace_back();
          outcome.sequence = request.sequence;
          outcome.ticket = request.ticket;
          outcome.from_cache = true;
          outcome.resource = entry.item;
          if (!entry.item) {
            outcome.status = absl::NotFoundError(absl::StrCat(
                request.kind, " ", request.resource_id, " not found in source ", request.source));
          }
          ++stats_.cache_hits;
          continue;
        }
        auto [fetch, leader] = fetching_.try_emplace(key);
        fetch->second.push_back(Waiter{request.sequence, request.ticket, done, leader});
        if (!leader) continue;  // another request is fetching this key: share its answer
        if (!HasClient(request.source)) {
          // Callers check ShouldHydrate first; answer rather than leave the request hanging.
          no_client.push_back(std::move(request));
          continue;
        }
        if (request.kind == "product" && IsUuid(request.resource_id) &&
            !without_products_uuid_.contains(request.source)) {
          searches[request.source].push_back(std::move(request));
        } else {
          singles.push_back(std::move(request));
        }
      }
    }
    for (HydrationOutcome& outcome : immediate) (*done)(std::move(outcome));
    for (const HydrationRequest& request : no_client) {
      Finish(request,
             absl::FailedPreconditionError(
                 absl::StrCat("fetching ", request.kind, " ", request.resource_id, ": source ",
                              request.source, " has no REST client (rest)")),
             nullptr);
    }
    for (auto& [source, products] : searches) {
      for (std::size_t begin = 0; begin < products.size(); begin += kAkeneoMaxPageSize) {
        const std::size_t end = std::min(products.size(), begin + kAkeneoMaxPageSize);
        Search(source,
               std::vector<HydrationRequest>(products.begin() + begin, products.begin() + end));
      }
    }
    for (HydrationRequest& request : singles) GetOne(std::move(request));
  }

  HydratorStats stats() const {
    absl::MutexLock lock(&mu_);
    HydratorStats stats = stats_;
    stats.cache_entries = lru_.size();
    stats.cache_bytes = bytes_;
    return stats;
  }

 private:
  struct Entry {
    std::string key;
    std::shared_ptr<const Struct> item;  // null: the PIM has no such resource
    std::size_t bytes = 0;
  };
  struct Waiter {
    uint64_t sequence;
    uint64_t ticket;
    std::shared_ptr<DoneFn> done;
    bool leader;  // the request that made the call
  };

  // GET products-uuid?search={"uuid":[{"operator":"IN","value":[...]}]}&limit=100: one call for
  // up to 100 products of one source. Products absent from the answer are not found.
  void Search(const std::string& source, std::vector<HydrationRequest> products) {
    Json uuids = Json::array();
    for (const HydrationRequest& p : products) uuids.push_back(p.resource_id);
    Json in;
    in["operator"] = "IN";
    in["value"] = std::move(uuids);
    Json filter;
    filter["uuid"] = Json::array({std::move(in)});
    const std::string search = JsonDump(filter);
    const std::string target =
        absl::StrCat(kProductsPath, "?search=", UrlEncode(search), "&limit=", kAkeneoMaxPageSize);
    const std::string call =
        absl::StrCat("GET ", kProductsPath, " search of ", products.size(), " uuid(s)");
    CountCall();
    clients_.at(source)->GetAsync(target, [self = shared_from_this(), source,
                                           products = std::move(products),
                                           call](absl::StatusOr<std::string> body) {
      if (IsAkeneoNotFound(body.status())) {
        // A PIM before 7.0 has no products-uuid route: its products are named by identifier
        // (an identifier may look like a uuid), which GET /products/{identifier} serves.
        self->NoProductsUuid(source, body.status());
        for (const HydrationRequest& p : products) self->GetOne(p);
        return;
      }
      absl::StatusOr<Struct> page =
          body.ok() ? ParseObject(*body) : absl::StatusOr<Struct>(NotFromThePim(body.status()));
      if (!page.ok()) {
        for (const HydrationRequest& p : products) {
          self->Finish(p, Failure(p, call, page.status()), nullptr);
        }
        return;
      }
      std::unordered_map<std::string, std::shared_ptr<const Struct>> found;
      const auto embedded = page->fields().find("_embedded");
      if (embedded != page->fields().end() && embedded->second.has_struct_value()) {
        const auto& items = embedded->second.struct_value().fields();
        if (auto list = items.find("items"); list != items.end() && list->second.has_list_value()) {
          for (const google::protobuf::Value& item : list->second.list_value().values()) {
            if (!item.has_struct_value()) continue;
            const auto uuid = item.struct_value().fields().find("uuid");
            if (uuid == item.struct_value().fields().end()) continue;
            // Akeneo writes uuids in lower case; compare case-insensitively anyway.
            found[absl::AsciiStrToLower(uuid->second.string_value())] =
                std::make_shared<const Struct>(item.struct_value());
          }
        }
      }
      for (const HydrationRequest& p : products) {
        auto it = found.find(absl::AsciiStrToLower(p.resource_id));
        if (it != found.end()) {
          self->Finish(p, absl::OkStatus(), it->second);
        } else {
          self->Finish(p, NotFound(p), nullptr);
        }
      }
    });
  }

  // One GET (kSingleGetRoutes): a product model, a product known only by its identifier (or
  // from a PIM without products-uuid), a family, a record, ... 404 → not found.
  void GetOne(HydrationRequest request) {
    absl::StatusOr<SingleGet> get = SingleGetOf(request);
    if (!get.ok()) {
      Finish(request, get.status(), nullptr);
      return;
    }
    CountCall();
    clients_.at(request.source)
        ->GetAsync(get->target, [self = shared_from_this(), request = std::move(request),
                                 call = get->call](absl::StatusOr<std::string> body) {
          if (!body.ok()) {
            if (IsAkeneoNotFound(body.status())) {
              self->Finish(request, NotFound(request), nullptr);
            } else {
              self->Finish(request, Failure(request, call, NotFromThePim(body.status())), nullptr);
            }
            return;
          }
          absl::StatusOr<Struct> item = ParseObject(*body);
          if (!item.ok()) {
            self->Finish(request, Failure(request, call, item.status()), nullptr);
            return;
          }
          self->Finish(request, absl::OkStatus(), std::make_shared<const Struct>(*std::move(item)));
        });
  }

  void NoProductsUuid(const std::string& source, const absl::Status& answer) {
    {
      absl::MutexLock lock(&mu_);
      if (!without_products_uuid_.insert(source).second) return;
    }
    spdlog::warn(
        "hydration: source {} has no {} (a PIM before 7.0: {}); fetching its products one by one "
        "through {}/{{identifier}}",
        source, kProductsPath, std::string(answer.message()), kProductsByIdentifierPath);
  }

  static absl::Status NotFound(const HydrationRequest& request) {
    return absl::NotFoundError(absl::StrCat(request.kind, " ", request.resource_id,
                                            " not found in source ", request.source));
  }

  void CountCall() {
    absl::MutexLock lock(&mu_);
    ++stats_.calls;
  }

  // Answers every request waiting for `request`'s key; caches found and not-found answers.
  void Finish(const HydrationRequest& request, const absl::Status& status,
              std::shared_ptr<const Struct> item) {
    const std::string key = CacheKey(request);
    std::vector<Waiter> waiters;
    {
      absl::MutexLock lock(&mu_);
      if (auto it = fetching_.find(key); it != fetching_.end()) {
        waiters = std::move(it->second);
        fetching_.erase(it);
      }
      if (status.ok() || status.code() == absl::StatusCode::kNotFound) {
        if (status.ok()) {
          ++stats_.fetched;
        } else {
          ++stats_.not_found;
        }
        Insert(key, item);
      } else {
        stats_.failures += waiters.size();
      }
      for (const Waiter& waiter : waiters) {
        if (!waiter.leader && (status.ok() || status.code() == absl::StatusCode::kNotFound)) {
          ++stats_.cache_hits;
        }
      }
    }
    if (!status.ok() && status.code() != absl::StatusCode::kNotFound) {
      spdlog::warn("hydration: {}", std::string(status.message()));
    }
    for (Waiter& waiter : waiters) {
      HydrationOutcome outcome;
      outcome.sequence = waiter.sequence;
      outcome.ticket = waiter.ticket;
      outcome.status = status;
      outcome.resource = item;
      outcome.from_cache = !waiter.leader;
      (*waiter.done)(std::move(outcome));
    }
  }

  void Insert(const std::string& key, std::shared_ptr<const Struct> item)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (options_.cache_entries == 0) return;
    const std::size_t bytes = key.size() + (item ? item->ByteSizeLong() : 0);
    if (bytes > options_.cache_bytes) return;  // larger than the whole cache: never kept
    if (auto old = index_.find(key); old != index_.end()) {
      bytes_ -= old->second->bytes;
      lru_.erase(old->second);
      index_.erase(old);
    }
    lru_.push_front(Entry{key, std::move(item), bytes});
    index_[key] = lru_.begin();
    bytes_ += bytes;
    while (lru_.size() > options_.cache_entries || bytes_ > options_.cache_bytes) {
      const Entry& last = lru_.back();
      bytes_ -= last.bytes;
      index_.erase(last.key);
      lru_.pop_back();
    }
  }

  const AkeneoClientMap clients_;
  const HydratorOptions options_;
  mutable absl::Mutex mu_;
  std::list<Entry> lru_ ABSL_GUARDED_BY(mu_);  // front: most recently used
  std::unordered_map<std::string, std::list<Entry>::iterator> index_ ABSL_GUARDED_BY(mu_);
  std::size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Keys being fetched, with every request waiting for them (the leader first).
  std::unordered_map<std::string, std::vector<Waiter>> fetching_ ABSL_GUARDED_BY(mu_);
  // Sources whose PIM answered products-uuid with its own 404 (PIM 5/6).
  std::set<std::string> without_products_uuid_ ABSL_GUARDED_BY(mu_);
  HydratorStats stats_ ABSL_GUARDED_BY(mu_);
};

Hydrator::Hydrator(AkeneoClientMap clients, HydratorOptions options)
    : state_(std::make_shared<State>(std::move(clients), options)) {}

Hydrator::~Hydrator() = default;

std::vector<std::string> Hydrator::ServedSources() const { return state_->ServedSources(); }

bool Hydrator::ShouldHydrate(const v1::Event& event) const {
  return IsLightweightEvent(event) && state_->HasClient(event.source());
}

void Hydrator::Hydrate(std::vector<HydrationRequest> requests, DoneFn done) {
  state_->Hydrate(std::move(requests), std::move(done));
}

HydratorStats Hydrator::stats() const { return state_->stats(); }

}  // namespace pimgate
