// Fuzzes signature and timestamp header handling against a model written independently: the
// legacy X-Akeneo-Request-Timestamp/-Signature check (VerifyLegacy), the Event Platform
// primary/secondary check (VerifyEventPlatform), and RFC 3339 timestamps (ParseTimestamp).
//
// Input: "<timestamp header>\n<primary signature>\n<secondary signature>\n<body>". The harness
// also signs the fuzzed timestamp and body itself, so the accepting paths are exercised too.
#include <openssl/evp.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_check.h"
#include "gateway/payload_parser.h"
#include "gateway/signature.h"
#include "google/protobuf/util/time_util.h"

namespace {

// The clock the requests are checked against: 2025-11-20T10:15:00Z.
constexpr int64_t kNow = 1763633700;
constexpr std::chrono::seconds kTolerance{300};
const std::vector<std::string> kSecrets = {"fuzz-secret-primary", "fuzz-secret-rotated"};

std::string Hmac(const std::string& key, std::string_view message) {
  unsigned char out[EVP_MAX_MD_SIZE];
  std::size_t len = 0;
  EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(),
            reinterpret_cast<const unsigned char*>(message.data()), message.size(), out,
            sizeof(out), &len);
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (std::size_t i = 0; i < len; ++i) {
    hex.push_back(kDigits[out[i] >> 4]);
    hex.push_back(kDigits[out[i] & 0xf]);
  }
  return hex;
}

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// A received signature matches when it is the 64-digit hex HMAC, in any case.
bool Matches(std::string_view received, std::string_view signed_bytes) {
  if (received.size() != 64) return false;
  for (const std::string& secret : kSecrets) {
    if (Lower(received) == Hmac(secret, signed_bytes)) return true;
  }
  return false;
}

// Unix seconds as std::from_chars reads them: optional '-', digits, within int64.
bool ParseSeconds(std::string_view text, __int128* out) {
  std::size_t i = 0;
  bool negative = false;
  if (i < text.size() && text[i] == '-') {
    negative = true;
    ++i;
  }
  if (i == text.size()) return false;
  __int128 value = 0;
  for (; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
    value = value * 10 + (text[i] - '0');
    if (value > (static_cast<__int128>(1) << 64)) return false;
  }
  value = negative ? -value : value;
  if (value > INT64_MAX || value < INT64_MIN) return false;
  *out = value;
  return true;
}

bool LegacyModel(std::string_view signature, std::string_view timestamp, std::string_view body) {
  if (signature.empty() || timestamp.empty()) return false;
  __int128 seconds = 0;
  if (!ParseSeconds(timestamp, &seconds)) return false;
  const __int128 skew = seconds > kNow ? seconds - kNow : kNow - seconds;
  if (skew > kTolerance.count()) return false;
  std::string signed_bytes(timestamp);
  signed_bytes.append(".").append(body);
  return Matches(signature, signed_bytes);
}

bool EventPlatformModel(std::string_view primary, std::string_view secondary,
                        std::string_view body) {
  if (primary.empty() && secondary.empty()) return false;
  for (std::string_view received : {primary, secondary}) {
    if (!received.empty() && received.size() != 64) return false;
  }
  return Matches(primary, body) || Matches(secondary, body);
}

std::string_view NextLine(std::string_view* input) {
  const std::size_t end = input->find('\n');
  std::string_view line = input->substr(0, end);
  input->remove_prefix(end == std::string_view::npos ? input->size() : end + 1);
  return line;
}

void CheckLegacy(const pimgate::SignatureVerifier& verifier, std::string_view signature,
                 std::string_view timestamp, std::string_view body) {
  const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(kNow));
  const absl::Status status = verifier.VerifyLegacy(signature, timestamp, body, now, kTolerance);
  const bool expected = LegacyModel(signature, timestamp, body);
  FUZZ_CHECK(status.ok() == expected, status.ToString());
  FUZZ_CHECK(status.ok() || status.code() == absl::StatusCode::kUnauthenticated);
  FUZZ_CHECK(status.ok() || !status.message().empty());
}

void CheckEventPlatform(const pimgate::SignatureVerifier& verifier, std::string_view primary,
                        std::string_view secondary, std::string_view body) {
  const absl::Status status = verifier.VerifyEventPlatform(primary, secondary, body);
  FUZZ_CHECK(status.ok() == EventPlatformModel(primary, secondary, body), status.ToString());
  FUZZ_CHECK(status.ok() || status.code() == absl::StatusCode::kUnauthenticated);
}

void CheckTimestamp(std::string_view text) {
  absl::StatusOr<google::protobuf::Timestamp> parsed = pimgate::ParseTimestamp(text);
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  FUZZ_CHECK(parsed->nanos() >= 0 && parsed->nanos() < 1'000'000'000);
  FUZZ_CHECK(parsed->seconds() >= google::protobuf::util::TimeUtil::kTimestampMinSeconds &&
             parsed->seconds() <= google::protobuf::util::TimeUtil::kTimestampMaxSeconds);
  // Round trip: protobuf's own RFC 3339 rendering parses back to the same instant.
  const std::string rendered = google::protobuf::util::TimeUtil::ToString(*parsed);
  absl::StatusOr<google::protobuf::Timestamp> again = pimgate::ParseTimestamp(rendered);
  FUZZ_CHECK(again.ok(), rendered);
  FUZZ_CHECK(again->seconds() == parsed->seconds() && again->nanos() == parsed->nanos(), rendered);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::string_view timestamp = NextLine(&input);
  const std::string_view primary = NextLine(&input);
  const std::string_view secondary = NextLine(&input);
  const std::string_view body = input;
  static const pimgate::SignatureVerifier verifier(kSecrets);

  FUZZ_CHECK(pimgate::HmacSha256Hex(kSecrets[0], body) == Hmac(kSecrets[0], body));
  // The headers as received.
  CheckLegacy(verifier, primary, timestamp, body);
  CheckEventPlatform(verifier, primary, secondary, body);
  CheckTimestamp(timestamp);

  // Correctly signed by the harness: accepted (unless the timestamp itself is refused), also in
  // upper case; one changed digit is refused.
  std::string signed_bytes(timestamp);
  signed_bytes.append(".").append(body);
  std::string good = Hmac(kSecrets[size % kSecrets.size()], signed_bytes);
  CheckLegacy(verifier, good, timestamp, body);
  std::string upper = good;
  for (char& c : upper) {
    if (c >= 'a' && c <= 'f') c = static_cast<char>(c - 'a' + 'A');
  }
  CheckLegacy(verifier, upper, timestamp, body);
  good[size % good.size()] = good[size % good.size()] == '0' ? '1' : '0';
  CheckLegacy(verifier, good, timestamp, body);

  const std::string platform = Hmac(kSecrets[(size + 1) % kSecrets.size()], body);
  CheckEventPlatform(verifier, platform, secondary, body);
  CheckEventPlatform(verifier, primary, platform, body);
  CheckEventPlatform(verifier, "", platform, body);
  return 0;
}
