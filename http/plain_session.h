// PlainHttpSession: what the plain-HTTP endpoints behind an HttpListener (metrics, console) do the
// same way on one connection: write an answer, then read the next request or close; close by
// shutting the sending side; sort a read error into "the client is gone" and the answer it gets.
// Reading and answering a request belongs to the endpoint's session, which derives from this and
// provides `void DoRead()` (read the next request on stream_ into buffer_).
#ifndef PIMGATE_HTTP_PLAIN_SESSION_H_
#define PIMGATE_HTTP_PLAIN_SESSION_H_

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <memory>
#include <utility>

#include "http/listener.h"

namespace pimgate {

// A failed read of a request (header or body), as the session must treat it.
enum class RequestReadError {
  kNone,            // no error
  kGone,            // the client closed, reset or went quiet (read timeout): close, answer nothing
  kHeaderTooLarge,  // answer 431
  kBodyTooLarge,    // answer 413 (also a body sent to an endpoint that takes none)
  kMalformed,       // answer 400
};
RequestReadError ClassifyRequestReadError(boost::beast::error_code ec);

template <typename Session>
class PlainHttpSession : public std::enable_shared_from_this<Session> {
 protected:
  PlainHttpSession(HttpListener::Slot slot, boost::asio::ip::tcp::socket socket,
                   std::chrono::milliseconds write_timeout)
      : stream_(std::move(socket)), slot_(std::move(slot)), write_timeout_(write_timeout) {}

  // Writes `res` (prepared, keep-alive set), then reads the next request, or closes when the
  // answer does not keep the connection or the write failed.
  template <typename Body>
  void Write(std::shared_ptr<boost::beast::http::response<Body>> res) {
    stream_.expires_after(write_timeout_);
    boost::beast::http::async_write(
        stream_, *res,
        [self = this->shared_from_this(), res](boost::beast::error_code ec, std::size_t) {
          if (ec || !res->keep_alive()) return self->Close();
          self->DoRead();
        });
  }

  // Answers `res` and closes: what follows on the connection cannot be trusted (an unread or
  // oversized body, a malformed request).
  template <typename Body>
  void WriteAndClose(boost::beast::http::response<Body> res) {
    auto answer = std::make_shared<boost::beast::http::response<Body>>(std::move(res));
    answer->version(11);
    answer->keep_alive(false);
    answer->prepare_payload();
    Write(std::move(answer));
  }

 public:
  // Ends the connection from this side; the session goes once its last handler returns.
  void Close() {
    boost::beast::error_code ignored;
    stream_.socket().shutdown(boost::asio::ip::tcp::socket::shutdown_send, ignored);
  }

 protected:
  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;

 private:
  HttpListener::Slot slot_;  // the connection's place under the listener's limit
  const std::chrono::milliseconds write_timeout_;
};

}  // namespace pimgate

#endif  // PIMGATE_HTTP_PLAIN_SESSION_H_
