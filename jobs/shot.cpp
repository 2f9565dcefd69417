#include "jobs/shot.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "jobs/json_safe.h"

namespace wb {

namespace {
constexpr const char* kNames[] = {"PENDING", "SUBMITTING", "IN_FLIGHT", "FETCHING", "DOWNLOADING",
                                  "DONE",    "FAILED",     "REJECTED",  "CANCELLED", "HELD"};

nlohmann::json media_json(const MediaRef& m) {
  if (m.empty()) return nullptr;
  if (m.is_frame()) return nlohmann::json{{"shot", m.shot}, {"frame", m.frame}};
  return m.url.empty() ? nlohmann::json{{"path", m.path}} : nlohmann::json{{"url", m.url}};
}

MediaRef media_from(const nlohmann::json& j) {
  MediaRef m;
  if (j.is_object()) {
    m.url = j.value("url", "");
    m.path = j.value("path", "");
    m.shot = j.value("shot", "");
    m.frame = j.value("frame", "");
  }
  return m;
}
}  // namespace

const char* to_string(ShotState s) { return kNames[static_cast<int>(s)]; }

std::optional<ShotState> shot_state_from(const std::string& s) {
  for (int i = 0; i < static_cast<int>(std::size(kNames)); ++i)
    if (s == kNames[i]) return static_cast<ShotState>(i);
  return std::nullopt;
}

bool is_terminal(ShotState s) { return s >= ShotState::done; }

bool occupies_slot(ShotState s) { return s >= ShotState::submitting && s <= ShotState::downloading; }
bool at_provider(ShotState s) { return s == ShotState::submitting || s == ShotState::in_flight; }

std::map<std::string, int> count_states(const std::vector<Shot>& shots) {
  std::map<std::string, int> states;
  for (const auto& s : shots) ++states[to_string(s.state)];
  return states;
}

std::string shot_to_json(const Shot& s) {
  // Fields at their defaults are left out (shot_from_json reads them back as the
  // defaults): a new PENDING shot's record is half the size and is written at
  // accept time for every shot of a manifest.
  nlohmann::json spec = nlohmann::json::object();
  spec["id"] = s.spec.id;
  spec["prompt"] = s.spec.prompt;
  if (!s.spec.negative_prompt.empty()) spec["negative_prompt"] = s.spec.negative_prompt;
  if (!s.spec.image.empty()) spec["image"] = media_json(s.spec.image);
  if (!s.spec.last_frame.empty()) spec["last_frame"] = media_json(s.spec.last_frame);
  if (!s.spec.audio.empty()) spec["audio_url"] = media_json(s.spec.audio);
  spec["duration"] = s.spec.duration;
  spec["resolution"] = s.spec.resolution;
  if (s.spec.line) spec["line"] = s.spec.line;
  if (s.spec.seed) spec["seed"] = *s.spec.seed;
  nlohmann::json j = nlohmann::json::object();
  j["batch"] = s.batch;
  j["index"] = s.index;
  j["spec"] = std::move(spec);
  j["state"] = to_string(s.state);
  auto text = [&j](const char* key, const std::string& v) {
    if (!v.empty()) j[key] = v;
  };
  auto number = [&j](const char* key, int64_t v) {
    if (v) j[key] = v;
  };
  text("reason", s.reason);
  text("image_url", s.image_url);
  text("last_frame_url", s.last_frame_url);
  text("audio_url", s.audio_url);
  text("request_id", s.request_id);
  number("submit_attempts", s.submit_attempts);
  number("attempts", s.attempts);
  number("submitted_ms", s.submitted_ms);
  number("completed_ms", s.completed_ms);
  text("remote_status", s.remote_status);
  text("output_url", s.output_url);
  text("metrics", s.metrics_json);
  text("file", s.file);
  text("video", s.video_json);
  if (s.cost) j["cost"] = *s.cost;
  if (s.damaged) j["damaged"] = true;
  if (s.held_from != ShotState::pending) j["held_from"] = to_string(s.held_from);
  if (s.take != 1) j["take"] = s.take;
  number("file_take", s.file_take);
  if (!s.changes.empty()) j["changes"] = s.changes;
  if (!s.inputs.empty()) j["inputs"] = s.inputs;
  text("next_take", s.next_take);
  if (s.removed) j["removed"] = true;
  number("earlier_cost_micro", s.earlier_cost_micro);
  text("stuck_request_id", s.stuck_request_id);
  return j.dump();
}

Shot shot_from_json(const std::string& text) {
  auto parsed = parse_json_bounded(text);
  if (!parsed || !parsed->is_object()) throw std::runtime_error("not a JSON object");
  const nlohmann::json& j = *parsed;
  Shot s;
  s.batch = j.at("batch").get<std::string>();
  s.index = j.at("index").get<int>();
  const auto& spec = j.at("spec");
  s.spec.id = spec.at("id").get<std::string>();
  s.spec.prompt = spec.at("prompt").get<std::string>();
  s.spec.negative_prompt = spec.value("negative_prompt", "");
  s.spec.image = media_from(spec.value("image", nlohmann::json()));
  s.spec.last_frame = media_from(spec.value("last_frame", nlohmann::json()));
  s.spec.audio = media_from(spec.value("audio_url", nlohmann::json()));
  s.spec.duration = spec.value("duration", 5);
  s.spec.resolution = spec.value("resolution", "720P");
  s.spec.line = spec.value("line", 0);
  if (spec.contains("seed") && spec["seed"].is_number_integer()) s.spec.seed = spec["seed"].get<int64_t>();
  auto state = shot_state_from(j.at("state").get<std::string>());
  if (!state) throw std::runtime_error("unknown shot state " + j.at("state").dump());
  s.state = *state;
  s.reason = j.value("reason", "");
  s.image_url = j.value("image_url", "");
  s.last_frame_url = j.value("last_frame_url", "");
  s.audio_url = j.value("audio_url", "");
  s.request_id = j.value("request_id", "");
  s.submit_attempts = j.value("submit_attempts", 0);
  s.attempts = j.value("attempts", 0);
  s.submitted_ms = j.value("submitted_ms", int64_t{0});
  s.completed_ms = j.value("completed_ms", int64_t{0});
  s.remote_status = j.value("remote_status", "");
  s.output_url = j.value("output_url", "");
  s.metrics_json = j.value("metrics", "");
  s.file = j.value("file", "");
  s.video_json = j.value("video", "");
  if (j.contains("cost") && j["cost"].is_number()) s.cost = j["cost"].get<double>();
  s.damaged = j.value("damaged", false);
  s.held_from = shot_state_from(j.value("held_from", "PENDING")).value_or(ShotState::pending);
  s.take = std::max(1, j.value("take", 1));
  s.file_take = j.value("file_take", 0);
  if (j.contains("changes") && j["changes"].is_array())
    for (const auto& c : j["changes"])
      if (c.is_string()) s.changes.push_back(c.get<std::string>());
  if (j.contains("inputs") && j["inputs"].is_object())
    for (const auto& [k, v] : j["inputs"].items())
      if (v.is_string()) s.inputs[k] = v.get<std::string>();
  s.next_take = j.value("next_take", "");
  s.removed = j.value("removed", false);
  s.earlier_cost_micro = j.value("earlier_cost_micro", int64_t{0});
  s.stuck_request_id = j.value("stuck_request_id", "");
  return s;
}

}  // namespace wb
