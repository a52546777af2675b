// FakePim: a real HTTP(S) server on 127.0.0.1 (port 0) that speaks the subset of Akeneo's REST
// API pimgate uses: the OAuth token endpoint (password and refresh_token grants, expiring
// tokens), products-uuid, products (by identifier) and product-models lists with the `updated`
// and `uuid` search filters and search_after pagination, single-resource GETs (those kinds, and
// families, categories, attributes, attribute groups and options, reference entity records and
// assets by code), plus injectable
// faults (429 with Retry-After, 5xx, 408, slowness, malformed JSON, a connection cut mid-answer,
// on any endpoint, the token endpoint included). Like an on-premise PIM it runs in a time
// zone (its `updated` values carry the offset; its `updated` filter is read as wall-clock time
// there), can be a PIM 5/6 without products-uuid, and can write its links on another origin (a
// PIM behind a TLS-terminating proxy). Only the PIM is faked in pimgate's tests; this is that
// fake.
#ifndef PIMGATE_TESTS_TESTING_FAKE_PIM_H_
#define PIMGATE_TESTS_TESTING_FAKE_PIM_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace pimgate::testing {

class FakePim {
 public:
  struct Options {
    bool tls = true;  // self-signed certificate made by the test (clients skip verification)
    std::string client_id = "pim-client";
    std::string secret = "pim-secret";
    std::string username = "pim-user";
    std::string password = "pim-password";
    std::chrono::seconds token_ttl{3600};  // `expires_in` of issued tokens
    // More calls at once than this get 429 (Akeneo: 4 per connection).
    int max_concurrent_calls = 4;
    // The server's time zone (PHP's date.timezone): `updated`/`created` are written with its
    // offset at that time ("2026-12-04T10:00:00-05:00"), and the `updated` filter's
    // "YYYY-MM-DD hh:mm:ss" is read as wall-clock time there, like DateTime::createFromFormat
    // does. A wall-clock time the zone repeats (DST ending) is read as the later instant: the
    // harder case for a client. Default UTC-05:00, so that a client writing the filter in UTC
    // is caught by every test.
    absl::TimeZone time_zone = absl::FixedTimeZone(-5 * 3600);
    // false: a PIM 5 or 6. /api/rest/v1/products-uuid does not exist (404 with Akeneo's JSON
    // "No route found" error) and products have no `uuid`; /api/rest/v1/products serves them by
    // identifier (it exists in every version).
    bool products_uuid = true;
    // false: a Community Edition. The reference entity and Asset Manager routes do not exist
    // (404 with Akeneo's JSON "No route found" error).
    bool enterprise = true;
    // Items per page of the reference entity, record, asset family and asset lists: they take no
    // `limit` (Akeneo's API reference), the PIM pages them at its own size.
    int entity_page_size = 100;
  };

  // Starts serving at once (own thread); stops on destruction.
  FakePim();
  explicit FakePim(Options options);
  ~FakePim();
  FakePim(const FakePim&) = delete;
  FakePim& operator=(const FakePim&) = delete;

  uint16_t port() const;
  // "https://127.0.0.1:PORT" (http:// when !tls).
  std::string base_url() const;
  // The fake's self-signed certificate (PEM; CN=localhost, SAN DNS:localhost and IP:127.0.0.1),
  // to use as a client's CA file. Empty when !tls.
  const std::string& cert_file() const;
  const absl::TimeZone& time_zone() const;
  // `time` as the fake writes `updated`: "2026-12-04T10:00:00-05:00" in its time zone.
  std::string AkeneoTime(int64_t time_us) const;

  // The origin written in `_links` hrefs instead of base_url() ("http://127.0.0.1": a PIM behind
  // a TLS-terminating proxy that does not trust its X-Forwarded-* headers). Empty: base_url().
  void SetLinkOrigin(const std::string& origin);

  // ---- Catalogue (thread-safe) ----
  // Adds or replaces a product. `fields_json` is a JSON object of extra fields ("{\"family\":
  // \"shoes\"}"); `uuid`, `identifier` (= `identifier`, default "sku-<uuid>") and `updated`
  // (formatted as Akeneo does, "2026-11-20T10:14:59-05:00") are set by the fake. Without
  // products_uuid the uuid is only the fake's key: the product is served by identifier.
  void PutProduct(const std::string& uuid, int64_t updated_us,
                  const std::string& fields_json = "{}", const std::string& identifier = "");
  void DeleteProduct(const std::string& uuid);
  void PutProductModel(const std::string& code, int64_t updated_us,
                       const std::string& fields_json = "{}");
  void DeleteProductModel(const std::string& code);
  // The other kinds the REST API serves one by one, by code (their lists are not served):
  // "family" (GET /api/rest/v1/families/{code}), "category", "attribute", "attribute_group"
  // (/attribute-groups/{code}), "attribute_option" (/attributes/{attribute}/options/{code}),
  // "reference_entity_record" (/reference-entities/{entity}/records/{code}) and "asset"
  // (/asset-families/{family}/assets/{code}). `id` is pimgate's resource id: the code, or
  // "parent/code" for the last three. `fields_json` is the resource's JSON object; the fake sets
  // its `code` (and an option's `attribute`). Another kind fails the test.
  void PutCodedResource(const std::string& kind, const std::string& id,
                        const std::string& fields_json = "{}");
  void DeleteCodedResource(const std::string& kind, const std::string& id);
  // A family, category, attribute or attribute group that its list serves too
  // (GET /api/rest/v1/families, /categories, /attributes, /attribute-groups): like
  // PutCodedResource, with an `updated` written as the fake writes products'. Those lists page by
  // offset only (`page`, `limit` 1 to 100, else 422; `_links.next`), and take one filter,
  // {"updated":[{"operator":">","value":"<ISO 8601>"}]}, whose date and time are read as
  // wall-clock time in the fake's zone, whatever offset is written; other filters, operators,
  // formats and search_after pagination get 422.
  //
  // Also "reference_entity_record" and "asset", with `code` = "parent/code": served by
  // GET /api/rest/v1/reference-entities/{parent}/records and /asset-families/{parent}/assets
  // (the parent is created when missing). Those lists, and the parents' (GET
  // /reference-entities, /asset-families), page by search_after only, with an opaque cursor in
  // `_links.next` and no `limit` (Options::entity_page_size items a page); the items' lists take
  // {"updated":[{"operator":">" or "<","value":"<ISO 8601>"}]} (read as wall-clock time in the
  // fake's zone), refuse other filters with 422, and answer 404 for an unknown parent.
  void PutListedResource(const std::string& kind, const std::string& code, int64_t updated_us,
                         const std::string& fields_json = "{}");
  // Reference entities and asset families (`fields_json`: their other fields; the fake sets
  // `code`). Deleting one deletes its records or assets.
  void PutReferenceEntity(const std::string& code, const std::string& fields_json = "{}");
  void DeleteReferenceEntity(const std::string& code);
  void PutAssetFamily(const std::string& code, const std::string& fields_json = "{}");
  void DeleteAssetFamily(const std::string& code);

  // ---- Faults (thread-safe) ----
  // The next `count` API calls (token endpoint excluded) get `status` (a 408 is Akeneo's request
  // timeout); a 429 carries `Retry-After: retry_after_seconds` when it is >= 0.
  void FailNextCalls(int count, int status, int retry_after_seconds = -1);

  // A fault aimed at one endpoint, from its Nth call on: "page 3 of the product list answers
  // 500 three times", "the token endpoint answers 401", "page 2 is cut mid-body".
  struct Fault {
    enum class Kind {
      // Akeneo's JSON error {"code": status, "message": ...} with `status`.
      kStatus,
      // 200 with the answer the call would have had, its JSON cut in half.
      kMalformedJson,
      // The answer the call would have had: its header (with the full Content-Length) and half
      // of its body, then the connection closes without a TLS close_notify.
      kCutConnection,
    };
    Kind kind = Kind::kStatus;
    int status = 500;              // kStatus
    int retry_after_seconds = -1;  // kStatus: a Retry-After header when >= 0
    // kStatus: the error's message; empty: the fake's usual text. "{request}" in it is replaced
    // by the request's body and "{authorization}" by its Authorization header, as a server (or
    // proxy) that echoes what it was sent would do.
    std::string message;
    // Calls whose path starts with this ("/api/oauth/v1/token", "/api/rest/v1/products-uuid");
    // empty: every call, the token endpoint included.
    std::string path;
    int skip = 0;   // matching calls served normally first
    int count = 1;  // then this many matching calls get the fault
  };
  // Adds a fault beside the others. Each counts the calls matching its `path` on its own; a call
  // two faults are due for gets the one injected first. Checked before FailNextCalls.
  void InjectFault(Fault fault);
  // Faults injected and not yet used up.
  int pending_faults() const;
  // Every answer (token endpoint included) waits this long first.
  void SetDelay(std::chrono::milliseconds delay);
  // Invalidates every issued access token (the next call gets 401 and must renew).
  void ExpireTokens();
  // Stops accepting and closes every connection (the PIM is down); Resume() serves again on
  // the same port.
  void Stop();
  void Resume();

  // ---- Observations (thread-safe) ----
  struct Request {
    std::string method;
    std::string target;  // path and query as received
    int status = 0;      // what the fake answered (0: the connection was cut mid-answer)
  };
  std::vector<Request> requests() const;  // every request, token endpoint included, in order
  int token_requests() const;             // password grants + refreshes
  int refresh_requests() const;           // refresh_token grants only
  int max_concurrent_seen() const;        // most API calls in progress at once
  int connections_accepted() const;       // TCP connections accepted (keep-alive reuse shows)
  // Whether `token` is an access token this PIM issued and still accepts (other Akeneo services,
  // such as the fake Event Platform, check X-PIM-TOKEN with it).
  bool IsValidAccessToken(const std::string& token) const;
  const Options& options() const;
  void ClearRequests();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pimgate::testing

#endif  // PIMGATE_TESTS_TESTING_FAKE_PIM_H_
