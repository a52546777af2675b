// The admin listener: one gRPC server with the Admin service, the standard health service and
// server reflection (so grpcurl and other generic clients work without the .proto files).
#include "admin/admin_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, absl::string_view key) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream contents;
  contents << in.rdbuf();
  if (!in.good() && !in.eof()) {
    return absl::FailedPreconditionError(absl::StrCat(key, ": cannot read \"", path, "\""));
  }
  if (contents.str().empty()) {
    return absl::FailedPreconditionError(absl::StrCat(key, ": \"", path, "\" is empty"));
  }
  return contents.str();
}

}  // namespace

class AdminServer::Impl {
 public:
  std::unique_ptr<v1::Admin::Service> service;
  std::unique_ptr<grpc::Server> server;
};

absl::StatusOr<std::unique_ptr<AdminServer>> AdminServer::Start(const AdminConfig& config,
                                                                AdminDependencies deps,
                                                                AdminLimits limits) {
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (config.tls.has_value()) {
    absl::StatusOr<std::string> cert = ReadPem(config.tls->cert_file, "admin.tls.cert_file");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem(config.tls->key_file, "admin.tls.key_file");
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions options;
    options.pem_key_cert_pairs.push_back({*std::move(key), *std::move(cert)});
    credentials = grpc::SslServerCredentials(options);
  }

  std::unique_ptr<AdminServer> server(new AdminServer());
  server->impl_ = std::make_unique<Impl>();
  server->impl_->service =
      NewAdminService(deps, config.token.has_value() ? config.token->value : "", limits);

  // Both are process-wide switches read when a server is built.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // Without this, a second pimgate on the same port would bind too, and the kernel would split
  // admin calls between the two.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  int selected_port = 0;
  // The canonical form ("127.0.0.1:7070" for "localhost:7070"): gRPC binds exactly the address
  // the loader checked, never what a name resolves to.
  builder.AddListeningPort(config.listen.ToString(), credentials, &selected_port);
  builder.RegisterService(server->impl_->service.get());
  server->impl_->server = builder.BuildAndStart();
  const bool unix_socket = config.listen.is_unix_socket();
  if (server->impl_->server == nullptr || (!unix_socket && selected_port == 0)) {
    return absl::UnavailableError(
        absl::StrCat("admin.listen: cannot listen on ", config.listen.text(),
                     " (address in use, or not an address of this machine?)"));
  }
  server->impl_->server->GetHealthCheckService()->SetServingStatus(v1::Admin::service_full_name(),
                                                                   true);
  if (unix_socket) {
    const std::string& path = config.listen.unix_path();
    // The socket is the access control of a tokenless local listener: owner only.
    if (::chmod(path.c_str(), 0600) != 0) {
      spdlog::warn("admin: cannot restrict {} to its owner: {}", path, std::strerror(errno));
    }
    server->target_ = absl::StrCat("unix:", path);
  } else {
    server->port_ = selected_port;
    server->target_ = config.listen.LocalTarget(static_cast<uint16_t>(selected_port));
  }
  server->tls_ = config.tls.has_value();
  return server;
}

AdminServer::~AdminServer() { Stop(); }

std::shared_ptr<grpc::Channel> AdminServer::InProcessChannel() {
  grpc::ChannelArguments args;
  // As pimgatectl's: one event (GetEvent, a page of ListEvents) can be as large as the gateway's
  // body limit, beyond gRPC's default of 4 MiB.
  args.SetMaxReceiveMessageSize(kInProcessMaxReceiveBytes);
  return impl_->server->InProcessChannel(args);
}

void AdminServer::Stop() {
  if (impl_ == nullptr || impl_->server == nullptr) return;
  impl_->server->Shutdown(std::chrono::system_clock::now() +
                          absl::ToChronoNanoseconds(kShutdownGrace));
  impl_->server->Wait();
  impl_->server.reset();
}

}  // namespace pimgate
