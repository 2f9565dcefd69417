// What a batch leaves for people: a sidecar per video and report.json per batch.
// Neither ever carries the API key (it is not in a Shot to begin with).
#pragma once

#include <cstdint>
#include <map>
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

// The same report a shot at a time (a 10,000-shot batch's records and its JSON
// tree are never all in memory): add() each shot in order, then pieces() gives
// the text to write one piece after the other.
class BatchReport {
 public:
  void add(const Shot& shot);
  std::vector<std::string> pieces(const BatchRecord& batch, int64_t now_ms) &&;

 private:
  int64_t cost_micro_ = 0;
  std::map<std::string, int> states_;
  int shots_ = 0;
  std::string items_;  // the items' text, as nested in the report
};

}  // namespace wb
