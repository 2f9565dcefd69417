// Every request to the provider's API is built here (the daemon and `wanbatch
// estimate` alike): the key, the JSON headers and the configured timeouts.
// And the request budget, limits.requests_per_minute: one token bucket for
// every API call (submits, polls, results, credit reads, uploads).
#pragma once

#include <string>

#include "jobs/http.h"
#include "jobs/settings.h"
#include "jobs/util.h"

namespace wb {

class ApiRequests {
 public:
  ApiRequests(const ApiConfig& api, std::string key) : api_(api), key_(std::move(key)) {}
  // A GET of `url`, or a POST of `json_body` when it is not empty.
  HttpRequest make(std::string url, std::string json_body = "") const;
  HttpRequest credits() const;
  const ApiConfig& api() const { return api_; }

 private:
  ApiConfig api_;
  std::string key_;
};

// limits.requests_per_minute as a token bucket holding ten seconds' worth (at
// least two). 0: no budget. Work that follows a job (polls, results) takes a
// token whenever there is one; submits and uploads yield: they take one only
// when a token would be left for following work after them.
class RequestBudget {
 public:
  RequestBudget(double per_minute, MonoPoint now);
  void set_rate(double per_minute, MonoPoint now);
  bool limited() const { return rate_ > 0; }
  enum class Use { follow, submit };
  bool try_take(MonoPoint now, Use use);
  // When a request of this use could take a token (now when it can).
  MonoPoint next_available(MonoPoint now, Use use);
  double per_minute() const { return rate_; }

 private:
  void refill(MonoPoint now);
  double rate_ = 0;
  double capacity_ = 0;
  double tokens_ = 0;
  MonoPoint last_{};
};

}  // namespace wb
