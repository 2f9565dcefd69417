// Implementation notes.
// - Every shot that is not terminal lives in the book and mirrors its stored
//   record; a change is saved before anything depends on it. The two writes
//   that decide whether money is spent twice are the submitter's.
// - A shot has at most one request on the wire (ShotBook busy). Callbacks look
//   the shot up again by key, so a shot that ended meanwhile is simply skipped.
// - tick() costs O(due work · log n): followed shots come off the due-time
//   queue, and pending shots are walked in submit order only until a gate
//   stops every submit (a batch over its budget is skipped as a whole).
#include "jobs/engine/scheduler.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>

#include "jobs/crash_point.h"
#include "jobs/json_safe.h"
#include "jobs/takes.h"

namespace wb {

Scheduler::Scheduler(const Settings& settings, Store& store, Transport& transport, NowFn wall, MonoFn mono,
                     std::string api_key, bool threads)
    : core_(settings, store, transport, std::move(wall), std::move(mono), std::move(api_key), threads),
      output_(settings.output_root),
      bucket_(settings.limits.submits_per_minute, settings.limits.submit_window_seconds, core_.mono()),
      planner_(settings.poll),
      submitter_(core_, submit_state_, bucket_),
      follower_(core_, planner_),
      uploader_(core_),
      chains_(core_),
      downloader_(core_, output_),
      batches_(core_, output_),
      operator_(core_, batches_, output_),
      credits_(core_, submit_state_),
      revisions_(core_, batches_),
      stuck_(core_, planner_.model()) {
  std::string err;
  window_ = TimeWindow::parse(settings.window, err).value_or(TimeWindow());
  core_.on_shot_ended = [this](const std::string& batch) { batches_.maybe_finish(batch); };
  batches_.on_adopt = [this](Shot s) { follow_again(std::move(s)); };
  batches_.on_finished = [this](const BatchRecord& b) {
    if (on_batch_finished) on_batch_finished(b);
  };
  submitter_.on_accepted = [this](Shot& s) {
    planner_.submitted(s, s.followed_since_ms);
    core_.book.set_due(s, planner_.next_poll(s, core_.now_ms(), core_.unit_random()));
  };
  submitter_.on_credits_short = [this] { credits_.soon(); };
  follower_.on_balance = [this](double balance) { credits_.balance_from_result(balance); };
  follower_.requeue = [this](Shot& s, const std::string& event, const std::string& reason) {
    Shot copy = s;
    operator_.requeue(std::move(copy), event, reason);
  };
  follower_.on_learned = [this] { model_dirty_ = true; };
  // At each poll that says the job still runs: far beyond its render time? Not
  // when the poll is due: a job followed again after a restart may have ended
  // while the daemon was down.
  follower_.on_running = [this](Shot& s, int64_t now_ms) { stuck_.check(s, now_ms, planner_.rendering_since_ms(s)); };
  uploader_.frame_file = [this](const Shot& s, const MediaRef& ref) { return chains_.frame_file(s, ref); };
  chains_.requeue = [this](Shot s, const std::string& event, const std::string& reason) {
    operator_.requeue(std::move(s), event, reason);
  };
  operator_.on_followed = [this](Shot& s) { planner_.submitted(s, s.followed_since_ms); };
  core_.events.subscribe([this](const Event& e) {
    if (e.kind == Event::Kind::shot_changed && is_terminal(e.to)) {
      planner_.forget(e.key);
      follower_.replan_moved(e.key);
    }
    if (e.kind == Event::Kind::shot_changed && is_terminal(e.to)) revisions_.ended(e.key, e.to);
    if (e.kind == Event::Kind::shot_changed && e.from == ShotState::in_flight && !is_terminal(e.to))
      if (Shot* s = core_.book.find(e.key)) stuck_.left_flight(*s);
  });
}

void Scheduler::load() {
  Store& store = core_.store;
  ShotBook& book = core_.book;
  for (auto& b : store.unfinished_batches()) book.add_batch(b);
  if (auto model = store.meta("render_model")) planner_.load(parse_json_bounded(*model).value_or(nlohmann::json()));
  if (auto costs = store.meta("cost_model")) core_.spend.costs().load(*costs);
  core_.spend.day_loader = [&store](const std::string& day) { return store.spent_on(day); };
  std::vector<Shot> unfinished = store.unfinished_shots();
  remember_recent_submits();
  for (auto& s : unfinished) {
    revisions_.loaded(s);
    if (s.state == ShotState::downloading && s.file_take > 0 && s.file_take != s.take) try {
        if (restore_newest_done(output_, s.batch, s.spec.id, s.file_take))
          spdlog::warn("{}: {}.mp4 put back to take {}, its newest DONE take", s.key(), s.spec.id, s.file_take);
      } catch (const Error& e) {
        spdlog::error("{}: cannot put back take {} as {}.mp4: {}", s.key(), s.file_take, s.spec.id, e.what());
      }
    follow_again(std::move(s));
  }
  // What unfinished batches have spent so far, for their budgets.
  for (const auto& [name, b] : book.batches()) {
    Micro spent = 0;
    store.each_shot(name, [&](const Shot& s) { spent += (s.cost ? to_micro(*s.cost) : 0) + s.earlier_cost_micro; });
    core_.spend.set_batch_spent(name, spent);
  }
  batches_.check_all();
  submit_state_.paused = store.meta("paused").value_or("0") == "1";
  if (submit_state_.paused) spdlog::warn("submits are paused (wanbatch resume to resume)");
  spdlog::info("loaded {} unfinished shots in {} unfinished batches", book.size(), book.batches().size());
}

void Scheduler::remember_recent_submits() {
  // Every POST of the last window still counts at the provider, whether its shot has
  // finished since or not: the ledger's attempts, newest first, back to the first entry
  // older than the window (other entries, e.g. a retry of a whole batch, are read past;
  // the wall clock may have stepped: an attempt "in the future" counts as now).
  const Settings& st = core_.settings;
  const int64_t window_ms = static_cast<int64_t>(
      1000.0 * std::max(st.limits.submit_window_seconds, 60.0 / std::max(st.limits.submits_per_minute, 0.01)));
  const int64_t wall_ms = to_epoch_ms(core_.wall());
  const MonoPoint mono = core_.mono();
  core_.store.ledger_backwards([&](const nlohmann::json& e) {
    if (!e.is_object()) return true;
    auto time = e.find("time");
    if (time == e.end() || !time->is_string()) return true;
    auto t = parse_reset_time(time->get<std::string>());
    if (!t) return true;
    const int64_t age = std::clamp<int64_t>(wall_ms - to_epoch_ms(*t), 0, 86400000);
    if (age > window_ms) return false;
    auto event = e.find("event");
    if (event != e.end() && event->is_string() && *event == "attempt") bucket_.remember(mono - Millis(age), mono);
    return true;
  });
}

void Scheduler::follow_again(Shot s) {
  Store& store = core_.store;
  ShotBook& book = core_.book;
  const TimePoint now = core_.wall();
  const int64_t mono_now = core_.now_ms();
  if (is_terminal(s.state)) return;
  if (s.state == ShotState::submitting) {
    // The POST may or may not have reached the provider. Never resend blindly.
    store.append_ledger(ledger_entry(s, "ambiguous_on_restart", now));
    s.state = ShotState::held;
    s.reason =
        "ambiguous submit: the daemon stopped after sending the submit and before recording a "
        "request_id; the job may exist and be billed. Check the provider's dashboard, then "
        "`wanbatch retry` it if it was not run";
    store.put_shot(s, Sync::yes);
    spdlog::warn("{}: HELD, {}", s.key(), s.reason);
    return;
  }
  if (!book.batch(s.batch)) {
    // Its batch record was lost or marked finished by a damaged store: the
    // batch is open again (a stand-in record when there is none), so the shot
    // is followed and the batch reported when it ends.
    BatchRecord b = store.batch(s.batch).value_or(BatchRecord{});
    if (b.name.empty()) {
      b.name = s.batch;
      b.damaged = true;
    }
    b.finished = false;
    store.put_batch(b);
    spdlog::warn("batch {}: reopened for its unfinished shot {}", b.name, s.key());
    book.add_batch(b);
  }
  // Its attempts go on from the record (Core::retry_later saves them): a daemon
  // restarted between failures must not retry a step for ever.
  s.due_ms = 0;
  // How long it has been followed, on the monotonic clock, from the wall time
  // it was submitted (bounded: the wall clock may have stepped meanwhile).
  if (s.submitted_ms)
    s.followed_since_ms = mono_now - std::clamp<int64_t>(to_epoch_ms(now) - s.submitted_ms, 0, 3600 * 1000);
  Shot& live = book.add(std::move(s));
  if (occupies_slot(live.state) && !live.cost)
    core_.spend.commit(live.key(), live.batch, core_.spend.costs().estimate(live.spec));
  if (live.state == ShotState::in_flight) {
    // Spread the first polls over the gap the policy would leave, so that
    // thousands of jobs followed again do not poll at once.
    planner_.submitted(live, live.followed_since_ms);
    // Last seen waiting for a worker (or never polled): for the stuck limit its
    // render counts from now at the earliest (its queue time is no render time).
    if (live.remote_status == "QUEUED") live.render_not_before_ms = mono_now;
    book.set_due(live, planner_.first_poll_after_restart(live, mono_now, core_.unit_random()));
  } else if (is_followed(live.state)) {
    book.set_due(live, mono_now + static_cast<int64_t>(core_.unit_random() * 1000));
  }
}

Scheduler::Accept Scheduler::accept(const Manifest& m, const std::string& manifest_name,
                                    const std::string& manifest_path, const std::string& held_reason) {
  Store& store = core_.store;
  std::set<std::string> known;  // shots a stand-in batch already has (from the journal)
  if (auto existing = store.batch(m.batch)) {
    // A stand-in for a batch the store lost is completed from its manifest; the
    // journal's shots keep their HELD stand-ins.
    if (!(existing->damaged && !held_reason.empty())) {
      const bool same_bytes = existing->sha256 == m.sha256;
      // A stand-in for a lost record takes no revision: its shots' history is unknown.
      if (existing->damaged) return same_bytes ? Accept::already_added : Accept::name_taken;
      Revisions::Outcome r = revisions_.apply(m, manifest_name, manifest_path, same_bytes);
      if (r.applied) {
        chains_.batch_changed(m.batch);
        return Accept::revised;
      }
      return existing->sha256 == m.sha256 ? Accept::already_added : Accept::unchanged;
    }
    for (const auto& k : store.shots(m.batch)) known.insert(k.spec.id);
  }
  BatchRecord b;
  b.name = m.batch;
  b.priority = m.priority;
  b.budget_credits = m.budget_credits;
  b.manifest_name = manifest_name;
  b.manifest_path = manifest_path;
  b.sha256 = m.sha256;
  b.base_dir = m.base_dir;
  b.created_ms = to_epoch_ms(core_.wall());
  b.shot_count = static_cast<int>(m.shots.size());
  std::vector<Shot> shots;
  shots.reserve(m.shots.size());
  for (size_t i = 0; i < m.shots.size(); ++i) {
    if (known.count(m.shots[i].id)) continue;
    Shot s;
    s.batch = m.batch;
    s.index = static_cast<int>(i);
    s.spec = m.shots[i];
    s.inputs = fingerprint_inputs(s.spec);
    if (!held_reason.empty()) {
      s.state = ShotState::held;
      s.reason = held_reason;
    }
    shots.push_back(std::move(s));
  }
  store.add_batch(b, shots);
  crash_point("accepted");
  core_.book.add_batch(b);
  for (auto& s : shots)
    if (!is_terminal(s.state)) core_.book.add(std::move(s));
  spdlog::info("batch {}: accepted {} shots from {}{}", b.name, b.shot_count, manifest_name,
               held_reason.empty() ? "" : ", all HELD: " + held_reason);
  batches_.maybe_finish(b.name);
  return Accept::added;
}

Scheduler::OperatorResult Scheduler::retry(const std::string& target, Resubmit allow_resubmit) {
  OperatorResult r = operator_.retry(target, allow_resubmit);
  const std::string batch = target.substr(0, target.find('/'));
  for (const auto& id : chains_.release(batch, r.changed)) {
    r.changed.push_back(id);
    r.plan.push_back(id + ": released; it waits for its parent again (billed only when it is submitted)");
  }
  return r;
}

void Scheduler::settings_changed() {
  const Settings& s = core_.settings;
  planner_.set_bounds(s.poll);
  if (s.limits.requests_per_minute != core_.budget.per_minute()) core_.budget.set_rate(s.limits.requests_per_minute, core_.mono());
}

void Scheduler::set_paused(bool paused) {
  submit_state_.paused = paused;
  core_.store.put_meta("paused", paused ? "1" : "0");
  spdlog::info(paused ? "submits paused by an operator" : "submits resumed by an operator");
}

void Scheduler::set_submit_wait(const std::string& reason, const std::string& limit) {
  if (reason == submit_wait_) return;
  submit_wait_ = reason;
  core_.store.put_meta("submit_wait", reason);
  if (!reason.empty()) core_.events.emit(Event::limit_of(limit, reason));
}

void Scheduler::save_render_model() {
  const int64_t now = core_.now_ms();
  if (!model_dirty_ || now - model_saved_ms_ < 10000) return;
  core_.store.put_meta("render_model", planner_.save().dump());
  model_saved_ms_ = now;
  model_dirty_ = false;
}

Millis Scheduler::tick() {
  const TimePoint wall = core_.wall();
  const MonoPoint now = core_.mono();
  const int64_t now_ms = mono_ms(now);
  ShotBook& book = core_.book;
  core_.background.drain();
  batches_.finish_pending();
  downloader_.start_waiting();
  while (core_.wire_room()) {
    Shot* s = book.pop_due(now_ms);
    if (!s) break;
    if (s->state == ShotState::downloading) {
      downloader_.due(*s);
      continue;
    }
    follower_.start(*s);
  }
  // With the wire full, the work still due goes as answers come back (each
  // wakes the loop); the next second is only a backstop.
  int64_t next_ms = core_.wire_room() ? std::min(book.next_due_ms(), now_ms + 60000) : now_ms + 1000;
  next_ms = std::min(next_ms, credits_.tick(now));
  save_render_model();
  chains_.tick();
  next_ms = submit_due(wall, now, next_ms);
  return Millis(std::max<int64_t>(0, next_ms - core_.now_ms()));
}

int64_t Scheduler::submit_due(TimePoint wall, MonoPoint now, int64_t next_ms) {
  ShotBook& book = core_.book;
  const auto& limits = core_.settings.limits;
  if (book.pending().empty() || stopping_) {
    set_submit_wait("", "");
    return next_ms;
  }
  auto stop = [&](const Wait& w, const std::string& limit, Shot* head) {
    set_submit_wait(w.reason, limit);
    if (w.until_ms) next_ms = std::min(next_ms, w.until_ms);
    if (head && head->reason != w.reason && !Chains::waits_for_parent(*head)) {  // the next shot to go says why it waits
      head->reason = w.reason;
      core_.save(*head);
    }
    return next_ms;
  };
  if (!core_.wire_room(true)) return next_ms;  // answers coming back wake the loop
  Shot* head = book.find(book.pending().begin()->second);
  if (auto w = common_gate(submit_state_, window_, wall, now)) return stop(*w, "gate", head);
  if (auto w = in_flight_gate(book.in_slot(), limits.max_in_flight)) return stop(*w, "in_flight", head);
  std::optional<int> room = planner_.queue_room();
  if (room && *room <= 0) return stop(*queue_gate(planner_.waiting_at_provider(), planner_.waiting_at_provider()),
                                      "provider_queue", head);
  const std::string day = local_day(wall);
  const int64_t now_ms = mono_ms(now);
  std::string blocked_batch;
  for (auto it = book.pending().begin(); it != book.pending().end();) {
    auto cur = it++;
    const std::string key = cur->second;
    Shot* s = book.find(key);
    if (!s || book.busy(key)) continue;
    if (s->due_ms > now_ms) {
      next_ms = std::min(next_ms, s->due_ms);
      continue;
    }
    if (!chains_.ready(*s) || !uploader_.ready(*s)) continue;
    s = book.find(key);  // ended when its media cannot be read
    if (!s || s->state != ShotState::pending) continue;
    const Micro estimate = core_.spend.costs().estimate(s->spec);
    const BatchRecord* b = book.batch(s->batch);
    Spend::Check c = core_.spend.check(s->batch, b ? b->budget_credits : std::nullopt, day, estimate);
    if (!c.batch_wait.empty()) {
      // This batch waits as a whole: each of its pending shots says why, once.
      std::string why = "waiting: " + c.batch_wait;
      auto end = book.skip_batch(cur);
      for (auto j = cur; j != end; ++j)
        if (Shot* x = book.find(j->second); x && x->reason.rfind("waiting: batch budget", 0) != 0) {
          x->reason = why;
          core_.save(*x);
        }
      it = end;
      continue;
    }
    if (!c.global_wait.empty()) return stop({"waiting: " + c.global_wait, 0}, "credits", s);
    // The rate first: a request of the budget is taken only for a submit that goes.
    if (MonoPoint token = bucket_.next_token(now); token > now) {
      char rate[32];
      std::snprintf(rate, sizeof rate, "%.2f", bucket_.current_per_minute());
      Wait w{std::string("waiting: submit rate (limits.submits_per_minute, now ") + rate + "/min)",
             mono_ms(token)};
      return stop(w, "rate", s);
    }
    if (!core_.budget.try_take(now, RequestBudget::Use::submit)) {
      Wait w{"waiting: request budget (limits.requests_per_minute " +
                 std::to_string(static_cast<int>(core_.budget.per_minute())) + "): following jobs comes first",
             mono_ms(core_.budget.next_available(now, RequestBudget::Use::submit))};
      return stop(w, "requests", s);
    }
    bucket_.try_take(now);
    submitter_.start(*s);
    if (!core_.wire_room(true)) return next_ms;
    if (auto w = in_flight_gate(book.in_slot(), limits.max_in_flight)) {
      set_submit_wait(w->reason, "in_flight");
      return next_ms;
    }
    if (room && --*room <= 0) {
      set_submit_wait(queue_gate(planner_.waiting_at_provider(), planner_.waiting_at_provider())->reason,
                      "provider_queue");
      return next_ms;
    }
  }
  set_submit_wait("", "");
  return next_ms;
}

}  // namespace wb
