// CheckPlatformSource: the management API's view of a source's subscriptions against pimgate's
// configuration (destination, secrets, the plugins' event globs) and the platform's error logs.
#include "pim/platform_check.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/glob.h"
#include "core/log/event_query.h"
#include "events/event_type.h"

namespace pimgate {
namespace {

using Outcome = PlatformCheckFinding::Outcome;

// Pages of error logs read per subscription (the platform merges identical errors within 5
// minutes, so a page covers a long time).
constexpr int kMaxErrorLogPages = 20;
// The HTTP status pimgate's gateway answers a delivery whose signature does not verify.
constexpr int kBadSignatureStatus = 401;
// Events of the log LastVerifiedEvent reads at most, newest first.
constexpr std::size_t kMaxVerifiedScan = 10'000;
// Types listed in one finding before "and N more".
constexpr std::size_t kMaxTypesListed = 12;

std::string Listed(const std::vector<std::string>& items) {
  if (items.size() <= kMaxTypesListed) return absl::StrJoin(items, ", ");
  std::vector<std::string> head(items.begin(), items.begin() + kMaxTypesListed);
  return absl::StrCat(absl::StrJoin(head, ", "), " and ", items.size() - kMaxTypesListed, " more");
}

absl::Time Floor(absl::Time time) { return absl::FromUnixSeconds(absl::ToUnixSeconds(time)); }

class Checker {
 public:
  Checker(const PlatformSource& source, const std::vector<PluginConfig>& plugins,
          const PlatformCheckOptions& options)
      : source_(source), options_(options) {
    for (const PluginConfig& plugin : plugins) {
      if (plugin.sources.empty() || std::find(plugin.sources.begin(), plugin.sources.end(),
                                              source.name()) != plugin.sources.end()) {
        readers_.push_back(&plugin);
      }
    }
  }

  absl::StatusOr<PlatformCheckReport> Run() {
    public_url_ = options_.public_url.empty() ? source_.RememberedPublicUrl() : options_.public_url;
    if (!public_url_.empty()) {
      absl::StatusOr<std::string> expected = source_.DestinationFor(public_url_);
      if (!expected.ok()) return expected.status();
      report_.expected_destination = *expected;
    }
    absl::StatusOr<std::optional<PlatformSubscriber>> subscriber = source_.FindSubscriber();
    if (!subscriber.ok()) return subscriber.status();
    if (!subscriber->has_value()) {
      Add(Outcome::kProblem, "subscriber", "",
          absl::StrCat("the PIM connection has no Event Platform subscriber named \"",
                       source_.platform().subscriber_name, "\": Akeneo sends this source nothing"),
          SubscribeFix(DefaultEvents()));
      return std::move(report_);
    }
    subscriber_ = **subscriber;
    if (subscriber_.status == "revoked") {
      Add(Outcome::kProblem, "subscriber", "",
          absl::StrCat("subscriber \"", subscriber_.name, "\" (", subscriber_.id,
                       ") is revoked: the Connection or App was removed from the PIM, and with it "
                       "every subscription"),
          absl::StrCat("restore the Connection (with its Event Platform permission), set a new "
                       "platform.subscriber_name, restart pimgate and run `",
                       SubscribeFix(DefaultEvents()), "`"));
      return std::move(report_);
    }
    Add(Outcome::kPassed, "subscriber", "",
        absl::StrCat("subscriber \"", subscriber_.name, "\" (", subscriber_.id, ") is ",
                     subscriber_.status.empty() ? "active" : subscriber_.status),
        "");

    absl::StatusOr<std::vector<PlatformSubscription>> subscriptions =
        source_.SubscriptionsOf(subscriber_.id);
    if (!subscriptions.ok()) return subscriptions.status();
    if (!options_.subscription_id.empty()) {
      std::erase_if(*subscriptions, [this](const PlatformSubscription& s) {
        return s.id != options_.subscription_id;
      });
      if (subscriptions->empty()) {
        Add(Outcome::kProblem, "subscription", options_.subscription_id,
            absl::StrCat("subscriber \"", subscriber_.name, "\" has no subscription ",
                         options_.subscription_id),
            absl::StrCat("pimgatectl platform subscriptions ", source_.name()));
        return std::move(report_);
      }
    }
    if (subscriptions->empty()) {
      Add(Outcome::kProblem, "subscription", "",
          absl::StrCat("subscriber \"", subscriber_.name,
                       "\" has no subscription: Akeneo sends this source nothing"),
          SubscribeFix(DefaultEvents()));
      return std::move(report_);
    }
    for (const PlatformSubscription& subscription : *subscriptions) Check(subscription);
    return std::move(report_);
  }

 private:
  void Add(Outcome outcome, std::string check, std::string subscription, std::string detail,
           std::string fix) {
    report_.findings.push_back(PlatformCheckFinding{
        outcome, std::move(check), std::move(subscription), std::move(detail), std::move(fix)});
  }

  std::string Url() const { return public_url_.empty() ? "PUBLIC_URL" : public_url_; }

  std::string SubscribeFix(const std::vector<std::string>& events) const {
    std::string fix =
        absl::StrCat("pimgatectl platform subscribe ", source_.name(), " --url ", Url());
    if (!events.empty()) absl::StrAppend(&fix, " --events ", absl::StrJoin(events, " "));
    return fix;
  }

  // What the plugins reading the source ask for, as `--events` takes it.
  std::vector<std::string> DefaultEvents() const {
    std::vector<std::string> globs;
    for (const PluginConfig* plugin : readers_) {
      for (const std::string& glob : plugin->events) {
        if (std::find(globs.begin(), globs.end(), glob) == globs.end()) globs.push_back(glob);
      }
    }
    if (globs.empty()) globs.push_back("TYPE...");
    return globs;
  }

  void Check(const PlatformSubscription& s) {
    CheckStatus(s);
    CheckDestination(s);
    CheckSecretAndDeliveries(s);
    CheckEvents(s);
  }

  void CheckStatus(const PlatformSubscription& s) {
    if (s.status == "active") {
      Add(Outcome::kPassed, "status", s.id, "active", "");
    } else if (s.status == "suspended") {
      Add(Outcome::kProblem, "status", s.id,
          absl::StrCat("suspended since ", s.updated_at.empty() ? "?" : s.updated_at,
                       ": Akeneo delivers nothing and captures the events (for up to 10 days)"),
          absl::StrCat("pimgatectl platform resume ", source_.name(), " --subscription ", s.id,
                       " (replays what was captured), or set platform.auto_resume: true"));
    } else if (s.status == "revoked") {
      Add(Outcome::kProblem, "status", s.id,
          "revoked: the Connection lost the Event Platform permission or was removed; Akeneo "
          "will never deliver on it again",
          absl::StrCat("restore the Connection's Event Platform permission, then `",
                       SubscribeFix(CanonicalEvents(s)), "` and `pimgatectl platform delete ",
                       source_.name(), " --subscription ", s.id, "`"));
    } else {
      Add(Outcome::kProblem, "status", s.id, absl::StrCat("status \"", s.status, "\""),
          SubscribeFix(CanonicalEvents(s)));
    }
  }

  void CheckDestination(const PlatformSubscription& s) {
    if (s.type != "https") {
      Add(Outcome::kProblem, "destination", s.id,
          absl::StrCat("a ", s.type.empty() ? "?" : s.type,
                       " subscription: it delivers to a broker, not to pimgate"),
          absl::StrCat(SubscribeFix(CanonicalEvents(s)), ", then `pimgatectl platform delete ",
                       source_.name(), " --subscription ", s.id, "`"));
      return;
    }
    const std::string replace = absl::StrCat(SubscribeFix(CanonicalEvents(s)),
                                             " (a subscription to the right URL), then "
                                             "`pimgatectl platform delete ",
                                             source_.name(), " --subscription ", s.id, "`");
    if (!report_.expected_destination.empty()) {
      if (s.url == report_.expected_destination) {
        Add(Outcome::kPassed, "destination", s.id, absl::StrCat("delivers to ", s.url), "");
      } else {
        Add(Outcome::kProblem, "destination", s.id,
            absl::StrCat("delivers to ", s.url, ", not to this source's URL ",
                         report_.expected_destination),
            replace);
      }
      return;
    }
    if (source_.DeliversHere(s.url)) {
      Add(Outcome::kPassed, "destination", s.id,
          absl::StrCat("delivers to ", s.url,
                       " (the source's path; the host was not compared: "
                       "give --url PUBLIC_URL to compare it)"),
          "");
    } else {
      Add(Outcome::kProblem, "destination", s.id,
          absl::StrCat("delivers to ", s.url, ", whose path is not this source's path ",
                       source_.source().path),
          replace);
    }
  }

  void CheckSecretAndDeliveries(const PlatformSubscription& s) {
    // Secrets: Akeneo returns them redacted. The platform's error logs since the last update of
    // the subscription say whether pimgate refused its signatures.
    PlatformLogQuery query;
    query.subscriber_id = subscriber_.id;
    query.subscription_id = s.id;
    query.log_type = "error";
    absl::Time since = absl::InfinitePast();
    std::string error;
    if (!s.updated_at.empty() &&
        absl::ParseTime(absl::RFC3339_full, s.updated_at, &since, &error)) {
      // From the update's whole second: entries may be written to the second, so one of that
      // second may come after the update as well as before it, and is counted.
      since = Floor(since);
      query.from = absl::FormatTime(absl::RFC3339_sec, since, absl::UTCTimeZone());
    }
    const std::string window =
        query.from.empty()
            ? std::string("in the platform's logs (30 days)")
            : absl::StrCat("since the subscription was last updated (", s.updated_at, ")");
    int refused = 0;
    std::string last_refused;
    absl::Time last_refused_at = absl::InfinitePast();
    std::map<std::string, int> failures;  // "HTTP 503", "destination_timeout" -> count
    std::string last_failure;
    for (int page = 0; page < kMaxErrorLogPages; ++page) {
      absl::StatusOr<PlatformLogPage> logs = source_.client().Logs(query);
      if (!logs.ok()) {
        Add(Outcome::kNote, "secret", s.id,
            absl::StrCat("not checked: the platform's logs could not be read: ",
                         logs.status().message()),
            "");
        return;
      }
      for (const PlatformLog& log : logs->logs) {
        if (!log.subscription_id.empty() && log.subscription_id != s.id) continue;
        absl::Time at = absl::InfinitePast();
        if (!absl::ParseTime(absl::RFC3339_full, log.timestamp, &at, &error)) {
          at = absl::InfinitePast();
        } else if (at < since) {
          continue;
        }
        if (log.error_code == kBadSignatureStatus) {
          ++refused;
          last_refused = log.timestamp;
          if (at != absl::InfinitePast()) last_refused_at = std::max(last_refused_at, at);
          continue;
        }
        if (log.log_type != "error" && log.error_code == 0) continue;
        const std::string what =
            log.error_code != 0 && log.error_code != 500
                ? absl::StrCat("HTTP ", log.error_code)
                : (log.error_reason.empty() ? std::string("failure") : log.error_reason);
        ++failures[what];
        last_failure = absl::StrCat(what, " at ", log.timestamp);
      }
      if (logs->next_page_token.empty()) break;
      query.page_token = logs->next_page_token;
    }
    // Refusals followed by an event of the subscription that pimgate verified and stored (in a
    // later second than the last refusal, the logs' resolution): the secret matches now, the
    // refusals were of attempts signed before a fix.
    std::optional<absl::Time> verified_after;
    if (refused > 0 && last_refused_at != absl::InfinitePast()) {
      verified_after = LastVerifiedEvent(s.id, Floor(last_refused_at) + absl::Seconds(1));
    }
    if (verified_after.has_value()) {
      Add(Outcome::kPassed, "secret", s.id,
          absl::StrCat("pimgate refused ", refused, " delivery attempt(s) with HTTP 401 ", window,
                       ", the last at ", last_refused,
                       ", but verified an event of the subscription since (received ",
                       absl::FormatTime(absl::RFC3339_full, *verified_after, absl::UTCTimeZone()),
                       "): the secret matches now"),
          "");
    } else if (refused > 0) {
      Add(Outcome::kProblem, "secret", s.id,
          absl::StrCat("pimgate refused ", refused, " delivery attempt(s) with HTTP 401 ", window,
                       ", the last at ", last_refused,
                       ": the subscription signs with a secret that is not this source's (just "
                       "fixed? Akeneo may take a few minutes to apply an update: check again "
                       "after its next delivery)"),
          absl::StrCat(SubscribeFix({}),
                       " (sends the source's secrets to the subscription; its "
                       "event types stay)"));
    } else {
      Add(Outcome::kPassed, "secret", s.id,
          absl::StrCat("no delivery refused for its signature ", window,
                       " (Akeneo never returns secrets: this is what can be checked)"),
          "");
    }
    const bool source_secondary = source_.source().secondary_secret.has_value();
    if (source_secondary && !s.has_secondary_secret) {
      Add(Outcome::kNote, "secret", s.id,
          "the source has a secondary_secret the subscription does not sign with (before the "
          "primary is retired, the subscription must have the new one)",
          SubscribeFix({}));
    } else if (!source_secondary && s.has_secondary_secret) {
      Add(Outcome::kNote, "secret", s.id,
          "the subscription also signs with a secondary secret the source no longer has "
          "(harmless while its primary matches)",
          SubscribeFix({}));
    }
    if (!failures.empty()) {
      std::vector<std::string> counts;
      int total = 0;
      for (const auto& [what, count] : failures) {
        counts.push_back(absl::StrCat(count, " x ", what));
        total += count;
      }
      Add(Outcome::kNote, "deliveries", s.id,
          absl::StrCat(total, " failed delivery attempt(s) ", window, " (",
                       absl::StrJoin(counts, ", "), "; last: ", last_failure,
                       "); Akeneo suspends a subscription whose success rate falls under 90 % "
                       "over an hour"),
          absl::StrCat("pimgatectl platform logs ", source_.name(), " --subscription ", s.id,
                       " --errors"));
    }
  }

  // When pimgate last stored an event the subscription delivered (its CloudEvent subject is the
  // subscription id) received at or after `after`, looking back from the newest events at most
  // kMaxVerifiedScan of them; nullopt when none is found (or the log cannot be read).
  std::optional<absl::Time> LastVerifiedEvent(const std::string& subscription_id,
                                              absl::Time after) const {
    if (source_.log() == nullptr) return std::nullopt;
    EventQuery query;
    query.source = source_.name();
    query.since = after;
    query.newest_first = true;
    EventQueryLimits limits;
    limits.max_scan = kMaxVerifiedScan;
    absl::StatusOr<EventPage> page = QueryEvents(*source_.log(), query, limits);
    if (!page.ok()) return std::nullopt;
    for (const v1::Event& event : page->events) {
      if (event.subject() != subscription_id) continue;
      const absl::Time received = absl::FromUnixSeconds(event.received_at().seconds()) +
                                  absl::Nanoseconds(event.received_at().nanos());
      if (received >= after) return received;
    }
    return std::nullopt;
  }

  // The subscription's types as `--events` takes them (canonical when catalogued).
  static std::vector<std::string> CanonicalEvents(const PlatformSubscription& s) {
    std::vector<std::string> out;
    for (const std::string& type : s.events) {
      const EventPlatformType* known = FindDocumentedEventPlatformType(type);
      out.push_back(known != nullptr ? std::string(known->canonical) : type);
    }
    return out;
  }

  void CheckEvents(const PlatformSubscription& s) {
    std::vector<std::string> subscribed;  // canonical
    for (const std::string& type : s.events) subscribed.push_back(CanonicalizeType(type).type);
    if (readers_.empty()) {
      Add(Outcome::kNote, "events", s.id,
          absl::StrCat("no plugin reads source ", source_.name(),
                       ": its events are stored and delivered to nobody"),
          "");
      return;
    }
    std::vector<std::string> missing;   // globs or types to add
    std::vector<std::string> wants;     // "plugin: glob" lines for the detail
    std::vector<std::string> not_sent;  // globs no catalogued type matches
    std::set<std::string> read;         // subscribed types some glob matches
    for (const PluginConfig* plugin : readers_) {
      for (const std::string& glob : plugin->events) {
        bool served = false;
        for (const std::string& type : subscribed) {
          if (GlobMatch(glob, type)) {
            served = true;
            read.insert(type);
          }
        }
        if (served) continue;
        const bool catalogued = std::any_of(
            DocumentedEventPlatformTypes().begin(), DocumentedEventPlatformTypes().end(),
            [&](const EventPlatformType& type) { return GlobMatch(glob, type.canonical); });
        if (!catalogued) {
          not_sent.push_back(absl::StrCat(plugin->name, ": ", glob));
          continue;
        }
        wants.push_back(absl::StrCat(plugin->name, " asks for ", glob));
        if (std::find(missing.begin(), missing.end(), glob) == missing.end()) {
          missing.push_back(glob);
        }
      }
    }
    if (!missing.empty()) {
      std::vector<std::string> events = CanonicalEvents(s);
      events.insert(events.end(), missing.begin(), missing.end());
      Add(Outcome::kProblem, "events", s.id,
          absl::StrCat("the subscription sends no event for: ", absl::StrJoin(wants, "; "),
                       " (it sends ", s.events.empty() ? "nothing" : Listed(CanonicalEvents(s)),
                       ")"),
          SubscribeFix(events));
    } else {
      Add(Outcome::kPassed, "events", s.id,
          absl::StrCat("every events glob of the plugins reading ", source_.name(), " is served (",
                       s.events.size(), " type(s) subscribed)"),
          "");
    }
    if (!not_sent.empty()) {
      Add(Outcome::kNote, "events", s.id,
          absl::StrCat("no type of Akeneo's Event Platform catalogue matches ", Listed(not_sent),
                       " (an Events API type, or a type newer than pimgate's catalogue)"),
          "");
    }
    std::vector<std::string> unread;
    for (const std::string& type : subscribed) {
      if (!read.contains(type)) unread.push_back(type);
    }
    if (!unread.empty()) {
      Add(Outcome::kNote, "events", s.id,
          absl::StrCat("Akeneo sends types no plugin reads (stored, delivered to nobody): ",
                       Listed(unread)),
          "");
    }
  }

  const PlatformSource& source_;
  const PlatformCheckOptions& options_;
  std::vector<const PluginConfig*> readers_;
  std::string public_url_;
  PlatformSubscriber subscriber_;
  PlatformCheckReport report_;
};

}  // namespace

std::size_t PlatformCheckReport::problems() const {
  return static_cast<std::size_t>(
      std::count_if(findings.begin(), findings.end(), [](const PlatformCheckFinding& f) {
        return f.outcome == PlatformCheckFinding::Outcome::kProblem;
      }));
}

absl::StatusOr<PlatformCheckReport> CheckPlatformSource(const PlatformSource& source,
                                                        const std::vector<PluginConfig>& plugins,
                                                        const PlatformCheckOptions& options) {
  return Checker(source, plugins, options).Run();
}

}  // namespace pimgate
