// What the gateway tells of an Event Platform notification webhook it verified and stored
// (subscription suspended, revoked, resumed): pim/platform_subscriptions.h keeps the states.
#ifndef PIMGATE_EVENTS_SUBSCRIPTION_NOTICE_H_
#define PIMGATE_EVENTS_SUBSCRIPTION_NOTICE_H_

#include <string>

#include "absl/time/time.h"

namespace pimgate {

// One notification webhook, verified and stored by the gateway.
struct SubscriptionNotice {
  std::string source;  // the pimgate source the subscription delivers to
  std::string subscription_id;
  std::string notification_type;  // subscription.suspended.system, ...
  absl::Time changed_at;          // the notification's `timestamp`
  std::string reason;             // may be empty
  std::string subscriber_id;      // may be empty
};

}  // namespace pimgate

#endif  // PIMGATE_EVENTS_SUBSCRIPTION_NOTICE_H_
