// The only code that touches libcurl: a Transport over one curl multi handle,
// driven by the event loop thread through perform() (libcurl's socket interface:
// only sockets with events are handed to it). Not thread-safe.
#pragma once

#include <poll.h>

#include <memory>
#include <span>
#include <vector>

#include "jobs/http.h"

namespace wb {

class CurlTransport : public Transport {
 public:
  explicit CurlTransport(bool allow_loopback_http);
  ~CurlTransport() override;
  CurlTransport(const CurlTransport&) = delete;
  CurlTransport& operator=(const CurlTransport&) = delete;

  void start(HttpRequest request, HttpCallback done) override;
  size_t active() const override;

  // Waits up to `max_wait` for network activity or for one of `extra` to be
  // ready for its `events` (POLLIN, POLLOUT; a negative fd is ignored), moves
  // transfers along and runs the callbacks of finished ones. Sets each
  // `revents` to the events that were ready.
  void perform(std::chrono::milliseconds max_wait, std::span<pollfd> extra = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace wb
