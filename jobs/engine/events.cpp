#include "jobs/engine/events.h"

#include <spdlog/spdlog.h>

#include <exception>

namespace wb {

const char* to_string(Event::Kind kind) {
  switch (kind) {
    case Event::Kind::shot_changed: return "shot_changed";
    case Event::Kind::batch_finished: return "batch_finished";
    case Event::Kind::request_made: return "request_made";
    case Event::Kind::limit_hit: return "limit_hit";
    case Event::Kind::job_completed: return "job_completed";
    case Event::Kind::balance_read: return "balance_read";
    case Event::Kind::shot_stuck: return "shot_stuck";
  }
  return "?";
}

void EventBus::emit(const Event& event) const {
  for (const auto& sink : sinks_) {
    try {
      sink(event);
    } catch (const std::exception& e) {
      spdlog::warn("an event sink failed on {} {}: {}", to_string(event.kind), event.key, e.what());
    } catch (...) {
      spdlog::warn("an event sink failed on {} {}: an exception that is not a std::exception",
                   to_string(event.kind), event.key);
    }
  }
}

}  // namespace wb
