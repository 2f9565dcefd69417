#include "jobs/engine/operator.h"

#include <cctype>

#include <spdlog/spdlog.h>

#include "jobs/credits.h"
#include "jobs/engine/submitter.h"
#include "jobs/segmind.h"
#include "jobs/throttle.h"

namespace wb {

namespace {
bool id_is_batch(const std::string& target) { return target.find('/') == std::string::npos; }
}  // namespace

std::vector<Shot> Operator::target_shots(const std::string& target) const {
  auto slash = target.find('/');
  std::string batch = target.substr(0, slash);
  std::string id = slash == std::string::npos ? "" : target.substr(slash + 1);
  if (!is_valid_id(batch) || (slash != std::string::npos && !is_valid_id(id)))
    throw Error("'" + target + "' is not BATCH or BATCH/SHOT");
  if (!core_.store.batch(batch)) throw Error("no batch named '" + batch + "'");
  std::vector<Shot> out;
  for (auto& s : core_.store.shots(batch)) {
    const Shot* live = core_.book.find(s.key());
    if (id.empty() || s.spec.id == id) out.push_back(live ? *live : s);
  }
  if (out.empty()) throw Error("batch '" + batch + "' has no shot '" + id + "'");
  return out;
}

void Operator::requeue(Shot shot, const std::string& ledger_event, const std::string& reason) {
  auto entry = ledger_entry(shot, ledger_event, core_.wall());
  entry["previous_request_id"] = shot.request_id;
  entry["previous_state"] = to_string(shot.state);
  core_.store.append_ledger(entry);
  const ShotState from = shot.state;
  shot.state = ShotState::pending;
  shot.reason = reason;
  shot.request_id.clear();
  shot.remote_status.clear();
  shot.output_url.clear();
  shot.metrics_json.clear();
  shot.cost.reset();
  shot.file.clear();
  shot.attempts = 0;
  shot.submit_attempts = 0;
  shot.due_ms = 0;
  shot.submitted_ms = shot.completed_ms = 0;
  shot.held_from = ShotState::pending;
  core_.store.put_shot(shot, Sync::yes);
  batches_.reopen(shot.batch);
  core_.spend.release(shot.key());
  const std::string key = shot.key();
  core_.book.add(std::move(shot));
  core_.events.emit(Event::shot(key, from, ShotState::pending, reason));
}

void Operator::resume_at(Shot shot, ShotState step) {
  auto entry = ledger_entry(shot, "operator_resume", core_.wall());
  entry["request_id"] = shot.request_id;
  entry["step"] = to_string(step);
  core_.store.append_ledger(entry);
  const ShotState from = shot.state;
  shot.state = step == ShotState::downloading && shot.output_url.empty() ? ShotState::fetching : step;
  shot.held_from = ShotState::pending;
  shot.reason.clear();
  shot.attempts = 0;
  shot.due_ms = 0;
  shot.followed_since_ms = core_.now_ms();
  core_.store.put_shot(shot, Sync::yes);
  batches_.reopen(shot.batch);
  Shot& s = core_.book.add(std::move(shot));
  core_.events.emit(Event::shot(s.key(), from, s.state, ""));
  if (on_followed) on_followed(s);
}

ShotState free_resume_step(const Shot& s) {
  // Resume where it stopped when the job can still be followed: a record
  // that expired can no longer be polled, but its output file lives on.
  bool expired = s.reason.rfind("expired", 0) == 0;
  bool ambiguous = s.reason.rfind("ambiguous submit", 0) == 0;  // whose job it is, is unknown
  if (s.state == ShotState::held && !ambiguous && !s.request_id.empty() && is_plain_token(s.request_id)) {
    if (s.held_from == ShotState::downloading && !s.output_url.empty()) return ShotState::downloading;
    if (!expired && (s.held_from == ShotState::in_flight || s.held_from == ShotState::fetching)) return s.held_from;
  }
  return ShotState::pending;
}

OperatorResult Operator::retry(const std::string& target, Resubmit allow_resubmit) {
  OperatorResult r;
  for (auto& s : target_shots(target)) {
    if (s.damaged) {
      r.skipped.push_back(s.spec.id + ": its stored record was unreadable; render it again under a new batch name");
      continue;
    }
    if (s.state != ShotState::held && s.state != ShotState::failed && s.state != ShotState::rejected) {
      if (!id_is_batch(target)) r.skipped.push_back(s.spec.id + ": is " + to_string(s.state));
      continue;
    }
    ShotState resume = free_resume_step(s);
    if (resume != ShotState::pending) {
      spdlog::info("{}: resumed by an operator at {} (request_id {}), no new submit", s.key(), to_string(resume),
                   s.request_id);
      r.changed.push_back(s.spec.id);
      r.plan.push_back(s.spec.id + ": resumes at " + to_string(resume) + " (request_id " + s.request_id +
                       "), no new submit, no cost");
      resume_at(s, resume);
      continue;
    }
    std::string cost = format_credits(core_.spend.costs().estimate(s.spec));
    if (allow_resubmit == Resubmit::no) {
      r.skipped.push_back(s.spec.id + ": needs a new submit, a new billed job (~" + cost +
                          " credits); not done: run again with --yes");
      continue;
    }
    spdlog::info("{}: retried by an operator (was {}), a new submit", s.key(), to_string(s.state));
    r.changed.push_back(s.spec.id);
    r.plan.push_back(s.spec.id + ": a new submit, a new billed job (~" + cost + " credits)");
    requeue(s, "operator_retry", "");
  }
  return r;
}

namespace {
std::string ascii_case(std::string text, bool upper) {
  for (char& c : text) c = static_cast<char>(upper ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
  return text;
}
bool same_request_id(const std::string& a, const std::string& b) { return ascii_case(a, false) == ascii_case(b, false); }
}  // namespace

int Operator::take_of_request(const std::string& key, const std::string& request_id) const {
  // The ledger names the take of every job a shot was given (absent: take 1).
  for (const auto& e : core_.store.ledger()) {
    if (!e.is_object() || e.value("shot", "") != key) continue;
    auto id = e.find("request_id");
    if (id == e.end() || !id->is_string() || !same_request_id(id->get<std::string>(), request_id)) continue;
    auto take = e.find("take");
    return take != e.end() && take->is_number_integer() ? take->get<int>() : 1;
  }
  return 0;
}

OperatorResult Operator::adopt(const std::string& target, const std::string& request_id) {
  if (id_is_batch(target)) throw Error("adopt takes one shot, BATCH/SHOT, not '" + target + "'");
  if (!is_plain_token(request_id))
    throw Error("'" + request_id + "' is not a request_id (a letter or digit, then letters, digits, '-', '_' or '.'; up to 128)");
  Shot s = target_shots(target).front();
  if (s.state != ShotState::held)
    throw Error(s.key() + " is " + to_string(s.state) + "; only a HELD shot adopts a job");
  if (s.damaged)
    throw Error(s.key() + ": its stored record was unreadable, so what it asked for is unknown; render it again "
                          "under a new batch name");
  // A person may type a UUID in either case; the provider's may match it either way.
  for (const std::string& form : {request_id, ascii_case(request_id, false), ascii_case(request_id, true)})
    if (auto owner = core_.store.shot_by_request(form); owner && *owner != s.key())
      throw Error("request_id " + request_id + " already belongs to " + *owner);
  if (!same_request_id(request_id, s.request_id))
    if (int take = take_of_request(s.key(), request_id); take && take != s.take)
      throw Error("request_id " + request_id + " belongs to take " + std::to_string(take) + " of " + s.key() +
                  "; the current take is " + std::to_string(s.take) + " (its video would be taken for take " +
                  std::to_string(s.take) + "'s); nothing changed");
  auto entry = ledger_entry(s, "adopted", core_.wall());
  entry["request_id"] = request_id;
  entry["previous_request_id"] = s.request_id;
  entry["previous_reason"] = s.reason;
  // Another job than the one the shot may have been billed for: its cost is
  // counted when its result comes. The same job again: already counted.
  if (request_id != s.request_id) {
    s.cost.reset();
    s.output_url.clear();
    s.metrics_json.clear();
  }
  s.request_id = request_id;
  s.state = ShotState::in_flight;
  s.held_from = ShotState::pending;
  s.remote_status.clear();
  s.reason.clear();
  s.attempts = 0;
  s.due_ms = 0;
  s.submitted_ms = to_epoch_ms(core_.wall());  // unknown; its record's hour counts from no later than now
  s.completed_ms = 0;
  s.followed_since_ms = core_.now_ms();
  core_.store.put_shot_and_ledger(s, entry);
  spdlog::info("{}: adopted the provider's job {} (an operator), followed without a new submit", s.key(),
               request_id);
  batches_.reopen(s.batch);
  OperatorResult r;
  r.changed.push_back(s.spec.id);
  r.plan.push_back(s.spec.id + ": follows request_id " + request_id + ", no new submit");
  Shot& live = core_.book.add(std::move(s));
  if (on_followed) on_followed(live);
  return r;
}

OperatorResult Operator::cancel(const std::string& target, bool abandon) {
  OperatorResult r;
  for (auto& s : target_shots(target)) {
    if (is_terminal(s.state)) {
      if (!id_is_batch(target)) r.skipped.push_back(s.spec.id + ": already " + to_string(s.state));
      continue;
    }
    Shot* live = core_.book.find(s.key());
    if (!live) continue;
    if (live->state == ShotState::submitting) {
      r.skipped.push_back(s.spec.id + ": a submit is on the wire; try again in a moment");
      continue;
    }
    const bool paid = occupies_slot(live->state) && !live->request_id.empty();
    if (paid && !abandon && !live->next_take.empty()) {
      // The revision's next take is what is cancelled; the paid take renders on.
      const int next = live->take + 1;
      auto entry = ledger_entry(*live, "next_take_cancelled", core_.wall());
      entry["request_id"] = live->request_id;
      entry["cancelled_take"] = next;
      live->next_take.clear();
      core_.store.put_shot_and_ledger(*live, entry);
      spdlog::info("{}: its queued take {} cancelled by an operator; take {} ({}) is followed to its end", s.key(),
                   next, live->take, live->request_id);
      r.changed.push_back(s.spec.id);
      r.kept_paid.push_back(s.spec.id);  // the shot has not ended: its paid take runs on (exit 3)
      r.plan.push_back(s.spec.id + ": its queued take " + std::to_string(next) + " is cancelled; take " +
                       std::to_string(live->take) +
                       (at_provider(live->state) ? " on the provider" : " rendered, now being fetched") +
                       " (request_id " + live->request_id +
                       ") is paid for and keeps running to its end (its video kept as take " +
                       std::to_string(live->take) + "); `wanbatch cancel --abandon " + s.key() +
                       "` stops following it (its video lost, its estimated cost counted)");
      continue;
    }
    if (paid && !abandon) {
      // A plain cancel never abandons a take already paid for: it renders on to DONE.
      r.kept_paid.push_back(s.spec.id);
      const char* where = at_provider(live->state) ? " on the provider" : " rendered, now being fetched";
      r.skipped.push_back(s.spec.id + ": take " + std::to_string(live->take) + where + " (request_id " +
                          live->request_id + ") is paid for and keeps running to its end (its video kept); " +
                          "`wanbatch cancel --abandon " + s.key() +
                          "` stops following it (its video lost, its estimated cost counted)");
      continue;
    }
    std::string why = "cancelled by an operator";
    if (paid && !live->cost) {
      // Billed whatever we do: its cost counts, the estimate standing in for the unknown charge.
      const Micro estimate = core_.count_estimate_spent(*live, "operator_cancel");
      why += "; the provider's job " + live->request_id + " cannot be cancelled and is billed: its estimated cost " +
             credits_text(estimate) + " is counted (the provider's dashboard has the charge)";
    } else if (!live->request_id.empty()) {
      why += "; the provider's job " + live->request_id + " cannot be cancelled and may still be billed";
    }
    r.changed.push_back(s.spec.id);
    if (live->state == ShotState::downloading) {
      output_.discard_part(live->batch, live->spec.id);
      // a commit a crash cut short before DONE (an earlier DONE take's files stay)
      output_.withdraw(live->batch, live->spec.id, live->request_id, live->file_take > 0 && live->file_take != live->take);
    }
    core_.end(*live, ShotState::cancelled, why);
  }
  return r;
}

}  // namespace wb
