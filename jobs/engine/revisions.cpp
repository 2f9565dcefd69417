#include "jobs/engine/revisions.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>

#include "jobs/credits.h"
#include "jobs/crash_point.h"
#include "jobs/throttle.h"

namespace wb {

namespace {
std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& x : v) out += (out.empty() ? "" : ", ") + x;
  return out;
}
}  // namespace

void Revisions::new_take(Shot& s, const ShotSpec& spec, const Inputs& inputs, std::vector<std::string> changes) {
  if (s.state == ShotState::done && s.file_take == 0 && !s.file.empty()) s.file_take = s.take;  // a record from before takes
  if (s.cost) s.earlier_cost_micro += to_micro(*s.cost);
  Shot fresh;
  fresh.batch = s.batch;
  fresh.index = s.index;
  fresh.spec = spec;
  // A take never submitted (HELD or CANCELLED before its submit: nothing of it on
  // disk or billed) is replaced under its own number: no take numbers without a take.
  const bool never_submitted = s.state != ShotState::done && s.request_id.empty() && s.submit_attempts == 0 && !s.cost;
  fresh.take = never_submitted ? s.take : s.take + 1;
  fresh.file_take = s.file_take;
  fresh.file = s.file;
  fresh.changes = std::move(changes);
  fresh.inputs = inputs;
  fresh.earlier_cost_micro = s.earlier_cost_micro;
  s = std::move(fresh);
}

Revisions::Outcome Revisions::apply(const Manifest& m, const std::string& manifest_name,
                                    const std::string& manifest_path, bool same_bytes) {
  Store& store = core_.store;
  ShotBook& book = core_.book;
  Outcome out;
  auto existing = store.batch(m.batch);
  if (!existing) throw Error("batch " + m.batch + " is not recorded");
  std::vector<Shot> stored = store.shots(m.batch);
  std::map<std::string, Inputs> inputs;
  for (const auto& spec : m.shots) inputs[spec.id] = fingerprint_inputs(spec);
  out.plan = plan_revision(stored, m, inputs, same_bytes);
  out.revision = existing->revision;
  if (out.plan.changes_nothing()) return out;
  out.revision = existing->revision + 1;
  const bool running = book.batch(m.batch) != nullptr;

  BatchRecord b = running ? *book.batch(m.batch) : *existing;
  // A running batch keeps its place in the submit order (priority, age); a
  // finished one takes the new priority.
  if (!running) b.priority = m.priority;
  b.budget_credits = m.budget_credits;
  b.manifest_name = manifest_name;
  b.manifest_path = manifest_path;
  b.sha256 = m.sha256;
  b.base_dir = m.base_dir;
  b.shot_count = static_cast<int>(m.shots.size());
  b.finished = false;
  b.finished_ms = 0;
  b.revision = out.revision;

  std::map<std::string, Shot> by_id;
  int next_index = 0;
  for (auto& s : stored) {
    next_index = std::max(next_index, s.index + 1);
    const std::string id = s.spec.id;
    // The book's copy is the live one.
    if (const Shot* live = book.find(s.key())) by_id[id] = *live;
    else by_id[id] = std::move(s);
  }
  const std::string tag = "revision " + std::to_string(out.revision);
  std::vector<Shot> writes;            // to store, in one write
  std::vector<std::string> to_follow;  // new PENDING takes for the book
  std::vector<std::string> to_update;  // book entries whose stored copy changed
  std::vector<std::string> to_cancel;  // PENDING shots that left the manifest
  std::map<std::string, ShotState> ended_as;  // the state a new take follows
  std::vector<std::string> cancelled_held;    // HELD, never submitted, left the manifest: CANCELLED
  for (auto& p : out.plan.shots) {
    const ShotSpec* spec = p.index >= 0 ? &m.shots[static_cast<size_t>(p.index)] : nullptr;
    auto it = by_id.find(p.id);
    if (p.action == ShotPlan::Action::keep) continue;
    if (it == by_id.end()) {  // a new shot
      Shot s;
      s.batch = m.batch;
      s.index = next_index + p.index;
      s.spec = *spec;
      s.inputs = inputs[p.id];
      writes.push_back(s);
      to_follow.push_back(s.spec.id);
      continue;
    }
    Shot& s = it->second;
    const bool live = book.find(s.key()) != nullptr;
    // Upload on the wire for the old media: the new spec waits for it like a submitted take.
    if (p.action == ShotPlan::Action::update && live && book.busy(s.key()) && !p.changed.empty())
      p.action = ShotPlan::Action::render_after;
    switch (p.action) {
      case ShotPlan::Action::render: {
        std::vector<std::string> changes = p.changed;
        if (changes.empty()) changes.push_back(std::string("last take ") + to_string(s.state));
        ended_as[p.id] = s.state;
        new_take(s, *spec, inputs[p.id], std::move(changes));
        s.index = next_index + p.index;
        p.take = s.take;
        to_follow.push_back(p.id);
        break;
      }
      case ShotPlan::Action::update:
        s.removed = false;
        if (live) {
          s.next_take.clear();
          queued_.erase(s.key());
          if (!p.changed.empty()) {
            s.spec = *spec;
            s.inputs = inputs[p.id];
            if (s.take > 1)
              for (const auto& f : p.changed)
                if (std::find(s.changes.begin(), s.changes.end(), f) == s.changes.end()) s.changes.push_back(f);
            s.image_url.clear();  // the media may differ: the uploader finds them again
            s.last_frame_url.clear();
            s.audio_url.clear();
          }
          to_update.push_back(p.id);
        }
        break;
      case ShotPlan::Action::render_after:
        s.next_take = next_take_json(*spec, inputs[p.id], p.changed);
        if (live) to_update.push_back(p.id);
        queued_.insert(s.key());
        break;
      case ShotPlan::Action::remove:
        s.removed = true;
        if (!live && s.state == ShotState::held && s.request_id.empty() && s.submit_attempts == 0) {
          // HELD before it was ever submitted (a chain child held by its parent):
          // nothing to keep but the record, and nothing may release it now.
          s.reason = "removed from the manifest (" + tag + ") before it was submitted";
          s.state = ShotState::cancelled;
          spdlog::info("{}: CANCELLED: {}", s.key(), s.reason);
          cancelled_held.push_back(p.id);
        } else if (live) {
          if (s.state == ShotState::pending && !book.busy(s.key())) {
            s.state = ShotState::cancelled;  // stored so; the book ends it below
            s.reason = "removed from the manifest (" + tag + ")";
            to_cancel.push_back(p.id);
          } else {
            to_update.push_back(p.id);
          }
        }
        break;
      case ShotPlan::Action::keep:
        break;
    }
    writes.push_back(s);
  }
  store.put_revision(b, writes);
  crash_point("revised");

  // The book follows what is stored.
  if (running) {
    book.add_batch(b);
  } else {
    book.add_batch(b);
    Micro spent = 0;
    for (const auto& [id, s] : by_id) spent += (s.cost ? to_micro(*s.cost) : 0) + s.earlier_cost_micro;
    core_.spend.set_batch_spent(b.name, spent);
  }
  std::map<std::string, const Shot*> written;
  for (const auto& s : writes) written[s.spec.id] = &s;
  for (const auto& id : to_update) {
    Shot* live = book.find(m.batch + "/" + id);
    if (!live) continue;
    const Shot& w = *written[id];
    live->spec = w.spec;
    live->inputs = w.inputs;
    live->changes = w.changes;
    live->next_take = w.next_take;
    live->removed = w.removed;
    live->image_url = w.image_url;
    live->last_frame_url = w.last_frame_url;
    live->audio_url = w.audio_url;
  }
  // New takes join the book before any cancel could end the batch.
  for (const auto& id : to_follow) {
    Shot s = *written[id];
    const ShotState before = ended_as.count(id) ? ended_as[id] : ShotState::pending;
    std::string why = s.take > 1 ? tag + ": take " + std::to_string(s.take) + " (" + joined(s.changes) + ")"
                                 : tag + ": new shot";
    const std::string key = s.key();
    if (book.find(key)) continue;
    book.add(std::move(s));
    core_.events.emit(Event::shot(key, before, ShotState::pending, why));
  }
  for (const auto& id : cancelled_held)
    core_.events.emit(Event::shot(m.batch + "/" + id, ShotState::held, ShotState::cancelled, written[id]->reason));
  for (const auto& id : to_cancel) {
    Shot* live = book.find(m.batch + "/" + id);
    if (!live) continue;
    live->removed = true;
    core_.end(*live, ShotState::cancelled, written[id]->reason);
  }
  spdlog::info("batch {}: {} from {}: {}", m.batch, tag, manifest_name, counts_text(count_plan(out.plan)));
  out.applied = true;
  batches_.maybe_finish(m.batch);
  return out;
}

void Revisions::loaded(const Shot& shot) {
  if (!shot.next_take.empty()) queued_.insert(shot.key());
}

void Revisions::ended(const std::string& key, ShotState state) {
  if (!queued_.count(key)) return;
  if (state != ShotState::done && state != ShotState::failed && state != ShotState::rejected) return;
  queued_.erase(key);
  const auto slash = key.find('/');
  auto s = core_.store.shot(key.substr(0, slash), key.substr(slash + 1));
  if (!s || s->next_take.empty() || s->damaged) return;
  NextTake next;
  try {
    next = next_take_from(s->next_take);
  } catch (const std::exception& e) {
    spdlog::error("{}: its queued next take cannot be read ({}); not started", key, e.what());
    return;
  }
  const ShotState from = s->state;
  new_take(*s, next.spec, next.inputs, next.changes);
  core_.save(*s, Sync::yes);
  const std::string why = "take " + std::to_string(s->take) + " (" + joined(s->changes) + ")";
  spdlog::info("{}: the previous take ended {}; {} starts", key, to_string(from), why);
  core_.book.add(std::move(*s));
  core_.events.emit(Event::shot(key, from, ShotState::pending, why));
}

}  // namespace wb
