// What a batch leaves for people: a sidecar per video and report.json per batch.
// Neither ever carries the API key (it is not in a Shot to begin with).
#pragma once

#include <string>
#include <vector>

#include "jobs/shot.h"
#include "jobs/store.h"

namespace wb {

struct VideoInfo {
  long long bytes = 0;
  std::string sha256;
  bool has_audio = false;
  std::string facts_json;  // jobs/video_probe.h video_facts_json; "" when not probed
};

std::string sidecar_json(const Shot& shot, const VideoInfo& video, int64_t downloaded_ms);
std::string batch_report_json(const BatchRecord& batch, const std::vector<Shot>& shots, int64_t now_ms);

}  // namespace wb
