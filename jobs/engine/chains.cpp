// Implementation notes.
// - A frame is known by "batch/parent/word" and taken once per run for every
//   child that asks for it; any change of the parent (a retry, a new take)
//   forgets it, so a child never opens with an older take's frame.
// - Children are looked at from two places: the submit walk (ready(), when the
//   gates let submits go) and tick(), for the children of parents that just
//   ended, so a failed parent holds its children even while submits wait.
#include "jobs/engine/chains.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <optional>

#include "jobs/chain.h"
#include "jobs/crash_point.h"
#include "jobs/frame_grab.h"

namespace wb {

namespace {

constexpr const char* kWaitingFor = "waiting for ";

std::string& url_of(Shot& shot, const FrameRef& f) {
  return std::string_view(f.field) == "image" ? shot.image_url : shot.last_frame_url;
}

std::optional<Shot> stored_shot(const Store& store, const std::string& batch, const std::string& id) {
  return store.shot(batch, id);
}

}  // namespace

Chains::Chains(Core& core) : core_(core) {
  core_.events.subscribe([this](const Event& e) {
    if (e.kind != Event::Kind::shot_changed) return;
    // Whatever happens to a parent, its frames of this run are stale.
    for (const char* word : {"/first", "/last"}) {
      taken_.erase(e.key + word);
      failures_.erase(e.key + word);
    }
    if (is_terminal(e.to)) ended_.insert(e.key);
    // A parent DONE by any path (its render, a revision's new take, an adopted
    // job, a retry) releases the children it held: they wait for it again.
    if (e.to == ShotState::done) {
      const auto slash = e.key.find('/');
      const std::string batch = e.key.substr(0, slash), id = e.key.substr(slash + 1);
      if (is_parent(batch, id)) release(batch, {id}, "is DONE");
    }
  });
}

bool Chains::is_parent(const std::string& batch, const std::string& id) {
  auto it = parents_.find(batch);
  if (it == parents_.end()) {
    it = parents_.emplace(batch, std::set<std::string>()).first;
    auto& parents = it->second;
    core_.store.each_shot(batch, [&](const Shot& s) {
      for (const auto& f : frame_refs(s.spec)) parents.insert(f.ref->shot);
    });
  }
  return it->second.count(id) > 0;
}

void Chains::batch_changed(const std::string& batch) { parents_.erase(batch); }

bool Chains::waits_for_parent(const Shot& shot) {
  return !frame_refs(shot.spec).empty() && shot.reason.rfind(kWaitingFor, 0) == 0;
}

void Chains::wait(Shot& shot, const std::string& reason) {
  if (shot.reason == reason) return;
  shot.reason = reason;
  core_.save(shot);
}

std::string Chains::frame_file(const Shot& shot, const MediaRef& ref) const {
  auto it = taken_.find(shot.batch + "/" + ref.shot + "/" + ref.frame);
  return it == taken_.end() ? "" : it->second;
}

bool Chains::ready(Shot& shot) {
  for (const auto& f : frame_refs(shot.spec)) {
    const std::string& parent_id = f.ref->shot;
    const std::string& word = f.ref->frame;
    const std::string parent = shot.batch + "/" + parent_id;
    const std::string frame_key = parent + "/" + word;
    if (!url_of(shot, f).empty() || taken_.count(frame_key)) continue;
    if (core_.book.find(parent)) {
      wait(shot, kWaitingFor + parent_id + " to finish");
      return false;
    }
    const std::string taking = kWaitingFor + parent_id + "'s " + word + " frame to be taken";
    if (taking_.count(frame_key)) {
      wait(shot, taking);
      return false;
    }
    if (auto fail = failures_.find(frame_key); fail != failures_.end()) {
      if (fail->second.attempts >= core_.settings.retry.max_attempts) {
        std::string why = "could not take the " + word + " frame of " + parent_id + " (" +
                          std::to_string(fail->second.attempts) + " attempts): " + fail->second.message +
                          "; `wanbatch retry " + shot.key() + "` tries again";
        failures_.erase(fail);
        core_.end(shot, ShotState::held, why);
        return false;
      }
      if (core_.now_ms() < fail->second.retry_ms) {
        wait(shot, kWaitingFor + parent_id + "'s " + word + " frame: " + fail->second.message + " (trying again)");
        return false;
      }
    }
    std::optional<Shot> p = stored_shot(core_.store, shot.batch, parent_id);
    if (!p) {
      core_.end(shot, ShotState::held, kHeldByParent + parent_id + " is not in the state store");
      return false;
    }
    if (p->state != ShotState::done) {
      if (auto it = parents_.find(shot.batch); it != parents_.end()) it->second.insert(parent_id);
      core_.end(shot, ShotState::held,
                kHeldByParent + parent_id + " ended " + to_string(p->state) +
                    (p->reason.empty() ? ""
                     : p->reason.rfind(kHeldByParent, 0) == 0 ? " (held by its own parent)"
                                                               : " (" + p->reason + ")") + "; `wanbatch retry " + parent +
                    "` releases it");
      return false;
    }
    if (core_.settings.frames_dir.empty()) {
      core_.end(shot, ShotState::held, "no folder for frames of other shots (Settings::frames_dir)");
      return false;
    }
    take_frame(frame_key, p->file, word,
               join_path(join_path(core_.settings.frames_dir, shot.batch), parent_id + "." + word + ".png"));
    if (!taken_.count(frame_key)) {  // on a worker thread (inline, it is done already)
      Shot* again = core_.book.find(shot.key());
      if (again) wait(*again, taking);
      return false;
    }
  }
  return true;
}

void Chains::take_frame(const std::string& frame_key, const std::string& video, const std::string& word,
                        const std::string& png) {
  taking_.insert(frame_key);
  spdlog::info("{}: taking its {} frame for the shots that open with it", frame_key.substr(0, frame_key.rfind('/')),
               word);
  const VideoConfig config = core_.settings.video;
  const std::string root = core_.settings.frames_dir;
  auto extract = core_.extract;
  core_.background.run([this, frame_key, video, word, png, config, root, extract]() -> Background::Done {
    ::mkdir(root.c_str(), 0700);
    ::mkdir(dirname_of(png).c_str(), 0700);
    std::string problem = extract(config, video, word, png);
    return [this, frame_key, png, problem] {
      taking_.erase(frame_key);
      const std::string parent = frame_key.substr(0, frame_key.rfind('/'));
      ended_.insert(parent);  // its children are looked at again
      if (problem.empty()) {
        crash_point("frame_taken");
        taken_[frame_key] = png;
        failures_.erase(frame_key);
        return;
      }
      Failure& f = failures_[frame_key];
      f.message = problem;
      ++f.attempts;
      f.retry_ms = core_.now_ms() + core_.backoff(f.attempts - 1).count();
      spdlog::warn("{}: {} (attempt {})", parent, problem, f.attempts);
    };
  });
}

void Chains::tick() {
  if (ended_.empty() && !look_at_all_) return;
  std::set<std::string> ended;
  ended.swap(ended_);
  const bool all = look_at_all_;
  look_at_all_ = false;
  std::vector<std::string> keys;
  for (const auto& [order, key] : core_.book.pending()) {
    const Shot* s = core_.book.find(key);
    if (!s) continue;
    for (const auto& f : frame_refs(s->spec))
      if (all || ended.count(s->batch + "/" + f.ref->shot)) {
        keys.push_back(key);
        break;
      }
  }
  for (const auto& key : keys)
    if (Shot* s = core_.book.find(key); s && s->state == ShotState::pending && !core_.book.busy(key)) ready(*s);
}

std::vector<std::string> Chains::children_of(const std::string& batch, const std::string& shot) const {
  std::vector<Shot> stored = core_.store.shots(batch);
  std::sort(stored.begin(), stored.end(), [](const Shot& a, const Shot& b) { return a.index < b.index; });
  std::vector<ShotSpec> specs;
  specs.reserve(stored.size());
  for (auto& s : stored) specs.push_back(std::move(s.spec));
  return chain_descendants(specs, shot);
}

std::vector<std::string> Chains::release(const std::string& batch, const std::vector<std::string>& retried,
                                         const std::string& why) {
  std::vector<std::string> out;
  if (retried.empty()) return out;
  std::vector<Shot> stored = core_.store.shots(batch);
  std::sort(stored.begin(), stored.end(), [](const Shot& a, const Shot& b) { return a.index < b.index; });
  std::map<std::string, const Shot*> by_id;
  for (const auto& s : stored) by_id[s.spec.id] = &s;
  // The shots that give a frame again: the retried (or DONE) ones, then each child
  // released, so the chain below goes with them. A child is released only when
  // every parent it takes a frame from gives one (released, DONE, or followed);
  // one that left the manifest is never released (docs/MANIFEST.md).
  std::map<std::string, std::string> up;  // id -> the line that says why it gives a frame again
  for (const auto& id : retried) up[id] = why;
  std::set<size_t> chosen;
  for (bool more = true; more;) {
    more = false;
    for (size_t i = 0; i < stored.size(); ++i) {
      const Shot& s = stored[i];
      if (chosen.count(i) || up.count(s.spec.id) || s.removed || !held_by_chain(s) || core_.book.find(s.key()))
        continue;
      std::string via;
      bool blocked = false;
      for (const auto& f : frame_refs(s.spec)) {
        const std::string& pid = f.ref->shot;
        if (up.count(pid)) {
          if (via.empty()) via = pid;
          continue;
        }
        if (core_.book.find(batch + "/" + pid)) continue;
        auto p = by_id.find(pid);
        if (p == by_id.end() || p->second->state != ShotState::done) blocked = true;
      }
      if (blocked || via.empty()) continue;
      chosen.insert(i);
      up[s.spec.id] = "its parent " + via + (std::count(retried.begin(), retried.end(), via) ? " " + why : " was released");
      more = true;
    }
  }
  for (size_t i : chosen) {
    Shot s = stored[i];
    auto refs = frame_refs(s.spec);
    std::string reason = refs.empty() ? "" : kWaitingFor + refs.front().ref->shot + " to finish";
    spdlog::info("{}: released, {}", s.key(), up[s.spec.id]);
    out.push_back(s.spec.id);
    forget_frame_urls(s);  // the parent's next take gives the frame
    if (requeue) requeue(std::move(s), "chain_released", reason);
  }
  return out;
}

}  // namespace wb
