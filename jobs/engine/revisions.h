// Revisions of a running or finished batch (jobs/revision.h decides which
// shots render and why; this applies it). A revision is stored in one synced
// write (the batch record and every shot it adds or changes), then the book
// follows: new takes and new shots are PENDING, shots not yet submitted take
// the new spec, shots on the provider keep their take (it is billed and
// finishes) with the next take queued in their record (Shot::next_take), which
// starts when that take ends DONE, FAILED or REJECTED. Shots that left the
// manifest are flagged removed; a PENDING one is CANCELLED (nothing was billed).
// The money path is untouched: a new take is an ordinary PENDING shot.
#pragma once

#include <set>
#include <string>

#include "jobs/engine/batches.h"
#include "jobs/engine/core.h"
#include "jobs/revision.h"

namespace wb {

class Revisions {
 public:
  Revisions(Core& core, Batches& batches) : core_(core), batches_(batches) {}

  struct Outcome {
    RevisionPlan plan;
    int revision = 1;
    bool applied = false;  // false: it changes nothing (nothing written)
  };
  // `manifest.batch` names a stored batch. Throws wb::Error (the store).
  // `same_bytes`: the manifest file is the batch's last one again; then only a
  // changed input (a local file edited in place) makes it a revision, and a
  // failed shot is left to `wanbatch retry`.
  Outcome apply(const Manifest& manifest, const std::string& manifest_name, const std::string& manifest_path,
                bool same_bytes = false);

  // An unfinished shot read at load: remembered when a next take is queued.
  void loaded(const Shot& shot);
  // A shot ended (after it was stored): its queued next take starts now.
  void ended(const std::string& key, ShotState state);

 private:
  // `s` becomes a new PENDING take (the previous take's money kept).
  static void new_take(Shot& s, const ShotSpec& spec, const Inputs& inputs, std::vector<std::string> changes);

  Core& core_;
  Batches& batches_;
  std::set<std::string> queued_;  // keys of shots with a next take queued
};

}  // namespace wb
