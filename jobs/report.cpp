#include "jobs/report.h"

#include <map>
#include <nlohmann/json.hpp>

#include "jobs/segmind.h"
#include "jobs/util.h"

namespace wb {

namespace {
using nlohmann::json;

json time_or_null(int64_t ms) { return ms > 0 ? json(iso8601_utc(from_epoch_ms(ms))) : json(nullptr); }

json metrics_of(const Shot& s) {
  if (s.metrics_json.empty()) return nullptr;
  auto j = json::parse(s.metrics_json, nullptr, false);
  return j.is_discarded() ? json(nullptr) : j;
}
}  // namespace

std::string sidecar_json(const Shot& s, const VideoInfo& video, int64_t downloaded_ms) {
  json j = {{"batch", s.batch},
            {"shot", s.spec.id},
            {"request_id", s.request_id},
            {"parameters", json::parse(submit_body(s))},
            {"seed", s.spec.seed ? json(*s.spec.seed) : json(nullptr)},
            {"cost", s.cost ? json(*s.cost) : json(nullptr)},
            {"metrics", metrics_of(s)},
            {"timings",
             {{"submitted_at", time_or_null(s.submitted_ms)},
              {"completed_at", time_or_null(s.completed_ms)},
              {"downloaded_at", time_or_null(downloaded_ms)}}},
            {"video", {{"file", s.spec.id + ".mp4"}, {"bytes", video.bytes}, {"sha256", video.sha256},
                       {"has_audio", video.has_audio}}}};
  if (!s.spec.image.path.empty()) j["source_image"] = s.spec.image.path;
  return j.dump(2) + "\n";
}

std::string batch_report_json(const BatchRecord& b, const std::vector<Shot>& shots, int64_t now_ms) {
  double cost = 0;
  json list = json::array();
  for (const auto& s : shots) {
    if (s.cost) cost += *s.cost;
    json item = {{"id", s.spec.id}, {"state", to_string(s.state)}};
    if (!s.reason.empty()) item["reason"] = s.reason;
    if (!s.request_id.empty()) item["request_id"] = s.request_id;
    if (s.state == ShotState::done) item["file"] = s.spec.id + ".mp4";
    if (s.cost) item["cost"] = *s.cost;
    if (s.submitted_ms && s.completed_ms)
      item["seconds_to_complete"] = static_cast<double>(s.completed_ms - s.submitted_ms) / 1000.0;
    list.push_back(item);
  }
  json j = {{"batch", b.name},
            {"manifest", b.manifest_name},
            {"manifest_sha256", b.sha256},
            {"accepted_at", time_or_null(b.created_ms)},
            {"finished_at", time_or_null(now_ms)},
            {"shots", static_cast<int>(shots.size())},
            {"states", count_states(shots)},
            {"total_cost", cost},
            {"items", list}};
  return j.dump(2) + "\n";
}

}  // namespace wb
