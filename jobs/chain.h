// Shot chains: a shot's image or last_frame may be a frame of another shot's
// finished video of the same batch (`image: {shot: sh010, frame: last}`). This
// is the manifest side (pure): the words, the checks a batch must pass (known
// shots, no self-reference, no cycle) and who depends on whom. The engine side
// (waiting for the parent, taking the frame, holding children) is
// jobs/engine/chains.h.
#pragma once

#include <string>
#include <vector>

#include "jobs/manifest.h"
#include "jobs/shot.h"

namespace wb {

// The start of the reason of a shot HELD because its parent ended without a
// video (jobs/engine/chains.cpp): a new DONE take of the parent releases it.
inline constexpr const char* kHeldByParent = "held: its parent ";
// The start of the reason of a shot HELD because its parent's frame could not be taken.
inline constexpr const char* kFrameNotTaken = "could not take the ";

// A shot HELD by its chain before it was ever submitted (nothing billed for
// it): its parent ended without a video, or the parent's frame could not be
// taken. A new DONE take (or a retry) of a shot above it releases it, unless it
// left the manifest.
bool held_by_chain(const Shot& shot);

// The frame words a reference may use.
bool is_frame_word(const std::string& word);

// The frame references of a shot (image, last_frame), with the field name each sits in.
struct FrameRef {
  const char* field;  // "image" or "last_frame"
  const MediaRef* ref;
};
std::vector<FrameRef> frame_refs(const ShotSpec& spec);

// Every reference to a shot that is not in `shots`, to the shot itself, and
// every cycle (each once, at the reference that closes it), as
// `shots[<id>].<field>` problems at the reference's line.
std::vector<ManifestProblem> check_chains(const std::vector<ShotSpec>& shots);

// The shots whose render needs `id`'s video, directly or through others, in
// manifest order (`id` itself excluded). A parent that renders again (a
// revision's new take, an operator retry) makes these render again too.
std::vector<std::string> chain_descendants(const std::vector<ShotSpec>& shots, const std::string& id);

// Clears the uploaded URLs of the shot's frame references, so that its next
// submit waits for its parent's current take and uploads that frame (the
// URLs of files and https links stay). A revision that renders a parent again
// calls it on each shot of chain_descendants() it sends back to PENDING.
void forget_frame_urls(Shot& shot);

}  // namespace wb
