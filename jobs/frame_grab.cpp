// The last frame: ffmpeg seeks to 3 s before the end (-sseof; a shorter video
// starts at its beginning) and writes every frame it decodes over the same
// file (-update 1), so the file left is the last frame. Pixels are RGB24 so
// that the PNG does not depend on the video's chroma layout.
#include "jobs/frame_grab.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>

#include "jobs/subprocess.h"

namespace wb {

std::string extract_frame(const VideoConfig& config, const std::string& video, const std::string& word,
                          const std::string& png_path) {
  if (word != "first" && word != "last") return "unknown frame '" + word + "' (first or last)";
  std::string dir = png_path.substr(0, png_path.rfind('/') + 1);
  std::string tmp = dir + "." + png_path.substr(dir.size()) + ".tmp";
  SubprocessSpec spec;
  spec.argv = {config.ffmpeg, "-v", "error", "-nostdin", "-y"};
  if (word == "last") spec.argv.insert(spec.argv.end(), {"-sseof", "-3"});
  spec.argv.insert(spec.argv.end(), {"-i", "file:" + video, "-an", "-sn", "-dn"});
  if (word == "last")
    spec.argv.insert(spec.argv.end(), {"-update", "1"});
  else
    spec.argv.insert(spec.argv.end(), {"-frames:v", "1"});
  spec.argv.insert(spec.argv.end(), {"-pix_fmt", "rgb24", "-f", "image2", "-c:v", "png", tmp});
  spec.env = helper_env();
  spec.timeout = std::chrono::milliseconds(static_cast<long long>(config.timeout_seconds * 1000));
  spec.max_output_bytes = 64 << 10;
  SubprocessResult r = run_subprocess(spec);
  struct stat st {};
  if (!r.ok() || ::stat(tmp.c_str(), &st) != 0 || st.st_size == 0) {
    ::unlink(tmp.c_str());
    return "ffmpeg could not take the " + word + " frame of " + video + ": " +
           (r.ok() ? std::string("no frame decoded") : r.describe());
  }
  if (::rename(tmp.c_str(), png_path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return "cannot rename the frame to " + png_path;
  }
  return "";
}

}  // namespace wb
