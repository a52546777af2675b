// CheckPlatformSource: whether a source's Event Platform subscription will deliver what pimgate's
// plugins expect (`pimgatectl platform check`): each finding with what to do about it.
#ifndef PIMGATE_PIM_PLATFORM_CHECK_H_
#define PIMGATE_PIM_PLATFORM_CHECK_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "config/config.h"
#include "pim/platform_source.h"

namespace pimgate {

struct PlatformCheckFinding {
  enum class Outcome {
    kPassed,
    kProblem,  // events are lost or refused: `fix` says what to do
    kNote,     // worth knowing; nothing is lost
  };
  Outcome outcome = Outcome::kPassed;
  // "subscriber", "subscription", "status", "destination", "secret", "deliveries", "events".
  std::string check;
  std::string subscription_id;  // empty: about the source as a whole
  std::string detail;
  std::string fix;  // a command or a configuration change; empty: nothing to do
};

struct PlatformCheckReport {
  std::vector<PlatformCheckFinding> findings;
  // The source's destination at the public URL used; empty when none is known.
  std::string expected_destination;

  std::size_t problems() const;
};

struct PlatformCheckOptions {
  // pimgate's public base URL; empty: the one remembered from the last subscribe, else only the
  // destination's path is compared.
  std::string public_url;
  // Empty: every subscription of the source's subscriber.
  std::string subscription_id;
};

// Reads the source's subscriber, its subscriptions and their error logs from the management API
// and checks, for each subscription:
//  - status: active (suspended and revoked ones deliver nothing);
//  - destination: an https subscription to the source's URL (public URL + path);
//  - secret: Akeneo never returns secrets, so what is checked is what the platform's error logs
//    say since the subscription was last updated: deliveries answered 401 (pimgate's answer to a
//    signature made with another secret) mean the secret differs. The secondary secret's
//    presence is compared with the source's secondary_secret;
//  - events: every `events` glob of the plugins reading the source (`plugins[].sources` empty or
//    naming it) is served: an exact type must be subscribed, a glob must match at least one
//    subscribed type. Types Akeneo sends that no plugin reads are noted.
// An error is a failed call to the management API for the subscriber or its subscriptions
// (Akeneo's answer verbatim); a failed logs call is a finding (kNote), not an error.
absl::StatusOr<PlatformCheckReport> CheckPlatformSource(const PlatformSource& source,
                                                        const std::vector<PluginConfig>& plugins,
                                                        const PlatformCheckOptions& options);

}  // namespace pimgate

#endif  // PIMGATE_PIM_PLATFORM_CHECK_H_
