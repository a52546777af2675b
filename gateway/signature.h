// Akeneo webhook signatures: HMAC-SHA256, lowercase hex, compared in constant time.
#ifndef PIMGATE_GATEWAY_SIGNATURE_H_
#define PIMGATE_GATEWAY_SIGNATURE_H_

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace pimgate {

// Lowercase hex HMAC-SHA256 of `message` under `key`.
std::string HmacSha256Hex(std::string_view key, std::string_view message);

// Compares a received hex signature with the expected one without leaking, through timing, how
// many leading characters match. Case-insensitive on hex digits; a length mismatch is false.
bool SignatureEquals(std::string_view expected_hex, std::string_view received_hex);

// Verifies webhook signatures for one source against its secrets (primary, then secondary for
// rotation). Holds copies of the secrets; never logs them. Thread-safe (immutable).
class SignatureVerifier {
 public:
  explicit SignatureVerifier(std::vector<std::string> secrets);

  // The checks of VerifyLegacy that need no body: both headers present, the timestamp a number
  // within `tolerance` of `now`, the signature 64 characters long. The gateway runs them before
  // reading a body it was asked to confirm (Expect: 100-continue), so a request that cannot pass
  // is refused before its body is sent.
  static absl::Status CheckLegacyHeaders(std::string_view signature, std::string_view timestamp,
                                         std::chrono::system_clock::time_point now,
                                         std::chrono::seconds tolerance);
  // The same for VerifyEventPlatform: a signature header present, each one 64 characters long.
  static absl::Status CheckEventPlatformHeaders(std::string_view primary,
                                                std::string_view secondary);

  // Legacy Events API: `signature` = hex HMAC of "<timestamp>.<raw body>"; `timestamp` is Unix
  // seconds and must be within `tolerance` of `now`. Unauthenticated with a specific message
  // otherwise (missing header, malformed timestamp, outside tolerance, mismatch).
  absl::Status VerifyLegacy(std::string_view signature, std::string_view timestamp,
                            std::string_view body, std::chrono::system_clock::time_point now,
                            std::chrono::seconds tolerance) const;

  // Event Platform: accepted when the primary or the secondary header matches the HMAC of the
  // raw body under any configured secret.
  absl::Status VerifyEventPlatform(std::string_view primary, std::string_view secondary,
                                   std::string_view body) const;

 private:
  std::vector<std::string> secrets_;
};

}  // namespace pimgate

#endif  // PIMGATE_GATEWAY_SIGNATURE_H_
