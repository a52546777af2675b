// pimgate configuration: the YAML schema as C++ structs, and the loader that validates it.
#ifndef PIMGATE_CONFIG_CONFIG_H_
#define PIMGATE_CONFIG_CONFIG_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/base_url.h"
#include "common/logging.h"
#include "common/net_address.h"
#include "common/time_zone.h"
#include "common/units.h"

namespace pimgate {

enum class SourceKind { kEventsApi, kEventPlatform };

// A secret as configured: its resolved value plus where it came from. `Describe()` never
// returns the value, so secrets can be logged safely by describing them.
struct Secret {
  std::string value;
  std::string origin;  // "inline", "env:NAME" or "file:/path"

  // Where the secret came from (its origin), never its value.
  const std::string& Describe() const { return origin; }
};

// A TLS protocol version (YAML "1.2", "1.3").
enum class TlsVersion { kTls1_2, kTls1_3 };

struct TlsConfig {
  std::string cert_file;
  std::string key_file;
  // Lowest protocol accepted.
  TlsVersion min_version = TlsVersion::kTls1_2;
};

struct GatewayConfig {
  // host:port (common/net_address.h); port 0 picks a free port (tests).
  ListenAddress listen = ListenAddress::Ipv4({0, 0, 0, 0}, 8443);
  std::optional<TlsConfig> tls;
  // I/O threads serving HTTP. 0 = number of cores.
  int threads = 0;
  // Largest accepted request body; larger ones get 413 (before reading when Content-Length says
  // so). Bounds memory per connection together with header_limit.
  std::size_t body_limit = 4 * 1024 * 1024;
  std::size_t header_limit = 16 * 1024;
  // Most events accepted in one legacy request (Akeneo sends 1 to 10).
  std::size_t max_events_per_request = 100;
  // Time allowed to receive a request's headers, then its body, once the first byte arrived.
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds body_timeout{30'000};
  // A keep-alive connection with no new request for this long is closed.
  std::chrono::milliseconds idle_timeout{60'000};
  // TLS handshake must finish within this.
  std::chrono::milliseconds handshake_timeout{10'000};
  // Open connections beyond this are closed at accept.
  std::size_t max_connections = 1024;
  // Request-body bytes held before authentication, in total (gateway/body_budget.h,
  // docs/security.md). 0: DefaultMaxBufferedBytes(), a quarter of the memory available, at most
  // 256 MiB. At least 2 x body_limit when set.
  std::size_t max_buffered_bytes = 0;
  // Connections one client address (an IPv6 /64) may have open; it also sets the address's share
  // of the body budget (max_connections_per_client / max_connections of it).
  std::size_t max_connections_per_client = 128;
  // How long a request whose body does not fit in the budget waits for room before it is refused
  // unread (503, or 429 with Retry-After for the Event Platform).
  std::chrono::milliseconds buffer_wait{250};
  // Legacy Events API: reject requests whose timestamp is further than this from now.
  std::chrono::seconds timestamp_tolerance{300};
};

// Which store holds the event log. YAML `store.backend`.
enum class StoreBackend { kRocksDb, kJetStream };

// How pimgate authenticates to the NATS servers. YAML `store.jetstream.credentials`: either a
// user and password, or a NATS credentials file (JWT and NKey seed), never both.
struct NatsCredentialsConfig {
  std::string user;
  std::optional<Secret> password;  // set with user
  std::string creds_file;          // checked readable at load
};

// TLS to the NATS servers. YAML `store.jetstream.tls`: the CA that signs the servers'
// certificates, and optionally a client certificate and key (both or neither).
struct NatsTlsConfig {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

// Dispatch shared by several pimgate nodes on one JetStream stream. YAML
// `store.jetstream.cluster` (docs/architecture.md, "Dispatch in a cluster"). The resource space
// is cut into `partitions`; each (plugin, partition) is delivered by the one node that holds its
// lease in `lease_bucket`.
struct ClusterConfig {
  // This node's name in leases, unique among the running nodes. Empty: <hostname>-<pid>.
  std::string node_id;
  // How many partitions the resources are cut into (every node must use the same number).
  int partitions = 8;
  // A lease not renewed for this long expires and another node takes its partitions over. A
  // node renews every lease_ttl / 4 and stops delivering lease_ttl * 3 / 4 after its last
  // successful renewal was sent.
  std::chrono::milliseconds lease_ttl{10'000};
  std::string lease_bucket = "pimgate_leases";
};

// The event log on a NATS JetStream cluster (design/jetstream.md). YAML `store.jetstream`,
// required with `store.backend: jetstream`. store.path then holds this node's local replica.
struct JetStreamConfig {
  // nats:// or tls:// URLs of the cluster's servers (any subset: the client learns the rest).
  std::vector<std::string> servers;
  std::optional<NatsCredentialsConfig> credentials;
  std::optional<NatsTlsConfig> tls;
  // Copies the cluster keeps of the stream and the buckets: 1 or 3.
  int replicas = 1;
  std::string stream = "PIMGATE_LOG";
  std::string subject = "pimgate.log";
  std::string cursor_bucket = "pimgate_cursors";
  std::string dead_letter_bucket = "pimgate_dead_letters";
  // How long an append (or a metadata write) may stay in doubt (no answer from the cluster)
  // before it fails with 503.
  std::chrono::milliseconds write_timeout{10'000};
  ClusterConfig cluster;
};

struct StoreConfig {
  StoreBackend backend = StoreBackend::kRocksDb;
  // rocksdb: the store. jetstream: this node's local replica of the log.
  std::string path = "./pimgate-data";
  std::optional<JetStreamConfig> jetstream;  // set (and only then) with backend kJetStream
  // true: a 200 is sent only after the events are fsynced (group commit).
  bool sync = true;
  // Events leave the log once every plugin's cursor has passed them and they were received
  // longer ago than this. It is also the dedup window: a re-sent event id is recognised (and
  // answered as a duplicate) for this long, then accepted as new.
  std::chrono::seconds retention{7 * 24 * 3600};
  // Dead letters are deleted this long after they were dead-lettered.
  std::chrono::seconds dead_letter_retention{30 * 24 * 3600};
  // Quarantined batch elements are deleted this long after they were received.
  std::chrono::seconds quarantine_retention{30 * 24 * 3600};
  // How often the retention pass runs (it trims in bounded chunks, see core/log/retention.h).
  std::chrono::milliseconds retention_interval{60'000};
  // Most requests merged into one group commit.
  std::size_t max_commit_requests = 256;
  // Requests waiting for the writer. Event Platform sources get 429 above it; legacy requests
  // (whose sender ignores 429) wait.
  std::size_t max_pending_requests = 4096;
};

// The PIM REST API of a source, used by reconciliation and hydration. YAML `sources[].rest`.
// Credentials are those of an Akeneo Connection; `secret` and `password` take the same syntax as
// the webhook secrets (inline, "${ENV_VAR}", "file:/path") and are never logged.
struct RestConfig {
  // "https://pim.example.com" (scheme, host, optional port; no path). http:// is refused unless
  // allow_insecure_http is true (tests, a PIM on localhost). Its spec() is the PIM's URL as
  // pimgate states it (X-PIM-URL, the pim_source of reconciled events).
  BaseUrl base_url;
  std::string client_id;
  Secret secret;
  std::string username;
  Secret password;
  // Calls in flight at once to this PIM (Akeneo allows 4 per connection). 1 to 4.
  uint32_t max_concurrency = 4;
  // One call (connect, TLS handshake, request and response) must finish within this.
  std::chrono::milliseconds timeout{30'000};
  // Attempts per call on 429, 5xx and network errors before the call fails (1 = no retry).
  uint32_t max_attempts = 6;
  // Backoff between attempts: initial_backoff * 2^(n-1), capped at max_backoff, +-20% jitter.
  // A 429's Retry-After, when longer, wins.
  std::chrono::milliseconds initial_backoff{500};
  std::chrono::milliseconds max_backoff{30'000};
  // PEM bundle to verify the PIM's certificate with, instead of the system store.
  std::string ca_file;
  // The proxy to reach the PIM through: "" = from the environment as curl reads it (HTTPS_PROXY
  // or https_proxy, http_proxy for http://, ALL_PROXY, NO_PROXY), "none" = direct, else the
  // proxy's URL (http://, https://, socks5:// or socks5h://; credentials allowed, never logged).
  std::string proxy;
  // Skip certificate verification (never in production; tests against a self-signed PIM).
  bool insecure_skip_verify = false;
  bool allow_insecure_http = false;
  // The PIM server's time zone, in which it reads the `updated` filter of reconciliation: a fixed
  // offset ("-05:00") or an IANA name ("America/New_York", DST-aware). Empty: learned from the
  // offsets the PIM writes in `updated` (docs/reconciliation.md).
  std::optional<PimTimeZone> timezone;
};

// Periodic reconciliation of a source through its `rest` API. YAML `sources[].reconcile`.
struct ReconcileConfig {
  // Time between the end of one run and the start of the next; 0 = only on demand
  // (`pimgatectl reconcile`). Default 15m.
  std::chrono::milliseconds interval{15 * 60'000};
  // Each run asks for items updated after (watermark - overlap), so items updated while the
  // previous run was paging are not missed.
  std::chrono::milliseconds overlap{5 * 60'000};
  // First run of a source with no watermark: scan from this time (RFC 3339) instead of
  // everything. Microseconds since the epoch; unset = everything.
  std::optional<int64_t> since_us;
  // A failed run is retried after this (instead of waiting for `interval`).
  std::chrono::milliseconds retry_after{60'000};
  // What to reconcile. Default: products and product models (the catalogue structure kinds are
  // opt-in: turning them on makes a source's first run list all of them).
  bool products = true;
  bool product_models = true;
  bool families = false;
  bool categories = false;
  bool attributes = false;
  bool attribute_groups = false;
  // Enterprise Edition (and Serenity) kinds, listed per reference entity / asset family: opt-in
  // like the structure kinds. A PIM without them (Community Edition) is told in the run's figures
  // and the log; the other kinds are still reconciled.
  bool reference_entity_records = false;
  bool assets = false;
};

// Akeneo's production Event Platform management API: https://event.prd.sdk.akeneo.cloud/api/v1.
BaseUrl DefaultPlatformApiUrl();

// Akeneo's Event Platform management API, through which pimgate manages the subscriber and
// subscriptions of a `kind: event_platform` source. YAML `sources[].platform`; needs the source's
// `rest` (the PIM access token, X-PIM-URL and X-PIM-CLIENT-ID come from it).
struct PlatformConfig {
  // Base URL of the management API, with its path (Akeneo's production one by default). https://
  // only, unless allow_insecure_http (tests).
  BaseUrl api_url = DefaultPlatformApiUrl();
  // Name given to the subscriber pimgate creates; empty: "pimgate <source name>", filled in by
  // the loader, so never empty in a loaded Config.
  std::string subscriber_name;
  // contact.technical_email of that subscriber: where Akeneo mails suspensions and revocations.
  std::string technical_email;
  // Resume a subscription the platform (not a user) suspended once pimgate is ready again, ask
  // the platform to replay what it captured, and reconcile the source (pim/platform_watch.h).
  bool auto_resume = false;
  // How often the managed subscriptions' status is read.
  std::chrono::milliseconds watch_interval{60'000};
  // One call must finish within this; attempts and backoff as for `rest` (408, 429, 5xx and
  // network errors are retried).
  std::chrono::milliseconds timeout{30'000};
  uint32_t max_attempts = 6;
  std::chrono::milliseconds initial_backoff{500};
  std::chrono::milliseconds max_backoff{30'000};
  // "" = from the environment (HTTPS_PROXY, NO_PROXY), "none" = direct, else the proxy URL.
  std::string proxy;
  std::string ca_file;
  bool insecure_skip_verify = false;
  bool allow_insecure_http = false;
};

struct SourceConfig {
  std::string name;
  SourceKind kind = SourceKind::kEventsApi;
  // The POST path this source's webhooks arrive at, e.g. /hooks/akeneo.
  std::string path;
  Secret secret;
  std::optional<Secret> secondary_secret;
  // Overrides gateway.timestamp_tolerance for this (legacy) source.
  std::optional<std::chrono::seconds> timestamp_tolerance;
  // The PIM's REST API (reconciliation, hydration). Unset: neither is available for this source.
  std::optional<RestConfig> rest;
  // Set only together with `rest` (the loader refuses `reconcile` without `rest`); when `rest`
  // is set and `reconcile` is not written, the defaults above apply.
  std::optional<ReconcileConfig> reconcile;
  // event_platform sources: a second POST path that receives only the Event Platform's
  // notification webhooks (subscription suspended, revoked, resumed), for a subscriber whose
  // `notification_webhook_url` points there. Empty: none (notifications sent to `path` are
  // recognised by their shape anyway). Unique across every source's path and notification_path.
  std::string notification_path;
  // event_platform sources: the subscriber's `notification_webhook_secret` (16 to 256
  // characters, Akeneo's limit). Notification webhooks are verified with it and with the
  // source's own secrets; events never with it.
  std::optional<Secret> notification_secret;
  // Set only on event_platform sources that also have `rest` (the loader refuses it otherwise).
  std::optional<PlatformConfig> platform;
};

struct LogConfig {
  LogLevel level = LogLevel::kInfo;     // trace, debug, info, warn, error
  LogFormat format = LogFormat::kText;  // text | json
};

// Redelivery schedule for RETRY, UNSPECIFIED, ack timeouts and broken streams: attempt n waits
// min(initial_backoff * multiplier^(n-1), max_backoff), randomized by +-jitter.
// YAML `plugins[].retry`: max_attempts >= 1, backoffs > 0 with initial_backoff <= max_backoff,
// multiplier >= 1, 0 <= jitter <= 1.
struct RetryConfig {
  // Deliveries of one event before it is dead-lettered (1 = no retry).
  uint32_t max_attempts = 10;
  std::chrono::milliseconds initial_backoff{1'000};
  std::chrono::milliseconds max_backoff{300'000};
  double multiplier = 2.0;
  double jitter = 0.2;  // 0 .. 1
};

// Restart schedule of a crashed plugin process (exponential, reset after a stable run).
// YAML `plugins[].restart`: durations > 0 with initial_backoff <= max_backoff.
struct RestartConfig {
  std::chrono::milliseconds initial_backoff{1'000};
  std::chrono::milliseconds max_backoff{60'000};
  // A process that served this long before dying restarts from initial_backoff again.
  std::chrono::milliseconds reset_after{60'000};
};

// Include/exclude lists over one string attribute (author, author_type). Empty include = all.
// YAML `{include: [...], exclude: [...]}`, both optional, elements non-empty strings.
struct StringFilter {
  std::vector<std::string> include;
  std::vector<std::string> exclude;
};

// A filter on the event's `data`: the value at `path` (dot-separated, e.g. `family`,
// `product.uuid`, `categories`) must (in) or must not (not_in) equal one of `values`. A list
// value matches when any element does. Scalars compare as text: true, 12, 1.5, null.
// YAML `{path: family, in: [shoes, boots]}` or `{path: ..., not_in: [...]}` (exactly one of the
// two, with at least one value). YAML booleans and nulls (True, ~, null) become "true", "false"
// and "null"; other values, numbers included, keep the text written in the config.
struct DataFilter {
  std::string path;
  std::vector<std::string> values;
  bool negate = false;  // not_in
};

// One entry of the YAML `plugins:` list (optional; default empty). Unknown keys are errors, and
// so are env, start_timeout, stop_timeout and restart on an `address` plugin, which pimgate does
// not launch.
struct PluginConfig {
  // Required, unique among plugins, [a-z0-9_-]{1,64}. Names the socket of a launched plugin.
  std::string name;
  // argv of a process pimgate launches and supervises. Exactly one of command / address.
  // A relative argv[0] is resolved at launch, not at load.
  std::vector<std::string> command;
  // gRPC target of an already running plugin ("unix:/run/x.sock", "127.0.0.1:50051").
  std::string address;
  // Set in the environment of a launched plugin, in document order, over everything else but
  // PIMGATE_PLUGIN_ADDRESS and PIMGATE_PLUGIN_NAME. Names are [A-Za-z_][A-Za-z0-9_]*; values are
  // plain strings (no ${} or file: resolution).
  std::vector<std::pair<std::string, std::string>> env;
  // What else of pimgate's own environment a launched plugin gets. By default only the base set
  // (PATH, HOME, LANG, LC_*, TZ, TMPDIR and the sanitizers' *SAN_OPTIONS, see
  // core/dispatch/plugin_supervisor.h): pimgate's ${ENV} secrets stay out of third-party handlers.
  // YAML `inherit_env: true` passes everything (inherit_env_all), a list passes those names.
  bool inherit_env_all = false;
  std::vector<std::string> inherit_env;
  // Globs over canonical types; `*` matches any characters (including dots). Only a-z, 0-9, _,
  // . and *; if the key is written, the list must not be empty.
  std::vector<std::string> events = {"*"};
  // Source names, each of a configured source; empty = all sources (if the key is written, the
  // list must not be empty).
  std::vector<std::string> sources;
  bool skip_stale = true;
  // Deliveries outstanding at once (different resources only). 1 to 10000.
  uint32_t max_in_flight = 16;
  RetryConfig retry;
  // A delivery not acknowledged within this is treated as a failure and retried.
  std::chrono::milliseconds ack_timeout{30'000};
  // A launched plugin must report SERVING on grpc.health.v1 within this.
  std::chrono::milliseconds start_timeout{30'000};
  // On shutdown: SIGTERM, then SIGKILL after this grace period.
  std::chrono::milliseconds stop_timeout{10'000};
  RestartConfig restart;
  StringFilter authors;
  StringFilter author_types;
  std::vector<DataFilter> data;  // all must match
  // Fetch the full resource for lightweight events before delivering (M4).
  bool hydrate = false;
};

// Where launched plugins listen and how they are supervised. YAML `runtime:`.
struct PluginsRuntimeConfig {
  // YAML `runtime.dir`. Unix sockets of launched plugins go here ("<dir>/<name>.sock"), each of
  // which must fit in a unix socket address (107 bytes on Linux). Default: <store.path>/run,
  // filled in by the loader, so never empty in a loaded Config.
  std::string runtime_dir;
};

// TLS for the admin API (gRPC). Both files are PEM and checked to be readable at load.
struct AdminTlsConfig {
  std::string cert_file;
  std::string key_file;
};

// The gRPC admin API (`pimgatectl` talks to it). YAML `admin:`.
struct AdminConfig {
  // false: no admin listener at all.
  bool enabled = true;
  // "host:port" (port 0 picks a free port, for tests) or "unix:/path/to/socket". An address
  // other machines can reach (not local_only(): loopback or a unix socket) needs `token` and
  // `tls`, unless allow_insecure_remote is true; the loader refuses it otherwise.
  ListenAddress listen = ListenAddress::Ipv4({127, 0, 0, 1}, 7070);
  // When set, every admin call must carry `authorization: Bearer <token>`. Same syntax as the
  // sources' secrets (inline, "${ENV_VAR}", "file:/path").
  std::optional<Secret> token;
  std::optional<AdminTlsConfig> tls;
  // Accept a non-loopback listen without a token or without TLS (e.g. behind a private mesh).
  bool allow_insecure_remote = false;
};

// Prometheus exposition (/metrics) and probes (/healthz, /readyz), plain HTTP. YAML `metrics:`.
struct MetricsConfig {
  bool enabled = true;
  // host:port; port 0 picks a free port (tests). Keep it local or firewalled: it is not
  // authenticated, though it exposes no secret and no event content.
  ListenAddress listen = ListenAddress::Ipv4({127, 0, 0, 1}, 9464);
};

// The web console (M12): the Admin API as HTTP/JSON (POST /api/v1/<Method>) and the console's
// static files, plain HTTP. YAML `console:`. Off by default. It forwards every API call to the
// admin API in-process, so it needs admin.enabled, and it checks the same admin.token: an address
// other machines can reach (not loopback) needs admin.token; the loader refuses it otherwise.
struct ConsoleConfig {
  bool enabled = false;
  // host:port; port 0 picks a free port (tests). Not a unix socket.
  ListenAddress listen = ListenAddress::Ipv4({127, 0, 0, 1}, 7080);
};

struct Config {
  GatewayConfig gateway;
  StoreConfig store;
  std::vector<SourceConfig> sources;
  LogConfig log;
  std::vector<PluginConfig> plugins;
  PluginsRuntimeConfig runtime;
  AdminConfig admin;
  MetricsConfig metrics;
  ConsoleConfig console;
};

// Parses and validates a configuration. Invalid configurations give InvalidArgument with the
// line and key path of the first problem in document order (`line 12: sources[1].kind: must be
// "events_api" or "event_platform", got "foo"`); the file path is not included, callers add it.
// Unknown keys are errors. `store` and a non-empty `sources` are required; everything else has the
// defaults above. Secret values are never part of an error message. Checks across sections (a
// plugin's sources exist, plugin socket paths fit) run once the whole document is read and report
// the earliest line among their own errors.
//
// Secrets are resolved here: "${NAME}" reads environment variable NAME (which must be set and
// non-empty), "file:/path" reads the file with trailing whitespace trimmed, anything else is the
// secret itself. gateway.tls files are checked to be readable regular files.
//
// Reads the environment, so call it before starting threads that may call setenv().
// LoadConfigFile returns NotFound (PermissionDenied, FailedPrecondition) naming the path when the
// file cannot be read.
//
// With `check_plugin_commands` (pimgate --check-config), each launched plugin's program must
// also exist and be executable (a bare name is looked up in the PATH the plugin will get), and
// the script of a known interpreter (python3 x.py, node x.js, ...) must exist; a Node script
// whose package.json lists dependencies needs its node_modules. Errors name the command
// element's line. Without it, these are runtime matters (the supervisor reports them).
struct LoadOptions {
  bool check_plugin_commands = false;
};
absl::StatusOr<Config> LoadConfigFile(const std::string& path, const LoadOptions& options = {});
absl::StatusOr<Config> LoadConfigString(const std::string& yaml, const LoadOptions& options = {});

// The check `check_plugin_commands` makes, for one loaded plugin (no line numbers):
// "plugins.NAME.command[0]: ..." or OK. `address` plugins are always OK.
absl::Status CheckPluginCommand(const PluginConfig& plugin);

const char* SourceKindName(SourceKind kind);

}  // namespace pimgate

#endif  // PIMGATE_CONFIG_CONFIG_H_
