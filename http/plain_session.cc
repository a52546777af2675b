#include "http/plain_session.h"

#include <boost/asio/error.hpp>

namespace pimgate {

RequestReadError ClassifyRequestReadError(boost::beast::error_code ec) {
  namespace http = boost::beast::http;
  namespace net = boost::asio;
  if (!ec) return RequestReadError::kNone;
  if (ec == http::error::end_of_stream || ec == boost::beast::error::timeout ||
      ec == net::error::eof || ec == net::error::connection_reset ||
      ec == net::error::operation_aborted) {
    return RequestReadError::kGone;
  }
  if (ec == http::error::header_limit) return RequestReadError::kHeaderTooLarge;
  if (ec == http::error::body_limit || ec == http::error::unexpected_body) {
    return RequestReadError::kBodyTooLarge;
  }
  return RequestReadError::kMalformed;
}

}  // namespace pimgate
