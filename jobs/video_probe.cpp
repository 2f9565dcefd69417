#include "jobs/video_probe.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "jobs/json_safe.h"
#include "jobs/subprocess.h"
#include "jobs/util.h"

namespace wb {

namespace {
using nlohmann::json;

std::chrono::milliseconds timeout_of(const VideoConfig& c) {
  return std::chrono::milliseconds(static_cast<int64_t>(c.timeout_seconds * 1000));
}

double number_in(const json& j, const char* key) {
  if (!j.contains(key)) return 0;
  const json& v = j[key];
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    try {
      double d = std::stod(v.get<std::string>());
      return std::isfinite(d) ? d : 0;
    } catch (...) {
      return 0;
    }
  }
  return 0;
}

std::string string_in(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

int asked_short_side(const std::string& resolution) {
  if (resolution == "720P") return 720;
  if (resolution == "1080P") return 1080;
  return 0;
}
}  // namespace

VideoFacts parse_ffprobe_json(const std::string& text) {
  VideoFacts f;
  auto parsed = parse_json_bounded(text);
  if (!parsed || !parsed->is_object()) {
    f.problem = "ffprobe's answer is not JSON";
    return f;
  }
  const json& j = *parsed;
  f.checked = true;
  long video_frames = 0, audio_frames = 0;
  if (j.contains("streams") && j["streams"].is_array()) {
    for (const auto& s : j["streams"]) {
      if (!s.is_object()) continue;
      std::string type = string_in(s, "codec_type");
      long frames = static_cast<long>(number_in(s, "nb_read_frames"));
      if (type == "video" && !f.has_video) {
        f.has_video = true;
        f.width = static_cast<int>(number_in(s, "width"));
        f.height = static_cast<int>(number_in(s, "height"));
        f.video_codec = string_in(s, "codec_name");
        video_frames = frames;
        f.duration_seconds = number_in(s, "duration");
      } else if (type == "audio" && !f.has_audio) {
        f.has_audio = true;
        f.audio_codec = string_in(s, "codec_name");
        audio_frames = frames;
      }
    }
  }
  if (j.contains("format") && j["format"].is_object()) {
    double d = number_in(j["format"], "duration");
    if (d > 0) f.duration_seconds = d;
  }
  if (!f.has_video) f.problem = "no video stream";
  else if (!f.has_audio) f.problem = "no audio stream";
  else if (video_frames <= 0) f.problem = "the video stream does not decode (no frame)";
  else if (audio_frames <= 0) f.problem = "the audio stream does not decode (no frame)";
  else if (f.width <= 0 || f.height <= 0) f.problem = "the video stream has no picture size";
  f.decodes = f.problem.empty();
  return f;
}

namespace {
// The name a helper opens the video by (with the descriptor it is passed, if any).
std::string input_of(const VideoFile& video, PassedFds& passed) {
  if (video.fd >= 0 && helpers_read_passed_fds()) return "file:" + passed.add(video.fd);
  return "file:" + video.path;
}
}  // namespace

VideoFacts probe_video(const VideoConfig& config, const VideoFile& video) {
  PassedFds passed;
  const std::string input = input_of(video, passed);
  SubprocessSpec spec;
  spec.pass_fds = passed.fds;
  // The first two seconds of every stream are decoded (-count_frames), so a
  // file whose boxes are sound but whose samples are garbage has no frames.
  spec.argv = {config.ffprobe,  "-v", "error", "-of", "json", "-count_frames", "-read_intervals", "%+2",
               "-show_entries", "format=duration:stream=index,codec_type,codec_name,width,height,duration,nb_read_frames",
               input};
  spec.env = helper_env();
  spec.timeout = timeout_of(config);
  spec.max_output_bytes = 256 << 10;
  SubprocessResult r = run_subprocess(spec);
  // Whether ffprobe itself works (`-version` answers as ffprobe): asked when a
  // probe finds nothing decodable, because a broken tool (one that exits 1 on
  // everything, or exits 0 with nothing useful) says nothing of the video and
  // must not make a person pay for it again.
  auto tool_works = [&](VideoFacts& f) {
    SubprocessSpec self = spec;
    self.argv = {config.ffprobe, "-v", "error", "-version"};
    SubprocessResult v = run_subprocess(self);
    if (v.ok() && v.out.find("ffprobe version") != std::string::npos) return;
    f.checked = false;
    f.problem = "ffprobe does not work (`" + config.ffprobe + " -version`: " +
                (v.ok() ? std::string("no version in its answer") : v.describe()) + "), " + f.problem;
  };
  if (!r.ok()) {
    VideoFacts f;
    // ffprobe ran to its end and refused the file: a verdict on the video, if the tool works.
    f.checked = r.started && !r.timed_out && r.signal == 0;
    f.problem = "ffprobe " + r.describe();
    if (f.checked) tool_works(f);
    return f;
  }
  VideoFacts f = parse_ffprobe_json(r.out);
  if (f.checked && !f.decodes) tool_works(f);
  return f;
}

std::vector<std::string> video_differences(const ShotSpec& asked, const VideoFacts& got) {
  std::vector<std::string> out;
  char buf[160];
  if (got.duration_seconds > 0 && std::fabs(got.duration_seconds - asked.duration) > 0.5) {
    std::snprintf(buf, sizeof buf, "duration %.2f s, asked %d s", got.duration_seconds, asked.duration);
    out.push_back(buf);
  }
  int want = asked_short_side(asked.resolution);
  int short_side = std::min(got.width, got.height);
  if (want && short_side > 0 && short_side != want) {
    std::snprintf(buf, sizeof buf, "resolution %dx%d, asked %s", got.width, got.height, asked.resolution.c_str());
    out.push_back(buf);
  }
  return out;
}

std::string video_facts_json(const VideoFacts& f, const std::vector<std::string>& differences) {
  json j = {{"duration_seconds", std::round(f.duration_seconds * 1000) / 1000},
            {"width", f.width},
            {"height", f.height},
            {"video_codec", f.video_codec},
            {"audio_codec", f.audio_codec},
            {"has_audio", f.has_audio},
            {"differences", differences}};
  return j.dump();
}

std::string make_poster(const VideoConfig& config, const VideoFile& video, double duration_seconds,
                        const std::string& jpeg_path) {
  if (!helpers_read_passed_fds()) return "/proc is not mounted: ffmpeg cannot be handed the poster's file";
  HelperOutput tmp(jpeg_path);
  if (tmp.fd() < 0) return tmp.error();
  char at[32];
  std::snprintf(at, sizeof at, "%.3f", duration_seconds > 0 ? duration_seconds / 3 : 0.0);
  PassedFds passed;
  const std::string input = input_of(video, passed);
  const std::string output = passed.add(tmp.fd());
  SubprocessSpec spec;
  spec.argv = {config.ffmpeg, "-v",     "error", "-nostdin", "-y",    "-ss",  at,    "-i",       input,
               "-frames:v",   "1",      "-vf",   "scale='min(640,iw)':-2", "-q:v", "4", "-f", "image2",
               "-c:v",        "mjpeg",  output};
  spec.pass_fds = passed.fds;
  spec.env = helper_env();
  spec.timeout = timeout_of(config);
  spec.max_output_bytes = 64 << 10;
  SubprocessResult r = run_subprocess(spec);
  if (!r.ok()) return "ffmpeg " + r.describe();
  if (std::string problem = tmp.commit(); !problem.empty()) return "the poster: " + problem;
  return "";
}

}  // namespace wb
