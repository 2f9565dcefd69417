#include "jobs/engine/core.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "jobs/credits.h"
#include "jobs/engine/submitter.h"
#include "jobs/log_context.h"
#include "jobs/throttle.h"

namespace wb {

namespace {
// The start of a reason that only says what it waits for (replaced by a retry's).
constexpr const char* kWaiting = "waiting: ";
}  // namespace

MonoPoint mono_until(TimePoint reset_at, TimePoint wall_now, MonoPoint mono_now) {
  int64_t ahead = std::clamp<int64_t>(to_epoch_ms(reset_at) - to_epoch_ms(wall_now), 0, 3600 * 1000);
  return mono_now + Millis(ahead);
}

Core::Core(const Settings& s, Store& st, Transport& t, NowFn w, MonoFn m, std::string api_key, bool threads)
    : settings(s),
      store(st),
      transport(t),
      wall(std::move(w)),
      mono(std::move(m)),
      api(s.api, std::move(api_key)),
      budget(s.limits.requests_per_minute, mono()),
      spend(s.limits, s.pricing),
      background(2, !threads) {}

Millis Core::backoff(int attempts) {
  return backoff_delay(attempts, settings.retry.base_delay_seconds, settings.retry.max_delay_seconds, unit_random());
}

void Core::move(Shot& shot, ShotState state) {
  ShotState from = shot.state;
  book.set_state(shot, state);
  if (from != state) events.emit(Event::shot(shot.key(), from, state, shot.reason));
}

void Core::end(Shot& shot, ShotState state, const std::string& reason) {
  LogScope log_scope(shot.key(), shot.request_id);
  const ShotState from = shot.state;
  shot.held_from = state == ShotState::held && is_followed(from) ? from : ShotState::pending;
  shot.state = state;
  shot.reason = reason;
  save(shot, Sync::yes);
  if (state == ShotState::done)
    spdlog::info("{}: DONE -> {}", shot.key(), shot.file);
  else
    spdlog::warn("{}: {}: {}", shot.key(), to_string(state), reason);
  const std::string key = shot.key();
  const std::string batch = shot.batch;
  shot.state = from;  // the book unindexes what it indexed
  spend.release(key);
  book.erase(key);
  events.emit(Event::shot(key, from, state, reason));
  if (on_shot_ended) on_shot_ended(batch);
}

Micro Core::count_estimate_spent(Shot& shot, const std::string& event) {
  const Micro estimate = spend.costs().estimate(shot.spec);
  shot.cost = from_micro(estimate);
  auto entry = ledger_entry(shot, event, wall());
  entry["request_id"] = shot.request_id;
  entry["cost_estimate"] = credits_json(estimate);
  store.append_ledger(entry);
  const std::string day = local_day(wall());
  store.put_shot_spent(shot, day, estimate, spend.costs().to_json());
  spend.spent(shot.batch, day, *shot.cost, true);
  return estimate;
}

void Core::retry_later(Shot& shot, const std::string& why, bool limited) {
  LogScope log_scope(shot.key(), shot.request_id);
  // A retry without limit (the network, 5xx, 429) is a wait, not a failed
  // attempt: it must not spend the attempts of the failures that are counted.
  const int count = limited ? ++shot.attempts : ++shot.waits;
  if (limited && shot.attempts >= settings.retry.max_attempts) {
    end(shot, ShotState::held,
        "gave up after " + std::to_string(shot.attempts) + " attempts at " + std::string(to_string(shot.state)) +
            ": " + why);
    return;
  }
  if (shot.reason.empty() || shot.reason.rfind(kRetrying, 0) == 0 || shot.reason.rfind(kWaiting, 0) == 0)
    shot.reason = retrying(why);
  save(shot);
  book.set_due(shot, mono_ms(mono() + backoff(count - 1)));
  spdlog::info("{}: {} retry {} later: {}", shot.key(), to_string(shot.state), count, why);
}

bool Core::step_went_through(Shot& shot, bool keep_count) {
  const bool retried = (!keep_count && shot.attempts != 0) || shot.reason.rfind(kRetrying, 0) == 0;
  if (!keep_count) shot.attempts = 0;
  shot.waits = 0;
  if (shot.reason.rfind(kRetrying, 0) == 0) shot.reason.clear();
  return retried;
}

void Core::send(const std::string& key, const std::string& endpoint, HttpRequest request,
                std::function<void(const HttpResponse&)> on_answer) {
  book.set_busy(key);
  transport.start(std::move(request), [this, key, endpoint, on_answer = std::move(on_answer)](HttpResponse r) {
    events.emit(Event::request(key, endpoint, r.status));
    // The answer is handled before the shot is queued again: the handler sets
    // its next due time (or ends it), then clear_busy() queues it - also when
    // the handler throws (a full state disk), so the shot is tried again.
    struct Requeue {
      ShotBook& book;
      const std::string& key;
      ~Requeue() { book.clear_busy(key); }
    } requeue{book, key};
    const Shot* shot = book.find(key);
    LogScope log_scope(key, shot ? shot->request_id : "");
    on_answer(r);
  });
}

}  // namespace wb
