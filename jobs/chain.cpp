// Cycle detection is a depth-first walk over the child -> parent edges with
// the usual three colours; a grey node met again closes a cycle, reported at
// the reference that closed it with the whole loop spelled out.
#include "jobs/chain.h"

#include <algorithm>
#include <map>
#include <set>

namespace wb {

bool is_frame_word(const std::string& word) { return word == "first" || word == "last"; }

std::vector<FrameRef> frame_refs(const ShotSpec& spec) {
  std::vector<FrameRef> out;
  if (spec.image.is_frame()) out.push_back({"image", &spec.image});
  if (spec.last_frame.is_frame()) out.push_back({"last_frame", &spec.last_frame});
  return out;
}

std::vector<ManifestProblem> check_chains(const std::vector<ShotSpec>& shots) {
  std::vector<ManifestProblem> problems;
  std::map<std::string, const ShotSpec*> by_id;
  for (const auto& s : shots) by_id.emplace(s.id, &s);
  auto where = [](const ShotSpec& s, const FrameRef& f) { return "shots[" + s.id + "]." + f.field; };
  bool broken = false;
  for (const auto& s : shots)
    for (const auto& f : frame_refs(s)) {
      if (f.ref->shot == s.id) {
        problems.push_back({f.ref->line, where(s, f), "refers to its own shot; a shot cannot start from its own video"});
        broken = true;
      } else if (!by_id.count(f.ref->shot)) {
        problems.push_back({f.ref->line, where(s, f), "no shot '" + f.ref->shot + "' in this batch"});
        broken = true;
      }
    }
  if (broken) return problems;  // the cycle walk needs every edge to lead somewhere

  // An explicit stack, not recursion: a chain may be as long as the batch
  // (limits.max_shots_per_manifest, up to 100,000).
  enum class Colour { white, grey, black };
  std::map<std::string, Colour> colour;
  struct Frame {
    const ShotSpec* shot;
    std::vector<FrameRef> refs;
    size_t next = 0;
  };
  std::vector<Frame> stack;
  for (const auto& root : shots) {
    if (colour[root.id] != Colour::white) continue;
    colour[root.id] = Colour::grey;
    stack.push_back({&root, frame_refs(root)});
    while (!stack.empty()) {
      Frame& top = stack.back();
      if (top.next == top.refs.size()) {
        colour[top.shot->id] = Colour::black;
        stack.pop_back();
        continue;
      }
      const FrameRef f = top.refs[top.next++];
      const ShotSpec& s = *top.shot;
      const ShotSpec& parent = *by_id.at(f.ref->shot);
      Colour c = colour[parent.id];
      if (c == Colour::white) {
        colour[parent.id] = Colour::grey;
        stack.push_back({&parent, frame_refs(parent)});
      } else if (c == Colour::grey) {
        std::string loop;
        auto it = std::find_if(stack.begin(), stack.end(), [&](const Frame& x) { return x.shot == &parent; });
        for (; it != stack.end(); ++it) loop += it->shot->id + " -> ";
        loop += parent.id;
        problems.push_back({f.ref->line, where(s, f),
                            "takes a frame from " + parent.id + ", which closes a cycle (" + loop +
                                "): no shot of it could ever start"});
      }
    }
  }
  return problems;
}

std::vector<std::string> chain_descendants(const std::vector<ShotSpec>& shots, const std::string& id) {
  std::map<std::string, std::vector<std::string>> children;
  for (const auto& s : shots)
    for (const auto& f : frame_refs(s)) children[f.ref->shot].push_back(s.id);
  std::set<std::string> found{id};
  std::vector<std::string> todo{id};
  while (!todo.empty()) {
    std::string parent = std::move(todo.back());
    todo.pop_back();
    for (const auto& child : children[parent])
      if (found.insert(child).second) todo.push_back(child);
  }
  std::vector<std::string> out;
  for (const auto& s : shots)
    if (s.id != id && found.count(s.id)) out.push_back(s.id);
  return out;
}

bool held_by_chain(const Shot& shot) {
  if (shot.state != ShotState::held || !shot.request_id.empty() || shot.submit_attempts != 0) return false;
  return shot.reason.rfind(kHeldByParent, 0) == 0 ||
         (!frame_refs(shot.spec).empty() && shot.reason.rfind(kFrameNotTaken, 0) == 0);
}

void forget_frame_urls(Shot& shot) {
  if (shot.spec.image.is_frame()) shot.image_url.clear();
  if (shot.spec.last_frame.is_frame()) shot.last_frame_url.clear();
}

}  // namespace wb
