// Implementation notes: fingerprint_inputs is the only part that reads files;
// everything else is a pure function of records, so `wanbatch plan` and the
// engine decide alike.
#include "jobs/revision.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "jobs/chain.h"
#include "jobs/util.h"

namespace wb {

namespace {
struct MediaField {
  const char* name;
  const MediaRef ShotSpec::*ref;
};
constexpr MediaField kMedia[] = {
    {"image", &ShotSpec::image}, {"last_frame", &ShotSpec::last_frame}, {"audio", &ShotSpec::audio}};

std::string fingerprint_file(const std::string& path) {
  // O_NONBLOCK: a FIFO put in place of the file does not block; O_NOFOLLOW as the loader.
  Fd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0) return std::string("unreadable:") + std::strerror(errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return "unreadable:not a regular file";
  try {
    return "sha256:" + sha256_fd_hex(fd.get());
  } catch (const Error& e) {
    return std::string("unreadable:") + e.what();
  }
}

bool same_media(const MediaRef& a, const Inputs& ai, const MediaRef& b, const Inputs& bi, const char* field) {
  if (a.empty() || b.empty()) return a.empty() == b.empty();
  // A frame of another shot (shot chains): which shot and which frame are the input.
  if (a.shot != b.shot || a.frame != b.frame) return false;
  if (ai.count(field) && bi.count(field)) {
    const std::string& x = ai.at(field);
    return x == bi.at(field) && x.rfind("unreadable:", 0) != 0;
  }
  // One side without fingerprints: compare what both have, the reference.
  return a.url == b.url && a.path == b.path;
}
}  // namespace

Inputs fingerprint_inputs(const ShotSpec& spec) {
  Inputs out;
  for (const auto& f : kMedia) {
    const MediaRef& m = spec.*(f.ref);
    if (!m.url.empty()) out[f.name] = "url:" + m.url;
    else if (!m.path.empty()) out[f.name] = fingerprint_file(m.path);
  }
  return out;
}

std::vector<std::string> changed_fields(const ShotSpec& a, const Inputs& ai, const ShotSpec& b, const Inputs& bi) {
  std::vector<std::string> out;
  if (a.prompt != b.prompt) out.push_back("prompt");
  if (a.negative_prompt != b.negative_prompt) out.push_back("negative_prompt");
  if (a.duration != b.duration) out.push_back("duration");
  if (a.resolution != b.resolution) out.push_back("resolution");
  if (a.seed != b.seed) out.push_back("seed");
  for (const auto& f : kMedia)
    if (!same_media(a.*(f.ref), ai, b.*(f.ref), bi, f.name)) out.push_back(f.name);
  return out;
}

int RevisionPlan::renders() const {
  int n = 0;
  for (const auto& p : shots) n += p.costs();
  return n;
}

bool RevisionPlan::changes_nothing() const {
  for (const auto& p : shots)
    if (p.action != ShotPlan::Action::keep) return false;
  return true;
}

RevisionPlan plan_revision(const std::vector<Shot>& stored, const Manifest& m,
                           const std::map<std::string, Inputs>& inputs, bool same_bytes) {
  std::map<std::string, const Shot*> by_id;
  for (const auto& s : stored) by_id[s.spec.id] = &s;
  static const Inputs kNone;
  RevisionPlan plan;
  std::set<std::string> seen;
  for (size_t i = 0; i < m.shots.size(); ++i) {
    const ShotSpec& spec = m.shots[i];
    seen.insert(spec.id);
    auto in = inputs.find(spec.id);
    const Inputs& now = in == inputs.end() ? kNone : in->second;
    ShotPlan p;
    p.id = spec.id;
    p.index = static_cast<int>(i);
    auto old = by_id.find(spec.id);
    if (old == by_id.end()) {
      p.action = ShotPlan::Action::render;
      p.why = ShotPlan::Why::new_shot;
      plan.shots.push_back(std::move(p));
      continue;
    }
    const Shot& o = *old->second;
    p.state = o.state;
    p.take = o.take;
    p.submitted = !o.request_id.empty() || o.submit_attempts > 0;
    // Its take was never submitted (Revisions::new_take): a new take keeps its number.
    const bool never_submitted = o.state != ShotState::done && !p.submitted && !o.cost;
    p.changed = changed_fields(o.spec, o.inputs, spec, now);
    if (same_bytes) {
      // The same manifest again: its text changed nothing, so a field that differs
      // from the stored take is one whose take of this manifest was cancelled (a
      // queued take): it stays cancelled. Only a file edited in place renders.
      std::vector<std::string> edited;
      for (const auto& f : p.changed) {
        const MediaRef* a = f == "image" ? &o.spec.image : f == "last_frame" ? &o.spec.last_frame : f == "audio" ? &o.spec.audio : nullptr;
        const MediaRef* b = f == "image" ? &spec.image : f == "last_frame" ? &spec.last_frame : f == "audio" ? &spec.audio : nullptr;
        if (a && a->path == b->path && a->url == b->url && a->shot == b->shot && a->frame == b->frame) edited.push_back(f);
        else p.not_again.push_back(f);
      }
      p.changed = std::move(edited);
    }
    const bool changed = !p.changed.empty();
    if (!is_terminal(o.state)) {
      const bool submitted = o.state != ShotState::pending;
      if (!changed) {
        p.why = ShotPlan::Why::running;
        p.action = o.next_take.empty() ? ShotPlan::Action::keep : ShotPlan::Action::update;  // drops the queued take
        if (same_bytes && !o.next_take.empty()) p.action = ShotPlan::Action::keep;  // queued by this same manifest
      } else if (!submitted) {
        p.why = ShotPlan::Why::changed;
        p.action = ShotPlan::Action::update;
      } else {
        p.why = ShotPlan::Why::changed;
        p.action = ShotPlan::Action::render_after;
        p.take = o.take + 1;
        if (!o.next_take.empty()) {  // queued by an earlier revision: the same again changes nothing
          try {
            NextTake queued = next_take_from(o.next_take);
            if (changed_fields(queued.spec, queued.inputs, spec, now).empty()) p.action = ShotPlan::Action::keep;
          } catch (const std::exception&) {
          }
        }
      }
    } else if (changed) {
      p.why = ShotPlan::Why::changed;
      p.action = ShotPlan::Action::render;
      p.take = o.take + (never_submitted ? 0 : 1);
    } else if (o.state == ShotState::done) {
      p.why = ShotPlan::Why::unchanged;
      p.action = o.removed ? ShotPlan::Action::update : ShotPlan::Action::keep;  // back in the manifest
    } else if (o.state == ShotState::held) {
      p.why = ShotPlan::Why::held;
      p.action = o.removed ? ShotPlan::Action::update : ShotPlan::Action::keep;
    } else if (same_bytes) {
      p.why = ShotPlan::Why::retry_it;
      p.action = ShotPlan::Action::keep;
    } else {
      p.why = ShotPlan::Why::last_not_done;
      p.action = ShotPlan::Action::render;
      p.take = o.take + (never_submitted ? 0 : 1);
    }
    plan.shots.push_back(std::move(p));
  }
  // A shot that renders a new take re-renders the chain below it: its children open
  // with a frame of it (docs/MANIFEST.md, shot chains).
  std::map<std::string, ShotPlan*> planned;
  for (auto& p : plan.shots) planned[p.id] = &p;
  for (size_t i = 0; i < plan.shots.size(); ++i) {
    const ShotPlan& parent = plan.shots[i];
    if (!parent.costs() || !by_id.count(parent.id)) continue;  // a new shot has no children that rendered
    for (const auto& id : chain_descendants(m.shots, parent.id)) {
      ShotPlan* child = planned.count(id) ? planned[id] : nullptr;
      auto old = by_id.find(id);
      if (!child || child->action != ShotPlan::Action::keep || old == by_id.end()) continue;
      const Shot& o = *old->second;
      if (o.state != ShotState::done && !(!is_terminal(o.state) && o.state != ShotState::pending)) continue;
      child->why = ShotPlan::Why::changed;
      child->changed.push_back("parent " + parent.id);
      child->action = is_terminal(o.state) ? ShotPlan::Action::render : ShotPlan::Action::render_after;
      child->take = o.take + 1;
    }
  }
  // What the chain does to the shots that take a frame from another one, as the
  // daemon does it (jobs/engine/chains.h): a shot gives a frame when it is DONE
  // and stays so, is followed (not ended), renders and its own parents give
  // one, or is a shot HELD by its chain before any submit that a parent's new
  // take releases (every parent gives a frame, one of them renders again). The
  // least such set, grown until it holds; a shot that renders without it is HELD
  // by its parent (blocked), one HELD stays so.
  std::map<std::string, bool> gives;
  auto state_of = [&by_id](const std::string& id) { return by_id.count(id) ? by_id.at(id)->state : ShotState::pending; };
  auto renders = [](const ShotPlan& p) {
    return p.action == ShotPlan::Action::render || p.action == ShotPlan::Action::render_after;
  };
  auto candidate = [&by_id](const ShotPlan& p) {
    auto it = by_id.find(p.id);
    return it != by_id.end() && !it->second->removed && held_by_chain(*it->second) &&
           (p.action == ShotPlan::Action::keep);
  };
  for (auto& p : plan.shots) {
    const ShotState st = state_of(p.id);
    bool base = false;
    if (p.action == ShotPlan::Action::render_after) base = true;  // on the provider: its next take waits for it
    else if (p.action == ShotPlan::Action::keep || p.action == ShotPlan::Action::update)
      base = by_id.count(p.id) && (st == ShotState::done || !is_terminal(st));
    gives[p.id] = base;
  }
  const std::map<std::string, const ShotSpec*> specs = [&m] {
    std::map<std::string, const ShotSpec*> out;
    for (const auto& spec : m.shots) out[spec.id] = &spec;
    return out;
  }();
  // A removed shot keeps its state: DONE (or on the provider) gives its frame.
  for (const auto& s : stored)
    if (!seen.count(s.spec.id)) gives[s.spec.id] = s.state == ShotState::done || (!is_terminal(s.state) && s.state != ShotState::pending);
  for (bool more = true; more;) {
    more = false;
    for (auto& p : plan.shots) {
      if (gives[p.id] || p.index < 0) continue;
      const bool r = p.action == ShotPlan::Action::render, c = candidate(p);
      if (!r && !c) continue;
      bool all = true;
      std::string up;
      for (const auto& f : frame_refs(*specs.at(p.id))) {
        const std::string& pid = f.ref->shot;
        if (!gives[pid]) all = false;
        else if (up.empty() && planned.count(pid) && (renders(*planned[pid]) || planned[pid]->released())) up = pid;
      }
      if (!all || (c && up.empty())) continue;
      if (c) p.released_by = planned[up]->released() ? planned[up]->released_by : up;  // the new take it waits for
      gives[p.id] = true;
      more = true;
    }
  }
  for (auto& p : plan.shots) {
    if (p.action != ShotPlan::Action::render || gives[p.id]) continue;
    for (const auto& f : frame_refs(*specs.at(p.id)))
      if (!gives[f.ref->shot]) {
        p.blocked_by = f.ref->shot;
        break;
      }
  }
  for (const auto& s : stored) {
    if (seen.count(s.spec.id) || s.removed) continue;
    ShotPlan p;
    p.id = s.spec.id;
    p.action = ShotPlan::Action::remove;
    p.why = ShotPlan::Why::removed;
    p.state = s.state;
    p.submitted = !s.request_id.empty() || s.submit_attempts > 0;
    p.take = s.take;
    plan.shots.push_back(std::move(p));
  }
  return plan;
}

RevisionCounts count_plan(const RevisionPlan& plan) {
  RevisionCounts c;
  for (const auto& p : plan.shots) {
    if (p.released()) {
      ++c.released;
      continue;
    }
    if (p.blocked()) {
      ++c.blocked;
      continue;
    }
    switch (p.action) {
      case ShotPlan::Action::render:
        if (p.why == ShotPlan::Why::new_shot) ++c.new_shots;
        else if (p.why == ShotPlan::Why::changed) ++c.changed;
        else ++c.not_done;
        break;
      case ShotPlan::Action::render_after: ++c.after_running; break;
      case ShotPlan::Action::update:
        if (p.changed.empty()) ++c.kept;  // back in the manifest, or its queued take dropped
        else ++c.updated;
        break;
      case ShotPlan::Action::keep: ++c.kept; break;
      case ShotPlan::Action::remove: ++c.removed; break;
    }
  }
  return c;
}

std::string counts_text(const RevisionCounts& c) {
  auto shots = [](int n) { return std::to_string(n) + (n == 1 ? " shot" : " shots"); };
  std::string out = shots(c.new_shots + c.changed + c.not_done) + (c.new_shots + c.changed + c.not_done == 1 ? " renders" : " render");
  std::string parts;
  auto part = [&parts](int n, const char* what) {
    if (n) parts += (parts.empty() ? "" : ", ") + std::to_string(n) + " " + what;
  };
  part(c.new_shots, "new");
  part(c.changed, "changed");
  part(c.not_done, "last take not DONE");
  if (!parts.empty()) out += " (" + parts + ")";
  if (c.after_running) out += ", " + std::to_string(c.after_running) + " after " + (c.after_running == 1 ? "its take" : "their takes") + " on the provider";
  if (c.released)
    out += ", " + std::to_string(c.released) + " chain " + (c.released == 1 ? "child" : "children") +
           " released by " + (c.released == 1 ? "its parent's" : "their parents'") + " new take";
  if (c.blocked)
    out += ", " + std::to_string(c.blocked) + " changed but HELD by a parent that gives no frame (not billed)";
  if (c.updated) out += ", " + std::to_string(c.updated) + " not yet submitted " + (c.updated == 1 ? "takes" : "take") + " the new spec";
  out += ", " + std::to_string(c.kept) + " kept";
  if (c.removed) out += ", " + std::to_string(c.removed) + " removed";
  return out;
}

const char* action_text(ShotPlan::Action a) {
  switch (a) {
    case ShotPlan::Action::render: return "render";
    case ShotPlan::Action::update: return "update";
    case ShotPlan::Action::render_after: return "render after the running take";
    case ShotPlan::Action::keep: return "keep";
    case ShotPlan::Action::remove: return "removed";
  }
  return "?";
}

std::string why_text(const ShotPlan& p) {
  auto fields = [&p] {
    std::string out;
    for (const auto& f : p.changed) out += (out.empty() ? "" : ", ") + f;
    return out;
  };
  if (p.blocked()) {
    ShotPlan plain = p;
    plain.blocked_by.clear();
    return why_text(plain) + "; but its parent " + p.blocked_by +
           " gives no frame (HELD, or waits for a HELD shot): it will be HELD by it, not submitted, nothing billed";
  }
  switch (p.why) {
    case ShotPlan::Why::new_shot: return "new";
    case ShotPlan::Why::changed:
      return "changed: " + fields() +
             (p.action == ShotPlan::Action::render_after ? std::string(" (renders after the take on the provider)")
              : p.action == ShotPlan::Action::keep       ? std::string(" (queued after the take on the provider)")
              : p.action == ShotPlan::Action::update     ? std::string(" (not submitted yet: takes the new spec)")
                                                         : std::string());
    case ShotPlan::Why::last_not_done: return std::string("last take ended ") + to_string(p.state);
    case ShotPlan::Why::unchanged:
      if (!p.not_again.empty()) {
        std::string f;
        for (const auto& x : p.not_again) f += (f.empty() ? "" : ", ") + x;
        return "the same manifest again: only files edited in place render (take " + std::to_string(p.take) +
               " differs in " + f + ": the take of it was cancelled, and stays so)";
      }
      return "unchanged";
    case ShotPlan::Why::held:
      if (p.released())
        return "HELD by its parent: renders after " + p.released_by + "'s new take is DONE";
      if (!p.submitted)
        return "unchanged, HELD, never submitted (nothing billed): stays HELD; `wanbatch retry` decides";
      return "unchanged, HELD: `wanbatch retry` decides (its job may have been billed)";
    case ShotPlan::Why::running: return std::string("unchanged, ") + to_string(p.state);
    case ShotPlan::Why::removed:
      if (p.state == ShotState::held && !p.submitted) return "left the manifest: HELD, never submitted, so CANCELLED";
      return "left the manifest (kept)";
    case ShotPlan::Why::retry_it:
      return std::string("unchanged, last take ended ") + to_string(p.state) +
             " (the same manifest again: `wanbatch retry` renders it)";
  }
  return "";
}

std::string next_take_json(const ShotSpec& spec, const Inputs& inputs, const std::vector<std::string>& changes) {
  Shot s;
  s.spec = spec;
  s.inputs = inputs;
  s.changes = changes;
  return shot_to_json(s);
}

NextTake next_take_from(const std::string& json) {
  Shot s = shot_from_json(json);
  return {s.spec, s.inputs, s.changes};
}

}  // namespace wb
