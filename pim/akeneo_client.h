// AkeneoClient: pimgate's client for one PIM's REST API, used by reconciliation and hydration.
// It owns the OAuth token (password grant, refreshed before expiry), keeps its connections open,
// runs at most `max_concurrency` calls at once on its own threads (never on a gateway I/O
// thread), and retries 408, 429 (honouring Retry-After), 5xx and network errors with backoff.
// Beside it, the REST API's conventions that do not depend on the transport: next-page links,
// the `updated` filter's time format and time zone, Akeneo's error answers.
#ifndef PIMGATE_PIM_AKENEO_CLIENT_H_
#define PIMGATE_PIM_AKENEO_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/time_zone.h"
#include "config/config.h"
#include "google/protobuf/struct.pb.h"

namespace pimgate {

// Akeneo's largest page (`limit` above 100 is answered 422).
inline constexpr int kAkeneoMaxPageSize = 100;

// Counters since the client was created. Thread-safe snapshot.
struct AkeneoClientStats {
  uint64_t calls = 0;           // HTTP requests sent to the REST API (token requests excluded)
  uint64_t token_requests = 0;  // POST /api/oauth/v1/token (password grant and refreshes)
  uint64_t throttled = 0;       // 429 answers received
  uint64_t retries = 0;         // attempts repeated after 408, 429, 5xx, 401 or a network error
  uint64_t failures = 0;        // calls that finally failed
};

// One page of a list endpoint.
struct AkeneoPage {
  std::vector<google::protobuf::Struct> items;  // `_embedded.items`
  std::string next;                             // `_links.next.href`, empty on the last page
};

// Thread-safe. Every method may be called from any thread. Callbacks run on the client's own
// threads and may call the client again (they must not block on it: use the async forms there).
// The last reference to a client may be dropped on one of its own threads (in a callback, or when
// a callback holding it is destroyed): the destructor shuts it down there, and that thread
// cancels what is still queued and ends on its own after the destructor has returned (it is
// joined later, at the latest when the process exits).
//
// Errors: 2xx → the body. 401 → the token is renewed once and the call repeated; a token request
// that is refused → Unauthenticated (with the PIM's message, never the credentials). 404 →
// NotFound (IsAkeneoNotFound tells the PIM's own JSON answer from a proxy's page). 408, 429, 5xx,
// timeouts and connection errors (Akeneo's transient errors) → retried up to `max_attempts` with
// exponential backoff (a longer Retry-After wins), then Unavailable (DeadlineExceeded for a
// timeout). Other 4xx → FailedPrecondition with the status and the PIM's message (IsForbidden
// tells a 403). After Shutdown()
// → Cancelled.
class AkeneoClient {
 public:
  using BodyCallback = std::function<void(absl::StatusOr<std::string>)>;

  // Checks the configuration (URL scheme, CA file) but does not connect: a PIM that is down at
  // start is not an error; calls fail (and are retried by their callers) until it is up.
  static absl::StatusOr<std::unique_ptr<AkeneoClient>> Create(const RestConfig& config);
  virtual ~AkeneoClient() = default;

  // GET `target`: a path with its query ("/api/rest/v1/products-uuid?limit=100") or an
  // absolute URL on the configured origin (another origin is refused with InvalidArgument: the
  // access token only ever goes to the configured origin; map a `_links.next.href` with
  // NextPageTarget first). Queued until one of the `max_concurrency` slots is free.
  virtual void GetAsync(std::string target, BodyCallback done) = 0;
  // Blocking form of GetAsync.
  absl::StatusOr<std::string> Get(std::string target);

  // GET one page of a list endpoint and parse it.
  absl::StatusOr<AkeneoPage> GetPage(std::string target);

  // Pages through a list: `first_target`, then each `_links.next.href` (through NextPageTarget)
  // until a page has none. `on_page` gets each page's items in order; a non-OK status from it
  // stops paging and is returned. One page at a time (search_after pages cannot be fetched in
  // parallel).
  absl::Status ForEachPage(std::string first_target,
                           const std::function<absl::Status(AkeneoPage& page)>& on_page);

  // The configured rest.base_url.
  virtual const std::string& base_url() const = 0;
  // A PIM access token valid now, for the Akeneo services that take one in a header rather than
  // calling the REST API through this client (the Event Platform management API's X-PIM-TOKEN).
  // Obtained or renewed on one of the client's threads, with the retries of any call; the caller
  // blocks until then, so never call it on an I/O thread. `rejected`: a token another service
  // refused (401); it is discarded first, so that a new one is obtained. The token is a
  // credential: never log it.
  virtual absl::StatusOr<std::string> AccessToken(std::string_view rejected = {}) = 0;

  virtual AkeneoClientStats stats() const = 0;

  // Fails queued and later calls with Cancelled and waits for calls in flight to end (each
  // within `timeout`). Idempotent; the destructor calls it.
  virtual void Shutdown() = 0;
};

// "%"-encodes everything but RFC 3986 unreserved characters.
std::string UrlEncode(std::string_view text);

// A first-page target for a search_after list:
// "<path>?search=<url-encoded search_json>&limit=<limit>&pagination_type=search_after"
// (no search parameter when search_json is empty).
std::string SearchAfterTarget(std::string_view path, std::string_view search_json,
                              int limit = kAkeneoMaxPageSize);

// Where to fetch the page a list answer's `_links.next.href` points at, given the configured
// rest.base_url. A link on the configured origin gives its path and query. A link on the
// configured host with another scheme or port gives its path and query too, to be fetched on the
// configured origin, and sets `*other_origin`: an on-premise PIM behind a TLS-terminating proxy
// that does not trust the proxy's X-Forwarded-* headers writes `http://` (and its own port) into
// its links (akeneo/api-php-client #169, #245). A link on any other host is refused with
// InvalidArgument: the access token only goes to the configured origin.
absl::StatusOr<std::string> NextPageTarget(std::string_view base_url, std::string_view href,
                                           bool* other_origin = nullptr);

// Akeneo's `updated` filter value for a time: "YYYY-MM-DD hh:mm:ss", the format the REST API
// documents, as a wall-clock time in `server_zone`, the PIM server's time zone (PHP's
// date.timezone: the PIM reads the value with DateTime::createFromFormat in that zone; SaaS runs
// in UTC). Microseconds since the epoch in, seconds out (rounded down). Never later than the
// instant: where the wall-clock time is ambiguous (the hour repeated when DST ends), the value
// written is one whose every reading is at or before `time_us`.
std::string AkeneoSearchTime(int64_t time_us, const absl::TimeZone& server_zone);

// A time as the REST API writes it (`updated`, `created`: PHP's DATE_ATOM, with the server's UTC
// offset, e.g. "2026-12-04T15:00:00-05:00"; an RFC 3339 `Z` and a fraction are accepted too).
struct AkeneoTimestamp {
  int64_t time_us = 0;
  int offset_seconds = 0;  // the UTC offset written in the text: the server's offset at that time
};
absl::StatusOr<AkeneoTimestamp> ParseAkeneoTimestamp(std::string_view text);

// True when `status` comes from a 404 answered with Akeneo's own JSON error body
// ({"code":404,"message":...}): the PIM itself says the route or the resource does not exist (a
// 404 from a proxy, or from a URL that is not a PIM, has another body).
bool IsAkeneoNotFound(const absl::Status& status);

// True when `status` comes from a 403 answer (FailedPrecondition like other 4xx): the PIM refuses
// the connection's user this route (its role lacks the permission), or has the route only in an
// edition it is not (a Community Edition asked for an Enterprise Edition list).
bool IsForbidden(const absl::Status& status);

}  // namespace pimgate

#endif  // PIMGATE_PIM_AKENEO_CLIENT_H_
