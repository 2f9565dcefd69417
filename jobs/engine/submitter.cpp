#include "jobs/engine/submitter.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "jobs/crash_point.h"
#include "jobs/log_context.h"
#include "jobs/segmind.h"

namespace wb {


nlohmann::json ledger_entry(const Shot& s, const std::string& event, TimePoint now) {
  nlohmann::json e = {{"time", iso8601_utc(now)}, {"shot", s.key()}, {"event", event}, {"attempt", s.submit_attempts}};
  if (s.take > 1) e["take"] = s.take;  // a revision's new take (jobs/revision.h): its attempts count anew
  return e;
}

void Submitter::start(Shot& shot) {
  crash_point("before_submitting");
  const ShotState before = shot.state;
  const std::string reason = shot.reason;
  shot.state = ShotState::submitting;
  ++shot.submit_attempts;
  shot.reason.clear();
  // Synced before the POST leaves: a crash from here on is an ambiguous submit.
  try {
    core_.store.put_shot_and_ledger(shot, ledger_entry(shot, "attempt", core_.wall()));
  } catch (const Error&) {
    // Not recorded (a full state disk), so not sent: the shot waits as it was.
    shot.state = before;
    shot.reason = reason;
    --shot.submit_attempts;
    throw;
  }
  shot.state = before;
  core_.move(shot, ShotState::submitting);
  crash_point("submitting");
  core_.spend.commit(shot.key(), shot.batch, core_.spend.costs().estimate(shot.spec));
  HttpRequest req = core_.api.make(submit_url(core_.settings.api), submit_body(shot));
  req.connection = ConnectionUse::fresh;
  ++on_wire_;
  std::string key = shot.key();
  core_.send(key, "submit", std::move(req), [this, key](const HttpResponse& r) {
    --on_wire_;
    on_answer(key, r);
  });
}

bool Submitter::duplicate_id(Shot& shot, const std::string& request_id, nlohmann::json& entry) {
  auto owner = core_.store.shot_by_request(request_id);
  if (!owner || *owner == shot.key()) return false;
  // A request_id belongs to one shot. This submit may or may not have started
  // a job of its own: a person decides, nothing is resent.
  const std::string key = shot.key();
  entry["event"] = "duplicate_request_id";
  entry["request_id"] = request_id;
  core_.store.append_ledger(entry);
  // Which of the two submits the job belongs to is unknown, so the shot that
  // holds the id is not trusted with it either: its own job may be another.
  if (Shot* first = core_.book.find(*owner); first && first->state != ShotState::submitting) {
    core_.end(*first, ShotState::held,
              "ambiguous submit: the provider answered this shot's request_id " + request_id + " again for " + key +
                  "; which job is whose is unknown, and this shot's own job may never have been followed. Check "
                  "the provider's dashboard, then `wanbatch retry` it");
  } else if (!first) {
    spdlog::warn("{}: its request_id {} was answered again for {}; its video may be {}'s job", *owner, request_id,
                 key, key);
  }
  Shot* self = core_.book.find(key);
  if (self)
    core_.end(*self, ShotState::held,
              "ambiguous submit: the provider answered request_id " + request_id + ", which already belongs to " +
                  *owner + "; this submit may have started a job of its own and been billed. Check the provider's "
                  "dashboard, then `wanbatch retry` it if it was not run");
  return true;
}

void Submitter::on_answer(const std::string& key, const HttpResponse& r) {
  Shot* shot = core_.book.find(key);
  if (!shot) return;
  const TimePoint wall = core_.wall();
  const MonoPoint now = core_.mono();
  SubmitAnswer a = classify_submit(r);
  auto entry = ledger_entry(*shot, "", wall);
  entry["verdict"] = to_string(a.verdict);
  entry["http_status"] = r.status;
  if (!a.message.empty()) entry["message"] = a.message;
  if (a.verdict == Verdict::ok && duplicate_id(*shot, a.request_id, entry)) return;
  switch (a.verdict) {
    case Verdict::ok:
      shot->request_id = a.request_id;
      shot->submitted_ms = to_epoch_ms(wall);
      shot->followed_since_ms = mono_ms(now);
      shot->attempts = 0;
      shot->remote_status = "QUEUED";
      state_.consecutive_429 = 0;
      entry["event"] = "accepted";
      entry["request_id"] = a.request_id;
      shot->state = ShotState::in_flight;
      core_.store.put_shot_and_ledger(*shot, entry);
      shot->state = ShotState::submitting;
      core_.move(*shot, ShotState::in_flight);
      crash_point("request_id");
      {
        LogScope log_scope(key, a.request_id);
        spdlog::info("{}: submitted, request_id {}", key, a.request_id);
      }
      if (on_accepted) on_accepted(*shot);
      return;
    case Verdict::ambiguous:
      entry["event"] = "ambiguous";
      core_.store.append_ledger(entry);
      core_.end(*shot, ShotState::held,
                "ambiguous submit: " + a.message +
                    ". The job may exist and be billed; check the provider's dashboard, then `wanbatch "
                    "retry` it if it was not run");
      return;
    case Verdict::rejected:
      entry["event"] = "rejected";
      core_.store.append_ledger(entry);
      core_.end(*shot, ShotState::rejected, a.message);
      return;
    case Verdict::bug:
    case Verdict::failed:
    case Verdict::not_found:
      entry["event"] = "refused";
      core_.store.append_ledger(entry);
      core_.end(*shot, ShotState::held, "submit refused: " + a.message);
      return;
    case Verdict::auth:
    case Verdict::credits:
    case Verdict::rate_limited:
    case Verdict::retry:
      break;
  }
  // No job was started: the shot is PENDING again.
  entry["event"] = "not_accepted";
  core_.store.append_ledger(entry);
  core_.spend.release(key);
  core_.move(*shot, ShotState::pending);
  if (a.verdict == Verdict::retry) {
    core_.save(*shot, Sync::yes);
    if (shot->submit_attempts >= core_.settings.retry.max_attempts) {
      core_.end(*shot, ShotState::held,
                "submit failed " + std::to_string(shot->submit_attempts) + " times, last: " + a.message);
      return;
    }
    shot->due_ms = mono_ms(now + core_.backoff(shot->submit_attempts - 1));
    spdlog::warn("{}: submit not accepted ({}), retrying", key, a.message);
    return;
  }
  // Not the shot's fault: the attempt does not count, and every submit waits.
  --shot->submit_attempts;
  core_.save(*shot, Sync::yes);
  if (a.verdict == Verdict::credits) {
    state_.credits_wait = true;
    if (on_credits_short) on_credits_short();
    spdlog::warn("{}; submits wait until the balance covers the next shot", a.message);
    core_.events.emit(Event::limit_of("credits", a.message));
    return;
  }
  MonoPoint until;
  if (a.verdict == Verdict::rate_limited) {
    bucket_.on_rate_limited(now);
    until = now + core_.backoff(state_.consecutive_429++);
    state_.blocked_reason = "rate limited (429)";
  } else {
    until = now + Millis(60000);
    state_.blocked_reason = "the API key was refused (" + a.message + ")";
  }
  if (a.reset_at) until = std::max(until, mono_until(*a.reset_at, wall, now));
  state_.blocked_until = std::max(state_.blocked_until, until);
  core_.events.emit(Event::limit_of(a.verdict == Verdict::rate_limited ? "rate" : "auth", state_.blocked_reason));
  if (a.verdict == Verdict::auth)
    spdlog::error("the API key was refused ({}); submits paused for a minute. Fix the key.", a.message);
  else
    spdlog::warn("rate limited: submits wait until {}, rate now {:.1f}/min",
                 iso8601_utc(wall + std::chrono::duration_cast<Millis>(until - now)), bucket_.current_per_minute());
}

}  // namespace wb
