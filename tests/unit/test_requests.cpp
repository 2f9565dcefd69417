// Requests to the API (jobs/engine/requests.h): how each is built, and the
// request budget (limits.requests_per_minute) on a clock the test steps.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "jobs/engine/requests.h"

using namespace wb;

namespace {

const MonoPoint kT0 = MonoPoint(std::chrono::seconds(5000));

MonoPoint at(int64_t ms) { return kT0 + Millis(ms); }

}  // namespace

TEST_CASE("requests: a GET carries the key and asks for JSON, a POST only when there is a body") {
  ApiConfig api;
  api.base_url = "https://api.example.com";
  api.request_timeout_seconds = 7.5;
  api.connect_timeout_seconds = 2.25;
  ApiRequests requests(api, "KEY-123");

  HttpRequest get = requests.make("https://api.example.com/x");
  CHECK(get.method == "GET");
  CHECK(get.url == "https://api.example.com/x");
  CHECK(get.headers == std::vector<std::string>{"x-api-key: KEY-123", "Accept: application/json"});
  CHECK(get.body.empty());
  CHECK(get.timeout == Millis(7500));
  CHECK(get.connect_timeout == Millis(2250));

  HttpRequest post = requests.make("https://api.example.com/y", R"({"a":1})");
  CHECK(post.method == "POST");
  CHECK(post.body == R"({"a":1})");
  CHECK(post.headers ==
        std::vector<std::string>{"x-api-key: KEY-123", "Accept: application/json", "Content-Type: application/json"});
  CHECK(post.timeout == Millis(7500));
  CHECK(post.connect_timeout == Millis(2250));

  HttpRequest credits = requests.credits();
  CHECK(credits.method == "GET");
  CHECK(credits.url == "https://api.example.com/v1/get-user-credits");
  CHECK(credits.headers.front() == "x-api-key: KEY-123");
  CHECK(requests.api().base_url == api.base_url);
}

TEST_CASE("requests: without a budget every request goes at once") {
  RequestBudget b(0, kT0);
  CHECK_FALSE(b.limited());
  for (int i = 0; i < 1000; ++i) {
    CHECK(b.try_take(kT0, RequestBudget::Use::submit));
    CHECK(b.try_take(kT0, RequestBudget::Use::follow));
  }
  CHECK(b.next_available(kT0, RequestBudget::Use::submit) == kT0);
  RequestBudget negative(-5, kT0);
  CHECK_FALSE(negative.limited());
  CHECK(negative.per_minute() == 0);
}

TEST_CASE("requests: following work takes the last token, a submit leaves one behind") {
  RequestBudget b(12, kT0);  // a token every 5 s, at least two held
  REQUIRE(b.limited());
  CHECK(b.try_take(kT0, RequestBudget::Use::submit));
  CHECK_FALSE(b.try_take(kT0, RequestBudget::Use::submit));  // one left: kept for following work
  CHECK(b.next_available(kT0, RequestBudget::Use::submit) == at(5000));
  CHECK(b.next_available(kT0, RequestBudget::Use::follow) == kT0);
  CHECK(b.try_take(kT0, RequestBudget::Use::follow));
  CHECK_FALSE(b.try_take(kT0, RequestBudget::Use::follow));
  CHECK(b.next_available(kT0, RequestBudget::Use::follow) == at(5000));
  CHECK(b.next_available(kT0, RequestBudget::Use::submit) == at(10000));
}

TEST_CASE("requests: the budget refills with time, up to ten seconds' worth") {
  RequestBudget b(600, kT0);  // 10 a second, 100 held
  int taken = 0;
  while (b.try_take(kT0, RequestBudget::Use::follow)) ++taken;
  CHECK(taken == 100);
  RequestBudget early = b;
  CHECK_FALSE(early.try_take(at(99), RequestBudget::Use::follow));
  CHECK(b.try_take(at(100), RequestBudget::Use::follow));
  CHECK_FALSE(b.try_take(at(100), RequestBudget::Use::follow));

  // A long quiet spell refills to the capacity, not beyond.
  taken = 0;
  while (b.try_take(at(3'600'000), RequestBudget::Use::follow)) ++taken;
  CHECK(taken == 100);

  // A clock that goes back refills nothing and breaks nothing.
  CHECK_FALSE(b.try_take(at(0), RequestBudget::Use::follow));
  CHECK(b.next_available(at(0), RequestBudget::Use::follow) >= at(0));
  // Nor does it take away what was there.
  RequestBudget full(600, kT0);
  CHECK(full.try_take(at(10'000), RequestBudget::Use::follow));
  int left = 0;
  while (full.try_take(at(5'000), RequestBudget::Use::follow)) ++left;
  CHECK(left == 99);

  // A new rate starts full.
  b.set_rate(12, at(3'600'000));
  CHECK(b.per_minute() == 12);
  CHECK(b.try_take(at(3'600'000), RequestBudget::Use::follow));
  CHECK(b.try_take(at(3'600'000), RequestBudget::Use::follow));
  CHECK_FALSE(b.try_take(at(3'600'000), RequestBudget::Use::follow));
}

TEST_CASE("requests: next_available is exact: a token is there at that time and not a millisecond before") {
  for (double rate : {1.0, 7.0, 12.0, 13.7, 59.0, 60.0, 100.0, 333.3, 600.0, 1000.3}) {
    for (auto use : {RequestBudget::Use::follow, RequestBudget::Use::submit}) {
      CAPTURE(rate);
      CAPTURE(use == RequestBudget::Use::submit);
      RequestBudget b(rate, kT0);
      MonoPoint now = kT0;
      int waits = 0;
      // Drain, then take each token when next_available says, as the loop does.
      for (int i = 0; i < 300; ++i) {
        MonoPoint t = b.next_available(now, use);
        REQUIRE(t >= now);
        if (t > now) {
          ++waits;
          RequestBudget early = b;
          CHECK_FALSE(early.try_take(t - Millis(1), use));
        }
        REQUIRE(b.try_take(t, use));
        now = t;
      }
      CHECK(waits > 0);
    }
  }
}
