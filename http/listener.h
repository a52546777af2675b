// HttpListener: the one accept loop of pimgate's HTTP endpoints (the webhook gateway, the metrics
// endpoint, and any later one). What every endpoint must get right at accept lives here once:
//  - one connection limit: connections beyond `max_connections` are closed at accept, counted,
//    and logged the 1st, 2nd, 4th, 8th ... time (a flood must not become a log flood);
//  - per-client admission (gateway.max_connections_per_client) where the endpoint has it;
//  - TCP_NODELAY on every connection it hands over;
//  - a pause after a failed accept(): out of descriptors (EMFILE, ENFILE) or memory (ENOBUFS,
//    ENOMEM) the pending connection stays in the backlog, so accepting again at once would fail
//    again in a loop that burns a core and floods the log. Failures are logged the 1st, 2nd,
//    4th ... time.
// What happens on a connection (TLS detection, HTTP parsing, request limits, answers) belongs to
// the endpoint: the listener hands it the socket and a Slot that holds the connection's place
// until the endpoint's session drops it.
#ifndef PIMGATE_HTTP_LISTENER_H_
#define PIMGATE_HTTP_LISTENER_H_

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "common/net_address.h"

namespace pimgate {

// Pause before accepting again after accept() failed (docs/security.md states it).
inline constexpr std::chrono::milliseconds kAcceptRetryDelay{100};

// Per-client connection caps (M15), for an endpoint that has them: the gateway implements it
// over its body budget. Called on the listener's strand; must be quick and must not block.
class ClientAdmission {
 public:
  virtual ~ClientAdmission() = default;
  // A connection from `client`, within max_connections: false closes it at once (the endpoint
  // counts and logs that refusal). Every true is matched by one Release(client), called from
  // whichever thread drops the connection's Slot.
  virtual bool Admit(const std::string& client) = 0;
  virtual void Release(const std::string& client) = 0;
  // A connection from `client` was closed at accept because max_connections were open.
  virtual void RefusedOverLimit(const std::string& client) = 0;
};

struct ListenerOptions {
  // The endpoint, at the start of log lines: "gateway", "metrics".
  std::string name;
  // The configuration key of the listen address, in errors: "gateway.listen".
  std::string listen_key;
  // Open connections beyond this are closed at accept, without reading anything.
  std::size_t max_connections = 1024;
  // What sets max_connections, in the refusal log line: "gateway.max_connections".
  std::string max_connections_name;
  // Per-client admission, or null (every connection within max_connections is admitted). Must
  // outlive every Slot.
  ClientAdmission* admission = nullptr;
};

// Thread-safe: Listen/Stop from any thread; the accept loop runs on the io_context's threads,
// on a strand of its own.
class HttpListener {
  struct Shared;  // the counters, shared with the Slots (which may outlive the listener)

 public:
  using tcp = boost::asio::ip::tcp;

  // One open connection's place in max_connections (and in its client's count, when admitted):
  // given up when the Slot is destroyed. Move-only; the endpoint's session keeps it.
  class Slot {
   public:
    Slot(Slot&& other) noexcept;
    Slot& operator=(Slot&&) = delete;
    ~Slot();
    // The address per-client limits count by: an IPv4 address, or an IPv6 /64 ("…::/64": one
    // host or site usually owns a whole /64, so per-address limits on IPv6 would limit nothing);
    // "unknown" when the peer's address could not be read. Empty without ClientAdmission.
    const std::string& client() const { return client_; }

   private:
    friend class HttpListener;
    Slot(std::shared_ptr<Shared> shared, std::string client)
        : shared_(std::move(shared)), client_(std::move(client)) {}
    void GiveBack();  // what the destructor does, once
    std::shared_ptr<Shared> shared_;
    std::string client_;
    bool admitted_ = false;  // counted by ClientAdmission::Admit
  };

  // Runs on the listener's strand for every admitted connection; `socket` has a strand of its
  // own. Must not block: start the session's first asynchronous operation and return.
  using OnConnection = std::function<void(tcp::socket socket, Slot slot)>;

  // Does not bind. The io_context must outlive the listener.
  HttpListener(boost::asio::io_context& ioc, ListenerOptions options, OnConnection on_connection);
  // Destroy it when none of its handlers can run any more: after Stop() once the io_context's
  // threads are joined, or before they ever ran. Connections in progress keep their Slots.
  ~HttpListener();
  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  // Binds `address` (port 0 picks a free port) and queues the first accept: the io_context's
  // threads run the loop. A unix socket address is refused (the HTTP endpoints are TCP). Errors
  // name the key ("gateway.listen: cannot listen on 0.0.0.0:8443: Address already in use").
  absl::Status Listen(const ListenAddress& address);

  // Stops accepting (the listening socket closes on the strand); open connections are left to
  // their sessions. Idempotent.
  void Stop();

  // The bound port, valid after Listen().
  uint16_t port() const { return port_.load(std::memory_order_relaxed); }
  // Connections holding a Slot now, and those closed at accept for max_connections since start.
  std::size_t open_connections() const;
  uint64_t refused_connections() const;

 private:
  void DoAccept();
  void OnAccept(const boost::system::error_code& ec, tcp::socket socket);
  void Admit(tcp::socket socket);
  void AcceptFailed(const boost::system::error_code& ec);

  boost::asio::io_context& ioc_;
  const ListenerOptions options_;
  const OnConnection on_connection_;
  const std::shared_ptr<Shared> shared_;
  tcp::acceptor acceptor_;           // on its own strand
  boost::asio::steady_timer retry_;  // the pause after a failed accept, on the acceptor's strand
  uint64_t accept_failures_ = 0;     // on the acceptor's strand
  std::atomic<uint16_t> port_{0};
  std::atomic<bool> stopping_{false};
};

}  // namespace pimgate

#endif  // PIMGATE_HTTP_LISTENER_H_
