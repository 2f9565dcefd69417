// The event stream (jobs/engine/events.h): sinks in the order they subscribed,
// and a sink that throws stops neither the emitter nor the sinks after it.
#include <doctest/doctest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "jobs/engine/events.h"

using namespace wb;

TEST_CASE("events: every sink sees every event, in the order the sinks subscribed") {
  EventBus bus;
  bus.emit(Event::batch("nobody-listens"));  // no sink: nothing happens
  std::vector<std::string> seen;
  for (const char* name : {"first", "second", "third"})
    bus.subscribe([&seen, name](const Event& e) { seen.push_back(std::string(name) + ":" + to_string(e.kind) + ":" + e.key); });

  bus.emit(Event::shot("b/s1", ShotState::pending, ShotState::submitting, ""));
  bus.emit(Event::batch("b"));
  CHECK(seen == std::vector<std::string>{"first:shot_changed:b/s1", "second:shot_changed:b/s1",
                                         "third:shot_changed:b/s1", "first:batch_finished:b",
                                         "second:batch_finished:b", "third:batch_finished:b"});
}

TEST_CASE("events: the builders fill what each kind says") {
  Event s = Event::shot("b/s1", ShotState::in_flight, ShotState::held, "why");
  CHECK(s.kind == Event::Kind::shot_changed);
  CHECK(s.key == "b/s1");
  CHECK(s.from == ShotState::in_flight);
  CHECK(s.to == ShotState::held);
  CHECK(s.reason == "why");
  Event r = Event::request("b/s1", "status", 429);
  CHECK(r.kind == Event::Kind::request_made);
  CHECK(r.endpoint == "status");
  CHECK(r.http_status == 429);
  Event l = Event::limit_of("in_flight", "waiting: in-flight cap");
  CHECK(l.kind == Event::Kind::limit_hit);
  CHECK(l.limit == "in_flight");
  CHECK(l.reason == "waiting: in-flight cap");
  CHECK(std::string(to_string(Event::Kind::request_made)) == "request_made");
  CHECK(std::string(to_string(Event::Kind::limit_hit)) == "limit_hit");
}

TEST_CASE("events: a sink that throws does not stop the sinks after it, whatever it throws") {
  EventBus bus;
  std::vector<std::string> seen;
  bus.subscribe([&seen](const Event& e) { seen.push_back("before:" + e.key); });
  bus.subscribe([](const Event&) { throw std::runtime_error("sink broke"); });
  bus.subscribe([](const Event&) { throw 42; });  // not a std::exception
  bus.subscribe([&seen](const Event& e) { seen.push_back("after:" + e.key); });

  CHECK_NOTHROW(bus.emit(Event::batch("b1")));
  CHECK_NOTHROW(bus.emit(Event::batch("b2")));
  CHECK(seen == std::vector<std::string>{"before:b1", "after:b1", "before:b2", "after:b2"});
}
