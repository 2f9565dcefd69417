// The last frame: ffmpeg seeks to 3 s before the end (-sseof; a shorter video
// starts at its beginning) and writes every frame it decodes over the same
// file (-update 1), so the file left is the last frame. Pixels are RGB24 so
// that the PNG does not depend on the video's chroma layout.
#include "jobs/frame_grab.h"

#include <chrono>

#include "jobs/subprocess.h"

namespace wb {

std::string extract_frame(const VideoConfig& config, const std::string& video, const std::string& word,
                          const std::string& png_path) {
  if (word != "first" && word != "last") return "unknown frame '" + word + "' (first or last)";
  // ffmpeg writes a file created here, passed to it (a symlink put at the
  // temporary name is never written through; jobs/subprocess.h, HelperOutput).
  const std::string failed = "ffmpeg could not take the " + word + " frame of " + video + ": ";
  if (!helpers_read_passed_fds()) return failed + "/proc is not mounted (it is handed its file by descriptor)";
  HelperOutput tmp(png_path);
  if (tmp.fd() < 0) return failed + tmp.error();
  PassedFds passed;
  const std::string output = passed.add(tmp.fd());
  SubprocessSpec spec;
  spec.argv = {config.ffmpeg, "-v", "error", "-nostdin", "-y"};
  if (word == "last") spec.argv.insert(spec.argv.end(), {"-sseof", "-3"});
  spec.argv.insert(spec.argv.end(), {"-i", "file:" + video, "-an", "-sn", "-dn"});
  if (word == "last")
    spec.argv.insert(spec.argv.end(), {"-update", "1"});
  else
    spec.argv.insert(spec.argv.end(), {"-frames:v", "1"});
  spec.argv.insert(spec.argv.end(), {"-pix_fmt", "rgb24", "-f", "image2", "-c:v", "png", output});
  spec.pass_fds = passed.fds;
  spec.env = helper_env();
  spec.timeout = std::chrono::milliseconds(static_cast<long long>(config.timeout_seconds * 1000));
  spec.max_output_bytes = 64 << 10;
  SubprocessResult r = run_subprocess(spec);
  if (!r.ok()) return failed + r.describe();
  if (!tmp.written()) return failed + "no frame decoded";
  if (std::string problem = tmp.commit(); !problem.empty()) return failed + problem;
  return "";
}

}  // namespace wb
