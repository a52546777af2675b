// The admin API's channel, deadlines and error reporting for pimgatectl.
#include "ctl/client.h"

#include <algorithm>
#include <cstdio>

#include "ctl/exit_codes.h"

namespace pimgate::ctl {
namespace {

// Largest response accepted: one event can be as large as the gateway's body limit.
constexpr int kMaxReceiveBytes = 64 << 20;

}  // namespace

AdminClient::AdminClient(const AdminConnection& connection) : connection_(connection) {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (connection.tls) {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = connection.tls_ca_pem;  // empty: the system's trusted CAs
    credentials = grpc::SslCredentials(options);
  }
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(kMaxReceiveBytes);
  if (!connection.tls_server_name.empty()) {
    channel_args.SetSslTargetNameOverride(connection.tls_server_name);
  }
  channel_ = grpc::CreateCustomChannel(connection.address, credentials, channel_args);
  stub_ = pimgate::v1::Admin::NewStub(channel_);
}

void AdminClient::AwaitFirstConnection() {
  if (first_call_made_) return;
  first_call_made_ = true;
  // The outcome does not matter here: when no connection was made, the fail-fast call that
  // follows reports why (refused, TLS, name resolution) in gRPC's own words.
  channel_->WaitForConnected(
      absl::ToChronoTime(absl::Now() + std::min(kFirstConnectWait, connection_.timeout)));
}

void AdminClient::Prepare(grpc::ClientContext& context,
                          std::optional<absl::Duration> long_timeout) const {
  const absl::Duration timeout =
      long_timeout.has_value() && !connection_.timeout_set ? *long_timeout : connection_.timeout;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  if (!connection_.token.empty()) {
    context.AddMetadata("authorization", "Bearer " + connection_.token);
  }
}

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

int ReportFailure(const AdminClient& client, absl::string_view command,
                  const grpc::Status& status) {
  std::fprintf(stderr, "pimgatectl: %.*s: %s: %s\n", static_cast<int>(command.size()),
               command.data(), CodeName(status.error_code()), status.error_message().c_str());
  switch (status.error_code()) {
    case grpc::StatusCode::UNAUTHENTICATED:
      std::fprintf(stderr,
                   "pimgatectl: set the admin token with $PIMGATE_ADMIN_TOKEN, --token-file or "
                   "--token\n");
      return kExitUnauthenticated;
    case grpc::StatusCode::NOT_FOUND:
      return kExitNotFound;
    case grpc::StatusCode::UNAVAILABLE:
      std::fprintf(stderr, "pimgatectl: is pimgate running with its admin API on %s?\n",
                   client.address().c_str());
      return kExitUnavailable;
    default:
      return kExitError;
  }
}

}  // namespace pimgate::ctl
