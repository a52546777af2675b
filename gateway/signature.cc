// HMAC-SHA256 signatures of Akeneo webhooks, verified in constant time.
#include "gateway/signature.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <charconv>
#include <cstdint>

#include "absl/strings/str_cat.h"

namespace pimgate {
namespace {

constexpr std::size_t kSha256HexLength = 64;

// Value of a hex digit, or -1. Branch-free enough for our purpose: the comparison below never
// stops early, so timing does not depend on where a mismatch is.
int HexValue(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string HmacSha256Hex(std::string_view key, std::string_view message) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac.data(),
       &mac_len);
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex(mac_len * 2, '0');
  for (unsigned int i = 0; i < mac_len; ++i) {
    hex[2 * i] = kDigits[mac[i] >> 4];
    hex[2 * i + 1] = kDigits[mac[i] & 0xf];
  }
  return hex;
}

bool SignatureEquals(std::string_view expected_hex, std::string_view received_hex) {
  // Length is not secret (always 64 for SHA-256); only the content comparison must be constant
  // time. Decode both to bytes so upper-case hex from a client is accepted.
  if (expected_hex.size() != kSha256HexLength || received_hex.size() != kSha256HexLength) {
    return false;
  }
  std::array<unsigned char, kSha256HexLength / 2> expected{};
  std::array<unsigned char, kSha256HexLength / 2> received{};
  int invalid = 0;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    int eh = HexValue(expected_hex[2 * i]), el = HexValue(expected_hex[2 * i + 1]);
    int rh = HexValue(received_hex[2 * i]), rl = HexValue(received_hex[2 * i + 1]);
    invalid |= (eh | el | rh | rl) < 0;
    expected[i] = static_cast<unsigned char>(((eh & 0xf) << 4) | (el & 0xf));
    received[i] = static_cast<unsigned char>(((rh & 0xf) << 4) | (rl & 0xf));
  }
  return CRYPTO_memcmp(expected.data(), received.data(), expected.size()) == 0 && !invalid;
}

SignatureVerifier::SignatureVerifier(std::vector<std::string> secrets)
    : secrets_(std::move(secrets)) {}

absl::Status SignatureVerifier::CheckLegacyHeaders(std::string_view signature,
                                                   std::string_view timestamp,
                                                   std::chrono::system_clock::time_point now,
                                                   std::chrono::seconds tolerance) {
  if (signature.empty()) {
    return absl::UnauthenticatedError("missing X-Akeneo-Request-Signature header");
  }
  if (timestamp.empty()) {
    return absl::UnauthenticatedError("missing X-Akeneo-Request-Timestamp header");
  }
  int64_t seconds = 0;
  auto [end, ec] = std::from_chars(timestamp.data(), timestamp.data() + timestamp.size(), seconds);
  if (ec != std::errc() || end != timestamp.data() + timestamp.size()) {
    return absl::UnauthenticatedError("X-Akeneo-Request-Timestamp is not a Unix time in seconds");
  }
  const int64_t now_s =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  // The distance in unsigned arithmetic: any two int64 values are less than 2^64 apart, while
  // `now_s - seconds` overflows (undefined behaviour) for a timestamp such as INT64_MIN.
  const uint64_t skew = now_s > seconds
                            ? static_cast<uint64_t>(now_s) - static_cast<uint64_t>(seconds)
                            : static_cast<uint64_t>(seconds) - static_cast<uint64_t>(now_s);
  if (tolerance.count() < 0 || skew > static_cast<uint64_t>(tolerance.count())) {
    return absl::UnauthenticatedError(absl::StrCat("X-Akeneo-Request-Timestamp is ", skew,
                                                   " s away from the server clock (tolerance ",
                                                   tolerance.count(), " s)"));
  }
  if (signature.size() != kSha256HexLength) {
    return absl::UnauthenticatedError(absl::StrCat(
        "X-Akeneo-Request-Signature must be 64 hex characters, got ", signature.size()));
  }
  return absl::OkStatus();
}

absl::Status SignatureVerifier::VerifyLegacy(std::string_view signature, std::string_view timestamp,
                                             std::string_view body,
                                             std::chrono::system_clock::time_point now,
                                             std::chrono::seconds tolerance) const {
  if (absl::Status headers = CheckLegacyHeaders(signature, timestamp, now, tolerance);
      !headers.ok()) {
    return headers;
  }
  std::string signed_bytes;
  signed_bytes.reserve(timestamp.size() + 1 + body.size());
  signed_bytes.append(timestamp).append(".").append(body);
  bool match = false;
  for (const std::string& secret : secrets_) {
    // Check every secret (no early exit) so timing does not reveal which one matched.
    match |= SignatureEquals(HmacSha256Hex(secret, signed_bytes), signature);
  }
  if (!match) {
    return absl::UnauthenticatedError("X-Akeneo-Request-Signature does not match");
  }
  return absl::OkStatus();
}

absl::Status SignatureVerifier::CheckEventPlatformHeaders(std::string_view primary,
                                                          std::string_view secondary) {
  if (primary.empty() && secondary.empty()) {
    return absl::UnauthenticatedError("missing X-AKENEO-SIGNATURE-PRIMARY header");
  }
  for (std::string_view received : {primary, secondary}) {
    if (!received.empty() && received.size() != kSha256HexLength) {
      return absl::UnauthenticatedError(
          absl::StrCat("X-AKENEO-SIGNATURE-* must be 64 hex characters, got ", received.size()));
    }
  }
  return absl::OkStatus();
}

absl::Status SignatureVerifier::VerifyEventPlatform(std::string_view primary,
                                                    std::string_view secondary,
                                                    std::string_view body) const {
  if (absl::Status headers = CheckEventPlatformHeaders(primary, secondary); !headers.ok()) {
    return headers;
  }
  bool match = false;
  for (const std::string& secret : secrets_) {
    const std::string expected = HmacSha256Hex(secret, body);
    match |= SignatureEquals(expected, primary);
    match |= SignatureEquals(expected, secondary);
  }
  if (!match) {
    return absl::UnauthenticatedError("X-AKENEO-SIGNATURE-PRIMARY/SECONDARY does not match");
  }
  return absl::OkStatus();
}

}  // namespace pimgate
