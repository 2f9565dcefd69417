// The only code that touches libcurl: a Transport over one curl multi handle,
// driven by the event loop thread through perform(). Not thread-safe.
#pragma once

#include <memory>
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

  // Waits up to `max_wait` for network activity or for one of `extra_fds` to be
  // readable, moves transfers along and runs the callbacks of finished ones.
  // Returns, per extra fd, whether it was readable.
  std::vector<bool> perform(std::chrono::milliseconds max_wait, const std::vector<int>& extra_fds);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace wb
