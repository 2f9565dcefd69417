// Takes in the output folder: <shot>.mp4 and <shot>.json are always the newest
// DONE take; earlier ones stay beside them as <shot>.take<N>.mp4 and
// <shot>.take<N>.json. Crash-safe by order, with no step that leaves a take
// without a name:
//   1. keep_take: the current files get their take name too (hard links; a
//      copy where the share has none). An existing take name is never replaced,
//      so doing it again after a crash keeps the first one.
//   2. the new video is renamed over <shot>.mp4 (OutputDir::commit_part),
//      then its sidecar, then the shot is DONE in the store.
//   3. restore_newest_done, when a stopped daemon follows the shot again: if
//      <shot>.mp4 is not the newest DONE take's file (it stopped between 2's
//      rename and DONE), that take's files are put back under <shot>.*.
#pragma once

#include <string>

#include "jobs/output.h"

namespace wb {

std::string take_name(const std::string& shot, int take, const std::string& ext);  // "sh010.take2.mp4"

// Step 1 for the take `take` now in <shot>.mp4/.json. Throws wb::Error.
void keep_take(const OutputDir& out, const std::string& batch, const std::string& shot, int take);

// Step 3: true when <shot>.mp4/.json were put back to take `done_take`.
bool restore_newest_done(const OutputDir& out, const std::string& batch, const std::string& shot, int done_take);

}  // namespace wb
