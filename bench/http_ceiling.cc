// pimgate_http_ceiling: the least an HTTP(S) webhook receiver can do, as a benchmark baseline. A
// minimal Boost.Beast server (the same library, TLS settings and thread count as pimgate's
// gateway) that reads each request's body and answers 200 with a short JSON body: no signature
// check, no parsing, no storage. pimgate's ingest rate divided by this one is the share of the
// machine's HTTP capacity that pimgate keeps while doing its actual work. NOT a server to deploy.
//
//   pimgate_http_ceiling [--listen 127.0.0.1:0] [--tls-cert C --tls-key K] [--threads N]
//                        [--ready-file R]
//
// The ready file gets {"gateway_port":P} once the server accepts connections (as pimgate's).
// Stops on SIGTERM or SIGINT.
#include <openssl/ssl.h>
#include <pthread.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

// Same defaults as pimgate's gateway (gateway.body_limit, header timeout, idle timeout), so the
// ceiling does not buy speed with looser limits.
constexpr std::size_t kBodyLimit = 4 << 20;
constexpr std::chrono::seconds kReadTimeout{30};
constexpr char kAnswer[] = R"({"accepted":0,"duplicates":0})";

struct Options {
  std::string host = "127.0.0.1";
  unsigned short port = 0;
  std::string cert, key;
  int threads = 0;  // 0: hardware concurrency, as gateway.threads
  std::string ready_file;
};

[[noreturn]] void Usage(const std::string& error) {
  std::fprintf(stderr,
               "pimgate_http_ceiling: %s\n\nUsage: pimgate_http_ceiling [--listen HOST:PORT] "
               "[--tls-cert FILE --tls-key FILE]\n  [--threads N] [--ready-file FILE]\n",
               error.c_str());
  std::exit(2);
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Usage(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--listen") {
      const std::string listen = next();
      const std::size_t colon = listen.rfind(':');
      if (colon == std::string::npos) Usage("--listen wants HOST:PORT");
      o.host = listen.substr(0, colon);
      o.port = static_cast<unsigned short>(std::stoi(listen.substr(colon + 1)));
    } else if (arg == "--tls-cert") {
      o.cert = next();
    } else if (arg == "--tls-key") {
      o.key = next();
    } else if (arg == "--threads") {
      o.threads = std::stoi(next());
    } else if (arg == "--ready-file") {
      o.ready_file = next();
    } else {
      Usage("unknown argument " + arg);
    }
  }
  if (o.cert.empty() != o.key.empty()) Usage("--tls-cert and --tls-key go together");
  return o;
}

// One connection: read a request (header and body), answer 200, repeat while keep-alive.
// `Stream` is beast::tcp_stream or ssl::stream<beast::tcp_stream>.
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  template <class... Args>
  explicit Session(Args&&... args) : stream_(std::forward<Args>(args)...) {}

  void Start() {
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
      Read();
    } else {
      beast::get_lowest_layer(stream_).expires_after(kReadTimeout);
      stream_.async_handshake(ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (!ec) self->Read();
                              });
    }
  }

 private:
  void Read() {
    parser_.emplace();
    parser_->body_limit(kBodyLimit);
    beast::get_lowest_layer(stream_).expires_after(kReadTimeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       if (!ec) self->Answer();
                     });
  }

  void Answer() {
    const http::request<http::string_body>& req = parser_->get();
    response_.emplace(http::status::ok, req.version());
    response_->set(http::field::content_type, "application/json");
    response_->keep_alive(req.keep_alive());
    response_->body() = kAnswer;
    response_->prepare_payload();
    http::async_write(stream_, *response_,
                      [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                        if (!ec && self->response_->keep_alive()) self->Read();
                      });
  }

  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::response<http::string_body>> response_;
};

class Server {
 public:
  Server(net::io_context& ioc, ssl::context* tls, const tcp::endpoint& endpoint)
      : ioc_(ioc), tls_(tls), acceptor_(net::make_strand(ioc)) {
    acceptor_.open(endpoint.protocol());
    acceptor_.set_option(net::socket_base::reuse_address(true));
    acceptor_.bind(endpoint);
    acceptor_.listen(net::socket_base::max_listen_connections);
  }

  unsigned short port() const { return acceptor_.local_endpoint().port(); }

  void Accept() {
    acceptor_.async_accept(net::make_strand(ioc_), [this](beast::error_code ec, tcp::socket s) {
      if (ec == net::error::operation_aborted) return;
      if (!ec) {
        s.set_option(tcp::no_delay(true));
        if (tls_ != nullptr) {
          std::make_shared<Session<ssl::stream<beast::tcp_stream>>>(std::move(s), *tls_)->Start();
        } else {
          std::make_shared<Session<beast::tcp_stream>>(std::move(s))->Start();
        }
      }
      Accept();
    });
  }

 private:
  net::io_context& ioc_;
  ssl::context* tls_;
  tcp::acceptor acceptor_;
};

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseArgs(argc, argv);
  // The stop signals are taken by sigwait below, in no other thread.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  const int threads = o.threads > 0
                          ? o.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  net::io_context ioc(threads);
  std::optional<ssl::context> tls;
  try {
    if (!o.cert.empty()) {
      // pimgate's gateway settings: TLS 1.2 and later, the certificate chain and key from files.
      tls.emplace(ssl::context::tls_server);
      tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::single_dh_use);
      SSL_CTX_set_min_proto_version(tls->native_handle(), TLS1_2_VERSION);
      tls->use_certificate_chain_file(o.cert);
      tls->use_private_key_file(o.key, ssl::context::pem);
    }
    Server server(ioc, tls ? &*tls : nullptr, tcp::endpoint(net::ip::make_address(o.host), o.port));
    server.Accept();
    std::vector<std::thread> pool;
    for (int i = 0; i < threads; ++i) pool.emplace_back([&ioc] { ioc.run(); });
    if (!o.ready_file.empty()) {
      const std::string tmp = o.ready_file + ".tmp";
      std::ofstream(tmp) << "{\"gateway_port\":" << server.port() << "}\n";
      std::rename(tmp.c_str(), o.ready_file.c_str());
    }
    std::fprintf(stderr, "pimgate_http_ceiling: %s on %s:%u, %d thread(s)\n",
                 tls ? "HTTPS" : "HTTP", o.host.c_str(), server.port(), threads);
    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    ioc.stop();
    for (std::thread& t : pool) t.join();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pimgate_http_ceiling: %s\n", e.what());
    return 1;
  }
  return 0;
}
