// Akeneo webhook bodies as the benchmarks send and store them: the legacy Events API batch and the
// Event Platform CloudEvent, with unique event ids and resources drawn from a fixed pool. Shared
// by the load generator and the backlog builder, so that a prebuilt backlog holds exactly the
// events that ingest runs store.
#ifndef PIMGATE_BENCH_AKENEO_PAYLOADS_H_
#define PIMGATE_BENCH_AKENEO_PAYLOADS_H_

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <random>
#include <string>
#include <vector>

namespace pimgate::bench {

// A version-4 UUID made of `high` and `low` (bar the version and variant bits). UUIDs made from
// increasing `high` values sort in the order they are made (bench/backlog.cc relies on it).
inline std::string UuidFrom(uint64_t high, uint64_t low) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%08x-%04x-4%03x-%04x-%012llx", static_cast<unsigned>(high >> 32),
                static_cast<unsigned>((high >> 16) & 0xffff), static_cast<unsigned>(high & 0xfff),
                static_cast<unsigned>((low >> 48) & 0x3fff) | 0x8000,
                static_cast<unsigned long long>(low & 0xffffffffffffULL));
  return buf;
}

// A random version-4 UUID.
inline std::string Uuid(std::mt19937_64& rng) {
  const uint64_t high = rng();
  return UuidFrom(high, rng());
}

// `t` as RFC 3339 UTC with microseconds ("2026-11-20T10:15:00.123456Z").
inline std::string Iso8601(std::chrono::system_clock::time_point t) {
  const std::time_t s = std::chrono::system_clock::to_time_t(t);
  const auto us =
      std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count() %
      1'000'000;
  std::tm tm;
  gmtime_r(&s, &tm);
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(us));
  return buf;
}

// A pool of resource uuids events are drawn from (per-resource ordering and staleness tracking
// are exercised as in a real catalogue, where popular products change often).
inline std::vector<std::string> ResourcePool(std::mt19937_64& rng, int size) {
  std::vector<std::string> pool;
  pool.reserve(size > 0 ? size : 1);
  for (int i = 0; i < (size > 0 ? size : 1); ++i) pool.push_back(Uuid(rng));
  return pool;
}

// A legacy Events API body ({"events":[...]}) of `events` product.updated events, all stamped
// `when` (event_datetime and the resource's `updated`). With `description_bytes`, each product
// also carries a description of that size (long texts are what make real bodies large).
inline std::string LegacyBody(std::mt19937_64& rng, const std::vector<std::string>& pool,
                              int events, const std::string& when,
                              std::size_t description_bytes = 0) {
  const std::string description =
      description_bytes == 0 ? std::string()
                             : R"(,"description":[{"locale":"en_US","scope":"ecommerce","data":")" +
                                   std::string(description_bytes, 'd') + R"("}])";
  std::string body = R"({"events":[)";
  for (int i = 0; i < events; ++i) {
    if (i > 0) body += ',';
    const std::string& uuid = pool[rng() % pool.size()];
    body += R"({"action":"product.updated","event_id":")" + Uuid(rng) + R"(","event_datetime":")" +
            when +
            R"(","author":"loadgen","author_type":"api","pim_source":"https:\/\/pim.example.com",)"
            R"("data":{"resource":{"uuid":")" +
            uuid +
            R"(","identifier":"sku","family":"shoes","enabled":true,"categories":["summer"],)"
            R"("values":{"name":[{"locale":null,"scope":null,"data":"Bench shoe"}])" +
            description + R"(},"updated":")" + when + R"("}}})";
  }
  body += "]}";
  return body;
}

// An Event Platform CloudEvent (structured mode) for one product.updated event.
inline std::string PlatformBody(std::mt19937_64& rng, const std::vector<std::string>& pool,
                                const std::string& when) {
  const std::string& uuid = pool[rng() % pool.size()];
  return R"({"specversion":"1.0","id":")" + Uuid(rng) +
         R"(","source":"pim","type":"com.akeneo.pim.v1.product.updated","subject":"bench",)"
         R"("datacontenttype":"application/json","time":")" +
         when + R"(","data":{"product":{"uuid":")" + uuid +
         R"("},"author":{"identifier":"loadgen","type":"api"}}})";
}

}  // namespace pimgate::bench

#endif  // PIMGATE_BENCH_AKENEO_PAYLOADS_H_
