// Signature vectors computed independently (RFC 4231, the openssl CLI, OpenSSL's EVP_MAC).
#include "gateway/signature.h"

#include <gtest/gtest.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using std::chrono::seconds;
using testing::RunCommand;
using testing::TempDir;
using testing::TestHmacHex;

// HMAC-SHA256 hex of a file's bytes with the openssl command line tool.
std::string OpensslCliHmac(const std::string& key, const std::string& message) {
  TempDir dir;
  std::ofstream(dir.File("msg"), std::ios::binary) << message;
  std::string out = RunCommand("openssl dgst -sha256 -hmac '" + key + "' -r " + dir.File("msg"));
  return out.substr(0, out.find(' '));
}

TEST(HmacSha256Hex, MatchesRfc4231TestCase2) {
  EXPECT_EQ(HmacSha256Hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(HmacSha256Hex, MatchesOpensslCliOnAkeneoShapedInputs) {
  const std::string body =
      R"({"events":[{"action":"product.updated","event_id":"6c4c3b4e-0a6f-4d1a-9a0b-3f5f1c1b2a10",)"
      R"("pim_source":"https:\/\/pim.example.com","data":{"resource":{"uuid":"a3f2"}}}]})";
  for (const std::string& message : {std::string("1700000000.") + body, std::string("1700000000."),
                                     body, std::string("\xc3\xa9t\xc3\xa9 caf\xc3\xa9")}) {
    EXPECT_EQ(HmacSha256Hex("s3cr3t-key", message), OpensslCliHmac("s3cr3t-key", message));
    EXPECT_EQ(HmacSha256Hex("s3cr3t-key", message), TestHmacHex("s3cr3t-key", message));
  }
}

TEST(SignatureEquals, ComparesHexContent) {
  const std::string sig = HmacSha256Hex("k", "m");
  EXPECT_TRUE(SignatureEquals(sig, sig));
  std::string upper = sig;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_TRUE(SignatureEquals(sig, upper));
  std::string last_off = sig;
  last_off.back() = last_off.back() == '0' ? '1' : '0';
  EXPECT_FALSE(SignatureEquals(sig, last_off));
  EXPECT_FALSE(SignatureEquals(sig, sig.substr(0, 63)));
  EXPECT_FALSE(SignatureEquals(sig, sig + "0"));
  EXPECT_FALSE(SignatureEquals(sig, ""));
  std::string not_hex = sig;
  not_hex[10] = 'g';
  EXPECT_FALSE(SignatureEquals(sig, not_hex));
}

class VerifierTest : public ::testing::Test {
 protected:
  SignatureVerifier verifier_{{"primary-secret", "secondary-secret"}};
  std::chrono::system_clock::time_point now_{seconds(1'800'000'000)};
  const std::string body_ = R"({"events":[]})";
  std::string LegacySig(const std::string& secret, const std::string& ts) {
    return TestHmacHex(secret, ts + "." + body_);
  }
};

TEST_F(VerifierTest, LegacyAcceptsEitherSecretWithinTolerance) {
  EXPECT_TRUE(verifier_
                  .VerifyLegacy(LegacySig("primary-secret", "1800000000"), "1800000000", body_,
                                now_, seconds(300))
                  .ok());
  EXPECT_TRUE(verifier_
                  .VerifyLegacy(LegacySig("secondary-secret", "1799999800"), "1799999800", body_,
                                now_, seconds(300))
                  .ok());
}

TEST_F(VerifierTest, LegacyRefusesWithSpecificMessages) {
  auto check = [&](absl::Status status, const std::string& expected) {
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
    EXPECT_NE(std::string(status.message()).find(expected), std::string::npos) << status;
  };
  check(verifier_.VerifyLegacy("", "1800000000", body_, now_, seconds(300)),
        "missing X-Akeneo-Request-Signature");
  check(verifier_.VerifyLegacy(LegacySig("primary-secret", "1800000000"), "", body_, now_,
                               seconds(300)),
        "missing X-Akeneo-Request-Timestamp");
  check(verifier_.VerifyLegacy(LegacySig("primary-secret", "1800000000"), "18e8", body_, now_,
                               seconds(300)),
        "not a Unix time");
  check(verifier_.VerifyLegacy(LegacySig("primary-secret", "1799999000"), "1799999000", body_, now_,
                               seconds(300)),
        "1000 s away");
  check(verifier_.VerifyLegacy(LegacySig("primary-secret", "1800000400"), "1800000400", body_, now_,
                               seconds(300)),
        "400 s away");
  check(verifier_.VerifyLegacy(LegacySig("wrong-secret", "1800000000"), "1800000000", body_, now_,
                               seconds(300)),
        "does not match");
  check(verifier_.VerifyLegacy("abc", "1800000000", body_, now_, seconds(300)),
        "64 hex characters");
  // The timestamp is part of the signed bytes: a replay with a fresh timestamp fails.
  check(verifier_.VerifyLegacy(LegacySig("primary-secret", "1800000000"), "1800000001", body_, now_,
                               seconds(300)),
        "does not match");
}

TEST_F(VerifierTest, EventPlatformPrimaryOrSecondaryUnderAnySecret) {
  const std::string good = TestHmacHex("primary-secret", body_);
  const std::string rotated = TestHmacHex("secondary-secret", body_);
  const std::string bad = TestHmacHex("other", body_);
  EXPECT_TRUE(verifier_.VerifyEventPlatform(good, "", body_).ok());
  EXPECT_TRUE(verifier_.VerifyEventPlatform(bad, good, body_).ok());
  EXPECT_TRUE(verifier_.VerifyEventPlatform(rotated, "", body_).ok());
  EXPECT_TRUE(verifier_.VerifyEventPlatform("", rotated, body_).ok());
  EXPECT_EQ(verifier_.VerifyEventPlatform(bad, bad, body_).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(verifier_.VerifyEventPlatform("", "", body_).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(verifier_.VerifyEventPlatform(good.substr(1), "", body_).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(verifier_.VerifyEventPlatform(good, "", body_ + " ").code(),
            absl::StatusCode::kUnauthenticated);
}

// Found by fuzz/signature_fuzzer (UBSan): the distance to a timestamp at the ends of the int64
// range overflowed. It must be refused as far away, with the distance printed exactly.
TEST_F(VerifierTest, TimestampsAtTheEndsOfTheInt64RangeAreOutOfTolerance) {
  for (const std::string timestamp : {"-9223372036854775808", "9223372036854775807"}) {
    absl::Status status = verifier_.VerifyLegacy(LegacySig("primary-secret", timestamp), timestamp,
                                                 body_, now_, seconds(300));
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << timestamp;
    EXPECT_NE(status.message().find("s away from the server clock (tolerance 300 s)"),
              absl::string_view::npos)
        << status;
  }
  const std::string past = "-9223372036854775808";
  absl::Status status =
      verifier_.VerifyLegacy(LegacySig("primary-secret", past), past, body_, now_, seconds(300));
  const int64_t now_s = std::chrono::duration_cast<seconds>(now_.time_since_epoch()).count();
  EXPECT_NE(status.message().find(
                absl::StrCat("is ", static_cast<uint64_t>(now_s) + (uint64_t{1} << 63), " s away")),
            absl::string_view::npos)
      << status;
}

}  // namespace
}  // namespace pimgate
