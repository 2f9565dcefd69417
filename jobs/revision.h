// Revisions: a manifest whose batch already exists is a new revision of it.
// This decides, as a pure function of the stored shots and the new manifest
// (with the fingerprints of its render inputs), which shots render again and
// why. docs/MANIFEST.md "Revisions and takes".
//
// A shot renders a new take when a render input changed (prompt,
// negative_prompt, duration, resolution, seed, the bytes of a local
// image/last_frame/audio or the string of a URL one), when it is new, or when
// its last take ended FAILED, REJECTED or CANCELLED. An unchanged DONE shot
// keeps its video; an unchanged HELD shot stays HELD (its job may have been
// billed: `wanbatch retry` decides). A changed shot not yet submitted takes the
// new spec before it is; one on the provider finishes (it is billed) and then
// renders again. Shots that left the manifest are kept and reported as removed.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "jobs/manifest.h"
#include "jobs/shot.h"

namespace wb {

// field -> "sha256:<hex>" (a local file's bytes), "url:<url>", or
// "unreadable:<why>" (a local file that cannot be read now: counts as changed).
using Inputs = std::map<std::string, std::string>;

// The render inputs of a spec, local files hashed now (reads them).
Inputs fingerprint_inputs(const ShotSpec& spec);

// The render fields that differ between a stored take and a new spec, in a
// fixed order: prompt, negative_prompt, duration, resolution, seed, image,
// last_frame, audio. Media compare by fingerprint; a record from before
// fingerprints were kept compares the path or URL.
std::vector<std::string> changed_fields(const ShotSpec& old_spec, const Inputs& old_inputs, const ShotSpec& new_spec,
                                        const Inputs& new_inputs);

struct ShotPlan {
  enum class Action {
    render,         // a new take (or the first) is submitted
    update,         // not submitted yet: it takes the new spec, same take
    render_after,   // on the provider now: finishes (billed), then renders again
    keep,           // nothing to render
    remove,         // left the manifest: kept, reported removed (a PENDING one is cancelled)
  };
  enum class Why { new_shot, changed, last_not_done, unchanged, held, running, removed, retry_it };
  std::string id;
  Action action = Action::keep;
  Why why = Why::unchanged;
  std::vector<std::string> changed;  // fields, for Why::changed
  ShotState state = ShotState::pending;  // of the stored shot (pending for a new one)
  int take = 1;                      // the take it renders (render, render_after), else its current take
  int index = -1;                    // its position in the new manifest (-1: removed)
  // A chain child HELD by its chain before it was submitted (jobs/chain.h
  // held_by_chain) whose parent renders a new take, or is released itself: the
  // revision leaves it (Action::keep), and the parent's new take, once DONE,
  // releases it to render (billed) after it. Only when every parent it takes a
  // frame from gives one (DONE, rendering, released), as the daemon does. The
  // shot whose new take releases it (directly, or through the released shots
  // above it); "" for every other shot.
  std::string released_by;
  bool released() const { return !released_by.empty(); }
  // A shot that would render (a new take, or a new shot) but takes a frame from
  // a parent that will not give one (HELD, FAILED, ... and not rendering again,
  // or itself waiting on such a parent): the daemon HELDs it by that parent
  // before it is submitted, so it costs nothing. The parent's id; "" otherwise.
  std::string blocked_by;
  bool blocked() const { return !blocked_by.empty(); }
  // The stored take was submitted (a request_id, or a submit that may have
  // reached the provider): a HELD one may have been billed.
  bool submitted = false;
  // The same manifest bytes again: the fields that differ from the stored take
  // but are not files edited in place (a take of this manifest that an operator
  // cancelled): they do not render.
  std::vector<std::string> not_again;
  bool costs() const {
    return !blocked() && (action == Action::render || action == Action::render_after || released());
  }
};

struct RevisionPlan {
  std::vector<ShotPlan> shots;  // manifest order, then the removed ones
  int renders() const;          // shots that cost: render and render_after
  bool changes_nothing() const;  // no shot renders, is updated or removed
};

// `stored`: the batch's shot records; `inputs`: the new manifest's fingerprints
// by shot id; `same_bytes`: the manifest file is the batch's last one again
// (dropped twice): then a shot whose last take failed is left to `wanbatch
// retry`, and only changed inputs (files edited in place) render: a field
// that differs from the stored take without a file edited in place is a take
// of this manifest an operator cancelled (ShotPlan::not_again), not rendered.
RevisionPlan plan_revision(const std::vector<Shot>& stored, const Manifest& manifest,
                           const std::map<std::string, Inputs>& inputs, bool same_bytes = false);

// A revision's shots counted by what happens to them, for the daemon's log line
// and `wanbatch plan`'s header: each shot of the plan in exactly one count.
struct RevisionCounts {
  int new_shots = 0;      // render: not in the batch before
  int changed = 0;        // render: a render input (or its chain parent) changed
  int not_done = 0;       // render: its last take ended FAILED, REJECTED or CANCELLED
  int after_running = 0;  // render_after: a new take once the one on the provider ends
  int released = 0;       // keep, but HELD by a parent that renders a new take: renders after it (billed)
  int blocked = 0;        // render, but its chain parent will not give a frame: HELD by it, not billed
  int updated = 0;        // update: not submitted yet, takes the new spec (billed once, when submitted)
  int kept = 0;           // nothing to render (unchanged DONE or HELD, running unchanged, a queued take dropped)
  int removed = 0;        // left the manifest
  int renders() const { return new_shots + changed + not_done + after_running + released; }  // what the revision bills
};
RevisionCounts count_plan(const RevisionPlan& plan);
// "3 shots render (1 new, 1 changed, 1 last take not DONE), 1 after its take on the
// provider, 2 chain children released by their parent's new take, 2 not yet submitted take
// the new spec, 14 kept, 1 removed" (zero counts left out).
std::string counts_text(const RevisionCounts& c);

// "new", "changed: prompt, image", "last take FAILED", "unchanged", ...
std::string why_text(const ShotPlan& p);
const char* action_text(ShotPlan::Action a);

// The queued next take of a shot on the provider (Shot::next_take), as JSON and back.
std::string next_take_json(const ShotSpec& spec, const Inputs& inputs, const std::vector<std::string>& changes);
struct NextTake {
  ShotSpec spec;
  Inputs inputs;
  std::vector<std::string> changes;
};
NextTake next_take_from(const std::string& json);

}  // namespace wb
