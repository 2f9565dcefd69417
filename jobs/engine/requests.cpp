#include "jobs/engine/requests.h"

#include <algorithm>
#include <cmath>

#include "jobs/segmind.h"

namespace wb {

namespace {
Millis seconds(double s) { return Millis(static_cast<int64_t>(s * 1000.0)); }
}  // namespace

HttpRequest ApiRequests::make(std::string url, std::string json_body) const {
  HttpRequest req;
  req.url = std::move(url);
  req.headers = {"x-api-key: " + key_, "Accept: application/json"};
  if (!json_body.empty()) {
    req.method = "POST";
    req.headers.push_back("Content-Type: application/json");
    req.body = std::move(json_body);
  }
  req.timeout = seconds(api_.request_timeout_seconds);
  req.connect_timeout = seconds(api_.connect_timeout_seconds);
  return req;
}

HttpRequest ApiRequests::credits() const { return make(credits_url(api_)); }

RequestBudget::RequestBudget(double per_minute, MonoPoint now) { set_rate(per_minute, now); }

void RequestBudget::set_rate(double per_minute, MonoPoint now) {
  rate_ = std::max(0.0, per_minute);
  capacity_ = std::max(2.0, rate_ / 6.0);
  tokens_ = capacity_;
  last_ = now;
}

void RequestBudget::refill(MonoPoint now) {
  if (now <= last_) return;
  double s = std::chrono::duration<double>(now - last_).count();
  tokens_ = std::min(capacity_, tokens_ + s * rate_ / 60.0);
  last_ = now;
}

bool RequestBudget::try_take(MonoPoint now, Use use) {
  if (!limited()) return true;
  refill(now);
  double need = use == Use::submit ? 2.0 : 1.0;  // a submit leaves one for following work
  if (tokens_ < need) return false;
  tokens_ -= 1.0;
  return true;
}

MonoPoint RequestBudget::next_available(MonoPoint now, Use use) {
  if (!limited()) return now;
  refill(now);
  double need = use == Use::submit ? 2.0 : 1.0;
  if (tokens_ >= need) return now;
  double s = (need - tokens_) * 60.0 / rate_;
  return now + Millis(static_cast<int64_t>(std::ceil(s * 1000.0)));
}

}  // namespace wb
