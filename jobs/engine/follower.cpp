#include "jobs/engine/follower.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "jobs/crash_point.h"
#include "jobs/credits.h"
#include "jobs/engine/submitter.h"
#include "jobs/segmind.h"
#include "jobs/throttle.h"

namespace wb {

bool Follower::start(Shot& shot) {
  const MonoPoint now = core_.mono();
  if (!is_plain_token(shot.request_id)) {
    // Only a record from elsewhere (an old version, a hand edit) can hold one.
    core_.end(shot, ShotState::held, "request_id is not a plain token; not followed");
    return true;
  }
  if (!core_.budget.try_take(now, RequestBudget::Use::follow)) {
    core_.book.set_due(shot, mono_ms(core_.budget.next_available(now, RequestBudget::Use::follow)) +
                                 static_cast<int64_t>(core_.unit_random() * 1000));
    return false;
  }
  const std::string key = shot.key();
  if (shot.state == ShotState::in_flight)
    core_.send(key, "status", core_.api.make(status_url(core_.settings.api, shot.request_id)),
               [this, key](const HttpResponse& r) { on_poll(key, r); });
  else
    core_.send(key, "result", core_.api.make(result_url(core_.settings.api, shot.request_id)),
               [this, key](const HttpResponse& r) { on_fetch(key, r); });
  return true;
}

void Follower::replan_moved(const std::string& because) {
  for (const std::string& moved : planner_.take_moved_keys()) {
    // The job that took a completed job's worker (its start is known now), or one
    // parked until its class's first completion or handed a scout's place: its
    // polls are planned again. One with a request on the wire is planned at its answer.
    Shot* next = core_.book.find(moved);
    if (next && next->state == ShotState::in_flight && !core_.book.busy(next->key())) {
      const int64_t now = core_.now_ms();
      core_.book.set_due(*next, planner_.next_poll(*next, now, core_.unit_random()));
      if (spdlog::should_log(spdlog::level::debug))
        spdlog::debug("{}: planned again after {}, next poll in {:.3f} s ({})", moved, because,
                      static_cast<double>(next->due_ms - now) / 1000.0, planner_.describe(*next, now));
    }
  }
}

void Follower::slow_down(MonoPoint now) {
  // Each 429 on a poll stretches every poll interval by half (at most 8x);
  // a minute without one brings it back.
  stretch_ = std::min(8.0, stretch_ * 1.5);
  last_429_ = now;
}

void Follower::on_poll(const std::string& key, const HttpResponse& r) {
  Shot* shot = core_.book.find(key);
  if (!shot) return;
  const MonoPoint mnow = core_.mono();
  const int64_t now = mono_ms(mnow);
  if (stretch_ > 1.0 && mnow - last_429_ > Millis(60000)) stretch_ = 1.0;
  StatusAnswer a = classify_status(r);
  if (a.verdict != Verdict::ok) {
    on_problem(*shot, "status", a.verdict, a.message, a.reset_at);
    return;
  }
  const bool retried = core_.step_went_through(*shot);
  if (a.status == "COMPLETED") {
    shot->completed_ms = to_epoch_ms(core_.wall());
    shot->remote_status = a.status;
    shot->due_ms = 0;
    core_.move(*shot, ShotState::fetching);
    core_.save(*shot);
    crash_point("status_change");
    return;
  }
  planner_.seen(*shot, a.status, now);
  shot->seen_running = true;
  if (on_running) on_running(*shot, now);
  bool changed = shot->remote_status != a.status;
  shot->remote_status = a.status;
  int64_t next = planner_.next_poll(*shot, now, core_.unit_random());
  if (stretch_ > 1.0) next = now + static_cast<int64_t>(static_cast<double>(next - now) * stretch_);
  core_.book.set_due(*shot, next);
  if (spdlog::should_log(spdlog::level::debug))
    spdlog::debug("{}: {}, next poll in {:.3f} s ({})", shot->key(), a.status,
                  static_cast<double>(next - now) / 1000.0, planner_.describe(*shot, now));
  if (changed || retried) core_.save(*shot);
}

void Follower::on_problem(Shot& shot, const char* step, Verdict verdict, const std::string& message,
                          const std::optional<TimePoint>& reset_at) {
  const TimePoint wall = core_.wall();
  switch (verdict) {
    case Verdict::failed:
      shot.remote_status = "FAILED";
      shot.completed_ms = to_epoch_ms(wall);
      planner_.forget(shot.key());  // the jobs this moves are planned again at the shot's end (an event)
      core_.end(shot, ShotState::failed, message);
      return;
    case Verdict::not_found: {
      std::string why = "expired: the provider no longer knows request " + shot.request_id +
                        " (records are kept about an hour); the job may have completed and been billed";
      planner_.forget(shot.key());
      replan_moved(shot.key());  // a resubmit is no end: no event does it
      if (core_.settings.on_expired == OnExpired::resubmit && requeue) {
        spdlog::warn("{}: {}; resubmitting (on_expired: resubmit)", shot.key(), why);
        requeue(shot, "expired_resubmit", "resubmitted after " + why);
        return;
      }
      core_.end(shot, ShotState::held, why);
      return;
    }
    case Verdict::bug:
      core_.retry_later(shot, std::string(step) + ": " + message, true);
      return;
    case Verdict::rate_limited:
      slow_down(core_.mono());
      [[fallthrough]];
    default:  // network, 5xx, 429, auth: following a job is always safe to retry
      core_.retry_later(shot, std::string(step) + ": " + message, false);
      if (reset_at)
        core_.book.set_due(shot, std::max(shot.due_ms, mono_ms(mono_until(*reset_at, wall, core_.mono()))));
      return;
  }
}

void Follower::on_fetch(const std::string& key, const HttpResponse& r) {
  Shot* shot = core_.book.find(key);
  if (!shot) return;
  ResultAnswer a = classify_result(r);
  if (a.verdict != Verdict::ok) {
    on_problem(*shot, "result", a.verdict, a.message, a.reset_at);
    return;
  }
  // Saved below with its new state. A result fetched again because the output
  // URL had gone keeps the count of those downloads (a URL gone each time ends
  // HELD, not in a loop); its reason goes.
  core_.step_went_through(*shot, !shot->output_url.empty());
  shot->output_url = a.output_url;
  if (planner_.completed(*shot, a.inference_time, a.queue_time) && on_learned) on_learned();
  replan_moved(key);
  shot->metrics_json = a.metrics_json;
  shot->due_ms = 0;
  core_.move(*shot, ShotState::downloading);
  // A result fetched again (the output URL had gone) is not spent again.
  const bool newly_spent = a.cost && !shot->cost && *a.cost >= 0;
  double spent_now = 0;
  if (newly_spent) {
    const std::string day = local_day(core_.wall());
    shot->cost = a.cost;
    if (!core_.spend.costs().plausible(shot->spec, *a.cost))
      spdlog::warn("{}: the provider's cost {} is far from the price table; counted as spent, not learned", key,
                   *a.cost);
    core_.spend.costs().observe(shot->spec, *a.cost);
    core_.store.put_shot_spent(*shot, day, to_micro(*a.cost), core_.spend.costs().to_json());
    core_.spend.spent(shot->batch, day, *a.cost, true);
    core_.spend.release(key);
  } else if (!shot->cost) {
    // Billed, and the answer names no readable cost (missing, null, negative, out of
    // range): the estimate stands in for the charge, so no budget is overspent
    // (counted as spent and in the ledger, not learned).
    const Micro estimate = core_.count_estimate_spent(*shot, "cost_unknown");
    core_.spend.release(key);
    spdlog::warn("{}: the result names no readable cost: its estimate {} is counted as spent (the provider's "
                 "dashboard has the charge)",
                 key, credits_text(estimate));
    spent_now = *shot->cost;
  } else {
    core_.save(*shot, Sync::yes);
  }
  core_.events.emit(Event::completed(key, shot->spec.resolution, a.inference_time, a.queue_time,
                                     newly_spent ? *a.cost : spent_now));
  // The balance after this job's charge: read after it is counted, so the
  // charge is not taken from it twice.
  if (a.remaining_credits && on_balance) on_balance(*a.remaining_credits);
}

}  // namespace wb
