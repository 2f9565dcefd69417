#include "jobs/report.h"

#include <map>
#include <nlohmann/json.hpp>

#include "jobs/credits.h"
#include "jobs/json_safe.h"
#include "jobs/segmind.h"
#include "jobs/util.h"

namespace wb {

namespace {
using nlohmann::json;

json time_or_null(int64_t ms) { return ms > 0 ? json(iso8601_utc(from_epoch_ms(ms))) : json(nullptr); }

// What ffprobe found, as stored with the shot (null when it was not probed).
json video_of(const std::string& facts_json) {
  if (facts_json.empty()) return nullptr;
  auto j = parse_json_bounded(facts_json);
  return j && j->is_object() ? *j : json(nullptr);
}

json cost_of(const Shot& s) { return s.cost ? credits_json(to_micro(*s.cost)) : json(nullptr); }

// The provider's metrics as it sent them, but its figures of money rounded to
// micro-credits like every other figure of money we show.
json metrics_of(const Shot& s) {
  if (s.metrics_json.empty()) return nullptr;
  auto j = parse_json_bounded(s.metrics_json);
  if (!j || !j->is_object()) return j ? *j : json(nullptr);
  for (const char* money : {"cost", "remaining_credits"})
    if (j->contains(money) && (*j)[money].is_number()) (*j)[money] = credits_json(to_micro((*j)[money].get<double>()));
  return *j;
}
}  // namespace

std::string sidecar_json(const Shot& s, const VideoInfo& video, int64_t downloaded_ms) {
  json j = {{"batch", s.batch},
            {"shot", s.spec.id},
            {"request_id", s.request_id},
            {"parameters", json::parse(submit_body(s))},
            {"seed", s.spec.seed ? json(*s.spec.seed) : json(nullptr)},
            {"cost", cost_of(s)},
            {"metrics", metrics_of(s)},
            {"timings",
             {{"submitted_at", time_or_null(s.submitted_ms)},
              {"completed_at", time_or_null(s.completed_ms)},
              {"downloaded_at", time_or_null(downloaded_ms)}}},
            {"video", {{"file", s.spec.id + ".mp4"}, {"bytes", video.bytes}, {"sha256", video.sha256},
                       {"has_audio", video.has_audio}, {"probe", video_of(video.facts_json)}}}};
  if (!s.spec.image.path.empty()) j["source_image"] = s.spec.image.path;
  j["take"] = s.take;
  j["changes"] = s.changes;
  return json_text(j, 2) + "\n";
}

void BatchReport::add(const Shot& s) {
  if (s.cost) cost_micro_ += to_micro(*s.cost);
  cost_micro_ += s.earlier_cost_micro;
  ++states_[to_string(s.state)];
  json item = {{"id", s.spec.id}, {"state", to_string(s.state)}, {"take", s.take}};
  // <shot>.mp4 is the newest DONE take, which may be an earlier one than `take`.
  if (s.file_take > 0 && s.file_take != s.take) item["file_take"] = s.file_take;
  if (!s.changes.empty()) item["changes"] = s.changes;
  if (s.removed) item["removed"] = true;
  if (s.earlier_cost_micro) item["earlier_takes_cost"] = credits_json(s.earlier_cost_micro);
  if (!s.reason.empty()) item["reason"] = s.reason;
  if (!s.request_id.empty()) item["request_id"] = s.request_id;
  if (s.state == ShotState::done || s.file_take > 0) item["file"] = s.spec.id + ".mp4";
  if (!s.video_json.empty()) item["video"] = video_of(s.video_json);
  if (s.cost) item["cost"] = cost_of(s);
  if (s.submitted_ms && s.completed_ms)
    item["seconds_to_complete"] = static_cast<double>(s.completed_ms - s.submitted_ms) / 1000.0;
  // As json_text(report, 2) nests it: the second level of the report.
  if (shots_++ > 0) items_ += ',';
  items_ += "\n    ";
  append_json_text(items_, item, 2, 2);
}

std::vector<std::string> BatchReport::pieces(const BatchRecord& b, int64_t now_ms) && {
  json j = {{"batch", b.name},
            {"manifest", b.manifest_name},
            {"manifest_sha256", b.sha256},
            {"accepted_at", time_or_null(b.created_ms)},
            {"revision", b.revision},
            {"finished_at", time_or_null(now_ms)},
            {"shots", shots_},
            {"states", states_},
            {"total_cost", credits_json(cost_micro_)},
            {"items", json::array()}};
  std::string text = json_text(j, 2) + "\n";
  if (shots_ == 0) return {std::move(text)};
  // The items go where the empty list stands ("items" is a key of the top level).
  const std::string empty = "\n  \"items\": []";
  const size_t at = text.find(empty);
  if (at == std::string::npos) throw Error("report: no place for the items");
  const size_t open = at + empty.size() - 1;  // just after '['
  std::vector<std::string> out;
  out.push_back(text.substr(0, open));
  out.push_back(std::move(items_));
  out.push_back("\n  " + text.substr(open));
  return out;
}

std::string batch_report_json(const BatchRecord& b, const std::vector<Shot>& shots, int64_t now_ms) {
  BatchReport report;
  for (const auto& s : shots) report.add(s);
  std::string out;
  for (const auto& piece : std::move(report).pieces(b, now_ms)) out += piece;
  return out;
}

}  // namespace wb
