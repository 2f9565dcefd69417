// One frame of a finished video as a PNG, with ffmpeg (jobs/subprocess.h: no
// shell, bounded in time): the first frame, or the last one decoded. Shot
// chains (jobs/engine/chains.h) open a shot with its parent's frame.
#pragma once

#include <string>

#include "jobs/settings.h"

namespace wb {

// Writes frame `word` ("first" or "last") of `video` to `png_path` through a
// temporary name beside it and a rename, so the path is either whole or absent.
// Returns "" or the problem, for a person.
std::string extract_frame(const VideoConfig& config, const std::string& video, const std::string& word,
                          const std::string& png_path);

}  // namespace wb
